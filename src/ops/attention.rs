//! GQA attention with FP32 logits and softmax (`cuda/attention.cu`): q [T, heads, head_dim] against
//! k, v [S, kv_heads, head_dim]; query t sits at position S - T + t and sees keys 0 ..= that
//! position. kv_head = q_head / (heads / kv_heads).
//!
//! ```text
//! prefill:  o [T, heads, D]  = attention(q [T, heads, D], k, v [S, kv_heads, D])     T <= S (chunked when T < S)
//! decode:   o [B, heads, D]  = attention(q [B, heads, D], k_cache, v_cache [slots, kv_heads, capacity, D],
//!                                        slot [B], len [B])                           device i32 arrays
//! ```
//! q.k, logits, running max, exponentials, sums and the p.v accumulation are FP32; the output is
//! rounded once to the storage dtype. head_dim 64 and 128 (others: `Error::UnsupportedSize`); any
//! group size. Prefill is one sequence per call (a batch of prompts is a batch of calls).
//!
//! Kernels (details in the kernel file's header):
//! - prefill f16/bf16: tensor cores (`mma.sync` m16n8k16, FP32 accumulation), 64 query rows x 64
//!   keys per step, K/V tiles double-buffered with cp.async, fragments by ldmatrix, online softmax; the softmax weights enter the P.V mma split into 2 (f16) or 3
//!   (bf16) 16-bit terms so they keep FP32 accuracy ([`mma_extra_error`]).
//! - prefill f32 (and `PrefillPath::Simt` for any dtype): the SIMT kernel below, one block per query
//!   token and kv head, no workspace.
//! - decode: SIMT flash-decoding. Each block reads the K/V rows of one (sequence, kv head, split of
//!   `chunk` keys) once for the whole query group; partial (max, sum, acc) go to a caller-provided
//!   FP32 workspace ([`decode_workspace_len`]) and a second kernel merges them. Nothing is allocated
//!   and nothing synchronises: a decode step can be captured in a CUDA graph.
//!
//! Batch invariance: a row's result depends on its own length (and, in decode, the chunk), never on
//! the rows around it. The SIMT prefill's row t and a one-split decode of the same token (chunk >=
//! len) are bit-identical; the tensor-core prefill and a multi-split decode of the same token agree
//! within the tolerance, not bitwise (different summation orders).
//!
//! Device-side slots and lens cannot be checked on the host. The kernels read them and treat a row
//! with slot outside [0, slots) or len outside [1, capacity] as invalid: nothing is read for it,
//! every element of its output is NaN, and a flag is raised in the workspace's status word, which
//! [`decode_status`] reads (synchronising) as a typed error: never an out-of-bounds access, never
//! a silent row.

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::spec::kv_cache::{self, KvCacheDims};
use crate::tensor::{HostTensor, Layout, View, ViewMut};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaView, LaunchConfig};

pub use crate::spec::attention::{check, error_scale, softmax_scale, AttentionDims, DECODE_OP, OP};
const MODULE: &str = "attention";

/// Head dims the kernels are compiled for.
pub const HEAD_DIMS: [usize; 2] = [64, 128];
/// Keys per tile of the SIMT kernel (`SPLIT_TILE`); a decode chunk is a multiple of it.
pub const SPLIT_TILE: usize = 64;
/// Query heads one SIMT block serves (`MAX_HEADS_PER_BLOCK`): the whole group for group <= 8.
pub const HEADS_PER_BLOCK: usize = 8;
/// Keys per decode split unless the caller chooses: 32k contexts become 128 splits per
/// (sequence, kv head), so one long sequence fills the GPU.
pub const DEFAULT_DECODE_CHUNK: usize = 256;
/// Query rows per block of the tensor-core prefill (`BLOCK_M`).
pub const MMA_BLOCK_M: usize = 64;
/// Keys per tile of the tensor-core prefill (`BLOCK_N`), double-buffered (`STAGES`).
const MMA_BLOCK_N: usize = 64;
const MMA_STAGES: usize = 2;

