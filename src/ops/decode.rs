//! The fused decode step (`cuda/decode.cu`): GEMVs of up to 32 rows in f16/bf16 (tensor cores) or
//! 16 in f32 ([`crate::ops::gemv`]'s core: every weight byte read once for all rows, a reduction
//! order fixed by the row length) with
//! the work around each projection folded in, so a decoder layer is five launches plus attention's
//! one or two, instead of twelve:
//!
//! ```text
//! qkv        xn = rmsnorm(resid) (on the fly); [q|k|v] = xn Wqkv^T + b; RoPE; q -> q_out, k, v -> cache
//! residual   resid = T(resid + T(x W^T))                     o_proj, down_proj
//! gate_up    xn = rmsnorm(resid); act = silu(T(xn Wg^T)) * T(xn Wu^T)
//! head       xn = rmsnorm(resid); logits = xn lm_head^T (f32); each block's bounded argmax
//! finish     the argmax over the blocks' candidates; optionally positions, lengths, slots + 1,
//!            and the step's report (tokens and status words packed for one copy: StepReport)
//! ```
//!
//! Every rounding point is transformers' (and the unfused kernels'): the normalised activations
//! are rounded to the storage dtype before the dot products, the sum of squares runs in
//! `rmsnorm`'s order, the projections round once after the bias, RoPE and SwiGLU are the same
//! device functions as `rope_qkv` and `swiglu_fused`. So each kernel equals, bit for bit, the chain
//! of unfused launches it replaces (`rmsnorm` -> `gemv` -> `rope_qkv`, ...), which the tests check,
//! and a row's result never depends on the other rows of the launch.
//!
//! More rows than a launch takes ([`crate::ops::gemv::max_rows`]) are computed in groups (one
//! launch each; the norm kernels stage their normalised rows in at most 96 KiB of shared memory in
//! f16/bf16 and 80 KiB in f32, so VibeThinker-1.5B takes 13 rows a launch in f32): the results are
//! the same.

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::{Addresses, Gpu};
use crate::kernel_args::{QkAdvance, QkDecFinishArgs, QkDecGateUpArgs, QkDecHeadArgs, QkDecQkvArgs, QkDecResidualArgs, QkReport};
use crate::ops::kv_cache::KvCacheViewMut;
use crate::ops::rope::{check_kv, check_qk, CacheArgs, RopeTable};
use crate::tensor::{Layout, View, ViewMut};
use cudarc::driver::{CudaSlice, CudaView, LaunchConfig};
use std::ptr::{null, null_mut};

pub use super::Path;
const MODULE: &str = "decode";
pub const QKV_OP: &str = "decode qkv";
pub const RESIDUAL_OP: &str = "decode residual";
pub const GATE_UP_OP: &str = "decode gate_up";
pub const HEAD_OP: &str = "decode head";

use super::gemv::{exchange_bytes, max_rows};
/// Units (output features, or feature pairs) a tile of a block computes: one per warp of 256
/// threads. A narrow block is one tile, a wide one [`WIDE_TILES`].
const UNITS_PER_TILE: usize = 8;
const THREADS: u32 = 256;

/// Tiles of 8 units in a wide block: the head's, and gate/up's past 8 rows (gemv.cuh's GEMV_WIDE).
pub const WIDE_TILES: usize = 4;
/// Rows past which gate/up takes wide blocks in f16/bf16. A block reads all of its launch's rows
/// of x, and the norm row, against its units' weights (R + 1 rows of K against 16 rows of W for
/// 8 units of gate/up), so past 8 rows a narrow block reads about as many bytes of activations
/// (from L2) as of weights, and more as R grows; a wide block shares each x fragment among 4
/// tiles. Up to 8 rows gate/up stays narrow, which fills the GPU four times as well (608 blocks
/// against 152 for Qwen2.5-0.5B, on 132 SMs). The head is wide at every row count and dtype:
/// 151,936 units are 4,748 wide blocks, and a narrow block's norm (x and the norm row: 3.5 KiB at
/// one bf16 row) beside its 14 KiB of weight is a quarter more bytes. q/k/v, o and down stay narrow:
/// their 576 to 1536 units would leave a wide grid 18 to 48 blocks for 132 SMs. A unit's sums are
/// the same in either block (gemv.cuh), so rows stay batch-invariant across the switch.
pub const WIDE_PAST_ROWS: usize = 8;

/// Tiles a block of `base` ("gate_up" or "head") takes for a launch of `rows` rows of `dtype`:
/// the head's entry points are wide in every dtype (in f32, on CUDA cores, a warp takes its units
/// one after another: the norm once for 32 units); gate/up has narrow and wide ones, and is narrow
/// in f32.
pub fn norm_tiles(base: &str, dtype: DType, rows: usize) -> usize {
    match dtype {
        _ if base == "head" => WIDE_TILES,
        DType::F16 | DType::BF16 if rows > WIDE_PAST_ROWS => WIDE_TILES,
        _ => 1,
    }
}

