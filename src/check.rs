//! `qwen-kernels check`: every available check on one backend, one table row each.
//!
//! - goldens (both backends): each op of the chosen backend (the CPU reference or the CUDA kernel)
//!   against PyTorch's float64 truth from `golden/data`, per model and storage dtype, with the
//!   tolerance table of `golden::tolerance::table`, and PyTorch's own error at that dtype beside ours
//!   (the ratio: ours / PyTorch's rel-L2, both against the truth).
//! - `cuda`: also each kernel against the CPU reference at both models' shapes, in f32, f16 and bf16,
//!   on inputs with the models' hazards (a few channels in the thousands, values near zero).
//! - `cpu`: also the CPU references against their hand-computed cases.

use crate::golden::metrics::{compare, compare_scaled, Comparison, Tolerance};
use crate::golden::tolerance::{rmsnorm_vs_reference, table};
use crate::golden::GoldenFile;
use crate::model::weights::recipe_host;
use crate::model::Qwen2Config;
use crate::error::CudaContext as _;
use crate::ops::argmax as argmax_op;
use crate::ops::attention as attn_op;
use crate::ops::gemm as gemm_op;
use crate::ops::rope as rope_op;
use crate::ops::swiglu as swiglu_op;
use crate::ops::rmsnorm as rms_op;
use crate::reference::argmax::argmax;
use crate::reference::attention::{attention, error_scale as attention_error_scale};
use crate::reference::linear::{abs_dot_bound, linear};
use crate::reference::rmsnorm::{self as rms_ref, residual_add};
use crate::reference::rope::{error_scale, rope};
use crate::reference::swiglu::swiglu;
use crate::{DType, DeviceTensor, Gpu, HostTensor, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    /// The kernels on a GPU.
    Cuda,
    /// The kernels on the software device (softgpu/), on the CPU.
    SoftGpu,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::SoftGpu => "softgpu",
        }
    }
}

/// One line of the report.
pub struct Row {
    pub op: String,
    pub case: String,
    pub dtype: DType,
    pub against: &'static str,
    pub tolerance: Tolerance,
    pub comparison: Comparison,
    /// PyTorch's own output at this dtype against the same truth (golden rows only).
    pub pytorch: Option<Comparison>,
}

/// A small deterministic generator for check inputs (splitmix64).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// Hidden states with the models' hazards: most values in [-2, 2), channel 7 at about -4192 and
/// channel 11 at about 8000 (the massive activations of Qwen2.5), every 13th value tiny.
fn hidden_states(rng: &mut Rng, rows: usize, hidden: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * hidden);
    for _ in 0..rows {
        for c in 0..hidden {
            v.push(match c {
                7 => -4192.0 + rng.uniform(-8.0, 8.0),
                11 => 8000.0 + rng.uniform(-32.0, 32.0),
                _ if c % 13 == 0 => rng.uniform(-1e-4, 1e-4),
                _ => rng.uniform(-2.0, 2.0),
            });
        }
    }
    v
}

/// The CPU references against their hand-computed answers.
pub fn cpu_rows() -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for case in rms_ref::known_answers() {
        let n = case.x.len();
        let x = HostTensor::from_f32(case.dtype, &[1, n], case.x.clone())?;
        let w = HostTensor::from_f32(case.dtype, &[n], case.weight.clone())?;
        // Expected values are exact in the dtype or correctly rounded f64 values: one rounding.
        let tol = Tolerance { atol: 0.0, rtol: case.dtype.epsilon() / 2.0 };
        let (op, y, res) = match &case.residual {
            None => (rms_op::OP, rms_ref::rmsnorm(&x, &w, case.eps)?, None),
            Some(r) => {
                let r = HostTensor::from_f32(case.dtype, &[1, n], r.clone())?;
                let (res, y) = rms_ref::add_rmsnorm(&x, &r, &w, case.eps)?;
                (rms_op::FUSED_OP, y, Some(res))
            }
        };
        let mut comparison = compare(y.data(), &case.expected, tol);
        if let (Some(res), Some(expected)) = (res, &case.expected_residual) {
            let r = compare(res.data(), expected, Tolerance { atol: 0.0, rtol: 0.0 });
            comparison.failures += r.failures;
        }
        rows.push(Row { op: op.into(), case: case.name.into(), dtype: case.dtype, against: "hand-computed", tolerance: tol, comparison, pytorch: None });
    }
    Ok(rows)
}

/// `(residual_out, y)` of the fused op: by the CPU reference, or by the kernel when `gpu` is given.
fn run_add_rmsnorm(gpu: Option<&Gpu>, x: &HostTensor, residual: &HostTensor, w: &HostTensor, eps: f32) -> Result<(HostTensor, HostTensor)> {
    let Some(gpu) = gpu else { return rms_ref::add_rmsnorm(x, residual, w, eps) };
    let dx = DeviceTensor::from_host(gpu, x)?;
    let dw = DeviceTensor::from_host(gpu, w)?;
    let mut dres = DeviceTensor::from_host(gpu, residual)?;
    let mut dy = DeviceTensor::zeros(gpu, x.dtype(), x.dims())?;
    rms_op::add_rmsnorm(gpu, &dx.view(), &mut dres.view_mut(), &dw.view(), eps, &mut dy.view_mut())?;
    Ok((dres.to_host(gpu)?, dy.to_host(gpu)?))
}

/// `y` of RMSNorm: by the CPU reference, or by the kernel when `gpu` is given.
/// SwiGLU on the GPU or the CPU reference.
fn run_swiglu(gpu: Option<&Gpu>, gate: &HostTensor, up: &HostTensor) -> Result<HostTensor> {
    let Some(gpu) = gpu else { return swiglu(gate, up) };
    let (dg, du) = (DeviceTensor::from_host(gpu, gate)?, DeviceTensor::from_host(gpu, up)?);
    let mut out = DeviceTensor::zeros(gpu, gate.dtype(), gate.dims())?;
    swiglu_op::swiglu(gpu, &dg.view(), &du.view(), &mut out.view_mut())?;
    out.to_host(gpu)
}

