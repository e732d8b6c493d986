//! RoPE and RoPE + KV-cache write against the CPU reference and the PyTorch goldens, device-side
//! position checks, and cos/sin accuracy at every position up to 32k (run by tests/gpu/main.rs).

use crate::common::{rng, uniform, DTYPES, GUARD};
use crate::support::Guarded;
use crate::GpuTest;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qwen_kernels::check::in_range;
use qwen_kernels::golden::metrics::{compare_scaled, Tolerance};
use qwen_kernels::golden::tolerance::table;
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::ops::kv_cache::{KvCacheDims, KvCacheViewMut, KvLayout};
use qwen_kernels::ops::rope::{rope, rope_kv, RopeTable};
use qwen_kernels::reference::rope::{self as reference, error_scale};
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};
use cudarc::driver::CudaSlice;
use rand::Rng;

pub const TESTS: &[GpuTest] = &[
    ("rope::random_inputs_model_and_odd_shapes", random_inputs_model_and_odd_shapes),
    ("rope::goldens_both_models", goldens_both_models),
    ("rope::cos_sin_accurate_at_every_position_to_32k", cos_sin_accurate_at_every_position_to_32k),
    ("rope::tokens_are_batch_invariant", tokens_are_batch_invariant),
    ("rope::kv_write_lands_at_slot_and_position_only", kv_write_lands_at_slot_and_position_only),
    ("rope::bad_positions_and_slots_are_skipped_and_reported", bad_positions_and_slots_are_skipped_and_reported),
    ("rope::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
    ("rope::proptest_shapes", proptest_shapes),
    ("rope::qkv_rows_equal_separate_tensors", qkv_rows_equal_separate_tensors),
];

/// rope_qkv, reading q, k and v from the rows of the merged projection's output, gives the rotated
/// q, k cache and v cache of rope_kv on the same values as separate tensors, bit for bit, at both
/// models' head configurations and every dtype; qkv itself is left as it was; shapes that do not
/// add up are refused.
fn qkv_rows_equal_separate_tensors(gpu: &Gpu) {
    use qwen_kernels::ops::rope::rope_qkv;
    let mut r = rng(71);
    for (heads, kv, d, theta) in [(14usize, 2usize, 64usize, 1.0e6f32), (12, 2, 128, 1.0e4)] {
        for dtype in DTYPES {
            let t = 5;
            let (qw, kw) = (heads * d, kv * d);
            let qkv = uniform(&mut r, dtype, &[t, qw + 2 * kw], -4.0, 4.0);
            let part = |lo: usize, w: usize, dims: &[usize]| {
                let v: Vec<f32> = (0..t).flat_map(|row| qkv.data()[row * (qw + 2 * kw) + lo..][..w].to_vec()).collect();
                HostTensor::from_f32(dtype, dims, v).unwrap()
            };
            let (q, k, v) = (part(0, qw, &[t, heads, d]), part(qw, kw, &[t, kv, d]), part(qw + kw, kw, &[t, kv, d]));
            let positions = gpu.stream().clone_htod(&[0i32, 7, 300, 31, 2]).unwrap();
            // Pages of 512 positions: token t at page [1, 0, 1, 2, 0][t], offset its position; the
            // last token is padding (slot -1: q rotated, nothing written).
            let slots = gpu.stream().clone_htod(&[512i32, 7, 512 + 300, 2 * 512 + 31, -1]).unwrap();
            let cache = |_: ()| DeviceTensor::zeros(gpu, dtype, &[3, kv, 512, d]).unwrap();
            let mut table = RopeTable::new(gpu, theta, d, 4096).unwrap();

            let mut dq = DeviceTensor::from_host(gpu, &q).unwrap();
            let (dk, dv) = (DeviceTensor::from_host(gpu, &k).unwrap(), DeviceTensor::from_host(gpu, &v).unwrap());
            let (mut kc, mut vc) = (cache(()), cache(()));
            let mut paged = KvCacheViewMut { k: kc.view_mut(), v: vc.view_mut(), layout: KvLayout::Hnd };
            rope_kv(gpu, &mut table, &mut dq.view_mut(), &dk.view(), &dv.view(), &positions.slice(..), &slots.slice(..), &mut paged).unwrap();

            let dqkv = DeviceTensor::from_host(gpu, &qkv).unwrap();
            let mut q_out = DeviceTensor::zeros(gpu, dtype, &[t, heads, d]).unwrap();
            let (mut kc2, mut vc2) = (cache(()), cache(()));
            let mut paged = KvCacheViewMut { k: kc2.view_mut(), v: vc2.view_mut(), layout: KvLayout::Hnd };
            rope_qkv(gpu, &mut table, &dqkv.view(), kv, &positions.slice(..), &slots.slice(..), &mut q_out.view_mut(), &mut paged).unwrap();
            table.check_status(gpu).unwrap();

            let bits = |x: &DeviceTensor| x.to_host(gpu).unwrap().data().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert!(bits(&q_out) == bits(&dq), "{dtype} d{d}: rotated q");
            assert!(bits(&kc2) == bits(&kc), "{dtype} d{d}: k cache");
            assert!(bits(&vc2) == bits(&vc), "{dtype} d{d}: v cache");
            assert_eq!(dqkv.to_host(gpu).unwrap(), qkv, "{dtype} d{d}: qkv changed");

            let wrong = DeviceTensor::zeros(gpu, dtype, &[t, qw + kw]).unwrap();
            let mut paged = KvCacheViewMut { k: kc2.view_mut(), v: vc2.view_mut(), layout: KvLayout::Hnd };
            let e = rope_qkv(gpu, &mut table, &wrong.view(), kv, &positions.slice(..), &slots.slice(..), &mut q_out.view_mut(), &mut paged);
            assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
        }
    }
}

/// Kernel against `reference::rope`, per element with scale |x_i| + |x_partner|
/// (`compare_scaled`). Both use the same inv_freq table and the same FP32 angle; cos and sin differ
/// only by the libraries: CUDA's sincosf is within 2 ulp, the host's cosf/sinf within 1, so by at
/// most 3 ulp of a value <= 1: 3 * 2^-24 absolute. In f32 storage that moves out_i by 3 * 2^-24
/// times the scale, and each of the three roundings (two products, the sum) may then round to the
/// neighbouring value, one ulp, <= 2 u32 of the scale each: atol = 9 * 2^-24. In 16-bit storage
/// cos and sin are rounded to T, and a 3-ulp FP32 difference can flip that rounding: one ulp of T
/// at a value < 1, <= eps_T / 2; the two products and the sum may each land one ulp of T apart,
/// <= eps_T of the scale each: atol = 3.5 eps_T + 9 * 2^-24. rtol = 0 (all of it is scaled).
fn vs_reference(dtype: DType) -> Tolerance {
    let fp32 = 9.0 * 2f32.powi(-24);
    let atol = match dtype {
        DType::F32 => fp32,
        _ => 3.5 * dtype.epsilon() + fp32,
    };
    Tolerance { atol, rtol: 0.0 }
}

fn device_i32(gpu: &Gpu, values: &[i32]) -> CudaSlice<i32> {
    gpu.stream().clone_htod(values).unwrap()
}

/// Rotate q and k on the GPU (guarded, in place); returns (q, k) read back.
fn run_rope(gpu: &Gpu, table: &mut RopeTable, q: &HostTensor, k: &HostTensor, positions: &[i32]) -> (Vec<f32>, Vec<f32>) {
    let (mut dq, mut dk) = (Guarded::from_host(gpu, q), Guarded::from_host(gpu, k));
    let pos = device_i32(gpu, positions);
    dq.with_mut(|vq| dk.with_mut(|vk| rope(gpu, table, vq, vk, &pos.slice(..)).unwrap()));
    table.check_status(gpu).unwrap();
    (dq.inner(gpu, "q"), dk.inner(gpu, "k"))
}

fn check_case(gpu: &Gpu, table: &mut RopeTable, q: &HostTensor, k: &HostTensor, positions: &[i32], what: &str) {
    let (gq, gk) = run_rope(gpu, table, q, k, positions);
    let tol = vs_reference(q.dtype());
    for (name, x, got) in [("q", q, gq), ("k", k, gk)] {
        let expected = reference::rope(x, positions, table.theta(), table.max_positions()).unwrap();
        let c = compare_scaled(&got, expected.data(), tol, Some(&error_scale(x)));
        assert!(c.passed(), "rope {name} {what} {} {:?}: {c}", x.dtype(), x.dims());
    }
}

fn random_inputs_model_and_odd_shapes(gpu: &Gpu) {
    let mut r = rng(41);
    // (heads, kv_heads, head_dim, theta, max_positions): both models, then GQA 1, 6, 7 and odd dims.
    let shapes = [
        (14, 2, 64, 1.0e6, 32768),
        (12, 2, 128, 1.0e4, 4096),
        (4, 4, 32, 1.0e4, 100),
        (6, 1, 2, 1.0e4, 7),
        (7, 1, 96, 5.0e5, 2048),
        (2, 2, 256, 1.0e4, 8192),
    ];
    for (heads, kv_heads, d, theta, max) in shapes {
        let mut table = RopeTable::new(gpu, theta, d, max).unwrap();
        for dtype in DTYPES {
            for tokens in [1, 5, 64] {
                let mut positions: Vec<i32> = (0..tokens).map(|_| r.gen_range(0..max as i32)).collect();
                positions[0] = max as i32 - 1;
                let q = uniform(&mut r, dtype, &[tokens, heads, d], -8.0, 8.0);
                let k = uniform(&mut r, dtype, &[tokens, kv_heads, d], -8.0, 8.0);
                check_case(gpu, &mut table, &q, &k, &positions, "random");
            }
        }
    }
}

/// The kernel against PyTorch's float64 truth (positions include 15962 and each model's last), with
/// check's tolerance table; prints the largest error at the largest position.
fn goldens_both_models(gpu: &Gpu) {
    for cfg in Qwen2Config::presets() {
        let file = GoldenFile::open(cfg.name, "ops").unwrap();
        let positions: Vec<i32> = file.tensor("rope.positions").unwrap().values.iter().map(|&p| p as i32).collect();
        let mut table = RopeTable::new(gpu, cfg.rope_theta, cfg.head_dim, cfg.max_position_embeddings).unwrap();
        for dtype in DTYPES {
            let name = |t: &str| format!("rope.{dtype}.{t}");
            let (q, k) = (file.host(&name("q")).unwrap(), file.host(&name("k")).unwrap());
            let (gq, gk) = run_rope(gpu, &mut table, &q, &k, &positions);
            for (which, x, got) in [("q", &q, gq), ("k", &k, gk)] {
                let truth = in_range(dtype, file.tensor(&name(&format!("{which}_embed.truth"))).unwrap().values);
                let c = compare_scaled(&got, &truth, table::rope(dtype), Some(&error_scale(x)));
                let per_token = got.len() / positions.len();
                let (last, &p_max) = positions.iter().enumerate().max_by_key(|(_, &p)| p).unwrap();
                let err_at_max = (last * per_token..(last + 1) * per_token).map(|i| (got[i] as f64 - truth[i]).abs()).fold(0f64, f64::max);
                println!("    rope golden {} {dtype} {which}: {c}; max |err| at position {p_max}: {err_at_max:.3e}", cfg.name);
                assert!(c.passed(), "rope golden {} {dtype} {which}: {c}", cfg.name);
            }
        }
    }
}

/// In f32 storage, rotating the unit pair (1, 0) returns (cos, sin) of the FP32 angle exactly as the
/// kernel computed them. Against cos/sin of that same angle in f64, every value at every position
/// 0..32768 (Qwen2.5's range, theta 1e6, head_dim 64; angles up to 3.3e4 rad) is within CUDA's
/// documented 2 ulp: the large-argument range reduction is exact, no fast-math path is taken.
fn cos_sin_accurate_at_every_position_to_32k(gpu: &Gpu) {
    let (d, max, theta) = (64usize, 32768usize, 1.0e6f32);
    let half = d / 2;
    let mut table = RopeTable::new(gpu, theta, d, max).unwrap();
    let inv_freq = reference::inv_freq(theta, d);
    let positions: Vec<i32> = (0..max as i32).collect();
    let mut unit = vec![0f32; max * d];
    for t in 0..max {
        unit[t * d..t * d + half].fill(1.0);
    }
    let q = HostTensor::from_f32(DType::F32, &[max, 1, d], unit.clone()).unwrap();
    let k = HostTensor::from_f32(DType::F32, &[max, 1, d], unit).unwrap();
    let (got, _) = run_rope(gpu, &mut table, &q, &k, &positions);
    let ulp = |v: f64| if v == 0.0 { f64::from(f32::from_bits(1)) } else { 2f64.powi(v.abs().log2().floor() as i32 - 23) };
    let mut worst = (0f64, 0usize);
    for t in 0..max {
        for i in 0..half {
            let angle = (t as f32 * inv_freq[i]) as f64; // the FP32 product, as the kernel forms it
            for (got, exact) in [(got[t * d + i], angle.cos()), (got[t * d + half + i], angle.sin())] {
                let ulps = (got as f64 - exact).abs() / ulp(exact);
                if ulps > worst.0 {
                    worst = (ulps, t);
                }
                assert!(ulps <= 2.0, "position {t} pair {i}: got {got:e}, exact {exact:e} ({ulps:.2} ulp)");
            }
        }
    }
    println!("    rope cos/sin: worst {:.2} ulp (at position {}) over positions 0..{max}", worst.0, worst.1);
}

/// A token rotated alone or inside a batch: bit-identical.
fn tokens_are_batch_invariant(gpu: &Gpu) {
    let mut r = rng(42);
    let mut table = RopeTable::new(gpu, 1.0e4, 128, 4096).unwrap();
    for dtype in DTYPES {
        let q = uniform(&mut r, dtype, &[9, 12, 128], -4.0, 4.0);
        let k = uniform(&mut r, dtype, &[9, 2, 128], -4.0, 4.0);
        let positions: Vec<i32> = (0..9).map(|i| 400 * i + 3).collect();
        let (all_q, _) = run_rope(gpu, &mut table, &q, &k, &positions);
        let n = 12 * 128;
        let q5 = HostTensor::from_f32(dtype, &[1, 12, 128], q.data()[5 * n..6 * n].to_vec()).unwrap();
        let k5 = HostTensor::from_f32(dtype, &[1, 2, 128], k.data()[5 * 256..6 * 256].to_vec()).unwrap();
        let (one_q, _) = run_rope(gpu, &mut table, &q5, &k5, &positions[5..6]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one_q), bits(&all_q[5 * n..6 * n]), "{dtype}");
    }
}

