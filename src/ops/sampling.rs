//! Sampling on the device (`cuda/sampling.cu`): one token per row of logits [rows, stride] over the
//! first `n_valid` entries, with per-row temperature, top-k, top-p, min-p, seed and step, in
//! transformers' order; greedy rows (temperature 0) take the bounded argmax. The semantics, the
//! generator and the answers for rows that cannot draw are the op's specification,
//! [`crate::spec::sampling`] (re-exported here).
//!
//! The per-row state lives on the device in a [`Sampler`] the caller allocates once: the parameters
//! (one array each, as engines keep them), the Philox step counters, which every drawing launch
//! advances, and the tokens. Nothing synchronises, so a decode step ending in a draw can be captured
//! in a CUDA graph and replayed with fresh randomness. An engine that keeps its parameters in its
//! own buffers copies them in with [`Sampler::device_mut`] (device to device) or writes them there
//! from its own kernels; those are checked by the kernel ([`BAD_PARAMS`]), the host's by
//! [`SamplingParams::validate`].
//!
//! Cost: one block a row and no sort. A row is read once for the maximum, 4 times for top-k,
//! 5-6 times for top-p (the total, 4 radix levels, the tie group; 4 more when a tie group is cut)
//! and once for the draw: at most 15 passes over the row, L2-resident after the first. At batch 1
//! that is one SM reading about 9 MB from L2: tens of microseconds on an H200 by a model of one
//! SM's L2 bandwidth, not a measurement (`benches/ops.rs`, `sample/*`, measures it beside
//! transformers' warpers and `torch.multinomial`); spreading the filter's passes over many blocks
//! is the next step if the measurement asks for it.

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{View, ViewMut};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig};

pub use crate::spec::sampling::{check, Draw, SamplingParams, BAD_PARAMS, NO_DISTRIBUTION, OP};
const MODULE: &str = "sampling";

/// The per-row device state of sampling launches, for up to `capacity` rows.
pub struct Sampler {
    temperature: CudaSlice<f32>,
    top_k: CudaSlice<i32>,
    top_p: CudaSlice<f32>,
    min_p: CudaSlice<f32>,
    seed: CudaSlice<u64>,
    step: CudaSlice<u64>,
    tokens: CudaSlice<i32>,
    capacity: usize,
}

/// The parameter arrays of a [`Sampler`], writable on the device (each `capacity` long).
pub struct SamplerBuffers<'a> {
    pub temperature: &'a mut CudaSlice<f32>,
    pub top_k: &'a mut CudaSlice<i32>,
    pub top_p: &'a mut CudaSlice<f32>,
    pub min_p: &'a mut CudaSlice<f32>,
    pub seed: &'a mut CudaSlice<u64>,
    pub step: &'a mut CudaSlice<u64>,
}

