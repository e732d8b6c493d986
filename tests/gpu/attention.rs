//! Attention kernels on a GPU (run by tests/gpu/main.rs): the goldens of both models at every case
//! and dtype, the CPU reference on random shapes, decode of many sequences in one launch, poisoned
//! future keys and cache positions, guard bands, batch and split invariance, bad inputs.
//!
//! Tolerance: `table::attention(dtype)` with per-element scale `reference::attention::error_scale`
//! (the FP32 contract), plus `ops::attention::mma_extra_error` for the tensor-core prefill
//! (its 16-bit split softmax weights and the mma's truncating FP32 accumulation).

use crate::common::{rng, uniform, GUARD, POISON};
use rand::Rng as _;
use crate::GpuTest;
use cudarc::driver::CudaSlice;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qwen_kernels::check::{in_range, ATTENTION_CASES};
use qwen_kernels::golden::metrics::compare_scaled;
use qwen_kernels::golden::tolerance::table;
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::ops::attention::{
    decode, decode_with_chunk, decode_with_heads_per_block, decode_workspace_len, HEADS_PER_BLOCK, prefill, prefill_error_scale, prefill_with_path, PrefillPath,
    DEFAULT_DECODE_CHUNK,
};
use qwen_kernels::ops::kv_cache::{KvCacheView, KvLayout, PagedBatch};
use qwen_kernels::reference::attention::{attention_unrounded as reference, error_scale};
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[
    ("attention::goldens_prefill_every_case_and_dtype", goldens_prefill_every_case_and_dtype),
    ("attention::goldens_decode_from_the_cache", goldens_decode_from_the_cache),
    ("attention::stress_layer_f16_is_finite_where_eager_overflows", stress_layer_f16_is_finite_where_eager_overflows),
    ("attention::tensor_core_weights_keep_fp32_accuracy_under_cancellation", tensor_core_weights_keep_fp32_accuracy_under_cancellation),
    ("attention::decode_every_step_of_a_300_token_golden_in_one_launch", decode_every_step_of_a_300_token_golden_in_one_launch),
    ("attention::decode_many_sequences_of_different_lengths", decode_many_sequences_of_different_lengths),
    ("attention::decode_invalid_slot_or_len_gives_nan_rows_only", decode_invalid_slot_or_len_gives_nan_rows_only),
    ("attention::future_keys_poisoned_do_not_reach_earlier_queries", future_keys_poisoned_do_not_reach_earlier_queries),
    ("attention::prefill_rows_are_chunk_invariant", prefill_rows_are_chunk_invariant),
    ("attention::simt_prefill_row_equals_decode_bitwise", simt_prefill_row_equals_decode_bitwise),
    ("attention::decode_is_batch_invariant", decode_is_batch_invariant),
    ("attention::decode_head_blocks_change_nothing", decode_head_blocks_change_nothing),
    ("attention::long_context_prefill_and_decode", long_context_prefill_and_decode),
    ("attention::decode_and_prefill_replay_from_a_cuda_graph", decode_and_prefill_replay_from_a_cuda_graph),
    ("attention::empty_prefill_is_a_no_op", empty_prefill_is_a_no_op),
    ("attention::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
    ("attention::proptest_prefill_shapes", proptest_prefill_shapes),
    ("attention::proptest_decode_shapes", proptest_decode_shapes),
];

const MODELS: [&str; 2] = ["qwen2.5-0.5b", "vibethinker-1.5b"];

/// Per-element tolerance scale of a prefill on `path` (`ops::attention::prefill_error_scale`).
fn tolerance_scale(q: &HostTensor, k: &HostTensor, v: &HostTensor, tensor_core: bool) -> Vec<f32> {
    prefill_error_scale(q, k, v, tensor_core).unwrap()
}

/// A [rows + 2, heads, D] output: guard rows around `rows` rows poisoned with NaN.
fn guarded(gpu: &Gpu, dtype: DType, rows: usize, heads: usize, dim: usize) -> DeviceTensor {
    let row = heads * dim;
    let mut values = vec![POISON; (rows + 2) * row];
    values[..row].fill(GUARD);
    values[(rows + 1) * row..].fill(GUARD);
    DeviceTensor::from_host(gpu, &HostTensor::from_f32(dtype, &[rows + 2, heads, dim], values).unwrap()).unwrap()
}

/// The inner rows of a guarded output, after checking the guards are untouched.
fn unguard(gpu: &Gpu, t: &DeviceTensor, what: &str) -> Vec<f32> {
    let dims = t.dims();
    let row = dims[1] * dims[2];
    let rows = dims[0] - 2;
    let all = t.to_host(gpu).unwrap().into_data();
    assert!(all[..row].iter().all(|&v| v == GUARD), "{what}: guard before the output was written");
    assert!(all[(rows + 1) * row..].iter().all(|&v| v == GUARD), "{what}: guard after the output was written");
    all[row..(rows + 1) * row].to_vec()
}

pub(crate) fn run_prefill(gpu: &Gpu, q: &HostTensor, k: &HostTensor, v: &HostTensor, path: PrefillPath, what: &str) -> Vec<f32> {
    let (tokens, heads, dim) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    let (dq, dk, dv) = (DeviceTensor::from_host(gpu, q).unwrap(), DeviceTensor::from_host(gpu, k).unwrap(), DeviceTensor::from_host(gpu, v).unwrap());
    let mut out = guarded(gpu, q.dtype(), tokens, heads, dim);
    {
        let mut full = out.view_mut();
        let mut inner = full.rows_mut(1..tokens + 1).unwrap();
        prefill_with_path(gpu, &dq.view(), &dk.view(), &dv.view(), &mut inner, path).unwrap();
    }
    unguard(gpu, &out, what)
}

fn paths(dtype: DType) -> Vec<(PrefillPath, bool)> {
    match dtype {
        DType::F32 => vec![(PrefillPath::Auto, false)],
        DType::F16 | DType::BF16 => vec![(PrefillPath::Auto, true), (PrefillPath::TensorCore, true), (PrefillPath::Simt, false)],
    }
}

/// Prefill of `q`, `k`, `v` by every path against `expected` (the golden truth or the reference).
fn check_prefill<E: Copy + Into<f64>>(gpu: &Gpu, q: &HostTensor, k: &HostTensor, v: &HostTensor, expected: &[E], what: &str) {
    let dtype = q.dtype();
    for (path, tensor_core) in paths(dtype) {
        let what = format!("{what} {dtype} {path:?}");
        let ours = run_prefill(gpu, q, k, v, path, &what);
        let scale = tolerance_scale(q, k, v, tensor_core);
        let c = compare_scaled(&ours, expected, table::attention(dtype), Some(&scale));
        assert!(c.passed(), "prefill mismatch: {what}: {c}");
    }
}

/// A cache pair [slots, kv_heads, capacity, D] holding k, v [S, kv_heads, D] at positions 0..S of
/// `slot`; every other position of every slot holds `fill`.
pub(crate) fn cache_with(k: &HostTensor, v: &HostTensor, slots: usize, slot: usize, capacity: usize, fill: f32) -> (HostTensor, HostTensor) {
    let (context, kv_heads, dim) = (k.dims()[0], k.dims()[1], k.dims()[2]);
    let mut kc = vec![fill; slots * kv_heads * capacity * dim];
    let mut vc = kc.clone();
    for s in 0..context {
        for h in 0..kv_heads {
            let src = (s * kv_heads + h) * dim;
            let dst = ((slot * kv_heads + h) * capacity + s) * dim;
            kc[dst..dst + dim].copy_from_slice(&k.data()[src..src + dim]);
            vc[dst..dst + dim].copy_from_slice(&v.data()[src..src + dim]);
        }
    }
    let dims = [slots, kv_heads, capacity, dim];
    (HostTensor::from_f32(k.dtype(), &dims, kc).unwrap(), HostTensor::from_f32(k.dtype(), &dims, vc).unwrap())
}

fn device_i32(gpu: &Gpu, values: &[i32]) -> CudaSlice<i32> {
    gpu.stream().clone_htod(values).unwrap()
}

/// The HND cache `k`, `v` [slots, kv_heads, capacity, D]: one page of `capacity` positions per
/// sequence (the slot cache).
pub(crate) fn slot_cache<'a>(k: &'a DeviceTensor, v: &'a DeviceTensor) -> KvCacheView<'a> {
    KvCacheView { k: k.view(), v: v.view(), layout: KvLayout::Hnd }
}

/// Decode of q [B, heads, D] against a slot cache [slots, kv_heads, capacity, D] (one page per
/// sequence: row b's block table is the single page `slots[b]`) and lens; guarded output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_decode(gpu: &Gpu, q: &HostTensor, kc: &HostTensor, vc: &HostTensor, slots: &[i32], lens: &[i32], chunk: usize, what: &str) -> Vec<f32> {
    let (batch, heads, dim) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    let capacity = kc.dims()[2];
    let dq = DeviceTensor::from_host(gpu, q).unwrap();
    let (dk, dv) = (DeviceTensor::from_host(gpu, kc).unwrap(), DeviceTensor::from_host(gpu, vc).unwrap());
    let (ds, dl) = (device_i32(gpu, slots), device_i32(gpu, lens));
    // Poisoned workspace: every entry the combine reads must have been written by this launch.
    let ws_len = decode_workspace_len(batch, heads, dim, capacity, chunk);
    let mut ws = DeviceTensor::from_host(gpu, &HostTensor::full(DType::F32, &[ws_len.max(1)], f32::NAN).unwrap()).unwrap();
    let mut out = guarded(gpu, q.dtype(), batch, heads, dim);
    {
        let mut full = out.view_mut();
        let mut inner = full.rows_mut(1..batch + 1).unwrap();
        let mut ws = ws.view_mut();
        let (tables, lens) = (ds.slice(..), dl.slice(..));
        let paged = PagedBatch { block_tables: &tables, max_pages: 1, seq_lens: &lens };
        let cache = slot_cache(&dk, &dv);
        if chunk == DEFAULT_DECODE_CHUNK {
            decode(gpu, &dq.view(), &cache, &paged, &mut ws, &mut inner).unwrap();
        } else {
            decode_with_chunk(gpu, &dq.view(), &cache, &paged, &mut ws, &mut inner, chunk).unwrap();
        }
    }
    unguard(gpu, &out, what)
}