/// RoPE of q [T, heads, D] and k [T, kv_heads, D] at `positions` on the GPU (positions uploaded,
/// the kernel's status checked) or the CPU reference.
fn run_rope(gpu: Option<&Gpu>, cfg: &Qwen2Config, q: &HostTensor, k: &HostTensor, positions: &[i32]) -> Result<(HostTensor, HostTensor)> {
    let Some(gpu) = gpu else {
        let max = cfg.max_position_embeddings;
        return Ok((rope(q, positions, cfg.rope_theta, max)?, rope(k, positions, cfg.rope_theta, max)?));
    };
    let head_dim = *q.dims().last().unwrap_or(&0);
    let mut table = rope_op::RopeTable::new(gpu, cfg.rope_theta, head_dim, cfg.max_position_embeddings)?;
    let (mut dq, mut dk) = (DeviceTensor::from_host(gpu, q)?, DeviceTensor::from_host(gpu, k)?);
    let dpos = gpu.stream().clone_htod(positions).cuda("cuMemcpyHtoD(rope positions)")?;
    rope_op::rope(gpu, &mut table, &mut dq.view_mut(), &mut dk.view_mut(), &dpos.as_view())?;
    table.check_status(gpu)?;
    Ok((dq.to_host(gpu)?, dk.to_host(gpu)?))
}

/// `x W^T + b` through cuBLAS or the CPU reference.
fn run_linear(gpu: Option<&Gpu>, x: &HostTensor, w: &HostTensor, b: Option<&HostTensor>) -> Result<HostTensor> {
    let Some(gpu) = gpu else { return linear(x, w, b) };
    let (dx, dw) = (DeviceTensor::from_host(gpu, x)?, DeviceTensor::from_host(gpu, w)?);
    let db = b.map(|b| DeviceTensor::from_host(gpu, b)).transpose()?;
    let rows = x.layout().numel() / x.dims().last().copied().unwrap_or(1).max(1);
    let mut y = DeviceTensor::zeros(gpu, x.dtype(), &[rows, w.dims()[0]])?;
    gemm_op::linear(gpu, &dx.view(), &dw.view(), db.as_ref().map(|b| b.view()).as_ref(), &mut y.view_mut())?;
    y.to_host(gpu)
}

/// The decode GEMV (at most `ops::gemv::max_rows` rows) of x W^T + b on the device, into y of x's shape and dtype.
fn run_gemv(gpu: &Gpu, x: &HostTensor, w: &HostTensor, b: Option<&HostTensor>) -> Result<HostTensor> {
    let (dx, dw) = (DeviceTensor::from_host(gpu, x)?, DeviceTensor::from_host(gpu, w)?);
    let db = b.map(|b| DeviceTensor::from_host(gpu, b)).transpose()?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().unwrap() = w.dims()[0];
    let mut y = DeviceTensor::zeros(gpu, x.dtype(), &dims)?;
    crate::ops::gemv::gemv(gpu, &dx.view(), &dw.view(), db.as_ref().map(|b| b.view()).as_ref(), &mut y.view_mut())?;
    y.to_host(gpu)
}

/// The bounded argmax of one row of logits on the GPU or the CPU reference.
fn run_argmax(gpu: Option<&Gpu>, logits: &HostTensor, n_valid: usize) -> Result<Option<(u32, f32)>> {
    let Some(gpu) = gpu else { return Ok(argmax(logits, n_valid)?[0]) };
    let d = DeviceTensor::from_host(gpu, logits)?;
    let mut out = argmax_op::ArgmaxOutput::new(gpu, 1)?;
    argmax_op::argmax(gpu, &d.view(), n_valid, &mut out, true)?;
    Ok(out.to_host(gpu, 1)?[0])
}

/// Prefill attention of q over k, v on the GPU (the wrapper's automatic path) or the CPU
/// reference, with the per-element tolerance scale of what ran.
fn run_attention(gpu: Option<&Gpu>, q: &HostTensor, k: &HostTensor, v: &HostTensor) -> Result<(HostTensor, Vec<f32>)> {
    let Some(gpu) = gpu else {
        return Ok((attention(q, k, v)?, attention_error_scale(q, k, v)?));
    };
    let (dq, dk, dv) = (DeviceTensor::from_host(gpu, q)?, DeviceTensor::from_host(gpu, k)?, DeviceTensor::from_host(gpu, v)?);
    let mut out = DeviceTensor::zeros(gpu, q.dtype(), q.dims())?;
    attn_op::prefill(gpu, &dq.view(), &dk.view(), &dv.view(), &mut out.view_mut())?;
    let tensor_core = q.dtype() != DType::F32;
    Ok((out.to_host(gpu)?, attn_op::prefill_error_scale(q, k, v, tensor_core)?))
}

/// Pages of the paged rows (`attention.paged_*`, `attention.ragged_*`): 16 positions, NHD, handed
/// out in reverse order so that no sequence's pages are contiguous.
const CHECK_PAGE: usize = 16;

/// Sequences (k, v [len, kv_heads, D] each) in one NHD paged cache of CHECK_PAGE positions;
/// returns the cache (k, v), the block tables [sequences, max_pages] (-1 past a sequence's pages)
/// and max_pages.
fn paged_copy(gpu: &Gpu, seqs: &[(&HostTensor, &HostTensor)]) -> Result<(DeviceTensor, DeviceTensor, Vec<i32>, usize)> {
    use crate::ops::kv_cache::{KvCacheDims, KvLayout};
    let (dtype, kv_heads, dim) = (seqs[0].0.dtype(), seqs[0].0.dims()[1], seqs[0].0.dims()[2]);
    let pages_of = |k: &HostTensor| k.dims()[0].div_ceil(CHECK_PAGE);
    let max_pages = seqs.iter().map(|(k, _)| pages_of(k)).max().unwrap_or(1).max(1);
    let num_pages: usize = seqs.iter().map(|(k, _)| pages_of(k)).sum::<usize>().max(1);
    let dims = KvCacheDims { num_pages, page_size: CHECK_PAGE, kv_heads, head_dim: dim, layout: KvLayout::Nhd };
    let mut tables = vec![-1i32; seqs.len() * max_pages];
    let (mut kc, mut vc) = (vec![0f32; num_pages * dims.page_stride()], vec![0f32; num_pages * dims.page_stride()]);
    let mut next = num_pages;
    for (b, (k, v)) in seqs.iter().enumerate() {
        for i in 0..pages_of(k) {
            next -= 1;
            tables[b * max_pages + i] = next as i32;
        }
        for s in 0..k.dims()[0] {
            let slot = tables[b * max_pages + s / CHECK_PAGE] as usize * CHECK_PAGE + s % CHECK_PAGE;
            for h in 0..kv_heads {
                let (src, dst) = ((s * kv_heads + h) * dim, dims.slot_offset(slot, h));
                kc[dst..dst + dim].copy_from_slice(&k.data()[src..src + dim]);
                vc[dst..dst + dim].copy_from_slice(&v.data()[src..src + dim]);
            }
        }
    }
    let shape = dims.shape();
    let up = |x: Vec<f32>| DeviceTensor::from_host(gpu, &HostTensor::from_f32(dtype, &shape, x)?);
    Ok((up(kc)?, up(vc)?, tables, max_pages))
}

