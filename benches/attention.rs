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
//! (q, out and the workspace are < 1% of that at len >= 1k). The cache has B x windows sequences
//! and call i reads window i % windows (through its block tables), windows chosen so the footprint
//! passes 256 MiB: bytes come from DRAM, as in a model. `decode/...` is a cache of one page of
//! `len` positions per sequence (the slot cache); `decode-pN/...` the same sequences in pages of N
//! positions (1, 16, 64, 256), handed out in a shuffled order as an engine's allocator would after
//! a while, to price the block-table indirection. `decode/.../ctxN/cChK` (N of 256, 512 and 2048
//! at batch 1 and 16) forces the launch's shape: splits of C keys, K query heads a block, beside
//! the defaults (64-key splits; one head a block while the grid has fewer blocks than SMs) under
//! the plain name: at short contexts the time is latency, not bytes. GB/s is 1e9 bytes/s, beside the device's copy
//! bandwidth (cuMemcpyDtoD, read + write) measured in the same run.
//!
//! Ragged prefill (`ragged/.../sN/T...`): N sequences of T new tokens each over a paged cache
//! (pages of 16, NHD) in one launch, FLOPs counted as N prefills of T; compare with `prefill/.../T`
//! (one sequence per launch) times N.
//!
//! `cargo bench --bench attention`, then a summary table; without a GPU it prints why and exits
//! successfully. The PyTorch peer (scaled_dot_product_attention, flash and cuDNN backends) is
//! benches/peers/attention_torch.py, printing the same columns.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cudarc::driver::CudaSlice;
use qwen_kernels::ops::attention::{
    decode, decode_with_heads_per_block, decode_workspace_len, prefill_paged, prefill_with_path, AttentionStatus, PrefillPath, DEFAULT_DECODE_CHUNK,
};
use qwen_kernels::ops::kv_cache::{KvCacheView, KvLayout, PagedBatch};
use qwen_kernels::{DType, DeviceTensor, Gpu};
use std::time::Duration;

const ROTATE_BYTES: usize = 256 << 20;
const MODELS: [(&str, usize, usize, usize); 2] = [("qwen2.5-0.5b", 14, 2, 64), ("vibethinker-1.5b", 12, 2, 128)];