fn dims2(op: &'static str, what: &str, l: Layout) -> Result<(usize, usize)> {
    match *l.shape.dims() {
        [a, b] => Ok((a, b)),
        _ => Err(Error::shape(op, format!("{what} must be rank 2, got {l}"))),
    }
}

fn same_dtype(op: &'static str, x: Layout, others: &[(&str, Layout)]) -> Result<()> {
    for (what, l) in others {
        if l.dtype != x.dtype {
            return Err(Error::dtype(op, format!("{what} is {} but x is {}", l.dtype, x.dtype)));
        }
    }
    Ok(())
}

fn i32_of(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::unsupported(op, format!("{what} {v} past i32")))
}

/// The kernel name for `base`, dtype and path (gate_up's wide one for `tiles` [`WIDE_TILES`]; the
/// head's is wide whatever its name): the vector path needs K a multiple of the 16-byte vector and
/// every row base (`offsets`, bytes) 16-byte aligned.
fn kernel(op: &'static str, base: &str, dtype: DType, k: usize, offsets: &[usize], path: Path, tiles: usize) -> Result<&'static str> {
    let ok = (k * dtype.size()) % 16 == 0 && offsets.iter().all(|o| o % 16 == 0);
    let vec = path.vectorized(op, ok, || format!("16-byte vector path needs K ({k} of {dtype}) in whole vectors and aligned bases {offsets:?}"))?;
    // KERNELS is ordered by kernel, then dtype (f32, f16, bf16), then path (vec, scalar).
    let kernel = ["qkv", "residual", "gate_up", "head"].iter().position(|b| *b == base).expect("a kernel of decode.cu");
    let dt = match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
    };
    match (base, tiles, dt) {
        // WIDE_KERNELS: f16, then bf16; vec, then scalar.
        ("gate_up", WIDE_TILES, 1 | 2) => return Ok(WIDE_KERNELS[(dt - 1) * 2 + usize::from(!vec)]),
        ("head", WIDE_TILES, _) | ("qkv" | "residual" | "gate_up", 1, _) => {}
        _ => return Err(Error::unsupported(op, format!("no {base} kernel of {tiles} tiles of 8 units in {dtype}"))),
    }
    Ok(KERNELS[kernel * 6 + dt * 2 + usize::from(!vec)])
}

/// The entry points of cuda/decode.cu but dec_finish.
const KERNELS: &[&str] = &[
    "dec_qkv_f32_vec", "dec_qkv_f32_scalar", "dec_qkv_f16_vec", "dec_qkv_f16_scalar", "dec_qkv_bf16_vec", "dec_qkv_bf16_scalar",
    "dec_residual_f32_vec", "dec_residual_f32_scalar", "dec_residual_f16_vec", "dec_residual_f16_scalar", "dec_residual_bf16_vec", "dec_residual_bf16_scalar",
    "dec_gate_up_f32_vec", "dec_gate_up_f32_scalar", "dec_gate_up_f16_vec", "dec_gate_up_f16_scalar", "dec_gate_up_bf16_vec", "dec_gate_up_bf16_scalar",
    "dec_head_f32_vec", "dec_head_f32_scalar", "dec_head_f16_vec", "dec_head_f16_scalar", "dec_head_bf16_vec", "dec_head_bf16_scalar",
];

/// gate_up's wide entry points (cuda/decode.cu's QK_DECODE_GATE_UP_ENTRY with GEMV_WIDE).
const WIDE_KERNELS: &[&str] = &["dec_gate_up_f16_vec_wide", "dec_gate_up_f16_scalar_wide", "dec_gate_up_bf16_vec_wide", "dec_gate_up_bf16_scalar_wide"];

/// The row groups of `rows` rows, `per` at a time: 0..per, per..2 per, ...
fn groups(rows: usize, per: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..rows).step_by(per).map(move |r0| r0..(r0 + per).min(rows))
}

fn config(units: usize, tiles: usize, shared_bytes: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (units.div_ceil(UNITS_PER_TILE * tiles) as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: shared_bytes as u32 }
}

/// The least shared memory a block may opt in to on the built targets: 99 KiB (sm_86/89; sm_80
/// has 163, sm_90 227).
pub const SHARED_LIMIT_BYTES: usize = 99 * 1024;

/// Shared memory a kernel with a norm prologue may stage its normalised rows in: 96 KiB in
/// f16/bf16, 80 KiB in f32, so that with the kernel's static shared memory (f16/bf16: under 3 KiB,
/// the warps' partials reuse the staged rows' memory once they are read; f32: ~18 KiB, the lane
/// sums' exchange) a block stays within [`SHARED_LIMIT_BYTES`] (tests/kernels_build.rs checks the
/// sum against ptxas' report). 96 KiB holds 32 rows of VibeThinker-1.5B's 1536 in bf16. Past 24
/// KiB the launch raises the function's 48 KiB default.
pub fn stage_bytes(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 80 * 1024,
        DType::F16 | DType::BF16 => 96 * 1024,
    }
}
const DEFAULT_SHARED_BYTES: usize = 24 * 1024;

