//! The decode GEMV (`ops::gemv`) against the CPU reference of `linear`, at odd sizes and the
//! models' shapes, in every dtype; rows 1..32 (f32: 1..16) of one launch equal each row alone bit
//! for bit; the vector and scalar paths give the same bits (run by tests/gpu/main.rs).

use crate::common::{rng, uniform};
use crate::GpuTest;
use qwen_kernels::ops::gemv::{gemv, gemv_with_path, max_rows, Path};
use qwen_kernels::reference::linear::{abs_dot_bound, linear};
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};


pub const TESTS: &[GpuTest] = &[
    ("gemv::odd_sizes_every_dtype_against_the_reference", odd_sizes_every_dtype_against_the_reference),
    ("gemv::rows_are_batch_invariant_and_paths_agree", rows_are_batch_invariant_and_paths_agree),
    ("gemv::model_shapes_against_the_reference", model_shapes_against_the_reference),
    ("gemv::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
];

/// |ours - reference| allowed for one output, in units of 2^-24 sum|x w| (first order), plus one
/// ulp of y's dtype: both sides round to y, which can put two values that close on either side
/// of a rounding boundary. The reference rounds a float64 sum to f32 and adds the bias in f32 (2
/// units).
/// - f32 (CUDA cores): a chain of at most L = 8 ceil(K / 256) FMAs a lane (4 ceil(K / 128) for
///   f32's 4-element vectors, no more), then a 5-level tree: L + 5 units.
/// - f16/bf16 (tensor cores): a warp's chain of m = 2 ceil(ceil(K / 32) / 8) mma, then a 3-level
///   tree over the 8 warps. An mma's products are exact (16-bit inputs); the hardware aligns its 17
///   addends (16 products and the accumulator) to the largest and truncates each to FP32's 24 bits,
///   then normalises once more (Fasi et al., "Numerical behavior of NVIDIA tensor cores", 2021, for
///   A100; the same structure on H100 in Khattak and Mikaitis, 2025): at most 18 x 2^-23 of the sum
///   of the addends' magnitudes, which is at most sum|x w|. So 36 m + 3 units (the software device
///   rounds each mma once: 1 unit an mma).
fn tolerance(k: usize, x_dtype: DType, abs_dot: f32, expected: f32, y_dtype: DType) -> f32 {
    let units = match x_dtype {
        DType::F32 => k.div_ceil(256) * 8 + 5,
        DType::F16 | DType::BF16 => 36 * 2 * k.div_ceil(32).div_ceil(8) + 3,
    };
    let ulp = match y_dtype {
        DType::F32 => f32::powi(2.0, -23),
        DType::F16 => f32::powi(2.0, -10),
        DType::BF16 => f32::powi(2.0, -7),
    };
    (units + 2) as f32 * f32::powi(2.0, -24) * abs_dot + ulp * expected.abs() + f32::MIN_POSITIVE
}

fn random(r: &mut rand::rngs::StdRng, dtype: DType, dims: &[usize], scale: f32) -> HostTensor {
    uniform(r, dtype, dims, -scale, scale)
}

/// One case on the device against the reference; returns y.
fn check_case(gpu: &Gpu, x: &HostTensor, w: &HostTensor, b: Option<&HostTensor>, y_dtype: DType, what: &str) -> Vec<f32> {
    let [rows, k] = *x.dims() else { panic!("rank") };
    let n = w.dims()[0];
    let mut want = linear(x, w, b).unwrap();
    if y_dtype != x.dtype() {
        // f32 logits: the reference's sum before the rounding to x's dtype.
        let x32 = HostTensor::from_f32(DType::F32, x.dims(), x.data().to_vec()).unwrap();
        let w32 = HostTensor::from_f32(DType::F32, w.dims(), w.data().to_vec()).unwrap();
        let b32 = b.map(|b| HostTensor::from_f32(DType::F32, b.dims(), b.data().to_vec()).unwrap());
        want = linear(&x32, &w32, b32.as_ref()).unwrap();
    }
    let bound = abs_dot_bound(x, w, b).unwrap();
    let (dx, dw) = (DeviceTensor::from_host(gpu, x).unwrap(), DeviceTensor::from_host(gpu, w).unwrap());
    let db = b.map(|b| DeviceTensor::from_host(gpu, b).unwrap());
    let mut dy = DeviceTensor::zeros(gpu, y_dtype, &[rows, n]).unwrap();
    gemv(gpu, &dx.view(), &dw.view(), db.as_ref().map(|b| b.view()).as_ref(), &mut dy.view_mut()).unwrap();
    let got = dy.to_host(gpu).unwrap().into_data();
    for (i, (&g, &e)) in got.iter().zip(want.data()).enumerate() {
        let tol = tolerance(k, x.dtype(), bound[i], e, y_dtype);
        assert!((g - e).abs() <= tol, "{what}: y[{}, {}] = {g}, reference {e} (tolerance {tol:e}, sum |x w| {})", i / n, i % n, bound[i]);
    }
    got
}

fn odd_sizes_every_dtype_against_the_reference(gpu: &Gpu) {
    let mut r = rng(61);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let most = max_rows(dtype);
        for &(rows, k, n) in &[(1, 1, 1), (3, 7, 5), (16, 8, 9), (2, 64, 33), (5, 250, 17), (9, 896, 40), (16, 1030, 12), (most, 40, 11), (most - 1, 296, 20)] {
            let x = random(&mut r, dtype, &[rows, k], 1.0);
            let w = random(&mut r, dtype, &[n, k], 0.1);
            let b = random(&mut r, dtype, &[n], 1.0);
            check_case(gpu, &x, &w, Some(&b), dtype, &format!("{dtype} [{rows}, {k}] x [{n}, {k}] + b"));
            check_case(gpu, &x, &w, None, dtype, &format!("{dtype} [{rows}, {k}] x [{n}, {k}]"));
            if dtype != DType::F32 {
                check_case(gpu, &x, &w, None, DType::F32, &format!("{dtype} -> f32 [{rows}, {k}] x [{n}, {k}]"));
            }
        }
    }
}