#[derive(Clone, Copy)]
enum Kind {
    Prefill { tokens: usize, path: PrefillPath },
    /// `page`: None for one page of `len` positions per sequence. `shape`: the launch's split
    /// length and query heads a block, None for the defaults (DEFAULT_DECODE_CHUNK, the policy).
    Decode { batch: usize, len: usize, page: Option<usize>, shape: Option<(usize, usize)> },
    Ragged { seqs: usize, tokens: usize },
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
            Kind::Decode { batch, len, page: None, shape: None } => format!("decode/{}/{}/b{batch}/ctx{len}", self.model, self.dtype),
            Kind::Decode { batch, len, page: None, shape: Some((chunk, heads)) } => {
                format!("decode/{}/{}/b{batch}/ctx{len}/c{chunk}h{heads}", self.model, self.dtype)
            }
            Kind::Decode { batch, len, page: Some(p), .. } => format!("decode-p{p}/{}/{}/b{batch}/ctx{len}", self.model, self.dtype),
            Kind::Ragged { seqs, tokens } => format!("ragged/{}/{}/s{seqs}/T{tokens}", self.model, self.dtype),
        }
    }

    /// FLOPs (prefill) or KV bytes (decode) of one call, as the header counts them.
    fn work(&self) -> u64 {
        match self.kind {
            Kind::Prefill { tokens, .. } => (4 * tokens * tokens * self.dim * self.heads / 2) as u64,
            Kind::Decode { batch, len, .. } => (batch * 2 * self.kv_heads * len * self.dim * self.dtype.size()) as u64,
            Kind::Ragged { seqs, tokens } => (seqs * 4 * tokens * tokens * self.dim * self.heads / 2) as u64,
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // First (a short lease runs the cases in order and may stop early): short contexts, where the
    // launch's shape decides the time, at batch 1 then 16. The defaults (64-key splits, one head a
    // block while the grid has fewer blocks than SMs) beside one head a block, the whole group a
    // block and the earlier 256-key splits with the whole group.
    for batch in [1, 16] {
        for (model, heads, kv_heads, dim) in MODELS {
            let group = heads / kv_heads;
            for len in [256, 512, 2048] {
                v.push(Case { model, heads, kv_heads, dim, dtype: DType::BF16, kind: Kind::Decode { batch, len, page: None, shape: None } });
                for shape in [(64, 1), (64, group), (256, group)] {
                    let kind = Kind::Decode { batch, len, page: None, shape: Some(shape) };
                    v.push(Case { model, heads, kv_heads, dim, dtype: DType::BF16, kind });
                }
            }
        }
    }
    for (model, heads, kv_heads, dim) in MODELS {
        let case = |dtype, kind| Case { model, heads, kv_heads, dim, dtype, kind };
        for tokens in [1024, 4096, 16384, 32768] {
            v.push(case(DType::BF16, Kind::Prefill { tokens, path: PrefillPath::Auto }));
        }
        v.push(case(DType::F16, Kind::Prefill { tokens: 4096, path: PrefillPath::Auto }));
        v.push(case(DType::BF16, Kind::Prefill { tokens: 4096, path: PrefillPath::Simt }));
        for batch in [1, 8, 64] {
            for len in [1024, 4096, 16384, 32768] {
                v.push(case(DType::BF16, Kind::Decode { batch, len, page: None, shape: None }));
            }
        }
        for batch in [1, 8] {
            for page in [1, 16, 64, 256] {
                v.push(case(DType::BF16, Kind::Decode { batch, len: 4096, page: Some(page), shape: None }));
            }
        }
        v.push(case(DType::BF16, Kind::Ragged { seqs: 4, tokens: 1024 }));
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
        /// Per window: block tables [batch, max_pages].
        tables: Vec<CudaSlice<i32>>,
        max_pages: usize,
        lens: CudaSlice<i32>,
        shape: Option<(usize, usize)>,
    },
    Ragged {
        q: DeviceTensor,
        k: DeviceTensor,
        v: DeviceTensor,
        o: DeviceTensor,
        table: CudaSlice<i32>,
        max_pages: usize,
        lens: CudaSlice<i32>,
        cu: CudaSlice<i32>,
        max_q: usize,
        status: AttentionStatus,
    },
}

/// A fixed permutation of 0..n (a linear congruential walk), as a long-running allocator's free
/// list would hand pages out.
fn shuffled(n: usize) -> Vec<i32> {
    let mut v: Vec<i32> = (0..n as i32).collect();
    let mut x = 0x2545_f491_u64;
    for i in (1..n).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.swap(i, (x >> 33) as usize % (i + 1));
    }
    v
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
            Kind::Decode { batch, len, page, shape } => {
                let windows = ROTATE_BYTES.div_ceil(case.work() as usize).max(2);
                let page = page.unwrap_or(len);
                let max_pages = len.div_ceil(page);
                let pages = batch * windows * max_pages;
                // One page per sequence: pages in order (the slot cache); smaller pages: shuffled.
                let order: Vec<i32> = if max_pages == 1 { (0..pages as i32).collect() } else { shuffled(pages) };
                let chunk = shape.map_or(DEFAULT_DECODE_CHUNK, |(c, _)| c);
                let ws_len = decode_workspace_len(batch, case.heads, case.dim, max_pages * page, chunk);
                Buffers::Decode {
                    q: t(&[batch, case.heads, case.dim]),
                    k: t(&[pages, case.kv_heads, page, case.dim]),
                    v: t(&[pages, case.kv_heads, page, case.dim]),
                    o: t(&[batch, case.heads, case.dim]),
                    ws: DeviceTensor::zeros(gpu, DType::F32, &[ws_len]).expect("alloc"),
                    tables: order.chunks(batch * max_pages).map(|w| gpu.stream().clone_htod(w).unwrap()).collect(),
                    max_pages,
                    lens: gpu.stream().clone_htod(&vec![len as i32; batch]).unwrap(),
                    shape,
                }
            }
            Kind::Ragged { seqs, tokens } => {
                const PAGE: usize = 16;
                let max_pages = tokens.div_ceil(PAGE);
                let pages = seqs * max_pages;
                let cu: Vec<i32> = (0..=seqs).map(|b| (b * tokens) as i32).collect();
                Buffers::Ragged {
                    q: t(&[seqs * tokens, case.heads, case.dim]),
                    k: t(&[pages, PAGE, case.kv_heads, case.dim]),
                    v: t(&[pages, PAGE, case.kv_heads, case.dim]),
                    o: t(&[seqs * tokens, case.heads, case.dim]),
                    table: gpu.stream().clone_htod(&shuffled(pages)).unwrap(),
                    max_pages,
                    lens: gpu.stream().clone_htod(&vec![tokens as i32; seqs]).unwrap(),
                    cu: gpu.stream().clone_htod(&cu).unwrap(),
                    max_q: tokens,
                    status: AttentionStatus::new(gpu).unwrap(),
                }
            }
        }
    }

    fn launch(&mut self, gpu: &Gpu, i: usize) {
        match self {
            Buffers::Prefill { q, k, v, o, path } => {
                prefill_with_path(gpu, &q.view(), &k.view(), &v.view(), &mut o.view_mut(), *path).unwrap();
            }
            Buffers::Decode { q, k, v, o, ws, tables, max_pages, lens, shape } => {
                let (table, lens) = (tables[i % tables.len()].slice(..), lens.slice(..));
                let batch = PagedBatch { block_tables: &table, max_pages: *max_pages, seq_lens: &lens };
                let cache = KvCacheView { k: k.view(), v: v.view(), layout: KvLayout::Hnd };
                match *shape {
                    None => decode(gpu, &q.view(), &cache, &batch, &mut ws.view_mut(), &mut o.view_mut()).unwrap(),
                    Some((chunk, heads)) => {
                        decode_with_heads_per_block(gpu, &q.view(), &cache, &batch, &mut ws.view_mut(), &mut o.view_mut(), chunk, heads).unwrap()
                    }
                }
            }
            Buffers::Ragged { q, k, v, o, table, max_pages, lens, cu, max_q, status } => {
                let (table, lens, cu) = (table.slice(..), lens.slice(..), cu.slice(..));
                let batch = PagedBatch { block_tables: &table, max_pages: *max_pages, seq_lens: &lens };
                let cache = KvCacheView { k: k.view(), v: v.view(), layout: KvLayout::Nhd };
                prefill_paged(gpu, &q.view(), &cache, &batch, &cu, *max_q, status, &mut o.view_mut(), PrefillPath::Auto).unwrap();
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
            Kind::Prefill { .. } | Kind::Ragged { .. } => case.work() as f64 / 100e12,
            Kind::Decode { .. } => case.work() as f64 / 2e12 + 5e-6,
        };
        let batch = ((0.02 / per_call_guess) as u64).clamp(1, 500);
        match case.kind {
            Kind::Prefill { .. } | Kind::Ragged { .. } => group.throughput(Throughput::Elements(case.work())),
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
            Kind::Prefill { .. } | Kind::Ragged { .. } => {
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