/// Rows of x [.., hidden] one launch of a norm kernel stages: at most `max_rows`, at most
/// `stage_bytes`.
fn staged_rows(op: &'static str, hidden: usize, dtype: DType) -> Result<usize> {
    let per = stage_bytes(dtype) / (hidden * dtype.size());
    if per == 0 {
        return Err(Error::unsupported(op, format!("hidden {hidden} of {dtype} is past one row of {} bytes of shared memory", stage_bytes(dtype))));
    }
    Ok(per.min(max_rows(dtype)))
}

/// Dynamic shared memory of a norm kernel's launch of `rows` rows in blocks of `tiles` tiles: the
/// staged rows, or the tensor cores' exchange of `units_out` outputs a unit where that is larger
/// (it reuses their memory).
fn staged_bytes(rows: usize, hidden: usize, dtype: DType, units_out: usize, tiles: usize) -> usize {
    (rows * hidden * dtype.size()).max(exchange_bytes(dtype, units_out, tiles))
}

/// Allow `bytes` of dynamic shared memory for `f` where the default does not.
fn allow_shared(f: &cudarc::driver::CudaFunction, name: &str, bytes: usize) -> Result<()> {
    if bytes > DEFAULT_SHARED_BYTES {
        use cudarc::driver::sys::CUfunction_attribute;
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .cuda(format!("cuFuncSetAttribute({name}, MAX_DYNAMIC_SHARED_SIZE_BYTES, {bytes})"))?;
    }
    Ok(())
}

/// Check an input norm: x [R, H], its weight [H] in x's dtype, eps finite and >= 0.
fn check_norm(op: &'static str, x: Layout, norm: Layout, eps: f32) -> Result<(usize, usize)> {
    let (rows, hidden) = dims2(op, "x", x)?;
    same_dtype(op, x, &[("the norm weight", norm)])?;
    if norm.shape.dims() != [hidden] {
        return Err(Error::shape(op, format!("norm weight {norm} must be [{hidden}] for x {x}")));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(op, format!("eps {eps} must be finite and >= 0")));
    }
    if hidden == 0 {
        return Err(Error::shape(op, format!("x {x} has no columns")));
    }
    Ok((rows, hidden))
}

/// The q/k/v projection of x [R, H] (normalised with `norm`, eps), `w` [(heads + 2 kv_heads) d, H]
/// and bias `b` [(heads + 2 kv_heads) d], then RoPE at `positions` with `table` and the cache
/// write at `slot_mapping` (device i32 [R] each; checked per row on the device as
/// [`crate::ops::rope::rope_qkv`] does, flagged in the table's status word): q_out [R, heads, d]
/// gets the rotated q.
#[allow(clippy::too_many_arguments)]
pub fn qkv(
    gpu: &Gpu,
    x: &View,
    norm: &View,
    eps: f32,
    w: &View,
    b: &View,
    table: &mut RopeTable,
    positions: &CudaView<i32>,
    slot_mapping: &CudaView<i32>,
    q_out: &mut ViewMut,
    cache: &mut KvCacheViewMut,
) -> Result<()> {
    qkv_with_path(gpu, x, norm, eps, w, b, table, positions, slot_mapping, q_out, cache, Path::Auto)
}

