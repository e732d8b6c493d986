//! GQA attention with FP32 logits and softmax (`cuda/attention.cu`): q [T, heads, head_dim] against
//! k, v [S, kv_heads, head_dim]; query t sits at position S - T + t and sees keys 0 ..= that
//! position. kv_head = q_head / (heads / kv_heads).
//!
//! ```text
//! prefill:        o [T, heads, D] = attention(q [T, heads, D], k, v [S, kv_heads, D])       T <= S (chunked when T < S)
//! prefill_paged:  o [R, heads, D] = attention(q [R, heads, D], paged cache, block_tables [B, max_pages],
//!                                             seq_lens [B], cu_seqlens_q [B + 1])   a ragged batch, one launch
//! decode:         o [B, heads, D] = attention(q [B, heads, D], paged cache, block_tables, seq_lens)
//! ```
//! The paged cache, its two layouts and the metadata are specified in [`crate::spec::kv_cache`];
//! the metadata are device i32 arrays (an engine's own buffers). q.k, logits, running max,
//! exponentials, sums and the p.v accumulation are FP32; the output is rounded once to the storage
//! dtype. head_dim 64 and 128 (others: `Error::UnsupportedSize`); any group size.
//!
//! Kernels (details in the kernel file's header):
//! - prefill f16/bf16: tensor cores (`mma.sync` m16n8k16, FP32 accumulation), 64 query rows x 64
//!   keys per step, K/V tiles double-buffered with cp.async, fragments by ldmatrix, online softmax;
//!   the softmax weights enter the P.V mma split into 2 (f16) or 3 (bf16) 16-bit terms so they keep
//!   FP32 accuracy ([`mma_extra_error`]). Ragged: one block per (64 new tokens, head, sequence).
//! - prefill f32 (and `PrefillPath::Simt` for any dtype): the SIMT kernel below, one block per query
//!   token and kv head, no workspace.
//! - decode: SIMT flash-decoding, one launch. Each block reads the K/V rows of one (sequence, kv
//!   head, split of `chunk` keys) once for the query heads it serves (the whole group, or one head
//!   when the grid would leave most SMs idle: [`decode_heads_per_block`]); partial (max, sum, acc)
//!   go to a caller-provided FP32 workspace ([`decode_workspace_len`]) and the row's last split to
//!   finish merges them. Nothing is allocated and nothing synchronises: a decode step can be
//!   captured in a CUDA graph.
//!
//! Batch invariance: a row's result depends on its own length (and, in decode, the chunk), never on
//! the rows around it, the page size or the layout. The SIMT prefill's row t and a one-split decode
//! of the same token (chunk >= len) are bit-identical; the tensor-core prefill and a multi-split
//! decode of the same token agree within the tolerance, not bitwise (different summation orders).
//!
//! Device-side metadata cannot be checked on the host without a synchronisation. The kernels read
//! it and treat a row whose length is outside [1, max_pages * page_size], whose pages are outside
//! the cache or (ragged) whose cu_seqlens are not a range inside the rows as invalid: nothing out of
//! bounds is read, every element of its output is NaN, and a flag is raised in a status word
//! (decode: the workspace's, read by [`decode_status`]; prefill: an [`AttentionStatus`]): never an
//! out-of-bounds access, never a silent row.

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::gpu::KernelLaunch;
use crate::ops::kv_cache::{KvCacheDims, KvCacheView, PagedBatch};
use crate::tensor::{HostTensor, Layout, View, ViewMut};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, CudaView, LaunchConfig};

pub use crate::spec::attention::{check, error_scale, softmax_scale, AttentionDims, DECODE_OP, OP};
const MODULE: &str = "attention";

/// Head dims the kernels are compiled for.
pub const HEAD_DIMS: [usize; 2] = [64, 128];
/// Keys per tile of the SIMT kernel (`SPLIT_TILE`); a decode chunk is a multiple of it.
pub const SPLIT_TILE: usize = 64;
/// Query heads one SIMT block serves (`MAX_HEADS_PER_BLOCK`): the whole group for group <= 8.
pub const HEADS_PER_BLOCK: usize = 8;
/// Keys per decode split unless the caller chooses: one tile, so a block's critical path is one K
/// and one V round trip (plus the merge in the last split), and a single sequence of 256 keys
/// already makes 4 splits per query head (56 blocks for Qwen2.5-0.5B's 14 heads, 112 at 512 keys;
/// 1024 keys and more fill an H200's 132 SMs). Longer rows cost only workspace: 32k keys are 512
/// splits of (head_dim + 2) FP32 each per head. Fixed in keys, so a row's result never depends
/// on the batch.
pub const DEFAULT_DECODE_CHUNK: usize = 64;
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

