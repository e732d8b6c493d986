//! Argmax over the first `n_valid` entries of each row of logits [rows, stride] (the real
//! vocabulary of a padded lm_head), ties to the lowest index (torch.argmax), NaN rows reported
//! (`cuda/argmax.cu`).
//!
//! Results stay on the device, in an [`ArgmaxOutput`] the caller allocates once: index i32 per row,
//! [`NAN_ROW`] (-1) for a row whose valid part holds a NaN, and the maximum value as f32 (NaN for such
//! a row). Nothing synchronises, so a decode step ending in argmax can be captured in a CUDA graph;
//! [`ArgmaxOutput::to_host`] downloads (and synchronises) when the caller wants the tokens.
//!
//! The validation and the per-row result type are the op's specification, [`crate::spec::argmax`]
//! (re-exported here).

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::tensor::View;
use cudarc::driver::{CudaSlice, LaunchConfig};

pub use crate::spec::argmax::{check, RowMax, OP};
const MODULE: &str = "argmax";
/// Chunks per row (the kernel's ARGMAX_CHUNKS): a 151665-entry row is read by 256 blocks of
/// 600 entries (150 f32 vectors) each, so batch 1 spreads over the whole GPU.
pub const CHUNKS: usize = 256;
/// Threads of a stage-1 block.
const PARTIAL_THREADS: u32 = 256;

/// The index a row with a NaN among its valid entries gets (its max value is NaN).
pub const NAN_ROW: i32 = -1;

/// Per-row results on the device, for up to `capacity` rows, and the per-chunk partial results
/// of the first stage ([capacity, CHUNKS] each).
pub struct ArgmaxOutput {
    index: CudaSlice<i32>,
    max: CudaSlice<f32>,
    part_v: CudaSlice<f32>,
    part_i: CudaSlice<i32>,
    capacity: usize,
}

impl ArgmaxOutput {
    /// Room for `capacity` rows (at least 1), filled with NAN_ROW / NaN until a launch writes them.
    pub fn new(gpu: &Gpu, capacity: usize) -> Result<Self> {
        let n = capacity.max(1);
        let index = gpu.stream().clone_htod(&vec![NAN_ROW; n]).cuda("cuMemcpyHtoD(argmax index)")?;
        let max = gpu.stream().clone_htod(&vec![f32::NAN; n]).cuda("cuMemcpyHtoD(argmax max)")?;
        let part_v = gpu.stream().alloc_zeros::<f32>(n * CHUNKS).cuda("cuMemAlloc(argmax partials)")?;
        let part_i = gpu.stream().alloc_zeros::<i32>(n * CHUNKS).cuda("cuMemAlloc(argmax partials)")?;
        Ok(ArgmaxOutput { index, max, part_v, part_i, capacity })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The first `rows` results (synchronises): `None` for a NaN row ([`RowMax`]).
    /// The device array of row indices (i32, `NAN_ROW` for a NaN row): a decode step feeds it
    /// back as the next step's tokens without the host seeing it.
    pub fn index(&self) -> &CudaSlice<i32> {
        &self.index
    }

    /// The index array, writable: how an engine seeds the first decode step's tokens.
    pub fn index_mut(&mut self) -> &mut CudaSlice<i32> {
        &mut self.index
    }

    pub fn to_host(&self, gpu: &Gpu, rows: usize) -> Result<Vec<RowMax>> {
        let (index, max) = self.raw_to_host(gpu, rows)?;
        Ok(index.iter().zip(&max).map(|(&i, &v)| if i == NAN_ROW { None } else { Some((i as u32, v)) }).collect())
    }

    /// The first `rows` raw indices and maxima (synchronises).
    pub fn raw_to_host(&self, gpu: &Gpu, rows: usize) -> Result<(Vec<i32>, Vec<f32>)> {
        if rows > self.capacity {
            return Err(Error::shape(OP, format!("{rows} rows requested from an output of {}", self.capacity)));
        }
        let index = gpu.stream().clone_dtoh(&self.index.slice(0..rows)).cuda("cuMemcpyDtoH(argmax index)")?;
        let max = gpu.stream().clone_dtoh(&self.max.slice(0..rows)).cuda("cuMemcpyDtoH(argmax max)")?;
        gpu.synchronize()?;
        Ok((index, max))
    }
}

pub use super::Path;

/// The launches an argmax gets: `kernel` on grid (CHUNKS, rows) x `threads`, each block scanning
/// `chunk` entries, then `argmax_finish` on grid rows x CHUNKS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub kernel: &'static str,
    pub vectorized: bool,
    pub rows: u32,
    pub threads: u32,
    pub chunk: u32,
}