fn i32_on_device(gpu: &Gpu, values: &[i32]) -> Result<cudarc::driver::CudaSlice<i32>> {
    gpu.stream().clone_htod(values).cuda("cuMemcpyHtoD(check metadata)")
}

/// The T queries of q [T, heads, D] over k, v [S, ...] as a decode batch of T sequences sharing
/// one paged copy of the keys: row t's length is S - T + t + 1 (its causal prefix). The FP32
/// contract's tolerance scale (the split kernel, no tensor cores).
fn run_attention_paged(gpu: &Gpu, q: &HostTensor, k: &HostTensor, v: &HostTensor) -> Result<(HostTensor, Vec<f32>)> {
    use crate::ops::kv_cache::{KvCacheView, KvLayout, PagedBatch};
    let [tokens, heads, dim] = *q.dims() else { return Err(crate::Error::shape("check", format!("q {}", q.layout()))) };
    let context = k.dims()[0];
    let (kc, vc, table, max_pages) = paged_copy(gpu, &[(k, v)])?;
    let tables: Vec<i32> = (0..tokens).flat_map(|_| table.iter().copied()).collect();
    let lens: Vec<i32> = (0..tokens).map(|t| (context - tokens + t + 1) as i32).collect();
    let (dt, dl) = (i32_on_device(gpu, &tables)?, i32_on_device(gpu, &lens)?);
    let (dt, dl) = (dt.slice(..), dl.slice(..));
    let dq = DeviceTensor::from_host(gpu, q)?;
    let ws_len = attn_op::decode_workspace_len(tokens, heads, dim, max_pages * CHECK_PAGE, attn_op::DEFAULT_DECODE_CHUNK);
    let mut ws = DeviceTensor::zeros(gpu, DType::F32, &[ws_len])?;
    let mut out = DeviceTensor::zeros(gpu, q.dtype(), q.dims())?;
    let cache = KvCacheView { k: kc.view(), v: vc.view(), layout: KvLayout::Nhd };
    attn_op::decode(gpu, &dq.view(), &cache, &PagedBatch { block_tables: &dt, max_pages, seq_lens: &dl }, &mut ws.view_mut(), &mut out.view_mut())?;
    attn_op::decode_status(gpu, &ws.view())?;
    Ok((out.to_host(gpu)?, attention_error_scale(q, k, v)?))
}

