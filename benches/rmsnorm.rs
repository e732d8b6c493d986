//! RMSNorm and fused add + RMSNorm throughput at the models' shapes.
//!
//! Bytes counted per call (s = bytes per element, R rows of H elements):
//!   rmsnorm      read x, write y, read w:                          (2 R H + H) s
//!   add_rmsnorm  read x and residual, write residual and y, read w: (4 R H + H) s
//! Timing: CUDA events around a batch of launches after warm-up; each launch reads and writes a
//! different window of buffers larger than L2 (rotation), so bytes come from DRAM, as in a model.
//! The copy bandwidth of the same device (cuMemcpyDtoD of 512 MiB, counted as read + write) is
//! measured in the same run; results are printed as time, GB/s (1e9 bytes/s) and % of that copy.
//!
//! `cargo bench --bench rmsnorm` (criterion's statistics) then a summary table; without a GPU it
//! prints why and exits successfully.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qwen_kernels::ops::rmsnorm::{add_rmsnorm_with_path, rmsnorm_with_path, Path};
use qwen_kernels::{DType, DeviceTensor, Gpu};
use std::time::Duration;

/// Rotation footprint: comfortably larger than the largest L2 we run on (H100/H200: 50 MiB).
const ROTATE_BYTES: usize = 256 << 20;

struct Case {
    model: &'static str,
    hidden: usize,
    rows: usize,
    dtype: DType,
    fused: bool,
    path: Path,
}

impl Case {
    fn name(&self) -> String {
        let op = if self.fused { "add_rmsnorm" } else { "rmsnorm" };
        let path = match self.path {
            Path::Auto => "",
            Path::Vector16 => "/vec16",
            Path::Scalar => "/scalar",
        };
        format!("{op}{path}/{}/{}/rows{}", self.model, self.dtype, self.rows)
    }

    fn bytes(&self) -> usize {
        let per_row_tensors = if self.fused { 4 } else { 2 };
        (per_row_tensors * self.rows * self.hidden + self.hidden) * self.dtype.size()
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (model, hidden) in [("qwen2.5-0.5b", 896), ("vibethinker-1.5b", 1536)] {
        for rows in [1, 64, 4096] {
            for fused in [false, true] {
                v.push(Case { model, hidden, rows, dtype: DType::BF16, fused, path: Path::Auto });
            }
        }
        // Vector against scalar access, prefill-sized.
        v.push(Case { model, hidden, rows: 4096, dtype: DType::BF16, fused: true, path: Path::Scalar });
        v.push(Case { model, hidden, rows: 4096, dtype: DType::F32, fused: true, path: Path::Auto });
    }
    v
}

/// Buffers for `case`, `windows` copies of each activation, plus the weight.
struct Buffers {
    x: DeviceTensor,
    residual: DeviceTensor,
    y: DeviceTensor,
    w: DeviceTensor,
    windows: usize,
}

impl Buffers {
    fn new(gpu: &Gpu, case: &Case) -> Buffers {
        let window_bytes = case.bytes();
        let windows = ROTATE_BYTES.div_ceil(window_bytes).max(2);
        let dims = [windows * case.rows, case.hidden];
        let t = |dims: &[usize]| DeviceTensor::zeros(gpu, case.dtype, dims).expect("alloc");
        Buffers { x: t(&dims), residual: t(&dims), y: t(&dims), w: t(&[case.hidden]), windows }
    }

    fn launch(&mut self, gpu: &Gpu, case: &Case, i: usize) {
        let rows = (i % self.windows) * case.rows..(i % self.windows + 1) * case.rows;
        let x = self.x.view();
        let x = x.rows(rows.clone()).unwrap();
        let mut y = self.y.view_mut();
        let mut y = y.rows_mut(rows.clone()).unwrap();
        if case.fused {
            let mut r = self.residual.view_mut();
            let mut r = r.rows_mut(rows).unwrap();
            add_rmsnorm_with_path(gpu, &x, &mut r, &self.w.view(), 1e-6, &mut y, case.path).unwrap();
        } else {
            rmsnorm_with_path(gpu, &x, &self.w.view(), 1e-6, &mut y, case.path).unwrap();
        }
    }

    /// Event-timed duration of `iters` launches.
    fn time(&mut self, gpu: &Gpu, case: &Case, iters: u64) -> Duration {
        common::time_launches(gpu, iters, |i| self.launch(gpu, case, i))
    }
}

fn bench(c: &mut Criterion) {
    let Some(gpu) = common::open_gpu("rmsnorm") else { return };
    let copy = common::copy_bandwidth_gbps(&gpu);
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("rmsnorm");
    for case in cases() {
        let mut buffers = Buffers::new(&gpu, &case);
        buffers.time(&gpu, &case, 20); // warm-up
        group.throughput(Throughput::BytesDecimal(case.bytes() as u64));
        group.bench_function(case.name(), |b| b.iter_custom(|iters| buffers.time(&gpu, &case, iters)));
        // Our own summary: mean of 10 batches of 200 launches.
        let per_call = (0..10).map(|_| buffers.time(&gpu, &case, 200).as_secs_f64() / 200.0).sum::<f64>() / 10.0;
        summary.push((case.name(), case.bytes(), per_call));
    }
    group.finish();

    let i = gpu.info();
    let commit = common::commit();
    println!(
        "\nrmsnorm summary: {} (sm_{}{}), commit {}, device copy bandwidth {copy:.0} GB/s",
        i.name,
        i.compute_capability.0,
        i.compute_capability.1,
        commit
    );
    println!("{:<44} {:>12} {:>10} {:>9} {:>9}", "case", "bytes", "time_us", "GB/s", "%copy");
    for (name, bytes, seconds) in summary {
        let gbps = bytes as f64 / seconds / 1e9;
        println!("{name:<44} {bytes:>12} {:>10.2} {gbps:>9.1} {:>8.1}%", seconds * 1e6, 100.0 * gbps / copy);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench
}

criterion_main!(benches);