/// Choose the variant: 16-byte vectors need every row start aligned (`aligned16` base and
/// stride * size a multiple of 16). Checks the kernel's int limits.
pub fn plan(dtype: DType, rows: usize, stride: usize, n_valid: usize, aligned16: bool, path: Path) -> Result<Launch> {
    if n_valid > 1 << 30 {
        return Err(Error::unsupported(OP, format!("n_valid {n_valid} > {} (i32 indices and chunk offsets)", 1 << 30)));
    }
    if rows > 65_535 {
        return Err(Error::unsupported(OP, format!("rows {rows} > 65535 (grid y)")));
    }
    let vector_ok = aligned16 && (stride * dtype.size()) % 16 == 0;
    let vectorized = path.vectorized(OP, vector_ok, || {
        format!("16-byte vector path needs 16-byte aligned rows: stride {stride} of {dtype}, base aligned: {aligned16}")
    })?;
    let kernel = match (dtype, vectorized) {
        (DType::F32, true) => "argmax_partial_f32_vec",
        (DType::F32, false) => "argmax_partial_f32_scalar",
        (DType::F16, true) => "argmax_partial_f16_vec",
        (DType::F16, false) => "argmax_partial_f16_scalar",
        (DType::BF16, true) => "argmax_partial_bf16_vec",
        (DType::BF16, false) => "argmax_partial_bf16_scalar",
    };
    // A multiple of 8 entries: every chunk of an aligned row starts 16-byte aligned in every dtype.
    let chunk = n_valid.div_ceil(CHUNKS).next_multiple_of(8) as u32;
    Ok(Launch { kernel, vectorized, rows: rows as u32, threads: PARTIAL_THREADS, chunk })
}

/// Argmax of each row of `logits` [rows, stride] over its first `n_valid` entries, into `out`
/// (rows 0..rows). `with_max`: also write each row's maximum.
pub fn argmax(gpu: &Gpu, logits: &View, n_valid: usize, out: &mut ArgmaxOutput, with_max: bool) -> Result<()> {
    argmax_with_path(gpu, logits, n_valid, out, with_max, Path::Auto)
}

pub fn argmax_with_path(gpu: &Gpu, logits: &View, n_valid: usize, out: &mut ArgmaxOutput, with_max: bool, path: Path) -> Result<()> {
    let (rows, stride) = check(logits.layout(), n_valid)?;
    if rows > out.capacity {
        return Err(Error::shape(OP, format!("{rows} rows of logits but the output holds {}", out.capacity)));
    }
    let launch = plan(logits.layout().dtype, rows, stride, n_valid, logits.byte_offset() % 16 == 0, path)?;
    if rows == 0 {
        return Ok(());
    }
    let (stride_i, n_valid_i, chunk_i) = (stride as i64, n_valid as i32, launch.chunk as i32);
    let partial = gpu.function(MODULE, launch.kernel)?;
    let mut args = gpu.launcher(&partial, launch.kernel);
    args.arg(&logits.data).arg(&mut out.part_v).arg(&mut out.part_i).arg(&stride_i).arg(&n_valid_i).arg(&chunk_i);
    let cfg = LaunchConfig { grid_dim: (CHUNKS as u32, launch.rows, 1), block_dim: (launch.threads, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: logits holds rows * stride elements of the kernel's dtype; block (c, r) reads row r's
    // entries [c * chunk, min((c + 1) * chunk, n_valid)), n_valid <= stride (16-byte vectors only
    // when every row start is aligned; chunk is a multiple of 8), and writes partial r * CHUNKS + c,
    // r < rows <= capacity (checked above), inside the [capacity, CHUNKS] partials.
    unsafe { args.launch(cfg) }?;

    let finish = gpu.function(MODULE, "argmax_finish")?;
    let null: u64 = 0;
    let mut args = gpu.launcher(&finish, "argmax_finish");
    args.arg(&out.part_v).arg(&out.part_i).arg(&mut out.index);
    if with_max {
        args.arg(&mut out.max);
    } else {
        args.arg(&null);
    }
    let cfg = LaunchConfig { grid_dim: (launch.rows, 1, 1), block_dim: (CHUNKS as u32, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: block r reads partials r * CHUNKS .. (r + 1) * CHUNKS, written by the launch above
    // (same stream, so ordered), and writes index[r] and max[r], r < rows <= capacity. The null max
    // pointer is never dereferenced.
    unsafe { args.launch(cfg) }?;
    Ok(())
}