/// The first `len` rows of k or v [S, kv_heads, D].
fn prefix(x: &HostTensor, len: usize) -> HostTensor {
    let row = x.dims()[1] * x.dims()[2];
    HostTensor::from_f32(x.dtype(), &[len, x.dims()[1], x.dims()[2]], x.data()[..len * row].to_vec()).unwrap()
}

/// Row `b` of q [B, heads, D] as [1, heads, D].
fn q_row(q: &HostTensor, b: usize) -> HostTensor {
    let row = q.dims()[1] * q.dims()[2];
    HostTensor::from_f32(q.dtype(), &[1, q.dims()[1], q.dims()[2]], q.data()[b * row..(b + 1) * row].to_vec()).unwrap()
}

fn golden(model: &str, case: &str, dtype: DType) -> Option<(HostTensor, HostTensor, HostTensor, Vec<f64>)> {
    let f = GoldenFile::open(model, "ops").unwrap();
    let key = |t: &str| format!("attention.{case}.{dtype}.{t}");
    if !f.has(&key("q")) {
        return None;
    }
    let truth = in_range(dtype, f.tensor(&key("o.truth")).unwrap().values);
    Some((f.host(&key("q")).unwrap(), f.host(&key("k")).unwrap(), f.host(&key("v")).unwrap(), truth))
}

