//! Bounded argmax against the CPU reference, with ties, NaN rows and padded winners, and the
//! lm_head + argmax goldens (run by tests/gpu/main.rs).

use crate::common::{rng, uniform, DTYPES};
use crate::GpuTest;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qwen_kernels::check::in_range;
use qwen_kernels::golden::metrics::{compare, Tolerance};
use qwen_kernels::golden::tolerance::table;
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::ops::argmax::{argmax, argmax_with_path, ArgmaxOutput, Path, NAN_ROW};
use qwen_kernels::ops::gemm;
use qwen_kernels::reference::argmax as reference;
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};
use rand::Rng;

pub const TESTS: &[GpuTest] = &[
    ("argmax::random_rows_every_dtype_stride_and_path", random_rows_every_dtype_stride_and_path),
    ("argmax::ties_padding_infinities_and_nans", ties_padding_infinities_and_nans),
    ("argmax::max_is_optional", max_is_optional),
    ("argmax::lm_head_goldens_never_pick_padding", lm_head_goldens_never_pick_padding),
    ("argmax::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
    ("argmax::proptest_shapes_with_ties", proptest_shapes_with_ties),
];

/// Run every applicable path on `logits`; each must equal the reference exactly (the answer is an
/// index and one of the inputs, not a rounded value). Rows past `rows` in the output stay untouched.
fn check_case(gpu: &Gpu, logits: &HostTensor, n_valid: usize, what: &str) {
    let [rows, stride] = *logits.dims() else { panic!("rank") };
    let expected = reference::argmax(logits, n_valid).unwrap();
    let d = DeviceTensor::from_host(gpu, logits).unwrap();
    let vector_ok = (stride * logits.dtype().size()) % 16 == 0;
    for path in [Path::Auto, Path::Scalar, Path::Vector16] {
        if path == Path::Vector16 && !vector_ok {
            continue;
        }
        // Two spare rows after the real ones: poisoned (NAN_ROW, NaN) and checked untouched.
        let mut out = ArgmaxOutput::new(gpu, rows + 2).unwrap();
        argmax_with_path(gpu, &d.view(), n_valid, &mut out, true, path).unwrap();
        let (index, max) = out.raw_to_host(gpu, rows + 2).unwrap();
        assert!(index[rows..].iter().all(|&i| i == NAN_ROW) && max[rows..].iter().all(|v| v.is_nan()), "{what} {path:?}: spare rows written");
        let got = out.to_host(gpu, rows).unwrap();
        for (r, (g, e)) in got.iter().zip(&expected).enumerate() {
            let same = match (g, e) {
                (Some((gi, gv)), Some((ei, ev))) => gi == ei && gv.to_bits() == ev.to_bits(),
                (None, None) => max[r].is_nan(),
                _ => false,
            };
            assert!(same, "{what} {} {path:?} row {r}: got {g:?}, expected {e:?}", logits.dtype());
        }
    }
}

fn random_rows_every_dtype_stride_and_path(gpu: &Gpu) {
    let mut r = rng(31);
    for dtype in DTYPES {
        for (stride, n_valid) in [(151936, 151665), (4099, 4000), (1000, 999), (8, 5), (7, 7), (1, 1)] {
            for rows in [1, 3, 9] {
                let logits = uniform(&mut r, dtype, &[rows, stride], -30.0, 30.0);
                check_case(gpu, &logits, n_valid, "random");
            }
        }
    }
}

/// Ties across threads, vectors and first-stage chunks go to the lowest index; padded entries that beat everything are
/// never chosen (nor is a NaN there noticed); +inf is a value like any other; a row of -inf answers
/// 0; a NaN anywhere in the valid part makes the row NaN_ROW.
fn ties_padding_infinities_and_nans(gpu: &Gpu) {
    let (stride, n_valid) = (151936, 151665);
    for dtype in DTYPES {
        let mut rows: Vec<Vec<f32>> = Vec::new();
        let base: Vec<f32> = (0..stride).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
        // 0: the max 9.5 repeated at indices far apart (different threads and vectors); padding holds 1e4.
        let mut row = base.clone();
        for &i in &[150_001, 777, 150_000, 5000, 151_664] {
            row[i] = 9.5;
        }
        row[n_valid..].fill(1.0e4);
        rows.push(row);
        // 1: a NaN and +inf in the padding only; the real max at the last valid index.
        let mut row = base.clone();
        row[n_valid - 1] = 20.0;
        row[n_valid] = f32::NAN;
        row[n_valid + 1] = f32::INFINITY;
        rows.push(row);
        // 2: all -inf (torch.argmax gives 0).
        rows.push(vec![f32::NEG_INFINITY; stride]);
        // 3: a NaN at the very end of the valid part.
        let mut row = base.clone();
        row[n_valid - 1] = f32::NAN;
        rows.push(row);
        // 4: a NaN at index 0 next to +inf.
        let mut row = base.clone();
        row[0] = f32::NAN;
        row[1] = f32::INFINITY;
        rows.push(row);
        // 5: +inf twice: the first one wins.
        let mut row = base.clone();
        row[1234] = f32::INFINITY;
        row[99] = f32::INFINITY;
        rows.push(row);
        // 6: every entry equal: index 0.
        rows.push(vec![3.0; stride]);
        // 7: a tie across the boundary of the first-stage chunks (600 entries each here): 599 wins
        // over 600, and both over the same value in the last chunk.
        let mut row = base.clone();
        row[600] = 50.0;
        row[599] = 50.0;
        row[151_600] = 50.0;
        rows.push(row);
        let n = rows.len();
        let logits = HostTensor::from_f32(dtype, &[n, stride], rows.concat()).unwrap();
        let expected = reference::argmax(&logits, n_valid).unwrap();
        assert_eq!(expected[0].map(|e| e.0), Some(777));
        assert_eq!(expected[1].map(|e| e.0), Some(n_valid as u32 - 1));
        assert_eq!(expected[2].map(|e| e.0), Some(0));
        assert_eq!((expected[3], expected[4]), (None, None));
        assert_eq!(expected[5].map(|e| e.0), Some(99));
        assert_eq!(expected[6].map(|e| e.0), Some(0));
        assert_eq!(expected[7].map(|e| e.0), Some(599));
        check_case(gpu, &logits, n_valid, "edges");
    }
}

fn max_is_optional(gpu: &Gpu) {
    let mut r = rng(32);
    let logits = uniform(&mut r, DType::F32, &[4, 151936], -1.0, 1.0);
    let d = DeviceTensor::from_host(gpu, &logits).unwrap();
    let mut out = ArgmaxOutput::new(gpu, 4).unwrap();
    argmax(gpu, &d.view(), 151665, &mut out, false).unwrap();
    let (index, max) = out.raw_to_host(gpu, 4).unwrap();
    let expected = reference::argmax(&logits, 151665).unwrap();
    assert_eq!(index, expected.iter().map(|e| e.unwrap().0 as i32).collect::<Vec<_>>());
    assert!(max.iter().all(|v| v.is_nan()), "max written although not asked for: {max:?}");
}

/// lm_head over the whole padded vocabulary (our GEMM, storage-dtype logits and f32 logits), then
/// our bounded argmax. The golden is built so that a padded row wins the unbounded argmax; ours must
/// pick a real token whose float64 truth logit is within two tolerances of the truth's best (bf16
/// logits tie for real, so the exact index may differ), as `check::argmax_row` requires of the CPU.
fn lm_head_goldens_never_pick_padding(gpu: &Gpu) {
    for cfg in Qwen2Config::presets() {
        let file = GoldenFile::open(cfg.name, "ops").unwrap();
        let real = file.synth_weight(&format!("golden.{}.embed_tokens.real", cfg.name)).unwrap();
        let padded = file.synth_weight(&format!("golden.{}.embed_tokens.padded", cfg.name)).unwrap();
        let mut w = real.into_data();
        w.extend_from_slice(padded.data());
        let n_valid = cfg.real_vocab_size;
        for dtype in DTYPES {
            let weight = HostTensor::from_f32(dtype, &[cfg.vocab_size, cfg.hidden_size], w.clone()).unwrap();
            let x = file.host(&format!("lm_head.{dtype}.x")).unwrap();
            let truth = file.tensor(&format!("lm_head.{dtype}.logits.truth")).unwrap().values;
            let truth_index = file.tensor(&format!("argmax.{dtype}.index.truth")).unwrap().values[0] as usize;
            let unbounded = file.tensor(&format!("argmax.{dtype}.unbounded.truth")).unwrap().values[0] as usize;
            assert!(truth_index < n_valid && unbounded >= n_valid, "the golden must hold a padded winner");
            let bound = qwen_kernels::reference::linear::abs_dot_bound(&x, &weight, None).unwrap();
            let tol = table::linear(dtype, cfg.hidden_size, bound.iter().fold(0f32, |m, v| m.max(*v)));
            let (dx, dw) = (DeviceTensor::from_host(gpu, &x).unwrap(), DeviceTensor::from_host(gpu, &weight).unwrap());
            for logits_dtype in [dtype, DType::F32] {
                let mut logits = DeviceTensor::zeros(gpu, logits_dtype, &[1, cfg.vocab_size]).unwrap();
                gemm::linear(gpu, &dx.view(), &dw.view(), None, &mut logits.view_mut()).unwrap();
                // f32 logits skip the final rounding: the f32 tolerance's rtol applies.
                let tol = if logits_dtype == dtype { tol } else { Tolerance { rtol: table::linear(DType::F32, 1, 0.0).rtol, ..tol } };
                let c = compare(logits.to_host(gpu).unwrap().data(), &in_range(logits_dtype, truth.clone()), tol);
                println!("    lm_head golden {} {dtype} -> {logits_dtype}: {c}", cfg.name);
                assert!(c.passed(), "lm_head {} {dtype} -> {logits_dtype}: {c}", cfg.name);
                let mut out = ArgmaxOutput::new(gpu, 1).unwrap();
                argmax(gpu, &logits.view(), n_valid, &mut out, true).unwrap();
                let got = out.to_host(gpu, 1).unwrap()[0];
                let Some((i, _)) = got else { panic!("{} {dtype}: NaN row", cfg.name) };
                assert!((i as usize) < n_valid, "{} {dtype}: picked padded id {i}", cfg.name);
                let twice = Tolerance { atol: 2.0 * tol.atol, rtol: 2.0 * tol.rtol };
                let c = compare(&[truth[i as usize] as f32], &[truth[truth_index]], twice);
                assert!(c.passed(), "{} {dtype} -> {logits_dtype}: picked {i} (truth best {truth_index}): {c}", cfg.name);
            }
        }
    }
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let logits = DeviceTensor::zeros(gpu, DType::F32, &[2, 151936]).unwrap();
    let mut out = ArgmaxOutput::new(gpu, 2).unwrap();
    for n_valid in [0, 151937] {
        let e = argmax(gpu, &logits.view(), n_valid, &mut out, true).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "argmax", .. }), "{e}");
    }
    let flat = DeviceTensor::zeros(gpu, DType::F32, &[151936]).unwrap();
    let e = argmax(gpu, &flat.view(), 151665, &mut out, true).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let mut small = ArgmaxOutput::new(gpu, 1).unwrap();
    let e = argmax(gpu, &logits.view(), 151665, &mut small, true).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = small.to_host(gpu, 2).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let odd = DeviceTensor::zeros(gpu, DType::BF16, &[2, 1001]).unwrap();
    let e = argmax_with_path(gpu, &odd.view(), 1000, &mut out, true, Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { .. }), "{e}");
    // An empty batch launches nothing.
    argmax(gpu, &DeviceTensor::zeros(gpu, DType::F32, &[0, 8]).unwrap().view(), 5, &mut out, true).unwrap();
}

/// Any rows x stride x n_valid, small integer values (many ties), a few NaNs and padded winners.
fn proptest_shapes_with_ties(gpu: &Gpu) {
    let strategy = (1usize..9, 1usize..5000, 0.0f64..1.0, 0usize..3, any::<u64>());
    let mut runner = TestRunner::new(ProptestConfig { cases: 48, ..ProptestConfig::default() });
    runner
        .run(&strategy, |(rows, stride, frac, dtype_i, seed)| {
            let dtype = DTYPES[dtype_i];
            let n_valid = ((stride as f64 * frac) as usize).clamp(1, stride);
            let mut r = rng(seed);
            let mut v: Vec<f32> = (0..rows * stride).map(|_| r.gen_range(-8i32..8) as f32).collect();
            for row in 0..rows {
                if n_valid < stride {
                    v[row * stride + n_valid] = 100.0; // a padded winner
                }
                if r.gen_bool(0.2) {
                    let i = r.gen_range(0..n_valid);
                    v[row * stride + i] = f32::NAN;
                }
            }
            let logits = HostTensor::from_f32(dtype, &[rows, stride], v).unwrap();
            check_case(gpu, &logits, n_valid, "proptest");
            Ok(())
        })
        .unwrap();
}
