//! The linear layer (cuBLAS GEMM + bias) against the CPU reference, exactly on integer inputs, and
//! against the PyTorch goldens; a transposed weight must fail (run by tests/gpu/main.rs).

use crate::common::{rng, uniform, DTYPES};
use crate::support::Guarded;
use crate::GpuTest;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qwen_kernels::check::in_range;
use qwen_kernels::golden::metrics::{compare, Tolerance};
use qwen_kernels::golden::tolerance::table;
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::ops::gemm::{linear, linear_with_precision, Precision};
use qwen_kernels::reference::linear::{abs_dot_bound, linear as reference};
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};
use rand::rngs::StdRng;
use rand::Rng;

pub const TESTS: &[GpuTest] = &[
    ("linear::cublas_disallows_reduced_precision_reductions", cublas_disallows_reduced_precision_reductions),
    ("linear::integer_inputs_are_exact_at_model_shapes", integer_inputs_are_exact_at_model_shapes),
    ("linear::lm_head_shapes_exact_with_f32_logits", lm_head_shapes_exact_with_f32_logits),
    ("linear::random_inputs_within_fp32_accumulation_bound", random_inputs_within_fp32_accumulation_bound),
    ("linear::goldens_both_models", goldens_both_models),
    ("linear::transposed_weight_fails", transposed_weight_fails),
    ("linear::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
    ("linear::proptest_integer_shapes", proptest_integer_shapes),
];

const EXACT: Tolerance = Tolerance { atol: 0.0, rtol: 0.0 };

/// The handle's math mode, read back from cuBLAS: default math (no tensor-op or TF32 bits) with
/// reduced-precision reductions disallowed, as src/ops/gemm.rs promises.
fn cublas_disallows_reduced_precision_reductions(gpu: &Gpu) {
    use cudarc::cublas::sys::{cublasGetMathMode, cublasMath_t};
    let handle = *gpu.blas().unwrap().handle();
    // Read as a plain u32: cuBLAS may return bit combinations cudarc's enum has no variant for.
    let mut mode: u32 = u32::MAX;
    // SAFETY: the handle is live for the Gpu's lifetime; cublasGetMathMode writes one 32-bit value.
    unsafe { cublasGetMathMode(handle, &mut mode as *mut u32 as *mut cublasMath_t) }.result().unwrap();
    let disallow = cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION as u32;
    assert_ne!(mode & disallow, 0, "math mode {mode:#x}: reduced-precision reductions are allowed");
    assert_eq!(mode & !disallow, cublasMath_t::CUBLAS_DEFAULT_MATH as u32, "math mode {mode:#x}: not CUBLAS_DEFAULT_MATH");
    assert_eq!(mode, qwen_kernels::gpu::CUBLAS_MATH_MODE as u32);
}

fn integers(r: &mut StdRng, dtype: DType, dims: &[usize], lo: i32, hi: i32) -> HostTensor {
    let n = dims.iter().product();
    HostTensor::from_f32(dtype, dims, (0..n).map(|_| r.gen_range(lo..=hi) as f32).collect()).unwrap()
}

/// y = x W^T + b on the GPU into a guarded, poisoned output of `y_dtype`.
fn run(gpu: &Gpu, x: &HostTensor, w: &HostTensor, b: Option<&HostTensor>, y_dtype: DType, precision: Precision) -> Vec<f32> {
    let rows = x.data().len() / x.dims().last().unwrap();
    let out = w.dims()[0];
    let (dx, dw) = (DeviceTensor::from_host(gpu, x).unwrap(), DeviceTensor::from_host(gpu, w).unwrap());
    let db = b.map(|b| DeviceTensor::from_host(gpu, b).unwrap());
    let mut y = Guarded::poisoned(gpu, y_dtype, &[rows, out]);
    y.with_mut(|y| linear_with_precision(gpu, &dx.view(), &dw.view(), db.as_ref().map(|b| b.view()).as_ref(), y, precision).unwrap());
    y.inner(gpu, "y")
}

/// The reference's output for y in f32: the same FP32 sum, not rounded to the storage dtype.
fn reference_f32(x: &HostTensor, w: &HostTensor, b: Option<&HostTensor>) -> Vec<f32> {
    let f = |t: &HostTensor| HostTensor::from_f32(DType::F32, t.dims(), t.data().to_vec()).unwrap();
    reference(&f(x), &f(w), b.map(f).as_ref()).unwrap().into_data()
}

/// Integer inputs in -3..=3 (bias -8..=8): every product and partial sum is an integer below 2^24,
/// exact in FP32 in any order, so cuBLAS and the reference agree bit for bit (the one rounding to
/// the storage dtype is round-to-nearest-even on both sides). Shapes are non-square: a layout
/// mix-up cannot pass.
fn integer_inputs_are_exact_at_model_shapes(gpu: &Gpu) {
    let mut r = rng(51);
    // (rows, in, out): q/k/o, fused qkv and gate_up, down, for both models, and odd ones.
    let shapes = [
        (1, 896, 896 + 2 * 128),
        (7, 896, 128),
        (5, 896, 2 * 4864),
        (3, 4864, 896),
        (2, 1536, 1536 + 2 * 256),
        (4, 1536, 2 * 8960),
        (3, 8960, 1536),
        (64, 896, 896),
        (1, 17, 3),
        (9, 5, 11),
    ];
    for (rows, k, n) in shapes {
        for dtype in DTYPES {
            let x = integers(&mut r, dtype, &[rows, k], -3, 3);
            let w = integers(&mut r, dtype, &[n, k], -3, 3);
            let b = integers(&mut r, dtype, &[n], -8, 8);
            for bias in [None, Some(&b)] {
                let expected = reference(&x, &w, bias).unwrap();
                let c = compare(&run(gpu, &x, &w, bias, dtype, Precision::Fp32), expected.data(), EXACT);
                assert!(c.passed(), "linear {dtype} rows {rows} in {k} out {n} bias {}: {c}", bias.is_some());
                let c = compare(&run(gpu, &x, &w, bias, DType::F32, Precision::Fp32), &reference_f32(&x, &w, bias), EXACT);
                assert!(c.passed(), "linear {dtype} -> f32 rows {rows} in {k} out {n} bias {}: {c}", bias.is_some());
            }
        }
    }
}

/// lm_head: 151936 x 896 and 151936 x 1536, decode and a few rows, f32 logits, exact.
fn lm_head_shapes_exact_with_f32_logits(gpu: &Gpu) {
    let mut r = rng(52);
    for (hidden, rows) in [(896, 1), (1536, 3)] {
        let x = integers(&mut r, DType::BF16, &[rows, hidden], -3, 3);
        let w = integers(&mut r, DType::BF16, &[151936, hidden], -3, 3);
        let c = compare(&run(gpu, &x, &w, None, DType::F32, Precision::Fp32), &reference_f32(&x, &w, None), EXACT);
        assert!(c.passed(), "lm_head {hidden} rows {rows}: {c}");
    }
}

/// Real-valued inputs: within `table::linear`'s FP32 accumulation bound of the reference (which
/// sums in f64 and rounds once).
fn random_inputs_within_fp32_accumulation_bound(gpu: &Gpu) {
    let mut r = rng(53);
    for (rows, k, n) in [(1, 896, 1152), (33, 1536, 256), (4, 4864, 896)] {
        for dtype in DTYPES {
            let x = uniform(&mut r, dtype, &[rows, k], -2.0, 2.0);
            let w = uniform(&mut r, dtype, &[n, k], -0.1, 0.1);
            let b = uniform(&mut r, dtype, &[n], -20.0, 20.0);
            let bound = abs_dot_bound(&x, &w, Some(&b)).unwrap().iter().fold(0f32, |m, v| m.max(*v));
            let tol = table::linear(dtype, k, bound);
            let c = compare(&run(gpu, &x, &w, Some(&b), dtype, Precision::Fp32), reference(&x, &w, Some(&b)).unwrap().data(), tol);
            assert!(c.passed(), "linear {dtype} {rows}x{k}x{n}: {c}");
        }
    }
    // TF32 is an explicit opt-in for f32; it runs (its 10-bit products are outside the FP32 bound).
    let x = uniform(&mut r, DType::F32, &[8, 896], -2.0, 2.0);
    let w = uniform(&mut r, DType::F32, &[128, 896], -0.1, 0.1);
    let y = run(gpu, &x, &w, None, DType::F32, Precision::Tf32);
    assert!(y.iter().all(|v| v.is_finite()));
}

/// Golden weight of `proj` as `dtype` (regenerated from the file's synth recipe).
fn golden_weight(file: &GoldenFile, model: &str, proj: &str, dtype: DType) -> HostTensor {
    let w = file.synth_weight(&format!("golden.{model}.{proj}.weight")).unwrap();
    let dims = w.dims().to_vec();
    HostTensor::from_f32(dtype, &dims, w.into_data()).unwrap()
}

/// Our GEMM for q_proj / k_proj / o_proj (with the models' real biases where they have one) on
/// the goldens' inputs; returns (our y, truth, tolerance).
fn golden_case(gpu: &Gpu, file: &GoldenFile, model: &str, proj: &str, dtype: DType, w: &HostTensor) -> (Vec<f32>, Vec<f64>, Tolerance) {
    let name = |t: &str| format!("{proj}.{dtype}.{t}");
    let x = file.host(&name("x")).unwrap();
    let b = file.host(&name("bias")).ok();
    let truth = in_range(dtype, file.tensor(&name("y.truth")).unwrap().values);
    let in_features = *x.dims().last().unwrap();
    let right = golden_weight(file, model, proj, dtype);
    let bound = abs_dot_bound(&x, &right, b.as_ref()).unwrap().iter().fold(0f32, |m, v| m.max(*v));
    (run(gpu, &x, w, b.as_ref(), dtype, Precision::Fp32), truth, table::linear(dtype, in_features, bound))
}

fn goldens_both_models(gpu: &Gpu) {
    for cfg in Qwen2Config::presets() {
        let file = GoldenFile::open(cfg.name, "ops").unwrap();
        for dtype in DTYPES {
            for proj in ["q_proj", "k_proj", "o_proj"] {
                let w = golden_weight(&file, cfg.name, proj, dtype);
                let (y, truth, tol) = golden_case(gpu, &file, cfg.name, proj, dtype, &w);
                let c = compare(&y, &truth, tol);
                println!("    linear golden {} {proj} {dtype}: {c}", cfg.name);
                assert!(c.passed(), "linear golden {} {proj} {dtype}: {c}", cfg.name);
            }
        }
    }
}

/// k_proj's weight is [kv_heads * d, hidden] (non-square). Its transpose, reinterpreted as
/// [out, in] (what a loader that forgot Hugging Face's layout would hand over), has the right shape
/// and must FAIL the golden; on integer inputs it must differ from the reference too.
fn transposed_weight_fails(gpu: &Gpu) {
    fn transposed_as_same_shape(w: &HostTensor) -> HostTensor {
        let [out, inp] = *w.dims() else { panic!() };
        let mut t = vec![0f32; out * inp];
        for o in 0..out {
            for i in 0..inp {
                t[i * out + o] = w.data()[o * inp + i];
            }
        }
        HostTensor::from_f32(w.dtype(), &[out, inp], t).unwrap()
    }
    for cfg in Qwen2Config::presets() {
        let file = GoldenFile::open(cfg.name, "ops").unwrap();
        let dtype = DType::BF16;
        let w = golden_weight(&file, cfg.name, "k_proj", dtype);
        assert_ne!(w.dims()[0], w.dims()[1]);
        let (y, truth, tol) = golden_case(gpu, &file, cfg.name, "k_proj", dtype, &transposed_as_same_shape(&w));
        let c = compare(&y, &truth, tol);
        assert!(!c.passed(), "a transposed k_proj weight passed the golden: {c}");
    }
    let mut r = rng(54);
    let x = integers(&mut r, DType::F32, &[3, 40], -3, 3);
    let w = integers(&mut r, DType::F32, &[24, 40], -3, 3);
    let c = compare(&run(gpu, &x, &transposed_as_same_shape(&w), None, DType::F32, Precision::Fp32), reference(&x, &w, None).unwrap().data(), EXACT);
    assert!(!c.passed(), "transposed integer weight matched: {c}");
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let z = |dtype, dims: &[usize]| DeviceTensor::zeros(gpu, dtype, dims).unwrap();
    let x = z(DType::BF16, &[4, 896]);
    let w = z(DType::BF16, &[128, 896]);
    let b = z(DType::BF16, &[128]);
    let mut y = z(DType::BF16, &[4, 128]);
    linear(gpu, &x.view(), &w.view(), Some(&b.view()), &mut y.view_mut()).unwrap();
    let e = linear(gpu, &x.view(), &z(DType::BF16, &[896, 128]).view(), None, &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "linear", .. }) && e.to_string().contains("transposed"), "{e}");
    let e = linear(gpu, &x.view(), &w.view(), Some(&z(DType::BF16, &[896]).view()), &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = linear(gpu, &x.view(), &z(DType::F16, &[128, 896]).view(), None, &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = linear(gpu, &x.view(), &w.view(), None, &mut z(DType::F16, &[4, 128]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    let e = linear(gpu, &x.view(), &w.view(), None, &mut z(DType::BF16, &[4, 129]).view_mut()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = linear_with_precision(gpu, &x.view(), &w.view(), None, &mut y.view_mut(), Precision::Tf32).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    // An empty batch launches nothing.
    linear(gpu, &z(DType::BF16, &[0, 896]).view(), &w.view(), Some(&b.view()), &mut z(DType::BF16, &[0, 128]).view_mut()).unwrap();
}

fn proptest_integer_shapes(gpu: &Gpu) {
    let strategy = (1usize..70, 1usize..700, 1usize..700, 0usize..3, any::<bool>(), any::<u64>());
    let mut runner = TestRunner::new(ProptestConfig { cases: 48, ..ProptestConfig::default() });
    runner
        .run(&strategy, |(rows, k, n, dtype_i, with_bias, seed)| {
            let dtype = DTYPES[dtype_i];
            let mut r = rng(seed);
            let x = integers(&mut r, dtype, &[rows, k], -3, 3);
            let w = integers(&mut r, dtype, &[n, k], -3, 3);
            let b = integers(&mut r, dtype, &[n], -8, 8);
            let bias = with_bias.then_some(&b);
            let c = compare(&run(gpu, &x, &w, bias, dtype, Precision::Fp32), reference(&x, &w, bias).unwrap().data(), EXACT);
            assert!(c.passed(), "linear {dtype} {rows}x{k}x{n} bias {with_bias}: {c}");
            Ok(())
        })
        .unwrap();
}