/// Dynamic shared memory of the tensor-core prefill (`mma_smem_bytes`): K and V tiles of 64 rows
/// of head_dim + 8 16-bit elements, two of each: 36 KiB at head_dim 64, 68 KiB at 128 (past the
/// 48 KiB default, so the launch raises the kernel's limit; every sm_80+ part allows 99 KiB).
pub fn mma_shared_bytes(head_dim: usize) -> usize {
    MMA_STAGES * 2 * MMA_BLOCK_N * (head_dim + 8) * 2
}
const SPLIT_THREADS: u32 = 128;
const MMA_THREADS: u32 = 128;
/// CUDA's limit on grid.y and grid.z.
const GRID_YZ_MAX: usize = 65535;

/// The head dims the kernels are compiled for.
pub fn check_head_dim(op: &'static str, head_dim: usize) -> Result<()> {
    if !HEAD_DIMS.contains(&head_dim) {
        return Err(Error::unsupported(op, format!("head_dim {head_dim}: kernels exist for {HEAD_DIMS:?}")));
    }
    Ok(())
}

fn check_out(op: &'static str, q: Layout, out: Layout) -> Result<()> {
    if out.dtype != q.dtype {
        return Err(Error::dtype(op, format!("out is {} but q is {}", out.dtype, q.dtype)));
    }
    if out.shape != q.shape {
        return Err(Error::shape(op, format!("out {out} must match q {q}")));
    }
    Ok(())
}

fn check_aligned(op: &'static str, operands: &[(&str, usize)]) -> Result<()> {
    for &(what, offset) in operands {
        if offset % 16 != 0 {
            return Err(Error::alignment(op, format!("{what} starts {offset} bytes into its allocation; 16-byte alignment required")));
        }
    }
    Ok(())
}

fn to_i32(op: &'static str, what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::unsupported(op, format!("{what} {n} > {}", i32::MAX)))
}

/// Which prefill kernel runs. `Auto`: tensor cores for f16/bf16, SIMT for f32.
/// `TensorCore` on f32 is an error (FP32 storage has no FP32-exact tensor-core path; no TF32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillPath {
    Auto,
    TensorCore,
    Simt,
}

/// The launch a prefill gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillLaunch {
    pub kernel: &'static str,
    pub grid: (u32, u32, u32),
    pub threads: u32,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
}

/// Validate a prefill (q, k, v, out, alignment) and choose its kernel. `byte_offsets`: q, k, v, out.
pub fn plan_prefill(q: Layout, k: Layout, v: Layout, out: Layout, byte_offsets: [usize; 4], path: PrefillPath) -> Result<(AttentionDims, PrefillLaunch)> {
    let dims = check(q, k, v)?;
    check_out(OP, q, out)?;
    check_head_dim(OP, dims.head_dim)?;
    check_aligned(OP, &[("q", byte_offsets[0]), ("k", byte_offsets[1]), ("v", byte_offsets[2]), ("out", byte_offsets[3])])?;
    to_i32(OP, "context", dims.context)?;
    to_i32(OP, "heads", dims.heads)?;
    let dtype = q.dtype;
    let tensor_core = match (path, dtype) {
        (PrefillPath::Simt, _) | (PrefillPath::Auto, DType::F32) => false,
        (PrefillPath::Auto | PrefillPath::TensorCore, DType::F16 | DType::BF16) => true,
        (PrefillPath::TensorCore, DType::F32) => {
            return Err(Error::dtype(OP, "the tensor-core prefill takes f16 or bf16 storage, got f32"));
        }
    };
    let d128 = dims.head_dim == 128;
    let launch = if tensor_core {
        if dims.heads > GRID_YZ_MAX {
            return Err(Error::unsupported(OP, format!("heads {} > {GRID_YZ_MAX} (grid.y)", dims.heads)));
        }
        let kernel = match (dtype, d128) {
            (DType::F16, false) => "attn_prefill_mma_f16_d64",
            (DType::F16, true) => "attn_prefill_mma_f16_d128",
            (_, false) => "attn_prefill_mma_bf16_d64",
            (_, true) => "attn_prefill_mma_bf16_d128",
        };
        let grid = (dims.tokens.div_ceil(MMA_BLOCK_M) as u32, dims.heads as u32, 1);
        PrefillLaunch { kernel, grid, threads: MMA_THREADS, shared_bytes: mma_shared_bytes(dims.head_dim) as u32 }
    } else {
        let head_blocks = dims.group().div_ceil(HEADS_PER_BLOCK);
        let grid_y = dims.kv_heads * head_blocks;
        if grid_y > GRID_YZ_MAX {
            return Err(Error::unsupported(OP, format!("kv_heads x head blocks {grid_y} > {GRID_YZ_MAX} (grid.y)")));
        }
        let grid = (dims.tokens as u32, grid_y as u32, 1);
        PrefillLaunch { kernel: split_kernel(dtype, d128), grid, threads: SPLIT_THREADS, shared_bytes: 0 }
    };
    Ok((dims, launch))
}

