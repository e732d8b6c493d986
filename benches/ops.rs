//! SwiGLU, bounded argmax, sampling, RoPE + KV-cache write and the linear layers at the models' shapes.
//!
//! Counted per call (s = bytes per element of the storage dtype):
//!   swiglu (fused [gate | up] rows)  read 2 R W, write R W:                         3 R W s
//!   argmax (f32 logits [R, 151936])  read R n_valid (n_valid = 151665), write 8 R:  4 R n_valid + 8 R
//!   sample (f32 logits, the same)    the row once (the ideal; the kernel's later passes are L2
//!                                    reads), the per-row parameters and steps, the token: 4 R n_valid + 40 R
//!                                    cases: `plain` (temperature 1), `top_p` (temperature 1, top_p
//!                                    0.95), `qwen` (Qwen2.5-Instruct's: temperature 0.7, top_k 20,
//!                                    top_p 0.8), on normal(0, 2) logits
//!   rope_kv (T tokens)               q read + write, k and v read, cache write of both,
//!                                    positions and slots:                            (2 T H d + 4 T KH d) s + 8 T
//!   linear (rows R, in K, out N)     read W, x (and b), write y:                     (N K + R K + N) s + R N s_y
//!                                    FLOPs: 2 R K N (two per multiply-add); cuBLAS is the kernel.
//!   gemv (the same, R <= 32)         the decode GEMV (ops::gemv) at the same shapes and counts,
//!                                    beside linear at 1, 16 and 32 rows (the peer: F.linear)
//! Timing: CUDA events around batches of launches after warm-up; inputs and outputs rotate through
//! windows of at least 256 MiB in all (more than any L2 we run on), so bytes come from DRAM, except
//! for the smallest decode cases, capped at 4096 windows (rope_kv at 1 token: 4096 x ~4 KB stays in
//! L2, as the q/k/v a GEMM just wrote would in a model). Results:
//! time, GB/s (1e9 bytes/s), % of the device-to-device copy bandwidth measured in the same run, and
//! TFLOP/s for the GEMMs. Peer: benches/peers/ops_torch.py, same shapes and counts.
//!
//! `cargo bench --bench ops`; without a GPU it prints why and exits successfully.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cudarc::driver::CudaSlice;
use qwen_kernels::ops::argmax::{argmax, ArgmaxOutput};
use qwen_kernels::ops::sampling::{sample, Sampler, SamplingParams};
use qwen_kernels::ops::gemm::linear;
use qwen_kernels::ops::gemv::gemv;
use qwen_kernels::ops::kv_cache::{KvCacheViewMut, KvLayout};
use qwen_kernels::ops::rope::{rope, rope_kv, RopeTable};
use qwen_kernels::ops::swiglu::swiglu_fused;
use qwen_kernels::{DType, DeviceTensor, Gpu, HostTensor};
use std::time::Duration;

const ROTATE_BYTES: usize = 256 << 20;
const VOCAB: usize = 151936;
const REAL_VOCAB: usize = 151665;

#[derive(Clone, Copy)]
struct Model {
    name: &'static str,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    theta: f32,
    max_positions: usize,
}

const MODELS: [Model; 2] = [
    Model { name: "qwen2.5-0.5b", hidden: 896, intermediate: 4864, heads: 14, kv_heads: 2, head_dim: 64, theta: 1.0e6, max_positions: 32768 },
    Model { name: "vibethinker-1.5b", hidden: 1536, intermediate: 8960, heads: 12, kv_heads: 2, head_dim: 128, theta: 1.0e4, max_positions: 4096 },
];