fn goldens_prefill_every_case_and_dtype(gpu: &Gpu) {
    let mut seen = 0;
    for model in MODELS {
        for case in ATTENTION_CASES {
            for dtype in DType::ALL {
                let Some((q, k, v, truth)) = golden(model, case, dtype) else { continue };
                check_prefill(gpu, &q, &k, &v, &truth, &format!("golden {model} {case}"));
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 5 * 3 + 6 * 3, "every attention golden ran");
}

fn goldens_decode_from_the_cache(gpu: &Gpu) {
    for model in MODELS {
        for case in ATTENTION_CASES {
            for dtype in DType::ALL {
                let Some((q, k, v, truth)) = golden(model, case, dtype) else { continue };
                if q.dims()[0] != 1 {
                    continue;
                }
                let context = k.dims()[0];
                // Slot 1 of 3, capacity past the context; everything outside the sequence is NaN.
                let (kc, vc) = cache_with(&k, &v, 3, 1, context + 13, f32::NAN);
                let scale = tolerance_scale(&q, &k, &v, false);
                for chunk in [64, DEFAULT_DECODE_CHUNK] {
                    let what = format!("golden decode {model} {case} {dtype} chunk {chunk}");
                    let ours = run_decode(gpu, &q, &kc, &vc, &[1], &[context as i32], chunk, &what);
                    let c = compare_scaled(&ours, &truth, table::attention(dtype), Some(&scale));
                    assert!(c.passed(), "{what}: {c}");
                }
            }
        }
    }
}

/// VibeThinker's layer 0 in f16: PyTorch's eager attention gives inf/NaN (asserted from the golden
/// itself); ours is finite and within tolerance of the float64 truth on every path.
/// The tensor-core prefill splits each softmax weight p into 16-bit terms (3 in bf16, 2 in f16)
/// so P V keeps the FP32 contract. With v rows of +1 and -1 the output is a small difference of
/// large sums, so the error a single 16-bit rounding of p would leave (u_T p per key, 2^-9 in
/// bf16) is hundreds of times the FP32 tolerance, while the split terms stay within it. Keys
/// differ only slightly (|logit| < 0.3), so no weight is a round 16-bit number.
///
/// That comparison cannot see the difference between 2 and 3 bf16 terms (2^-16 p against 2^-24 p
/// per key): outputs of size 0.1 are rounded to bf16 (2^-9 relative), which hides anything below
/// about 2^-12 absolute. So a second part ([`equal_weights_in_two_tiles`]) makes the exact output
/// 0, where the bf16 rounding of the kernel's FP32 result hides nothing, and derives the kernel's
/// own bound for it.
fn tensor_core_weights_keep_fp32_accuracy_under_cancellation(gpu: &Gpu) {
    let mut r = rng(57);
    let (heads, kv_heads, dim) = (2, 1, 64);
    for dtype in [DType::BF16, DType::F16] {
        for context in [2, 16, 100] {
            let mut q = vec![0.0f32; context * heads * dim];
            let mut k = vec![0.0f32; context * kv_heads * dim];
            let mut v = vec![0.0f32; context * kv_heads * dim];
            for t in 0..context {
                for h in 0..heads {
                    q[(t * heads + h) * dim] = 1.0;
                }
                k[t * dim] = dtype.round(r.gen_range(-2.4f32..2.4));
                for d in 0..dim {
                    v[t * dim + d] = if (t + d) % 2 == 0 { 1.0 } else { -1.0 };
                }
            }
            let q = HostTensor::from_f32(dtype, &[context, heads, dim], q).unwrap();
            let k = HostTensor::from_f32(dtype, &[context, kv_heads, dim], k).unwrap();
            let v = HostTensor::from_f32(dtype, &[context, kv_heads, dim], v).unwrap();
            let expected = reference(&q, &k, &v).unwrap();
            let what = format!("cancellation S {context}");
            let ours = run_prefill(gpu, &q, &k, &v, PrefillPath::TensorCore, &what);
            let c = compare_scaled(&ours, &expected, table::attention(dtype), Some(&tolerance_scale(&q, &k, &v, true)));
            assert!(c.passed(), "prefill mismatch: {what} {dtype} TensorCore: {c}");
        }
    }
    equal_weights_in_two_tiles(gpu);
}

/// bf16, D 64, one kv head, 8 query heads, 72 tokens of a 72-token context. Query head h is the
/// unit vector e_h, so its logit for key s is k_sh / 8, exact (bf16 k times 1.0, one nonzero
/// product in the mma, times 2^-3). For each head: key A (position 0) and key B (position 64, the
/// second 64-key tile) have the same logit x; key C (position 1) has the first tile's largest
/// logit c > x; keys 65..71 have increasing logits m_65 < .. < m_71, all above c; the other keys
/// have logit -8. v is +1 in every column for A, -1 for B and 0 for every other key. For rows
/// t >= 65 (the largest visible logit is m = m_t), the exact output is (e^(x-m) - e^(x-m)) / l = 0
/// in every column (the reference computes exactly 0), but the kernel reaches it by two different
/// roads: A's weight e^(x-c) is split into bf16 terms in the first tile and then rescaled by
/// alpha = e^(c-m); B's weight e^(x-m) is split in the second. With p = e^(x-m) and u32 = 2^-24
/// (every other key multiplies v = 0: exact zeros in the mma, nothing added), |o| is at most, in
/// units of u32 p / l:
///   - 12: three expf that do not cancel (A's in tile 1, alpha, B's in tile 2); CUDA's expf errs
///     by up to 2 ulp = 4 u32 of its result;
///   - 2: the three-term split leaves at most 2^-24 of each weight (1 each for A and B);
///   - 4: tile 1 accumulates A's three terms in two mma additions; on a GPU the mma's FP32
///     accumulation truncates (up to 1 ulp = 2 u32 each, not the 1 u32 of round to nearest);
///   - 1: acc * alpha (a rounded FP32 multiply);
///   - 2.1: in tile 2, acc - B's first term (exact in round to nearest: both within a factor 2 of
///     p; not assumed of the mma's aligned and truncated sum: up to 1 ulp = 2 u32), then two
///     truncated additions of terms below 2^-7 p (2 * 2 * 2^-7 = 0.03);
///   - the row sum l errs by (S + 8) u32 relative and the output's rounding to bf16 by 2^-8 of
///     itself: factors (1 + 2^-13) and (1 + 2^-8) on the 21.1 above.
///
/// So |o| <= 22 u32 p / l. Two bf16 terms would leave up to 2^-16 of each weight instead of 2^-24
/// (256 u32 p each, A's and B's residuals unrelated), far outside it.
fn equal_weights_in_two_tiles(gpu: &Gpu) {
    const BOUND_IN_U32_P_OVER_L: f64 = 22.0;
    let dtype = DType::BF16;
    let (tokens, heads, dim) = (72usize, 8usize, 64usize);
    let (a, b, c, m0) = (0usize, 64usize, 1usize, 65usize);
    let mut r = rng(58);
    // Logits times 8 (the k values): x in [-12, -4], c in x + [0.5, 4], then steps of [0.25, 2];
    // bf16 has a spacing of at most 2^-4 below 16, so the order survives the rounding (asserted).
    let mut logit8 = vec![vec![-64.0f32; heads]; tokens];
    for h in 0..heads {
        let x = dtype.round(r.gen_range(-12.0f32..-4.0));
        logit8[a][h] = x;
        logit8[b][h] = x;
        let mut up = dtype.round(x + r.gen_range(0.5f32..4.0));
        logit8[c][h] = up;
        for row in logit8.iter_mut().skip(m0) {
            let next = dtype.round(up + r.gen_range(0.25f32..2.0));
            assert!(next > up && up > x);
            row[h] = next;
            up = next;
        }
    }
    let mut q = vec![0.0f32; tokens * heads * dim];
    let mut k = vec![0.0f32; tokens * dim];
    let mut v = vec![0.0f32; tokens * dim];
    for t in 0..tokens {
        for h in 0..heads {
            q[(t * heads + h) * dim + h] = 1.0;
            k[t * dim + h] = logit8[t][h];
        }
    }
    v[a * dim..(a + 1) * dim].fill(1.0);
    v[b * dim..(b + 1) * dim].fill(-1.0);
    let q = HostTensor::from_f32(dtype, &[tokens, heads, dim], q).unwrap();
    let k = HostTensor::from_f32(dtype, &[tokens, 1, dim], k).unwrap();
    let v = HostTensor::from_f32(dtype, &[tokens, 1, dim], v).unwrap();
    let expected = reference(&q, &k, &v).unwrap();
    let ours = run_prefill(gpu, &q, &k, &v, PrefillPath::TensorCore, "equal weights in two tiles");
    // Every element against the general tolerance.
    let c_all = compare_scaled(&ours, &expected, table::attention(dtype), Some(&tolerance_scale(&q, &k, &v, true)));
    assert!(c_all.passed(), "prefill mismatch: equal weights in two tiles (general tolerance): {c_all}");
    // Rows that see a key above c in the second tile: exact output 0, bound 22 u32 p / l.
    let rows = m0..tokens;
    let mut scale = Vec::new();
    let (mut ours_rows, mut expected_rows) = (Vec::new(), Vec::new());
    for t in rows.clone() {
        let seen = &logit8[..=t];
        for (h, &x8) in logit8[a].iter().enumerate() {
            let m = seen.iter().map(|row| row[h]).fold(f32::NEG_INFINITY, f32::max) as f64 / 8.0;
            let l: f64 = seen.iter().map(|row| (row[h] as f64 / 8.0 - m).exp()).sum();
            let p = (x8 as f64 / 8.0 - m).exp();
            for d in 0..dim {
                let i = (t * heads + h) * dim + d;
                assert_eq!(expected[i], 0.0, "the reference's output at row {t}, head {h}");
                scale.push((BOUND_IN_U32_P_OVER_L * p / l) as f32);
                ours_rows.push(ours[i]);
                expected_rows.push(expected[i]);
            }
        }
    }
    let c = compare_scaled(&ours_rows, &expected_rows, table::attention(dtype), Some(&scale));
    println!("equal weights in two tiles: largest |o| is {:.3} of the bound {BOUND_IN_U32_P_OVER_L} u32 p / l", c.max_tolerance_used);
    assert!(c.passed(), "prefill mismatch: equal weights in two tiles: rows {rows:?}: {c}");
}

fn stress_layer_f16_is_finite_where_eager_overflows(gpu: &Gpu) {
    let f = GoldenFile::open("vibethinker-1.5b", "ops").unwrap();
    let eager = f.tensor("attention.stress8.f16.o.torch").unwrap().values;
    assert!(eager.iter().all(|x| !x.is_finite()), "the golden records eager FP16 overflow");
    let (q, k, v, truth) = golden("vibethinker-1.5b", "stress8", DType::F16).unwrap();
    for (path, tensor_core) in paths(DType::F16) {
        let ours = run_prefill(gpu, &q, &k, &v, path, "stress8");
        assert!(ours.iter().all(|x| x.is_finite()), "stress8 f16 {path:?}: non-finite output");
        let c = compare_scaled(&ours, &truth, table::attention(DType::F16), Some(&tolerance_scale(&q, &k, &v, tensor_core)));
        assert!(c.passed(), "stress8 f16 {path:?}: {c}");
    }
}

/// Every decode step of the decode300 golden's sequence, as 300 rows of one launch (all in slot 0,
/// lens 1..=300, the golden's last query for each), against the CPU reference on each prefix.
fn decode_every_step_of_a_300_token_golden_in_one_launch(gpu: &Gpu) {
    for model in MODELS {
        for dtype in DType::ALL {
            let (q, k, v, _) = golden(model, "decode300", dtype).unwrap();
            let (heads, dim) = (q.dims()[1], q.dims()[2]);
            let steps = k.dims()[0];
            let (kc, vc) = cache_with(&k, &v, 1, 0, steps, f32::NAN);
            let qs = HostTensor::from_f32(dtype, &[steps, heads, dim], q.data().repeat(steps)).unwrap();
            let lens: Vec<i32> = (1..=steps as i32).collect();
            for chunk in [64, DEFAULT_DECODE_CHUNK] {
                let what = format!("{model} {dtype} decode steps chunk {chunk}");
                let ours = run_decode(gpu, &qs, &kc, &vc, &vec![0; steps], &lens, chunk, &what);
                for (b, &len) in lens.iter().enumerate() {
                    let len = len as usize;
                    let (kp, vp) = (prefix(&k, len), prefix(&v, len));
                    let expected = reference(&q, &kp, &vp).unwrap();
                    let scale = error_scale(&q, &kp, &vp).unwrap();
                    let row = &ours[b * heads * dim..(b + 1) * heads * dim];
                    let c = compare_scaled(row, &expected, table::attention(dtype), Some(&scale));
                    assert!(c.passed(), "{what} step {len}: {c}");
                }
            }
        }
    }
}

/// Random sequences of very different lengths in permuted slots, one launch, both models' head
/// configs; every cache position past a sequence's length is NaN.
#[allow(clippy::too_many_arguments)]
fn check_decode_batch(gpu: &Gpu, seed: u64, dtype: DType, heads: usize, kv_heads: usize, dim: usize, lens: &[usize], chunk: usize) {
    let mut r = rng(seed);
    let batch = lens.len();
    let slots = batch + 2;
    let capacity = lens.iter().copied().max().unwrap() + 5;
    let q = uniform(&mut r, dtype, &[batch, heads, dim], -2.0, 2.0);
    let mut kc = vec![f32::NAN; slots * kv_heads * capacity * dim];
    let mut vc = kc.clone();
    let mut seqs = Vec::new();
    let mut slot_of = Vec::new();
    for (b, &len) in lens.iter().enumerate() {
        let slot = (b * 7 + 3) % slots; // a permutation (7 is coprime with slots unless slots % 7 == 0)
        let slot = if slot_of.contains(&slot) { (0..slots).find(|s| !slot_of.contains(s)).unwrap() } else { slot };
        slot_of.push(slot);
        let k = uniform(&mut r, dtype, &[len, kv_heads, dim], -2.0, 2.0);
        let v = uniform(&mut r, dtype, &[len, kv_heads, dim], -3.0, 3.0);
        for s in 0..len {
            for h in 0..kv_heads {
                let src = (s * kv_heads + h) * dim;
                let dst = ((slot * kv_heads + h) * capacity + s) * dim;
                kc[dst..dst + dim].copy_from_slice(&k.data()[src..src + dim]);
                vc[dst..dst + dim].copy_from_slice(&v.data()[src..src + dim]);
            }
        }
        seqs.push((k, v));
    }
    let dims = [slots, kv_heads, capacity, dim];
    let (kc, vc) = (HostTensor::from_f32(dtype, &dims, kc).unwrap(), HostTensor::from_f32(dtype, &dims, vc).unwrap());
    let slots_i: Vec<i32> = slot_of.iter().map(|&s| s as i32).collect();
    let lens_i: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
    let what = format!("decode {dtype} heads {heads}/{kv_heads} D {dim} lens {lens:?} chunk {chunk}");
    let ours = run_decode(gpu, &q, &kc, &vc, &slots_i, &lens_i, chunk, &what);
    for (b, (k, v)) in seqs.iter().enumerate() {
        let qb = q_row(&q, b);
        let expected = reference(&qb, k, v).unwrap();
        let scale = error_scale(&qb, k, v).unwrap();
        let row = &ours[b * heads * dim..(b + 1) * heads * dim];
        let c = compare_scaled(row, &expected, table::attention(dtype), Some(&scale));
        assert!(c.passed(), "{what} row {b}: {c}");
    }
}

fn decode_many_sequences_of_different_lengths(gpu: &Gpu) {
    let lens = [1, 2, 63, 64, 65, 300, 1000, 7, 256, 257, 513];
    for dtype in DType::ALL {
        for (heads, kv_heads, dim) in [(14, 2, 64), (12, 2, 128), (4, 4, 64), (18, 2, 128)] {
            for chunk in [64, DEFAULT_DECODE_CHUNK, 1024] {
                check_decode_batch(gpu, 11, dtype, heads, kv_heads, dim, &lens, chunk);
            }
        }
    }
}

/// Rows with a slot or len outside the cache get NaN; the valid rows of the same launch are right.
fn decode_invalid_slot_or_len_gives_nan_rows_only(gpu: &Gpu) {
    let mut r = rng(12);
    let (heads, kv_heads, dim, capacity) = (14, 2, 64, 200);
    for dtype in DType::ALL {
        let k = uniform(&mut r, dtype, &[150, kv_heads, dim], -2.0, 2.0);
        let v = uniform(&mut r, dtype, &[150, kv_heads, dim], -2.0, 2.0);
        let (kc, vc) = cache_with(&k, &v, 2, 0, capacity, 1.0);
        let q = uniform(&mut r, dtype, &[7, heads, dim], -2.0, 2.0);
        // valid, slot -1, slot 2 (== slots), len 0, len -5, len capacity + 1, valid
        let slots = [0, -1, 2, 0, 0, 0, 0];
        let lens = [150, 10, 10, 0, -5, capacity as i32 + 1, 149];
        let ours = run_decode(gpu, &q, &kc, &vc, &slots, &lens, 64, &format!("invalid {dtype}"));
        let row = heads * dim;
        for b in 1..6 {
            assert!(ours[b * row..(b + 1) * row].iter().all(|x| x.is_nan()), "{dtype} row {b} must be NaN");
        }
        for (b, len) in [(0, 150), (6, 149)] {
            let qb = q_row(&q, b);
            let (kp, vp) = (prefix(&k, len), prefix(&v, len));
            let expected = reference(&qb, &kp, &vp).unwrap();
            let c = compare_scaled(&ours[b * row..(b + 1) * row], &expected, table::attention(dtype), Some(&error_scale(&qb, &kp, &vp).unwrap()));
            assert!(c.passed(), "{dtype} valid row {b}: {c}");
        }
    }
}

/// Keys past a query's position carry huge values: rows before the poisoned key are bit-identical
/// to the unpoisoned run (a missing or shifted causal mask changes them by orders of magnitude),
/// and the whole output still matches the reference.
fn future_keys_poisoned_do_not_reach_earlier_queries(gpu: &Gpu) {
    let mut r = rng(13);
    for dtype in DType::ALL {
        for (heads, kv_heads, dim) in [(14, 2, 64), (12, 2, 128)] {
            let (tokens, context) = (150, 170);
            let q = uniform(&mut r, dtype, &[tokens, heads, dim], -1.0, 1.0);
            let k = uniform(&mut r, dtype, &[context, kv_heads, dim], -1.0, 1.0);
            let v = uniform(&mut r, dtype, &[context, kv_heads, dim], -1.0, 1.0);
            let huge = if dtype == DType::F16 { 3.0e4 } else { 1.0e30 };
            for (path, _) in paths(dtype) {
                let clean = run_prefill(gpu, &q, &k, &v, path, "clean");
                for m in [1, 63, 64, 65, 127, 149] {
                    // Key at the position of query m: only queries m.. may see it.
                    let key = context - tokens + m;
                    let row = kv_heads * dim;
                    let (mut kp, mut vp) = (k.data().to_vec(), v.data().to_vec());
                    // k = 0: logit 0, a weight near 1 / S for every query that sees it; v huge.
                    for i in 0..row {
                        kp[key * row + i] = 0.0;
                        vp[key * row + i] = huge;
                    }
                    let kp = HostTensor::from_f32(dtype, k.dims(), kp).unwrap();
                    let vp = HostTensor::from_f32(dtype, v.dims(), vp).unwrap();
                    let what = format!("{dtype} D {dim} {path:?} poisoned key {key}");
                    let ours = run_prefill(gpu, &q, &kp, &vp, path, &what);
                    let n = m * heads * dim;
                    assert!(
                        ours[..n].iter().zip(&clean[..n]).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: a query before position {key} changed"
                    );
                    assert!(ours[n..].iter().zip(&clean[n..]).any(|(a, b)| a != b), "{what}: the poisoned key was never seen");
                }
            }
        }
    }
}

/// A prompt's last rows computed as a chunk (T' < T new tokens after the others as cache) are
/// bit-identical to the same rows of the full prefill: each row's key loop and reduction order
/// depend only on its own position.
fn prefill_rows_are_chunk_invariant(gpu: &Gpu) {
    let mut r = rng(14);
    for dtype in DType::ALL {
        for (heads, kv_heads, dim) in [(14, 2, 64), (12, 2, 128)] {
            let (tokens, chunk) = (200, 37);
            let q = uniform(&mut r, dtype, &[tokens, heads, dim], -2.0, 2.0);
            let k = uniform(&mut r, dtype, &[tokens, kv_heads, dim], -2.0, 2.0);
            let v = uniform(&mut r, dtype, &[tokens, kv_heads, dim], -2.0, 2.0);
            let row = heads * dim;
            let q_tail = HostTensor::from_f32(dtype, &[chunk, heads, dim], q.data()[(tokens - chunk) * row..].to_vec()).unwrap();
            for (path, _) in paths(dtype) {
                let full = run_prefill(gpu, &q, &k, &v, path, "full");
                let tail = run_prefill(gpu, &q_tail, &k, &v, path, "tail");
                assert!(
                    tail.iter().zip(&full[(tokens - chunk) * row..]).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{dtype} D {dim} {path:?}: chunked rows differ from the full prefill"
                );
            }
        }
    }
}

/// The SIMT prefill's row t and a decode of the same query with len = its position + 1 and one
/// split run the same arithmetic in the same order: bit-identical.
fn simt_prefill_row_equals_decode_bitwise(gpu: &Gpu) {
    let mut r = rng(15);
    for dtype in DType::ALL {
        for (heads, kv_heads, dim) in [(14, 2, 64), (12, 2, 128)] {
            let (tokens, context) = (40, 300);
            let q = uniform(&mut r, dtype, &[tokens, heads, dim], -2.0, 2.0);
            let k = uniform(&mut r, dtype, &[context, kv_heads, dim], -2.0, 2.0);
            let v = uniform(&mut r, dtype, &[context, kv_heads, dim], -2.0, 2.0);
            let path = if dtype == DType::F32 { PrefillPath::Auto } else { PrefillPath::Simt };
            let pre = run_prefill(gpu, &q, &k, &v, path, "prefill");
            let (kc, vc) = cache_with(&k, &v, 1, 0, context, f32::NAN);
            let lens: Vec<i32> = (0..tokens).map(|t| (context - tokens + t + 1) as i32).collect();
            let dec = run_decode(gpu, &q, &kc, &vc, &vec![0; tokens], &lens, 1024, "decode");
            assert!(pre.iter().zip(&dec).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype} D {dim}: prefill row != decode");
        }
    }
}

/// One sequence decoded alone and inside a batch of others: bit-identical, at two chunk sizes.
/// (Different chunk sizes are different split structures: each is compared with the reference in
/// decode_many_sequences_of_different_lengths.)
fn decode_is_batch_invariant(gpu: &Gpu) {
    let mut r = rng(16);
    for dtype in DType::ALL {
        let (heads, kv_heads, dim) = (12, 2, 128);
        let lens = [700usize, 5, 1000, 64, 333];
        let capacity = 1024;
        let slots = lens.len();
        let kc = uniform(&mut r, dtype, &[slots, kv_heads, capacity, dim], -2.0, 2.0);
        let vc = uniform(&mut r, dtype, &[slots, kv_heads, capacity, dim], -2.0, 2.0);
        let q = uniform(&mut r, dtype, &[lens.len(), heads, dim], -2.0, 2.0);
        let slots_i: Vec<i32> = (0..slots as i32).collect();
        let lens_i: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        for chunk in [64, 256] {
            let batch = run_decode(gpu, &q, &kc, &vc, &slots_i, &lens_i, chunk, "batch");
            let row = heads * dim;
            for b in [0, 2, 4] {
                let alone = run_decode(gpu, &q_row(&q, b), &kc, &vc, &[b as i32], &[lens_i[b]], chunk, "alone");
                assert!(
                    alone.iter().zip(&batch[b * row..(b + 1) * row]).all(|(a, x)| a.to_bits() == x.to_bits()),
                    "{dtype} chunk {chunk} row {b}: alone != in batch"
                );
            }
        }
    }
}

/// The query heads a decode block serves (`heads_per_block`: 1 spreads batch 1 over the SMs, the
/// whole group reads K/V once for it) change the launch's shape only: every head's output is
/// bit-identical for 1, 2, 3 and 8 heads a block, with groups of 7 and 6 (Qwen2.5-0.5B's and
/// VibeThinker-1.5B's, so head blocks end part-full), one split and several (the last split's
/// merge), and the policy's own choice at batch 1 and at a batch past the SM count.
fn decode_head_blocks_change_nothing(gpu: &Gpu) {
    let mut r = rng(23);
    for (dtype, heads, kv_heads, dim) in [(DType::BF16, 14, 2, 64), (DType::F32, 12, 2, 128), (DType::F16, 14, 2, 64)] {
        let lens = [1usize, 64, 65, 300];
        let capacity = 320;
        let slots = lens.len();
        let kc = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[slots, kv_heads, capacity, dim], -2.0, 2.0)).unwrap();
        let vc = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[slots, kv_heads, capacity, dim], -2.0, 2.0)).unwrap();
        let q = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[slots, heads, dim], -2.0, 2.0)).unwrap();
        let tables = device_i32(gpu, &(0..slots as i32).collect::<Vec<_>>());
        let lens_d = device_i32(gpu, &lens.iter().map(|&l| l as i32).collect::<Vec<_>>());
        let run = |per_block: Option<usize>| {
            let mut ws = DeviceTensor::zeros(gpu, DType::F32, &[decode_workspace_len(slots, heads, dim, capacity, 64)]).unwrap();
            let mut out = DeviceTensor::zeros(gpu, dtype, &[slots, heads, dim]).unwrap();
            let (t, l) = (tables.slice(..), lens_d.slice(..));
            let paged = PagedBatch { block_tables: &t, max_pages: 1, seq_lens: &l };
            let cache = slot_cache(&kc, &vc);
            match per_block {
                Some(h) => decode_with_heads_per_block(gpu, &q.view(), &cache, &paged, &mut ws.view_mut(), &mut out.view_mut(), 64, h).unwrap(),
                None => decode_with_chunk(gpu, &q.view(), &cache, &paged, &mut ws.view_mut(), &mut out.view_mut(), 64).unwrap(),
            }
            out.to_host(gpu).unwrap().into_data().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let whole = run(Some(HEADS_PER_BLOCK));
        for h in [1, 2, 3] {
            assert_eq!(run(Some(h)), whole, "{dtype} heads {heads}: {h} heads a block != {HEADS_PER_BLOCK}");
        }
        assert_eq!(run(None), whole, "{dtype} heads {heads}: the policy's choice");
    }
}

