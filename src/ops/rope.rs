//! Rotary position embedding (half-split "neox" layout) on q [T, heads, head_dim] and
//! k [T, kv_heads, head_dim], positions per token (`cuda/rope.cu`).
//!
//! ```text
//! rope:     q, k rotated in place at positions[t]
//! rope_kv:  q rotated in place; k rotated and written, with v, to the paged KV cache at slot
//!           slot_mapping[t] (page slot / page_size, offset slot % page_size; a negative slot
//!           skips the write), either layout (crate::spec::kv_cache)
//! rope_qkv: rope_kv reading q, k, v from the rows of one [T, (heads + 2 kv_heads) d] tensor (the
//!           merged projection's output), the rotated q written to a contiguous q_out
//! ```
//!
//! Positions (and the slot mapping) are device i32 arrays: the decode step keeps no host-side
//! position counter, and nothing here synchronises. The host validates everything it can see
//! (ranks, heads, head_dim, dtypes, lengths); the values of positions and slots are checked by the
//! kernel, per token: a token whose position is outside `0..max_positions` or whose slot is at or
//! past the cache's `num_pages * page_size` is left untouched (q, k and the cache
//! keep their values), and a flag is raised in the table's device status word. The caller reads it
//! with [`RopeTable::check_status`] when it next synchronises (an engine: after the step). Nothing is
//! ever written out of bounds. No host-positions variant is offered: uploading would allocate or
//! need a staging buffer per call, and [`check`] already validates host positions for callers
//! that have them.
//!
//! The validation and the inv_freq table are the op's specification, [`crate::spec::rope`]
//! (re-exported here).

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::ops::kv_cache::{KvCacheDims, KvCacheViewMut};
use crate::tensor::{Layout, View, ViewMut};
use cudarc::driver::{CudaSlice, CudaView, LaunchConfig};

pub use crate::spec::rope::{check, check_kv, check_qk, check_theta, inv_freq, RopeDims, KV_OP, OP};
const MODULE: &str = "rope";

/// Status bit: some token's position was outside the limit (that token was skipped).
pub const STATUS_BAD_POSITION: u32 = 1;
/// Status bit: some token's slot was at or past the cache's slots (that token was skipped).
pub const STATUS_BAD_SLOT: u32 = 2;

/// Validate a table's parameters: theta finite and > 1, head_dim even in 2..=2048 (one thread per
/// rotation pair, at most 1024 per block), max_positions in 1..=2^24 (every position is then exact
/// as the f32 PyTorch converts it to, and fits the kernel's i32).
pub fn check_table(theta: f32, head_dim: usize, max_positions: usize) -> Result<()> {
    check_theta(theta)?;
    if head_dim == 0 || head_dim % 2 != 0 || head_dim > 2048 {
        return Err(Error::unsupported(OP, format!("head_dim {head_dim} must be even and in 2..=2048")));
    }
    if max_positions == 0 || max_positions > 1 << 24 {
        return Err(Error::unsupported(OP, format!("max_positions {max_positions} must be in 1..={}", 1 << 24)));
    }
    Ok(())
}

/// One model's rotary table on the device: inv_freq [head_dim / 2] in FP32 and the status word the
/// kernels flag bad positions and slots in. Built once per model (no per-call allocation or copy).
///
/// inv_freq is the specification's table ([`inv_freq`]), computed on the host and uploaded (the
/// spec says why).
pub struct RopeTable {
    inv_freq: CudaSlice<f32>,
    status: CudaSlice<u32>,
    theta: f32,
    head_dim: usize,
    max_positions: usize,
}

impl RopeTable {
    pub fn new(gpu: &Gpu, theta: f32, head_dim: usize, max_positions: usize) -> Result<Self> {
        check_table(theta, head_dim, max_positions)?;
        let table = inv_freq(theta, head_dim);
        let inv_freq = gpu.stream().clone_htod(&table).cuda("cuMemcpyHtoD(rope inv_freq)")?;
        let status = gpu.stream().alloc_zeros::<u32>(1).cuda("cuMemAlloc(rope status)")?;
        Ok(RopeTable { inv_freq, status, theta, head_dim, max_positions })
    }

