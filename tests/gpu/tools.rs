//! The software device's tools (softgpu/tools.cpp) on the crate's own kernels.
//!
//! - memcheck and initcheck are on for every GPU test on the software device; racecheck is on for
//!   every kernel's tests (main.rs, `RACECHECK`); what each one catches is shown by the planted
//!   defects of softgpu/mutants.rs (tests/gpu/negative.rs runs them).
//! - The traffic counters are checked here against counts derived by hand for RMSNorm: bytes as
//!   requested, distinct bytes and sectors, sectors per warp request, shared-memory bank conflicts.

use crate::common::{rng, uniform};
use crate::GpuTest;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::ops::attention::{decode_with_chunk, decode_workspace_len};
use qwen_kernels::ops::decode::{self, HeadCandidates};
use qwen_kernels::ops::kv_cache::{KvCacheView, KvLayout, PagedBatch};
use qwen_kernels::ops::rmsnorm::{rmsnorm_with_path, Path};
use qwen_kernels::{DType, DeviceTensor, Gpu, HostTensor, SoftwareCounters};

pub const TESTS: &[GpuTest] = &[
    ("tools::memcheck_and_initcheck_are_on", memcheck_and_initcheck_are_on),
    ("tools::counters_of_rmsnorm", counters_of_rmsnorm),
    ("tools::counters_of_copies_sets_and_gemms", counters_of_copies_sets_and_gemms),
    ("tools::decode_reads_only_the_workspace_it_writes", decode_reads_only_the_workspace_it_writes),
    ("tools::decode_gemvs_read_staged_rows_without_bank_conflicts", decode_gemvs_read_staged_rows_without_bank_conflicts),
];

/// Every GPU test on the software device runs under memcheck and initcheck.
fn memcheck_and_initcheck_are_on(gpu: &Gpu) {
    let tools = gpu.software_tools().unwrap();
    assert!(tools.contains("memcheck") && tools.contains("initcheck"), "tools on: {tools}");
}

/// Runs `f` with the counters on and returns what they saw.
fn counted(gpu: &Gpu, f: impl FnOnce()) -> Vec<SoftwareCounters> {
    let before = gpu.software_tools().unwrap();
    gpu.synchronize().unwrap();
    gpu.take_software_counters().unwrap();
    gpu.set_software_tools(&format!("{before},counters")).unwrap();
    f();
    gpu.synchronize().unwrap();
    gpu.set_software_tools(&before).unwrap();
    gpu.take_software_counters().unwrap()
}

/// RMSNorm, f32, the 16-byte vector path, 4 rows of 1024: one block of 256 threads a row, each
/// thread one vector in each pass. Derived by hand:
/// - reads as requested: x twice (the sum of squares, then the output pass) and w once, per row:
///   3 * 4096 B * 4 rows = 49152 B; written: y, 16384 B.
/// - distinct: x 16384 B + w 4096 B read (640 sectors), y 16384 B written (512 sectors).
/// - requests: per row 8 warps x (x, x, w) reads and 8 writes; every one is 32 lanes x 16
///   contiguous bytes = 512 B = 16 sectors (fully coalesced).
/// - shared memory (block_sum): lane 0 of each warp writes its partial, 8 lanes of warp 0 read
///   them, every thread reads the total (a broadcast): no bank conflict.
fn counters_of_rmsnorm(gpu: &Gpu) {
    let (rows, hidden) = (4usize, 1024usize);
    let x = HostTensor::from_f32(DType::F32, &[rows, hidden], (0..rows * hidden).map(|i| (i % 97) as f32 / 50.0).collect()).unwrap();
    let w = HostTensor::from_f32(DType::F32, &[hidden], (0..hidden).map(|i| (i % 13) as f32 / 7.0).collect()).unwrap();
    let dx = DeviceTensor::from_host(gpu, &x).unwrap();
    let dw = DeviceTensor::from_host(gpu, &w).unwrap();
    let mut y = DeviceTensor::zeros(gpu, DType::F32, &[rows, hidden]).unwrap();
    let records = counted(gpu, || rmsnorm_with_path(gpu, &dx.view(), &dw.view(), 1e-6, &mut y.view_mut(), Path::Vector16).unwrap());
    assert_eq!(records.len(), 1, "one launch: {records:?}");
    let c = &records[0];
    assert_eq!(c.name(), "rmsnorm_f32_vec");
    assert_eq!((c.grid, c.block), ([4, 1, 1], [256, 1, 1]));
    assert!(
        c.sectors_per_read_request() == 16.0 && c.sectors_per_write_request() == 16.0,
        "sectors per read request {} and per write request {}, expected 16 (32 lanes x 16 contiguous bytes): {c:?}",
        c.sectors_per_read_request(),
        c.sectors_per_write_request()
    );
    assert_eq!((c.global_read_bytes, c.global_write_bytes), (49152, 16384), "bytes as requested: {c:?}");
    assert_eq!((c.distinct_read_bytes, c.distinct_write_bytes), (20480, 16384), "distinct bytes: {c:?}");
    assert_eq!((c.distinct_read_sectors, c.distinct_write_sectors), (640, 512), "distinct sectors: {c:?}");
    assert_eq!((c.global_read_requests, c.global_write_requests), (96, 32), "warp requests: {c:?}");
    assert_eq!(c.shared_bank_conflicts, 0, "{c:?}");
    assert!(c.shared_requests > 0 && c.shared_wavefronts == c.shared_requests, "one wavefront per shared request: {c:?}");
}