#[allow(clippy::too_many_arguments)]
pub fn qkv_with_path(
    gpu: &Gpu,
    x: &View,
    norm: &View,
    eps: f32,
    w: &View,
    b: &View,
    table: &mut RopeTable,
    positions: &CudaView<i32>,
    slot_mapping: &CudaView<i32>,
    q_out: &mut ViewMut,
    cache: &mut KvCacheViewMut,
    path: Path,
) -> Result<()> {
    let op = QKV_OP;
    let (rows, hidden) = check_norm(op, x.layout(), norm.layout(), eps)?;
    let q = q_out.layout();
    let [q_rows, heads, d] = *q.shape.dims() else {
        return Err(Error::shape(op, format!("q_out must be [rows, heads, head_dim], got {q}")));
    };
    same_dtype(op, x.layout(), &[("w", w.layout()), ("b", b.layout()), ("q_out", q)])?;
    let kv_heads = cache.dims(op)?.kv_heads;
    let (n, wk) = dims2(op, "w", w.layout())?;
    let width = (heads + 2 * kv_heads) * d;
    if q_rows != rows || n != width || wk != hidden || b.layout().shape.dims() != [width] {
        return Err(Error::shape(
            op,
            format!("for x {} and q_out {q} ({kv_heads} kv heads): w {} must be [{width}, {hidden}], b {} [{width}]", x.layout(), w.layout(), b.layout()),
        ));
    }
    // RoPE's and the cache write's own checks (k and v as [R, kv_heads, d]).
    let kv = Layout::new(q.dtype, &[rows, kv_heads, d])?;
    check_qk(op, q, kv, table.head_dim(), positions.len())?;
    let c = check_kv(q, kv, kv, slot_mapping.len(), cache.k.layout(), cache.v.layout(), cache.layout)?;
    if rows == 0 {
        return Ok(());
    }
    let name = kernel(op, "qkv", x.layout().dtype, hidden, &[x.byte_offset(), w.byte_offset(), norm.byte_offset()], path, 1)?;
    let f = gpu.function(MODULE, name)?;
    let geometry = CacheArgs::new(table, &c);
    let (inv_freq, status) = table.device_parts();
    let (hidden_i, heads_i, kv_i, half_i) = (i32_of(op, "hidden", hidden)?, heads as i32, kv_heads as i32, (d / 2) as i32);
    i32_of(op, "rows of w", width.saturating_mul(hidden))?;
    let per = staged_rows(op, hidden, x.layout().dtype)?;
    let shared_for = |rows: usize| staged_bytes(rows, hidden, x.layout().dtype, 2, 1);
    allow_shared(&f, name, shared_for(per.min(rows)))?;
    for g in groups(rows, per) {
        let shared = shared_for(g.len());
        let rows_i = g.len() as i32;
        let xg = x.rows(g.clone())?;
        let (pos, slots) = (positions.slice(g.clone()), slot_mapping.slice(g.clone()));
        let mut qg = q_out.rows_mut(g.clone())?;
        let mut p = gpu.addresses();
        let a = QkDecQkvArgs {
            x: p.read(&xg.data),
            w_norm: p.read(&norm.data),
            eps,
            w: p.read(&w.data),
            b: p.read(&b.data),
            rows: rows_i,
            hidden: hidden_i,
            heads: heads_i,
            kv_heads: kv_i,
            half: half_i,
            positions: p.read(&pos).cast(),
            slot_mapping: p.read(&slots).cast(),
            inv_freq: p.read(inv_freq).cast(),
            status: p.write(&mut *status).cast(),
            q_out: p.write(&mut qg.data),
            k_cache: p.write(&mut cache.k.data),
            v_cache: p.write(&mut cache.v.data),
            cache: geometry.geometry(),
        };
        // SAFETY: x holds rows * H, norm H, w width * H, b width elements and q_out rows * heads *
        // d, of one dtype (checked above); the kernel reads x's rows of the group and w's rows of
        // its units (< width), and writes q_out's rows of the group and the cache only at a slot
        // checked on the device against num_pages * page_size, as rope_qkv (check_kv above).
        unsafe { gpu.launch_struct(&f, name, &a, config((heads + 2 * kv_heads) * d / 2, 1, shared)) }?;
    }
    Ok(())
}

/// `resid = T(resid + T(x W^T))` for x [R, K], W [N, K], resid [R, N]: o_proj and down_proj with
/// the decoder layer's residual add.
pub fn residual(gpu: &Gpu, x: &View, w: &View, resid: &mut ViewMut) -> Result<()> {
    residual_with_path(gpu, x, w, resid, Path::Auto)
}

