//! Attention throughput at both models' head configurations (Qwen2.5-0.5B: 14 q / 2 kv heads,
//! head_dim 64; VibeThinker-1.5B: 12 / 2, head_dim 128), bf16.
//!
//! Prefill (one sequence, T = S new tokens, causal), counted as FLOPs:
//!     4 * T * S * D * heads / 2
//! two matmuls (q k^T and p v) of 2 flops per multiply-add over T x S x D per head, halved by the
//! causal mask (FlashAttention's convention, so the numbers compare with its published ones). The
//! tensor-core kernel really issues 1.5x (f16) or 2x (bf16) of the mma work of P V because the
//! weights are split into 16-bit terms; that extra work is not counted. Inputs are not rotated:
//! prefill at these sizes is compute bound.
//!
//! Decode (B sequences, one new token each, every sequence `len` positions long), counted as bytes
//! of K and V read from the cache:
//!     B * 2 * kv_heads * len * D * 2 bytes
//! (q, out and the workspace are < 1% of that at len >= 1k). The cache has B x windows slots and
//! call i reads window i % windows (slots via device arrays), windows chosen so the footprint passes
//! 256 MiB: bytes come from DRAM, as in a model. GB/s is 1e9 bytes/s, beside the device's copy
//! bandwidth (cuMemcpyDtoD, read + write) measured in the same run.
//!
//! `cargo bench --bench attention`, then a summary table; without a GPU it prints why and exits
//! successfully. The PyTorch peer (scaled_dot_product_attention, flash and cuDNN backends) is
//! benches/peers/attention_torch.py, printing the same columns.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cudarc::driver::CudaSlice;
use qwen_kernels::ops::attention::{decode, decode_workspace_len, prefill_with_path, PrefillPath, DEFAULT_DECODE_CHUNK};
use qwen_kernels::{DType, DeviceTensor, Gpu};
use std::time::Duration;

const ROTATE_BYTES: usize = 256 << 20;
const MODELS: [(&str, usize, usize, usize); 2] = [("qwen2.5-0.5b", 14, 2, 64), ("vibethinker-1.5b", 12, 2, 128)];

#[derive(Clone, Copy)]
enum Kind {
    Prefill { tokens: usize, path: PrefillPath },
    Decode { batch: usize, len: usize },
}

#[derive(Clone, Copy)]
struct Case {
    model: &'static str,
    heads: usize,
    kv_heads: usize,
    dim: usize,
    dtype: DType,
    kind: Kind,
}

impl Case {
    fn name(&self) -> String {
        match self.kind {
            Kind::Prefill { tokens, path } => {
                let path = match path {
                    PrefillPath::Auto => "",
                    PrefillPath::TensorCore => "/tc",
                    PrefillPath::Simt => "/simt",
                };
                format!("prefill{path}/{}/{}/b1/T{tokens}", self.model, self.dtype)
            }
            Kind::Decode { batch, len } => format!("decode/{}/{}/b{batch}/ctx{len}", self.model, self.dtype),
        }
    }