    pub fn theta(&self) -> f32 {
        self.theta
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The device table and status word, for the kernels that rotate in an epilogue
    /// ([`crate::ops::decode::qkv`]).
    pub(crate) fn device_parts(&mut self) -> (&CudaSlice<f32>, &mut CudaSlice<u32>) {
        (&self.inv_freq, &mut self.status)
    }

    /// Read (synchronising) and clear the status word: `Ok` if every token since the last check had
    /// a valid position and slot, else an error naming what was skipped.
    pub fn check_status(&mut self, gpu: &Gpu) -> Result<()> {
        let status = gpu.stream().clone_dtoh(&self.status).cuda("cuMemcpyDtoH(rope status)")?;
        gpu.synchronize()?;
        let bits = status[0];
        if bits == 0 {
            return Ok(());
        }
        gpu.stream().memset_zeros(&mut self.status).cuda("cuMemsetD8(rope status)")?;
        Err(self.status_error(bits))
    }

    /// The error for the (non-zero) status `bits`.
    pub(crate) fn status_error(&self, bits: u32) -> Error {
        let mut what = Vec::new();
        if bits & STATUS_BAD_POSITION != 0 {
            what.push(format!("a position outside 0..{}", self.max_positions));
        }
        if bits & STATUS_BAD_SLOT != 0 {
            what.push("a slot past the cache's num_pages * page_size".to_string());
        }
        Error::invalid(OP, format!("tokens with {} were skipped (status {bits:#x})", what.join(" and ")))
    }
}

/// The launch shape: one block per token; threadIdx.x = rotation pair (d / 2 rounded up to whole
/// warps), threadIdx.y strides over the q and kv heads (256 threads a block when d / 2 <= 256).
pub fn launch_config(dims: RopeDims, kv_heads: usize) -> LaunchConfig {
    let half = dims.head_dim / 2;
    let x = half.div_ceil(32) as u32 * 32;
    let y = (256 / x).clamp(1, (dims.heads + kv_heads) as u32);
    LaunchConfig { grid_dim: (dims.tokens as u32, 1, 1), block_dim: (x, y, 1), shared_mem_bytes: 0 }
}

fn kernel_name(kv: bool, dtype: DType) -> &'static str {
    match (kv, dtype) {
        (false, DType::F32) => "rope_f32",
        (false, DType::F16) => "rope_f16",
        (false, DType::BF16) => "rope_bf16",
        (true, DType::F32) => "rope_kv_f32",
        (true, DType::F16) => "rope_kv_f16",
        (true, DType::BF16) => "rope_kv_bf16",
    }
}

/// Rotate q \[T, heads, d\] and k \[T, kv_heads, d\] in place at `positions` (device i32 \[T\]).
pub fn rope(gpu: &Gpu, table: &mut RopeTable, q: &mut ViewMut, k: &mut ViewMut, positions: &CudaView<i32>) -> Result<()> {
    let dims = check_qk(OP, q.layout(), k.layout(), table.head_dim, positions.len())?;
    let kv_heads = k.layout().shape.dims()[1];
    if dims.tokens == 0 {
        return Ok(());
    }
    let kernel = kernel_name(false, q.layout().dtype);
    let f = gpu.function(MODULE, kernel)?;
    let (heads_i, kv_i, half_i, max_i) = (dims.heads as i32, kv_heads as i32, (dims.head_dim / 2) as i32, table.max_positions as i32);
    let mut args = gpu.launcher(&f, kernel);
    args.arg(&mut q.data).arg(&mut k.data).arg(positions).arg(&table.inv_freq).arg(&mut table.status);
    args.arg(&heads_i).arg(&kv_i).arg(&half_i).arg(&max_i);
    // SAFETY: q holds T * heads * d and k T * kv_heads * d elements of the kernel's dtype, positions
    // T entries, inv_freq d / 2 (checked above and by the table). Block t touches token t's rows of
    // q and k only, threads with i >= d / 2 return, and a token with a position outside
    // 0..max_positions is skipped whole.
    unsafe { args.launch(launch_config(dims, kv_heads)) }?;
    Ok(())
}

