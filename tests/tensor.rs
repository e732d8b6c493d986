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

/// The block conversions (`round_slice`, `encode`) give every value the bits that `round` gives
/// it alone: ties both ways, subnormals of f16 and f32, overflow, signed zeros, infinities and
/// NaNs, in lengths that end inside a block and across blocks.
#[test]
fn block_conversions_equal_one_value_at_a_time() {
    let mut values = vec![0.0, -0.0, 2049.0, 2051.0, 257.0, 259.0, 65504.0, 65519.0, 65520.0, -65520.0, 6.0e-8, 2.9e-8, 3.0e-8, 1.0e-45, -1.0e-40];
    values.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE, 1.0e30, -3.4e38]);
    let mut state = 0x2545f4914f6cdd1du64;
    for _ in 0..5000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        values.push(f32::from_bits(state as u32));
    }
    for dtype in DType::ALL {
        for len in [0, 1, 7, 1024, 1025, values.len()] {
            let input = &values[..len];
            let one: Vec<u32> = input.iter().map(|&v| dtype.round(v).to_bits()).collect();
            let mut block = input.to_vec();
            dtype.round_slice(&mut block);
            let nan_bits = |v: &[u32]| v.iter().map(|&b| if f32::from_bits(b).is_nan() { u32::MAX } else { b }).collect::<Vec<_>>();
            assert_eq!(nan_bits(&block.iter().map(|v| v.to_bits()).collect::<Vec<_>>()), nan_bits(&one), "{dtype} round_slice, {len} values");
            let decoded: Vec<u32> = dtype.decode(&dtype.encode(input)).iter().map(|v| v.to_bits()).collect();
            assert_eq!(nan_bits(&decoded), nan_bits(&one), "{dtype} encode, {len} values");
        }
    }
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