pub fn residual_with_path(gpu: &Gpu, x: &View, w: &View, resid: &mut ViewMut, path: Path) -> Result<()> {
    let op = RESIDUAL_OP;
    let (rows, k) = dims2(op, "x", x.layout())?;
    let (n, wk) = dims2(op, "w", w.layout())?;
    same_dtype(op, x.layout(), &[("w", w.layout()), ("resid", resid.layout())])?;
    if wk != k || resid.layout().shape.dims() != [rows, n] || k == 0 {
        return Err(Error::shape(op, format!("x {} (K > 0), w {} [N, K] and resid {} [rows, N] disagree", x.layout(), w.layout(), resid.layout())));
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let name = kernel(op, "residual", x.layout().dtype, k, &[x.byte_offset(), w.byte_offset()], path, 1)?;
    let f = gpu.function(MODULE, name)?;
    let (k_i, n_i) = (i32_of(op, "K", k)?, i32_of(op, "N", n)?);
    i32_of(op, "elements of w", n.saturating_mul(k))?;
    for g in groups(rows, max_rows(x.layout().dtype)) {
        let rows_i = g.len() as i32;
        let xg = x.rows(g.clone())?;
        let mut rg = resid.rows_mut(g)?;
        let mut p = gpu.addresses();
        let a = QkDecResidualArgs { x: p.read(&xg.data), w: p.read(&w.data), resid: p.write(&mut rg.data), rows: rows_i, k: k_i, n: n_i };
        // SAFETY: x's group holds rows * K, w N * K and resid's group rows * N elements of one
        // dtype (checked above); warp n reads w's row n < N and writes resid[r, n], r < rows.
        unsafe { gpu.launch_struct(&f, name, &a, config(n, 1, exchange_bytes(x.layout().dtype, 1, 1))) }?;
    }
    Ok(())
}

/// `act = silu(T(xn Wg^T)) * T(xn Wu^T)` with xn = rmsnorm(x) (weight `norm`, eps), x [R, H], w the
/// merged [gate; up] weight [2I, H], act [R, I].
pub fn gate_up(gpu: &Gpu, x: &View, norm: &View, eps: f32, w: &View, act: &mut ViewMut) -> Result<()> {
    gate_up_with_path(gpu, x, norm, eps, w, act, Path::Auto)
}

pub fn gate_up_with_path(gpu: &Gpu, x: &View, norm: &View, eps: f32, w: &View, act: &mut ViewMut, path: Path) -> Result<()> {
    let op = GATE_UP_OP;
    let (rows, hidden) = check_norm(op, x.layout(), norm.layout(), eps)?;
    let (n, wk) = dims2(op, "w", w.layout())?;
    same_dtype(op, x.layout(), &[("w", w.layout()), ("act", act.layout())])?;
    let inter = n / 2;
    if wk != hidden || n % 2 != 0 || inter == 0 || act.layout().shape.dims() != [rows, inter] {
        return Err(Error::shape(op, format!("w {} must be [2 I, {hidden}] (gate rows, then up rows) and act {} [{rows}, I]", w.layout(), act.layout())));
    }
    if rows == 0 {
        return Ok(());
    }
    let dtype = x.layout().dtype;
    let offsets = [x.byte_offset(), w.byte_offset(), norm.byte_offset()];
    let (hidden_i, inter_i) = (i32_of(op, "hidden", hidden)?, i32_of(op, "I", inter)?);
    i32_of(op, "elements of w", n.saturating_mul(hidden))?;
    let per = staged_rows(op, hidden, dtype)?;
    for g in groups(rows, per) {
        let tiles = norm_tiles("gate_up", dtype, g.len());
        let name = kernel(op, "gate_up", dtype, hidden, &offsets, path, tiles)?;
        let f = gpu.function(MODULE, name)?;
        let shared = staged_bytes(g.len(), hidden, dtype, 2, tiles);
        allow_shared(&f, name, shared)?;
        let rows_i = g.len() as i32;
        let xg = x.rows(g.clone())?;
        let mut ag = act.rows_mut(g)?;
        let mut p = gpu.addresses();
        let a = QkDecGateUpArgs {
            x: p.read(&xg.data),
            w_norm: p.read(&norm.data),
            eps,
            w: p.read(&w.data),
            act: p.write(&mut ag.data),
            rows: rows_i,
            hidden: hidden_i,
            inter: inter_i,
        };
        // SAFETY: x's group holds rows * H, norm H, w 2I * H and act's group rows * I elements of
        // one dtype (checked above); unit i < I reads w's rows i and I + i and writes act[r, i].
        unsafe { gpu.launch_struct(&f, name, &a, config(inter, tiles, shared)) }?;
    }
    Ok(())
}

/// The head's argmax candidates, one per tile of 8 features: [rows, tiles] values and indices,
/// allocated once for up to `rows` rows of a vocabulary of `vocab` (so a step is captured without
/// allocating). A wide block writes its 4 tiles' candidates.
pub struct HeadCandidates {
    part_v: CudaSlice<f32>,
    part_i: CudaSlice<i32>,
    rows: usize,
    blocks: usize,
}

impl HeadCandidates {
    pub fn new(gpu: &Gpu, rows: usize, vocab: usize) -> Result<Self> {
        let blocks = vocab.div_ceil(UNITS_PER_TILE).max(1);
        let n = rows.max(1) * blocks;
        let part_v = gpu.stream().alloc_zeros::<f32>(n).cuda("cuMemAlloc(decode head candidates)")?;
        let part_i = gpu.stream().alloc_zeros::<i32>(n).cuda("cuMemAlloc(decode head candidates)")?;
        Ok(HeadCandidates { part_v, part_i, rows: rows.max(1), blocks })
    }
}

/// `logits = xn W^T` in f32 with xn = rmsnorm(x) (the final norm), x [R, H], W [V, H], logits
/// [R, V] f32, and each block's bounded argmax (entries below `n_valid`) into `cand`;
/// [`finish`] completes the argmax.
#[allow(clippy::too_many_arguments)]
pub fn head(gpu: &Gpu, x: &View, norm: &View, eps: f32, w: &View, logits: &mut ViewMut, n_valid: usize, cand: &mut HeadCandidates) -> Result<()> {
    head_with_path(gpu, x, norm, eps, w, logits, n_valid, cand, Path::Auto)
}

#[allow(clippy::too_many_arguments)]
pub fn head_with_path(
    gpu: &Gpu,
    x: &View,
    norm: &View,
    eps: f32,
    w: &View,
    logits: &mut ViewMut,
    n_valid: usize,
    cand: &mut HeadCandidates,
    path: Path,
) -> Result<()> {
    let op = HEAD_OP;
    let (rows, hidden) = check_norm(op, x.layout(), norm.layout(), eps)?;
    let (vocab, wk) = dims2(op, "w", w.layout())?;
    same_dtype(op, x.layout(), &[("w", w.layout())])?;
    if logits.layout().dtype != DType::F32 {
        return Err(Error::dtype(op, format!("logits must be f32, got {}", logits.layout())));
    }
    if wk != hidden || logits.layout().shape.dims() != [rows, vocab] {
        return Err(Error::shape(op, format!("w {} must be [V, {hidden}] and logits {} [{rows}, V]", w.layout(), logits.layout())));
    }
    if n_valid == 0 || n_valid > vocab {
        return Err(Error::invalid(op, format!("n_valid {n_valid} must be in 1..={vocab}")));
    }
    let blocks = vocab.div_ceil(UNITS_PER_TILE);
    if rows > cand.rows || blocks != cand.blocks {
        return Err(Error::shape(op, format!("candidates for {} rows of {} blocks, need {rows} of {blocks}", cand.rows, cand.blocks)));
    }
    if rows == 0 {
        return Ok(());
    }
    let dtype = x.layout().dtype;
    let offsets = [x.byte_offset(), w.byte_offset(), norm.byte_offset()];
    let (hidden_i, vocab_i, valid_i) = (i32_of(op, "hidden", hidden)?, i32_of(op, "V", vocab)?, n_valid as i32);
    i32_of(op, "elements of w", vocab.saturating_mul(hidden))?;
    let per = staged_rows(op, hidden, dtype)?;
    for g in groups(rows, per) {
        let tiles = norm_tiles("head", dtype, g.len());
        let name = kernel(op, "head", dtype, hidden, &offsets, path, tiles)?;
        let f = gpu.function(MODULE, name)?;
        let shared = staged_bytes(g.len(), hidden, dtype, 1, tiles);
        allow_shared(&f, name, shared)?;
        let rows_i = g.len() as i32;
        let xg = x.rows(g.clone())?;
        let mut lg = logits.rows_mut(g.clone())?;
        let part = g.start * blocks..g.end * blocks;
        let mut pv = cand.part_v.slice_mut(part.clone());
        let mut pi = cand.part_i.slice_mut(part);
        let mut p = gpu.addresses();
        let a = QkDecHeadArgs {
            x: p.read(&xg.data),
            w_norm: p.read(&norm.data),
            eps,
            w: p.read(&w.data),
            logits: p.write(&mut lg.data).cast(),
            rows: rows_i,
            hidden: hidden_i,
            n: vocab_i,
            n_valid: valid_i,
            part_v: p.write(&mut pv).cast(),
            part_i: p.write(&mut pi).cast(),
        };
        // SAFETY: x's group holds rows * H, norm H, w V * H of one dtype, logits' group rows * V
        // f32, the candidates rows * blocks each (checked above); tile c < blocks writes
        // candidate [r, c] for r < rows, feature n < V reads w's row n and writes logits[r, n].
        unsafe { gpu.launch_struct(&f, name, &a, config(vocab, tiles, shared)) }?;
    }
    Ok(())
}

/// The decode batch's metadata the last kernel of a step moves on (see `cuda/model.cu`'s
/// decode_advance): each row's position, length and cache slot, through its block table row.
pub struct Advance<'a, 'b> {
    pub positions: &'a mut CudaSlice<i32>,
    pub lens: &'a mut CudaSlice<i32>,
    pub slot_mapping: &'a mut CudaSlice<i32>,
    pub block_tables: &'a CudaView<'b, i32>,
    pub max_pages: usize,
    pub page_size: usize,
}

impl Advance<'_, '_> {
    /// Sizes, before any launch: `op` names the caller in the error.
    pub(crate) fn check(&self, op: &'static str, rows: usize) -> Result<()> {
        if rows > self.positions.len() || rows > self.lens.len() || rows > self.slot_mapping.len() || Some(self.block_tables.len()) != rows.checked_mul(self.max_pages) {
            return Err(Error::shape(
                op,
                format!("{rows} rows past {} positions / {} lens / {} slots, or {} block-table entries for {} pages a row", self.positions.len(), self.lens.len(), self.slot_mapping.len(), self.block_tables.len(), self.max_pages),
            ));
        }
        if self.page_size == 0 || self.max_pages.checked_mul(self.page_size).is_none_or(|n| n > i32::MAX as usize) {
            return Err(Error::invalid(op, format!("{} pages of {} positions", self.max_pages, self.page_size)));
        }
        Ok(())
    }
}

/// Words before the tokens in a step's report (`cuda/model.cuh`'s REPORT_HEAD): the embedding's,
/// RoPE's and decode attention's status words, in that order.
pub const REPORT_HEAD: usize = 3;

/// Where the last kernel of a decode step packs the step's report (`cuda/model.cuh`'s
/// step_report_row), so that one copy brings back everything the host reads after a step:
/// `out[0..3]` the three status words, `out[REPORT_HEAD + r]` row r's token. The embedding's and
/// RoPE's words are moved into the report (cleared); the decode attention's is read.
pub struct StepReport<'a> {
    /// u32 [at least REPORT_HEAD + rows].
    pub out: &'a mut CudaSlice<u32>,
    /// The embedding's status word ([`crate::ops::embed::EmbedStatus`]).
    pub embed_status: &'a mut CudaSlice<u32>,
    /// RoPE's status word ([`RopeTable`]'s).
    pub rope_status: &'a mut CudaSlice<u32>,
    /// The decode attention's workspace (f32; its first word is the status).
    pub decode_status: View<'a>,
}