struct KvCase {
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    positions: Vec<i32>,
    /// The slot mapping: page * page_size + offset, negative = no cache write.
    slots: Vec<i32>,
    cache: KvCacheDims,
}

/// Run rope_kv on a case with caches full of GUARD (inside their own guard bands); returns
/// (q, k_cache, v_cache) read back and the status check's result.
fn run_kv(gpu: &Gpu, table: &mut RopeTable, c: &KvCase) -> (Vec<f32>, Vec<f32>, Vec<f32>, qwen_kernels::Result<()>) {
    let dtype = c.q.dtype();
    let dims = c.cache.shape();
    let full = HostTensor::full(dtype, &dims, GUARD).unwrap();
    let (mut kc, mut vc) = (Guarded::from_host(gpu, &full), Guarded::from_host(gpu, &full));
    let mut dq = Guarded::from_host(gpu, &c.q);
    let (dk, dv) = (DeviceTensor::from_host(gpu, &c.k).unwrap(), DeviceTensor::from_host(gpu, &c.v).unwrap());
    let (pos, slots) = (device_i32(gpu, &c.positions), device_i32(gpu, &c.slots));
    dq.with_mut(|q| {
        kc.with_mut(|k_cache| {
            vc.with_mut(|v_cache| {
                let pages = c.cache.num_pages;
                let mut paged = KvCacheViewMut { k: k_cache.rows_mut(0..pages).unwrap(), v: v_cache.rows_mut(0..pages).unwrap(), layout: c.cache.layout };
                rope_kv(gpu, table, q, &dk.view(), &dv.view(), &pos.slice(..), &slots.slice(..), &mut paged).unwrap()
            })
        })
    });
    let status = table.check_status(gpu);
    // The input k and v are read-only: unchanged.
    assert_eq!(dk.to_host(gpu).unwrap().data(), c.k.data());
    assert_eq!(dv.to_host(gpu).unwrap().data(), c.v.data());
    (dq.inner(gpu, "q"), kc.inner(gpu, "k_cache"), vc.inner(gpu, "v_cache"), status)
}