    /// FLOPs (prefill) or KV bytes (decode) of one call, as the header counts them.
    fn work(&self) -> u64 {
        match self.kind {
            Kind::Prefill { tokens, .. } => (4 * tokens * tokens * self.dim * self.heads / 2) as u64,
            Kind::Decode { batch, len } => (batch * 2 * self.kv_heads * len * self.dim * self.dtype.size()) as u64,
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (model, heads, kv_heads, dim) in MODELS {
        let case = |dtype, kind| Case { model, heads, kv_heads, dim, dtype, kind };
        for tokens in [1024, 4096, 16384, 32768] {
            v.push(case(DType::BF16, Kind::Prefill { tokens, path: PrefillPath::Auto }));
        }
        v.push(case(DType::F16, Kind::Prefill { tokens: 4096, path: PrefillPath::Auto }));
        v.push(case(DType::BF16, Kind::Prefill { tokens: 4096, path: PrefillPath::Simt }));
        for batch in [1, 8, 64] {
            for len in [1024, 4096, 16384, 32768] {
                v.push(case(DType::BF16, Kind::Decode { batch, len }));
            }
        }
    }
    v
}

enum Buffers {
    Prefill { q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, o: DeviceTensor, path: PrefillPath },
    Decode {
        q: DeviceTensor,
        k: DeviceTensor,
        v: DeviceTensor,
        o: DeviceTensor,
        ws: DeviceTensor,
        slots: Vec<CudaSlice<i32>>,
        lens: CudaSlice<i32>,
    },
}

impl Buffers {
    fn new(gpu: &Gpu, case: &Case) -> Buffers {
        let t = |dims: &[usize]| DeviceTensor::zeros(gpu, case.dtype, dims).expect("alloc");
        // Values: small random-looking data would not change the timing; zeros keep setup cheap
        // and every logit equal (the softmax does the same work for any values).
        match case.kind {
            Kind::Prefill { tokens, path } => Buffers::Prefill {
                q: t(&[tokens, case.heads, case.dim]),
                k: t(&[tokens, case.kv_heads, case.dim]),
                v: t(&[tokens, case.kv_heads, case.dim]),
                o: t(&[tokens, case.heads, case.dim]),
                path,
            },
            Kind::Decode { batch, len } => {
                let windows = ROTATE_BYTES.div_ceil(case.work() as usize).max(2);
                let slots = batch * windows;
                let ws_len = decode_workspace_len(batch, case.heads, case.dim, len, DEFAULT_DECODE_CHUNK);
                Buffers::Decode {
                    q: t(&[batch, case.heads, case.dim]),
                    k: t(&[slots, case.kv_heads, len, case.dim]),
                    v: t(&[slots, case.kv_heads, len, case.dim]),
                    o: t(&[batch, case.heads, case.dim]),
                    ws: DeviceTensor::zeros(gpu, DType::F32, &[ws_len]).expect("alloc"),
                    slots: (0..windows)
                        .map(|w| gpu.stream().clone_htod(&(0..batch).map(|b| (w * batch + b) as i32).collect::<Vec<_>>()).unwrap())
                        .collect(),
                    lens: gpu.stream().clone_htod(&vec![len as i32; batch]).unwrap(),
                }
            }
        }
    }

    fn launch(&mut self, gpu: &Gpu, i: usize) {
        match self {
            Buffers::Prefill { q, k, v, o, path } => {
                prefill_with_path(gpu, &q.view(), &k.view(), &v.view(), &mut o.view_mut(), *path).unwrap();
            }
            Buffers::Decode { q, k, v, o, ws, slots, lens } => {
                let s = &slots[i % slots.len()];
                decode(gpu, &q.view(), &k.view(), &v.view(), &s.slice(..), &lens.slice(..), &mut ws.view_mut(), &mut o.view_mut()).unwrap();
            }
        }
    }

    /// Event-timed duration of `iters` launches.
    fn time(&mut self, gpu: &Gpu, iters: u64) -> Duration {
        common::time_launches(gpu, iters, |i| self.launch(gpu, i))
    }
}

fn bench(c: &mut Criterion) {
    let Some(gpu) = common::open_gpu("attention") else { return };
    let copy = common::copy_bandwidth_gbps(&gpu);
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("attention");
    for case in cases() {
        let mut buffers = Buffers::new(&gpu, &case);
        buffers.time(&gpu, 3); // warm-up
        // Calls per timed batch: about 20 ms of work at 100 TFLOP/s or 2 TB/s.
        let per_call_guess = match case.kind {
            Kind::Prefill { .. } => case.work() as f64 / 100e12,
            Kind::Decode { .. } => case.work() as f64 / 2e12 + 5e-6,
        };
        let batch = ((0.02 / per_call_guess) as u64).clamp(1, 500);
        match case.kind {
            Kind::Prefill { .. } => group.throughput(Throughput::Elements(case.work())),
            Kind::Decode { .. } => group.throughput(Throughput::BytesDecimal(case.work())),
        };
        group.bench_function(case.name(), |b| b.iter_custom(|iters| buffers.time(&gpu, iters)));
        let per_call = (0..5).map(|_| buffers.time(&gpu, batch).as_secs_f64() / batch as f64).sum::<f64>() / 5.0;
        summary.push((case, per_call));
    }
    group.finish();

    let i = gpu.info();
    let commit = common::commit();
    println!(
        "\nattention summary: {} (sm_{}{}), commit {}, device copy bandwidth {copy:.0} GB/s",
        i.name,
        i.compute_capability.0,
        i.compute_capability.1,
        commit
    );
    println!("{:<48} {:>16} {:>11} {:>9} {:>9} {:>8}", "case", "work", "time_us", "TFLOP/s", "GB/s", "%copy");
    for (case, seconds) in summary {
        let work = case.work();
        match case.kind {
            Kind::Prefill { .. } => {
                let tflops = work as f64 / seconds / 1e12;
                println!("{:<48} {:>13} FL {:>11.1} {tflops:>9.1} {:>9} {:>8}", case.name(), work, seconds * 1e6, "-", "-");
            }
            Kind::Decode { .. } => {
                let gbps = work as f64 / seconds / 1e9;
                println!("{:<48} {:>13} B  {:>11.1} {:>9} {gbps:>9.1} {:>7.1}%", case.name(), work, seconds * 1e6, "-", 100.0 * gbps / copy);
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(800));
    targets = bench
}

criterion_main!(benches);
