//! The decode step's plan: what one step launches, on either path.
//!
//! ```text
//! Fused (the default; ops::decode, cuda/decode.cu), B <= 32 rows a launch (f32: 16):
//!   clear the attention status word and split counters      1 (a memset)
//!   resid = embed[tokens]                                    1
//!   per layer:  qkv: rmsnorm + [q|k|v] GEMV + bias + RoPE + cache write      1
//!               attention (the last split of a row merges the row's splits) 1
//!               residual: resid += attn Wo^T                                1
//!               gate_up: rmsnorm + [gate|up] GEMV + SwiGLU                  1
//!               residual: resid += act Wdown^T                              1
//!   head: final norm + lm_head GEMV (f32 logits) + each block's argmax       1
//!   finish: the argmax + positions, lengths, slots + 1                       1
//! ```
//! So 5 launches a layer and 4 a step, whatever the context: Qwen2.5-0.5B (24 layers) is 124
//! nodes. Sampled rows replace the finish with the sampling kernel and the position update (one
//! node more). Larger batches launch each GEMV kernel once per 32 rows (f32: 16, or 13 for
//! VibeThinker-1.5B's norm kernels, which stage at most 80 KiB of normalised f32 rows). Every kernel equals
//! the unfused launches it replaces bit for bit (tests/gpu/decode.rs), so both paths give the same
//! tokens whenever cuBLAS' sums round the same way; the fused path's results are also the same
//! whatever the batch.
//!
//! With `ModelOptions::pdl` the fused kernels are programmatic dependent launches (sm_90; kept
//! in the captured graph as programmatic edges): each may start while the kernel before it
//! finishes, and waits for it (griddepcontrol.wait) before touching anything; the attention and
//! embedding kernels are launched as usual. The nodes and the results are the same.
//!
//! Cublas: the prefill's launches at B rows, 11 a layer (norm, bias fill, GEMM, RoPE, status clear,
//! attention, GEMM, add-norm, GEMM, SwiGLU, GEMM) and 6 a step; kept for comparison
//! (`--decode-path cublas`).

use super::*;
use crate::ops::decode;
use super::report;
use std::str::FromStr;

/// How a decode step computes (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodePath {
    /// The fused GEMV kernels of [`crate::ops::decode`]: 5-6 launches a layer.
    #[default]
    Fused,
    /// The unfused launches with cuBLAS projections: 11 a layer.
    Cublas,
}

impl FromStr for DecodePath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fused" | "gemv" => Ok(DecodePath::Fused),
            "cublas" => Ok(DecodePath::Cublas),
            _ => Err(Error::invalid(OP, format!("decode path '{s}' is not one of fused (or gemv), cublas"))),
        }
    }
}

impl std::fmt::Display for DecodePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodePath::Fused => "fused",
            DecodePath::Cublas => "cublas",
        })
    }
}

impl DeviceModel {
    /// Switch the decode path (the captured graphs are dropped: the next step captures anew).
    pub fn set_decode_path(&mut self, path: DecodePath) {
        if path != self.options.decode_path {
            self.options.decode_path = path;
            self.graphs.clear();
        }
    }

    /// Launch the fused decode kernels as programmatic dependent launches, or not (the captured
    /// graphs are dropped: the next step captures anew).
    pub fn set_pdl(&mut self, on: bool) {
        if on != self.options.pdl {
            self.options.pdl = on;
            self.graphs.clear();
        }
    }

    /// The launches of one decode step of the model's batch (`b` rows): captured by
    /// [`DeviceModel::decode_step`] or launched directly; the fused kernels as programmatic
    /// dependent launches with `options.pdl`.
    pub(super) fn enqueue_decode(&mut self, gpu: &Gpu, b: usize) -> Result<()> {
        let before = gpu.set_programmatic_launches(self.options.pdl);
        let enqueued = self.enqueue_decode_launches(gpu, b);
        gpu.set_programmatic_launches(before);
        enqueued
    }