#[allow(clippy::needless_range_loop)] // t indexes tokens in five arrays
/// Check the cache after rope_kv: the tokens in `valid` with a slot >= 0 wrote rotated k and copied
/// v at their slot (page slot / page_size, offset slot % page_size, head h; either layout); every
/// other element still holds GUARD. q: rotated for valid tokens, unchanged for the others.
fn check_kv(table: &RopeTable, c: &KvCase, valid: &[bool], q: &[f32], k_cache: &[f32], v_cache: &[f32]) {
    let dtype = c.q.dtype();
    let [tokens, heads, d] = *c.q.dims() else { panic!() };
    let kv_heads = c.k.dims()[1];
    let tol = vs_reference(dtype);
    let ok_pos: Vec<i32> = c.positions.iter().zip(valid).map(|(&p, &ok)| if ok { p } else { 0 }).collect();
    let eq = reference::rope(&c.q, &ok_pos, table.theta(), table.max_positions()).unwrap();
    let ek = reference::rope(&c.k, &ok_pos, table.theta(), table.max_positions()).unwrap();
    let (sq, sk) = (error_scale(&c.q), error_scale(&c.k));
    let mut written = vec![false; k_cache.len()];
    for t in 0..tokens {
        let qr = t * heads * d..(t + 1) * heads * d;
        if valid[t] {
            let cmp = compare_scaled(&q[qr.clone()], &eq.data()[qr.clone()], tol, Some(&sq[qr]));
            assert!(cmp.passed(), "rope_kv q token {t}: {cmp}");
        } else {
            assert_eq!(&q[qr.clone()], &c.q.data()[qr], "rope_kv: skipped token {t}'s q was changed");
            continue;
        }
        if c.slots[t] < 0 {
            continue; // padding: no cache write
        }
        for h in 0..kv_heads {
            let at = c.cache.slot_offset(c.slots[t] as usize, h);
            let src = (t * kv_heads + h) * d..(t * kv_heads + h + 1) * d;
            let cmp = compare_scaled(&k_cache[at..at + d], &ek.data()[src.clone()], tol, Some(&sk[src.clone()]));
            assert!(cmp.passed(), "rope_kv k_cache token {t} head {h}: {cmp}");
            assert_eq!(&v_cache[at..at + d], &c.v.data()[src], "rope_kv v_cache token {t} head {h}");
            written[at..at + d].fill(true);
        }
    }
    for (i, w) in written.iter().enumerate() {
        if !w {
            assert!(k_cache[i] == GUARD && v_cache[i] == GUARD, "rope_kv wrote cache element {i} that no token owns");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn kv_case(r: &mut rand::rngs::StdRng, dtype: DType, heads: usize, kv_heads: usize, d: usize, cache: KvCacheDims, positions: Vec<i32>, slots: Vec<i32>) -> KvCase {
    let t = positions.len();
    KvCase {
        q: uniform(r, dtype, &[t, heads, d], -8.0, 8.0),
        k: uniform(r, dtype, &[t, kv_heads, d], -8.0, 8.0),
        v: uniform(r, dtype, &[t, kv_heads, d], -8.0, 8.0),
        positions,
        slots,
        cache,
    }
}

fn kv_write_lands_at_slot_and_position_only(gpu: &Gpu) {
    let mut r = rng(43);
    for cfg in Qwen2Config::presets() {
        let (heads, kv_heads, d) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let mut table = RopeTable::new(gpu, cfg.rope_theta, d, cfg.max_position_embeddings).unwrap();
        for dtype in DTYPES {
            for layout in [KvLayout::Hnd, KvLayout::Nhd] {
                // Prefill-like: 5 tokens into pages of 16 in any order (one padding, slot -1),
                // positions in any order, a slot at each end of the cache.
                let cache = KvCacheDims { num_pages: 5, page_size: 16, kv_heads, head_dim: d, layout };
                let c = kv_case(&mut r, dtype, heads, kv_heads, d, cache, vec![7, 0, 39, 3, 38], vec![39, 0, 79, -1, 22]);
                let (q, kc, vc, status) = run_kv(gpu, &mut table, &c);
                status.unwrap();
                check_kv(&table, &c, &[true; 5], &q, &kc, &vc);
                // Decode: one token at the model's last position, into a page of 1.
                let last = cfg.max_position_embeddings as i32 - 1;
                let cache = KvCacheDims { num_pages: 3, page_size: 1, kv_heads, head_dim: d, layout };
                let c = kv_case(&mut r, dtype, heads, kv_heads, d, cache, vec![last], vec![2]);
                let (q, kc, vc, status) = run_kv(gpu, &mut table, &c);
                status.unwrap();
                check_kv(&table, &c, &[true], &q, &kc, &vc);
            }
        }
    }
}

#[allow(clippy::needless_range_loop)] // t indexes tokens in several arrays
/// Positions outside 0..max and slots past the cache: those tokens are skipped whole, the status
/// says so (once: reading clears it), every other token is processed (a negative slot is padding:
/// q rotated, nothing written, nothing flagged).
fn bad_positions_and_slots_are_skipped_and_reported(gpu: &Gpu) {
    let mut r = rng(44);
    let (heads, kv_heads, d, max) = (14, 2, 64, 32768);
    let mut table = RopeTable::new(gpu, 1.0e6, d, max).unwrap();
    for dtype in DTYPES {
        // rope: -1 and max are bad, i32::MIN too.
        let positions = vec![-1, 5, max as i32, i32::MIN, max as i32 - 1];
        let q = uniform(&mut r, dtype, &[5, heads, d], -4.0, 4.0);
        let k = uniform(&mut r, dtype, &[5, kv_heads, d], -4.0, 4.0);
        let (mut dq, mut dk) = (Guarded::from_host(gpu, &q), Guarded::from_host(gpu, &k));
        let pos = device_i32(gpu, &positions);
        dq.with_mut(|vq| dk.with_mut(|vk| rope(gpu, &mut table, vq, vk, &pos.slice(..)).unwrap()));
        let e = table.check_status(gpu).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "rope", .. }) && e.to_string().contains("position"), "{e}");
        table.check_status(gpu).unwrap(); // cleared
        let (gq, gk) = (dq.inner(gpu, "q"), dk.inner(gpu, "k"));
        let ok_pos = [0, 5, 0, 0, max as i32 - 1];
        let valid = [false, true, false, false, true];
        let (eq, ek) = (reference::rope(&q, &ok_pos, 1.0e6, max).unwrap(), reference::rope(&k, &ok_pos, 1.0e6, max).unwrap());
        for (x, got, expected, n) in [(&q, &gq, &eq, heads * d), (&k, &gk, &ek, kv_heads * d)] {
            let scale = error_scale(x);
            for t in 0..5 {
                let rg = t * n..(t + 1) * n;
                if valid[t] {
                    let c = compare_scaled(&got[rg.clone()], &expected.data()[rg.clone()], vs_reference(dtype), Some(&scale[rg]));
                    assert!(c.passed(), "{dtype} token {t}: {c}");
                } else {
                    assert_eq!(&got[rg.clone()], &x.data()[rg], "{dtype}: skipped token {t} was changed");
                }
            }
        }
        // rope_kv, 3 pages of 40: position max and -5 are bad, slot 120 (= 3 x 40) and i32::MAX
        // are past the cache, -1 is padding.
        let cache = KvCacheDims { num_pages: 3, page_size: 40, kv_heads, head_dim: d, layout: KvLayout::Nhd };
        let slots = vec![0, 5, 120, -1, 41, 119, i32::MAX];
        let c = kv_case(&mut r, dtype, heads, kv_heads, d, cache, vec![1, max as i32, 2, 3, -5, 39, 4], slots);
        let (q, kc, vc, status) = run_kv(gpu, &mut table, &c);
        let e = status.unwrap_err();
        assert!(e.to_string().contains("position") && e.to_string().contains("slot"), "{e}");
        check_kv(&table, &c, &[true, false, false, true, false, true, false], &q, &kc, &vc);
    }
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let mut table = RopeTable::new(gpu, 1.0e6, 64, 32768).unwrap();
    let z = |dtype, dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).unwrap();
    let pos = device_i32(gpu, &[0, 1, 2]);
    let (mut q, mut k) = (z(DType::BF16, &[3, 14, 64]), z(DType::BF16, &[3, 2, 64]));
    rope(gpu, &mut table, &mut q.view_mut(), &mut k.view_mut(), &pos.slice(..)).unwrap();
    // head_dim of another table, heads not a multiple, dtype, positions length
    let e = rope(gpu, &mut table, &mut z(DType::BF16, &[3, 12, 128]).view_mut(), &mut z(DType::BF16, &[3, 2, 128]).view_mut(), &pos.slice(..)).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "rope", .. }), "{e}");
    let e = rope(gpu, &mut table, &mut q.view_mut(), &mut z(DType::BF16, &[3, 3, 64]).view_mut(), &pos.slice(..)).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = rope(gpu, &mut table, &mut q.view_mut(), &mut z(DType::F16, &[3, 2, 64]).view_mut(), &pos.slice(..)).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = rope(gpu, &mut table, &mut q.view_mut(), &mut k.view_mut(), &pos.slice(0..2)).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // rope_kv: cache dtype, cache heads (HND; the same pages read as NHD), slot mapping length
    let v = z(DType::BF16, &[3, 2, 64]);
    let mut kv_call = |dtype, dims: &[usize], layout, slots: &CudaSlice<i32>| {
        let (mut kc, mut vc) = (z(dtype, dims), z(dtype, dims));
        let mut cache = KvCacheViewMut { k: kc.view_mut(), v: vc.view_mut(), layout };
        rope_kv(gpu, &mut table, &mut q.view_mut(), &k.view(), &v.view(), &pos.slice(..), &slots.slice(..), &mut cache).unwrap_err()
    };
    let e = kv_call(DType::F16, &[2, 2, 16, 64], KvLayout::Hnd, &pos);
    assert!(matches!(e, Error::DType { op: "rope_kv", .. }), "{e}");
    let e = kv_call(DType::BF16, &[2, 1, 16, 64], KvLayout::Hnd, &pos);
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = kv_call(DType::BF16, &[2, 2, 16, 64], KvLayout::Nhd, &pos);
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("NHD"), "{e}");
    let e = kv_call(DType::BF16, &[2, 2, 16, 64], KvLayout::Hnd, &device_i32(gpu, &[0]));
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // a table with bad parameters
    assert!(RopeTable::new(gpu, 1.0e6, 63, 32768).is_err());
    assert!(RopeTable::new(gpu, 0.5, 64, 32768).is_err());
    table.check_status(gpu).unwrap();
}