fn split_kernel(dtype: DType, d128: bool) -> &'static str {
    match (dtype, d128) {
        (DType::F32, false) => "attn_split_f32_d64",
        (DType::F32, true) => "attn_split_f32_d128",
        (DType::F16, false) => "attn_split_f16_d64",
        (DType::F16, true) => "attn_split_f16_d128",
        (DType::BF16, false) => "attn_split_bf16_d64",
        (DType::BF16, true) => "attn_split_bf16_d128",
    }
}

fn combine_kernel(dtype: DType, d128: bool) -> &'static str {
    match (dtype, d128) {
        (DType::F32, false) => "attn_combine_f32_d64",
        (DType::F32, true) => "attn_combine_f32_d128",
        (DType::F16, false) => "attn_combine_f16_d64",
        (DType::F16, true) => "attn_combine_f16_d128",
        (DType::BF16, false) => "attn_combine_bf16_d64",
        (DType::BF16, true) => "attn_combine_bf16_d128",
    }
}

/// Causal attention of `q` [T, heads, D] over `k`, `v` [S, kv_heads, D] into `out` [T, heads, D].
pub fn prefill(gpu: &Gpu, q: &View, k: &View, v: &View, out: &mut ViewMut) -> Result<()> {
    prefill_with_path(gpu, q, k, v, out, PrefillPath::Auto)
}

pub fn prefill_with_path(gpu: &Gpu, q: &View, k: &View, v: &View, out: &mut ViewMut, path: PrefillPath) -> Result<()> {
    let offsets = [q.byte_offset(), k.byte_offset(), v.byte_offset(), out.byte_offset()];
    let (dims, launch) = plan_prefill(q.layout(), k.layout(), v.layout(), out.layout(), offsets, path)?;
    // Contiguous k, v [S, kv_heads, D]: kv head g's row s at g * D + s * kv_heads * D.
    let strides = KeyStrides { head: dims.head_dim as i64, row: (dims.kv_heads * dims.head_dim) as i64 };
    launch_prefill(gpu, q, &k.data, &v.data, out, dims, launch, strides)
}

/// Causal attention of `q` [T, heads, D], the newest T tokens of the sequence in cache slot
/// `slot`, over that slot's first `context` positions of `k_cache`, `v_cache` [slots, kv_heads,
/// capacity, D] ([`crate::spec::kv_cache`]), into `out` [T, heads, D]: query t sits at position
/// context - T + t. The same kernels as [`prefill`] (tensor cores for f16/bf16), reading the cache
/// in place through its strides: a chunked prefill needs no contiguous copy of the keys. The keys
/// and values of the T new tokens must already be in the cache (`rope::rope_kv` writes them).
#[allow(clippy::too_many_arguments)]
pub fn prefill_cached(gpu: &Gpu, q: &View, k_cache: &View, v_cache: &View, slot: usize, context: usize, out: &mut ViewMut, path: PrefillPath) -> Result<()> {
    let cache = kv_cache::check(OP, k_cache.layout(), v_cache.layout())?;
    if slot >= cache.slots {
        return Err(Error::invalid(OP, format!("slot {slot} outside the cache's {} slots", cache.slots)));
    }
    if context > cache.capacity {
        return Err(Error::invalid(OP, format!("context {context} past the cache's capacity {}", cache.capacity)));
    }
    // The slot's first `context` positions, validated as the contiguous k, v [S, kv_heads, D] they
    // stand for (same element count and dtype; only the strides differ).
    let kv = Layout::new(k_cache.layout().dtype, &[context, cache.kv_heads, cache.head_dim])?;
    let offsets = [q.byte_offset(), k_cache.byte_offset(), v_cache.byte_offset(), out.byte_offset()];
    let (dims, launch) = plan_prefill(q.layout(), kv, kv, out.layout(), offsets, path)?;
    let slot_bytes = cache.kv_heads * cache.capacity * cache.head_dim * kv.dtype.size();
    let (k, v) = (k_cache.data.slice(slot * slot_bytes..), v_cache.data.slice(slot * slot_bytes..));
    // [slots, kv_heads, capacity, D]: kv head g's position s of this slot at g * capacity * D + s * D.
    let strides = KeyStrides { head: (cache.capacity * cache.head_dim) as i64, row: cache.head_dim as i64 };
    launch_prefill(gpu, q, &k, &v, out, dims, launch, strides)
}