/// Causal attention of `q` [T, heads, D] over `k`, `v` [S, kv_heads, D] into `out` [T, heads, D].
pub fn prefill(gpu: &Gpu, q: &View, k: &View, v: &View, out: &mut ViewMut) -> Result<()> {
    prefill_with_path(gpu, q, k, v, out, PrefillPath::Auto)
}

pub fn prefill_with_path(gpu: &Gpu, q: &View, k: &View, v: &View, out: &mut ViewMut, path: PrefillPath) -> Result<()> {
    let offsets = [q.byte_offset(), k.byte_offset(), v.byte_offset(), out.byte_offset()];
    let (dims, launch) = plan_prefill(q.layout(), k.layout(), v.layout(), out.layout(), offsets, path)?;
    if dims.tokens == 0 {
        return Ok(());
    }
    // Contiguous k, v [S, kv_heads, D]: kv head g's key s at g * D + s * kv_heads * D, no table.
    let meta = Meta {
        block_tables: None,
        seq_lens: None,
        cu_seqlens: None,
        batch: 1,
        rows: dims.tokens as i32,
        num_pages: 1,
        page_size: dims.context as i32,
        max_pages: 1,
        tokens: dims.tokens as i32,
        context: dims.context as i32,
        page_stride: 0,
        head_stride: dims.head_dim as i64,
        row_stride: (dims.kv_heads * dims.head_dim) as i64,
    };
    // Nothing flags a contiguous prefill (no metadata to be wrong): the status pointer is null.
    launch_prefill(gpu, q, &k.data, &v.data, out, dims, launch, &meta, None)
}

/// The device status word of the paged prefill: the kernels raise [`STATUS_BAD_PAGE`],
/// [`STATUS_BAD_LEN`] and [`STATUS_BAD_CU`] in it for rows whose metadata was wrong (their output is
/// NaN). [`AttentionStatus::check`] reads and clears it.
pub struct AttentionStatus {
    word: CudaSlice<u32>,
}

impl AttentionStatus {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        Ok(AttentionStatus { word: gpu.stream().alloc_zeros::<u32>(1).cuda("cuMemAlloc(attention status)")? })
    }

    /// `Ok` if no paged prefill since the last check met bad metadata (synchronises), else an
    /// error naming what was wrong; the word is cleared either way.
    pub fn check(&mut self, gpu: &Gpu) -> Result<()> {
        let bits = gpu.stream().clone_dtoh(&self.word).cuda("cuMemcpyDtoH(attention status)")?[0];
        gpu.synchronize()?;
        if bits == 0 {
            return Ok(());
        }
        gpu.stream().memset_zeros(&mut self.word).cuda("cuMemsetD8(attention status)")?;
        Err(status_error(OP, bits))
    }
}

/// The error for the (non-zero) status `bits` of a decode ([`decode_status`]'s word).
pub(crate) fn decode_status_error(bits: u32) -> Error {
    status_error(DECODE_OP, bits)
}

fn status_error(op: &'static str, bits: u32) -> Error {
    let mut what = Vec::new();
    if bits & STATUS_BAD_PAGE != 0 {
        what.push("a page outside the cache");
    }
    if bits & STATUS_BAD_LEN != 0 {
        what.push("a length outside 1..=max_pages * page_size (or shorter than its new tokens)");
    }
    if bits & STATUS_BAD_CU != 0 {
        what.push("cu_seqlens that are not an increasing range inside the rows");
    }
    Error::invalid(op, format!("rows with {} were skipped, their output is NaN (status {bits:#x})", what.join(" and ")))
}

