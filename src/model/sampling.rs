//! Sampling in the model's own steps: each slot's parameters, and the device state of the draws
//! a prefill's head and a decode step's head make ([`crate::ops::sampling`]).
//!
//! A row's step (the Philox counter) is the position of the token it draws: the prefill of a
//! prompt of n tokens draws position n, a decode step feeding position p draws p + 1. So a
//! sequence rolled back, reset or rebuilt draws again exactly what it drew the first time, and a
//! run is a function of the prompt, the parameters and the seed alone. The decode sampler's steps
//! advance on the device with the positions (one per step, inside the captured graph); the host
//! uploads them with the rest of the batch's metadata whenever that is stale.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::sampling::{Sampler, SamplingParams};

pub(crate) struct ModelSampling {
    /// Per slot (greedy until set).
    params: Vec<SamplingParams>,
    /// Rows in decode-batch order.
    pub decode: Sampler,
    /// Rows in the order of the sequences a prefill pass finished.
    pub prefill: Sampler,
}

impl ModelSampling {
    pub fn new(gpu: &Gpu, slots: usize) -> Result<Self> {
        Ok(ModelSampling { params: vec![SamplingParams::greedy(); slots], decode: Sampler::new(gpu, slots)?, prefill: Sampler::new(gpu, slots)? })
    }

    /// Validated by the caller's slot check and [`SamplingParams::validate`].
    pub fn set(&mut self, slot: usize, params: SamplingParams) -> Result<()> {
        params.validate()?;
        self.params[slot] = params;
        Ok(())
    }

    pub fn get(&self, slot: usize) -> SamplingParams {
        self.params[slot]
    }

    /// Whether any of `slots` samples (otherwise the head's bounded argmax serves them all).
    pub fn any(&self, slots: impl IntoIterator<Item = usize>) -> bool {
        slots.into_iter().any(|s| !self.params[s].is_greedy())
    }

    /// Upload `rows` (slot, the position its row draws) into the prefill head's sampler, or the
    /// decode head's: parameters and steps.
    pub fn upload(&mut self, gpu: &Gpu, decode: bool, rows: &[(usize, usize)]) -> Result<()> {
        let p: Vec<SamplingParams> = rows.iter().map(|&(s, _)| self.params[s]).collect();
        let steps: Vec<u64> = rows.iter().map(|&(_, at)| at as u64).collect();
        let sampler = if decode { &mut self.decode } else { &mut self.prefill };
        sampler.set(gpu, &p)?;
        sampler.set_steps(gpu, &steps)
    }
}