/// A copy, a set and a GEMM are counted from their operands: each byte once.
fn counters_of_copies_sets_and_gemms(gpu: &Gpu) {
    let host = HostTensor::from_f32(DType::BF16, &[3, 40], vec![0.5; 120]).unwrap();
    let records = counted(gpu, || {
        let t = DeviceTensor::from_host(gpu, &host).unwrap();
        let _ = DeviceTensor::zeros(gpu, DType::F32, &[5, 7]).unwrap();
        let _ = t.to_host(gpu).unwrap();
    });
    let names: Vec<&str> = records.iter().map(|c| c.name()).collect();
    let upload = records.iter().find(|c| c.name() == "cuMemcpy" && c.global_write_bytes > 0).unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!((upload.global_write_bytes, upload.global_read_bytes), (240, 0), "upload of 3 x 40 bf16: {upload:?}");
    assert!(records.iter().any(|c| c.name() == "cuMemset" && c.global_write_bytes == 140 && c.global_read_bytes == 0), "zeros of 5 x 7 f32: {names:?} {records:?}");
    let download = records.iter().find(|c| c.name() == "cuMemcpy" && c.global_read_bytes > 0).unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(download.global_read_bytes, 240, "{download:?}");

    // y [3, 16] = x [3, 40] W^T, W [16, 40], bf16 in, f32 out.
    let w = DeviceTensor::from_host(gpu, &HostTensor::from_f32(DType::BF16, &[16, 40], vec![0.25; 640]).unwrap()).unwrap();
    let x = DeviceTensor::from_host(gpu, &host).unwrap();
    let mut y = DeviceTensor::zeros(gpu, DType::F32, &[3, 16]).unwrap();
    let records = counted(gpu, || qwen_kernels::ops::gemm::linear(gpu, &x.view(), &w.view(), None, &mut y.view_mut()).unwrap());
    let g: Vec<&SoftwareCounters> = records.iter().filter(|c| c.name() == "cublasGemmEx").collect();
    assert_eq!(g.len(), 1, "{records:?}");
    assert_eq!((g[0].global_read_bytes, g[0].global_write_bytes), (3 * 40 * 2 + 16 * 40 * 2, 3 * 16 * 4), "{:?}", g[0]);
}

