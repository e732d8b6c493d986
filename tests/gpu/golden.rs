//! The kernels against the PyTorch goldens (run by tests/gpu/main.rs).

use crate::GpuTest;
use qwen_kernels::check::golden_rows;
use qwen_kernels::Gpu;

pub const TESTS: &[GpuTest] = &[("golden::kernels_pass_every_golden", kernels_pass_every_golden)];

fn kernels_pass_every_golden(gpu: &Gpu) {
    let rows = golden_rows(Some(gpu)).unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        assert!(r.comparison.passed(), "{} {} {}: {}", r.op, r.case, r.dtype, r.comparison);
    }
}