    fn enqueue_decode_launches(&mut self, gpu: &Gpu, b: usize) -> Result<()> {
        let advance = self.defect != Some(Defect::PositionStuckAtZero);
        if self.options.decode_path == DecodePath::Fused {
            let tokens = self.ws.argmax.index().slice(0..b);
            attention::clear_decode_status(gpu, &mut self.ws.attn_ws.view_mut(), b, self.config.num_attention_heads)?;
            embed::embed(gpu, &self.embed.view(), &tokens, &mut self.ws.resid.view_mut().rows_mut(0..b)?, &mut self.embed_status)?;
            for l in 0..self.layers.len() {
                self.fused_layer(gpu, l, b, Attend::Decode)?;
            }
            return self.fused_head(gpu, b, self.decode_sampled, advance, true);
        }
        let tokens = self.ws.argmax.index().slice(0..b);
        embed::embed(gpu, &self.embed.view(), &tokens, &mut self.ws.resid.view_mut().rows_mut(0..b)?, &mut self.embed_status)?;
        for l in 0..self.layers.len() {
            self.layer(gpu, l, b, Attend::Decode, None)?;
        }
        self.final_norm(gpu, b)?;
        self.head(gpu, 0..b, Head::Decode)?;
        self.finish_step(gpu, b, advance, true)
    }

    /// The last launch of a step whose head does not end in `dec_finish` (cuda/model.cu's
    /// decode_advance): with `advance`, the batch's positions, lengths and slots move on by one;
    /// with `report`, the step's report is packed (device/report.rs).
    fn finish_step(&mut self, gpu: &Gpu, b: usize, advance: bool, report: bool) -> Result<()> {
        let max_pages = self.cache.max_pages;
        let ws = &mut self.ws;
        let tables = ws.dec_tables.slice(0..b * max_pages);
        let adv = advance.then(|| ws.dec.advance(&tables, max_pages, self.options.page_size));
        let index = ws.argmax.index().slice(0..b);
        let report = report.then(|| (&index, report::parts(&mut self.reports, &mut self.embed_status, &mut self.rope, &ws.attn_ws)));
        embed::advance(gpu, b, adv, report)
    }

    /// One decoder layer over the first `t` rows on the fused path: the residual stream in `resid`
    /// (complete: the o and down projections add themselves into it) is read by the q/k/v and
    /// gate/up kernels' norms and updated in place.
    pub(super) fn fused_layer(&mut self, gpu: &Gpu, l: usize, t: usize, attend: Attend<'_>) -> Result<()> {
        let c = &self.config;
        let eps = c.rms_norm_eps;
        let (heads, d) = (c.num_attention_heads, c.head_dim);
        let ws = &mut self.ws;
        let lw = &self.layers[l];
        let cache = &mut self.cache.layers[l];
        let max_pages = self.cache.max_pages;
        let (positions, slots) = match attend {
            Attend::Decode => (ws.dec.positions.slice(0..t), ws.dec.slot_mapping.slice(0..t)),
            Attend::Engine(step) => (step.positions.slice(0..t), step.slot_mapping.slice(0..t)),
            Attend::Prefill { .. } | Attend::EnginePrefill(_) => return Err(bad("the fused decode layer runs decode rows only".into())),
        };
        decode::qkv(gpu, &ws.resid.view().rows(0..t)?, &lw.input_norm.view(), eps, &lw.qkv.view(), &lw.qkv_bias.view(), &mut self.rope, &positions, &slots, &mut ws.q.view_mut().rows_mut(0..t)?, &mut cache.view_mut())?;
        {
            let q = ws.q.view().rows(0..t)?;
            let mut attn = ws.attn.view_mut();
            let mut out = attn.rows_mut(0..t)?;
            let chunk = self.options.decode_chunk;
            match attend {
                Attend::Engine(step) => attention::decode_gathering_status(gpu, &q, &cache.view(), &step.paged, &mut ws.attn_ws.view_mut(), &mut out, chunk)?,
                _ => {
                    let (table, lens) = (ws.dec_tables.slice(0..t * max_pages), ws.dec.lens.slice(0..t));
                    let batch = PagedBatch { block_tables: &table, max_pages, seq_lens: &lens };
                    attention::decode_gathering_status(gpu, &q, &cache.view(), &batch, &mut ws.attn_ws.view_mut(), &mut out, chunk)?
                }
            }
        }
        decode::residual(gpu, &ws.attn.view().rows(0..t)?.reshape(&[t, heads * d])?, &lw.o.view(), &mut ws.resid.view_mut().rows_mut(0..t)?)?;
        decode::gate_up(gpu, &ws.resid.view().rows(0..t)?, &lw.post_norm.view(), eps, &lw.gate_up.view(), &mut ws.act.view_mut().rows_mut(0..t)?)?;
        decode::residual(gpu, &ws.act.view().rows(0..t)?, &lw.down.view(), &mut ws.resid.view_mut().rows_mut(0..t)?)
    }