/// Row r of a launch of R rows is, bit for bit, row r alone (and wherever it sits); the vector and
/// the scalar path agree bit for bit.
fn rows_are_batch_invariant_and_paths_agree(gpu: &Gpu) {
    let mut r = rng(62);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let (k, n, most) = (896, 24, max_rows(dtype));
        let x = random(&mut r, dtype, &[most, k], 1.0);
        let w = random(&mut r, dtype, &[n, k], 0.1);
        let b = random(&mut r, dtype, &[n], 1.0);
        let (dx, dw, db) = (DeviceTensor::from_host(gpu, &x).unwrap(), DeviceTensor::from_host(gpu, &w).unwrap(), DeviceTensor::from_host(gpu, &b).unwrap());
        let run = |rows: std::ops::Range<usize>, path: Path| {
            let mut y = DeviceTensor::zeros(gpu, dtype, &[rows.len(), n]).unwrap();
            gemv_with_path(gpu, &dx.view().rows(rows).unwrap(), &dw.view(), Some(&db.view()), &mut y.view_mut(), path).unwrap();
            y.to_host(gpu).unwrap().into_data().iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        let alone: Vec<Vec<u32>> = (0..most).map(|i| run(i..i + 1, Path::Auto)).collect();
        for rows in 1..=most {
            for start in [0, most - rows] {
                let got = run(start..start + rows, Path::Auto);
                for i in 0..rows {
                    assert!(got[i * n..(i + 1) * n] == alone[start + i][..], "{dtype}: row {} in a launch of {rows} from {start} differs from it alone", start + i);
                }
            }
        }
        assert_eq!(run(0..most, Path::Scalar), run(0..most, Path::Vector16), "{dtype}: the scalar and vector paths differ");
    }
}

/// The projections of both models at decode: q/k/v merged, o, gate/up merged, down, and the tied
/// lm_head with f32 logits, two rows each.
fn model_shapes_against_the_reference(gpu: &Gpu) {
    let mut r = rng(63);
    let shapes = [
        ("qwen2.5-0.5b qkv", 896, 1152),
        ("qwen2.5-0.5b o", 896, 896),
        ("qwen2.5-0.5b gate_up", 896, 9728),
        ("qwen2.5-0.5b down", 4864, 896),
        ("vibethinker-1.5b qkv", 1536, 2048),
        ("vibethinker-1.5b down", 8960, 1536),
    ];
    for (name, k, n) in shapes {
        let x = random(&mut r, DType::BF16, &[2, k], 1.0);
        let w = random(&mut r, DType::BF16, &[n, k], 0.05);
        let b = random(&mut r, DType::BF16, &[n], 1.0);
        check_case(gpu, &x, &w, Some(&b), DType::BF16, name);
    }
    let x = random(&mut r, DType::BF16, &[1, 896], 1.0);
    let w = random(&mut r, DType::BF16, &[151936, 896], 0.05);
    check_case(gpu, &x, &w, None, DType::F32, "qwen2.5-0.5b lm_head (f32 logits)");
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let t = |dtype, dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).unwrap();
    let (x, w) = (t(DType::BF16, &[33, 64]), t(DType::BF16, &[8, 64]));
    let e = gemv(gpu, &x.view(), &w.view(), None, &mut t(DType::BF16, &[33, 8]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::UnsupportedSize { .. }) && e.to_string().contains("got 33"), "{e}");
    let (x, w) = (t(DType::F32, &[17, 64]), t(DType::F32, &[8, 64]));
    let e = gemv(gpu, &x.view(), &w.view(), None, &mut t(DType::F32, &[17, 8]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::UnsupportedSize { .. }) && e.to_string().contains("got 17"), "{e}");
    let x = t(DType::BF16, &[2, 64]);
    let e = gemv(gpu, &x.view(), &t(DType::BF16, &[64, 8]).view(), None, &mut t(DType::BF16, &[2, 64]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = gemv(gpu, &x.view(), &t(DType::F16, &[8, 64]).view(), None, &mut t(DType::BF16, &[2, 8]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = gemv(gpu, &x.view(), &w.view(), None, &mut t(DType::F16, &[2, 8]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let odd = t(DType::BF16, &[2, 7]);
    let e = gemv_with_path(gpu, &odd.view(), &t(DType::BF16, &[8, 7]).view(), None, &mut t(DType::BF16, &[2, 8]).view_mut(), Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { .. }), "{e}");
}
