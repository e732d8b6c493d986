//! The generate loops of [`DeviceModel`]: one prompt greedy or sampled, streaming its tokens, and
//! n sampled continuations of one prompt sharing its pages.

use super::{bad, DeviceModel, Head};
use crate::error::{CudaContext as _, Result};
use crate::gpu::Gpu;
use crate::ops::sampling::{self as sampling_op, SamplingParams};

/// What [`DeviceModel::generate`] produced, with its timings (wall clock, synchronised).
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The new tokens, the EOS token included when one stopped the run.
    pub tokens: Vec<u32>,
    pub stopped_at_eos: bool,
    /// From the prefill's start until its token was read back.
    pub prefill_seconds: f64,
    /// The decode steps after it (each read back, as a streaming caller does).
    pub decode_seconds: f64,
}

impl Generation {
    /// Decode steps run: every new token but the prefill's.
    pub fn decode_steps(&self) -> usize {
        self.tokens.len().saturating_sub(1)
    }
}

impl DeviceModel {
    /// Greedy generation in `slot` (reset first): prefill `prompt`, then decode until an id of
    /// `eos` is produced or `max_new` tokens were, handing each token to `on_token` as it is read
    /// back (a streaming caller prints it there; an error from it stops the run).
    pub fn generate(&mut self, gpu: &Gpu, slot: usize, prompt: &[u32], max_new: usize, eos: &[u32], on_token: impl FnMut(u32) -> Result<()>) -> Result<Generation> {
        self.generate_sampled(gpu, slot, prompt, max_new, eos, SamplingParams::greedy(), on_token)
    }

    #[allow(clippy::too_many_arguments)] // generate's arguments and the sampling parameters
    /// As [`DeviceModel::generate`], choosing each token with `params` ([`DeviceModel::set_sampling`]):
    /// the same prompt, parameters and seed give the same tokens.
    pub fn generate_sampled(
        &mut self,
        gpu: &Gpu,
        slot: usize,
        prompt: &[u32],
        max_new: usize,
        eos: &[u32],
        params: SamplingParams,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Generation> {
        self.reset(slot)?;
        self.set_sampling(slot, params)?;
        let mut g = Generation { tokens: Vec::new(), stopped_at_eos: false, prefill_seconds: 0.0, decode_seconds: 0.0 };
        if max_new == 0 {
            return Ok(g);
        }
        let start = std::time::Instant::now();
        let first = self.prefill(gpu, slot, prompt)?;
        g.prefill_seconds = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let mut token = first;
        loop {
            g.tokens.push(token);
            on_token(token)?;
            if eos.contains(&token) {
                g.stopped_at_eos = true;
                break;
            }
            if g.tokens.len() == max_new {
                break;
            }
            if g.tokens.len() == 1 {
                self.begin_decode(gpu, &[slot], &[token])?;
            }
            self.decode_step(gpu)?;
            token = self.next_tokens(gpu)?[0];
        }
        g.decode_seconds = start.elapsed().as_secs_f64();
        Ok(g)
    }

    /// `n` continuations of one prompt, sampled, in slots 0..n: the prompt is prefilled once (slot
    /// 0) and its pages shared by the others ([`DeviceModel::fork`]); continuation i uses `params`
    /// with seed `params.seed + i`, so it is exactly the run of [`DeviceModel::generate_sampled`]
    /// with that seed. A continuation stops at an `eos` id or `max_new` tokens; the batch runs until
    /// every one has. `on_token(i, token)` sees each continuation's tokens in order.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_samples(
        &mut self,
        gpu: &Gpu,
        prompt: &[u32],
        n: usize,
        max_new: usize,
        eos: &[u32],
        params: SamplingParams,
        mut on_token: impl FnMut(usize, u32) -> Result<()>,
    ) -> Result<Vec<Generation>> {
        if n == 0 || n > self.options.slots {
            return Err(bad(format!("{n} samples for a model of {} slots", self.options.slots)));
        }
        let mut out = vec![Generation { tokens: Vec::new(), stopped_at_eos: false, prefill_seconds: 0.0, decode_seconds: 0.0 }; n];
        for i in 0..n {
            self.reset(i)?;
            self.set_sampling(i, SamplingParams { seed: params.seed.wrapping_add(i as u64), ..params })?;
        }
        if max_new == 0 {
            return Ok(out);
        }
        let start = std::time::Instant::now();
        // The prompt once; its last logits row copied to rows 1..n so each continuation draws its
        // first token from it with its own seed, at the position after the prompt.
        self.prefill(gpu, 0, prompt)?;
        for i in 1..n {
            self.fork(0, i)?;
        }
        // (Through the decode logits, free until the first decode step.)
        for i in 0..n {
            let row0 = self.ws.prefill_logits.view().rows(0..1)?;
            gpu.stream().memcpy_dtod(&row0.data, &mut self.ws.logits.view_mut().rows_mut(i..i + 1)?.data).cuda("cuMemcpyDtoD(sample logits)")?;
        }
        let rows: Vec<(usize, usize)> = (0..n).map(|i| (i, prompt.len())).collect();
        self.sampling.upload(gpu, false, &rows)?;
        let n_valid = self.config.real_vocab_size;
        sampling_op::sample_n(gpu, &self.ws.logits.view().rows(0..n)?, n_valid, &mut self.sampling.prefill, 1, self.ws.prefill_argmax.index_mut())?;
        let firsts = self.read_tokens(gpu, Head::Prefill(n))?;
        let prefill_seconds = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let mut live: Vec<usize> = Vec::new();
        for (i, &t) in firsts.iter().enumerate() {
            out[i].prefill_seconds = prefill_seconds;
            out[i].tokens.push(t);
            on_token(i, t)?;
            if eos.contains(&t) {
                out[i].stopped_at_eos = true;
            } else if max_new > 1 {
                live.push(i);
            }
        }
        // Finished continuations leave the batch; the rest step together (the batch is set again,
        // from the host's tokens, only when it shrinks).
        let mut batch: Vec<usize> = Vec::new();
        while !live.is_empty() {
            if batch != live {
                let tokens: Vec<u32> = live.iter().map(|&i| *out[i].tokens.last().unwrap()).collect();
                self.begin_decode(gpu, &live, &tokens)?;
                batch = live.clone();
            }
            self.decode_step(gpu)?;
            let next = self.next_tokens(gpu)?;
            let mut still = Vec::new();
            for (&i, &t) in live.iter().zip(&next) {
                out[i].tokens.push(t);
                on_token(i, t)?;
                if eos.contains(&t) {
                    out[i].stopped_at_eos = true;
                } else if out[i].tokens.len() < max_new {
                    still.push(i);
                }
            }
            live = still;
        }
        let decode_seconds = start.elapsed().as_secs_f64();
        for g in &mut out {
            g.decode_seconds = decode_seconds;
        }
        Ok(out)
    }
}