/// Split-KV decode attention reads back from its FP32 workspace only what the same launch wrote:
/// with a workspace nothing has written (fresh device memory, not even poison; the op clears the
/// status word and split counters itself), initcheck would stop the last split's merge at the
/// first partial it reads unwritten. The output equals the one over a NaN-poisoned workspace, bit for bit. Sequences of
/// 1 to 300 keys in chunks of 64: up to 5 splits a row.
fn decode_reads_only_the_workspace_it_writes(gpu: &Gpu) {
    let mut r = rng(41);
    let (heads, kv_heads, dim, chunk) = (14usize, 2usize, 64usize, 64usize);
    let lens = [1usize, 63, 64, 65, 130, 300];
    let (batch, capacity) = (lens.len(), 300);
    let q = DeviceTensor::from_host(gpu, &uniform(&mut r, DType::F32, &[batch, heads, dim], -2.0, 2.0)).unwrap();
    let cache = [batch, kv_heads, capacity, dim];
    let k = DeviceTensor::from_host(gpu, &uniform(&mut r, DType::F32, &cache, -2.0, 2.0)).unwrap();
    let v = DeviceTensor::from_host(gpu, &uniform(&mut r, DType::F32, &cache, -3.0, 3.0)).unwrap();
    let slots = gpu.stream().clone_htod(&(0..batch as i32).collect::<Vec<i32>>()).unwrap();
    let lens_d = gpu.stream().clone_htod(&lens.iter().map(|&l| l as i32).collect::<Vec<i32>>()).unwrap();
    let ws_len = decode_workspace_len(batch, heads, dim, capacity, chunk);
    let run = |mut ws: DeviceTensor| {
        let mut out = DeviceTensor::zeros(gpu, DType::F32, &[batch, heads, dim]).unwrap();
        let (tables, lens) = (slots.slice(..), lens_d.slice(..));
        let paged = PagedBatch { block_tables: &tables, max_pages: 1, seq_lens: &lens };
        let cache = KvCacheView { k: k.view(), v: v.view(), layout: KvLayout::Hnd };
        decode_with_chunk(gpu, &q.view(), &cache, &paged, &mut ws.view_mut(), &mut out.view_mut(), chunk).unwrap();
        out.to_host(gpu).unwrap().into_data()
    };
    // SAFETY: device memory the kernels may read only after writing it (what this test checks).
    let fresh = unsafe { gpu.stream().alloc::<u8>(ws_len * 4) }.unwrap();
    let unwritten = run(DeviceTensor::from_slice(fresh, DType::F32, &[ws_len]).unwrap());
    let poisoned = run(DeviceTensor::from_host(gpu, &HostTensor::full(DType::F32, &[ws_len], f32::NAN).unwrap()).unwrap());
    assert!(unwritten.iter().all(|x| x.is_finite()), "decode over an unwritten workspace");
    assert_eq!(unwritten.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), poisoned.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
}

/// The fused decode GEMVs with a norm prologue stage the rows in shared memory (a copy, then the
/// norm in place) and read them 16 bytes a thread, rows g and g + 1 in one phase of 8 lanes. At
/// the models' widths a staged bf16 row is 1792 or 3072 bytes, a multiple of 128, so unswizzled
/// the two rows of a phase would share 16 banks (2-way conflicts on every read past one row); the
/// rows' swizzle (cuda/gemv.cuh, staged_vector) puts them in opposite halves. Gate/up (two
/// outputs a unit) and the head (one), at both models' hidden sizes and 8 and 32 rows (both m
/// tiles), in narrow blocks and wide ones (4 tiles of units): no bank conflict in any shared access
/// of any launch (the staging copy, the sums of squares, the norm, the rows' reads, the warps'
/// exchange).
fn decode_gemvs_read_staged_rows_without_bank_conflicts(gpu: &Gpu) {
    for cfg in Qwen2Config::presets() {
        for rows in [8usize, 32] {
            let (hidden, inter, vocab) = (cfg.hidden_size, 40usize, 72usize);
            let mut r = rng(43);
            let up = |r: &mut rand::rngs::StdRng, shape: &[usize], lo: f32, hi: f32| DeviceTensor::from_host(gpu, &uniform(r, DType::BF16, shape, lo, hi)).unwrap();
            let x = up(&mut r, &[rows, hidden], -2.0, 2.0);
            let norm = up(&mut r, &[hidden], 0.5, 2.0);
            let w = up(&mut r, &[2 * inter, hidden], -0.2, 0.2);
            let wh = up(&mut r, &[vocab, hidden], -0.2, 0.2);
            let mut act = DeviceTensor::zeros(gpu, DType::BF16, &[rows, inter]).unwrap();
            let mut logits = DeviceTensor::zeros(gpu, DType::F32, &[rows, vocab]).unwrap();
            let mut cand = HeadCandidates::new(gpu, rows, vocab).unwrap();
            let records = counted(gpu, || {
                decode::gate_up(gpu, &x.view(), &norm.view(), 1e-6, &w.view(), &mut act.view_mut()).unwrap();
                decode::head(gpu, &x.view(), &norm.view(), 1e-6, &wh.view(), &mut logits.view_mut(), vocab, &mut cand).unwrap();
            });
            let names: Vec<&str> = records.iter().map(|c| c.name()).collect();
            // gate/up past 8 rows in its wide entry; the head's is always wide.
            let gate_up = if rows > decode::WIDE_PAST_ROWS { "dec_gate_up_bf16_vec_wide" } else { "dec_gate_up_bf16_vec" };
            for name in [gate_up, "dec_head_bf16_vec"] {
                let c = records.iter().find(|c| c.name() == name).unwrap_or_else(|| panic!("no {name} launch among {names:?}"));
                assert!(c.shared_requests > 0, "{name}: no shared access counted: {c:?}");
                assert_eq!(c.shared_bank_conflicts, 0, "{name}, hidden {hidden}, {rows} rows: {c:?}");
            }
        }
    }
}
