//! Validation of the linear, SwiGLU and RoPE references (shared with their kernels): bad input is a
//! typed error naming the op and the values.

use qwen_kernels::ops::{argmax, attention, gemm, rope, swiglu};
use qwen_kernels::{DType, Error, HostTensor, Layout};

fn l(dtype: DType, dims: &[usize]) -> Layout {
    Layout::new(dtype, dims).unwrap()
}

#[test]
fn linear_rejects_bad_shapes_and_dtypes() {
    let x = l(DType::BF16, &[8, 896]);
    let d = gemm::check_linear(x, l(DType::BF16, &[128, 896]), Some(l(DType::BF16, &[128]))).unwrap();
    assert_eq!((d.rows, d.in_features, d.out_features), (8, 896, 128));
    // a weight stored [in, out] instead of [out, in]
    let e = gemm::check_linear(x, l(DType::BF16, &[896, 128]), None).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "linear", .. }) && e.to_string().contains("transposed"), "{e}");
    assert!(matches!(gemm::check_linear(x, l(DType::BF16, &[128, 896]), Some(l(DType::BF16, &[896]))), Err(Error::Shape { .. })));
    assert!(matches!(gemm::check_linear(x, l(DType::F16, &[128, 896]), None), Err(Error::DType { .. })));
    assert!(matches!(gemm::check_linear(x, l(DType::BF16, &[128, 896]), Some(l(DType::F32, &[128]))), Err(Error::DType { .. })));
    assert!(matches!(gemm::check_linear(x, l(DType::BF16, &[128, 896, 1]), None), Err(Error::Shape { .. })));
    assert!(matches!(gemm::check_linear(l(DType::BF16, &[8, 0]), l(DType::BF16, &[4, 0]), None), Err(Error::Shape { .. })));
}

#[test]
fn linear_reference_is_exact_on_integers_and_non_square() {
    // x [2, 3], W [4, 3] (out 4, in 3), b [4]: y = x W^T + b, all small integers (exact in bf16).
    let x = HostTensor::from_f32(DType::BF16, &[2, 3], vec![1., 2., 3., -1., 0., 2.]).unwrap();
    let w = HostTensor::from_f32(DType::BF16, &[4, 3], vec![1., 0., 0., 0., 1., 0., 0., 0., 1., 1., 1., 1.]).unwrap();
    let b = HostTensor::from_f32(DType::BF16, &[4], vec![10., 20., 30., 40.]).unwrap();
    let y = qwen_kernels::reference::linear::linear(&x, &w, Some(&b)).unwrap();
    assert_eq!(y.dims(), &[2, 4]);
    assert_eq!(y.data(), &[11., 22., 33., 46., 9., 20., 32., 41.]);
}

#[test]
fn swiglu_rejects_mismatched_inputs() {
    let g = l(DType::BF16, &[2, 4864]);
    assert_eq!(swiglu::check(g, g).unwrap(), 2 * 4864);
    assert!(matches!(swiglu::check(g, l(DType::BF16, &[2, 4863])), Err(Error::Shape { op: "swiglu", .. })));
    assert!(matches!(swiglu::check(g, l(DType::F16, &[2, 4864])), Err(Error::DType { .. })));
    assert!(matches!(swiglu::check(l(DType::BF16, &[2, 0]), l(DType::BF16, &[2, 0])), Err(Error::Shape { .. })));
}

#[test]
fn swiglu_reference_known_values() {
    use qwen_kernels::reference::swiglu::{silu, swiglu};
    assert_eq!(silu(0.0), 0.0);
    assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
    assert!((silu(-30.0) - (-30.0 * (-30.0f64).exp()) as f32).abs() < 1e-15);
    assert_eq!(silu(100.0), 100.0);
    let g = HostTensor::from_f32(DType::F32, &[1, 2], vec![0.0, 100.0]).unwrap();
    let u = HostTensor::from_f32(DType::F32, &[1, 2], vec![5.0, 2.0]).unwrap();
    assert_eq!(swiglu(&g, &u).unwrap().data(), &[0.0, 200.0]);
}