/// Validate a ragged paged prefill and choose its kernel: q and out [rows, heads, D], the cache,
/// the batch's arrays (`cu_seqlens_len` = batch + 1) and `max_q_len` (the most new tokens of one
/// sequence: the grid covers that many). Pure, for tests without a GPU.
#[allow(clippy::too_many_arguments)]
pub fn plan_prefill_paged(
    q: Layout,
    cache: &KvCacheDims,
    cache_dtype: DType,
    out: Layout,
    batch: usize,
    block_tables_len: usize,
    max_pages: usize,
    cu_seqlens_len: usize,
    max_q_len: usize,
    byte_offsets: [usize; 4],
    path: PrefillPath,
) -> Result<(AttentionDims, PrefillLaunch)> {
    let [rows, heads, head_dim] = *q.shape.dims() else {
        return Err(Error::shape(OP, format!("q must be [rows, heads, head_dim], got {q}")));
    };
    if cache_dtype != q.dtype {
        return Err(Error::dtype(OP, format!("cache is {cache_dtype} but q is {}", q.dtype)));
    }
    if cache.head_dim != head_dim || heads == 0 || heads % cache.kv_heads != 0 {
        return Err(Error::shape(OP, format!("q {q} against a cache of {} kv heads of {}", cache.kv_heads, cache.head_dim)));
    }
    if cu_seqlens_len != batch + 1 {
        return Err(Error::shape(OP, format!("cu_seqlens of {cu_seqlens_len} entries for {batch} sequences (needs batch + 1)")));
    }
    if max_pages == 0 || Some(block_tables_len) != batch.checked_mul(max_pages) {
        return Err(Error::shape(OP, format!("block table of {block_tables_len} entries for {batch} sequences of {max_pages} pages")));
    }
    let max_len = max_pages.checked_mul(cache.page_size).filter(|&n| n <= i32::MAX as usize);
    let Some(max_len) = max_len else {
        return Err(Error::unsupported(OP, format!("{max_pages} pages of {} positions past i32", cache.page_size)));
    };
    if max_q_len > max_len || max_q_len > rows.max(1) {
        return Err(Error::invalid(OP, format!("max_q_len {max_q_len} past the table's {max_len} positions or the {rows} rows")));
    }
    if batch > GRID_YZ_MAX {
        return Err(Error::unsupported(OP, format!("{batch} sequences > {GRID_YZ_MAX} (grid.z)")));
    }
    // The launch of a contiguous prefill of max_q_len tokens over max_len keys, with the ragged grid.
    let kv = Layout::new(q.dtype, &[max_len, cache.kv_heads, head_dim])?;
    let q_max = Layout::new(q.dtype, &[max_q_len, heads, head_dim])?;
    let (_, mut launch) = plan_prefill(q_max, kv, kv, q_max, byte_offsets, path)?;
    check_out(OP, q, out)?;
    to_i32(OP, "rows", rows)?;
    if launch.kernel.starts_with("attn_prefill_mma") {
        launch.grid = (max_q_len.div_ceil(MMA_BLOCK_M).max(1) as u32, heads as u32, batch.max(1) as u32);
    } else {
        launch.grid.0 = rows as u32;
    }
    let dims = AttentionDims { tokens: rows, context: max_len, heads, kv_heads: cache.kv_heads, head_dim };
    Ok((dims, launch))
}

/// Causal attention of a ragged batch of new tokens over a paged cache: sequence b's new tokens
/// are rows `cu_seqlens_q[b] .. cu_seqlens_q[b + 1]` of `q` and `out` [rows, heads, D], at the end
/// of its `seq_lens[b]` positions, which its block table row maps to pages of `cache` (the new
/// tokens' keys and values already written, by [`crate::ops::rope::rope_kv`]). Causal within each
/// sequence, one launch for the batch; a chunked prefill is a sequence whose new tokens follow
/// cached ones. Each sequence's result equals running it alone, bit for bit (a block never mixes
/// sequences). Rows at or past `cu_seqlens_q[batch]` are left as they are. `max_q_len` bounds every
/// sequence's new tokens (the grid covers it; a longer one is flagged).
///
/// The device arrays are checked by the kernels: a sequence with bad metadata reads nothing out of
/// bounds, its rows are NaN, and `status` says why ([`AttentionStatus::check`]).
#[allow(clippy::too_many_arguments)]
pub fn prefill_paged(
    gpu: &Gpu,
    q: &View,
    cache: &KvCacheView,
    batch: &PagedBatch,
    cu_seqlens_q: &CudaView<i32>,
    max_q_len: usize,
    status: &mut AttentionStatus,
    out: &mut ViewMut,
    path: PrefillPath,
) -> Result<()> {
    let c = cache.dims(OP)?;
    batch.check(OP, &c)?;
    let offsets = [q.byte_offset(), cache.k.byte_offset(), cache.v.byte_offset(), out.byte_offset()];
    let (dims, launch) = plan_prefill_paged(
        q.layout(),
        &c,
        cache.k.layout().dtype,
        out.layout(),
        batch.batch(),
        batch.block_tables.len(),
        batch.max_pages,
        cu_seqlens_q.len(),
        max_q_len,
        offsets,
        path,
    )?;
    if dims.tokens == 0 || batch.batch() == 0 || max_q_len == 0 {
        return Ok(());
    }
    let meta = Meta {
        block_tables: Some(batch.block_tables),
        seq_lens: Some(batch.seq_lens),
        cu_seqlens: Some(cu_seqlens_q),
        batch: batch.batch() as i32,
        rows: dims.tokens as i32,
        num_pages: c.num_pages as i32,
        page_size: c.page_size as i32,
        max_pages: batch.max_pages as i32,
        tokens: 0,
        context: 0,
        page_stride: c.page_stride() as i64,
        head_stride: c.head_stride() as i64,
        row_stride: c.row_stride() as i64,
    };
    launch_prefill(gpu, q, &cache.k.data, &cache.v.data, out, dims, launch, &meta, Some(&mut status.word))
}