impl StepReport<'_> {
    /// Sizes, before any launch: `op` names the caller in the error.
    pub(crate) fn check(&self, op: &'static str, rows: usize) -> Result<()> {
        if self.out.len() < REPORT_HEAD + rows || self.embed_status.is_empty() || self.rope_status.is_empty() {
            return Err(Error::shape(op, format!("a report of {} words for {rows} rows (needs {REPORT_HEAD} + rows), status words of {} and {}", self.out.len(), self.embed_status.len(), self.rope_status.len())));
        }
        let ws = self.decode_status.layout();
        if ws.dtype != DType::F32 || ws.numel() == 0 {
            return Err(Error::dtype(op, format!("the decode status must be a non-empty f32 workspace, got {ws}")));
        }
        Ok(())
    }
}

/// An advance's part of an argument struct (all null without one).
pub(crate) fn advance_args<'a>(p: &mut Addresses<'a>, advance: Option<Advance<'a, '_>>) -> QkAdvance {
    match advance {
        Some(a) => QkAdvance {
            positions: p.write(a.positions).cast(),
            lens: p.write(a.lens).cast(),
            slot_mapping: p.write(a.slot_mapping).cast(),
            block_tables: p.read(a.block_tables).cast(),
            // Checked against i32 by Advance::check.
            max_pages: a.max_pages as i32,
            page_size: a.page_size as i32,
        },
        None => QkAdvance { positions: null_mut(), lens: null_mut(), slot_mapping: null_mut(), block_tables: null(), max_pages: 0, page_size: 1 },
    }
}

