//! The RMSNorm CPU reference and the op's validation, on the CPU (no GPU needed).

mod common;

use qwen_kernels::golden::metrics::{compare, Tolerance};
use qwen_kernels::ops::rmsnorm::{check, check_same, plan, Dims, Path, FUSED_OP, OP};
use qwen_kernels::reference::rmsnorm::{add_rmsnorm, known_answers, rmsnorm};
use qwen_kernels::{DType, Error, HostTensor, Layout};

fn host(dtype: DType, dims: &[usize], v: &[f32]) -> HostTensor {
    HostTensor::from_f32(dtype, dims, v.to_vec()).unwrap()
}

#[test]
fn reference_matches_every_hand_computed_case() {
    for case in known_answers() {
        let n = case.x.len();
        let x = host(case.dtype, &[1, n], &case.x);
        let w = host(case.dtype, &[n], &case.weight);
        // Expected values are exact in the dtype or one correct rounding of an f64 value.
        let tol = Tolerance { atol: 0.0, rtol: case.dtype.epsilon() / 2.0 };
        let y = match &case.residual {
            None => rmsnorm(&x, &w, case.eps).unwrap(),
            Some(r) => {
                let (res, y) = add_rmsnorm(&x, &host(case.dtype, &[1, n], r), &w, case.eps).unwrap();
                assert_eq!(res.data(), case.expected_residual.as_deref().unwrap(), "{}", case.name);
                y
            }
        };
        let c = compare(y.data(), &case.expected, tol);
        assert!(c.passed(), "{}: {c}", case.name);
    }
}

/// The bf16 case exists to catch a reference that rounds once instead of twice: show it does.
#[test]
fn single_rounding_fails_the_double_rounding_case() {
    let case = known_answers().into_iter().find(|c| c.name == "bf16-double-rounding").unwrap();
    let inv = 1.0f32 / (2.5f32).sqrt();
    let once: Vec<f32> = case.x.iter().zip(&case.weight).map(|(&x, &w)| DType::BF16.round(w * x * inv)).collect();
    let c = compare(&once, &case.expected, Tolerance { atol: 0.0, rtol: DType::BF16.epsilon() / 2.0 });
    assert!(!c.passed(), "single rounding should not match: {c}");
}

#[test]
fn reference_rows_are_independent_and_leading_dims_are_rows() {
    let mut rng = common::rng(1);
    let x = common::uniform(&mut rng, DType::BF16, &[2, 3, 40], -3.0, 3.0);
    let w = common::uniform(&mut rng, DType::BF16, &[40], 0.0, 2.0);
    let all = rmsnorm(&x, &w, 1e-6).unwrap();
    for r in 0..6 {
        let row = host(DType::BF16, &[40], &x.data()[r * 40..(r + 1) * 40]);
        let one = rmsnorm(&row, &w, 1e-6).unwrap();
        assert_eq!(one.data(), &all.data()[r * 40..(r + 1) * 40]);
    }
}

/// Squares are taken in FP32, not in the storage dtype: f16 values of 300 square to 90000, past
/// f16's maximum of 65504, and must still give y = w.
#[test]
fn reference_squares_in_fp32() {
    let x = host(DType::F16, &[1, 4], &[300.0; 4]);
    let w = host(DType::F16, &[4], &[1.0, 0.5, 2.0, 0.25]);
    assert_eq!(rmsnorm(&x, &w, 1e-6).unwrap().data(), &[1.0, 0.5, 2.0, 0.25]);
}

#[test]
fn nan_in_a_row_stays_in_that_row() {
    let x = host(DType::F32, &[2, 3], &[1.0, f32::NAN, 1.0, 1.0, 1.0, 1.0]);
    let w = host(DType::F32, &[3], &[1.0; 3]);
    let y = rmsnorm(&x, &w, 0.0).unwrap();
    assert!(y.data()[..3].iter().all(|v| v.is_nan()));
    assert_eq!(&y.data()[3..], &[1.0; 3]);
}

fn layout(dtype: DType, dims: &[usize]) -> Layout {
    Layout::new(dtype, dims).unwrap()
}