/// What the kernels read of a launch's keys: the device metadata (None: contiguous keys, one
/// sequence of `tokens` new tokens after `context - tokens` cached ones) and the cache geometry.
struct Meta<'a> {
    block_tables: Option<&'a CudaView<'a, i32>>,
    seq_lens: Option<&'a CudaView<'a, i32>>,
    cu_seqlens: Option<&'a CudaView<'a, i32>>,
    batch: i32,
    rows: i32,
    num_pages: i32,
    page_size: i32,
    max_pages: i32,
    tokens: i32,
    context: i32,
    page_stride: i64,
    head_stride: i64,
    row_stride: i64,
}

/// A device pointer argument, or null.
fn arg_or_null<'a>(args: &mut KernelLaunch<'a>, a: Option<&'a CudaView<'a, i32>>, null: &'a u64) {
    match a {
        Some(a) => args.arg(a),
        None => args.arg(null),
    };
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
    meta: &Meta,
    status: Option<&mut CudaSlice<u32>>,
) -> Result<()> {
    let f = gpu.function(MODULE, launch.kernel)?;
    let config = LaunchConfig { grid_dim: launch.grid, block_dim: (launch.threads, 1, 1), shared_mem_bytes: launch.shared_bytes };
    if launch.shared_bytes > 0 {
        // Not a stream operation: legal while a graph is being captured.
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, launch.shared_bytes as i32)
            .cuda(format!("cuFuncSetAttribute({}, MAX_DYNAMIC_SHARED_SIZE_BYTES, {})", launch.kernel, launch.shared_bytes))?;
    }
    let heads = dims.heads as i32;
    let group = dims.group() as i32;
    let scale = softmax_scale(dims.head_dim);
    let null = 0u64;
    let mut args = gpu.launcher(&f, launch.kernel);
    args.arg(&q.data).arg(k).arg(v).arg(&mut out.data);
    let chunk = meta.max_pages.saturating_mul(meta.page_size);
    let one = 1i32;
    let per_block = HEADS_PER_BLOCK as i32; // the whole group (grid.y counts head blocks of 8)
    if launch.kernel.starts_with("attn_prefill_mma") {
        match status {
            Some(s) => args.arg(s),
            None => args.arg(&null),
        };
        arg_or_null(&mut args, meta.block_tables, &null);
        arg_or_null(&mut args, meta.seq_lens, &null);
        arg_or_null(&mut args, meta.cu_seqlens, &null);
        args.arg(&meta.rows).arg(&meta.num_pages).arg(&meta.page_size).arg(&meta.max_pages).arg(&meta.tokens).arg(&meta.context);
        args.arg(&heads).arg(&group).arg(&meta.page_stride).arg(&meta.head_stride).arg(&meta.row_stride).arg(&scale);
    } else {
        // The split kernel with one split covering the longest row (chunk = max_pages *
        // page_size >= every valid len), so it writes out directly and never touches the
        // workspace (null).
        args.arg(&null);
        match status {
            Some(s) => args.arg(s),
            None => args.arg(&null),
        };
        arg_or_null(&mut args, meta.block_tables, &null);
        arg_or_null(&mut args, meta.seq_lens, &null);
        arg_or_null(&mut args, meta.cu_seqlens, &null);
        args.arg(&meta.batch).arg(&heads).arg(&group).arg(&meta.num_pages).arg(&meta.page_size).arg(&meta.max_pages);
        args.arg(&meta.context).arg(&meta.tokens).arg(&meta.page_stride).arg(&meta.head_stride).arg(&meta.row_stride);
        args.arg(&chunk).arg(&one).arg(&per_block).arg(&scale);
    }
    // SAFETY: q and out hold rows * heads * D elements of the kernel's dtype, 16-byte aligned
    // (checked by the plans), and each block reads q rows and writes out rows of its own tokens
    // (< T contiguous; ragged: inside cu_seqlens[b]..cu_seqlens[b + 1] <= rows, checked on the
    // device). Keys: contiguous, kv head g's key s < S at g * D + s * kv_heads * D inside k and v
    // [S, kv_heads, D]; paged, a key is read only through a block-table entry in 0..num_pages (else
    // flagged, not read), at page * page_stride + head * head_stride + offset * row_stride with
    // offset < page_size: inside the cache's num_pages * page_stride elements. Table entries are
    // read below b * max_pages + ceil(len / page_size) with len <= max_pages * page_size, and
    // seq_lens / cu_seqlens at b < batch and b + 1 <= batch (their lengths, checked). The tensor-core
    // kernel's dynamic shared memory is its mma_smem_bytes(D), allowed by the attribute set above;
    // the split kernel runs one split (chunk >= every valid len), writing out directly and never
    // dereferencing the null workspace. The status word is written only when given (paged).
    unsafe { args.launch(config) }?;
    Ok(())
}