/// q [T, heads, D] over k, v [S, ...] as the second sequence of a ragged paged prefill, after a
/// first sequence of 9 new tokens over 20 keys (random values, its own pages): the case's rows of
/// the one launch, on the wrapper's automatic path, with that path's tolerance scale.
fn run_attention_ragged(gpu: &Gpu, q: &HostTensor, k: &HostTensor, v: &HostTensor) -> Result<(HostTensor, Vec<f32>)> {
    use crate::ops::kv_cache::{KvCacheView, KvLayout, PagedBatch};
    let [tokens, heads, dim] = *q.dims() else { return Err(crate::Error::shape("check", format!("q {}", q.layout()))) };
    let [context, kv_heads, _] = *k.dims() else { return Err(crate::Error::shape("check", format!("k {}", k.layout()))) };
    let (first_new, first_len) = (9usize, 20usize);
    let mut rng = Rng(0xface);
    let mut random = |dims: &[usize]| -> Result<HostTensor> {
        let n = dims.iter().product();
        HostTensor::from_f32(q.dtype(), dims, (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect())
    };
    let (k0, v0, q0) = (random(&[first_len, kv_heads, dim])?, random(&[first_len, kv_heads, dim])?, random(&[first_new, heads, dim])?);
    let (kc, vc, tables, max_pages) = paged_copy(gpu, &[(&k0, &v0), (k, v)])?;
    let q_all = HostTensor::from_f32(q.dtype(), &[first_new + tokens, heads, dim], [q0.data(), q.data()].concat())?;
    let cu = [0, first_new as i32, (first_new + tokens) as i32];
    let lens = [first_len as i32, context as i32];
    let (dt, dl, dc) = (i32_on_device(gpu, &tables)?, i32_on_device(gpu, &lens)?, i32_on_device(gpu, &cu)?);
    let (dt, dl, dc) = (dt.slice(..), dl.slice(..), dc.slice(..));
    let dq = DeviceTensor::from_host(gpu, &q_all)?;
    let mut out = DeviceTensor::zeros(gpu, q.dtype(), q_all.dims())?;
    let mut status = attn_op::AttentionStatus::new(gpu)?;
    let cache = KvCacheView { k: kc.view(), v: vc.view(), layout: KvLayout::Nhd };
    let batch = PagedBatch { block_tables: &dt, max_pages, seq_lens: &dl };
    attn_op::prefill_paged(gpu, &dq.view(), &cache, &batch, &dc, first_new.max(tokens), &mut status, &mut out.view_mut(), attn_op::PrefillPath::Auto)?;
    status.check(gpu)?;
    let ours = out.view().rows(first_new..first_new + tokens)?.to_host(gpu)?;
    let tensor_core = q.dtype() != DType::F32;
    Ok((ours, attn_op::prefill_error_scale(q, k, v, tensor_core)?))
}

fn run_rmsnorm(gpu: Option<&Gpu>, x: &HostTensor, w: &HostTensor, eps: f32) -> Result<HostTensor> {
    let Some(gpu) = gpu else { return rms_ref::rmsnorm(x, w, eps) };
    let dx = DeviceTensor::from_host(gpu, x)?;
    let dw = DeviceTensor::from_host(gpu, w)?;
    let mut dy = DeviceTensor::zeros(gpu, x.dtype(), x.dims())?;
    rms_op::rmsnorm(gpu, &dx.view(), &dw.view(), eps, &mut dy.view_mut())?;
    dy.to_host(gpu)
}

/// Attention goldens in `ops.safetensors` (golden/gen.py's ATTENTION_CASES, and VibeThinker's
/// layer-0 stress case).
pub const ATTENTION_CASES: [&str; 6] = ["prefill16", "chunk5of40", "decode1", "decode37", "decode300", "stress8"];

/// Largest |v| (0 for an empty slice).
fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// A float64 truth as the storage dtype can hold it: values past the dtype's largest finite value
/// become the infinity they round to (f16 holds nothing above 65504: 300 * 300 is inf there, and
/// inf is the right answer); everything else is left exact.
pub fn in_range(dtype: DType, truth: Vec<f64>) -> Vec<f64> {
    truth
        .into_iter()
        .map(|t| {
            let rounded = dtype.round(t as f32);
            if rounded.is_infinite() && t.is_finite() { rounded as f64 } else { t }
        })
        .collect()
}

/// One golden row: `ours` against the float64 truth `names.1` of `file`, with PyTorch's own output
/// `names.0` at the same dtype compared beside it.
#[allow(clippy::too_many_arguments)]
fn golden_row(
    file: &GoldenFile,
    label: &str,
    model: &str,
    dtype: DType,
    (torch, truth): (&str, &str),
    tolerance: Tolerance,
    ours: &HostTensor,
    scale: Option<&[f32]>,
) -> Result<Row> {
    Ok(truth_row(label, model, dtype, file.tensor(truth)?.values, file.host(torch)?.data(), tolerance, ours, scale))
}

/// A row of `ours` against a float64 `truth` (clamped to the dtype's range), PyTorch's output at
/// the same dtype (`torch`) against the same truth beside it.
#[allow(clippy::too_many_arguments)]
fn truth_row(label: &str, case: &str, dtype: DType, truth: Vec<f64>, torch: &[f32], tolerance: Tolerance, ours: &HostTensor, scale: Option<&[f32]>) -> Row {
    let truth = in_range(dtype, truth);
    Row {
        op: label.to_string(),
        case: case.to_string(),
        dtype,
        against: "pytorch f64",
        tolerance,
        comparison: compare_scaled(ours.data(), &truth, tolerance, scale),
        pytorch: Some(compare_scaled(torch, &truth, tolerance, scale)),
    }
}

/// Each op against the PyTorch goldens of both models: the CPU reference when `gpu` is `None`,
/// else the kernels.
pub fn golden_rows(gpu: Option<&Gpu>) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for cfg in Qwen2Config::presets() {
        let file = GoldenFile::open(cfg.name, "ops")?;
        let eps = cfg.rms_norm_eps;
        let hidden = cfg.hidden_size;
        // The tied embedding / lm_head weight [vocab, hidden]: regenerated once per model.
        let lm_head_bf16 = lm_head_weight(&file, &cfg)?;
        let mut argmax_rows = Vec::new();
        for dtype in DType::ALL {
            let name = |op: &str, t: &str| format!("{op}.{dtype}.{t}");
            // One row: `ours` against `<op>.<dtype>.<output>.truth`, PyTorch's `.<peer>` beside it
            // (`torch`: the module at that dtype; `sdpa`: transformers' SDPA attention path).
            let mut row = |label: &str, op: &str, output: &str, peer: &str, tolerance: Tolerance, ours: &HostTensor, scale: Option<&[f32]>| -> Result<()> {
                let names = (name(op, &format!("{output}.{peer}")), name(op, &format!("{output}.truth")));
                out.push(golden_row(&file, label, cfg.name, dtype, (&names.0, &names.1), tolerance, ours, scale)?);
                Ok(())
            };

            let x = file.host(&name("rmsnorm", "x"))?;
            let w = file.host(&name("rmsnorm", "weight"))?;
            let max_w = max_abs(w.data());
            let y = run_rmsnorm(gpu, &x, &w, eps)?;
            row("rmsnorm", "rmsnorm", "y", "torch", table::rmsnorm(dtype, hidden, max_w), &y, None)?;

            let op = "add_rmsnorm";
            let x = file.host(&name(op, "x"))?;
            let residual = file.host(&name(op, "residual"))?;
            let w = file.host(&name(op, "weight"))?;
            let max_w = max_abs(w.data());
            let (res, y) = run_add_rmsnorm(gpu, &x, &residual, &w, eps)?;
            row(op, op, "y", "torch", table::add_rmsnorm(dtype, hidden, max_w), &y, None)?;
            // Its own row: the residual stream the next layer reads.
            row("add_rmsnorm.residual", op, "residual_out", "torch", table::residual_add(dtype), &res, None)?;

            // Attention: against the float64 eager truth; PyTorch's column is transformers'
            // default SDPA path (its eager FP16 path overflows on the stress case). On a GPU the
            // prefill kernel the wrapper picks (tensor cores for f16/bf16), with its own extra
            // error term (`ops::attention::prefill_error_scale`).
            for case in ATTENTION_CASES {
                let key = |t: &str| format!("attention.{case}.{dtype}.{t}");
                if !file.has(&key("q")) {
                    continue;
                }
                let (q, k, v) = (file.host(&key("q"))?, file.host(&key("k"))?, file.host(&key("v"))?);
                let (o, scale) = run_attention(gpu, &q, &k, &v)?;
                let op = format!("attention.{case}");
                row(&op, &op, "o", "sdpa", table::attention(dtype), &o, Some(&scale))?;
                // The same goldens through the paged cache (kernels only: the CPU has no pages):
                // every query as a decode row over shared pages, and the case as one sequence of
                // a ragged prefill.
                if let Some(gpu) = gpu {
                    let (o, scale) = run_attention_paged(gpu, &q, &k, &v)?;
                    row(&format!("attention.paged_{case}"), &op, "o", "sdpa", table::attention(dtype), &o, Some(&scale))?;
                    let (o, scale) = run_attention_ragged(gpu, &q, &k, &v)?;
                    row(&format!("attention.ragged_{case}"), &op, "o", "sdpa", table::attention(dtype), &o, Some(&scale))?;
                }
            }

            let gate = file.host(&name("swiglu", "gate"))?;
            let up = file.host(&name("swiglu", "up"))?;
            let max_up = max_abs(up.data());
            row("swiglu", "swiglu", "y", "torch", table::swiglu(dtype, max_up), &run_swiglu(gpu, &gate, &up)?, None)?;

            let positions: Vec<i32> = file.tensor("rope.positions")?.values.iter().map(|&p| p as i32).collect();
            let (q, k) = (file.host(&name("rope", "q"))?, file.host(&name("rope", "k"))?);
            let (q_out, k_out) = run_rope(gpu, &cfg, &q, &k, &positions)?;
            for (which, x, ours) in [("q", &q, &q_out), ("k", &k, &k_out)] {
                let scale = error_scale(x);
                row(&format!("rope.{which}"), "rope", &format!("{which}_embed"), "torch", table::rope(dtype), ours, Some(&scale))?;
            }

            // lm_head logits over the whole padded vocabulary, then the bounded argmax.
            let w = HostTensor::from_f32(dtype, lm_head_bf16.dims(), lm_head_bf16.data().to_vec())?;
            let x = file.host(&name("lm_head", "x"))?;
            let logits = run_linear(gpu, &x, &w, None)?;
            let max_abs_dot = max_abs(&abs_dot_bound(&x, &w, None)?);
            let tol = table::linear(dtype, hidden, max_abs_dot);
            row("lm_head", "lm_head", "logits", "torch", tol, &logits, None)?;
            if let Some(gpu) = gpu {
                // The decode GEMV on the same golden (one row), beside cuBLAS' row.
                row("gemv.lm_head", "lm_head", "logits", "torch", tol, &run_gemv(gpu, &x, &w, None)?, None)?;
            }
            let picked = run_argmax(gpu, &logits, cfg.real_vocab_size)?;
            argmax_rows.push(argmax_row(&file, cfg.name, dtype, picked, cfg.real_vocab_size, tol)?);
            for proj in ["q_proj", "k_proj", "o_proj"] {
                let x = file.host(&name(proj, "x"))?;
                let w = file.synth_weight(&format!("golden.{}.{proj}.weight", cfg.name))?;
                let dims = w.dims().to_vec();
                let w = HostTensor::from_f32(dtype, &dims, w.into_data())?;
                let b = file.host(&name(proj, "bias")).ok();
                let y = run_linear(gpu, &x, &w, b.as_ref())?;
                let max_abs_dot = max_abs(&abs_dot_bound(&x, &w, b.as_ref())?);
                let in_features = *x.dims().last().unwrap();
                row(proj, proj, "y", "torch", table::linear(dtype, in_features, max_abs_dot), &y, None)?;
                if let Some(gpu) = gpu {
                    // The decode GEMV on the same golden (8 rows).
                    let y = run_gemv(gpu, &x, &w, b.as_ref())?;
                    row(&format!("gemv.{proj}"), proj, "y", "torch", table::linear(dtype, in_features, max_abs_dot), &y, None)?;
                }
            }
        }
        out.extend(argmax_rows);
        out.extend(sampling_rows(gpu, cfg.name)?);
        if let Some(gpu) = gpu {
            out.extend(layer_gemv_rows(gpu, &cfg)?);
        }
    }
    Ok(out)
}

