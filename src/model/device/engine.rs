//! A decode step an engine describes in its own device arrays ([`EngineStep`]), on the model's
//! weights and KV pages.

use super::{bad, Attend, DecodePath, DeviceModel, Head, OP};
use crate::ops::attention;
use crate::error::{CudaContext as _, Result};
use crate::gpu::Gpu;
use crate::ops::embed;
use crate::ops::kv_cache::PagedBatch;
use crate::ops::sampling::{sample_rows, SamplingRows};
use cudarc::driver::{CudaView, CudaViewMut};

/// One decode step as an engine describes it, in device arrays it owns (its cudarc buffers), over
/// the model's KV pages ([`DeviceModel::kv_cache`]; the engine chooses which pages hold what):
/// row b processes `tokens[b]` at `positions[b]`, writes its key and value to slot
/// `slot_mapping[b]` (page * page_size + offset) and attends over `paged`'s row b (its block table
/// and its length, `positions[b] + 1`). The values are checked on the device, not on the host.
#[derive(Clone, Copy)]
pub struct EngineStep<'a> {
    pub tokens: &'a CudaView<'a, i32>,
    pub positions: &'a CudaView<'a, i32>,
    pub slot_mapping: &'a CudaView<'a, i32>,
    pub paged: PagedBatch<'a>,
}

/// A ragged prefill as an engine describes it, in device arrays it owns, over the model's KV pages:
/// `tokens[t]` at `positions[t]` written to slot `slot_mapping[t]` (T rows); sequence b's new
/// tokens are rows `cu_seqlens[b]..cu_seqlens[b + 1]` (at most `max_q_len`), attending causally
/// over its cached prefix and themselves through `paged`'s row b (its block table and its length
/// after this step); `last_rows[b]` is the row whose logits it wants (its last new token's,
/// `cu_seqlens[b + 1] - 1`). Checked on the device as the kernels check them.
#[derive(Clone, Copy)]
pub struct EnginePrefill<'a> {
    pub tokens: &'a CudaView<'a, i32>,
    pub positions: &'a CudaView<'a, i32>,
    pub slot_mapping: &'a CudaView<'a, i32>,
    pub paged: PagedBatch<'a>,
    pub cu_seqlens: &'a CudaView<'a, i32>,
    pub max_q_len: usize,
    pub last_rows: &'a CudaView<'a, i32>,
}

impl DeviceModel {
    /// A prefill step the engine describes ([`EnginePrefill`]): every layer over its T rows in one
    /// ragged pass, then the lm_head on each sequence's `last_rows` entry into the first B rows of
    /// [`DeviceModel::logits`] and their bounded argmax into [`DeviceModel::step_tokens`] (sample
    /// them with `ops::sampling::sample_rows` for sampled requests). As `decode_with`, it neither
    /// reads nor changes the model's own sequences, allocates or synchronises; a row index past
    /// the step, like a bad token, slot or page, is flagged in [`DeviceModel::check_status`]'s words.
    pub fn prefill_with(&mut self, gpu: &Gpu, step: &EnginePrefill) -> Result<()> {
        let (t, b) = (step.tokens.len(), step.paged.batch());
        let c = self.kv_cache_dims();
        if t == 0 || t > self.ws.rows {
            return Err(bad(format!("an engine prefill of {t} tokens (1..={} rows, the model's workspace)", self.ws.rows)));
        }
        if b == 0 || b > self.options.slots {
            return Err(bad(format!("an engine prefill of {b} sequences (1..={}, the model's slots)", self.options.slots)));
        }
        if step.positions.len() != t || step.slot_mapping.len() != t || step.cu_seqlens.len() != b + 1 || step.last_rows.len() != b {
            return Err(bad(format!(
                "an engine prefill of {t} tokens and {b} sequences with {} positions, {} slots, {} cu_seqlens (b + 1) and {} last rows",
                step.positions.len(),
                step.slot_mapping.len(),
                step.cu_seqlens.len(),
                step.last_rows.len()
            )));
        }
        if step.max_q_len == 0 || step.max_q_len > t {
            return Err(bad(format!("max_q_len {} for a step of {t} tokens", step.max_q_len)));
        }
        step.paged.check(OP, &c)?;
        if step.paged.max_pages > self.cache.max_pages {
            return Err(bad(format!("block tables of {} pages a row, past the model's {}", step.paged.max_pages, self.cache.max_pages)));
        }
        embed::embed(gpu, &self.embed.view(), &step.tokens.slice(0..t), &mut self.ws.resid.view_mut().rows_mut(0..t)?, &mut self.embed_status)?;
        for l in 0..self.layers.len() {
            self.layer(gpu, l, t, Attend::EnginePrefill(step), None)?;
        }
        self.final_norm(gpu, t)?;
        // Each sequence's last row gathered to the first rows (the embedding gather, over the
        // normed rows of this step: an index past them is flagged), then one lm_head GEMM.
        embed::embed(gpu, &self.ws.xn.view().rows(0..t)?, step.last_rows, &mut self.ws.proj.view_mut().rows_mut(0..b)?, &mut self.embed_status)?;
        gpu.stream().memcpy_dtod(&self.ws.proj.view().rows(0..b)?.data, &mut self.ws.xn.view_mut().rows_mut(0..b)?.data).cuda("cuMemcpyDtoD(engine prefill last rows)")?;
        let sampled = std::mem::replace(&mut self.decode_sampled, false);
        let result = self.head(gpu, 0..b, Head::Decode);
        self.decode_sampled = sampled;
        result
    }