/// Dimensions of a validated decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeDims {
    /// Sequences (one new token each).
    pub batch: usize,
    pub heads: usize,
    pub cache: KvCacheDims,
    /// Block table columns: a sequence spans at most max_pages * page_size positions.
    pub max_pages: usize,
    /// Keys per split.
    pub chunk: usize,
}

impl DecodeDims {
    pub fn group(&self) -> usize {
        self.heads / self.cache.kv_heads
    }
    /// The longest sequence the block table can describe.
    pub fn max_len(&self) -> usize {
        self.max_pages * self.cache.page_size
    }
    /// Splits the longest possible sequence has: the grid's z extent.
    pub fn max_splits(&self) -> usize {
        decode_splits(self.max_len(), self.chunk)
    }
}

/// Splits of a sequence of `len` keys.
pub fn decode_splits(len: usize, chunk: usize) -> usize {
    len.div_ceil(chunk.max(1))
}

/// FP32 elements of the decode workspace for `batch` sequences of at most `max_len` positions
/// (`max_pages * page_size`): the status word (element 0, see [`decode_status`]), one u32 split
/// counter per (sequence, head) ([`decode_header_len`] with the word), then per (sequence, head,
/// split) the unnormalised accumulator (head_dim) and the running max and sum (2). Depends only on
/// shapes, so one buffer allocated up front serves every step.
pub fn decode_workspace_len(batch: usize, heads: usize, head_dim: usize, max_len: usize, chunk: usize) -> usize {
    decode_header_len(batch, heads) + batch * heads * decode_splits(max_len, chunk) * (head_dim + 2)
}

/// The workspace's first elements that must be zero before a decode: the status word and the
/// split counters of `batch` sequences of `heads` query heads. [`decode`] clears them itself;
/// [`clear_decode_status`] clears them once for several [`decode_gathering_status`] launches.
/// (Each launch also leaves every counter at zero: the last split of a row resets its own.)
pub fn decode_header_len(batch: usize, heads: usize) -> usize {
    1 + batch * heads
}

/// Query heads one decode block serves: the whole group (up to [`HEADS_PER_BLOCK`]), so each K/V
/// row is read once for all of them, unless the grid would then have fewer blocks than the GPU
/// has SMs (`multiprocessors`): then one, which multiplies the blocks by the group size (K/V rows
/// are read once per head, the repeats from L2). Batch 1 of Qwen2.5-0.5B at 512 keys: 2 kv heads x
/// 8 splits = 16 blocks with the group, 112 with one head each. Only the launch's shape changes:
/// every head's sums run the same lanes in the same order either way, so the results are
/// bit-identical (`attention::decode_head_blocks_change_nothing`).
pub fn decode_heads_per_block(batch: usize, kv_heads: usize, group: usize, max_splits: usize, multiprocessors: usize) -> usize {
    let whole = group.clamp(1, HEADS_PER_BLOCK);
    if batch.saturating_mul(kv_heads).saturating_mul(max_splits) < multiprocessors {
        1
    } else {
        whole
    }
}