    /// The fused head over rows 0..b of `resid` (after the last fused layer): the final norm, the
    /// logits ([`DeviceModel::logits`]) and the tokens into the decode argmax's index (the bounded
    /// argmax, or the decode sampler's draw when `sampled`); with `advance`, the batch's positions
    /// move on; with `report`, the step's report is packed (device/report.rs).
    pub(super) fn fused_head(&mut self, gpu: &Gpu, b: usize, sampled: bool, advance: bool, report: bool) -> Result<()> {
        self.fused_logits(gpu, b)?;
        let n_valid = self.n_valid();
        let ws = &mut self.ws;
        if sampled {
            sampling_op::sample_n(gpu, &ws.logits.view().rows(0..b)?, n_valid, &mut self.sampling.decode, 1, ws.argmax.index_mut())?;
            return self.finish_step(gpu, b, advance, report);
        }
        let max_pages = self.cache.max_pages;
        let tables = ws.dec_tables.slice(0..b * max_pages);
        let adv = advance.then(|| ws.dec.advance(&tables, max_pages, self.options.page_size));
        let report = report.then(|| report::parts(&mut self.reports, &mut self.embed_status, &mut self.rope, &ws.attn_ws));
        decode::finish(gpu, &ws.head_cand, b, ws.argmax.index_mut(), adv, report)
    }

    /// The fused head's kernel alone: the final norm and the logits of rows 0..b (f32, into
    /// [`DeviceModel::logits`]), each block's argmax candidates beside them.
    pub(super) fn fused_logits(&mut self, gpu: &Gpu, b: usize) -> Result<()> {
        let n_valid = self.n_valid();
        let eps = self.config.rms_norm_eps;
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        let ws = &mut self.ws;
        decode::head(gpu, &ws.resid.view().rows(0..b)?, &self.norm.view(), eps, &w.view(), &mut ws.logits.view_mut().rows_mut(0..b)?, n_valid, &mut ws.head_cand)
    }
}

impl DeviceModel {
    /// The final norm's output that the last decode step's head read, rows 0..b of the batch, in
    /// the storage dtype (returned as f32 values): what `diff` compares with the truth's and
    /// PyTorch's at every greedy step. On the cuBLAS path it is the head GEMM's input (`xn`); the
    /// fused head normalises in its prologue and keeps the rows in shared memory, so the rmsnorm
    /// kernel recomputes them from the final residual stream into `xn`: the same bits, since the
    /// fused head equals rmsnorm + GEMV bit for bit (tests/gpu/decode.rs). Call it after
    /// [`DeviceModel::next_tokens`] has read the step (nothing is in flight then).
    pub fn decode_normed(&mut self, gpu: &Gpu) -> Result<HostTensor> {
        let b = self.batch.len();
        if b == 0 || self.steps_in_flight() > 0 {
            return Err(bad(format!("decode_normed wants a decode step read back and none in flight ({} in flight, batch of {b})", self.steps_in_flight())));
        }
        if self.options.decode_path == DecodePath::Fused {
            let ws = &mut self.ws;
            rmsnorm(gpu, &ws.resid.view().rows(0..b)?, &self.norm.view(), self.config.rms_norm_eps, &mut ws.xn.view_mut().rows_mut(0..b)?)?;
        }
        self.ws.xn.view().rows(0..b)?.to_host(gpu)
    }

    /// Nodes of the captured graph of the current batch's decode step (kernels, copies and sets:
    /// what one step launches), or None before its first step or with graphs off.
    pub fn decode_graph_nodes(&self) -> Result<Option<usize>> {
        let Some(graph) = self.graphs.get(&(self.batch.len(), self.decode_sampled)) else {
            return Ok(None);
        };
        let mut n = 0usize;
        // SAFETY: the handle is the live graph `graph` owns; a null array asks for the count only.
        unsafe { cudarc::driver::sys::cuGraphGetNodes(graph.cu_graph(), std::ptr::null_mut(), &mut n) }.result().cuda("cuGraphGetNodes")?;
        Ok(Some(n))
    }
}