/// Element strides of the keys and values a prefill reads: between kv heads, between positions.
#[derive(Clone, Copy)]
struct KeyStrides {
    head: i64,
    row: i64,
}

#[allow(clippy::too_many_arguments)]
fn launch_prefill(
    gpu: &Gpu,
    q: &View,
    k: &CudaView<u8>,
    v: &CudaView<u8>,
    out: &mut ViewMut,
    dims: AttentionDims,
    launch: PrefillLaunch,
    strides: KeyStrides,
) -> Result<()> {
    if dims.tokens == 0 {
        return Ok(());
    }
    let f = gpu.function(MODULE, launch.kernel)?;
    let config = LaunchConfig { grid_dim: launch.grid, block_dim: (launch.threads, 1, 1), shared_mem_bytes: launch.shared_bytes };
    if launch.shared_bytes > 0 {
        // Not a stream operation: legal while a graph is being captured.
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, launch.shared_bytes as i32)
            .cuda(format!("cuFuncSetAttribute({}, MAX_DYNAMIC_SHARED_SIZE_BYTES, {})", launch.kernel, launch.shared_bytes))?;
    }
    let (tokens, context, heads) = (dims.tokens as i32, dims.context as i32, dims.heads as i32);
    let group = dims.group() as i32;
    let (head_stride, row_stride) = (strides.head, strides.row);
    let scale = softmax_scale(dims.head_dim);
    let mut args = gpu.launcher(&f, launch.kernel);
    if launch.kernel.starts_with("attn_prefill_mma") {
        args.arg(&q.data).arg(k).arg(v).arg(&mut out.data);
        args.arg(&tokens).arg(&context).arg(&heads).arg(&group).arg(&head_stride).arg(&row_stride).arg(&scale);
        // SAFETY: q and out hold T * heads * D elements of the kernel's dtype, 16-byte aligned
        // (checked by plan_prefill); k and v hold kv head g's position s < S at g * head_stride +
        // s * row_stride (contiguous [S, kv_heads, D], or a cache slot's [kv_heads, capacity, D]
        // with S <= capacity, checked by the callers), 16-byte aligned; the dynamic shared memory
        // is the kernel's mma_smem_bytes(D), allowed by the attribute just set. Block (i, h) reads
        // q rows and writes out rows of its 64 tokens (< T only) for head h, and reads k, v rows
        // < S of kv head h / group.
        unsafe { args.launch(config) }?;
    } else {
        // Prefill mode of the split kernel: no slots/lens (row t has len S - T + t + 1), one split
        // covering the whole context, so the workspace is never touched (null).
        let null: u64 = 0;
        let n_slots = 1i32;
        let chunk = context;
        let max_splits = 1i32;
        let slot_stride = 0i64;
        args.arg(&q.data).arg(k).arg(v).arg(&mut out.data).arg(&null).arg(&null).arg(&null);
        args.arg(&heads).arg(&group).arg(&n_slots).arg(&context).arg(&context).arg(&tokens);
        args.arg(&slot_stride).arg(&head_stride).arg(&row_stride).arg(&chunk).arg(&max_splits).arg(&scale);
        // SAFETY: as above; block (t, y, 0) reads keys 0 .. S - T + t of one kv head, writes the
        // out rows of token t for at most 8 heads of that kv head's group. One split: the kernel
        // writes out directly and never dereferences the null workspace.
        unsafe { args.launch(config) }?;
    }
    Ok(())
}