#[derive(Clone, Copy)]
enum Op {
    Swiglu { width: usize },
    Argmax,
    /// Prefill form (in place) when `kv` is false.
    Rope { kv: bool },
    Linear { name: &'static str, k: usize, n: usize, f32_out: bool },
    Sample { name: &'static str, params: SamplingParams },
    /// The decode GEMV (ops::gemv) at a linear layer's shape.
    Gemv { name: &'static str, k: usize, n: usize, f32_out: bool },
}

struct Case {
    model: Model,
    op: Op,
    rows: usize,
    dtype: DType,
}

impl Case {
    fn name(&self) -> String {
        let (op, rows) = match self.op {
            Op::Swiglu { .. } => ("swiglu_fused".to_string(), "rows"),
            Op::Argmax => ("argmax".to_string(), "rows"),
            Op::Sample { name, .. } => (format!("sample/{name}"), "rows"),
            Op::Rope { kv: true } => ("rope_kv".to_string(), "tokens"),
            Op::Rope { kv: false } => ("rope".to_string(), "tokens"),
            Op::Linear { name, f32_out, .. } => (format!("linear/{name}{}", if f32_out { "/f32out" } else { "" }), "rows"),
            Op::Gemv { name, f32_out, .. } => (format!("gemv/{name}{}", if f32_out { "/f32out" } else { "" }), "rows"),
        };
        format!("{op}/{}/{}/{rows}{}", self.model.name, self.dtype, self.rows)
    }

    fn bytes(&self) -> usize {
        let (s, r, m) = (self.dtype.size(), self.rows, self.model);
        match self.op {
            Op::Swiglu { width } => 3 * r * width * s,
            Op::Argmax => 4 * r * REAL_VOCAB + 8 * r,
            Op::Sample { .. } => 4 * r * REAL_VOCAB + 40 * r,
            Op::Rope { kv: true } => (2 * r * m.heads * m.head_dim + 4 * r * m.kv_heads * m.head_dim) * s + 8 * r,
            Op::Rope { kv: false } => 2 * r * (m.heads + m.kv_heads) * m.head_dim * s + 4 * r,
            Op::Linear { k, n, f32_out, .. } | Op::Gemv { k, n, f32_out, .. } => (n * k + r * k + n) * s + r * n * if f32_out { 4 } else { s },
        }
    }

    fn flops(&self) -> Option<f64> {
        match self.op {
            Op::Linear { k, n, .. } | Op::Gemv { k, n, .. } => Some(2.0 * self.rows as f64 * k as f64 * n as f64),
            _ => None,
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let bf16 = DType::BF16;
    for model in MODELS {
        for rows in [1, 64, 4096] {
            v.push(Case { model, op: Op::Swiglu { width: model.intermediate }, rows, dtype: bf16 });
        }
        for rows in [1, 64] {
            v.push(Case { model, op: Op::Rope { kv: true }, rows, dtype: bf16 });
        }
        v.push(Case { model, op: Op::Rope { kv: false }, rows: 4096, dtype: bf16 });
        let (h, i, qkv) = (model.hidden, model.intermediate, (model.heads + 2 * model.kv_heads) * model.head_dim);
        for rows in [1, 16, 32] {
            v.push(Case { model, op: Op::Gemv { name: "qkv", k: h, n: qkv, f32_out: false }, rows, dtype: bf16 });
            v.push(Case { model, op: Op::Gemv { name: "gate_up", k: h, n: 2 * i, f32_out: false }, rows, dtype: bf16 });
            v.push(Case { model, op: Op::Gemv { name: "down", k: i, n: h, f32_out: false }, rows, dtype: bf16 });
            v.push(Case { model, op: Op::Gemv { name: "lm_head", k: h, n: VOCAB, f32_out: true }, rows, dtype: bf16 });
        }
        for rows in [1, 16, 32, 64, 4096] {
            v.push(Case { model, op: Op::Linear { name: "qkv", k: h, n: qkv, f32_out: false }, rows, dtype: bf16 });
            v.push(Case { model, op: Op::Linear { name: "gate_up", k: h, n: 2 * i, f32_out: false }, rows, dtype: bf16 });
            v.push(Case { model, op: Op::Linear { name: "down", k: i, n: h, f32_out: false }, rows, dtype: bf16 });
        }
        for rows in [1, 64] {
            v.push(Case { model, op: Op::Linear { name: "lm_head", k: h, n: VOCAB, f32_out: true }, rows, dtype: bf16 });
        }
    }
    for rows in [1, 8, 64] {
        v.push(Case { model: MODELS[0], op: Op::Argmax, rows, dtype: DType::F32 });
    }
    let sampled = |temperature, top_k, top_p| SamplingParams { temperature, top_k, top_p, min_p: 0.0, seed: 1 };
    for (name, params) in [("plain", sampled(1.0, 0, 1.0)), ("top_p", sampled(1.0, 0, 0.95)), ("qwen", sampled(0.7, 20, 0.8))] {
        for rows in [1, 8, 64] {
            v.push(Case { model: MODELS[0], op: Op::Sample { name, params }, rows, dtype: DType::F32 });
        }
    }
    v
}

/// `windows` copies of every buffer a case touches; launch i uses window i % windows.
struct Buffers {
    a: DeviceTensor,
    b: DeviceTensor,
    c: DeviceTensor,
    d: DeviceTensor,
    e: DeviceTensor,
    ints: CudaSlice<i32>,
    table: Option<RopeTable>,
    out: Option<ArgmaxOutput>,
    sampler: Option<Sampler>,
    windows: usize,
}

impl Buffers {
    fn new(gpu: &Gpu, case: &Case) -> Buffers {
        let windows = ROTATE_BYTES.div_ceil(case.bytes()).clamp(2, 4096);
        let (r, m, dt) = (case.rows, case.model, case.dtype);
        let t = |dtype: DType, dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).expect("alloc");
        let none = || DeviceTensor::zeros(gpu, DType::F32, &[1]).expect("alloc");
        let mut ints = vec![0i32; 2 * r];
        for (j, p) in ints.iter_mut().enumerate() {
            // positions 0..r, then the slot mapping: token j to page j, offset j
            *p = if j < r { j as i32 } else { ((j - r) * r + (j - r)) as i32 };
        }
        let ints = gpu.stream().clone_htod(&ints).expect("upload");
        let (mut table, mut out, mut sampler) = (None, None, None);
        let [a, b, c, d, e] = match case.op {
            Op::Swiglu { width } => [t(dt, &[windows * r, 2 * width]), t(dt, &[windows * r, width]), none(), none(), none()],
            Op::Argmax => {
                out = Some(ArgmaxOutput::new(gpu, r).expect("alloc"));
                [t(DType::F32, &[windows * r, VOCAB]), none(), none(), none(), none()]
            }
            Op::Sample { params, .. } => {
                let mut s = Sampler::new(gpu, r).expect("alloc");
                s.set(gpu, &(0..r as u64).map(|i| SamplingParams { seed: i, ..params }).collect::<Vec<_>>()).expect("params");
                sampler = Some(s);
                // Logits like a model's: normal(0, 2) (a sum of four uniforms), one window drawn
                // and copied to the others.
                let mut state = 0x9E37_79B9_7F4A_7C15u64;
                let mut next = || {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                };
                let window: Vec<f32> = (0..r * VOCAB).map(|_| 4.0 * (next() + next() + next() + next())).collect();
                let all: Vec<f32> = (0..windows).flat_map(|_| window.iter().copied()).collect();
                let logits = DeviceTensor::from_host(gpu, &HostTensor::from_f32(DType::F32, &[windows * r, VOCAB], all).expect("host")).expect("upload");
                [logits, none(), none(), none(), none()]
            }
            Op::Rope { kv } => {
                table = Some(RopeTable::new(gpu, m.theta, m.head_dim, m.max_positions).expect("table"));
                let q = t(dt, &[windows * r, m.heads, m.head_dim]);
                let k = t(dt, &[windows * r, m.kv_heads, m.head_dim]);
                if kv {
                    // One cache window per token window: r pages of r positions, HND [r, kv_heads, r, d].
                    let cache = [windows * r, m.kv_heads, r, m.head_dim];
                    [q, k, t(dt, &[windows * r, m.kv_heads, m.head_dim]), t(dt, &cache), t(dt, &cache)]
                } else {
                    [q, k, none(), none(), none()]
                }
            }
            Op::Linear { k, n, f32_out, .. } | Op::Gemv { k, n, f32_out, .. } => {
                let y_dtype = if f32_out { DType::F32 } else { dt };
                [t(dt, &[windows * r, k]), t(dt, &[windows * n, k]), t(dt, &[n]), t(y_dtype, &[windows * r, n]), none()]
            }
        };
        Buffers { a, b, c, d, e, ints, table, out, sampler, windows }
    }

    fn launch(&mut self, gpu: &Gpu, case: &Case, i: usize) {
        let w = i % self.windows;
        let r = case.rows;
        let rows = w * r..(w + 1) * r;
        match case.op {
            Op::Swiglu { .. } => {
                let x = self.a.view();
                let mut y = self.b.view_mut();
                swiglu_fused(gpu, &x.rows(rows.clone()).unwrap(), &mut y.rows_mut(rows).unwrap()).unwrap();
            }
            Op::Argmax => {
                let logits = self.a.view();
                argmax(gpu, &logits.rows(rows).unwrap(), REAL_VOCAB, self.out.as_mut().unwrap(), true).unwrap();
            }
            Op::Sample { .. } => {
                let logits = self.a.view();
                sample(gpu, &logits.rows(rows).unwrap(), REAL_VOCAB, self.sampler.as_mut().unwrap()).unwrap();
            }
            Op::Rope { kv } => {
                let table = self.table.as_mut().unwrap();
                let (pos, slots) = (self.ints.slice(0..r), self.ints.slice(r..2 * r));
                let mut q = self.a.view_mut();
                let mut q = q.rows_mut(rows.clone()).unwrap();
                if kv {
                    let (k, v) = (self.b.view(), self.c.view());
                    let (mut kc, mut vc) = (self.d.view_mut(), self.e.view_mut());
                    let mut cache = KvCacheViewMut { k: kc.rows_mut(rows.clone()).unwrap(), v: vc.rows_mut(rows.clone()).unwrap(), layout: KvLayout::Hnd };
                    rope_kv(gpu, table, &mut q, &k.rows(rows.clone()).unwrap(), &v.rows(rows).unwrap(), &pos, &slots, &mut cache).unwrap();
                } else {
                    let mut k = self.b.view_mut();
                    rope(gpu, table, &mut q, &mut k.rows_mut(rows).unwrap(), &pos).unwrap();
                }
            }
            Op::Linear { n, .. } => {
                let (x, wt, b) = (self.a.view(), self.b.view(), self.c.view());
                let mut y = self.d.view_mut();
                let wt = wt.rows(w * n..(w + 1) * n).unwrap();
                linear(gpu, &x.rows(rows.clone()).unwrap(), &wt, Some(&b), &mut y.rows_mut(rows).unwrap()).unwrap();
            }
            Op::Gemv { n, .. } => {
                let (x, wt, b) = (self.a.view(), self.b.view(), self.c.view());
                let mut y = self.d.view_mut();
                let wt = wt.rows(w * n..(w + 1) * n).unwrap();
                gemv(gpu, &x.rows(rows.clone()).unwrap(), &wt, Some(&b), &mut y.rows_mut(rows).unwrap()).unwrap();
            }
        }
    }

    fn time(&mut self, gpu: &Gpu, case: &Case, iters: u64) -> Duration {
        common::time_launches(gpu, iters, |i| self.launch(gpu, case, i))
    }
}

fn bench(c: &mut Criterion) {
    let Some(gpu) = common::open_gpu("ops") else { return };
    let copy = common::copy_bandwidth_gbps(&gpu);
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("ops");
    for case in cases() {
        let mut buffers = Buffers::new(&gpu, &case);
        buffers.time(&gpu, &case, 20); // warm-up
        group.throughput(Throughput::BytesDecimal(case.bytes() as u64));
        group.bench_function(case.name(), |b| b.iter_custom(|iters| buffers.time(&gpu, &case, iters)));
        let per_call = (0..10).map(|_| buffers.time(&gpu, &case, 100).as_secs_f64() / 100.0).sum::<f64>() / 10.0;
        summary.push((case.name(), case.bytes(), case.flops(), per_call));
        drop(buffers);
    }
    group.finish();

    let i = gpu.info();
    let commit = common::commit();
    println!(
        "\nops summary: {} (sm_{}{}), commit {}, device copy bandwidth {copy:.0} GB/s",
        i.name,
        i.compute_capability.0,
        i.compute_capability.1,
        commit
    );
    println!("{:<48} {:>12} {:>10} {:>9} {:>9} {:>9}", "case", "bytes", "time_us", "GB/s", "%copy", "TFLOP/s");
    for (name, bytes, flops, seconds) in summary {
        let gbps = bytes as f64 / seconds / 1e9;
        let tflops = flops.map_or("-".to_string(), |f| format!("{:.2}", f / seconds / 1e12));
        println!("{name:<48} {bytes:>12} {:>10.2} {gbps:>9.1} {:>8.1}% {tflops:>9}", seconds * 1e6, 100.0 * gbps / copy);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench
}

criterion_main!(benches);
