//! The comparator must be able to fail: every kind of mismatch it exists to catch.

use qwen_kernels::golden::metrics::{compare, Tolerance};

const TOL: Tolerance = Tolerance { atol: 1e-6, rtol: 1e-3 };

#[test]
fn equal_values_pass_with_zero_error() {
    let c = compare(&[1.0, -2.0, 0.0], &[1.0, -2.0, 0.0], TOL);
    assert!(c.passed() && c.max_abs_err == 0.0 && c.max_tolerance_used == 0.0, "{c}");
}

#[test]
fn one_element_over_tolerance_fails_even_if_the_mean_is_tiny() {
    let mut actual = vec![1.0f32; 10_000];
    let expected = actual.clone();
    actual[9_999] = 1.01;
    let c = compare(&actual, &expected, TOL);
    assert!(!c.passed());
    assert_eq!(c.failures, 1);
    assert_eq!(c.worst.map(|w| w.0), Some(9_999));
    assert!((c.max_tolerance_used - 0.01 / (1e-6 + 1e-3)).abs() < 1e-3, "{c}");
}

#[test]
fn tolerance_is_atol_plus_rtol_times_expected() {
    // Allowed at 1000: 1e-6 + 1 = 1.000001.
    assert!(compare(&[1001.0], &[1000.0], TOL).passed());
    assert!(!compare(&[1001.01], &[1000.0], TOL).passed());
}

#[test]
fn non_finite_where_finite_expected_fails() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let c = compare(&[1.0, bad], &[1.0, 2.0], TOL);
        assert!(!c.passed() && c.nonfinite_mismatches == 1, "{bad}: {c}");
    }
    // finite where the truth is infinite, and the wrong infinity
    assert!(!compare(&[3.0e38], &[f32::INFINITY], TOL).passed());
    assert!(!compare(&[f32::NEG_INFINITY], &[f32::INFINITY], TOL).passed());
    // matching non-finite values pass
    assert!(compare(&[f32::NAN, f32::INFINITY], &[f32::NAN, f32::INFINITY], TOL).passed());
}

#[test]
fn length_mismatch_fails() {
    assert!(!compare(&[1.0], &[1.0, 2.0], TOL).passed());
}