/// Dimensions of a validated decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeDims {
    /// Sequences (one new token each).
    pub batch: usize,
    pub heads: usize,
    pub cache: KvCacheDims,
    /// Keys per split.
    pub chunk: usize,
}

impl DecodeDims {
    pub fn group(&self) -> usize {
        self.heads / self.cache.kv_heads
    }
    /// Splits the longest possible sequence (len = capacity) has: the grid's z extent.
    pub fn max_splits(&self) -> usize {
        decode_splits(self.cache.capacity, self.chunk)
    }
}

/// Splits of a sequence of `len` keys.
pub fn decode_splits(len: usize, chunk: usize) -> usize {
    len.div_ceil(chunk.max(1))
}

/// FP32 elements of the decode workspace for `batch` sequences: the status word (element 0, see
/// [`decode_status`]), then per (sequence, head, split) the unnormalised accumulator (head_dim) and
/// the running max and sum (2). Depends only on shapes, so one buffer allocated up front serves
/// every step.
pub fn decode_workspace_len(batch: usize, heads: usize, head_dim: usize, capacity: usize, chunk: usize) -> usize {
    1 + batch * heads * decode_splits(capacity, chunk) * (head_dim + 2)
}

/// Status bit: some row's slot was outside the cache (its output is NaN).
pub const STATUS_BAD_SLOT: u32 = 1;
/// Status bit: some row's len was outside 1..=capacity (its output is NaN).
pub const STATUS_BAD_LEN: u32 = 2;

/// Read (synchronising) the status word of the last decode into `workspace`: `Ok` if every row had
/// a slot inside the cache and a len in 1..=capacity, else an error naming what was wrong; those
/// rows' outputs are NaN. The next decode clears the word, so read it after each step whose rows
/// were not known to be valid.
pub fn decode_status(gpu: &Gpu, workspace: &View) -> Result<()> {
    if workspace.layout().dtype != DType::F32 || workspace.layout().numel() == 0 {
        return Err(Error::dtype(DECODE_OP, format!("workspace must be a non-empty f32 tensor, got {}", workspace.layout())));
    }
    let word = gpu.stream().clone_dtoh(&workspace.data.slice(0..4)).cuda("cuMemcpyDtoH(decode status)")?;
    gpu.synchronize()?;
    let bits = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    if bits == 0 {
        return Ok(());
    }
    let mut what = Vec::new();
    if bits & STATUS_BAD_SLOT != 0 {
        what.push("a slot outside 0..slots of the cache");
    }
    if bits & STATUS_BAD_LEN != 0 {
        what.push("a len outside 1..=capacity");
    }
    Err(Error::invalid(DECODE_OP, format!("rows with {} were skipped, their output is NaN (status {bits:#x})", what.join(" and "))))
}

fn check_chunk(chunk: usize) -> Result<()> {
    if chunk == 0 || chunk % SPLIT_TILE != 0 || chunk > i32::MAX as usize {
        return Err(Error::invalid(DECODE_OP, format!("chunk {chunk} must be a positive multiple of {SPLIT_TILE}")));
    }
    Ok(())
}