/// Status bit: some key's page was outside the cache (its row's output is NaN).
pub const STATUS_BAD_PAGE: u32 = 1;
/// Status bit: some row's length was outside 1..=max_pages * page_size, or (ragged) shorter than
/// its new tokens (its output is NaN).
pub const STATUS_BAD_LEN: u32 = 2;
/// Status bit (ragged prefill): some sequence's cu_seqlens were not an increasing range inside
/// the rows, or it had more new tokens than max_q_len (its rows are NaN where they exist).
pub const STATUS_BAD_CU: u32 = 4;

/// Read (synchronising) the status word of the last decode into `workspace`: `Ok` if every row had
/// a length in 1..=max_pages * page_size and pages inside the cache, else an error naming what was
/// wrong; those rows' outputs are NaN. The next decode clears the word, so read it after each step
/// whose rows were not known to be valid.
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
    Err(status_error(DECODE_OP, bits))
}

fn check_chunk(chunk: usize) -> Result<()> {
    if chunk == 0 || chunk % SPLIT_TILE != 0 || chunk > i32::MAX as usize {
        return Err(Error::invalid(DECODE_OP, format!("chunk {chunk} must be a positive multiple of {SPLIT_TILE}")));
    }
    Ok(())
}

/// Validate a decode: q [B, heads, D], the cache, out like q, `block_tables_len` (= B *
/// `max_pages`) and `seq_lens_len` (= B) the device arrays' lengths, the workspace (f32, at least
/// `decode_workspace_len`), the chunk, and 16-byte alignment (`byte_offsets`: q, k_cache, v_cache,
/// out).
#[allow(clippy::too_many_arguments)]
pub fn check_decode(
    q: Layout,
    cache: &KvCacheDims,
    cache_dtype: DType,
    out: Layout,
    block_tables_len: usize,
    max_pages: usize,
    seq_lens_len: usize,
    workspace: Layout,
    chunk: usize,
    byte_offsets: [usize; 4],
) -> Result<DecodeDims> {
    let [batch, heads, head_dim] = *q.shape.dims() else {
        return Err(Error::shape(DECODE_OP, format!("q must be [batch, heads, head_dim], got {q}")));
    };
    if cache_dtype != q.dtype {
        return Err(Error::dtype(DECODE_OP, format!("cache is {cache_dtype} but q is {}", q.dtype)));
    }
    if cache.head_dim != head_dim {
        return Err(Error::shape(DECODE_OP, format!("q {q} and a cache of head_dim {} differ", cache.head_dim)));
    }
    if heads == 0 || heads % cache.kv_heads != 0 {
        return Err(Error::shape(DECODE_OP, format!("{heads} query heads are not a multiple of {} kv heads", cache.kv_heads)));
    }
    check_out(DECODE_OP, q, out)?;
    check_head_dim(DECODE_OP, head_dim)?;
    if seq_lens_len != batch || max_pages == 0 || Some(block_tables_len) != batch.checked_mul(max_pages) {
        return Err(Error::shape(
            DECODE_OP,
            format!("{block_tables_len} block-table entries ({max_pages} pages a sequence) and {seq_lens_len} seq_lens for a batch of {batch}"),
        ));
    }
    check_chunk(chunk)?;
    if workspace.dtype != DType::F32 {
        return Err(Error::dtype(DECODE_OP, format!("workspace must be f32, got {}", workspace.dtype)));
    }
    let Some(max_len) = max_pages.checked_mul(cache.page_size).filter(|&n| n <= i32::MAX as usize) else {
        return Err(Error::unsupported(DECODE_OP, format!("{max_pages} pages of {} positions past i32", cache.page_size)));
    };
    let need = decode_workspace_len(batch, heads, head_dim, max_len, chunk);
    if workspace.numel() < need {
        return Err(Error::shape(
            DECODE_OP,
            format!("workspace of {} f32 < {need} needed (decode_workspace_len({batch}, {heads}, {head_dim}, {max_len}, {chunk}))", workspace.numel()),
        ));
    }
    check_aligned(DECODE_OP, &[("q", byte_offsets[0]), ("k_cache", byte_offsets[1]), ("v_cache", byte_offsets[2]), ("out", byte_offsets[3])])?;
    to_i32(DECODE_OP, "batch", batch)?;
    let dims = DecodeDims { batch, heads, cache: *cache, max_pages, chunk };
    let grid_y = cache.kv_heads * dims.group().div_ceil(HEADS_PER_BLOCK);
    if grid_y > GRID_YZ_MAX || dims.max_splits() > GRID_YZ_MAX || heads > GRID_YZ_MAX {
        return Err(Error::unsupported(
            DECODE_OP,
            format!("grid too large: kv_heads x head blocks {grid_y}, splits {}, heads {heads} (limit {GRID_YZ_MAX})", dims.max_splits()),
        ));
    }
    Ok(dims)
}

