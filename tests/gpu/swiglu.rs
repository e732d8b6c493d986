//! SwiGLU kernels against the CPU reference and the PyTorch goldens (run by tests/gpu/main.rs).

use crate::common::{rng, uniform, DTYPES};
use crate::support::Guarded;
use crate::GpuTest;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qwen_kernels::check::in_range;
use qwen_kernels::golden::metrics::{compare, Tolerance};
use qwen_kernels::golden::tolerance::{subnormal_spacing, table};
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::ops::swiglu::{swiglu, swiglu_fused_with_path, swiglu_with_path, Path};
use qwen_kernels::reference::swiglu as reference;
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[
    ("swiglu::random_inputs_every_dtype_width_and_path", random_inputs_every_dtype_width_and_path),
    ("swiglu::extremes_saturate_like_pytorch", extremes_saturate_like_pytorch),
    ("swiglu::goldens_both_models", goldens_both_models),
    ("swiglu::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
    ("swiglu::proptest_shapes", proptest_shapes),
];

/// Kernel against `reference::swiglu`. Both compute silu(g) = g / (1 + exp(-g)) in FP32, but CUDA's
/// expf is within 2 ulp and the host's within 1: e = exp(-g) differs by up to 3 ulp, 6 u32 relative
/// (one ulp is at most 2 u32 of the value), which silu carries over scaled by e / (1 + e) <= 1. The
/// add and the divide round once on each side: up to 4 u32 more. So the two silu values differ by
/// at most 10 u32 relative, and the product with up, rounded on each side, adds 2 u32: in f32
/// storage rtol = 12 u32. In 16-bit storage silu is rounded to T first: the two may land on
/// neighbouring values (eps_T relative), and the rounded products one more step apart (eps_T):
/// rtol = 2 eps_T + 12 u32. Near zero (g << 0: silu is tiny) the two roundings can each lose one
/// subnormal step, the first one multiplied by |up|: atol = 2 tiny_T (1 + max|up|).
fn vs_reference(dtype: DType, max_abs_up: f32) -> Tolerance {
    let u32_ = 2f32.powi(-24);
    let rtol = match dtype {
        DType::F32 => 12.0 * u32_,
        _ => 2.0 * dtype.epsilon() + 12.0 * u32_,
    };
    Tolerance { atol: 2.0 * subnormal_spacing(dtype) * (1.0 + max_abs_up), rtol }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// [gate | up] rows: the fused GEMM output layout.
fn fuse(gate: &HostTensor, up: &HostTensor) -> HostTensor {
    let width = *gate.dims().last().unwrap();
    let rows = gate.data().len() / width;
    let mut v = Vec::with_capacity(2 * gate.data().len());
    for r in 0..rows {
        v.extend_from_slice(&gate.data()[r * width..(r + 1) * width]);
        v.extend_from_slice(&up.data()[r * width..(r + 1) * width]);
    }
    HostTensor::from_f32(gate.dtype(), &[rows, 2 * width], v).unwrap()
}

/// Run both forms on every path that applies; returns each result (guards checked) with its label.
fn run_all(gpu: &Gpu, gate: &HostTensor, up: &HostTensor) -> Vec<(String, Vec<f32>)> {
    let dtype = gate.dtype();
    let width = *gate.dims().last().unwrap();
    let rows = gate.data().len() / width;
    let vector_ok = width % (16 / dtype.size()) == 0;
    let (dg, du) = (DeviceTensor::from_host(gpu, gate).unwrap(), DeviceTensor::from_host(gpu, up).unwrap());
    let dx = DeviceTensor::from_host(gpu, &fuse(gate, up)).unwrap();
    let mut out = Vec::new();
    for path in [Path::Auto, Path::Scalar, Path::Vector16] {
        if path == Path::Vector16 && !vector_ok {
            continue;
        }
        let label = format!("{dtype} rows {rows} width {width} {path:?}");
        let mut y = Guarded::poisoned(gpu, dtype, &[rows, width]);
        y.with_mut(|o| swiglu_with_path(gpu, &dg.view(), &du.view(), o, path).unwrap());
        out.push((format!("two tensors {label}"), y.inner(gpu, &label)));
        let mut y = Guarded::poisoned(gpu, dtype, &[rows, width]);
        y.with_mut(|o| swiglu_fused_with_path(gpu, &dx.view(), o, path).unwrap());
        out.push((format!("fused {label}"), y.inner(gpu, &label)));
    }
    out
}

fn check_case(gpu: &Gpu, gate: &HostTensor, up: &HostTensor) {
    let expected = reference::swiglu(gate, up).unwrap();
    let tol = vs_reference(gate.dtype(), max_abs(up.data()));
    for (label, got) in run_all(gpu, gate, up) {
        let c = compare(&got, expected.data(), tol);
        assert!(c.passed(), "swiglu {label}: {c}");
    }
}

fn random_inputs_every_dtype_width_and_path(gpu: &Gpu) {
    let mut r = rng(21);
    for dtype in DTYPES {
        for width in [1, 2, 7, 8, 111, 500, 4097, 4864, 8960] {
            for rows in [1, 3, 64] {
                let gate = uniform(&mut r, dtype, &[rows, width], -12.0, 12.0);
                let up = uniform(&mut r, dtype, &[rows, width], -6.0, 6.0);
                check_case(gpu, &gate, &up);
            }
        }
    }
}

/// silu saturates: g = -100 gives -0 (exp overflows to inf), g = 100 gives 100; zeros, signed
/// zeros, values where exp(-g) leaves f16's range but not FP32's; a NaN in gate stays a NaN.
fn extremes_saturate_like_pytorch(gpu: &Gpu) {
    for dtype in DTYPES {
        let g = vec![-100.0, -88.5, -30.0, -1e-3, -0.0, 0.0, 1e-3, 11.5, 30.0, 88.5, 100.0, f32::NAN, 2.0, -2.0, 60000.0, -60000.0];
        let u = vec![3.0, -3.0, 1.0, 2.0, 5.0, -5.0, 1.0, 0.5, -0.5, 1.0, 1.0, 1.0, 0.0, -0.0, 1.0, 1.0];
        let gate = HostTensor::from_f32(dtype, &[1, 16], g).unwrap();
        let up = HostTensor::from_f32(dtype, &[1, 16], u).unwrap();
        let expected = reference::swiglu(&gate, &up).unwrap();
        assert!(expected.data()[11].is_nan());
        check_case(gpu, &gate, &up);
    }
}

/// The kernel against PyTorch's float64 truth for both models' MLP widths, with the tolerance table
/// of `check` (the same rows the CPU reference passes), both input forms.
fn goldens_both_models(gpu: &Gpu) {
    for cfg in Qwen2Config::presets() {
        let file = GoldenFile::open(cfg.name, "ops").unwrap();
        for dtype in DTYPES {
            let name = |t: &str| format!("swiglu.{dtype}.{t}");
            let gate = file.host(&name("gate")).unwrap();
            let up = file.host(&name("up")).unwrap();
            assert_eq!(*gate.dims().last().unwrap(), cfg.intermediate_size);
            let truth = in_range(dtype, file.tensor(&name("y.truth")).unwrap().values);
            let tol = table::swiglu(dtype, max_abs(up.data()));
            for (label, got) in run_all(gpu, &gate, &up) {
                let c = compare(&got, &truth, tol);
                println!("    swiglu golden {} {label}: {c}", cfg.name);
                assert!(c.passed(), "swiglu golden {} {label}: {c}", cfg.name);
            }
        }
    }
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let z = |dtype, dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).unwrap();
    let g = z(DType::BF16, &[2, 4864]);
    let mut y = z(DType::BF16, &[2, 4864]);
    let e = swiglu(gpu, &g.view(), &z(DType::BF16, &[2, 4865]).view(), &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "swiglu", .. }), "{e}");
    let e = swiglu(gpu, &g.view(), &z(DType::F16, &[2, 4864]).view(), &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = swiglu(gpu, &g.view(), &g.view(), &mut z(DType::BF16, &[3, 4864]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = swiglu(gpu, &g.view(), &g.view(), &mut z(DType::F32, &[2, 4864]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    // fused: odd last dimension, output of the full width
    let e = swiglu_fused_with_path(gpu, &z(DType::BF16, &[2, 9727]).view(), &mut y.view_mut(), Path::Auto).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "swiglu_fused", .. }), "{e}");
    let x = z(DType::BF16, &[2, 9728]);
    let e = swiglu_fused_with_path(gpu, &x.view(), &mut z(DType::BF16, &[2, 9728]).view_mut(), Path::Auto).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // vector path on a width that is not whole vectors (fused width 4 bf16: up starts 8 bytes in)
    let e = swiglu_fused_with_path(gpu, &z(DType::BF16, &[2, 8]).view(), &mut z(DType::BF16, &[2, 4]).view_mut(), Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { .. }), "{e}");
    // ... and on an unaligned view: rows of 1 element of a flat buffer, starting 2 bytes in
    let flat = z(DType::BF16, &[1 + 2 * 16]);
    let shifted = flat.view().rows(1..33).unwrap().reshape(&[2, 16]).unwrap();
    assert_eq!(shifted.byte_offset() % 16, 2);
    let e = swiglu_with_path(gpu, &shifted, &shifted, &mut z(DType::BF16, &[2, 16]).view_mut(), Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { .. }), "{e}");
    // Auto serves it with scalar access.
    swiglu_with_path(gpu, &shifted, &shifted, &mut z(DType::BF16, &[2, 16]).view_mut(), Path::Auto).unwrap();
    // empty batch: nothing launched, nothing fails
    swiglu(gpu, &z(DType::BF16, &[0, 8]).view(), &z(DType::BF16, &[0, 8]).view(), &mut z(DType::BF16, &[0, 8]).view_mut()).unwrap();
}

fn proptest_shapes(gpu: &Gpu) {
    let strategy = (1usize..40, 1usize..3000, 0usize..3, -2i32..3, any::<u64>());
    let mut runner = TestRunner::new(ProptestConfig { cases: 48, ..ProptestConfig::default() });
    runner
        .run(&strategy, |(rows, width, dtype_i, scale_exp, seed)| {
            let dtype = DTYPES[dtype_i];
            let scale = 10f32.powi(scale_exp);
            let mut r = rng(seed);
            let gate = uniform(&mut r, dtype, &[rows, width], -scale, scale);
            let up = uniform(&mut r, dtype, &[rows, width], -scale, scale);
            check_case(gpu, &gate, &up);
            Ok(())
        })
        .unwrap();
}