#[test]
fn bad_inputs_are_typed_errors_naming_the_op_and_values() {
    let x = layout(DType::BF16, &[4, 896]);
    let w = layout(DType::BF16, &[896]);
    assert_eq!(check(OP, x, w, 1e-6).unwrap(), Dims { rows: 4, hidden: 896 });

    // weight length != hidden
    let e = check(OP, x, layout(DType::BF16, &[1536]), 1e-6).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "rmsnorm", .. }), "{e}");
    assert!(e.to_string().contains("[1536]") && e.to_string().contains("896"), "{e}");
    // weight of the wrong rank
    assert!(matches!(check(OP, x, layout(DType::BF16, &[1, 896]), 1e-6), Err(Error::Shape { .. })));
    // empty rows (hidden 0) and a scalar x
    let e = check(OP, layout(DType::BF16, &[4, 0]), layout(DType::BF16, &[0]), 1e-6).unwrap_err();
    assert!(e.to_string().contains("empty rows"), "{e}");
    assert!(matches!(check(OP, layout(DType::BF16, &[]), w, 1e-6), Err(Error::Shape { .. })));
    // mismatched dtypes
    let e = check(OP, x, layout(DType::F32, &[896]), 1e-6).unwrap_err();
    assert!(matches!(e, Error::DType { op: "rmsnorm", .. }) && e.to_string().contains("f32"), "{e}");
    // eps must be finite and non-negative
    for eps in [f32::NAN, -1e-6, f32::INFINITY] {
        assert!(matches!(check(OP, x, w, eps), Err(Error::InvalidArgument { .. })), "eps {eps}");
    }
    // out / residual must match x
    assert!(matches!(check_same(OP, "out", x, layout(DType::BF16, &[4, 895])), Err(Error::Shape { .. })));
    assert!(matches!(check_same(FUSED_OP, "residual", x, layout(DType::F16, &[4, 896])), Err(Error::DType { op: "add_rmsnorm", .. })));
    // the reference itself rejects the same inputs
    let hx = HostTensor::full(DType::BF16, &[2, 8], 1.0).unwrap();
    let hw = HostTensor::full(DType::BF16, &[7], 1.0).unwrap();
    assert!(matches!(rmsnorm(&hx, &hw, 1e-6), Err(Error::Shape { .. })));
    let hr = HostTensor::full(DType::BF16, &[2, 7], 1.0).unwrap();
    assert!(matches!(add_rmsnorm(&hx, &hr, &HostTensor::full(DType::BF16, &[8], 1.0).unwrap(), 1e-6), Err(Error::Shape { .. })));
}

#[test]
fn launch_plan_picks_vectors_only_when_legal() {
    let dims = |hidden| Dims { rows: 3, hidden };
    // 896 bf16 = 112 vectors of 8: vector path, 128 threads.
    let p = plan(OP, false, DType::BF16, dims(896), Path::Auto, true).unwrap();
    assert!(p.vectorized);
    assert_eq!((p.kernel, p.threads, p.grid), ("rmsnorm_bf16_vec", 128, 3));
    // 1536 f32 = 384 vectors of 4.
    let p = plan(FUSED_OP, true, DType::F32, dims(1536), Path::Auto, true).unwrap();
    assert_eq!((p.kernel, p.threads), ("add_rmsnorm_f32_vec", 384));
    // Odd sizes and unaligned operands fall back to scalar access under Auto ...
    let p = plan(OP, false, DType::F16, dims(897), Path::Auto, true).unwrap();
    assert_eq!((p.kernel, p.threads), ("rmsnorm_f16_scalar", 928));
    assert!(!plan(OP, false, DType::F16, dims(896), Path::Auto, false).unwrap().vectorized);
    // ... and are errors when the vector path is demanded.
    let e = plan(OP, false, DType::F16, dims(897), Path::Vector16, true).unwrap_err();
    assert!(matches!(e, Error::Alignment { op: "rmsnorm", .. }) && e.to_string().contains("897"), "{e}");
    assert!(matches!(plan(OP, false, DType::BF16, dims(896), Path::Vector16, false), Err(Error::Alignment { .. })));
    // Very wide rows are capped at 1024 threads.
    assert_eq!(plan(OP, false, DType::F32, dims(100_000), Path::Scalar, true).unwrap().threads, 1024);
    // Sizes past the kernel's 32-bit indexing are refused.
    let e = plan(OP, false, DType::F32, dims(1 << 31), Path::Auto, true).unwrap_err();
    assert!(matches!(e, Error::UnsupportedSize { .. }), "{e}");
}

/// The case: bf16 or f32 rows of 1536 values up to 1e18 square to ~3.3e35 on average; their
/// sum (~5e38) passes f32::MAX, so PyTorch's FP32 `pow(2).mean()` is inf, rsqrt gives 0 and every
/// row is zeros. The reference gives the same, fused or not.
#[test]
fn sum_of_squares_past_the_f32_range_gives_zero_rows() {
    let mut rng = common::rng(4);
    for dtype in [DType::BF16, DType::F32] {
        let x = common::uniform(&mut rng, dtype, &[4, 1536], -1e18, 1e18);
        let res = common::uniform(&mut rng, dtype, &[4, 1536], -0.25e18, 0.25e18);
        let w = common::uniform(&mut rng, dtype, &[1536], -2.0, 2.0);
        for r in 0..4 {
            let sum: f64 = x.data()[r * 1536..(r + 1) * 1536].iter().map(|&v| (v as f64).powi(2)).sum();
            assert!(sum > 1.3 * f32::MAX as f64, "{dtype} row {r}: sum of squares {sum:e} must be past f32::MAX");
        }
        let y = rmsnorm(&x, &w, 1e-6).unwrap();
        assert!(y.data().iter().all(|&v| v == 0.0), "{dtype}: rows past the f32 range must be zeros");
        let (_, y) = add_rmsnorm(&x, &res, &w, 1e-6).unwrap();
        assert!(y.data().iter().all(|&v| v == 0.0), "{dtype}: fused rows past the f32 range must be zeros");
    }
    // An inf in the row: inv = 0 and inf * 0 = NaN, as in PyTorch; the other row is untouched.
    let x = host(DType::F32, &[2, 3], &[1.0, f32::INFINITY, 1.0, 1.0, 1.0, 1.0]);
    let y = rmsnorm(&x, &host(DType::F32, &[3], &[1.0; 3]), 0.0).unwrap();
    assert_eq!(y.data()[0], 0.0);
    assert!(y.data()[1].is_nan());
    assert_eq!(&y.data()[3..], &[1.0; 3]);
}