/// One new token per sequence against the paged cache, with `DEFAULT_DECODE_CHUNK`.
///
/// `q`, `out`: [B, heads, D]; `cache`: paged, either layout ([`crate::spec::kv_cache`]); `batch`:
/// the block tables [B, max_pages] and seq_lens [B] on the device (sequence b has `seq_lens[b]`
/// valid positions, the new token's key at `seq_lens[b] - 1`); `workspace`: f32, at least
/// `decode_workspace_len(B, heads, D, max_pages * page_size, DEFAULT_DECODE_CHUNK)` elements. A
/// row whose length or pages are outside the cache is skipped (its output NaN) and flagged:
/// [`decode_status`] says so. The grid is fixed by the shapes (max_pages, not the lengths), so
/// one captured graph serves every step.
pub fn decode(gpu: &Gpu, q: &View, cache: &KvCacheView, batch: &PagedBatch, workspace: &mut ViewMut, out: &mut ViewMut) -> Result<()> {
    decode_with_chunk(gpu, q, cache, batch, workspace, out, DEFAULT_DECODE_CHUNK)
}

/// As [`decode`], with `chunk` keys per split (a multiple of 64). A sequence's result depends on its
/// own length and the chunk, never on the batch around it, nor on the page size or layout.
pub fn decode_with_chunk(gpu: &Gpu, q: &View, cache: &KvCacheView, batch: &PagedBatch, workspace: &mut ViewMut, out: &mut ViewMut, chunk: usize) -> Result<()> {
    decode_launch(gpu, q, cache, batch, workspace, out, chunk, None, true)
}

/// Clear the status word and the split counters of a decode workspace for up to `batch`
/// sequences of `heads` query heads (the first [`decode_header_len`] elements), on the stream:
/// one memset.
pub fn clear_decode_status(gpu: &Gpu, workspace: &mut ViewMut, batch: usize, heads: usize) -> Result<()> {
    let n = decode_header_len(batch, heads);
    if workspace.layout().dtype != DType::F32 {
        return Err(Error::dtype(DECODE_OP, format!("workspace must be f32, got {}", workspace.layout())));
    }
    if workspace.layout().numel() < n {
        return Err(Error::shape(DECODE_OP, format!("workspace must hold at least {n} elements (decode_header_len({batch}, {heads})), got {}", workspace.layout())));
    }
    gpu.stream().memset_zeros(&mut workspace.data.slice_mut(0..4 * n)).cuda("cuMemsetD8Async(decode status and split counters)")
}

/// As [`decode_with_chunk`], without clearing the status word first: the flags of several decodes
/// sharing one workspace (the layers of a decode step) gather in it, and the caller clears it
/// (with the split counters) once before the first ([`clear_decode_status`]): one memset a step
/// instead of one a layer.
pub fn decode_gathering_status(gpu: &Gpu, q: &View, cache: &KvCacheView, batch: &PagedBatch, workspace: &mut ViewMut, out: &mut ViewMut, chunk: usize) -> Result<()> {
    decode_launch(gpu, q, cache, batch, workspace, out, chunk, None, false)
}

/// As [`decode_with_chunk`], with `heads_per_block` (1..=[`HEADS_PER_BLOCK`]) query heads a block
/// instead of [`decode_heads_per_block`]'s choice: the launch's shape only, never its results.
#[allow(clippy::too_many_arguments)]
pub fn decode_with_heads_per_block(
    gpu: &Gpu,
    q: &View,
    cache: &KvCacheView,
    batch: &PagedBatch,
    workspace: &mut ViewMut,
    out: &mut ViewMut,
    chunk: usize,
    heads_per_block: usize,
) -> Result<()> {
    if !(1..=HEADS_PER_BLOCK).contains(&heads_per_block) {
        return Err(Error::invalid(DECODE_OP, format!("heads_per_block {heads_per_block} must be in 1..={HEADS_PER_BLOCK}")));
    }
    decode_launch(gpu, q, cache, batch, workspace, out, chunk, Some(heads_per_block), true)
}