/// Validate a decode: q [B, heads, D], the cache pair, out like q, `slots_len` and `lens_len`
/// (the device arrays' lengths) equal to B, the workspace (f32, at least `decode_workspace_len`),
/// the chunk, and 16-byte alignment (`byte_offsets`: q, k_cache, v_cache, out).
#[allow(clippy::too_many_arguments)]
pub fn check_decode(
    q: Layout,
    k_cache: Layout,
    v_cache: Layout,
    out: Layout,
    slots_len: usize,
    lens_len: usize,
    workspace: Layout,
    chunk: usize,
    byte_offsets: [usize; 4],
) -> Result<DecodeDims> {
    let [batch, heads, head_dim] = *q.shape.dims() else {
        return Err(Error::shape(DECODE_OP, format!("q must be [batch, heads, head_dim], got {q}")));
    };
    let cache = kv_cache::check(DECODE_OP, k_cache, v_cache)?;
    if k_cache.dtype != q.dtype {
        return Err(Error::dtype(DECODE_OP, format!("cache is {} but q is {}", k_cache.dtype, q.dtype)));
    }
    if cache.head_dim != head_dim {
        return Err(Error::shape(DECODE_OP, format!("q {q} and cache {k_cache} differ in head_dim")));
    }
    if heads == 0 || heads % cache.kv_heads != 0 {
        return Err(Error::shape(DECODE_OP, format!("{heads} query heads are not a multiple of {} kv heads", cache.kv_heads)));
    }
    check_out(DECODE_OP, q, out)?;
    check_head_dim(DECODE_OP, head_dim)?;
    if slots_len != batch || lens_len != batch {
        return Err(Error::shape(DECODE_OP, format!("{slots_len} slots and {lens_len} lens for a batch of {batch}")));
    }
    check_chunk(chunk)?;
    if workspace.dtype != DType::F32 {
        return Err(Error::dtype(DECODE_OP, format!("workspace must be f32, got {}", workspace.dtype)));
    }
    let need = decode_workspace_len(batch, heads, head_dim, cache.capacity, chunk);
    if workspace.numel() < need {
        return Err(Error::shape(
            DECODE_OP,
            format!("workspace of {} f32 < {need} needed (decode_workspace_len({batch}, {heads}, {head_dim}, {}, {chunk}))", workspace.numel(), cache.capacity),
        ));
    }
    check_aligned(DECODE_OP, &[("q", byte_offsets[0]), ("k_cache", byte_offsets[1]), ("v_cache", byte_offsets[2]), ("out", byte_offsets[3])])?;
    to_i32(DECODE_OP, "batch", batch)?;
    to_i32(DECODE_OP, "slots", cache.slots)?;
    to_i32(DECODE_OP, "capacity", cache.capacity)?;
    let dims = DecodeDims { batch, heads, cache, chunk };
    let grid_y = cache.kv_heads * dims.group().div_ceil(HEADS_PER_BLOCK);
    if grid_y > GRID_YZ_MAX || dims.max_splits() > GRID_YZ_MAX || heads > GRID_YZ_MAX {
        return Err(Error::unsupported(
            DECODE_OP,
            format!("grid too large: kv_heads x head blocks {grid_y}, splits {}, heads {heads} (limit {GRID_YZ_MAX})", dims.max_splits()),
        ));
    }
    Ok(dims)
}

/// One new token per sequence against the KV cache, with `DEFAULT_DECODE_CHUNK`.
///
/// `q`, `out`: [B, heads, D]; `k_cache`, `v_cache`: [slots, kv_heads, capacity, D] (crate::spec::kv_cache);
/// `slots`, `lens`: B device i32 each (sequence b is in slot `slots[b]` with `lens[b]` valid
/// positions, the new token's key at `lens[b] - 1`); `workspace`: f32, at least
/// `decode_workspace_len(B, heads, D, capacity, DEFAULT_DECODE_CHUNK)` elements. A row whose slot
/// or len is outside the cache is skipped (its output NaN) and flagged: [`decode_status`] says so.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    gpu: &Gpu,
    q: &View,
    k_cache: &View,
    v_cache: &View,
    slots: &CudaView<'_, i32>,
    lens: &CudaView<'_, i32>,
    workspace: &mut ViewMut,
    out: &mut ViewMut,
) -> Result<()> {
    decode_with_chunk(gpu, q, k_cache, v_cache, slots, lens, workspace, out, DEFAULT_DECODE_CHUNK)
}

