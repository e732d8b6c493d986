//! The schedule sweep (software device only): each kernel runs under several schedules of threads,
//! blocks and cp.async completion (softgpu/runtime.cpp) and must give bit-identical results. A
//! kernel that reads shared memory before the barrier that orders it, or restages a buffer that
//! other warps still read, gives different bits under some order: this is how the suite finds
//! missing barriers without a GPU, as compute-sanitizer's racecheck does on one.

use crate::attention::{cache_with, run_decode, run_prefill};
use crate::common::{rng, uniform};
use crate::GpuTest;
use qwen_kernels::ops::argmax::{argmax, ArgmaxOutput};
use qwen_kernels::ops::attention::PrefillPath;
use qwen_kernels::ops::rmsnorm::add_rmsnorm;
use qwen_kernels::{DType, DeviceTensor, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[
    ("schedules::attention_prefill", attention_prefill),
    ("schedules::attention_decode", attention_decode),
    ("schedules::add_rmsnorm", rmsnorm),
    ("schedules::argmax", argmax_rows),
];

/// The default first; then orders chosen to pull warps apart (reverse, seeded random, one warp
/// running ahead of the others) and cp.async copies that land as early or as late as allowed.
pub const SCHEDULES: &[&str] = &[
    "threads=forward,blocks=forward,cp.async=wait",
    "threads=reverse,blocks=reverse,cp.async=issue",
    "threads=random:1,blocks=random:1,cp.async=random:1",
    "threads=random:2,blocks=random:2,cp.async=random:2",
    "threads=warp-ahead:0,blocks=forward,cp.async=issue",
    "threads=warp-ahead:3,blocks=reverse,cp.async=wait",
];

/// Run `f` under every schedule; every result must equal the first bit for bit.
fn sweep(gpu: &Gpu, what: &str, f: impl Fn() -> Vec<f32>) {
    let mut first: Option<Vec<u32>> = None;
    for spec in SCHEDULES {
        gpu.set_software_schedule(spec).unwrap();
        let bits: Vec<u32> = f().iter().map(|x| x.to_bits()).collect();
        match &first {
            None => first = Some(bits),
            Some(expected) => {
                if let Some(i) = (0..bits.len()).find(|&i| bits[i] != expected[i]) {
                    gpu.set_software_schedule(SCHEDULES[0]).unwrap();
                    panic!(
                        "{what}: under schedule {spec} the output differs from {} at element {i} of {}: {} vs {}",
                        SCHEDULES[0],
                        bits.len(),
                        f32::from_bits(bits[i]),
                        f32::from_bits(expected[i])
                    );
                }
            }
        }
    }
    gpu.set_software_schedule(SCHEDULES[0]).unwrap();
}

/// Tensor-core prefill (several K/V tiles, so both buffers are restaged) and the SIMT prefill.
fn attention_prefill(gpu: &Gpu) {
    let mut r = rng(91);
    let (tokens, context, heads, kv_heads, dim) = (70, 300, 4, 2, 64);
    for dtype in [DType::BF16, DType::F16] {
        let q = uniform(&mut r, dtype, &[tokens, heads, dim], -1.0, 1.0);
        let k = uniform(&mut r, dtype, &[context, kv_heads, dim], -1.0, 1.0);
        let v = uniform(&mut r, dtype, &[context, kv_heads, dim], -1.0, 1.0);
        for path in [PrefillPath::TensorCore, PrefillPath::Simt] {
            let what = format!("prefill {dtype} {path:?} T {tokens} S {context}");
            sweep(gpu, &what, || run_prefill(gpu, &q, &k, &v, path, &what));
        }
    }
}

/// Flash-decoding with several splits per row, merged by whichever split finishes last (the
/// block schedules change which one: the merge's fixed order makes that invisible).
fn attention_decode(gpu: &Gpu) {
    let mut r = rng(92);
    let (heads, kv_heads, dim, capacity) = (8, 2, 128, 300);
    let dtype = DType::BF16;
    let k = uniform(&mut r, dtype, &[capacity, kv_heads, dim], -1.0, 1.0);
    let v = uniform(&mut r, dtype, &[capacity, kv_heads, dim], -1.0, 1.0);
    let (kc, vc) = cache_with(&k, &v, 2, 1, capacity, f32::NAN);
    let lens = [300, 1, 129];
    let q = uniform(&mut r, dtype, &[lens.len(), heads, dim], -1.0, 1.0);
    let what = "decode bf16 D 128 lens [300, 1, 129] chunk 64";
    sweep(gpu, what, || run_decode(gpu, &q, &kc, &vc, &[1, 1, 1], &lens, 64, what));
}

fn rmsnorm(gpu: &Gpu) {
    let mut r = rng(93);
    for (dtype, hidden) in [(DType::BF16, 896), (DType::F32, 500)] {
        let rows = 5;
        let x = uniform(&mut r, dtype, &[rows, hidden], -3.0, 3.0);
        let res = uniform(&mut r, dtype, &[rows, hidden], -3.0, 3.0);
        let w = uniform(&mut r, dtype, &[hidden], -2.0, 2.0);
        let what = format!("add_rmsnorm {dtype} hidden {hidden}");
        sweep(gpu, &what, || {
            let dx = DeviceTensor::from_host(gpu, &x).unwrap();
            let mut dr = DeviceTensor::from_host(gpu, &res).unwrap();
            let dw = DeviceTensor::from_host(gpu, &w).unwrap();
            let mut out = DeviceTensor::from_host(gpu, &HostTensor::full(dtype, &[rows, hidden], f32::NAN).unwrap()).unwrap();
            add_rmsnorm(gpu, &dx.view(), &mut dr.view_mut(), &dw.view(), 1e-6, &mut out.view_mut()).unwrap();
            let mut all = out.to_host(gpu).unwrap().into_data();
            all.extend(dr.to_host(gpu).unwrap().into_data());
            all
        });
    }
}

fn argmax_rows(gpu: &Gpu) {
    let mut r = rng(94);
    let (rows, vocab, n_valid) = (3, 5000, 4990);
    // Few distinct values: many ties, so the lowest-index rule is exercised under every order.
    let logits = uniform(&mut r, DType::BF16, &[rows, vocab], -4.0, 4.0);
    let logits = HostTensor::from_f32(DType::BF16, &[rows, vocab], logits.data().iter().map(|x| x.round()).collect()).unwrap();
    sweep(gpu, "argmax bf16 3 x 5000 with ties", || {
        let d = DeviceTensor::from_host(gpu, &logits).unwrap();
        let mut out = ArgmaxOutput::new(gpu, rows).unwrap();
        argmax(gpu, &d.view(), n_valid, &mut out, true).unwrap();
        out.to_host(gpu, rows)
            .unwrap()
            .iter()
            .flat_map(|m| match m {
                Some((i, v)) => [*i as f32, *v],
                None => [f32::NAN, f32::NAN],
            })
            .collect()
    });
}
