//! The bad-input table's device rows (the rest is tests/bad_inputs.rs): views and device arrays a
//! caller can get wrong, given to the ops on a device (the software device without a GPU, whose
//! guard pages turn any access outside an allocation into a failed launch).
//!
//! Two kinds of row. Host-checkable inputs (misaligned views with the vector path forced, device
//! arrays of the wrong length, outputs too small) must be the typed error the row names, raised
//! before any launch. Values that live on the device (RoPE's positions and slots, decode's slots
//! and lens) cannot be seen by the host without a synchronisation the decode step never makes: the
//! kernels skip the token or row, write nothing outside the tensors (guard bands and guard pages
//! checked), and report it in a status word, which `RopeTable::check_status` and
//! `attention::decode_status` read as the typed error the row names (a skipped decode row is NaN,
//! the valid row beside it is computed). A row fails if it panics (caught here), succeeds where an error is
//! expected, or gives another variant or message.

use crate::attention::cache_with;
use crate::common::{rng, uniform, GUARD};
use crate::support::Guarded;
use crate::GpuTest;
use qwen_kernels::ops::argmax::{argmax, argmax_with_path, ArgmaxOutput};
use qwen_kernels::ops::attention::{self, decode, decode_status, decode_with_chunk, decode_workspace_len, prefill};
use qwen_kernels::ops::gemm::{linear, linear_with_precision, Precision};
use qwen_kernels::ops::kv_cache::{KvCacheView, KvCacheViewMut, KvLayout, PagedBatch};
use qwen_kernels::ops::rmsnorm::{rmsnorm_with_path, Path};
use qwen_kernels::ops::rope::{rope, rope_kv, RopeTable};
use qwen_kernels::ops::sampling::{sample, sample_n, Draw, Sampler, SamplingParams};
use qwen_kernels::ops::swiglu::{swiglu, swiglu_fused_with_path};
use qwen_kernels::{DType, DeviceTensor, Gpu, HostTensor, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub const TESTS: &[GpuTest] = &[("bad_inputs::device_table", device_table)];

/// Rows of the table below (the README's count adds them to tests/bad_inputs.rs's).
pub const DEVICE_ROWS: usize = 40;

enum Expect {
    /// The call returns this error variant, its message holding each substring.
    Error(&'static str, &'static [&'static str]),
    /// The call succeeds and the row's own checks of the documented report pass (decode's NaN row).
    Reported(&'static str),
}

/// A row's call, given the device.
type Call = Box<dyn Fn(&Gpu) -> Result<()>>;

struct Row {
    input: String,
    call: &'static str,
    run: Call,
    expect: Expect,
}

fn err(input: impl Into<String>, call: &'static str, variant: &'static str, contains: &'static [&'static str], run: impl Fn(&Gpu) -> Result<()> + 'static) -> Row {
    Row { input: input.into(), call, run: Box::new(run), expect: Expect::Error(variant, contains) }
}

fn reported(input: impl Into<String>, call: &'static str, report: &'static str, run: impl Fn(&Gpu) -> Result<()> + 'static) -> Row {
    Row { input: input.into(), call, run: Box::new(run), expect: Expect::Reported(report) }
}

fn zeros(gpu: &Gpu, dtype: DType, dims: &[usize]) -> DeviceTensor {
    DeviceTensor::zeros(gpu, dtype, dims).unwrap()
}

/// RoPE + cache write of 2 tokens, the second at (`position`, `slot`), into guarded HND caches of
/// 3 pages of 40 positions with a table of 64 positions: returns the status check, after asserting
/// that the skipped token changed neither q nor the caches and nothing outside them was written.
fn rope_kv_bad(gpu: &Gpu, position: i32, slot: i32) -> Result<()> {
    let (heads, kv_heads, d) = (4, 2, 64);
    let mut table = RopeTable::new(gpu, 1e4, d, 64)?;
    let mut r = rng(91);
    let q = uniform(&mut r, DType::BF16, &[2, heads, d], -2.0, 2.0);
    let k = uniform(&mut r, DType::BF16, &[2, kv_heads, d], -2.0, 2.0);
    let full = HostTensor::full(DType::BF16, &[3, kv_heads, 40, d], GUARD)?;
    let (mut kc, mut vc, mut dq) = (Guarded::from_host(gpu, &full), Guarded::from_host(gpu, &full), Guarded::from_host(gpu, &q));
    let (dk, dv) = (DeviceTensor::from_host(gpu, &k)?, DeviceTensor::from_host(gpu, &k)?);
    let pos = gpu.stream().clone_htod(&[3, position]).unwrap();
    let slots = gpu.stream().clone_htod(&[40 + 3, slot]).unwrap();
    dq.with_mut(|vq| {
        kc.with_mut(|k_cache| {
            vc.with_mut(|v_cache| {
                let mut cache = KvCacheViewMut { k: k_cache.rows_mut(0..3).unwrap(), v: v_cache.rows_mut(0..3).unwrap(), layout: KvLayout::Hnd };
                rope_kv(gpu, &mut table, vq, &dk.view(), &dv.view(), &pos.slice(..), &slots.slice(..), &mut cache)
            })
        })
    })?;
    let status = table.check_status(gpu);
    let (gq, gk, gv) = (dq.inner(gpu, "q"), kc.inner(gpu, "k_cache"), vc.inner(gpu, "v_cache"));
    let token = heads * d;
    assert_eq!(&gq[token..], &q.data()[token..], "the skipped token's q was changed");
    // Only token 0's rows (page 1, offset 3) were written.
    let written = |i: usize| {
        let (s, rest) = (i / (kv_heads * 40 * d), i % (kv_heads * 40 * d));
        s == 1 && (rest % (40 * d)) / d == 3
    };
    for (what, cache) in [("k_cache", &gk), ("v_cache", &gv)] {
        assert!(cache.iter().enumerate().all(|(i, &x)| written(i) || x == GUARD), "{what}: the skipped token was written");
    }
    status
}

/// Decode of 2 sequences in a cache of 2 pages of 100 positions, one page a sequence: row 0 valid
/// (page 0, len 70), row 1 at (`page`, `len`). Row 1 must come back all NaN and row 0 finite,
/// nothing outside the output written (guard bands; the cache is read only inside its allocation
/// or the launch fails); returns the status check.
fn decode_bad(gpu: &Gpu, page: i32, len: i32) -> Result<()> {
    let (heads, kv_heads, dim) = (4, 2, 64);
    let mut r = rng(92);
    let k = uniform(&mut r, DType::F16, &[70, kv_heads, dim], -2.0, 2.0);
    let v = uniform(&mut r, DType::F16, &[70, kv_heads, dim], -2.0, 2.0);
    let (kc, vc) = cache_with(&k, &v, 2, 0, 100, 1.0);
    let q = uniform(&mut r, DType::F16, &[2, heads, dim], -2.0, 2.0);
    let (dq, dk, dv) = (DeviceTensor::from_host(gpu, &q)?, DeviceTensor::from_host(gpu, &kc)?, DeviceTensor::from_host(gpu, &vc)?);
    let (tables, lens) = (gpu.stream().clone_htod(&[0, page]).unwrap(), gpu.stream().clone_htod(&[70, len]).unwrap());
    // A poisoned workspace (status word included): decode clears the word itself.
    let ws_len = decode_workspace_len(2, heads, dim, 100, 64);
    let mut ws = DeviceTensor::from_host(gpu, &HostTensor::full(DType::F32, &[ws_len], f32::NAN)?)?;
    let mut out = Guarded::poisoned(gpu, DType::F16, &[2, heads, dim]);
    let (tables, lens) = (tables.slice(..), lens.slice(..));
    let paged = PagedBatch { block_tables: &tables, max_pages: 1, seq_lens: &lens };
    let cache = KvCacheView { k: dk.view(), v: dv.view(), layout: KvLayout::Hnd };
    out.with_mut(|o| decode_with_chunk(gpu, &dq.view(), &cache, &paged, &mut ws.view_mut(), o, 64))?;
    let status = decode_status(gpu, &ws.view());
    let got = out.inner(gpu, "decode out");
    let row = heads * dim;
    assert!(got[..row].iter().all(|x| x.is_finite()), "the valid row was not computed");
    assert!(got[row..].iter().all(|x| x.is_nan()), "the bad row (page {page}, len {len}) is not NaN: {:?}", &got[row..row + 4]);
    status
}

/// A [rows, width] view of `t` (f32 [n]) starting `offset` elements in.
fn offset_view<'a>(t: &'a DeviceTensor, offset: usize, dims: &[usize]) -> Result<qwen_kernels::View<'a>> {
    let n: usize = dims.iter().product();
    t.view().rows(offset..offset + n)?.reshape(dims)
}

fn table() -> Vec<Row> {
    use DType::{BF16, F16, F32};
    const MAX: i32 = i32::MAX;
    let mut rows = vec![
        // ---- host-checkable: misaligned views with the vector path forced ----------------------
        err("x a view 2 f32 (8 bytes) into its allocation, Vector16 forced", "rmsnorm_with_path", "Alignment", &["rmsnorm", "aligned: false"], |gpu| {
            let (t, w) = (zeros(gpu, F32, &[2 + 2 * 16]), zeros(gpu, F32, &[16]));
            let mut out = zeros(gpu, F32, &[2, 16]);
            rmsnorm_with_path(gpu, &offset_view(&t, 2, &[2, 16])?, &w.view(), 1e-6, &mut out.view_mut(), Path::Vector16)
        }),
        err("x a view 1 f16 (2 bytes) in, Vector16 forced", "swiglu_fused_with_path", "Alignment", &["swiglu_fused", "aligned: false"], |gpu| {
            let t = zeros(gpu, F16, &[1 + 2 * 16]);
            let x = t.view().rows(1..33)?.reshape(&[1, 32])?;
            let mut out = zeros(gpu, F16, &[1, 16]);
            swiglu_fused_with_path(gpu, &x, &mut out.view_mut(), Path::Vector16)
        }),
        err("logits a view 4 bytes in, Vector16 forced", "argmax_with_path", "Alignment", &["argmax", "base aligned: false"], |gpu| {
            let t = zeros(gpu, F32, &[1 + 2 * 64]);
            let mut out = ArgmaxOutput::new(gpu, 2)?;
            argmax_with_path(gpu, &offset_view(&t, 1, &[2, 64])?, 60, &mut out, true, Path::Vector16)
        }),
        err("q a view 8 bytes into its allocation", "attention::prefill", "Alignment", &["attention", "q starts 8 bytes"], |gpu| {
            let t = zeros(gpu, F32, &[2 + 2 * 4 * 64]);
            let (k, v) = (zeros(gpu, F32, &[2, 2, 64]), zeros(gpu, F32, &[2, 2, 64]));
            let mut out = zeros(gpu, F32, &[2, 4, 64]);
            prefill(gpu, &offset_view(&t, 2, &[2, 4, 64])?, &k.view(), &v.view(), &mut out.view_mut())
        }),
        // ---- host-checkable: shapes, dtypes and lengths of device arguments ------------------------
        err("3 rows of logits into an output for 2", "argmax", "Shape", &["argmax", "3 rows", "holds 2"], |gpu| {
            let logits = zeros(gpu, F32, &[3, 64]);
            argmax(gpu, &logits.view(), 64, &mut ArgmaxOutput::new(gpu, 2)?, false)
        }),
        err("3 results read from an output of 2", "ArgmaxOutput::to_host", "Shape", &["argmax", "3 rows", "output of 2"], |gpu| ArgmaxOutput::new(gpu, 2)?.to_host(gpu, 3).map(|_| ())),
        err("gate [3, 0] (empty rows)", "swiglu", "Shape", &["swiglu", "empty rows", "[3, 0]"], |gpu| {
            let (g, u) = (zeros(gpu, BF16, &[3, 0]), zeros(gpu, BF16, &[3, 0]));
            swiglu(gpu, &g.view(), &u.view(), &mut zeros(gpu, BF16, &[3, 0]).view_mut())
        }),
        err("y [7, 127] for out_features 128", "linear", "Shape", &["linear", "[7, 127]", "128"], |gpu| {
            let (x, w) = (zeros(gpu, BF16, &[7, 64]), zeros(gpu, BF16, &[128, 64]));
            linear(gpu, &x.view(), &w.view(), None, &mut zeros(gpu, BF16, &[7, 127]).view_mut())
        }),
        err("TF32 on bf16 tensors", "linear_with_precision", "DType", &["linear", "TF32", "bf16"], |gpu| {
            let (x, w) = (zeros(gpu, BF16, &[7, 64]), zeros(gpu, BF16, &[128, 64]));
            linear_with_precision(gpu, &x.view(), &w.view(), None, &mut zeros(gpu, BF16, &[7, 128]).view_mut(), Precision::Tf32)
        }),
        err("rows 3..9 of a [8, 4] tensor", "View::rows", "Shape", &["View::rows", "3..9", "[8, 4]"], |gpu| zeros(gpu, F32, &[8, 4]).view().rows(3..9).map(|_| ())),
        err("[8, 4] reshaped to [3, 11]", "View::reshape", "Shape", &["View::reshape", "[3, 11]", "32 elements"], |gpu| zeros(gpu, F32, &[8, 4]).view().reshape(&[3, 11]).map(|_| ())),
        err("an f16 host tensor into a bf16 view", "ViewMut::upload", "Shape", &["ViewMut::upload", "f16[2, 2]", "bf16[2, 2]"], |gpu| {
            zeros(gpu, BF16, &[2, 2]).view_mut().upload(gpu, &HostTensor::full(F16, &[2, 2], 1.0)?)
        }),
        err("a table for head_dim 4096", "RopeTable::new", "UnsupportedSize", &["rope", "head_dim 4096"], |gpu| RopeTable::new(gpu, 1e4, 4096, 64).map(|_| ())),
        err("q of head_dim 128 for a table of 64", "rope", "Shape", &["rope", "head_dim 128", "head_dim 64"], |gpu| {
            let mut table = RopeTable::new(gpu, 1e4, 64, 64)?;
            let (mut q, mut k) = (zeros(gpu, BF16, &[2, 4, 128]), zeros(gpu, BF16, &[2, 2, 128]));
            let pos = gpu.stream().clone_htod(&[0, 1]).unwrap();
            rope(gpu, &mut table, &mut q.view_mut(), &mut k.view_mut(), &pos.slice(..))
        }),
        err("2 device slots for 3 tokens", "rope_kv", "Shape", &["rope_kv", "slot mapping of 2", "3 tokens"], |gpu| {
            let mut table = RopeTable::new(gpu, 1e4, 64, 64)?;
            let (mut q, k, v) = (zeros(gpu, BF16, &[3, 4, 64]), zeros(gpu, BF16, &[3, 2, 64]), zeros(gpu, BF16, &[3, 2, 64]));
            let (mut kc, mut vc) = (zeros(gpu, BF16, &[2, 2, 64, 64]), zeros(gpu, BF16, &[2, 2, 64, 64]));
            let (pos, slots) = (gpu.stream().clone_htod(&[0, 1, 2]).unwrap(), gpu.stream().clone_htod(&[0, 1]).unwrap());
            let mut cache = KvCacheViewMut { k: kc.view_mut(), v: vc.view_mut(), layout: KvLayout::Hnd };
            rope_kv(gpu, &mut table, &mut q.view_mut(), &k.view(), &v.view(), &pos.slice(..), &slots.slice(..), &mut cache)
        }),
        err("3 device lens for a batch of 2", "attention::decode", "Shape", &["attention_decode", "3 seq_lens", "batch of 2"], |gpu| {
            let (q, kc, vc) = (zeros(gpu, F16, &[2, 4, 64]), zeros(gpu, F16, &[2, 2, 100, 64]), zeros(gpu, F16, &[2, 2, 100, 64]));
            let (tables, lens) = (gpu.stream().clone_htod(&[0, 1]).unwrap(), gpu.stream().clone_htod(&[1, 1, 1]).unwrap());
            let mut ws = zeros(gpu, F32, &[decode_workspace_len(2, 4, 64, 100, attention::DEFAULT_DECODE_CHUNK)]);
            let (tables, lens) = (tables.slice(..), lens.slice(..));
            let paged = PagedBatch { block_tables: &tables, max_pages: 1, seq_lens: &lens };
            let cache = KvCacheView { k: kc.view(), v: vc.view(), layout: KvLayout::Hnd };
            decode(gpu, &q.view(), &cache, &paged, &mut ws.view_mut(), &mut zeros(gpu, F16, &[2, 4, 64]).view_mut())
        }),
        err("a decode workspace one f32 short", "attention::decode", "Shape", &["attention_decode", "workspace of", "needed"], |gpu| {
            let (q, kc, vc) = (zeros(gpu, F16, &[2, 4, 64]), zeros(gpu, F16, &[2, 2, 100, 64]), zeros(gpu, F16, &[2, 2, 100, 64]));
            let (tables, lens) = (gpu.stream().clone_htod(&[0, 1]).unwrap(), gpu.stream().clone_htod(&[1, 1]).unwrap());
            let mut ws = zeros(gpu, F32, &[decode_workspace_len(2, 4, 64, 100, attention::DEFAULT_DECODE_CHUNK) - 1]);
            let (tables, lens) = (tables.slice(..), lens.slice(..));
            let paged = PagedBatch { block_tables: &tables, max_pages: 1, seq_lens: &lens };
            let cache = KvCacheView { k: kc.view(), v: vc.view(), layout: KvLayout::Hnd };
            decode(gpu, &q.view(), &cache, &paged, &mut ws.view_mut(), &mut zeros(gpu, F16, &[2, 4, 64]).view_mut())
        }),
        err("a status clear past the workspace (word + 2 x 4 counters > 8 f32)", "attention::clear_decode_status", "Shape", &["attention_decode", "at least 9 elements", "decode_header_len(2, 4)"], |gpu| {
            attention::clear_decode_status(gpu, &mut zeros(gpu, F32, &[8]).view_mut(), 2, 4)
        }),
        err("9 query heads a decode block", "attention::decode_with_heads_per_block", "InvalidArgument", &["attention_decode", "heads_per_block 9", "1..=8"], |gpu| {
            let (q, kc, vc) = (zeros(gpu, F16, &[2, 4, 64]), zeros(gpu, F16, &[2, 2, 100, 64]), zeros(gpu, F16, &[2, 2, 100, 64]));
            let (tables, lens) = (gpu.stream().clone_htod(&[0, 1]).unwrap(), gpu.stream().clone_htod(&[1, 1]).unwrap());
            let mut ws = zeros(gpu, F32, &[decode_workspace_len(2, 4, 64, 100, 64)]);
            let (tables, lens) = (tables.slice(..), lens.slice(..));
            let paged = PagedBatch { block_tables: &tables, max_pages: 1, seq_lens: &lens };
            let cache = KvCacheView { k: kc.view(), v: vc.view(), layout: KvLayout::Hnd };
            attention::decode_with_heads_per_block(gpu, &q.view(), &cache, &paged, &mut ws.view_mut(), &mut zeros(gpu, F16, &[2, 4, 64]).view_mut(), 64, 9)
        }),
    ];

    // ---- device-side RoPE positions and slots: skipped, flagged, read as a typed error -------------
    for (position, slot, what, contains) in [
        (-1, 0, "position -1", &["rope", "position outside 0..64"][..]),
        (64, 0, "position 64 = the table's max_positions", &["rope", "position outside 0..64"]),
        (i32::MIN, 0, "position i32::MIN", &["rope", "position outside 0..64"]),
        (MAX, 0, "position i32::MAX", &["rope", "position outside 0..64"]),
        (5, 120, "slot 120 of 3 pages of 40", &["rope", "slot past the cache's num_pages * page_size"]),
        (5, MAX, "slot i32::MAX", &["rope", "slot past the cache's num_pages * page_size"]),
    ] {
        rows.push(err(format!("device {what}"), "rope_kv + RopeTable::check_status", "InvalidArgument", contains, move |gpu| rope_kv_bad(gpu, position, slot)));
    }
    // ---- device-side decode slots and lens: a NaN row, flagged, read as a typed error ---------------
    for (page, len, what, contains) in [
        (-1, 10, "page -1", &["attention_decode", "a page outside the cache", "status 0x1"][..]),
        (2, 10, "page 2 of 2", &["attention_decode", "a page outside the cache", "status 0x1"]),
        (i32::MIN, 10, "page i32::MIN", &["attention_decode", "a page outside the cache", "status 0x1"]),
        (1, 0, "len 0", &["attention_decode", "a length outside 1..=max_pages * page_size", "status 0x2"]),
        (1, -5, "len -5", &["attention_decode", "a length outside 1..=max_pages * page_size", "status 0x2"]),
        (1, 101, "len 101 past one page of 100", &["attention_decode", "a length outside 1..=max_pages * page_size", "status 0x2"]),
        (1, MAX, "len i32::MAX", &["attention_decode", "a length outside 1..=max_pages * page_size", "status 0x2"]),
        (-1, 0, "page -1 and len 0 (the length is checked first: no page is read)", &["attention_decode", "length", "status 0x2"]),
    ] {
        rows.push(err(format!("device {what}"), "attention::decode_with_chunk + decode_status", "InvalidArgument", contains, move |gpu| decode_bad(gpu, page, len)));
    }
    rows.push(err("the status read from an f16 tensor", "attention::decode_status", "DType", &["attention_decode", "f16[4]"], |gpu| decode_status(gpu, &zeros(gpu, F16, &[4]).view())));
    // ---- NaN logits on the device: reported as a NaN row, never an index ---------------------------
    rows.push(reported("a NaN among the valid logits, a larger value after it", "argmax + ArgmaxOutput::to_host", "None for that row", |gpu| {
        let mut values = vec![0.0f32; 2 * 64];
        values[3] = f32::NAN;
        values[10] = 5.0;
        values[64 + 7] = 2.0;
        values[64 + 62] = f32::NAN; // padding past n_valid 60: not read
        let logits = DeviceTensor::from_host(gpu, &HostTensor::from_f32(DType::F32, &[2, 64], values)?)?;
        let mut out = ArgmaxOutput::new(gpu, 2)?;
        argmax(gpu, &logits.view(), 60, &mut out, true)?;
        assert_eq!(out.to_host(gpu, 2)?, vec![None, Some((7, 2.0))]);
        Ok(())
    }));
    // ---- sampling: parameters, shapes, and rows without a distribution ----------------------------
    rows.push(err("top_p 0 for row 1", "Sampler::set", "InvalidArgument", &["sample", "row 1", "top_p 0 must be in (0, 1]"], |gpu| {
        Sampler::new(gpu, 2)?.set(gpu, &[SamplingParams::default(), SamplingParams { top_p: 0.0, ..Default::default() }])
    }));
    rows.push(err("a negative temperature", "Sampler::set", "InvalidArgument", &["sample", "temperature -0.5"], |gpu| {
        Sampler::new(gpu, 1)?.set(gpu, &[SamplingParams { temperature: -0.5, ..Default::default() }])
    }));
    rows.push(err("3 rows of logits for a sampler of 2", "sampling::sample", "Shape", &["sample", "3 rows", "holds 2"], |gpu| {
        sample(gpu, &zeros(gpu, F32, &[3, 64]).view(), 64, &mut Sampler::new(gpu, 2)?)
    }));
    rows.push(err("4 draws a row into tokens of 7", "sampling::sample_n", "Shape", &["sample", "tokens of 7 entries", "2 rows of 4 draws"], |gpu| {
        let mut tokens = gpu.stream().alloc_zeros::<i32>(7).map_err(|e| qwen_kernels::Error::Cuda { call: "alloc".into(), source: e })?;
        sample_n(gpu, &zeros(gpu, F32, &[2, 64]).view(), 64, &mut Sampler::new(gpu, 2)?, 4, &mut tokens)
    }));
    rows.push(reported("device-side parameters out of range, and a NaN row", "sampling::sample + draws_to_host", "BadParams and NoDistribution rows", |gpu| {
        let mut values = vec![0.0f32; 3 * 8];
        values[8 + 2] = f32::NAN;
        let logits = DeviceTensor::from_host(gpu, &HostTensor::from_f32(DType::F32, &[3, 8], values)?)?;
        let mut s = Sampler::new(gpu, 3)?;
        s.set(gpu, &[SamplingParams::default(); 3])?;
        gpu.stream().memcpy_htod(&[1.0f32, 1.0, f32::NAN], s.device_mut().temperature).map_err(|e| qwen_kernels::Error::Cuda { call: "copy".into(), source: e })?;
        sample(gpu, &logits.view(), 8, &mut s)?;
        let d = s.draws_to_host(gpu, 3)?;
        assert!(matches!(d[0], Draw::Token(t) if t < 8) && d[1] == Draw::NoDistribution && d[2] == Draw::BadParams, "{d:?}");
        Ok(())
    }));
    rows
}

fn device_table(gpu: &Gpu) {
    let rows = table();
    assert_eq!(rows.len(), DEVICE_ROWS, "DEVICE_ROWS (and the README's count) must match the table");
    let mut problems = Vec::new();
    for r in &rows {
        let what = format!("{} <- {}", r.call, r.input);
        match (catch_unwind(AssertUnwindSafe(|| (r.run)(gpu))), &r.expect) {
            (Err(_), _) => problems.push(format!("{what}: PANICKED")),
            (Ok(Ok(())), Expect::Reported(_)) => {}
            (Ok(Err(e)), Expect::Reported(report)) => problems.push(format!("{what}: error {e} (expected {report})")),
            (Ok(Ok(())), Expect::Error(v, _)) => problems.push(format!("{what}: accepted (expected {v})")),
            (Ok(Err(e)), Expect::Error(v, contains)) => {
                let message = e.to_string();
                if e.kind() != *v {
                    problems.push(format!("{what}: {} (expected {v}): {message}", e.kind()));
                }
                for s in *contains {
                    if !message.contains(s) {
                        problems.push(format!("{what}: message lacks {s:?}: {message}"));
                    }
                }
            }
        }
    }
    // A failed launch is sticky: the device must still work after the table.
    gpu.synchronize().expect("the device after the bad-input table");
    assert!(problems.is_empty(), "{} of {} device bad inputs misbehaved:\n{}", problems.len(), rows.len(), problems.join("\n"));
}
