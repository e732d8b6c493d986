//! The kernels against the PyTorch goldens (run by tests/gpu/main.rs).

use crate::GpuTest;
use qwen_kernels::check::golden_rows;
use qwen_kernels::{DType, Gpu};

pub const TESTS: &[GpuTest] = &[("golden::kernels_pass_every_golden", kernels_pass_every_golden)];

/// Every kernel row passes its derived tolerance; and in f32 the decode GEMVs (every projection of
/// both models at their shapes, `gemv.*`) and the norms (`rmsnorm`, `add_rmsnorm`) are no further
/// from the float64 truth than PyTorch's own FP32 modules (vs_torch <= 1: our rel-L2 over theirs).
/// Their sums are FMA chains and fixed trees with no library function in them, so the software
/// device computes the same bits as a GPU.
fn kernels_pass_every_golden(gpu: &Gpu) {
    let rows = golden_rows(Some(gpu)).unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        assert!(r.comparison.passed(), "{} {} {}: {}", r.op, r.case, r.dtype, r.comparison);
    }
    let gemv: Vec<&str> = rows.iter().filter(|r| r.op.starts_with("gemv.")).map(|r| r.op.as_str()).collect();
    for proj in ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up", "down_proj", "lm_head"] {
        let n = gemv.iter().filter(|op| op.strip_prefix("gemv.") == Some(proj)).count();
        // Both models; f32, f16 and bf16 on the ops file's goldens, f32 and bf16 on layer 0's.
        let dtypes = if ["v_proj", "gate_up", "down_proj"].contains(&proj) { 2 } else { 3 };
        assert_eq!(n, 2 * dtypes, "gemv.{proj}: {gemv:?}");
    }
    for r in rows.iter().filter(|r| r.dtype == DType::F32 && (r.op.starts_with("gemv.") || r.op == "rmsnorm" || r.op == "add_rmsnorm")) {
        let torch = r.pytorch.as_ref().expect("a golden row has PyTorch's error beside ours");
        assert!(
            r.comparison.rel_l2 <= torch.rel_l2,
            "{} {} f32: rel-L2 {:.3e} against the truth, PyTorch's {:.3e} (vs_torch {:.3})",
            r.op,
            r.case,
            r.comparison.rel_l2,
            torch.rel_l2,
            r.comparison.rel_l2 / torch.rel_l2
        );
    }
}