/// The boundary: the sum of squares rounded to f32 is f32::MAX up to (excluding) 2^128 - 2^103 and
/// inf from there on (ties to even). Rows of powers of two hit each side exactly.
#[test]
fn overflow_boundary_is_f32_max_plus_half_an_ulp() {
    use qwen_kernels::reference::rmsnorm::{mean_of_squares, SUM_OF_SQUARES_OVERFLOW};
    assert_eq!(SUM_OF_SQUARES_OVERFLOW, 2f64.powi(128) - 2f64.powi(103));
    assert_eq!(SUM_OF_SQUARES_OVERFLOW as f32, f32::INFINITY);
    assert_eq!((SUM_OF_SQUARES_OVERFLOW - 2f64.powi(78)) as f32, f32::MAX);

    let width = 48;
    let f32_max = common::exponents_of_f32_max();
    let with = |extra: &[i32]| -> Vec<i32> { f32_max.iter().chain(extra).copied().collect() };
    let threshold: Vec<i32> = [126, 126, 126].into_iter().chain(103..=125).collect();
    // (name, exponents, exact sum, finite)
    let cases: [(&str, Vec<i32>, f64, bool); 5] = [
        ("f32::MAX", f32_max.clone(), f32::MAX as f64, true),
        ("f32::MAX + 2^102 (rounds down to f32::MAX)", with(&[102]), f32::MAX as f64 + 2f64.powi(102), true),
        ("just below 2^128 - 2^103", with(&[102, 101, 100]), SUM_OF_SQUARES_OVERFLOW - 2f64.powi(100), true),
        ("2^128 - 2^103 (ties to even: 2^128 = inf)", threshold, SUM_OF_SQUARES_OVERFLOW, false),
        ("2^128", vec![126, 126, 126, 126], 2f64.powi(128), false),
    ];
    for (name, exponents, sum, finite) in cases {
        let row = common::row_with_sum_of_squares(&exponents, width);
        let exact: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum();
        assert_eq!(exact, sum, "{name}: the row's squares");
        let mean = mean_of_squares(&row);
        assert_eq!(mean.is_finite(), finite, "{name}: mean {mean:e}");
        for dtype in [DType::F32, DType::BF16] {
            let x = host(dtype, &[1, width], &row);
            let w = host(dtype, &[width], &[1.0; 48]);
            let y = rmsnorm(&x, &w, 1e-6).unwrap();
            let (_, fused) = add_rmsnorm(&x, &host(dtype, &[1, width], &[0.0; 48]), &w, 1e-6).unwrap();
            assert_eq!(y.data(), fused.data(), "{name} {dtype}: fused with a zero residual");
            if finite {
                // y = x / sqrt(sum / width): inv (FP64 from the sum) and the product each round
                // once to f32, then the dtype rounds once.
                let rms = (sum / width as f64).sqrt();
                let expected: Vec<f32> = row.iter().map(|&v| (v as f64 / rms) as f32).collect();
                let tol = Tolerance { atol: 0.0, rtol: dtype.epsilon() / 2.0 + 2f32.powi(-21) };
                let c = compare(y.data(), &expected, tol);
                assert!(c.passed(), "{name} {dtype}: {c}");
                assert!(y.data()[0] > 0.5, "{name} {dtype}: {:?}", &y.data()[..4]);
            } else {
                assert!(y.data().iter().all(|&v| v == 0.0), "{name} {dtype}: {:?}", &y.data()[..4]);
            }
        }
    }

    // Away from the threshold an FP32 accumulator, in any order, agrees with the reference: the
    // f32::MAX row sums exactly forwards and backwards, the 2^128 row overflows either way.
    let fp32_sum = |row: &[f32]| row.iter().fold(0f32, |s, &v| s + v * v);
    let row = common::row_with_sum_of_squares(&f32_max, width);
    let reversed: Vec<f32> = row.iter().rev().copied().collect();
    assert_eq!((fp32_sum(&row), fp32_sum(&reversed)), (f32::MAX, f32::MAX));
    let row = common::row_with_sum_of_squares(&[126, 126, 126, 126], width);
    assert_eq!(fp32_sum(&row), f32::INFINITY);
}