/// The decode GEMVs of the projections the ops file leaves out, at the model's shapes, on layer
/// 0's own inputs (`layer0.safetensors`: each fed the bf16 tensor PyTorch's layer gave it, 4
/// rows): `gemv.v_proj` [kv_heads * D, H] with its bias, `gemv.gate_up` (gate and up as one GEMV
/// over [gate; up], [2I, H], as the fused decode reads them) and `gemv.down_proj` [H, I]. In f32
/// against PyTorch's FP32 module on the same inputs (`<stage>.f32.out`) and in bf16 against its
/// bf16 layer (`<stage>.out`); the truth is the float64 module's (`<stage>.truth`). The weights
/// are layer 0's synthetic ones (recipes in the file).
fn layer_gemv_rows(gpu: &Gpu, cfg: &Qwen2Config) -> Result<Vec<Row>> {
    let file = GoldenFile::open(cfg.name, "layer0")?;
    let weight = |stage: &str| file.synth_weight(&format!("golden.{}.layer0.{stage}.weight", cfg.name));
    let values = |name: &str| -> Result<Vec<f64>> { Ok(file.tensor(name)?.values) };
    // [gate | up] row by row: the GEMV's output rows over [gate; up].
    let concat_rows = |a: Vec<f64>, b: Vec<f64>, width: usize| -> Vec<f64> {
        a.chunks(width).zip(b.chunks(width)).flat_map(|(x, y)| x.iter().chain(y).copied()).collect()
    };
    let inter = cfg.intermediate_size;
    let (gate, up) = (weight("mlp.gate_proj")?, weight("mlp.up_proj")?);
    let mut gate_up = gate.into_data();
    gate_up.extend_from_slice(up.data());
    // (row name, input, weight, bias, stage names of the truth and of PyTorch's output): bf16.
    let cases = [
        ("v_proj", file.host("input_layernorm.out")?, weight("self_attn.v_proj")?, Some(file.host("self_attn.v_proj.bias")?), &["self_attn.v_proj"][..]),
        (
            "gate_up",
            file.host("post_attention_layernorm.out")?,
            HostTensor::from_f32(DType::BF16, &[2 * inter, cfg.hidden_size], gate_up)?,
            None,
            &["mlp.gate_proj", "mlp.up_proj"],
        ),
        ("down_proj", file.host("swiglu.out")?, weight("mlp.down_proj")?, None, &["mlp.down_proj"]),
    ];
    let case = format!("{}/layer0", cfg.name);
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        for (proj, x, w, b, stages) in &cases {
            // The stages' outputs side by side, row by row ([gate | up]: the GEMV's rows over [gate; up]).
            let joined = |suffix: &str| -> Result<Vec<f64>> {
                let mut parts = stages.iter().map(|st| values(&format!("{st}.{suffix}")));
                let first = parts.next().expect("a stage")?;
                parts.try_fold(first, |acc, p| Ok(concat_rows(acc, p?, inter)))
            };
            let truth = joined("truth")?;
            let torch: Vec<f32> = joined(if dtype == DType::F32 { "f32.out" } else { "out" })?.iter().map(|&v| v as f32).collect();
            // bf16 values are exact in f32: the f32 rows see the same inputs as PyTorch's.
            let cast = |t: &HostTensor| HostTensor::from_f32(dtype, t.dims(), t.data().to_vec());
            let (x, w, b) = (cast(x)?, cast(w)?, b.as_ref().map(cast).transpose()?);
            let tolerance = table::linear(dtype, *x.dims().last().unwrap(), max_abs(&abs_dot_bound(&x, &w, b.as_ref())?));
            let ours = run_gemv(gpu, &x, &w, b.as_ref())?;
            out.push(truth_row(&format!("gemv.{proj}"), &case, dtype, truth, &torch, tolerance, &ours, None));
        }
    }
    Ok(out)
}