/// Rotate q [T, heads, d] in place; rotate k [T, kv_heads, d] into the cache's k and copy v
/// \[T, kv_heads, d\] into its v, at slot `slot_mapping[t]` (device i32 \[T\]; page * page_size +
/// offset, negative = skip the token's write) and position `positions[t]` (device i32 \[T\]).
/// Positions at or past the table's max_positions and slots past the cache are skipped and
/// flagged ([`RopeTable::check_status`]).
#[allow(clippy::too_many_arguments)]
pub fn rope_kv(
    gpu: &Gpu,
    table: &mut RopeTable,
    q: &mut ViewMut,
    k: &View,
    v: &View,
    positions: &CudaView<i32>,
    slot_mapping: &CudaView<i32>,
    cache: &mut KvCacheViewMut,
) -> Result<()> {
    let dims = check_qk(KV_OP, q.layout(), k.layout(), table.head_dim, positions.len())?;
    let kv_heads = k.layout().shape.dims()[1];
    let c = check_kv(q.layout(), k.layout(), v.layout(), slot_mapping.len(), cache.k.layout(), cache.v.layout(), cache.layout)?;
    if dims.tokens == 0 {
        return Ok(());
    }
    let kernel = kernel_name(true, q.layout().dtype);
    let f = gpu.function(MODULE, kernel)?;
    let (heads_i, kv_i, half_i) = (dims.heads as i32, kv_heads as i32, (dims.head_dim / 2) as i32);
    let geometry = CacheArgs::new(table, &c);
    let mut args = gpu.launcher(&f, kernel);
    args.arg(&mut q.data).arg(&k.data).arg(&v.data).arg(positions).arg(slot_mapping).arg(&table.inv_freq);
    args.arg(&mut table.status).arg(&mut cache.k.data).arg(&mut cache.v.data);
    args.arg(&heads_i).arg(&kv_i).arg(&half_i);
    geometry.push(&mut args);
    // SAFETY: q, k, v, positions, slot_mapping and inv_freq hold what check_qk / check_kv verified.
    // The kernel writes the cache only at slot s with 0 <= s < num_pages * page_size (checked on
    // the device per token; negative: no write, larger: skipped and flagged), head h < kv_heads
    // (= the cache's), elements 0..d of that row: inside the caches' num_pages * page_stride.
    unsafe { args.launch(launch_config(dims, kv_heads)) }?;
    Ok(())
}

/// The cache-write kernels' trailing arguments: the position limit, the cache's slots, page size
/// and element strides (spec/kv_cache.rs).
pub(crate) struct CacheArgs {
    pos_limit: i32,
    n_slots: i32,
    page_size: i32,
    page_stride: i64,
    head_stride: i64,
    row_stride: i64,
}

impl CacheArgs {
    pub(crate) fn new(table: &RopeTable, c: &KvCacheDims) -> Self {
        // check_kv bounded the slots by i32, hence the page size too; max_positions <= 2^24.
        CacheArgs {
            pos_limit: table.max_positions as i32,
            n_slots: c.slots() as i32,
            page_size: c.page_size as i32,
            page_stride: c.page_stride() as i64,
            head_stride: c.head_stride() as i64,
            row_stride: c.row_stride() as i64,
        }
    }

    /// The same, as the argument structs' field (`cuda/args.h`'s QkCacheGeometry).
    pub(crate) fn geometry(&self) -> crate::kernel_args::QkCacheGeometry {
        crate::kernel_args::QkCacheGeometry {
            pos_limit: self.pos_limit,
            n_slots: self.n_slots,
            page_size: self.page_size,
            page_stride: self.page_stride,
            head_stride: self.head_stride,
            row_stride: self.row_stride,
        }
    }