/// As [`decode`], with `chunk` keys per split (a multiple of 64). A sequence's result depends on its
/// own length and the chunk, never on the batch around it.
#[allow(clippy::too_many_arguments)]
pub fn decode_with_chunk(
    gpu: &Gpu,
    q: &View,
    k_cache: &View,
    v_cache: &View,
    slots: &CudaView<'_, i32>,
    lens: &CudaView<'_, i32>,
    workspace: &mut ViewMut,
    out: &mut ViewMut,
    chunk: usize,
) -> Result<()> {
    let offsets = [q.byte_offset(), k_cache.byte_offset(), v_cache.byte_offset(), out.byte_offset()];
    let dims = check_decode(
        q.layout(),
        k_cache.layout(),
        v_cache.layout(),
        out.layout(),
        slots.len(),
        lens.len(),
        workspace.layout(),
        chunk,
        offsets,
    )?;
    if dims.batch == 0 {
        return Ok(());
    }
    let dtype = q.layout().dtype;
    let c = dims.cache;
    let d128 = c.head_dim == 128;
    let group = dims.group();
    let grid_y = (c.kv_heads * group.div_ceil(HEADS_PER_BLOCK)) as u32;
    let max_splits = dims.max_splits() as i32;
    let (heads, group_i, n_slots, capacity) = (dims.heads as i32, group as i32, c.slots as i32, c.capacity as i32);
    let (context, tokens) = (0i32, 0i32); // prefill-mode arguments, unused with lens
    let slot_stride = (c.kv_heads * c.capacity * c.head_dim) as i64;
    let head_stride = (c.capacity * c.head_dim) as i64;
    let row_stride = c.head_dim as i64;
    let chunk_i = chunk as i32;
    let scale = softmax_scale(c.head_dim);

    // The status word (workspace element 0) reports this launch only: cleared on the stream first.
    gpu.stream().memset_zeros(&mut workspace.data.slice_mut(0..4)).cuda("cuMemsetD8Async(decode status)")?;
    let split = gpu.function(MODULE, split_kernel(dtype, d128))?;
    let mut args = gpu.launcher(&split, split_kernel(dtype, d128));
    args.arg(&q.data).arg(&k_cache.data).arg(&v_cache.data).arg(&mut out.data).arg(&mut workspace.data);
    args.arg(slots).arg(lens).arg(&heads).arg(&group_i).arg(&n_slots).arg(&capacity).arg(&context).arg(&tokens);
    args.arg(&slot_stride).arg(&head_stride).arg(&row_stride).arg(&chunk_i).arg(&max_splits).arg(&scale);
    let config = LaunchConfig { grid_dim: (dims.batch as u32, grid_y, max_splits as u32), block_dim: (SPLIT_THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: q and out hold B * heads * D elements and each cache slots * kv_heads * capacity * D,
    // of the kernel's dtype, 16-byte aligned; slots and lens hold B i32 (all checked above). The
    // kernel reads a row's slot and len once and touches the cache only for 0 <= slot < slots and
    // 1 <= len <= capacity, keys < len; splits >= ceil(len / chunk) <= max_splits exit; an invalid
    // row touches only its output and the status word. The workspace holds
    // decode_workspace_len(..) f32 = 1 + B * heads * max_splits * (D + 2), the largest index
    // written plus one.
    unsafe { args.launch(config) }?;

    if max_splits > 1 {
        let combine = gpu.function(MODULE, combine_kernel(dtype, d128))?;
        let mut args = gpu.launcher(&combine, combine_kernel(dtype, d128));
        args.arg(&mut workspace.data).arg(&mut out.data).arg(slots).arg(lens).arg(&heads).arg(&n_slots).arg(&capacity);
        args.arg(&context).arg(&tokens).arg(&chunk_i).arg(&max_splits);
        let config = LaunchConfig { grid_dim: (dims.batch as u32, dims.heads as u32, 1), block_dim: (c.head_dim as u32, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: reads the workspace entries the split kernel wrote for valid rows with more than
        // one split (same slot/len rule, same index formula), writes those rows of out.
        unsafe { args.launch(config) }?;
    }
    Ok(())
}

/// Per-element tolerance scale (units of u32) of a prefill of q [T, heads, D] over k, v: the FP32
/// contract's [`error_scale`], plus [`mma_extra_error`] times the largest |v|
/// of the element's column when the tensor-core kernel runs (`tensor_core` and 16-bit storage).
pub fn prefill_error_scale(q: &HostTensor, k: &HostTensor, v: &HostTensor, tensor_core: bool) -> Result<Vec<f32>> {
    let mut scale = error_scale(q, k, v)?;
    if !tensor_core || q.dtype() == DType::F32 {
        return Ok(scale);
    }
    let d = check(q.layout(), k.layout(), v.layout())?;
    let (dim, kv_heads, heads) = (d.head_dim, d.kv_heads, d.heads);
    let inv_sqrt = (dim as f64).powf(-0.5);
    for t in 0..d.tokens {
        let visible = d.context - d.tokens + t + 1;
        for h in 0..heads {
            let kvh = h / d.group();
            let qv = &q.data()[(t * heads + h) * dim..][..dim];
            let bound = (0..visible)
                .map(|s| {
                    let kv = &k.data()[(s * kv_heads + kvh) * dim..][..dim];
                    qv.iter().zip(kv).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum::<f64>() * inv_sqrt
                })
                .fold(0f64, f64::max) as f32;
            let extra = mma_extra_error(q.dtype(), dim, visible, bound);
            for i in 0..dim {
                let v_max = (0..visible).map(|s| v.data()[(s * kv_heads + kvh) * dim + i].abs()).fold(0f32, f32::max);
                scale[(t * heads + h) * dim + i] += extra * v_max;
            }
        }
    }
    Ok(scale)
}

/// Extra error of the tensor-core prefill beyond the contract's [`error_scale`], per output
/// element, in units of u32 = 2^-24 times `v_max` (the largest |v_sd| over the visible keys), for a
/// row with `visible` keys and logit bound `logit_bound` (L = max_s sum_i |q_i k_si| / sqrt(D), as in
/// `error_scale`). Add it to `error_scale` when comparing that kernel. Two sources:
///
/// 1. The P.V mma takes 16-bit operands. Each weight p in [0, 1] (FP32) is split into terms
///    P1 = T(p), P2 = T(p - P1) (, P3 = T(p - P1 - P2)); each subtraction is exact, each term is
///    multiplied by v exactly and accumulated in FP32 by the mma, so the weight that reaches the sum
///    is p up to the last term's rounding:
///    - f16, 2 terms: |p - P1| <= 2^-11 p, rounded to 11 bits: error <= 2^-22 p = 4 u32 p while P2
///      is normal; below 2^-14 (f16 subnormals, spacing 2^-24) at most 2^-25 = u32 / 2 absolute.
///    - bf16, 3 terms: each rounding to 8 significant bits leaves at most 2^-8 of its input, so
///      error <= 2^-8 * 2^-8 * 2^-8 p = 2^-24 p = u32 p (bf16 has FP32's exponent range: no subnormal
///      term above 2^-126).
///
///    Over the keys, sum_s err_s |v_sd| <= v_max (r sum_s p_s + a S), sum_s p_s = 1:
///    f16 (4 + S / 2) u32 v_max, bf16 u32 v_max.
///    (FlashAttention's single rounding of P would be 2^-11 p or 2^-8 p: 2^13 to 2^16 u32 v_max,
///    far outside the FP32 contract; this is why P is split.)
/// 2. The mma's FP32 accumulation truncates instead of rounding to nearest (measured on V100 to
///    H100: products exact, sums aligned and truncated to FP32), so each addition errs by up to
///    2 u32 instead of 1: the q.k and p.v accumulation terms of `error_scale`, 2 (D + 2) L and
///    (S + 2), may double. Added once more here.
///
/// The row sum uses the FP32 p, and the softmax arithmetic (expf, online rescaling: one extra
/// multiply per 64-key tile) stays within the (3 S + 12) of `error_scale`.
pub fn mma_extra_error(dtype: DType, head_dim: usize, visible: usize, logit_bound: f32) -> f32 {
    let weights = match dtype {
        DType::F32 => return 0.0, // f32 storage never runs on tensor cores
        DType::F16 => 4.0 + visible as f32 / 2.0,
        DType::BF16 => 1.0,
    };
    let truncation = 2.0 * (head_dim as f32 + 2.0) * logit_bound + visible as f32 + 2.0;
    weights + truncation
}