impl Sampler {
    /// Room for `capacity` rows (at least 1), every row greedy at step 0 until [`Sampler::set`].
    pub fn new(gpu: &Gpu, capacity: usize) -> Result<Self> {
        let n = capacity.max(1);
        let s = gpu.stream();
        let mut out = Sampler {
            temperature: s.alloc_zeros::<f32>(n).cuda("cuMemAlloc(sampler)")?,
            top_k: s.alloc_zeros::<i32>(n).cuda("cuMemAlloc(sampler)")?,
            top_p: s.alloc_zeros::<f32>(n).cuda("cuMemAlloc(sampler)")?,
            min_p: s.alloc_zeros::<f32>(n).cuda("cuMemAlloc(sampler)")?,
            seed: s.alloc_zeros::<u64>(n).cuda("cuMemAlloc(sampler)")?,
            step: s.alloc_zeros::<u64>(n).cuda("cuMemAlloc(sampler)")?,
            tokens: s.clone_htod(&vec![NO_DISTRIBUTION; n]).cuda("cuMemcpyHtoD(sampler tokens)")?,
            capacity: n,
        };
        out.set(gpu, &vec![SamplingParams::greedy(); n])?;
        Ok(out)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Upload the parameters of rows 0..params.len() (validated first; nothing is written if one is
    /// out of range). The step counters are left as they are.
    pub fn set(&mut self, gpu: &Gpu, params: &[SamplingParams]) -> Result<()> {
        self.check_rows(params.len(), "parameters for")?;
        for (row, p) in params.iter().enumerate() {
            p.validate().map_err(|e| Error::invalid(OP, format!("row {row}: {e}")))?;
        }
        let n = params.len();
        let s = gpu.stream();
        let t: Vec<f32> = params.iter().map(|p| p.temperature).collect();
        let k: Vec<i32> = params.iter().map(|p| p.top_k_i32()).collect();
        let tp: Vec<f32> = params.iter().map(|p| p.top_p).collect();
        let mp: Vec<f32> = params.iter().map(|p| p.min_p).collect();
        let seed: Vec<u64> = params.iter().map(|p| p.seed).collect();
        s.memcpy_htod(&t, &mut self.temperature.slice_mut(0..n)).cuda("cuMemcpyHtoD(sampler)")?;
        s.memcpy_htod(&k, &mut self.top_k.slice_mut(0..n)).cuda("cuMemcpyHtoD(sampler)")?;
        s.memcpy_htod(&tp, &mut self.top_p.slice_mut(0..n)).cuda("cuMemcpyHtoD(sampler)")?;
        s.memcpy_htod(&mp, &mut self.min_p.slice_mut(0..n)).cuda("cuMemcpyHtoD(sampler)")?;
        s.memcpy_htod(&seed, &mut self.seed.slice_mut(0..n)).cuda("cuMemcpyHtoD(sampler)")?;
        Ok(())
    }

    /// Set the step counters of rows 0..steps.len() (a new request starts at 0; a rolled-back
    /// sequence goes back to the step it had).
    pub fn set_steps(&mut self, gpu: &Gpu, steps: &[u64]) -> Result<()> {
        self.check_rows(steps.len(), "steps for")?;
        gpu.stream().memcpy_htod(steps, &mut self.step.slice_mut(0..steps.len())).cuda("cuMemcpyHtoD(sampler steps)")?;
        Ok(())
    }

    /// The step counters of rows 0..rows (synchronises).
    pub fn steps_to_host(&self, gpu: &Gpu, rows: usize) -> Result<Vec<u64>> {
        self.check_rows(rows, "steps of")?;
        let out = gpu.stream().clone_dtoh(&self.step.slice(0..rows)).cuda("cuMemcpyDtoH(sampler steps)")?;
        gpu.synchronize()?;
        Ok(out)
    }

    /// The drawn tokens (i32 per row; [`NO_DISTRIBUTION`] / [`BAD_PARAMS`] for a row that drew
    /// nothing): a decode step feeds them back as the next step's tokens without the host.
    pub fn tokens(&self) -> &CudaSlice<i32> {
        &self.tokens
    }

    pub fn tokens_mut(&mut self) -> &mut CudaSlice<i32> {
        &mut self.tokens
    }

    /// The parameter and step arrays on the device, for an engine that writes them itself.
    pub fn device_mut(&mut self) -> SamplerBuffers<'_> {
        SamplerBuffers {
            temperature: &mut self.temperature,
            top_k: &mut self.top_k,
            top_p: &mut self.top_p,
            min_p: &mut self.min_p,
            seed: &mut self.seed,
            step: &mut self.step,
        }
    }

    /// What rows 0..rows drew (synchronises).
    pub fn draws_to_host(&self, gpu: &Gpu, rows: usize) -> Result<Vec<Draw>> {
        self.check_rows(rows, "draws of")?;
        let raw = gpu.stream().clone_dtoh(&self.tokens.slice(0..rows)).cuda("cuMemcpyDtoH(sampler tokens)")?;
        gpu.synchronize()?;
        Ok(raw.into_iter().map(Draw::from_raw).collect())
    }

    fn check_rows(&self, rows: usize, what: &str) -> Result<()> {
        if rows > self.capacity {
            return Err(Error::shape(OP, format!("{what} {rows} rows, but the sampler holds {}", self.capacity)));
        }
        Ok(())
    }
}

/// Threads of a row's block: about 16 tokens a thread, whole warps, 32..=1024.
pub fn threads(n_valid: usize) -> u32 {
    super::row_block_threads(n_valid.div_ceil(16))
}

/// One launch's per-row sampling state in device arrays the caller owns (an engine's own cudarc
/// buffers), each at least `rows` long: what a [`Sampler`] holds, borrowed. `step` is advanced by
/// the launches that draw. The values are checked on the device ([`BAD_PARAMS`]).
pub struct SamplingRows<'a> {
    pub temperature: &'a CudaView<'a, f32>,
    pub top_k: &'a CudaView<'a, i32>,
    pub top_p: &'a CudaView<'a, f32>,
    pub min_p: &'a CudaView<'a, f32>,
    pub seed: &'a CudaView<'a, u64>,
    pub step: &'a mut CudaViewMut<'a, u64>,
}

/// Draw one token for each row of `logits` [rows, stride] over its first `n_valid` entries into
/// `sampler`'s tokens, and advance each row's step.
pub fn sample(gpu: &Gpu, logits: &View, n_valid: usize, sampler: &mut Sampler) -> Result<()> {
    with_rows(sampler, |rows, tokens| launch(gpu, logits, n_valid, rows, tokens, 1, None, true))
}

/// Draw `draws` tokens for each row (draw d at the row's step + d: the filter runs once, each draw
/// is one more pass over the row) into `tokens` [rows, draws], and advance each row's step by
/// `draws`: the n samples of one prompt an engine's `n` asks for.
pub fn sample_n(gpu: &Gpu, logits: &View, n_valid: usize, sampler: &mut Sampler, draws: usize, tokens: &mut CudaSlice<i32>) -> Result<()> {
    let mut tokens = tokens.slice_mut(..);
    with_rows(sampler, |rows, _| launch(gpu, logits, n_valid, rows, &mut tokens, draws, None, true))
}

