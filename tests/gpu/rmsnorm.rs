//! RMSNorm kernels against the CPU reference on a GPU (run by tests/gpu/main.rs).

use crate::common::{exponents_of_f32_max, rng, row_with_sum_of_squares, uniform, DTYPES, GUARD, HIDDEN_SIZES, POISON};
use crate::GpuTest;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qwen_kernels::golden::metrics::{compare, Tolerance};
use qwen_kernels::golden::tolerance::rmsnorm_vs_reference;
use qwen_kernels::ops::rmsnorm::{add_rmsnorm_with_path, rmsnorm, rmsnorm_with_path, Path};
use qwen_kernels::reference::rmsnorm as reference;
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[
    ("rmsnorm::random_inputs_every_dtype_and_hidden_size", random_inputs_every_dtype_and_hidden_size),
    ("rmsnorm::massive_activations_and_tiny_values", massive_activations_and_tiny_values),
    ("rmsnorm::large_magnitudes_square_in_fp32", large_magnitudes_square_in_fp32),
    ("rmsnorm::sum_of_squares_past_f32_max_gives_zero_rows", sum_of_squares_past_f32_max_gives_zero_rows),
    ("rmsnorm::rows_are_batch_invariant", rows_are_batch_invariant),
    ("rmsnorm::nan_stays_in_its_row", nan_stays_in_its_row),
    ("rmsnorm::empty_batch_is_a_no_op", empty_batch_is_a_no_op),
    ("rmsnorm::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
    ("rmsnorm::proptest_shapes", proptest_shapes),
];

const EPS: f32 = 1e-6;
const EXACT: Tolerance = Tolerance { atol: 0.0, rtol: 0.0 };

/// An output tensor of `rows` rows with one guard row before and after (filled with GUARD) and the
/// rows in between poisoned with NaN.
fn guarded_output(gpu: &Gpu, dtype: DType, rows: usize, hidden: usize) -> DeviceTensor {
    let mut v = vec![POISON; (rows + 2) * hidden];
    v[..hidden].fill(GUARD);
    v[(rows + 1) * hidden..].fill(GUARD);
    DeviceTensor::from_host(gpu, &HostTensor::from_f32(dtype, &[rows + 2, hidden], v).unwrap()).unwrap()
}

/// The guard rows unchanged; returns the inner rows.
fn inner_rows(gpu: &Gpu, t: &DeviceTensor, rows: usize, hidden: usize, what: &str) -> Vec<f32> {
    let all = t.to_host(gpu).unwrap().into_data();
    assert!(all[..hidden].iter().all(|&v| v == GUARD), "{what}: guard before the output was written");
    assert!(all[(rows + 1) * hidden..].iter().all(|&v| v == GUARD), "{what}: guard after the output was written");
    all[hidden..(rows + 1) * hidden].to_vec()
}

/// Run both ops on one case with every path that applies and compare with the reference.
fn check_case(gpu: &Gpu, x: &HostTensor, residual: &HostTensor, w: &HostTensor, what: &str) {
    let dtype = x.dtype();
    let hidden = *x.dims().last().unwrap();
    let rows = x.data().len() / hidden;
    let tol = rmsnorm_vs_reference(dtype, hidden);
    let expected = reference::rmsnorm(x, w, EPS).unwrap();
    let (expected_res, expected_fused) = reference::add_rmsnorm(x, residual, w, EPS).unwrap();
    let dx = DeviceTensor::from_host(gpu, x).unwrap();
    let dw = DeviceTensor::from_host(gpu, w).unwrap();
    let vector_ok = hidden % (16 / dtype.size()) == 0;
    for path in [Path::Auto, Path::Scalar, Path::Vector16] {
        if path == Path::Vector16 && !vector_ok {
            continue;
        }
        let what = format!("{what} {dtype} hidden {hidden} rows {rows} {path:?}");

        let mut y = guarded_output(gpu, dtype, rows, hidden);
        {
            let mut full = y.view_mut();
            let mut out = full.rows_mut(1..rows + 1).unwrap();
            rmsnorm_with_path(gpu, &dx.view(), &dw.view(), EPS, &mut out, path).unwrap();
        }
        let c = compare(&inner_rows(gpu, &y, rows, hidden, &what), expected.data(), tol);
        assert!(c.passed(), "rmsnorm {what}: {c}");

        let mut res = DeviceTensor::zeros(gpu, dtype, &[rows + 2, hidden]).unwrap();
        {
            let mut full = res.view_mut();
            let guard = HostTensor::full(dtype, &[1, hidden], GUARD).unwrap();
            full.rows_mut(0..1).unwrap().upload(gpu, &guard).unwrap();
            full.rows_mut(rows + 1..rows + 2).unwrap().upload(gpu, &guard).unwrap();
            full.rows_mut(1..rows + 1).unwrap().upload(gpu, residual).unwrap();
        }
        let mut y = guarded_output(gpu, dtype, rows, hidden);
        {
            let mut res_full = res.view_mut();
            let mut res_inner = res_full.rows_mut(1..rows + 1).unwrap();
            let mut y_full = y.view_mut();
            let mut out = y_full.rows_mut(1..rows + 1).unwrap();
            add_rmsnorm_with_path(gpu, &dx.view(), &mut res_inner, &dw.view(), EPS, &mut out, path).unwrap();
        }
        let c = compare(&inner_rows(gpu, &y, rows, hidden, &what), expected_fused.data(), tol);
        assert!(c.passed(), "add_rmsnorm {what}: {c}");
        // The residual sum is the same single rounding on both sides: bit-exact.
        let c = compare(&inner_rows(gpu, &res, rows, hidden, &what), expected_res.data(), EXACT);
        assert!(c.passed(), "add_rmsnorm residual {what}: {c}");
    }
}

fn random_inputs_every_dtype_and_hidden_size(gpu: &Gpu) {
    let mut r = rng(2);
    for dtype in DTYPES {
        for &hidden in HIDDEN_SIZES {
            for rows in [1, 3, 64] {
                let x = uniform(&mut r, dtype, &[rows, hidden], -4.0, 4.0);
                let res = uniform(&mut r, dtype, &[rows, hidden], -4.0, 4.0);
                let w = uniform(&mut r, dtype, &[hidden], -2.0, 2.0);
                check_case(gpu, &x, &res, &w, "random");
            }
        }
    }
}

/// Qwen2.5's massive activations: a few channels in the thousands next to values near 1 and tiny
/// ones, at both models' widths.
fn massive_activations_and_tiny_values(gpu: &Gpu) {
    let mut r = rng(3);
    for dtype in DTYPES {
        for hidden in [896, 1536] {
            let rows = 5;
            let mut x = uniform(&mut r, dtype, &[rows, hidden], -1.0, 1.0).into_data();
            for row in 0..rows {
                x[row * hidden + 3] = -4192.0;
                x[row * hidden + 100] = 7968.0;
                x[row * hidden + 101] = 1e-5;
            }
            let x = HostTensor::from_f32(dtype, &[rows, hidden], x).unwrap();
            let res = uniform(&mut r, dtype, &[rows, hidden], -1.0, 1.0);
            let w = uniform(&mut r, dtype, &[hidden], 0.0, 3.0);
            check_case(gpu, &x, &res, &w, "massive");
        }
    }
}

/// Large magnitudes whose squares overflow f16 but not FP32: x up to 6e4 in f16; 2e17 in f32 and
/// bf16, where r = x + residual stays below 2.5e17 and a row's sum of squares below
/// 1536 * 6.25e34 = 9.6e37, under f32::MAX (3.4e38) whatever the draw.
fn large_magnitudes_square_in_fp32(gpu: &Gpu) {
    let mut r = rng(4);
    for (dtype, scale) in [(DType::F16, 6.0e4), (DType::BF16, 2.0e17), (DType::F32, 2.0e17)] {
        let x = uniform(&mut r, dtype, &[4, 1536], -scale, scale);
        let res = uniform(&mut r, dtype, &[4, 1536], -scale / 4.0, scale / 4.0);
        let w = uniform(&mut r, dtype, &[1536], -2.0, 2.0);
        check_case(gpu, &x, &res, &w, "large");
        let y = reference::rmsnorm(&x, &w, EPS).unwrap();
        assert!(y.data().iter().any(|&v| v.abs() > 0.1), "{dtype}: rows within the f32 range are not zeros");
    }
}

/// The overflow contract (src/spec/rmsnorm.rs): a sum of squares past f32's range is +inf in
/// the FP32 reduction, as in PyTorch's `pow(2).mean()`, so inv = 0 and the row is zeros.
/// - x up to 1e18 over 1536 columns: sums of ~5e38, far past f32::MAX, every row zeros.
/// - The boundary, with rows of powers of two whose every partial sum is exact in any reduction
///   order: a sum of exactly f32::MAX stays finite (y = x / rms, about 1 for the largest values),
///   a sum of 2^128 (one f32 ulp more) gives zeros. Residuals are zero so the fused op sees the
///   same rows. f16 cannot get there (65504^2 * 1536 = 6.6e12).
fn sum_of_squares_past_f32_max_gives_zero_rows(gpu: &Gpu) {
    let mut r = rng(7);
    for dtype in [DType::BF16, DType::F32] {
        let x = uniform(&mut r, dtype, &[4, 1536], -1.0e18, 1.0e18);
        let res = uniform(&mut r, dtype, &[4, 1536], -0.25e18, 0.25e18);
        let w = uniform(&mut r, dtype, &[1536], -2.0, 2.0);
        assert!(reference::rmsnorm(&x, &w, EPS).unwrap().data().iter().all(|&v| v == 0.0), "{dtype}: reference");
        check_case(gpu, &x, &res, &w, "past f32::MAX");

        let hidden = 1536;
        let finite = row_with_sum_of_squares(&exponents_of_f32_max(), hidden);
        let overflow = row_with_sum_of_squares(&[126, 126, 126, 126], hidden);
        let x = HostTensor::from_f32(dtype, &[2, hidden], [finite, overflow].concat()).unwrap();
        let zeros = HostTensor::full(dtype, &[2, hidden], 0.0).unwrap();
        let w = HostTensor::full(dtype, &[hidden], 1.0).unwrap();
        check_case(gpu, &x, &zeros, &w, "boundary");
        let dx = DeviceTensor::from_host(gpu, &x).unwrap();
        let dw = DeviceTensor::from_host(gpu, &w).unwrap();
        let mut y = DeviceTensor::zeros(gpu, dtype, &[2, hidden]).unwrap();
        rmsnorm(gpu, &dx.view(), &dw.view(), EPS, &mut y.view_mut()).unwrap();
        let y = y.to_host(gpu).unwrap().into_data();
        assert!(y[0] > 0.5 && y[..hidden].iter().all(|v| v.is_finite()), "{dtype}: sum = f32::MAX must stay finite: {:?}", &y[..4]);
        assert!(y[hidden..].iter().all(|&v| v == 0.0), "{dtype}: sum = 2^128 must give zeros: {:?}", &y[hidden..hidden + 4]);
    }
}

/// A row's result does not depend on how many rows share the launch (reduction order is fixed by
/// the row's own size): bit-identical alone and inside a batch.
fn rows_are_batch_invariant(gpu: &Gpu) {
    let mut r = rng(5);
    for dtype in DTYPES {
        let hidden = 1536;
        let x = uniform(&mut r, dtype, &[33, hidden], -4.0, 4.0);
        let w = uniform(&mut r, dtype, &[hidden], -2.0, 2.0);
        let dx = DeviceTensor::from_host(gpu, &x).unwrap();
        let dw = DeviceTensor::from_host(gpu, &w).unwrap();
        let mut all = DeviceTensor::zeros(gpu, dtype, &[33, hidden]).unwrap();
        rmsnorm(gpu, &dx.view(), &dw.view(), EPS, &mut all.view_mut()).unwrap();
        let all = all.to_host(gpu).unwrap().into_data();
        let mut one = DeviceTensor::zeros(gpu, dtype, &[1, hidden]).unwrap();
        rmsnorm(gpu, &dx.view().rows(17..18).unwrap(), &dw.view(), EPS, &mut one.view_mut()).unwrap();
        let one = one.to_host(gpu).unwrap().into_data();
        assert_eq!(one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                   all[17 * hidden..18 * hidden].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{dtype}");
    }
}

/// A NaN in one row makes that row NaN and leaves the others alone (nothing hidden, nothing spread).
fn nan_stays_in_its_row(gpu: &Gpu) {
    let mut r = rng(6);
    for dtype in DTYPES {
        let mut x = uniform(&mut r, dtype, &[3, 896], -1.0, 1.0).into_data();
        x[896 + 10] = f32::NAN;
        let x = HostTensor::from_f32(dtype, &[3, 896], x).unwrap();
        let w = uniform(&mut r, dtype, &[896], 0.0, 2.0);
        let dx = DeviceTensor::from_host(gpu, &x).unwrap();
        let dw = DeviceTensor::from_host(gpu, &w).unwrap();
        let mut y = DeviceTensor::zeros(gpu, dtype, &[3, 896]).unwrap();
        rmsnorm(gpu, &dx.view(), &dw.view(), EPS, &mut y.view_mut()).unwrap();
        let y = y.to_host(gpu).unwrap().into_data();
        assert!(y[896..1792].iter().all(|v| v.is_nan()), "{dtype}");
        assert!(y[..896].iter().chain(&y[1792..]).all(|v| v.is_finite()), "{dtype}");
    }
}

fn empty_batch_is_a_no_op(gpu: &Gpu) {
    let x = DeviceTensor::zeros(gpu, DType::BF16, &[0, 896]).unwrap();
    let w = DeviceTensor::zeros(gpu, DType::BF16, &[896]).unwrap();
    let mut y = DeviceTensor::zeros(gpu, DType::BF16, &[0, 896]).unwrap();
    rmsnorm(gpu, &x.view(), &w.view(), EPS, &mut y.view_mut()).unwrap();
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let z = |dtype, dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).unwrap();
    let x = z(DType::BF16, &[4, 896]);
    let w = z(DType::BF16, &[896]);
    let mut y = z(DType::BF16, &[4, 896]);
    // weight length != hidden
    let e = rmsnorm(gpu, &x.view(), &z(DType::BF16, &[895]).view(), EPS, &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "rmsnorm", .. }), "{e}");
    // output shape and dtype
    let e = rmsnorm(gpu, &x.view(), &w.view(), EPS, &mut z(DType::BF16, &[4, 897]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = rmsnorm(gpu, &x.view(), &w.view(), EPS, &mut z(DType::F16, &[4, 896]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    // weight dtype
    let e = rmsnorm(gpu, &x.view(), &z(DType::F32, &[896]).view(), EPS, &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    // empty rows
    let e = rmsnorm(gpu, &z(DType::BF16, &[4, 0]).view(), &z(DType::BF16, &[0]).view(), EPS, &mut z(DType::BF16, &[4, 0]).view_mut()).unwrap_err();
    assert!(e.to_string().contains("empty rows"), "{e}");
    // vector path demanded on an odd width, and on an unaligned view (rows of 897 bf16 start at
    // 1794-byte steps)
    let x_odd = z(DType::BF16, &[4, 897]);
    let e = rmsnorm_with_path(gpu, &x_odd.view(), &z(DType::BF16, &[897]).view(), EPS, &mut z(DType::BF16, &[4, 897]).view_mut(), Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { .. }), "{e}");
    let flat = z(DType::BF16, &[2 * 897 + 896]);
    let shifted = flat.view().reshape(&[2 * 897 + 896, 1]).unwrap().rows(897..897 + 896).unwrap().reshape(&[1, 896]).unwrap();
    assert_eq!(shifted.byte_offset() % 16, 2);
    let e = rmsnorm_with_path(gpu, &shifted, &w.view(), EPS, &mut z(DType::BF16, &[1, 896]).view_mut(), Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { .. }), "{e}");
    // ... while Auto serves the unaligned view with scalar access, correctly.
    rmsnorm_with_path(gpu, &shifted, &w.view(), EPS, &mut z(DType::BF16, &[1, 896]).view_mut(), Path::Auto).unwrap();
    // fused: residual of the wrong shape
    let e = add_rmsnorm_with_path(gpu, &x.view(), &mut z(DType::BF16, &[3, 896]).view_mut(), &w.view(), EPS, &mut y.view_mut(), Path::Auto).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "add_rmsnorm", .. }), "{e}");
}

/// Any rows x hidden, any dtype, any input scale: kernel == reference within tolerance.
fn proptest_shapes(gpu: &Gpu) {
    let strategy = (1usize..40, 1usize..3000, 0usize..3, -3i32..4, any::<u64>());
    let mut runner = TestRunner::new(ProptestConfig { cases: 48, ..ProptestConfig::default() });
    runner
        .run(&strategy, |(rows, hidden, dtype_i, scale_exp, seed)| {
            let dtype = DTYPES[dtype_i];
            let scale = 10f32.powi(scale_exp);
            let mut r = rng(seed);
            let x = uniform(&mut r, dtype, &[rows, hidden], -scale, scale);
            let res = uniform(&mut r, dtype, &[rows, hidden], -scale, scale);
            let w = uniform(&mut r, dtype, &[hidden], -2.0, 2.0);
            check_case(gpu, &x, &res, &w, "proptest");
            Ok(())
        })
        .unwrap();
}