/// Contexts in the thousands (many tiles, many splits) on both paths.
fn long_context_prefill_and_decode(gpu: &Gpu) {
    let mut r = rng(17);
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let (heads, kv_heads, dim) = (14, 2, 64);
        let (tokens, context) = (70, 4000);
        let q = uniform(&mut r, dtype, &[tokens, heads, dim], -2.0, 2.0);
        let k = uniform(&mut r, dtype, &[context, kv_heads, dim], -2.0, 2.0);
        let v = uniform(&mut r, dtype, &[context, kv_heads, dim], -2.0, 2.0);
        let expected = reference(&q, &k, &v).unwrap();
        check_prefill(gpu, &q, &k, &v, &expected, "long");
        check_decode_batch(gpu, 18, dtype, 12, 2, 128, &[4096, 3001, 1], DEFAULT_DECODE_CHUNK);
    }
}

/// A decode step and a prefill captured in a CUDA graph (no allocation, no host synchronisation
/// inside them), replayed after the device lens changed: the replay reads the new lens and matches
/// direct calls bit for bit.
fn decode_and_prefill_replay_from_a_cuda_graph(gpu: &Gpu) {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let mut r = rng(19);
    let dtype = DType::BF16;
    let (heads, kv_heads, dim, capacity, batch) = (12, 2, 128, 700, 3);
    let kc = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[batch, kv_heads, capacity, dim], -2.0, 2.0)).unwrap();
    let vc = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[batch, kv_heads, capacity, dim], -2.0, 2.0)).unwrap();
    let q = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[batch, heads, dim], -2.0, 2.0)).unwrap();
    let qp = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[100, heads, dim], -2.0, 2.0)).unwrap();
    let kp = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[130, kv_heads, dim], -2.0, 2.0)).unwrap();
    let vp = DeviceTensor::from_host(gpu, &uniform(&mut r, dtype, &[130, kv_heads, dim], -2.0, 2.0)).unwrap();
    let slots = device_i32(gpu, &[2, 0, 1]);
    let mut lens = device_i32(gpu, &[5, 600, 300]);
    let mut ws = DeviceTensor::zeros(gpu, DType::F32, &[decode_workspace_len(batch, heads, dim, capacity, DEFAULT_DECODE_CHUNK)]).unwrap();
    let mut out = DeviceTensor::zeros(gpu, dtype, &[batch, heads, dim]).unwrap();
    let mut out_p = DeviceTensor::zeros(gpu, dtype, &[100, heads, dim]).unwrap();
    let step = |ws: &mut DeviceTensor, out: &mut DeviceTensor, out_p: &mut DeviceTensor, lens: &CudaSlice<i32>| {
        let (tables, lens) = (slots.slice(..), lens.slice(..));
        let paged = PagedBatch { block_tables: &tables, max_pages: 1, seq_lens: &lens };
        decode(gpu, &q.view(), &slot_cache(&kc, &vc), &paged, &mut ws.view_mut(), &mut out.view_mut()).unwrap();
        prefill(gpu, &qp.view(), &kp.view(), &vp.view(), &mut out_p.view_mut()).unwrap();
    };
    step(&mut ws, &mut out, &mut out_p, &lens); // loads the kernels
    gpu.synchronize().unwrap();

    let stream = gpu.stream();
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).unwrap();
    step(&mut ws, &mut out, &mut out_p, &lens);
    let graph = stream.end_capture(CUgraphInstantiate_flags(0)).unwrap().expect("a captured graph");

    let new_lens = [700, 1, 257];
    stream.memcpy_htod(&new_lens, &mut lens).unwrap();
    graph.launch().unwrap();
    gpu.synchronize().unwrap();
    let replayed = (out.to_host(gpu).unwrap().into_data(), out_p.to_host(gpu).unwrap().into_data());
    step(&mut ws, &mut out, &mut out_p, &lens);
    let direct = (out.to_host(gpu).unwrap().into_data(), out_p.to_host(gpu).unwrap().into_data());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&replayed.0), bits(&direct.0), "decode replay");
    assert_eq!(bits(&replayed.1), bits(&direct.1), "prefill replay");
    // and the replay used the new lens: row 1 (len 1) is its single value row, v[slot 0, :, 0, :]
    let v_host = vc.to_host(gpu).unwrap().into_data();
    let row1 = &replayed.0[heads * dim..2 * heads * dim];
    for h in 0..heads {
        let kvh = h / (heads / kv_heads);
        let v0 = &v_host[(kvh * capacity) * dim..(kvh * capacity + 1) * dim];
        assert_eq!(bits(&row1[h * dim..(h + 1) * dim]), bits(v0), "len 1: o = v_0 (head {h})");
    }
}

