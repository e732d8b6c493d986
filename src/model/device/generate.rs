//! The generate loops of [`DeviceModel`]: one prompt greedy or sampled, streaming its tokens, and
//! n sampled continuations of one prompt sharing its pages.

use super::{bad, DeviceModel, IN_FLIGHT};
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
    /// Decode steps of this row queued while the step before them was still unread (the pipeline
    /// at work: every step but the first, when nothing forced a wait). A step queued past the
    /// EOS is counted here and dropped.
    pub queued_ahead: usize,
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
        let mut g = Generation { tokens: Vec::new(), stopped_at_eos: false, prefill_seconds: 0.0, decode_seconds: 0.0, queued_ahead: 0 };
        if max_new == 0 {
            return Ok(g);
        }
        let start = std::time::Instant::now();
        let first = self.prefill(gpu, slot, prompt)?;
        g.prefill_seconds = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let mut gens = [g];
        self.decode_rows(gpu, &[slot], &mut gens, &[first], max_new, eos, &mut |_, t| on_token(t))?;
        let [mut g] = gens;
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
        let mut out = vec![Generation { tokens: Vec::new(), stopped_at_eos: false, prefill_seconds: 0.0, decode_seconds: 0.0, queued_ahead: 0 }; n];
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
        let firsts = self.read_prefill_tokens(gpu, n)?;
        let prefill_seconds = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        for g in &mut out {
            g.prefill_seconds = prefill_seconds;
        }
        let slots: Vec<usize> = (0..n).collect();
        self.decode_rows(gpu, &slots, &mut out, &firsts, max_new, eos, &mut on_token)?;
        let decode_seconds = start.elapsed().as_secs_f64();
        for g in &mut out {
            g.decode_seconds = decode_seconds;
        }
        Ok(out)
    }

    /// The decode loop of the generate calls: row i continues `slots[i]`, whose prefill chose
    /// `firsts[i]`; every row stops at an `eos` id or `max_new` tokens, and the batch steps until
    /// every row has (rows leave it as they stop). `on_token(i, token)` sees row i's tokens in
    /// order, as they are read.
    ///
    /// Pipelined: step n+1 is queued before step n is read (its tokens are step n's argmax, on the
    /// device already), so the GPU never waits for the host between steps; a step that would pass
    /// `max_new` is never queued. A row that stopped at EOS while the next step was in flight had
    /// that step computed for it: the step's token is dropped and the row's sequence truncated
    /// back, so the slot ends exactly as an unpipelined loop leaves it (the same length, and the
    /// same draws later: sampling depends on the position alone). A step that cannot be queued
    /// ahead (a full slot, no free page) is tried again after the read, where its error, if the
    /// step is still needed, is the caller's.
    #[allow(clippy::too_many_arguments)]
    fn decode_rows(
        &mut self,
        gpu: &Gpu,
        slots: &[usize],
        gens: &mut [Generation],
        firsts: &[u32],
        max_new: usize,
        eos: &[u32],
        on_token: &mut dyn FnMut(usize, u32) -> Result<()>,
    ) -> Result<()> {
        // Rows still generating; each has produced `produced` tokens.
        let mut live: Vec<usize> = Vec::new();
        for (i, &t) in firsts.iter().enumerate() {
            gens[i].tokens.push(t);
            on_token(i, t)?;
            if eos.contains(&t) {
                gens[i].stopped_at_eos = true;
            } else if max_new > 1 {
                live.push(i);
            }
        }
        let mut produced = 1;
        // The rows of the device's batch, and how many of its steps are queued and unread.
        let mut batch: Vec<usize> = Vec::new();
        let mut queued = 0usize;
        let result = (|| -> Result<()> {
            loop {
                if queued == 0 {
                    if live.is_empty() {
                        return Ok(());
                    }
                    if batch != live {
                        // The batch is set again, from the host's tokens, only when it shrinks.
                        let rows: Vec<usize> = live.iter().map(|&i| slots[i]).collect();
                        let tokens: Vec<u32> = live.iter().map(|&i| *gens[i].tokens.last().unwrap()).collect();
                        self.begin_decode(gpu, &rows, &tokens)?;
                        batch = live.clone();
                    }
                }
                while batch == live && queued < IN_FLIGHT && produced + queued < max_new {
                    match self.decode_step(gpu) {
                        Ok(()) => {
                            if queued > 0 {
                                for &i in &batch {
                                    gens[i].queued_ahead += 1;
                                }
                            }
                            queued += 1;
                        }
                        // Ahead of the read: tried again once the read says it is needed.
                        Err(_) if queued > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                queued -= 1;
                let next = self.next_tokens(gpu)?;
                let mut still = Vec::new();
                for (&i, &t) in batch.iter().zip(&next) {
                    if !live.contains(&i) {
                        // Stopped at an earlier step: this one ran ahead for it.
                        self.truncate(slots[i], self.seq_len(slots[i]) - 1)?;
                        continue;
                    }
                    gens[i].tokens.push(t);
                    on_token(i, t)?;
                    if eos.contains(&t) {
                        gens[i].stopped_at_eos = true;
                    } else if gens[i].tokens.len() < max_new {
                        still.push(i);
                    }
                }
                produced += 1;
                live = still;
            }
        })();
        if result.is_err() {
            // An error (or on_token's) with steps in flight: they are read (their flags checked
            // by the read, errors after the first dropped) and the rows truncated back, so no row
            // holds a position its caller never saw.
            for _ in 0..queued {
                let _ = self.next_tokens(gpu);
                for &i in &batch {
                    let s = slots[i];
                    let _ = self.truncate(s, self.seq_len(s).saturating_sub(1));
                }
            }
        }
        result
    }
}