#[test]
fn rope_rejects_bad_positions_and_shapes() {
    let x = l(DType::BF16, &[3, 14, 64]);
    let d = rope::check(x, &[0, 5, 32767], 32768, 1e6).unwrap();
    assert_eq!((d.tokens, d.heads, d.head_dim), (3, 14, 64));
    let e = rope::check(x, &[0, 5, 32768], 32768, 1e6).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "rope", .. }) && e.to_string().contains("32768"), "{e}");
    assert!(matches!(rope::check(x, &[0, -1, 2], 32768, 1e6), Err(Error::InvalidArgument { .. })));
    assert!(matches!(rope::check(x, &[0, 1], 32768, 1e6), Err(Error::Shape { .. })));
    assert!(matches!(rope::check(l(DType::BF16, &[3, 14, 63]), &[0, 1, 2], 32768, 1e6), Err(Error::Shape { .. })));
    assert!(matches!(rope::check(l(DType::BF16, &[3, 896]), &[0, 1, 2], 32768, 1e6), Err(Error::Shape { .. })));
    assert!(matches!(rope::check(x, &[0, 1, 2], 32768, f32::NAN), Err(Error::InvalidArgument { .. })));
}

#[test]
fn rope_reference_rotates_pairs_half_apart() {
    use qwen_kernels::reference::rope::rope;
    // head_dim 4, theta 10000: inv_freq = [1, 0.01]. Position 0 is the identity.
    let x = HostTensor::from_f32(DType::F32, &[2, 1, 4], vec![1., 2., 3., 4., 1., 0., 0., 0.]).unwrap();
    let y = rope(&x, &[0, 1], 10_000.0, 16).unwrap();
    assert_eq!(&y.data()[..4], &[1., 2., 3., 4.]);
    // Position 1, pair (0, 2) rotated by 1 rad: x0' = x0 cos 1 - x2 sin 1, x2' = x2 cos 1 + x0 sin 1.
    let (c, s) = (1.0f32.cos(), 1.0f32.sin());
    assert_eq!(y.data()[4], 1.0 * c);
    assert_eq!(y.data()[6], 1.0 * s);
    assert_eq!((y.data()[5], y.data()[7]), (0.0, 0.0));
}

#[test]
fn argmax_reference_ties_bounds_and_nans() {
    use qwen_kernels::reference::argmax::argmax as reference;
    let rows = HostTensor::from_f32(
        DType::F32,
        &[4, 5],
        vec![
            1.0, 3.0, 3.0, 0.0, 9.0, // tie 1 and 2 -> 1; the 9 sits past n_valid = 4
            -1.0, -1.0, -1.0, -1.0, -1.0, // all equal -> 0
            0.0, f32::NAN, 5.0, 0.0, 0.0, // NaN in the valid part -> reported
            0.0, 0.0, 0.0, 1.0, f32::NAN, // NaN only in the padding -> ignored
        ],
    )
    .unwrap();
    assert_eq!(reference(&rows, 4).unwrap(), vec![Some((1, 3.0)), Some((0, -1.0)), None, Some((3, 1.0))]);
    assert!(matches!(reference(&rows, 0), Err(Error::InvalidArgument { op: "argmax", .. })));
    assert!(matches!(reference(&rows, 6), Err(Error::InvalidArgument { .. })));
    assert!(matches!(argmax::check(l(DType::F32, &[5]), 3), Err(Error::Shape { .. })));
}

#[test]
fn attention_rejects_bad_shapes() {
    let q = l(DType::BF16, &[4, 14, 64]);
    let kv = l(DType::BF16, &[10, 2, 64]);
    let d = attention::check(q, kv, kv).unwrap();
    assert_eq!((d.tokens, d.context, d.group()), (4, 10, 7));
    assert!(matches!(attention::check(l(DType::BF16, &[4, 13, 64]), kv, kv), Err(Error::Shape { op: "attention", .. })));
    assert!(matches!(attention::check(q, l(DType::BF16, &[10, 2, 128]), l(DType::BF16, &[10, 2, 128])), Err(Error::Shape { .. })));
    assert!(matches!(attention::check(q, l(DType::BF16, &[3, 2, 64]), l(DType::BF16, &[3, 2, 64])), Err(Error::Shape { .. })));
    assert!(matches!(attention::check(q, kv, l(DType::BF16, &[9, 2, 64])), Err(Error::Shape { .. })));
    assert!(matches!(attention::check(q, kv, l(DType::F16, &[10, 2, 64])), Err(Error::DType { .. })));
    assert!(matches!(attention::check(l(DType::BF16, &[4, 896]), kv, kv), Err(Error::Shape { .. })));
}