    /// One decode step of a batch the engine describes ([`EngineStep`]), on the model's weights
    /// and KV pages: the logits [B, vocab] ([`DeviceModel::logits`]) and their bounded argmax
    /// ([`DeviceModel::step_tokens`]). It reads nothing the model keeps about its own sequences
    /// (their lengths, tables and batch are neither used nor changed) and neither allocates nor
    /// synchronises: an engine may capture it in its own graph. Bad device values (a token past
    /// the vocabulary, a slot or page past the cache) are flagged in the status words
    /// [`DeviceModel::check_status`] reads.
    pub fn decode_with(&mut self, gpu: &Gpu, step: &EngineStep) -> Result<()> {
        let b = self.engine_forward(gpu, step)?;
        if self.options.decode_path == DecodePath::Fused {
            return self.fused_head(gpu, b, false, false, false);
        }
        // The engine's rows are not the model's batch: the bounded argmax, whatever the slots'
        // sampling.
        let sampled = std::mem::replace(&mut self.decode_sampled, false);
        let result = self.head(gpu, 0..b, Head::Decode);
        self.decode_sampled = sampled;
        result
    }

    /// [`DeviceModel::decode_with`], choosing each row's token by the engine's sampling arrays
    /// ([`SamplingRows`]: per-row parameters, seeds and steps, which the draw advances) into
    /// `tokens` (i32, one a row; greedy rows, temperature 0, take the bounded argmax). The logits
    /// stay in [`DeviceModel::logits`]. Graph-capturable as `decode_with` is.
    pub fn decode_with_sampling(&mut self, gpu: &Gpu, step: &EngineStep, rows: &mut SamplingRows, tokens: &mut CudaViewMut<i32>) -> Result<()> {
        let b = self.engine_forward(gpu, step)?;
        if self.options.decode_path == DecodePath::Fused {
            self.fused_logits(gpu, b)?;
        } else {
            self.lm_head_logits(gpu, 0..b, Head::Decode)?;
        }
        let n_valid = self.n_valid();
        sample_rows(gpu, &self.ws.logits.view().rows(0..b)?, n_valid, rows, 1, tokens)
    }

    /// Every layer over the engine's rows (and, on the cuBLAS path, the final norm; the fused head
    /// does its own); returns the row count.
    fn engine_forward(&mut self, gpu: &Gpu, step: &EngineStep) -> Result<usize> {
        let b = step.tokens.len();
        let c = self.kv_cache_dims();
        if b == 0 || b > self.options.slots {
            return Err(bad(format!("an engine step of {b} rows (1..={} rows, the model's slots)", self.options.slots)));
        }
        if step.positions.len() != b || step.slot_mapping.len() != b || step.paged.batch() != b {
            return Err(bad(format!(
                "an engine step of {b} tokens with {} positions, {} slots and {} sequence lengths",
                step.positions.len(),
                step.slot_mapping.len(),
                step.paged.batch()
            )));
        }
        step.paged.check(OP, &c)?;
        if step.paged.max_pages > self.cache.max_pages {
            return Err(bad(format!("block tables of {} pages a row, past the model's {} (capacity {} in pages of {})", step.paged.max_pages, self.cache.max_pages, self.options.capacity, c.page_size)));
        }
        let fused = self.options.decode_path == DecodePath::Fused;
        if fused {
            attention::clear_decode_status(gpu, &mut self.ws.attn_ws.view_mut(), b, self.config.num_attention_heads)?;
        }
        embed::embed(gpu, &self.embed.view(), &step.tokens.slice(0..b), &mut self.ws.resid.view_mut().rows_mut(0..b)?, &mut self.embed_status)?;
        for l in 0..self.layers.len() {
            if fused {
                self.fused_layer(gpu, l, b, Attend::Engine(step))?;
            } else {
                self.layer(gpu, l, b, Attend::Engine(step), None)?;
            }
        }
        if !fused {
            self.final_norm(gpu, b)?;
        }
        Ok(b)
    }
}
