//! Dtypes, shapes and host tensors (CPU).

use qwen_kernels::{DType, Error, HostTensor, Layout, Shape};

#[test]
fn dtype_round_is_round_to_nearest_even() {
    // bf16 keeps 8 significant bits: 257 is halfway between 256 and 258 -> 256 (even); 259 -> 260.
    assert_eq!(DType::BF16.round(257.0), 256.0);
    assert_eq!(DType::BF16.round(259.0), 260.0);
    // f16 keeps 11: 2049 -> 2048, 2051 -> 2052; 65520 and above overflow to inf.
    assert_eq!(DType::F16.round(2049.0), 2048.0);
    assert_eq!(DType::F16.round(2051.0), 2052.0);
    assert_eq!(DType::F16.round(65520.0), f32::INFINITY);
    assert_eq!(DType::F32.round(1.0 + f32::EPSILON), 1.0 + f32::EPSILON);
    assert!(DType::BF16.round(f32::NAN).is_nan());
}

#[test]
fn encode_decode_round_trip_every_dtype() {
    let values = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 3.0e-8, f32::INFINITY, f32::NEG_INFINITY, 1.0e30];
    for dtype in DType::ALL {
        let rounded: Vec<f32> = values.iter().map(|&v| dtype.round(v)).collect();
        let bytes = dtype.encode(&values);
        assert_eq!(bytes.len(), values.len() * dtype.size());
        let back = dtype.decode(&bytes);
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            rounded.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{dtype}"
        );
    }
    let nan = DType::BF16.decode(&DType::BF16.encode(&[f32::NAN]));
    assert!(nan[0].is_nan());
}

#[test]
fn shapes_and_host_tensors_reject_bad_input() {
    assert!(matches!(Shape::new(&[1, 2, 3, 4, 5]), Err(Error::Shape { .. })));
    assert!(matches!(Shape::new(&[usize::MAX, 2]), Err(Error::Shape { .. })));
    assert_eq!(Shape::new(&[]).unwrap().numel(), 1);
    let e = HostTensor::from_f32(DType::F16, &[2, 3], vec![0.0; 5]).unwrap_err();
    assert!(e.to_string().contains("5 values") && e.to_string().contains("[2, 3]"), "{e}");
    let t = HostTensor::from_f32(DType::BF16, &[2], vec![257.0, 1.0]).unwrap();
    assert_eq!(t.data(), &[256.0, 1.0]);
    assert_eq!(Layout::new(DType::F16, &[3, 5]).unwrap().bytes(), 30);
}