/// A report's part of an argument struct (all null without one).
pub(crate) fn report_args<'a>(p: &mut Addresses<'a>, report: Option<&'a mut StepReport<'_>>) -> QkReport {
    match report {
        Some(r) => QkReport {
            out: p.write(&mut *r.out).cast(),
            embed_status: p.write(&mut *r.embed_status).cast(),
            rope_status: p.write(&mut *r.rope_status).cast(),
            decode_status: p.read(&r.decode_status.data).cast(),
        },
        None => QkReport { out: null_mut(), embed_status: null_mut(), rope_status: null_mut(), decode_status: null() },
    }
}

/// The argmax of `rows` rows from the head's candidates into `index` (i32, -1 for a row with a NaN
/// among its valid logits), then, with `advance`, each row's position, length and slot + 1, and
/// with `report`, the step's report.
pub fn finish(gpu: &Gpu, cand: &HeadCandidates, rows: usize, index: &mut CudaSlice<i32>, advance: Option<Advance>, mut report: Option<StepReport>) -> Result<()> {
    let op = HEAD_OP;
    if rows > cand.rows || rows > index.len() {
        return Err(Error::shape(op, format!("{rows} rows past the candidates' {} or the index's {}", cand.rows, index.len())));
    }
    if let Some(a) = &advance {
        a.check(op, rows)?;
    }
    if let Some(r) = &report {
        r.check(op, rows)?;
    }
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function(MODULE, "dec_finish")?;
    let parts = i32_of(op, "blocks", cand.blocks)?;
    let mut p = gpu.addresses();
    let a = QkDecFinishArgs {
        part_v: p.read(&cand.part_v).cast(),
        part_i: p.read(&cand.part_i).cast(),
        parts,
        index: p.write(index).cast(),
        advance: advance.is_some() as i32,
        adv: advance_args(&mut p, advance),
        report: report_args(&mut p, report.as_mut()),
    };
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: block r < rows reads candidates [r, 0..blocks) (rows <= cand.rows) and writes
    // index[r]; with advance it touches element r of the three arrays and table entries r *
    // max_pages + i for i < max_pages (checked above); with a report it writes report word
    // REPORT_HEAD + r (< out.len(), checked) and block 0 words 0..3 and the two one-word statuses,
    // and reads the workspace's first word; the null pointers are never read.
    unsafe { gpu.launch_struct(&f, "dec_finish", &a, cfg) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_and_groups() {
        assert_eq!(kernel(QKV_OP, "qkv", DType::BF16, 896, &[0, 32, 16], Path::Auto, 1).unwrap(), "dec_qkv_bf16_vec");
        assert_eq!(kernel(QKV_OP, "qkv", DType::BF16, 897, &[0, 0], Path::Auto, 1).unwrap(), "dec_qkv_bf16_scalar");
        assert_eq!(kernel(HEAD_OP, "head", DType::F32, 896, &[4], Path::Auto, WIDE_TILES).unwrap(), "dec_head_f32_scalar");
        for base in ["qkv", "residual", "gate_up", "head"] {
            for (dtype, dt) in [(DType::F32, "f32"), (DType::F16, "f16"), (DType::BF16, "bf16")] {
                for (path, p) in [(Path::Vector16, "vec"), (Path::Scalar, "scalar")] {
                    let tiles = if base == "head" { WIDE_TILES } else { 1 };
                    assert_eq!(kernel(HEAD_OP, base, dtype, 64, &[0], path, tiles).unwrap(), format!("dec_{base}_{dt}_{p}"));
                }
            }
        }
        assert!(matches!(kernel(HEAD_OP, "head", DType::F32, 3, &[0], Path::Vector16, WIDE_TILES), Err(Error::Alignment { .. })));
        assert_eq!(groups(33, 16).collect::<Vec<_>>(), vec![0..16, 16..32, 32..33]);
        assert_eq!(groups(0, 16).count(), 0);
        // Staged rows: 16 of Qwen2.5-0.5B in f32 (CUDA cores), 32 of both models in bf16 (96 KiB
        // for VibeThinker-1.5B), 13 of VibeThinker-1.5B in f32 (78 KiB); none past a row of 80 KiB
        // (f32) or 96 KiB (f16/bf16).
        assert_eq!(staged_rows(HEAD_OP, 896, DType::F32).unwrap(), 16);
        assert_eq!(staged_rows(HEAD_OP, 896, DType::BF16).unwrap(), 32);
        assert_eq!(staged_rows(HEAD_OP, 1536, DType::BF16).unwrap(), 32);
        assert_eq!(staged_rows(HEAD_OP, 1536, DType::F32).unwrap(), 13);
        assert_eq!(staged_rows(HEAD_OP, 1537, DType::BF16).unwrap(), 31);
        assert!(matches!(staged_rows(HEAD_OP, 20481, DType::F32), Err(Error::UnsupportedSize { .. })));
        assert!(matches!(staged_rows(HEAD_OP, 49153, DType::BF16), Err(Error::UnsupportedSize { .. })));
        // The exchange of partials fits under the staged rows' memory at one row of either model.
        assert_eq!(staged_bytes(1, 896, DType::BF16, 2, 1), 18432);
        assert_eq!(staged_bytes(32, 1536, DType::BF16, 2, 1), 98304);
        assert_eq!(staged_bytes(3, 896, DType::F32, 2, 1), 10752);
        // Wide blocks: gate/up's exchange (73,728 bytes) is the larger at 9 rows of 896, the
        // staged rows at 32 of 1536; both within the staged limit.
        assert_eq!(staged_bytes(9, 896, DType::BF16, 2, WIDE_TILES), 73728);
        assert_eq!(staged_bytes(32, 1536, DType::BF16, 2, WIDE_TILES), 98304);
        assert_eq!(staged_bytes(32, 896, DType::BF16, 1, WIDE_TILES), 57344);
        assert!(exchange_bytes(DType::BF16, 2, WIDE_TILES) <= stage_bytes(DType::BF16));
        // Wide blocks for gate/up past 8 rows of f16/bf16, for the head at any rows and dtype.
        let tiles = |base, dtype, rows| norm_tiles(base, dtype, rows);
        assert_eq!((tiles("gate_up", DType::BF16, 8), tiles("gate_up", DType::BF16, 9), tiles("gate_up", DType::F16, 32), tiles("gate_up", DType::F32, 16)), (1, WIDE_TILES, WIDE_TILES, 1));
        assert_eq!((tiles("head", DType::BF16, 1), tiles("head", DType::F16, 32), tiles("head", DType::F32, 1)), (WIDE_TILES, WIDE_TILES, WIDE_TILES));
        for (dtype, dt) in [(DType::F16, "f16"), (DType::BF16, "bf16")] {
            for (path, p) in [(Path::Vector16, "vec"), (Path::Scalar, "scalar")] {
                assert_eq!(kernel(HEAD_OP, "gate_up", dtype, 64, &[0], path, WIDE_TILES).unwrap(), format!("dec_gate_up_{dt}_{p}_wide"));
            }
        }
        for (base, dtype, tiles) in [("gate_up", DType::F32, WIDE_TILES), ("head", DType::BF16, 1), ("qkv", DType::BF16, WIDE_TILES), ("residual", DType::F16, 2)] {
            assert!(matches!(kernel(HEAD_OP, base, dtype, 64, &[0], Path::Auto, tiles), Err(Error::UnsupportedSize { .. })), "{base} {dtype} {tiles}");
        }
    }
}
