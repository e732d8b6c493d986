//! The fused decode-step kernels (`ops::decode`) against the unfused launches they replace, bit for
//! bit: rmsnorm -> gemv -> rope_qkv, gemv -> the residual add, rmsnorm -> gemv -> swiglu_fused,
//! rmsnorm -> gemv (f32) -> argmax, decode_advance. Each unfused op is checked against its CPU
//! reference by its own tests; equality here carries those checks over to the fused path. Rows 1..34
//! (past one launch's 16 in f32 and 32 in f16/bf16; the unfused GEMVs run 16 rows a launch), every
//! dtype, the vector and scalar paths, odd sizes and the models'.

use crate::common::{rng, uniform};
use crate::GpuTest;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::ops::argmax::{argmax, ArgmaxOutput};
use qwen_kernels::ops::decode::{self, Advance, HeadCandidates, Path};
use qwen_kernels::ops::embed;
use qwen_kernels::ops::gemv::gemv;
use qwen_kernels::ops::kv_cache::{KvCache, KvLayout};
use qwen_kernels::ops::rmsnorm::{add_rmsnorm, rmsnorm_with_path};
use qwen_kernels::ops::rope::{rope_qkv, RopeTable};
use qwen_kernels::ops::swiglu::swiglu_fused;
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[
    ("decode::qkv_equals_rmsnorm_gemv_rope_qkv", qkv_equals_rmsnorm_gemv_rope_qkv),
    ("decode::residual_equals_gemv_and_the_add", residual_equals_gemv_and_the_add),
    ("decode::gate_up_equals_rmsnorm_gemv_swiglu", gate_up_equals_rmsnorm_gemv_swiglu),
    ("decode::head_equals_rmsnorm_gemv_argmax_and_advance", head_equals_rmsnorm_gemv_argmax_and_advance),
    ("decode::rows_are_batch_invariant", rows_are_batch_invariant),
    ("decode::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
];

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const EPS: f32 = 1e-6;

fn bits(gpu: &Gpu, t: &DeviceTensor) -> Vec<u32> {
    t.to_host(gpu).unwrap().into_data().iter().map(|x| x.to_bits()).collect()
}

fn dev(gpu: &Gpu, t: &HostTensor) -> DeviceTensor {
    DeviceTensor::from_host(gpu, t).unwrap()
}

/// The unfused norm on the fused kernel's path: rmsnorm's vector and scalar paths sum in different
/// orders, and the fused prologue follows the one its own path names.
fn rmsnorm_dev(gpu: &Gpu, x: &DeviceTensor, norm: &DeviceTensor, path: Path) -> DeviceTensor {
    let mut xn = DeviceTensor::zeros(gpu, x.layout().dtype, x.layout().shape.dims()).unwrap();
    rmsnorm_with_path(gpu, &x.view(), &norm.view(), EPS, &mut xn.view_mut(), path).unwrap();
    xn
}

/// A residual stream with the hazards of the real one: a few large channels among small ones.
fn resid(r: &mut rand::rngs::StdRng, dtype: DType, rows: usize, hidden: usize) -> HostTensor {
    let mut x = uniform(r, dtype, &[rows, hidden], -2.0, 2.0).into_data();
    for row in 0..rows {
        x[row * hidden + (7 * row) % hidden] = 300.0;
    }
    HostTensor::from_f32(dtype, &[rows, hidden], x).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn qkv_case(gpu: &Gpu, dtype: DType, rows: usize, hidden: usize, heads: usize, kv_heads: usize, d: usize, path: Path, seed: u64) {
    let mut r = rng(seed);
    let width = (heads + 2 * kv_heads) * d;
    let x = dev(gpu, &resid(&mut r, dtype, rows, hidden));
    let norm = dev(gpu, &uniform(&mut r, dtype, &[hidden], 0.5, 2.0));
    let w = dev(gpu, &uniform(&mut r, dtype, &[width, hidden], -0.1, 0.1));
    let b = dev(gpu, &uniform(&mut r, dtype, &[width], -1.0, 1.0));
    // Pages of 4 positions, rows at scattered positions and slots; the last row is padding (slot -1).
    let (page, pages) = (4, rows + 2);
    let positions: Vec<i32> = (0..rows as i32).map(|i| 3 * i + 1).collect();
    let slots: Vec<i32> = (0..rows as i32).map(|i| if i + 1 == rows as i32 && rows > 1 { -1 } else { (i * 5 + 2) % (page * pages) as i32 }).collect();
    let pos = gpu.stream().clone_htod(&positions).unwrap();
    let sl = gpu.stream().clone_htod(&slots).unwrap();
    let mut table = RopeTable::new(gpu, 1.0e6, d, 4096).unwrap();
    let layout = if rows % 2 == 0 { KvLayout::Hnd } else { KvLayout::Nhd };
    // Unfused.
    let xn = rmsnorm_dev(gpu, &x, &norm, path);
    let mut y = DeviceTensor::zeros(gpu, dtype, &[rows, width]).unwrap();
    for g in (0..rows).step_by(16) {
        let g = g..(g + 16).min(rows);
        gemv(gpu, &xn.view().rows(g.clone()).unwrap(), &w.view(), Some(&b.view()), &mut y.view_mut().rows_mut(g).unwrap()).unwrap();
    }
    let mut q1 = DeviceTensor::zeros(gpu, dtype, &[rows, heads, d]).unwrap();
    let mut c1 = KvCache::zeros(gpu, dtype, layout, pages, page, kv_heads, d).unwrap();
    rope_qkv(gpu, &mut table, &y.view(), kv_heads, &pos.slice(..), &sl.slice(..), &mut q1.view_mut(), &mut c1.view_mut()).unwrap();
    // Fused.
    let mut q2 = DeviceTensor::zeros(gpu, dtype, &[rows, heads, d]).unwrap();
    let mut c2 = KvCache::zeros(gpu, dtype, layout, pages, page, kv_heads, d).unwrap();
    decode::qkv_with_path(gpu, &x.view(), &norm.view(), EPS, &w.view(), &b.view(), &mut table, &pos.slice(..), &sl.slice(..), &mut q2.view_mut(), &mut c2.view_mut(), path).unwrap();
    table.check_status(gpu).unwrap();
    let what = format!("{dtype} rows {rows} hidden {hidden} heads {heads}/{kv_heads} d {d} {path:?}");
    assert_eq!(bits(gpu, &q1), bits(gpu, &q2), "{what}: q");
    assert_eq!(bits(gpu, &c1.k), bits(gpu, &c2.k), "{what}: k cache");
    assert_eq!(bits(gpu, &c1.v), bits(gpu, &c2.v), "{what}: v cache");
}

fn qkv_equals_rmsnorm_gemv_rope_qkv(gpu: &Gpu) {
    let mut seed = 900;
    for dtype in DTYPES {
        for &(rows, hidden, path) in &[(1, 64, Path::Auto), (3, 72, Path::Auto), (16, 64, Path::Auto), (19, 40, Path::Scalar), (2, 37, Path::Auto), (34, 48, Path::Auto)] {
            seed += 1;
            qkv_case(gpu, dtype, rows, hidden, 4, 2, 16, path, seed);
        }
    }
    // The models' shapes, one row (Qwen2.5-0.5B: 896 -> 14 + 2 x 2 heads of 64; VibeThinker-1.5B:
    // 1536 -> 12 + 2 x 2 heads of 128).
    for cfg in Qwen2Config::presets() {
        seed += 1;
        qkv_case(gpu, DType::BF16, 1, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, Path::Auto, seed);
    }
}

fn residual_case(gpu: &Gpu, dtype: DType, rows: usize, k: usize, n: usize, path: Path, seed: u64) {
    let mut r = rng(seed);
    let x = dev(gpu, &uniform(&mut r, dtype, &[rows, k], -1.0, 1.0));
    let w = dev(gpu, &uniform(&mut r, dtype, &[n, k], -0.1, 0.1));
    let res = resid(&mut r, dtype, rows, n);
    // Unfused: y = gemv, then add_rmsnorm's first pass resid = T(y + resid).
    let mut y = DeviceTensor::zeros(gpu, dtype, &[rows, n]).unwrap();
    for g in (0..rows).step_by(16) {
        let g = g..(g + 16).min(rows);
        gemv(gpu, &x.view().rows(g.clone()).unwrap(), &w.view(), None, &mut y.view_mut().rows_mut(g).unwrap()).unwrap();
    }
    let (mut r1, mut r2) = (dev(gpu, &res), dev(gpu, &res));
    let ones = dev(gpu, &HostTensor::from_f32(dtype, &[n], vec![1.0; n]).unwrap());
    let mut xn = DeviceTensor::zeros(gpu, dtype, &[rows, n]).unwrap();
    add_rmsnorm(gpu, &y.view(), &mut r1.view_mut(), &ones.view(), EPS, &mut xn.view_mut()).unwrap();
    decode::residual_with_path(gpu, &x.view(), &w.view(), &mut r2.view_mut(), path).unwrap();
    assert_eq!(bits(gpu, &r1), bits(gpu, &r2), "{dtype} rows {rows} [{n}, {k}] {path:?}: resid");
}

fn residual_equals_gemv_and_the_add(gpu: &Gpu) {
    let mut seed = 950;
    for dtype in DTYPES {
        for &(rows, k, n, path) in &[(1, 64, 24, Path::Auto), (5, 896, 40, Path::Auto), (16, 33, 17, Path::Auto), (18, 64, 9, Path::Scalar), (33, 40, 12, Path::Auto)] {
            seed += 1;
            residual_case(gpu, dtype, rows, k, n, path, seed);
        }
    }
    // o_proj and down_proj of Qwen2.5-0.5B, one row.
    residual_case(gpu, DType::BF16, 1, 896, 896, Path::Auto, 960);
    residual_case(gpu, DType::BF16, 1, 4864, 896, Path::Auto, 961);
}

fn gate_up_case(gpu: &Gpu, dtype: DType, rows: usize, hidden: usize, inter: usize, path: Path, seed: u64) {
    let mut r = rng(seed);
    let x = dev(gpu, &resid(&mut r, dtype, rows, hidden));
    let norm = dev(gpu, &uniform(&mut r, dtype, &[hidden], 0.5, 2.0));
    let w = dev(gpu, &uniform(&mut r, dtype, &[2 * inter, hidden], -0.2, 0.2));
    let xn = rmsnorm_dev(gpu, &x, &norm, path);
    let mut gu = DeviceTensor::zeros(gpu, dtype, &[rows, 2 * inter]).unwrap();
    for g in (0..rows).step_by(16) {
        let g = g..(g + 16).min(rows);
        gemv(gpu, &xn.view().rows(g.clone()).unwrap(), &w.view(), None, &mut gu.view_mut().rows_mut(g).unwrap()).unwrap();
    }
    let mut a1 = DeviceTensor::zeros(gpu, dtype, &[rows, inter]).unwrap();
    swiglu_fused(gpu, &gu.view(), &mut a1.view_mut()).unwrap();
    let mut a2 = DeviceTensor::zeros(gpu, dtype, &[rows, inter]).unwrap();
    decode::gate_up_with_path(gpu, &x.view(), &norm.view(), EPS, &w.view(), &mut a2.view_mut(), path).unwrap();
    assert_eq!(bits(gpu, &a1), bits(gpu, &a2), "{dtype} rows {rows} hidden {hidden} I {inter} {path:?}: act");
}

fn gate_up_equals_rmsnorm_gemv_swiglu(gpu: &Gpu) {
    let mut seed = 970;
    for dtype in DTYPES {
        for &(rows, hidden, inter, path) in &[(1, 64, 40, Path::Auto), (7, 72, 9, Path::Auto), (17, 64, 16, Path::Scalar), (2, 13, 5, Path::Auto), (32, 64, 10, Path::Auto)] {
            seed += 1;
            gate_up_case(gpu, dtype, rows, hidden, inter, path, seed);
        }
    }
    gate_up_case(gpu, DType::BF16, 1, 896, 4864, Path::Auto, 980);
    // Wide blocks (past 8 rows) at both models' shapes: 4864 = 152 blocks of 32 units, 8960 = 280.
    gate_up_case(gpu, DType::BF16, 9, 896, 4864, Path::Auto, 981);
    gate_up_case(gpu, DType::F16, 32, 1536, 8960, Path::Auto, 982);
}

/// Logits with a planted tie at each row's maximum (the lower index must win) and, when n_valid <
/// vocab, the largest logit past n_valid (it must not win).
#[allow(clippy::too_many_arguments)]
fn head_case(gpu: &Gpu, dtype: DType, rows: usize, hidden: usize, vocab: usize, n_valid: usize, path: Path, seed: u64) {
    let mut r = rng(seed);
    let x = dev(gpu, &resid(&mut r, dtype, rows, hidden));
    let norm = dev(gpu, &uniform(&mut r, dtype, &[hidden], 0.5, 2.0));
    let mut wh = uniform(&mut r, dtype, &[vocab, hidden], -0.1, 0.1).into_data();
    // Rows a and a + 1 of W equal and large (0.4 against +-0.1): every row's largest valid logit
    // is a tie inside one block (a % 8 < 7), which the lower index must win.
    let a = (vocab / 3) / 8 * 8;
    if a + 1 < n_valid {
        wh[a * hidden..(a + 2) * hidden].fill(0.4);
    }
    if n_valid < vocab {
        for v in &mut wh[(vocab - 1) * hidden..] {
            *v *= 50.0;
        }
    }
    let w = dev(gpu, &HostTensor::from_f32(dtype, &[vocab, hidden], wh).unwrap());
    let xn = rmsnorm_dev(gpu, &x, &norm, path);
    let mut l1 = DeviceTensor::zeros(gpu, DType::F32, &[rows, vocab]).unwrap();
    for g in (0..rows).step_by(16) {
        let g = g..(g + 16).min(rows);
        gemv(gpu, &xn.view().rows(g.clone()).unwrap(), &w.view(), None, &mut l1.view_mut().rows_mut(g).unwrap()).unwrap();
    }
    let mut out = ArgmaxOutput::new(gpu, rows).unwrap();
    argmax(gpu, &l1.view(), n_valid, &mut out, false).unwrap();
    let want = gpu.stream().clone_dtoh(&out.index().slice(0..rows)).unwrap();
    if a + 1 < n_valid {
        assert!(want.iter().all(|&i| i == a as i32), "the planted tie at {a}, {} is not every row's maximum: {want:?}", a + 1);
    }
    let mut l2 = DeviceTensor::zeros(gpu, DType::F32, &[rows, vocab]).unwrap();
    let mut cand = HeadCandidates::new(gpu, rows, vocab).unwrap();
    decode::head_with_path(gpu, &x.view(), &norm.view(), EPS, &w.view(), &mut l2.view_mut(), n_valid, &mut cand, path).unwrap();
    // Positions, lengths and slots as decode_advance moves them, through pages of 3.
    let (max_pages, page) = (4, 3);
    let tables: Vec<i32> = (0..rows * max_pages).map(|i| (i * 7 % 11) as i32).collect();
    let starts: Vec<i32> = (0..rows as i32).map(|i| i % 11).collect();
    let lens: Vec<i32> = starts.iter().map(|p| p + 1).collect();
    let tab = gpu.stream().clone_htod(&tables).unwrap();
    let mut got_index = gpu.stream().clone_htod(&vec![-7i32; rows]).unwrap();
    let (mut p1, mut n1, mut s1) = (gpu.stream().clone_htod(&starts).unwrap(), gpu.stream().clone_htod(&lens).unwrap(), gpu.stream().clone_htod(&vec![0i32; rows]).unwrap());
    let (mut p2, mut n2, mut s2) = (p1.clone(), n1.clone(), s1.clone());
    let tv = tab.slice(..);
    // Each last kernel also packs the step's report: status words planted in the embedding's,
    // RoPE's and decode attention's words come out in words 0..3 (the first two cleared, the third
    // only read), the tokens after them; words past the rows are left alone.
    let mut words = Words::new(gpu, decode::REPORT_HEAD + rows + 1);
    let report = words.plant(gpu);
    let adv = Advance { positions: &mut p1, lens: &mut n1, slot_mapping: &mut s1, block_tables: &tv, max_pages, page_size: page };
    embed::advance(gpu, rows, Some(adv), Some((&out.index().slice(0..rows), report))).unwrap();
    let from_advance = words.take(gpu);
    let report = words.plant(gpu);
    let adv = Advance { positions: &mut p2, lens: &mut n2, slot_mapping: &mut s2, block_tables: &tv, max_pages, page_size: page };
    decode::finish(gpu, &cand, rows, &mut got_index, Some(adv), Some(report)).unwrap();
    let from_finish = words.take(gpu);
    let what = format!("{dtype} rows {rows} hidden {hidden} vocab {vocab} (valid {n_valid}) {path:?}");
    assert_eq!(bits(gpu, &l1), bits(gpu, &l2), "{what}: logits");
    assert_eq!(gpu.stream().clone_dtoh(&got_index).unwrap(), want, "{what}: argmax");
    for (a, b, name) in [(&p1, &p2, "positions"), (&n1, &n2, "lens"), (&s1, &s2, "slots")] {
        assert_eq!(gpu.stream().clone_dtoh(a).unwrap(), gpu.stream().clone_dtoh(b).unwrap(), "{what}: {name}");
    }
    let mut expected: Vec<u32> = [Words::EMBED, Words::ROPE, Words::DECODE].into_iter().chain(want.iter().map(|&i| i as u32)).collect();
    expected.push(Words::UNTOUCHED);
    for (got, by) in [(from_advance, "decode_advance"), (from_finish, "dec_finish")] {
        assert_eq!(got.0, expected, "{what}: {by}'s report");
        assert_eq!(got.1, [0, 0, Words::DECODE], "{what}: {by} moves the embedding's and RoPE's words out, reads the decode word");
    }
}

/// A step report's buffer and three status words with bits planted in them (tests of the last
/// kernels' reports).
struct Words {
    out: cudarc::driver::CudaSlice<u32>,
    embed: cudarc::driver::CudaSlice<u32>,
    rope: cudarc::driver::CudaSlice<u32>,
    decode_ws: DeviceTensor,
}

impl Words {
    const EMBED: u32 = 0x1;
    const ROPE: u32 = 0x6;
    const DECODE: u32 = 0x5;
    const UNTOUCHED: u32 = 0xdead_beef;

    /// A report buffer of `len` words.
    fn new(gpu: &Gpu, len: usize) -> Self {
        let z = |n| gpu.stream().alloc_zeros::<u32>(n).unwrap();
        Words { out: z(len), embed: z(1), rope: z(1), decode_ws: DeviceTensor::zeros(gpu, DType::F32, &[8]).unwrap() }
    }

    /// Plant the status bits and fill the report with a marker; the report's parts.
    fn plant(&mut self, gpu: &Gpu) -> decode::StepReport<'_> {
        let s = gpu.stream();
        s.memcpy_htod(&vec![Self::UNTOUCHED; self.out.len()], &mut self.out).unwrap();
        s.memcpy_htod(&[Self::EMBED], &mut self.embed).unwrap();
        s.memcpy_htod(&[Self::ROPE], &mut self.rope).unwrap();
        let ws = HostTensor::from_f32(DType::F32, &[8], vec![f32::from_bits(Self::DECODE), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
        self.decode_ws.view_mut().upload(gpu, &ws).unwrap();
        decode::StepReport { out: &mut self.out, embed_status: &mut self.embed, rope_status: &mut self.rope, decode_status: self.decode_ws.view() }
    }

    /// The report's words and the three status words after the launch.
    fn take(&self, gpu: &Gpu) -> (Vec<u32>, [u32; 3]) {
        let s = gpu.stream();
        let decode = self.decode_ws.view().to_host(gpu).unwrap().into_data()[0].to_bits();
        (s.clone_dtoh(&self.out).unwrap(), [s.clone_dtoh(&self.embed).unwrap()[0], s.clone_dtoh(&self.rope).unwrap()[0], decode])
    }
}

fn head_equals_rmsnorm_gemv_argmax_and_advance(gpu: &Gpu) {
    let mut seed = 990;
    for dtype in DTYPES {
        for &(rows, hidden, vocab, n_valid, path) in &[(1, 64, 300, 290, Path::Auto), (5, 72, 77, 77, Path::Auto), (18, 40, 130, 128, Path::Scalar), (3, 9, 1, 1, Path::Auto), (33, 24, 50, 49, Path::Auto)] {
            seed += 1;
            head_case(gpu, dtype, rows, hidden, vocab, n_valid, path, seed);
        }
    }
    // The models' lm_head, one row (151936 padded, 151665 real).
    let cfg = &Qwen2Config::presets()[0];
    head_case(gpu, DType::BF16, 1, cfg.hidden_size, cfg.vocab_size, cfg.real_vocab_size, Path::Auto, 999);
}

/// Row r of a launch of 32 rows equals row r launched alone, bit for bit (qkv's q and the head's
/// logits; the others share the same core).
fn rows_are_batch_invariant(gpu: &Gpu) {
    let mut r = rng(1001);
    // 32 rows: one launch in bf16, both of the tensor cores' m tiles.
    let (rows, hidden, heads, kv, d, vocab) = (32, 64, 4, 2, 16, 100);
    let dtype = DType::BF16;
    let x = dev(gpu, &resid(&mut r, dtype, rows, hidden));
    let norm = dev(gpu, &uniform(&mut r, dtype, &[hidden], 0.5, 2.0));
    let w = dev(gpu, &uniform(&mut r, dtype, &[(heads + 2 * kv) * d, hidden], -0.1, 0.1));
    let b = dev(gpu, &uniform(&mut r, dtype, &[(heads + 2 * kv) * d], -1.0, 1.0));
    let wh = dev(gpu, &uniform(&mut r, dtype, &[vocab, hidden], -0.1, 0.1));
    let positions: Vec<i32> = (0..rows as i32).map(|i| 2 * i).collect();
    let pos = gpu.stream().clone_htod(&positions).unwrap();
    let sl = gpu.stream().clone_htod(&vec![-1i32; rows]).unwrap();
    let mut table = RopeTable::new(gpu, 1.0e6, d, 4096).unwrap();
    let mut cache = KvCache::zeros(gpu, dtype, KvLayout::Hnd, 1, 4, kv, d).unwrap();
    let mut q_all = DeviceTensor::zeros(gpu, dtype, &[rows, heads, d]).unwrap();
    decode::qkv(gpu, &x.view(), &norm.view(), EPS, &w.view(), &b.view(), &mut table, &pos.slice(..), &sl.slice(..), &mut q_all.view_mut(), &mut cache.view_mut()).unwrap();
    let mut l_all = DeviceTensor::zeros(gpu, DType::F32, &[rows, vocab]).unwrap();
    let mut cand = HeadCandidates::new(gpu, rows, vocab).unwrap();
    decode::head(gpu, &x.view(), &norm.view(), EPS, &wh.view(), &mut l_all.view_mut(), vocab, &mut cand).unwrap();
    let (q_all, l_all) = (bits(gpu, &q_all), bits(gpu, &l_all));
    for row in 0..rows {
        let mut q1 = DeviceTensor::zeros(gpu, dtype, &[1, heads, d]).unwrap();
        let xr = x.view().rows(row..row + 1).unwrap();
        decode::qkv(gpu, &xr, &norm.view(), EPS, &w.view(), &b.view(), &mut table, &pos.slice(row..row + 1), &sl.slice(row..row + 1), &mut q1.view_mut(), &mut cache.view_mut()).unwrap();
        let mut l1 = DeviceTensor::zeros(gpu, DType::F32, &[1, vocab]).unwrap();
        decode::head(gpu, &xr, &norm.view(), EPS, &wh.view(), &mut l1.view_mut(), vocab, &mut cand).unwrap();
        assert_eq!(bits(gpu, &q1)[..], q_all[row * heads * d..(row + 1) * heads * d], "row {row}: q alone vs in 32");
        assert_eq!(bits(gpu, &l1)[..], l_all[row * vocab..(row + 1) * vocab], "row {row}: logits alone vs in 32");
    }
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let dtype = DType::BF16;
    let z = |dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).unwrap();
    let (x, norm, w) = (z(&[2, 64]), z(&[64]), z(&[40, 64]));
    // Residual: w's K disagrees with x's.
    let mut resid = z(&[2, 40]);
    let e = decode::residual(gpu, &x.view(), &z(&[40, 63]).view(), &mut resid.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: decode::RESIDUAL_OP, .. }) && e.to_string().contains("[40, 63]"), "{e}");
    // gate_up: an odd number of weight rows; a norm weight of another dtype; eps NaN.
    let mut act = z(&[2, 20]);
    let e = decode::gate_up(gpu, &x.view(), &norm.view(), EPS, &z(&[41, 64]).view(), &mut act.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: decode::GATE_UP_OP, .. }), "{e}");
    let n32 = DeviceTensor::zeros(gpu, DType::F32, &[64]).unwrap();
    let e = decode::gate_up(gpu, &x.view(), &n32.view(), EPS, &w.view(), &mut act.view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { op: decode::GATE_UP_OP, .. }), "{e}");
    let e = decode::gate_up(gpu, &x.view(), &norm.view(), f32::NAN, &w.view(), &mut act.view_mut()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: decode::GATE_UP_OP, .. }) && e.to_string().contains("NaN"), "{e}");
    // head: logits not f32; n_valid past the vocabulary; candidates for fewer rows.
    let mut cand = HeadCandidates::new(gpu, 1, 40).unwrap();
    let mut bad_logits = z(&[2, 40]);
    let e = decode::head(gpu, &x.view(), &norm.view(), EPS, &w.view(), &mut bad_logits.view_mut(), 40, &mut cand).unwrap_err();
    assert!(matches!(e, Error::DType { op: decode::HEAD_OP, .. }), "{e}");
    let mut logits = DeviceTensor::zeros(gpu, DType::F32, &[2, 40]).unwrap();
    let e = decode::head(gpu, &x.view(), &norm.view(), EPS, &w.view(), &mut logits.view_mut(), 41, &mut cand).unwrap_err();
    assert!(e.to_string().contains("n_valid 41"), "{e}");
    let e = decode::head(gpu, &x.view(), &norm.view(), EPS, &w.view(), &mut logits.view_mut(), 40, &mut cand).unwrap_err();
    assert!(e.to_string().contains("candidates for 1 rows"), "{e}");
    // qkv: w of the wrong width for the heads; positions shorter than the rows.
    let (heads, kv, d) = (2, 1, 16);
    let mut table = RopeTable::new(gpu, 1.0e6, d, 64).unwrap();
    let mut cache = KvCache::zeros(gpu, dtype, KvLayout::Hnd, 2, 4, kv, d).unwrap();
    let mut q = z(&[2, heads, d]);
    let pos = gpu.stream().clone_htod(&[0i32, 1]).unwrap();
    let b = z(&[64]);
    let e = decode::qkv(gpu, &x.view(), &norm.view(), EPS, &z(&[63, 64]).view(), &b.view(), &mut table, &pos.slice(..), &pos.slice(..), &mut q.view_mut(), &mut cache.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: decode::QKV_OP, .. }) && e.to_string().contains("[64, 64]"), "{e}");
    let e = decode::qkv(gpu, &x.view(), &norm.view(), EPS, &z(&[64, 64]).view(), &b.view(), &mut table, &pos.slice(0..1), &pos.slice(..), &mut q.view_mut(), &mut cache.view_mut()).unwrap_err();
    assert!(e.to_string().contains('1') && e.to_string().contains("position"), "{e}");
    // finish: more rows than the candidates hold.
    let mut index = gpu.stream().clone_htod(&[0i32; 4]).unwrap();
    let e = decode::finish(gpu, &cand, 3, &mut index, None, None).unwrap_err();
    assert!(matches!(e, Error::Shape { op: decode::HEAD_OP, .. }), "{e}");
    // A report too short for the rows, from either last kernel: refused before the launch.
    let mut words = Words::new(gpu, decode::REPORT_HEAD);
    let e = decode::finish(gpu, &cand, 1, &mut index, None, Some(words.plant(gpu))).unwrap_err();
    assert!(matches!(e, Error::Shape { op: decode::HEAD_OP, .. }) && e.to_string().contains("report of 3 words for 1 rows"), "{e}");
    let e = embed::advance(gpu, 2, None, Some((&index.slice(0..2), words.plant(gpu)))).unwrap_err();
    assert!(e.to_string().contains("decode_advance") && e.to_string().contains("report of 3 words for 2 rows"), "{e}");
    assert_eq!(words.take(gpu).0, vec![Words::UNTOUCHED; 3], "nothing was launched");
}