/// [`sample_n`] on parameter and step arrays the caller owns ([`SamplingRows`]).
pub fn sample_rows(gpu: &Gpu, logits: &View, n_valid: usize, rows: &mut SamplingRows, draws: usize, tokens: &mut CudaViewMut<i32>) -> Result<()> {
    launch(gpu, logits, n_valid, rows, tokens, draws, None, true)
}

/// The filtered distribution of each row into `probs` (f32 [rows, n_valid]): what [`sample`] draws
/// from. Also writes the tokens a draw at the current steps gives, without advancing them.
pub fn filtered_probs(gpu: &Gpu, logits: &View, n_valid: usize, sampler: &mut Sampler, probs: &mut ViewMut) -> Result<()> {
    with_rows(sampler, |rows, tokens| launch(gpu, logits, n_valid, rows, tokens, 1, Some(probs), false))
}

/// `f` with the sampler's arrays as [`SamplingRows`] and its tokens.
fn with_rows<R>(s: &mut Sampler, f: impl FnOnce(&mut SamplingRows, &mut CudaViewMut<i32>) -> R) -> R {
    let (temperature, top_k, top_p, min_p, seed) = (s.temperature.slice(..), s.top_k.slice(..), s.top_p.slice(..), s.min_p.slice(..), s.seed.slice(..));
    let mut step = s.step.slice_mut(..);
    let mut tokens = s.tokens.slice_mut(..);
    let mut rows = SamplingRows { temperature: &temperature, top_k: &top_k, top_p: &top_p, min_p: &min_p, seed: &seed, step: &mut step };
    f(&mut rows, &mut tokens)
}

/// The one launch behind every entry point: `draws` tokens a row into `tokens`, `probs` optional,
/// `advance` whether the steps move.
#[allow(clippy::too_many_arguments)]
fn launch(
    gpu: &Gpu,
    logits: &View,
    n_valid: usize,
    state: &mut SamplingRows,
    tokens: &mut CudaViewMut<i32>,
    draws: usize,
    probs: Option<&mut ViewMut>,
    advance: bool,
) -> Result<()> {
    let (rows, stride) = check(logits.layout(), n_valid)?;
    let shortest = [state.temperature.len(), state.top_k.len(), state.top_p.len(), state.min_p.len(), state.seed.len(), state.step.len()]
        .into_iter()
        .min()
        .unwrap_or(0);
    if rows > shortest {
        return Err(Error::shape(OP, format!("{rows} rows of logits but the sampler holds {shortest}")));
    }
    if draws == 0 || draws > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("draws {draws} must be in 1..={}", i32::MAX)));
    }
    if rows.checked_mul(draws).is_none_or(|need| tokens.len() < need) {
        return Err(Error::shape(OP, format!("tokens of {} entries for {rows} rows of {draws} draws", tokens.len())));
    }
    if let Some(p) = probs.as_deref() {
        let want = [rows, n_valid];
        if p.layout().dtype != DType::F32 || p.layout().shape.dims() != want {
            return Err(Error::shape(OP, format!("probs must be f32 {want:?}, got {}", p.layout())));
        }
    }
    if rows > i32::MAX as usize {
        return Err(Error::unsupported(OP, format!("rows {rows} > {} (grid x)", i32::MAX)));
    }
    if rows == 0 {
        return Ok(());
    }
    let kernel = match logits.layout().dtype {
        DType::F32 => "sample_f32",
        DType::F16 => "sample_f16",
        DType::BF16 => "sample_bf16",
    };
    let func = gpu.function(MODULE, kernel)?;
    let (stride_i, n_i, draws_i, advance_i, null) = (stride as i64, n_valid as i32, draws as i32, advance as i32, 0u64);
    let mut args = gpu.launcher(&func, kernel);
    args.arg(&logits.data)
        .arg(&stride_i)
        .arg(&n_i)
        .arg(state.temperature)
        .arg(state.top_k)
        .arg(state.top_p)
        .arg(state.min_p)
        .arg(state.seed)
        .arg(&mut *state.step)
        .arg(&mut *tokens)
        .arg(&draws_i);
    match probs {
        Some(p) => args.arg(&mut p.data),
        None => args.arg(&null),
    };
    args.arg(&advance_i);
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads(n_valid), 1, 1), shared_mem_bytes: 0 };
    // SAFETY: logits holds rows * stride elements of the kernel's dtype and block r reads row r's
    // first n_valid <= stride; every per-row array holds at least rows entries (checked above) and
    // block r touches entry r only; tokens holds rows * draws entries (checked) and block r writes
    // r * draws .. (r + 1) * draws; probs, when given, is f32 [rows, n_valid] (checked) and block r
    // writes its row. The null probs pointer is never dereferenced.
    unsafe { args.launch(cfg) }?;
    Ok(())
}