fn empty_prefill_is_a_no_op(gpu: &Gpu) {
    let z = |dims: &[usize]| DeviceTensor::zeros(gpu, DType::BF16, dims).unwrap();
    let (q, k, v) = (z(&[0, 14, 64]), z(&[5, 2, 64]), z(&[5, 2, 64]));
    let mut out = z(&[0, 14, 64]);
    prefill(gpu, &q.view(), &k.view(), &v.view(), &mut out.view_mut()).unwrap();
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let z = |dtype, dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).unwrap();
    let bf = DType::BF16;
    let (q, k, v) = (z(bf, &[4, 14, 64]), z(bf, &[9, 2, 64]), z(bf, &[9, 2, 64]));
    let mut out = z(bf, &[4, 14, 64]);
    // heads not divisible, head_dim 96, T > S, out shape, out dtype
    let e = prefill(gpu, &z(bf, &[4, 13, 64]).view(), &k.view(), &v.view(), &mut z(bf, &[4, 13, 64]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "attention", .. }), "{e}");
    let e = prefill(gpu, &z(bf, &[4, 14, 96]).view(), &z(bf, &[9, 2, 96]).view(), &z(bf, &[9, 2, 96]).view(), &mut z(bf, &[4, 14, 96]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::UnsupportedSize { .. }), "{e}");
    let e = prefill(gpu, &z(bf, &[10, 14, 64]).view(), &k.view(), &v.view(), &mut z(bf, &[10, 14, 64]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = prefill(gpu, &q.view(), &k.view(), &v.view(), &mut z(bf, &[4, 14, 65]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = prefill(gpu, &q.view(), &k.view(), &v.view(), &mut z(DType::F16, &[4, 14, 64]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = prefill_with_path(gpu, &z(DType::F32, &[4, 14, 64]).view(), &z(DType::F32, &[9, 2, 64]).view(), &z(DType::F32, &[9, 2, 64]).view(), &mut z(DType::F32, &[4, 14, 64]).view_mut(), PrefillPath::TensorCore).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    // an unaligned view: q rows of 1 x 8 bf16 (16 bytes) are aligned, of 1 x 4 (8 bytes) not
    let flat = z(bf, &[4 * 14 * 64 + 4]);
    let shifted = flat.view().reshape(&[4 * 14 * 64 + 4, 1]).unwrap().rows(4..4 + 4 * 14 * 64).unwrap().reshape(&[4, 14, 64]).unwrap();
    let e = prefill(gpu, &shifted, &k.view(), &v.view(), &mut out.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Alignment { .. }), "{e}");

    // decode
    let (kc, vc) = (z(bf, &[3, 2, 100, 64]), z(bf, &[3, 2, 100, 64]));
    let q1 = z(bf, &[2, 14, 64]);
    let mut o1 = z(bf, &[2, 14, 64]);
    let two = device_i32(gpu, &[0, 1]);
    let one = device_i32(gpu, &[0]);
    let need = decode_workspace_len(2, 14, 64, 100, DEFAULT_DECODE_CHUNK);
    let mut ws = z(DType::F32, &[need]);
    let (one, two) = (one.slice(..), two.slice(..));
    let batch = |tables, lens| PagedBatch { block_tables: tables, max_pages: 1, seq_lens: lens };
    let e = decode(gpu, &q1.view(), &slot_cache(&kc, &vc), &batch(&one, &two), &mut ws.view_mut(), &mut o1.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "attention_decode", .. }), "{e}");
    let mut small = z(DType::F32, &[need - 1]);
    let e = decode(gpu, &q1.view(), &slot_cache(&kc, &vc), &batch(&two, &two), &mut small.view_mut(), &mut o1.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("workspace"), "{e}");
    let (k128, v128) = (z(bf, &[3, 2, 100, 128]), z(bf, &[3, 2, 100, 128]));
    let e = decode(gpu, &q1.view(), &slot_cache(&k128, &v128), &batch(&two, &two), &mut ws.view_mut(), &mut o1.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = decode_with_chunk(gpu, &q1.view(), &slot_cache(&kc, &vc), &batch(&two, &two), &mut ws.view_mut(), &mut o1.view_mut(), 100).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    // and the good call works
    decode(gpu, &q1.view(), &slot_cache(&kc, &vc), &batch(&two, &two), &mut ws.view_mut(), &mut o1.view_mut()).unwrap();
}

const DIMS: [usize; 2] = [64, 128];
const GROUPS: [usize; 6] = [1, 2, 6, 7, 8, 9];

/// Any T <= S, heads/group, head_dim, dtype, path: kernel == reference within tolerance.
fn proptest_prefill_shapes(gpu: &Gpu) {
    let strategy = (1usize..150, 0usize..150, 1usize..3, 0usize..GROUPS.len(), 0usize..2, 0usize..3, -1i32..2, any::<u64>());
    let mut runner = TestRunner::new(ProptestConfig { cases: 40, ..ProptestConfig::default() });
    runner
        .run(&strategy, |(tokens, cached, kv_heads, group_i, dim_i, dtype_i, scale_exp, seed)| {
            let dtype = DType::ALL[dtype_i];
            let (dim, heads) = (DIMS[dim_i], kv_heads * GROUPS[group_i]);
            let context = tokens + cached;
            let s = 2f32.powi(scale_exp * 2);
            let mut r = rng(seed);
            let q = uniform(&mut r, dtype, &[tokens, heads, dim], -s, s);
            let k = uniform(&mut r, dtype, &[context, kv_heads, dim], -s, s);
            let v = uniform(&mut r, dtype, &[context, kv_heads, dim], -1.0, 1.0);
            let expected = reference(&q, &k, &v).unwrap();
            check_prefill(gpu, &q, &k, &v, &expected, &format!("proptest T {tokens} S {context} heads {heads}/{kv_heads} D {dim}"));
            Ok(())
        })
        .unwrap();
}

fn proptest_decode_shapes(gpu: &Gpu) {
    let strategy = (prop::collection::vec(1usize..700, 1..9), 1usize..3, 0usize..GROUPS.len(), 0usize..2, 0usize..3, 1usize..5, any::<u64>());
    let mut runner = TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    runner
        .run(&strategy, |(lens, kv_heads, group_i, dim_i, dtype_i, chunk_tiles, seed)| {
            let heads = kv_heads * GROUPS[group_i];
            check_decode_batch(gpu, seed, DType::ALL[dtype_i], heads, kv_heads, DIMS[dim_i], &lens, chunk_tiles * 64);
            Ok(())
        })
        .unwrap();
}
