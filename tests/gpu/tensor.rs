//! Device tensors: host round trips, views, their errors (run by tests/gpu/main.rs).

use crate::GpuTest;
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[
    ("tensor::round_trip_is_bit_exact", round_trip_is_bit_exact),
    ("tensor::views_address_the_right_rows", views_address_the_right_rows),
    ("tensor::bad_views_are_errors", bad_views_are_errors),
];

fn round_trip_is_bit_exact(gpu: &Gpu) {
    let values = vec![0.0, -0.0, 1.5, -3.25, 65504.0, 6.0e-8, f32::INFINITY, f32::NEG_INFINITY, 1.0e30, 7.0, 11.0];
    for dtype in DType::ALL {
        let host = HostTensor::from_f32(dtype, &[values.len()], values.clone()).unwrap();
        let back = DeviceTensor::from_host(gpu, &host).unwrap().to_host(gpu).unwrap();
        let bits = |t: &HostTensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&host), "{dtype}");
        assert_eq!(back.layout(), host.layout());
    }
}

fn views_address_the_right_rows(gpu: &Gpu) {
    let host = HostTensor::from_f32(DType::F16, &[4, 3], (0..12).map(|v| v as f32).collect()).unwrap();
    let mut t = DeviceTensor::from_host(gpu, &host).unwrap();
    let rows = t.view().rows(1..3).unwrap();
    assert_eq!(rows.layout().shape.dims(), &[2, 3]);
    assert_eq!(rows.byte_offset(), 6);
    assert_eq!(rows.to_host(gpu).unwrap().data(), &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let flat = t.view().reshape(&[12]).unwrap().rows(5..7).unwrap();
    assert_eq!(flat.to_host(gpu).unwrap().data(), &[5.0, 6.0]);
    {
        let mut all = t.view_mut();
        let mut last = all.rows_mut(3..4).unwrap();
        last.upload(gpu, &HostTensor::full(DType::F16, &[1, 3], -1.0).unwrap()).unwrap();
    }
    let data = t.to_host(gpu).unwrap().into_data();
    assert_eq!(&data[..9], &host.data()[..9]);
    assert_eq!(&data[9..], &[-1.0; 3]);
}

fn bad_views_are_errors(gpu: &Gpu) {
    let mut t = DeviceTensor::zeros(gpu, DType::BF16, &[4, 8]).unwrap();
    assert!(matches!(t.view().rows(3..5), Err(Error::Shape { .. })));
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = t.view().rows(3..2);
    assert!(matches!(reversed, Err(Error::Shape { .. })));
    assert!(matches!(t.view().reshape(&[5, 7]), Err(Error::Shape { .. })));
    let e = t.view_mut().upload(gpu, &HostTensor::full(DType::F16, &[4, 8], 0.0).unwrap()).unwrap_err();
    assert!(e.to_string().contains("f16") && e.to_string().contains("bf16"), "{e}");
}