fn proptest_shapes(gpu: &Gpu) {
    let strategy = (1usize..20, 1usize..4, 1usize..8, 1usize..80, 0usize..3, any::<u64>());
    let mut runner = TestRunner::new(ProptestConfig { cases: 40, ..ProptestConfig::default() });
    runner
        .run(&strategy, |(tokens, kv_heads, group, half, dtype_i, seed)| {
            let dtype = DTYPES[dtype_i];
            let (heads, d, max) = (kv_heads * group, 2 * half, 512usize);
            let mut r = rng(seed);
            let mut table = RopeTable::new(gpu, 1.0e4, d, max).unwrap();
            let positions: Vec<i32> = (0..tokens).map(|_| r.gen_range(0..max as i32)).collect();
            let q = uniform(&mut r, dtype, &[tokens, heads, d], -8.0, 8.0);
            let k = uniform(&mut r, dtype, &[tokens, kv_heads, d], -8.0, 8.0);
            check_case(gpu, &mut table, &q, &k, &positions, "proptest");
            // And the cache form: token t in page t at its position, either layout.
            let layout = if seed % 2 == 0 { KvLayout::Hnd } else { KvLayout::Nhd };
            let cache = KvCacheDims { num_pages: tokens, page_size: max, kv_heads, head_dim: d, layout };
            let slots: Vec<i32> = positions.iter().enumerate().map(|(t, &p)| (t * max) as i32 + p).collect();
            let c = kv_case(&mut r, dtype, heads, kv_heads, d, cache, positions, slots);
            let (q, kc, vc, status) = run_kv(gpu, &mut table, &c);
            status.unwrap();
            check_kv(&table, &c, &vec![true; tokens], &q, &kc, &vc);
            Ok(())
        })
        .unwrap();
}