/// Layer 0 of each model (`layer0.safetensors`), stage by stage: each CPU reference op fed the bf16
/// tensor PyTorch's own previous stage produced (the layer's wiring, asserted by gen.py), against
/// the float64 truth of that stage. Shows every op in its real context and at the layer-0 hazard
/// magnitudes (VibeThinker: |q| ~ 118, |k| ~ 406, scaled logits ~ 3.3e4).
pub fn layer_rows() -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for cfg in Qwen2Config::presets() {
        // Layer 0, and the whole model's hazard layers (listed in its metadata `layer_files`).
        let model = GoldenFile::open(cfg.name, "model")?;
        let listed: Vec<String> = serde_json::from_str(model.metadata("layer_files").unwrap_or("[]"))
            .map_err(|e| model.error(format!("layer_files: {e}")))?;
        for layer_name in std::iter::once("layer0".to_string()).chain(listed) {
            out.extend(layer_stage_rows(&cfg, &layer_name)?);
        }
    }
    Ok(out)
}

/// One decoder layer's file (`layer0` with its own weights, or `layer<N>` of the whole model with
/// the hazard profile's), stage by stage.
fn layer_stage_rows(cfg: &Qwen2Config, layer_name: &str) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    {
        let file = GoldenFile::open(cfg.name, layer_name)?;
        let dtype = DType::BF16;
        let index: usize = layer_name.trim_start_matches("layer").parse().unwrap_or(0);
        let x = file.host("layer.x")?;
        let (tokens, heads, kv_heads, d) = (x.dims()[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let t = |n: &str| file.host(n);
        // One row: `ours` against `<truth>`, PyTorch's bf16 stage output `<torch>` beside it.
        let mut row = |label: &str, names: (&str, &str), tolerance: Tolerance, ours: &HostTensor, scale: Option<&[f32]>| -> Result<()> {
            out.push(golden_row(&file, &format!("{layer_name}.{label}"), cfg.name, dtype, names, tolerance, ours, scale)?);
            Ok(())
        };
        // Layer 0's own synthetic weights, or the whole model's recipes.
        let weight = |name: &str| -> Result<HostTensor> {
            let synth = format!("golden.{}.layer0.{name}.weight", cfg.name);
            if file.metadata(&format!("synth.{synth}")).is_some() {
                file.synth_weight(&synth)
            } else {
                recipe_host(&file, &format!("model.layers.{index}.{name}.weight"))
            }
        };
        let eps = cfg.rms_norm_eps;

        let w = t("input_layernorm.weight")?;
        let stage = |n: &str| (format!("{n}.out"), format!("{n}.truth"));
        fn names(p: &(String, String)) -> (&str, &str) {
            (p.0.as_str(), p.1.as_str())
        }
        row("input_layernorm", names(&stage("input_layernorm")), table::rmsnorm(dtype, cfg.hidden_size, max_abs(w.data())), &rms_ref::rmsnorm(&x, &w, eps)?, None)?;
        let normed = t("input_layernorm.out")?;
        for proj in ["q_proj", "k_proj", "v_proj"] {
            let name = format!("self_attn.{proj}");
            let (w, b) = (weight(&name)?, t(&format!("{name}.bias"))?);
            let tol = table::linear(dtype, cfg.hidden_size, max_abs(&abs_dot_bound(&normed, &w, Some(&b))?));
            row(proj, names(&stage(&name)), tol, &linear(&normed, &w, Some(&b))?, None)?;
        }
        let positions: Vec<i32> = file.tensor("layer.positions")?.values.iter().map(|&p| p as i32).collect();
        for (which, n) in [("q", heads), ("k", kv_heads)] {
            let projected = t(&format!("self_attn.{which}_proj.out"))?;
            let projected = HostTensor::from_f32(dtype, &[tokens, n, d], projected.into_data())?;
            let ours = rope(&projected, &positions, cfg.rope_theta, cfg.max_position_embeddings)?;
            let (torch, truth) = (format!("rope.{which}"), format!("rope.{which}.truth"));
            row(&format!("rope.{which}"), (&torch, &truth), table::rope(dtype), &ours, Some(&error_scale(&projected)))?;
        }
        let (q, k, v) = (t("rope.q")?, t("rope.k")?, t("attention.v")?);
        let scale = attention_error_scale(&q, &k, &v)?;
        row("attention", ("attention.o", "attention.o.truth"), table::attention(dtype), &attention(&q, &k, &v)?, Some(&scale))?;
        let o = t("attention.o")?;
        let o = HostTensor::from_f32(dtype, &[tokens, heads * d], o.into_data())?;
        let w = weight("self_attn.o_proj")?;
        let tol = table::linear(dtype, heads * d, max_abs(&abs_dot_bound(&o, &w, None)?));
        row("o_proj", names(&stage("self_attn.o_proj")), tol, &linear(&o, &w, None)?, None)?;
        let residual1 = residual_add(&t("self_attn.o_proj.out")?, &x)?;
        row("residual1", ("residual1.out", "residual1.truth"), table::residual_add(dtype), &residual1, None)?;
        let residual1 = t("residual1.out")?;
        let w = t("post_attention_layernorm.weight")?;
        let tol = table::rmsnorm(dtype, cfg.hidden_size, max_abs(w.data()));
        row("post_attention_layernorm", names(&stage("post_attention_layernorm")), tol, &rms_ref::rmsnorm(&residual1, &w, eps)?, None)?;
        let normed = t("post_attention_layernorm.out")?;
        for proj in ["gate_proj", "up_proj"] {
            let name = format!("mlp.{proj}");
            let w = weight(&name)?;
            let tol = table::linear(dtype, cfg.hidden_size, max_abs(&abs_dot_bound(&normed, &w, None)?));
            row(proj, names(&stage(&name)), tol, &linear(&normed, &w, None)?, None)?;
        }
        let (gate, up) = (t("mlp.gate_proj.out")?, t("mlp.up_proj.out")?);
        row("swiglu", ("swiglu.out", "swiglu.truth"), table::swiglu(dtype, max_abs(up.data())), &swiglu(&gate, &up)?, None)?;
        let act = t("swiglu.out")?;
        let w = weight("mlp.down_proj")?;
        let tol = table::linear(dtype, cfg.intermediate_size, max_abs(&abs_dot_bound(&act, &w, None)?));
        row("down_proj", names(&stage("mlp.down_proj")), tol, &linear(&act, &w, None)?, None)?;
        let ours = residual_add(&t("mlp.down_proj.out")?, &residual1)?;
        row("residual2", ("layer.out", "layer.truth"), table::residual_add(dtype), &ours, None)?;
    }
    Ok(out)
}

/// The tied embedding / lm_head weight [vocab, hidden] as bf16: real rows and padded rows, each
/// regenerated from its synth recipe in the golden file.
fn lm_head_weight(file: &GoldenFile, cfg: &Qwen2Config) -> Result<HostTensor> {
    let real = file.synth_weight(&format!("golden.{}.embed_tokens.real", cfg.name))?;
    let padded = file.synth_weight(&format!("golden.{}.embed_tokens.padded", cfg.name))?;
    let mut values = real.into_data();
    values.extend_from_slice(padded.data());
    HostTensor::from_f32(DType::BF16, &[cfg.vocab_size, cfg.hidden_size], values)
}

/// Bounded argmax of our logits against the golden: the index must be a real token, and its
/// truth logit within two tolerances of the truth's maximum (bf16 logits tie for real: their
/// ulp is 0.125 between 16 and 32, so the exact index may legitimately differ).
fn argmax_row(file: &GoldenFile, model: &str, dtype: DType, picked: Option<(u32, f32)>, n_valid: usize, tol: Tolerance) -> Result<Row> {
    let ours = [picked];
    let truth = file.tensor(&format!("lm_head.{dtype}.logits.truth"))?.values;
    let truth_index = file.tensor(&format!("argmax.{dtype}.index.truth"))?.values[0] as usize;
    let twice = Tolerance { atol: 2.0 * tol.atol, rtol: 2.0 * tol.rtol };
    let mut comparison = match ours[0] {
        Some((i, _)) if (i as usize) < n_valid => {
            // The truth's best logit against the truth logit of the token we picked.
            compare(&[truth[i as usize] as f32], &[truth[truth_index]], twice)
        }
        // A NaN row or a padded id: fail.
        _ => compare(&[f32::NAN], &[truth[truth_index]], twice),
    };
    comparison.worst = ours[0].map(|(i, v)| (i as usize, v as f64, truth_index as f64));
    Ok(Row { op: "argmax".into(), case: model.into(), dtype, against: "pytorch f64", tolerance: twice, comparison, pytorch: None })
}

/// Each kernel against the CPU reference at the models' shapes.
pub fn cuda_rows(gpu: &Gpu) -> Result<Vec<Row>> {
    const ROWS: usize = 7;
    let mut out = Vec::new();
    let mut rng = Rng(0x5eed);
    for cfg in Qwen2Config::presets() {
        let hidden = cfg.hidden_size;
        let eps = cfg.rms_norm_eps;
        for dtype in DType::ALL {
            let x = HostTensor::from_f32(dtype, &[ROWS, hidden], hidden_states(&mut rng, ROWS, hidden))?;
            let res = HostTensor::from_f32(dtype, &[ROWS, hidden], hidden_states(&mut rng, ROWS, hidden))?;
            let w = HostTensor::from_f32(dtype, &[hidden], (0..hidden).map(|_| rng.uniform(0.0, 3.0)).collect())?;
            let tol = rmsnorm_vs_reference(dtype, hidden);

            let dx = DeviceTensor::from_host(gpu, &x)?;
            let dw = DeviceTensor::from_host(gpu, &w)?;
            let mut dy = DeviceTensor::zeros(gpu, dtype, &[ROWS, hidden])?;
            rms_op::rmsnorm(gpu, &dx.view(), &dw.view(), eps, &mut dy.view_mut())?;
            let expected = rms_ref::rmsnorm(&x, &w, eps)?;
            let comparison = compare(dy.to_host(gpu)?.data(), expected.data(), tol);
            out.push(Row { op: rms_op::OP.into(), case: cfg.name.into(), dtype, against: "cpu reference", tolerance: tol, comparison, pytorch: None });

            let mut dres = DeviceTensor::from_host(gpu, &res)?;
            rms_op::add_rmsnorm(gpu, &dx.view(), &mut dres.view_mut(), &dw.view(), eps, &mut dy.view_mut())?;
            let (expected_res, expected) = rms_ref::add_rmsnorm(&x, &res, &w, eps)?;
            let mut comparison = compare(dy.to_host(gpu)?.data(), expected.data(), tol);
            // The residual sum is one rounding of the same float sum on both sides: bit-exact.
            let r = compare(dres.to_host(gpu)?.data(), expected_res.data(), Tolerance { atol: 0.0, rtol: 0.0 });
            comparison.failures += r.failures;
            out.push(Row { op: rms_op::FUSED_OP.into(), case: cfg.name.into(), dtype, against: "cpu reference", tolerance: tol, comparison, pytorch: None });
        }
    }
    Ok(out)
}

/// Print the table; returns the number of failed rows.
///
/// Columns: max_abs and rel_l2 of our output against the expected values; rtol of the tolerance;
/// tol_used, the largest |error| / (atol + rtol |expected|) (<= 1 passes); vs_torch, our rel-L2
/// over PyTorch's at the same dtype, both against the float64 truth (golden rows only).
pub fn print_table(backend: Backend, rows: &[Row]) -> usize {
    println!(
        "{:<21} {:<24} {:<5} {:<7} {:<14} {:>10} {:>10} {:>9} {:>9} {:>9}  result",
        "op", "case", "dtype", "backend", "against", "max_abs", "rel_l2", "rtol", "tol_used", "vs_torch"
    );
    let mut failed = 0;
    for r in rows {
        let verdict = if r.comparison.passed() { "PASS" } else { "FAIL" };
        if !r.comparison.passed() {
            failed += 1;
        }
        let vs_torch = match &r.pytorch {
            Some(p) if p.rel_l2 > 0.0 => format!("{:.3}", r.comparison.rel_l2 / p.rel_l2),
            Some(_) if r.comparison.rel_l2 == 0.0 => "1 (=0)".to_string(),
            Some(_) => "inf".to_string(),
            None => "-".to_string(),
        };
        println!(
            "{:<21} {:<24} {:<5} {:<7} {:<14} {:>10.3e} {:>10.3e} {:>9.2e} {:>9.3} {:>9}  {}",
            r.op,
            r.case,
            r.dtype.name(),
            backend.name(),
            r.against,
            r.comparison.max_abs_err,
            r.comparison.rel_l2,
            r.tolerance.rtol,
            r.comparison.max_tolerance_used,
            vs_torch,
            verdict
        );
        if !r.comparison.passed() {
            println!("    {}", r.comparison);
        }
    }
    failed
}

/// One case of `sampling.safetensors` (golden/gen.py `sampling_goldens`): transformers' warpers on
/// one of the model's logits rows.
pub struct SamplingGoldenCase {
    /// The case's name in the file (`top_p_tie`, ...).
    pub name: String,
    /// The row [1, n_valid], in its dtype (bf16: the bf16 model's logits; f32: the truth's).
    pub logits: HostTensor,
    pub n_valid: usize,
    pub params: crate::spec::sampling::SamplingParams,
    /// How many tokens transformers keeps (every filter keeps a prefix of the ranking, so the
    /// count fixes the set).
    pub kept: usize,
    /// The first kept tokens of the ranking, and the probabilities of the distribution transformers
    /// samples from (softmax of its processed scores) for them: in float64 (stored as f32) and as
    /// PyTorch computes them in FP32.
    pub index: Vec<i32>,
    pub truth: Vec<f32>,
    pub torch: Vec<f32>,
    /// (rtol, atol) of our probability against the truth ([`sampling_tolerance`]).
    pub tolerance: (f64, f64),
}

/// Our filtered probability against the float64 softmax of transformers' scores, relative: our
/// expf within 2 ulp (2.4e-7) of exp of the same FP32 x - max, a fixed-point total (each term
/// truncated to 2^-40, Z >= 1: n 2^-40), an FP32 reciprocal and product (2 x 2^-24), and the truth's
/// storage as f32 (2^-24). Subnormal results get an absolute 1e-37. (PyTorch's own FP32 softmax is
/// further off, about 5e-6 on these 151665-token rows: the vs_torch column.)
pub fn sampling_tolerance(n: usize) -> (f64, f64) {
    let eps = f64::powi(2.0, -24);
    (2.4e-7 + n as f64 * f64::powi(2.0, -40) + 3.0 * eps, 1e-37)
}

pub fn sampling_golden_cases(model: &str) -> Result<Vec<SamplingGoldenCase>> {
    let file = GoldenFile::open(model, "sampling")?;
    let logits_file = GoldenFile::open(model, "model")?;
    let cfg = Qwen2Config::presets().into_iter().find(|c| c.name == model).ok_or_else(|| file.error(format!("no preset {model}")))?;
    let n = cfg.real_vocab_size;
    let names: Vec<String> = serde_json::from_str(file.metadata("sampling.cases").ok_or_else(|| file.error("no sampling.cases".into()))?)
        .map_err(|e| file.error(format!("sampling.cases: {e}")))?;
    let mut out = Vec::new();
    for name in names {
        let key = format!("sampling.{name}");
        let meta: serde_json::Value = serde_json::from_str(file.metadata(&key).ok_or_else(|| file.error(format!("no {key}")))?)
            .map_err(|e| file.error(format!("{key}: {e}")))?;
        let num = |k: &str| meta[k].as_f64().ok_or_else(|| file.error(format!("{key}: no {k}")));
        let row_name = match meta["dtype"].as_str() {
            Some("bf16") => "logits.torch",
            Some("f32") => "logits.truth",
            other => return Err(file.error(format!("{key}: dtype {other:?}"))),
        };
        let row = logits_file.host(row_name)?;
        let logits = HostTensor::from_f32(row.dtype(), &[1, n], row.data()[..n].to_vec())?;
        let params = crate::spec::sampling::SamplingParams {
            temperature: num("temperature")? as f32,
            top_k: num("top_k")? as u32,
            top_p: num("top_p")? as f32,
            min_p: num("min_p")? as f32,
            seed: 0,
        };
        let kept = num("kept")? as usize;
        let index = file.tensor(&format!("{key}.index"))?.values.iter().map(|&v| v as i32).collect();
        let truth = file.tensor(&format!("{key}.probs.truth"))?.values_f32();
        let torch = file.tensor(&format!("{key}.probs.torch"))?.values_f32();
        out.push(SamplingGoldenCase { name, logits, n_valid: n, params, kept, index, truth, torch, tolerance: sampling_tolerance(n) });
    }
    Ok(out)
}

/// Rows `sampling.<filter>`: our filtered distribution (the kernel, or the float64 reference on the
/// CPU) against transformers' warpers on the model's logits; a kept count that differs fails.
fn sampling_rows(gpu: Option<&Gpu>, model: &str) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for case in sampling_golden_cases(model)? {
        let n = case.n_valid;
        let probs: Vec<f32> = match gpu {
            Some(gpu) => {
                let d = DeviceTensor::from_host(gpu, &case.logits)?;
                let mut sampler = crate::ops::sampling::Sampler::new(gpu, 1)?;
                sampler.set(gpu, &[case.params])?;
                let mut probs = DeviceTensor::zeros(gpu, DType::F32, &[1, n])?;
                crate::ops::sampling::filtered_probs(gpu, &d.view(), n, &mut sampler, &mut probs.view_mut())?;
                probs.to_host(gpu)?.into_data()
            }
            None => match crate::reference::sampling::filtered(case.logits.data(), n, &case.params) {
                Some(f) => f.probs.iter().map(|&p| p as f32).collect(),
                None => vec![f32::NAN; n],
            },
        };
        let kept = probs.iter().filter(|&&p| p > 0.0).count();
        let ours: Vec<f32> = case.index.iter().map(|&i| probs[i as usize]).collect();
        let (rtol, atol) = case.tolerance;
        let tolerance = Tolerance { atol: atol as f32, rtol: rtol as f32 };
        let mut comparison = compare(&ours, &case.truth, tolerance);
        if kept != case.kept {
            comparison.failures += kept.abs_diff(case.kept);
        }
        let pytorch = Some(compare(&case.torch, &case.truth, tolerance));
        let (op, variant) = match case.name.split_once('_') {
            Some((a, b)) if a == "top" || a == "min" => match b.split_once('_') {
                Some((p, v)) => (format!("{a}_{p}"), Some(v.to_string())),
                None => (case.name.clone(), None),
            },
            Some((a, b)) => (a.to_string(), Some(b.to_string())),
            None => (case.name.clone(), None),
        };
        let variant = variant.filter(|v| v != "f32");
        let case_name = match variant {
            Some(v) => format!("{model}:{v}"),
            None => model.to_string(),
        };
        out.push(Row { op: format!("sampling.{op}"), case: case_name, dtype: case.logits.dtype(), against: "transformers f64", tolerance, comparison, pytorch });
    }
    Ok(out)
}