    pub(crate) fn push<'a>(&'a self, args: &mut crate::gpu::KernelLaunch<'a>) {
        args.arg(&self.pos_limit).arg(&self.n_slots).arg(&self.page_size);
        args.arg(&self.page_stride).arg(&self.head_stride).arg(&self.row_stride);
    }
}

/// [`rope_kv`] reading q, k and v from the rows of one tensor, the merged q/k/v projection's output:
/// `qkv` [T, (heads + 2 kv_heads) * d], each row `[q (heads * d) | k (kv_heads * d) | v (kv_heads * d)]`.
/// The rotated q goes to `q_out` [T, heads, d] (qkv is not changed); the rotated k and v go to the
/// cache as in [`rope_kv`], with the same per-token checks on the device.
#[allow(clippy::too_many_arguments)]
pub fn rope_qkv(
    gpu: &Gpu,
    table: &mut RopeTable,
    qkv: &View,
    kv_heads: usize,
    positions: &CudaView<i32>,
    slot_mapping: &CudaView<i32>,
    q_out: &mut ViewMut,
    cache: &mut KvCacheViewMut,
) -> Result<()> {
    let q = q_out.layout();
    let (&[tokens, heads, d], &[rows, width]) = (q.shape.dims(), qkv.layout().shape.dims()) else {
        return Err(Error::shape(KV_OP, format!("qkv must be [tokens, (heads + 2 kv_heads) head_dim] and q_out [tokens, heads, head_dim], got {} and {q}", qkv.layout())));
    };
    if qkv.layout().dtype != q.dtype {
        return Err(Error::dtype(KV_OP, format!("qkv is {} but q_out is {}", qkv.layout().dtype, q.dtype)));
    }
    if rows != tokens || Some(width) != (heads + 2 * kv_heads).checked_mul(d) {
        return Err(Error::shape(KV_OP, format!("qkv {} must be [{tokens}, ({heads} + 2 x {kv_heads}) x {d}] for q_out {q}", qkv.layout())));
    }
    // k and v as the kernel reads them: [T, kv_heads, d] each, inside the qkv rows.
    let kv = Layout::new(q.dtype, &[tokens, kv_heads, d])?;
    let dims = check_qk(KV_OP, q, kv, table.head_dim, positions.len())?;
    let c = check_kv(q, kv, kv, slot_mapping.len(), cache.k.layout(), cache.v.layout(), cache.layout)?;
    if dims.tokens == 0 {
        return Ok(());
    }
    let kernel = match q.dtype {
        DType::F32 => "rope_qkv_f32",
        DType::F16 => "rope_qkv_f16",
        DType::BF16 => "rope_qkv_bf16",
    };
    let f = gpu.function(MODULE, kernel)?;
    let (heads_i, kv_i, half_i) = (dims.heads as i32, kv_heads as i32, (dims.head_dim / 2) as i32);
    let geometry = CacheArgs::new(table, &c);
    let mut args = gpu.launcher(&f, kernel);
    args.arg(&qkv.data).arg(&mut q_out.data).arg(positions).arg(slot_mapping).arg(&table.inv_freq);
    args.arg(&mut table.status).arg(&mut cache.k.data).arg(&mut cache.v.data);
    args.arg(&heads_i).arg(&kv_i).arg(&half_i);
    geometry.push(&mut args);
    // SAFETY: qkv holds T rows of (heads + 2 kv_heads) d elements and q_out T * heads * d, of one
    // dtype (checked above); the kernel reads q, k, v of token t inside row t and writes q_out row
    // t, and the cache only at slots checked on the device per token as in rope_kv.
    unsafe { args.launch(launch_config(dims, kv_heads)) }?;
    Ok(())
}
