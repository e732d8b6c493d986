//! The paged KV cache on a GPU (run by tests/gpu/main.rs): decode through block tables at page
//! sizes 1 to 256 in both layouts equals the one-page (slot) cache bit for bit, shared prompt pages
//! read as unshared copies, a ragged prefill of several sequences in one launch equals each
//! sequence alone, and bad metadata on the device gives NaN rows and a status, never a read
//! outside the cache (the software device's memcheck fails the launch if one happens).

use crate::attention::run_decode;
use crate::common::{rng, uniform};
use crate::GpuTest;
use qwen_kernels::ops::attention::{
    decode_status, decode_with_chunk, decode_workspace_len, prefill_paged, prefill_with_path, AttentionStatus, PrefillPath,
    DEFAULT_DECODE_CHUNK,
};
use qwen_kernels::ops::kv_cache::{KvCacheDims, KvCacheView, KvLayout, PagedBatch};
use qwen_kernels::{DType, DeviceTensor, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[
    ("paged::decode_equals_the_slot_cache_at_every_page_size_and_layout", decode_equals_the_slot_cache_at_every_page_size_and_layout),
    ("paged::shared_prompt_pages_read_as_unshared_copies", shared_prompt_pages_read_as_unshared_copies),
    ("paged::ragged_prefill_equals_each_sequence_alone", ragged_prefill_equals_each_sequence_alone),
    ("paged::bad_metadata_gives_nan_rows_and_a_status", bad_metadata_gives_nan_rows_and_a_status),
];

/// One sequence's keys and values, [len, kv_heads, D] each.
struct Seq {
    k: HostTensor,
    v: HostTensor,
}

fn sequences(r: &mut rand::rngs::StdRng, dtype: DType, kv_heads: usize, dim: usize, lens: &[usize]) -> Vec<Seq> {
    lens.iter().map(|&len| Seq { k: uniform(r, dtype, &[len, kv_heads, dim], -2.0, 2.0), v: uniform(r, dtype, &[len, kv_heads, dim], -3.0, 3.0) }).collect()
}

/// A fixed shuffle of 0..n (a long-running allocator hands pages out in no particular order).
fn shuffled(n: usize, seed: u64) -> Vec<i32> {
    use rand::seq::SliceRandom as _;
    let mut v: Vec<i32> = (0..n as i32).collect();
    v.shuffle(&mut rng(seed));
    v
}

/// A paged cache holding `seqs`: sequence b's position p at page `tables[b][p / page_size]`.
/// Pages are handed out from a shuffled pool; `share[b] = Some((src, n))` gives sequence b the
/// first n pages of sequence src instead of its own (their positions must hold equal keys).
/// Unused positions hold NaN, so a read of anything outside a sequence shows. Returns the cache
/// (k, v), its dimensions and the block tables [batch, max_pages] (-1 past a sequence's pages).
fn paged_cache(seqs: &[Seq], page_size: usize, layout: KvLayout, share: &[Option<(usize, usize)>], seed: u64) -> (HostTensor, HostTensor, KvCacheDims, Vec<i32>, usize) {
    let dtype = seqs[0].k.dtype();
    let (kv_heads, dim) = (seqs[0].k.dims()[1], seqs[0].k.dims()[2]);
    let max_len = seqs.iter().map(|s| s.k.dims()[0]).max().unwrap();
    let max_pages = max_len.div_ceil(page_size);
    let num_pages = seqs.len() * max_pages + 1;
    let pool = shuffled(num_pages, seed);
    let mut next = 0;
    let mut tables = vec![-1i32; seqs.len() * max_pages];
    let dims = KvCacheDims { num_pages, page_size, kv_heads, head_dim: dim, layout };
    let mut kc = vec![f32::NAN; num_pages * dims.page_stride()];
    let mut vc = kc.clone();
    for (b, s) in seqs.iter().enumerate() {
        let len = s.k.dims()[0];
        let shared = share.get(b).copied().flatten();
        for i in 0..len.div_ceil(page_size) {
            tables[b * max_pages + i] = match shared {
                Some((src, n)) if i < n => tables[src * max_pages + i],
                _ => {
                    next += 1;
                    pool[next - 1]
                }
            };
        }
        for p in 0..len {
            let slot = tables[b * max_pages + p / page_size] as usize * page_size + p % page_size;
            for h in 0..kv_heads {
                let (src, dst) = ((p * kv_heads + h) * dim, dims.slot_offset(slot, h));
                kc[dst..dst + dim].copy_from_slice(&s.k.data()[src..src + dim]);
                vc[dst..dst + dim].copy_from_slice(&s.v.data()[src..src + dim]);
            }
        }
    }
    let shape = dims.shape();
    (HostTensor::from_f32(dtype, &shape, kc).unwrap(), HostTensor::from_f32(dtype, &shape, vc).unwrap(), dims, tables, max_pages)
}

/// The same sequences in the slot cache [batch, kv_heads, capacity, D]: one page of `capacity`
/// positions each, sequence b in page b (NaN elsewhere).
fn slot_cache(seqs: &[Seq], capacity: usize) -> (HostTensor, HostTensor) {
    let dtype = seqs[0].k.dtype();
    let (kv_heads, dim) = (seqs[0].k.dims()[1], seqs[0].k.dims()[2]);
    let dims = KvCacheDims { num_pages: seqs.len(), page_size: capacity, kv_heads, head_dim: dim, layout: KvLayout::Hnd };
    let mut kc = vec![f32::NAN; seqs.len() * dims.page_stride()];
    let mut vc = kc.clone();
    for (b, s) in seqs.iter().enumerate() {
        for p in 0..s.k.dims()[0] {
            for h in 0..kv_heads {
                let (src, dst) = ((p * kv_heads + h) * dim, dims.offset(b, h, p));
                kc[dst..dst + dim].copy_from_slice(&s.k.data()[src..src + dim]);
                vc[dst..dst + dim].copy_from_slice(&s.v.data()[src..src + dim]);
            }
        }
    }
    let shape = dims.shape();
    (HostTensor::from_f32(dtype, &shape, kc).unwrap(), HostTensor::from_f32(dtype, &shape, vc).unwrap())
}

/// Decode of q [B, heads, D] through `tables` [B, max_pages] into a paged cache; returns the
/// output and the status check.
#[allow(clippy::too_many_arguments)]
fn run_paged_decode(
    gpu: &Gpu,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    layout: KvLayout,
    tables: &[i32],
    max_pages: usize,
    lens: &[i32],
    chunk: usize,
) -> (Vec<f32>, qwen_kernels::Result<()>) {
    let (batch, heads, dim) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    let dims = qwen_kernels::ops::kv_cache::check("test", k.layout(), v.layout(), layout).unwrap();
    let (dq, dk, dv) = (DeviceTensor::from_host(gpu, q).unwrap(), DeviceTensor::from_host(gpu, k).unwrap(), DeviceTensor::from_host(gpu, v).unwrap());
    let (dt, dl) = (gpu.stream().clone_htod(tables).unwrap(), gpu.stream().clone_htod(lens).unwrap());
    let ws_len = decode_workspace_len(batch, heads, dim, max_pages * dims.page_size, chunk);
    let mut ws = DeviceTensor::from_host(gpu, &HostTensor::full(DType::F32, &[ws_len], f32::NAN).unwrap()).unwrap();
    let mut out = DeviceTensor::from_host(gpu, &HostTensor::full(q.dtype(), q.dims(), f32::NAN).unwrap()).unwrap();
    let (dt, dl) = (dt.slice(..), dl.slice(..));
    let paged = PagedBatch { block_tables: &dt, max_pages, seq_lens: &dl };
    let cache = KvCacheView { k: dk.view(), v: dv.view(), layout };
    decode_with_chunk(gpu, &dq.view(), &cache, &paged, &mut ws.view_mut(), &mut out.view_mut(), chunk).unwrap();
    let status = decode_status(gpu, &ws.view());
    (out.to_host(gpu).unwrap().into_data(), status)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Sequences of 1, 63, 300 and 129 keys (one to five splits of 64), both models' head shapes, f32
/// and bf16: through pages of 1, 16, 64 and 256 positions, HND and NHD, pages shuffled, each row
/// equals the slot cache's bit for bit (the kernel sums in the same order whatever the page size).
fn decode_equals_the_slot_cache_at_every_page_size_and_layout(gpu: &Gpu) {
    let mut r = rng(81);
    let lens = [1usize, 63, 300, 129];
    let lens_i: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
    for (heads, kv_heads, dim) in [(14, 2, 64), (12, 2, 128)] {
        for dtype in [DType::F32, DType::BF16] {
            let seqs = sequences(&mut r, dtype, kv_heads, dim, &lens);
            let q = uniform(&mut r, dtype, &[lens.len(), heads, dim], -2.0, 2.0);
            let chunk = 64;
            let (sk, sv) = slot_cache(&seqs, 300);
            let slots: Vec<i32> = (0..lens.len() as i32).collect();
            let want = run_decode(gpu, &q, &sk, &sv, &slots, &lens_i, chunk, "slot cache");
            assert!(want.iter().all(|x| x.is_finite()), "slot cache decode");
            for page_size in [1, 16, 64, 256] {
                for layout in [KvLayout::Hnd, KvLayout::Nhd] {
                    let (k, v, _, tables, max_pages) = paged_cache(&seqs, page_size, layout, &[], page_size as u64);
                    let (got, status) = run_paged_decode(gpu, &q, &k, &v, layout, &tables, max_pages, &lens_i, chunk);
                    status.unwrap();
                    assert!(bits(&got) == bits(&want), "{dtype} D{dim} pages of {page_size} {layout:?}: differs from the slot cache");
                }
            }
        }
    }
}

/// Four continuations of one 200-token prompt (each 1 to 40 tokens further): in the paged cache
/// they share the prompt's whole pages (a 16-position page holding the prompt's end and a
/// continuation is not shared), and decode each equals the result over unshared copies.
fn shared_prompt_pages_read_as_unshared_copies(gpu: &Gpu) {
    let mut r = rng(82);
    let (heads, kv_heads, dim, dtype, page) = (14, 2, 64, DType::BF16, 16);
    let prompt = sequences(&mut r, dtype, kv_heads, dim, &[200]).remove(0);
    let extend = |r: &mut rand::rngs::StdRng, extra: usize| {
        let tail = sequences(r, dtype, kv_heads, dim, &[extra]).remove(0);
        let cat = |a: &HostTensor, b: &HostTensor| HostTensor::from_f32(dtype, &[200 + extra, kv_heads, dim], [a.data(), b.data()].concat()).unwrap();
        Seq { k: cat(&prompt.k, &tail.k), v: cat(&prompt.v, &tail.v) }
    };
    let extras = [1usize, 8, 40, 17];
    let seqs: Vec<Seq> = extras.iter().map(|&e| extend(&mut r, e)).collect();
    let lens: Vec<i32> = seqs.iter().map(|s| s.k.dims()[0] as i32).collect();
    let q = uniform(&mut r, dtype, &[seqs.len(), heads, dim], -2.0, 2.0);
    let shared_pages = 200 / page; // 12 whole pages
    let share: Vec<Option<(usize, usize)>> = (0..seqs.len()).map(|b| if b == 0 { None } else { Some((0, shared_pages)) }).collect();
    for layout in [KvLayout::Hnd, KvLayout::Nhd] {
        let (k, v, _, tables, max_pages) = paged_cache(&seqs, page, layout, &share, 5);
        for b in 1..seqs.len() {
            assert_eq!(tables[b * max_pages..][..shared_pages], tables[..shared_pages], "the prompt's pages are shared");
            assert_ne!(tables[b * max_pages + shared_pages], tables[shared_pages], "the page past the prompt is not");
        }
        let (shared, status) = run_paged_decode(gpu, &q, &k, &v, layout, &tables, max_pages, &lens, DEFAULT_DECODE_CHUNK);
        status.unwrap();
        let (k, v, _, tables, max_pages) = paged_cache(&seqs, page, layout, &[], 6);
        let (copies, status) = run_paged_decode(gpu, &q, &k, &v, layout, &tables, max_pages, &lens, DEFAULT_DECODE_CHUNK);
        status.unwrap();
        assert!(shared.iter().all(|x| x.is_finite()));
        assert!(bits(&shared) == bits(&copies), "{layout:?}: shared prompt pages differ from copies");
    }
}

/// A ragged batch: sequences of (cached, new) tokens (0, 70), (37, 5), (100, 64), (15, 1) in one
/// launch over a paged cache (pages of 16, NHD and HND, shuffled), q rows [0, 70, 75, 139, 140) and
/// a padding row after them. Each sequence's rows equal the contiguous prefill of the same tokens
/// over the same keys (same kernel, same tile order) bit for bit, on the tensor-core path (bf16)
/// and the SIMT path (f32, and bf16 forced); the padding row is left as it was.
fn ragged_prefill_equals_each_sequence_alone(gpu: &Gpu) {
    let mut r = rng(83);
    let (heads, kv_heads, dim) = (12, 2, 128);
    let shape = [(0usize, 70usize), (37, 5), (100, 64), (15, 1)];
    let lens: Vec<usize> = shape.iter().map(|&(c, n)| c + n).collect();
    let mut cu = vec![0i32];
    for &(_, n) in &shape {
        cu.push(cu.last().unwrap() + n as i32);
    }
    let rows = *cu.last().unwrap() as usize;
    for (dtype, path) in [(DType::BF16, PrefillPath::Auto), (DType::BF16, PrefillPath::Simt), (DType::F32, PrefillPath::Auto)] {
        let seqs = sequences(&mut r, dtype, kv_heads, dim, &lens);
        // One padding row past the batch: poisoned, and it must stay so.
        let q = uniform(&mut r, dtype, &[rows + 1, heads, dim], -2.0, 2.0);
        let row = heads * dim;
        for layout in [KvLayout::Nhd, KvLayout::Hnd] {
            let (k, v, _, tables, max_pages) = paged_cache(&seqs, 16, layout, &[], 7);
            let (dq, dk, dv) = (DeviceTensor::from_host(gpu, &q).unwrap(), DeviceTensor::from_host(gpu, &k).unwrap(), DeviceTensor::from_host(gpu, &v).unwrap());
            let lens_i: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
            let (dt, dl, dc) = (gpu.stream().clone_htod(&tables).unwrap(), gpu.stream().clone_htod(&lens_i).unwrap(), gpu.stream().clone_htod(&cu).unwrap());
            let (dt, dl, dc) = (dt.slice(..), dl.slice(..), dc.slice(..));
            let mut out = DeviceTensor::from_host(gpu, &HostTensor::full(dtype, &[rows + 1, heads, dim], 7.0).unwrap()).unwrap();
            let mut status = AttentionStatus::new(gpu).unwrap();
            let paged = PagedBatch { block_tables: &dt, max_pages, seq_lens: &dl };
            let cache = KvCacheView { k: dk.view(), v: dv.view(), layout };
            prefill_paged(gpu, &dq.view(), &cache, &paged, &dc, 70, &mut status, &mut out.view_mut(), path).unwrap();
            status.check(gpu).unwrap();
            let got = out.to_host(gpu).unwrap().into_data();
            assert!(got[rows * row..].iter().all(|&x| x == 7.0), "{dtype} {path:?} {layout:?}: the padding row was written");
            for (b, s) in seqs.iter().enumerate() {
                let (q0, q1) = (cu[b] as usize, cu[b + 1] as usize);
                let qb = HostTensor::from_f32(dtype, &[q1 - q0, heads, dim], q.data()[q0 * row..q1 * row].to_vec()).unwrap();
                let (qd, kd, vd) = (DeviceTensor::from_host(gpu, &qb).unwrap(), DeviceTensor::from_host(gpu, &s.k).unwrap(), DeviceTensor::from_host(gpu, &s.v).unwrap());
                let mut alone = DeviceTensor::zeros(gpu, dtype, &[q1 - q0, heads, dim]).unwrap();
                prefill_with_path(gpu, &qd.view(), &kd.view(), &vd.view(), &mut alone.view_mut(), path).unwrap();
                let alone = alone.to_host(gpu).unwrap().into_data();
                assert!(alone.iter().all(|x| x.is_finite()));
                assert!(bits(&got[q0 * row..q1 * row]) == bits(&alone), "{dtype} {path:?} {layout:?}: sequence {b} differs from its prefill alone");
            }
        }
    }
}

/// Metadata only the device holds, wrong. Decode: a page index past the cache in the middle of a
/// sequence (its second page), a length past the table: those rows NaN, status 0x1 | 0x2, the
/// others exact. Ragged prefill: a sequence shorter than its new tokens (0x2), one whose first
/// page is -1 (0x1), one ending past cu_seqlens[batch] and one with a decreasing range (0x4): NaN
/// rows where the rows exist, the valid sequence exact. The software device's memcheck fails the
/// launch on any read outside the cache, so passing also proves none happened.
fn bad_metadata_gives_nan_rows_and_a_status(gpu: &Gpu) {
    let mut r = rng(84);
    let (heads, kv_heads, dim, dtype) = (14, 2, 64, DType::BF16);
    let row = heads * dim;
    // Decode: rows 0 and 3 valid; row 1 has page 99 (of 4 * 2 + 1 = 9) as its second page; row 2
    // a length of 201 > 2 pages of 100.
    let lens = [150usize, 150, 100, 60];
    let seqs = sequences(&mut r, dtype, kv_heads, dim, &lens);
    let q = uniform(&mut r, dtype, &[4, heads, dim], -2.0, 2.0);
    let (k, v, _, mut tables, max_pages) = paged_cache(&seqs, 100, KvLayout::Hnd, &[], 8);
    let (good, status) = run_paged_decode(gpu, &q, &k, &v, KvLayout::Hnd, &tables, max_pages, &[150, 150, 100, 60], 64);
    status.unwrap();
    tables[max_pages + 1] = 99;
    let (got, status) = run_paged_decode(gpu, &q, &k, &v, KvLayout::Hnd, &tables, max_pages, &[150, 150, 201, 60], 64);
    let e = status.unwrap_err().to_string();
    assert!(e.contains("a page outside the cache") && e.contains("a length outside") && e.contains("0x3"), "{e}");
    for b in [0, 3] {
        assert!(bits(&got[b * row..(b + 1) * row]) == bits(&good[b * row..(b + 1) * row]), "valid decode row {b} changed");
    }
    for b in [1, 2] {
        assert!(got[b * row..(b + 1) * row].iter().all(|x| x.is_nan()), "bad decode row {b} is not NaN");
    }

    // Ragged prefill over pages of 16, 44 rows: sequence 0 valid (20 new of 30), 1 claims 8 new
    // tokens of a length of 5, 2 has no first page, 3's rows end at 44, past cu_seqlens[batch] =
    // 42, and 4's range is 44 .. 42 (decreasing).
    let lens = [30usize, 5, 20, 10, 10];
    let seqs = sequences(&mut r, dtype, kv_heads, dim, &lens);
    let (k, v, _, mut tables, max_pages) = paged_cache(&seqs, 16, KvLayout::Nhd, &[], 9);
    tables[2 * max_pages] = -1;
    let cu = [0i32, 20, 28, 36, 44, 42];
    let q = uniform(&mut r, dtype, &[44, heads, dim], -2.0, 2.0);
    let (dq, dk, dv) = (DeviceTensor::from_host(gpu, &q).unwrap(), DeviceTensor::from_host(gpu, &k).unwrap(), DeviceTensor::from_host(gpu, &v).unwrap());
    let lens_i: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
    let (dt, dl, dc) = (gpu.stream().clone_htod(&tables).unwrap(), gpu.stream().clone_htod(&lens_i).unwrap(), gpu.stream().clone_htod(&cu).unwrap());
    let (dt, dl, dc) = (dt.slice(..), dl.slice(..), dc.slice(..));
    for path in [PrefillPath::Auto, PrefillPath::Simt] {
        let mut out = DeviceTensor::from_host(gpu, &HostTensor::full(dtype, &[44, heads, dim], 7.0).unwrap()).unwrap();
        let mut status = AttentionStatus::new(gpu).unwrap();
        let paged = PagedBatch { block_tables: &dt, max_pages, seq_lens: &dl };
        let cache = KvCacheView { k: dk.view(), v: dv.view(), layout: KvLayout::Nhd };
        prefill_paged(gpu, &dq.view(), &cache, &paged, &dc, 20, &mut status, &mut out.view_mut(), path).unwrap();
        let e = status.check(gpu).unwrap_err().to_string();
        assert!(e.contains("a page outside the cache") && e.contains("a length outside") && e.contains("cu_seqlens") && e.contains("0x7"), "{path:?}: {e}");
        let got = out.to_host(gpu).unwrap().into_data();
        assert!(got[20 * row..42 * row].iter().all(|x| x.is_nan()), "{path:?}: the bad sequences' rows are not all NaN");
        // Rows 42 and 43: sequence 3's by its range (NaN where the tensor-core blocks cover them),
        // padding past cu_seqlens[batch] to the SIMT rows (left as they were). Never anything else.
        assert!(got[42 * row..].iter().all(|&x| x.is_nan() || x == 7.0), "{path:?}: rows 42, 43");
        let qb = HostTensor::from_f32(dtype, &[20, heads, dim], q.data()[..20 * row].to_vec()).unwrap();
        let (qd, kd, vd) = (DeviceTensor::from_host(gpu, &qb).unwrap(), DeviceTensor::from_host(gpu, &seqs[0].k).unwrap(), DeviceTensor::from_host(gpu, &seqs[0].v).unwrap());
        let mut alone = DeviceTensor::zeros(gpu, dtype, &[20, heads, dim]).unwrap();
        prefill_with_path(gpu, &qd.view(), &kd.view(), &vd.view(), &mut alone.view_mut(), path).unwrap();
        assert!(bits(&got[..20 * row]) == bits(&alone.to_host(gpu).unwrap().into_data()), "{path:?}: the valid sequence changed");
    }
}