#[allow(clippy::too_many_arguments)]
fn decode_launch(
    gpu: &Gpu,
    q: &View,
    cache: &KvCacheView,
    batch: &PagedBatch,
    workspace: &mut ViewMut,
    out: &mut ViewMut,
    chunk: usize,
    heads_per_block: Option<usize>,
    clear_status: bool,
) -> Result<()> {
    let c = cache.dims(DECODE_OP)?;
    let offsets = [q.byte_offset(), cache.k.byte_offset(), cache.v.byte_offset(), out.byte_offset()];
    let dims = check_decode(
        q.layout(),
        &c,
        cache.k.layout().dtype,
        out.layout(),
        batch.block_tables.len(),
        batch.max_pages,
        batch.seq_lens.len(),
        workspace.layout(),
        chunk,
        offsets,
    )?;
    if dims.batch == 0 {
        return Ok(());
    }
    let dtype = q.layout().dtype;
    let d128 = c.head_dim == 128;
    let group = dims.group();
    let per_block = heads_per_block.unwrap_or_else(|| decode_heads_per_block(dims.batch, c.kv_heads, group, dims.max_splits(), gpu.info().multiprocessors));
    let grid_y = (c.kv_heads * group.div_ceil(per_block)) as u32;
    let max_splits = dims.max_splits() as i32;
    let per_block_i = per_block as i32;
    let (batch_i, heads, group_i) = (dims.batch as i32, dims.heads as i32, group as i32);
    let (num_pages, page_size, max_pages) = (c.num_pages as i32, c.page_size as i32, dims.max_pages as i32);
    let (context, tokens) = (0i32, 0i32); // contiguous-prefill arguments, unused with a table
    let (page_stride, head_stride, row_stride) = (c.page_stride() as i64, c.head_stride() as i64, c.row_stride() as i64);
    let chunk_i = chunk as i32;
    let scale = softmax_scale(c.head_dim);
    let null = 0u64;

    // The status word (workspace element 0) reports this launch only: cleared on the stream first,
    // with the split counters after it (unless the caller gathers several launches' flags and
    // cleared both once). The kernel finds the word there (a null status pointer).
    if clear_status {
        clear_decode_status(gpu, workspace, dims.batch, dims.heads)?;
    }
    let split = gpu.function(MODULE, split_kernel(dtype, d128))?;
    let mut args = gpu.launcher(&split, split_kernel(dtype, d128));
    args.arg(&q.data).arg(&cache.k.data).arg(&cache.v.data).arg(&mut out.data).arg(&mut workspace.data).arg(&null);
    args.arg(batch.block_tables).arg(batch.seq_lens).arg(&null).arg(&batch_i).arg(&heads).arg(&group_i);
    args.arg(&num_pages).arg(&page_size).arg(&max_pages).arg(&context).arg(&tokens);
    args.arg(&page_stride).arg(&head_stride).arg(&row_stride).arg(&chunk_i).arg(&max_splits).arg(&per_block_i).arg(&scale);
    let config = LaunchConfig { grid_dim: (dims.batch as u32, grid_y, max_splits as u32), block_dim: (SPLIT_THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: q and out hold B * heads * D elements and each cache num_pages * page_stride, of
    // the kernel's dtype, 16-byte aligned; the block tables hold B * max_pages and seq_lens B i32
    // (all checked above). The kernel reads a row's len once and touches nothing for a len outside
    // 1..=max_pages * page_size; keys < len are read through table entries < ceil(len /
    // page_size) <= max_pages, each checked in 0..num_pages before its row (offset < page_size) is
    // read. Splits >= ceil(len / chunk) <= max_splits exit; an invalid row touches only its output
    // and the status word. The workspace holds decode_workspace_len(..) f32 = 1 + B * heads (the
    // counters, zeroed above or by the caller's clear_decode_status) + B * heads * max_splits *
    // (D + 2), the largest index written plus one; a row's last split reads back only partials
    // this launch's blocks of that row wrote (each counted after its writes and a fence).
    unsafe { args.launch(config) }
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
