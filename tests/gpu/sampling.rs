//! Sampling on the device against the float64 reference (run by tests/gpu/main.rs): the filtered
//! distribution (same kept set, probabilities within their rounding), draws that never leave the
//! kept set and follow the distribution (chi-square), per-row streams independent of the batch, the
//! device step counter under graph replay, and transformers' warpers on both models' logits.

use crate::common::rng;
use crate::GpuTest;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::ops::sampling::{self as op, Draw, Sampler, SamplingParams};
use qwen_kernels::reference::sampling as reference;
use qwen_kernels::{DType, DeviceTensor, Error, Gpu, HostTensor};
use rand::Rng;
use statrs::distribution::{ChiSquared, ContinuousCDF};

pub const TESTS: &[GpuTest] = &[
    ("sampling::filtered_distributions_match_the_float64_reference", filtered_distributions_match_the_float64_reference),
    ("sampling::rows_without_a_distribution_and_bad_parameters", rows_without_a_distribution_and_bad_parameters),
    ("sampling::same_seed_and_step_same_token_whatever_the_batch", same_seed_and_step_same_token_whatever_the_batch),
    ("sampling::graph_replays_draw_fresh_tokens", graph_replays_draw_fresh_tokens),
    ("sampling::draws_follow_the_filtered_distribution", draws_follow_the_filtered_distribution),
    ("sampling::transformers_warpers_on_both_models", transformers_warpers_on_both_models),
    ("sampling::bad_inputs_are_errors_before_launch", bad_inputs_are_errors_before_launch),
];

fn params(temperature: f32, top_k: u32, top_p: f32, min_p: f32, seed: u64) -> SamplingParams {
    SamplingParams { temperature, top_k, top_p, min_p, seed }
}

/// The kernel's probability of each token against the float64 reference's, relative: the kernel
/// computes e = exp(x - max) in FP32 (expf within 2 ulp, and x - max rounded once: a relative
/// error of |x - max| * 2^-24 in e), scales by an FP32 reciprocal of a fixed-point total (each
/// term truncated to 2^-40, Z >= 1: n * 2^-40 relative) and rounds the product: 2.4e-7 + 6e-8 +
/// 6e-8 + n 2^-40 + |x - max| 6e-8. An absolute floor of 1e-37 covers subnormal results.
pub fn probability_tolerance(x_minus_max: f64, n: usize) -> (f64, f64) {
    (3.6e-7 + n as f64 * 9.1e-13 + x_minus_max.abs() * 6e-8, 1e-37)
}

/// Decisions closer than this to their cut-off may go either way (the bound of `probability_tolerance`
/// at |x - max| <= 8, summed over the mass above a token: the same relative error): 1.2e-6.
pub const DECISION_MARGIN: f64 = 1.2e-6;

/// Compare one row's filtered distribution (from the kernel) with the reference. Returns whether
/// the kept sets were compared (false: a decision within DECISION_MARGIN of its cut-off).
fn compare_row(got: &[f32], logits: &[f32], n: usize, p: &SamplingParams, what: &str) -> bool {
    let Some(want) = reference::filtered(logits, n, p) else {
        assert!(got.iter().all(|v| v.is_nan()), "{what}: no distribution, so NaN probabilities; got {:?}", &got[..n.min(8)]);
        return true;
    };
    let x: Vec<f32> = logits[..n].iter().map(|&v| if p.is_greedy() { v } else { v / p.temperature }).collect();
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let compared = want.margin >= DECISION_MARGIN;
    for i in 0..n {
        let (g, w) = (got[i] as f64, want.probs[i]);
        if !compared && ((g > 0.0) != (w > 0.0)) {
            continue;
        }
        if w == 0.0 || w == 1.0 {
            // Removed tokens and the one token of a greedy row are exact.
            assert_eq!(g, w, "{what}: token {i} probability {g:e}, reference {w:e} (margin {:e})", want.margin);
            continue;
        }
        let (rtol, atol) = probability_tolerance(x[i] as f64 - max, n);
        assert!((g - w).abs() <= atol + rtol * w, "{what}: token {i} (x {} max {max}) probability {g:e}, reference {w:e} (margin {:e})", x[i], want.margin);
    }
    compared
}

/// Rows of `n` logits: normal-ish values of `scale`, with a share of exact ties and -inf entries.
fn logits_row(r: &mut impl Rng, n: usize, scale: f32, ties: bool, masked: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if masked && r.gen_bool(0.1) {
                return f32::NEG_INFINITY;
            }
            let v: f32 = (0..4).map(|_| r.gen_range(-1.0f32..1.0)).sum::<f32>() * scale;
            if ties {
                (v * 4.0).round() / 4.0
            } else {
                v
            }
        })
        .collect()
}

fn run_probs(gpu: &Gpu, logits: &HostTensor, n: usize, ps: &[SamplingParams]) -> (Vec<f32>, Vec<Draw>) {
    let rows = logits.dims()[0];
    let d = DeviceTensor::from_host(gpu, logits).unwrap();
    let mut sampler = Sampler::new(gpu, rows).unwrap();
    sampler.set(gpu, ps).unwrap();
    let mut probs = DeviceTensor::zeros(gpu, DType::F32, &[rows, n]).unwrap();
    op::filtered_probs(gpu, &d.view(), n, &mut sampler, &mut probs.view_mut()).unwrap();
    let draws = sampler.draws_to_host(gpu, rows).unwrap();
    assert_eq!(sampler.steps_to_host(gpu, rows).unwrap(), vec![0; rows], "filtered_probs must not advance the steps");
    (probs.to_host(gpu).unwrap().into_data(), draws)
}

fn filtered_distributions_match_the_float64_reference(gpu: &Gpu) {
    let mut r = rng(71);
    let mut rows_compared = 0;
    let mut rows_total = 0;
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (n, stride) in [(1, 1), (5, 8), (33, 33), (1000, 1003), (4099, 4104)] {
            let mut ps = Vec::new();
            let mut values = Vec::new();
            for (j, &(t, k, tp, mp)) in [
                (1.0, 0, 1.0, 0.0),
                (0.7, 0, 1.0, 0.0),
                (0.0, 0, 1.0, 0.0),
                (1.0, 1, 1.0, 0.0),
                (1.0, 3, 1.0, 0.0),
                (0.8, 40, 1.0, 0.0),
                (1.0, 0, 0.9, 0.0),
                (0.5, 0, 0.3, 0.0),
                (1.0, 0, 0.01, 0.0),
                (1.0, 0, 1.0, 0.1),
                (1.3, 0, 1.0, 1.0),
                (0.7, 20, 0.8, 0.05),
                (2.0, 200, 0.95, 0.01),
            ]
            .iter()
            .enumerate()
            {
                let ties = j % 2 == 0 || dtype != DType::F32;
                let masked = j % 3 == 1;
                let mut row = logits_row(&mut r, n, 2.0, ties, masked);
                if masked && row.iter().all(|v| *v == f32::NEG_INFINITY) {
                    row[0] = 0.0;
                }
                row.resize(stride, f32::NAN); // the padded vocabulary is never read
                values.extend(row);
                ps.push(params(t, k, tp, mp, j as u64));
            }
            let rows = ps.len();
            let logits = HostTensor::from_f32(dtype, &[rows, stride], values).unwrap();
            let (probs, draws) = run_probs(gpu, &logits, n, &ps);
            for (row, p) in ps.iter().enumerate() {
                let what = format!("{dtype} n {n} row {row} {p:?}");
                let x = &logits.data()[row * stride..(row + 1) * stride];
                let got = &probs[row * n..(row + 1) * n];
                rows_total += 1;
                if compare_row(got, x, n, p, &what) {
                    rows_compared += 1;
                }
                // The draw at step 0 is one of the kept tokens.
                let token = draws[row].token().unwrap_or_else(|| panic!("{what}: drew {:?}", draws[row])) as usize;
                assert!(got[token] > 0.0, "{what}: drew token {token} outside the kept set");
            }
        }
    }
    // Random rows land within the margin rarely; most must have their kept sets compared.
    assert!(rows_compared * 10 >= rows_total * 9, "only {rows_compared} of {rows_total} rows had their kept sets compared");
}

fn rows_without_a_distribution_and_bad_parameters(gpu: &Gpu) {
    let n = 6;
    let rows: Vec<(Vec<f32>, SamplingParams, Draw)> = vec![
        (vec![0.0, 1.0, f32::NAN, 2.0, 0.0, 0.0], params(1.0, 0, 1.0, 0.0, 1), Draw::NoDistribution),
        (vec![0.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0], params(0.7, 0, 0.9, 0.0, 1), Draw::NoDistribution),
        (vec![f32::NEG_INFINITY; 6], params(1.0, 0, 1.0, 0.0, 1), Draw::NoDistribution),
        // Greedy rows follow argmax: +inf wins, all -inf answers 0, NaN is reported.
        (vec![0.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0], SamplingParams::greedy(), Draw::Token(1)),
        (vec![f32::NEG_INFINITY; 6], SamplingParams::greedy(), Draw::Token(0)),
        (vec![0.0, 1.0, f32::NAN, 2.0, 0.0, 0.0], SamplingParams::greedy(), Draw::NoDistribution),
        // Ties: greedy takes the lowest index.
        (vec![0.0, 3.0, 1.0, 3.0, 3.0, 0.0], SamplingParams::greedy(), Draw::Token(1)),
        // One token left by top_k 1 among ties? top_k keeps every tie: three tokens of 3.0.
        (vec![0.0, 3.0, 1.0, 3.0, 3.0, 0.0], params(1.0, 1, 1.0, 1.0, 9), Draw::Token(u32::MAX)),
        // A finite value / a tiny temperature overflows to +inf: no distribution.
        (vec![1e9, 2.0, 0.0, 0.0, 0.0, 0.0], params(1e-30, 0, 1.0, 0.0, 1), Draw::NoDistribution),
    ];
    let values: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
    let logits = HostTensor::from_f32(DType::F32, &[rows.len(), n], values).unwrap();
    let ps: Vec<SamplingParams> = rows.iter().map(|r| r.1).collect();
    let (probs, draws) = run_probs(gpu, &logits, n, &ps);
    for (i, (row, p, want)) in rows.iter().enumerate() {
        let got = &probs[i * n..(i + 1) * n];
        if *want == Draw::Token(u32::MAX) {
            let t = draws[i].token().unwrap();
            assert!([1, 3, 4].contains(&t), "row {i}: drew {t}");
        } else {
            assert_eq!(draws[i], *want, "row {i} {row:?} {p:?}");
        }
        compare_row(got, row, n, p, &format!("row {i}"));
    }

    // Parameters an engine writes on the device are checked there: BAD_PARAMS, nothing drawn.
    let d = DeviceTensor::from_host(gpu, &HostTensor::from_f32(DType::F32, &[4, n], vec![0.5; 4 * n]).unwrap()).unwrap();
    let mut sampler = Sampler::new(gpu, 4).unwrap();
    sampler.set(gpu, &[SamplingParams::default(); 4]).unwrap();
    {
        let b = sampler.device_mut();
        gpu.stream().memcpy_htod(&[1.0f32, -1.0, f32::NAN, 1.0], b.temperature).unwrap();
        gpu.stream().memcpy_htod(&[1.0f32, 1.0, 1.0, 0.0], b.top_p).unwrap();
    }
    op::sample(gpu, &d.view(), n, &mut sampler).unwrap();
    let draws = sampler.draws_to_host(gpu, 4).unwrap();
    assert!(matches!(draws[0], Draw::Token(_)), "{draws:?}");
    assert_eq!(&draws[1..], &[Draw::BadParams; 3], "{draws:?}");
}

/// A row's token depends on its logits, parameters, seed and step only: rows drawn in a batch of 9
/// equal the same rows drawn alone, in another order, at other places.
fn same_seed_and_step_same_token_whatever_the_batch(gpu: &Gpu) {
    let mut r = rng(5);
    let (rows, n) = (9, 700);
    let values: Vec<f32> = (0..rows).flat_map(|_| logits_row(&mut r, n, 1.5, true, false)).collect();
    let logits = HostTensor::from_f32(DType::BF16, &[rows, n], values).unwrap();
    let ps: Vec<SamplingParams> = (0..rows)
        .map(|i| match i % 3 {
            0 => params(0.8, 0, 0.9, 0.0, 1000 + i as u64),
            1 => params(1.0, 50, 1.0, 0.02, 7),
            _ => params(0.6, 20, 0.8, 0.05, u64::MAX - i as u64),
        })
        .collect();
    let d = DeviceTensor::from_host(gpu, &logits).unwrap();
    let mut batch = Sampler::new(gpu, rows).unwrap();
    batch.set(gpu, &ps).unwrap();
    let mut steps = Vec::new();
    for _ in 0..4 {
        op::sample(gpu, &d.view(), n, &mut batch).unwrap();
        steps.push(batch.draws_to_host(gpu, rows).unwrap());
    }
    assert_eq!(batch.steps_to_host(gpu, rows).unwrap(), vec![4; rows]);
    // Different steps draw differently (a flat-enough distribution: some row must change).
    assert!(steps.windows(2).all(|w| w[0] != w[1]), "the step counter must change the draws");

    // An engine's own buffers (SamplingRows): the same draws as the sampler's.
    {
        let st = gpu.stream();
        let temperature = st.clone_htod(&ps.iter().map(|p| p.temperature).collect::<Vec<_>>()).unwrap();
        let top_k = st.clone_htod(&ps.iter().map(|p| p.top_k_i32()).collect::<Vec<_>>()).unwrap();
        let top_p = st.clone_htod(&ps.iter().map(|p| p.top_p).collect::<Vec<_>>()).unwrap();
        let min_p = st.clone_htod(&ps.iter().map(|p| p.min_p).collect::<Vec<_>>()).unwrap();
        let seed = st.clone_htod(&ps.iter().map(|p| p.seed).collect::<Vec<_>>()).unwrap();
        let mut step = st.clone_htod(&vec![2u64; rows]).unwrap();
        let mut tokens = st.alloc_zeros::<i32>(rows + 3).unwrap();
        let (t, k, tp, mp, sd) = (temperature.slice(..), top_k.slice(..), top_p.slice(..), min_p.slice(..), seed.slice(..));
        let mut step_view = step.slice_mut(..);
        let mut engine = op::SamplingRows { temperature: &t, top_k: &k, top_p: &tp, min_p: &mp, seed: &sd, step: &mut step_view };
        op::sample_rows(gpu, &d.view(), n, &mut engine, 1, &mut tokens.slice_mut(..)).unwrap();
        let got: Vec<Draw> = st.clone_dtoh(&tokens).unwrap()[..rows].iter().map(|&t| Draw::from_raw(t)).collect();
        assert_eq!(got, steps[2], "engine buffers at step 2");
        assert_eq!(st.clone_dtoh(&step).unwrap(), vec![3; rows]);
        // Arrays shorter than the rows are refused before the launch.
        let short = seed.slice(0..rows - 1);
        let mut step_view = step.slice_mut(..);
        let mut engine = op::SamplingRows { temperature: &t, top_k: &k, top_p: &tp, min_p: &mp, seed: &short, step: &mut step_view };
        let e = op::sample_rows(gpu, &d.view(), n, &mut engine, 1, &mut tokens.slice_mut(..)).unwrap_err();
        assert!(e.to_string().contains(&format!("{rows} rows")) && e.to_string().contains(&format!("holds {}", rows - 1)), "{e}");
    }

    // Four draws in one launch (sample_n) are the four steps' draws.
    let mut at_once = Sampler::new(gpu, rows).unwrap();
    at_once.set(gpu, &ps).unwrap();
    let mut tokens = gpu.stream().alloc_zeros::<i32>(rows * 4).unwrap();
    op::sample_n(gpu, &d.view(), n, &mut at_once, 4, &mut tokens).unwrap();
    let got: Vec<Draw> = gpu.stream().clone_dtoh(&tokens).unwrap().into_iter().map(Draw::from_raw).collect();
    for row in 0..rows {
        for (step, want) in steps.iter().enumerate() {
            assert_eq!(got[row * 4 + step], want[row], "sample_n: row {row} draw {step}");
        }
    }
    assert_eq!(at_once.steps_to_host(gpu, rows).unwrap(), vec![4; rows]);

    for row in (0..rows).rev() {
        // Row `row` alone, placed second in a batch of two behind another row.
        let other = (row + 4) % rows;
        let pair: Vec<f32> = [other, row].iter().flat_map(|&i| logits.data()[i * n..(i + 1) * n].to_vec()).collect();
        let pair = DeviceTensor::from_host(gpu, &HostTensor::from_f32(DType::BF16, &[2, n], pair).unwrap()).unwrap();
        let mut alone = Sampler::new(gpu, 2).unwrap();
        alone.set(gpu, &[ps[other], ps[row]]).unwrap();
        alone.set_steps(gpu, &[9, 0]).unwrap();
        for (step, want) in steps.iter().enumerate() {
            op::sample(gpu, &pair.view(), n, &mut alone).unwrap();
            assert_eq!(alone.draws_to_host(gpu, 2).unwrap()[1], want[row], "row {row} step {step}");
        }
        // Rolled back to step 1, it draws step 1's token again.
        alone.set_steps(gpu, &[0, 1]).unwrap();
        op::sample(gpu, &pair.view(), n, &mut alone).unwrap();
        assert_eq!(alone.draws_to_host(gpu, 2).unwrap()[1], steps[1][row], "row {row} rolled back");
    }

    // Another seed, another stream.
    let mut reseeded = Sampler::new(gpu, rows).unwrap();
    reseeded.set(gpu, &ps.iter().map(|p| SamplingParams { seed: p.seed ^ 0x9e37, ..*p }).collect::<Vec<_>>()).unwrap();
    op::sample(gpu, &d.view(), n, &mut reseeded).unwrap();
    assert_ne!(reseeded.draws_to_host(gpu, rows).unwrap(), steps[0]);
}

/// A captured draw replayed: the step counter lives on the device, so each replay draws from the
/// next step, exactly the tokens direct launches give.
fn graph_replays_draw_fresh_tokens(gpu: &Gpu) {
    use cudarc::driver::sys::CUstreamCaptureMode;
    let mut r = rng(8);
    let (rows, n) = (3, 300);
    let values: Vec<f32> = (0..rows).flat_map(|_| logits_row(&mut r, n, 1.0, false, false)).collect();
    let logits = HostTensor::from_f32(DType::F32, &[rows, n], values).unwrap();
    let d = DeviceTensor::from_host(gpu, &logits).unwrap();
    let ps = [params(1.0, 0, 0.95, 0.0, 3), params(0.9, 30, 1.0, 0.0, 4), params(1.1, 0, 1.0, 0.01, 5)];

    let mut direct = Sampler::new(gpu, rows).unwrap();
    direct.set(gpu, &ps).unwrap();
    let mut want = Vec::new();
    for _ in 0..5 {
        op::sample(gpu, &d.view(), n, &mut direct).unwrap();
        want.push(direct.draws_to_host(gpu, rows).unwrap());
    }

    let mut captured = Sampler::new(gpu, rows).unwrap();
    captured.set(gpu, &ps).unwrap();
    gpu.synchronize().unwrap();
    let stream = gpu.stream();
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    op::sample(gpu, &d.view(), n, &mut captured).unwrap();
    let graph = stream.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH).unwrap().expect("a graph");
    for (step, w) in want.iter().enumerate() {
        graph.launch().unwrap();
        assert_eq!(&captured.draws_to_host(gpu, rows).unwrap(), w, "replay {step}");
    }
    assert_eq!(captured.steps_to_host(gpu, rows).unwrap(), vec![5; rows]);
}

/// One chi-square case: `n` logits and the parameters every row of it shares.
pub struct Case {
    pub n: usize,
    pub dtype: DType,
    pub scale: f32,
    pub ties: bool,
    pub masked: bool,
    pub p: SamplingParams,
}

/// Draws per case: ROWS rows (a seed each) of DRAWS draws each.
const ROWS: usize = 20;
const DRAWS: usize = 5_000;
/// Per-case significance: a correct kernel fails a case with probability 1e-4 (the seeds are fixed,
/// so the outcome is too; over 22 cases the family-wise rate is at most 2.2e-3).
const ALPHA: f64 = 1e-4;

fn chi_square_cases() -> Vec<Case> {
    let c = |n, dtype, scale, ties, masked, t, k, tp, mp| Case { n, dtype, scale, ties, masked, p: params(t, k, tp, mp, 0) };
    use DType::*;
    vec![
        // The first three catch the planted defects early (softgpu/mutants.rs): a shared seed
        // (any case), top-p one token short, temperature applied twice.
        c(16, F32, 1.0, false, false, 1.0, 0, 1.0, 0.0),
        c(100, F32, 1.0, false, false, 1.0, 0, 0.9, 0.0),
        c(16, F32, 1.0, false, false, 0.5, 0, 1.0, 0.0),
        c(64, BF16, 1.0, true, false, 0.7, 0, 1.0, 0.0),
        c(3, F32, 0.5, false, false, 1.0, 0, 1.0, 0.0),
        c(32, F32, 1.0, false, false, 2.0, 0, 1.0, 0.0),
        c(64, F32, 1.0, false, false, 1.0, 10, 1.0, 0.0),
        c(64, BF16, 1.0, true, false, 1.0, 7, 1.0, 0.0),
        c(100, F32, 1.0, false, false, 0.7, 0, 0.5, 0.0),
        c(100, BF16, 1.0, true, false, 1.0, 0, 0.8, 0.0),
        c(128, F32, 1.0, false, false, 1.0, 0, 0.3, 0.0),
        c(64, F32, 1.0, false, false, 0.3, 0, 0.95, 0.0),
        c(64, F32, 1.0, false, false, 1.0, 0, 1.0, 0.1),
        c(64, F16, 1.0, false, false, 1.2, 0, 1.0, 0.05),
        c(96, F16, 1.0, true, false, 1.0, 30, 1.0, 0.3),
        c(48, F16, 1.0, false, false, 1.0, 5, 0.7, 0.0),
        c(40, F32, 1.0, false, false, 1.5, 0, 0.99, 0.2),
        c(200, F32, 1.0, false, false, 0.8, 20, 0.9, 0.05),
        c(200, BF16, 1.0, true, false, 0.6, 50, 0.95, 0.02),
        c(256, BF16, 1.0, true, false, 0.9, 100, 0.85, 0.01),
        c(16, F32, 1.0, false, true, 1.0, 0, 1.0, 0.0),
        // Twenty equal logits, top_p 0.52: the tie group is cut inside, the eleven highest indices
        // stay (the mass above the eleventh is 0.5 < 0.52).
        c(20, F32, 0.0, false, false, 1.0, 0, 0.52, 0.0),
    ]
}

/// The chi-square statistic of `counts` against `probs` (over `draws`), bins with an expected count
/// below 5 pooled into one; returns (statistic, degrees of freedom).
pub fn chi_square(counts: &[u64], probs: &[f64], draws: u64) -> (f64, usize) {
    let (mut stat, mut bins) = (0.0, 0);
    let (mut pooled_o, mut pooled_e) = (0.0, 0.0);
    for (&o, &p) in counts.iter().zip(probs) {
        let e = p * draws as f64;
        if p == 0.0 {
            continue;
        }
        if e < 5.0 {
            pooled_o += o as f64;
            pooled_e += e;
            continue;
        }
        stat += (o as f64 - e).powi(2) / e;
        bins += 1;
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e).powi(2) / pooled_e;
        bins += 1;
    }
    (stat, bins.max(2) - 1)
}

/// At least 1e5 draws for each of 22 cases: no draw outside the kept set, and a chi-square test against
/// the float64 distribution at significance ALPHA per case.
pub fn draws_follow_the_filtered_distribution(gpu: &Gpu) {
    chi_square_cases_pass(gpu)
}

fn chi_square_cases_pass(gpu: &Gpu) {
    let mut r = rng(1234);
    for (ci, case) in chi_square_cases().iter().enumerate() {
        let row = logits_row(&mut r, case.n, case.scale, case.ties, case.masked);
        let host_row = HostTensor::from_f32(case.dtype, &[1, case.n], row).unwrap();
        let row = host_row.data().to_vec();
        let want = reference::filtered(&row, case.n, &case.p).expect("a distribution");
        assert!(want.margin >= DECISION_MARGIN, "case {ci}: a decision {:e} from its cut-off", want.margin);
        let counts = draw_counts(gpu, &row, case, ROWS, DRAWS);
        let draws = (ROWS * DRAWS) as u64;
        for (i, (&c, &p)) in counts.iter().zip(&want.probs).enumerate() {
            assert!(c == 0 || p > 0.0, "case {ci}: token {i} drawn {c} times outside the kept set");
        }
        let (stat, df) = chi_square(&counts, &want.probs, draws);
        let critical = ChiSquared::new(df as f64).unwrap().inverse_cdf(1.0 - ALPHA);
        assert!(stat <= critical, "case {ci} (n {} {} {:?}): chi-square {stat:.1} > {critical:.1} at df {df}", case.n, case.dtype, case.p);
        // And the distribution the draws followed is the kernel's own filtered one.
        let (probs, _) = run_probs(gpu, &host_row, case.n, &[case.p]);
        compare_row(&probs, &row, case.n, &case.p, &format!("case {ci}"));
    }
}

/// How often each token is drawn by `rows` rows (a seed each) of `draws` draws each (`sample_n`:
/// draw d at step d).
pub fn draw_counts(gpu: &Gpu, row: &[f32], case: &Case, rows: usize, draws: usize) -> Vec<u64> {
    let values: Vec<f32> = (0..rows).flat_map(|_| row.iter().copied()).collect();
    let logits = DeviceTensor::from_host(gpu, &HostTensor::from_f32(case.dtype, &[rows, case.n], values).unwrap()).unwrap();
    let mut sampler = Sampler::new(gpu, rows).unwrap();
    sampler.set(gpu, &(0..rows as u64).map(|s| SamplingParams { seed: s * 0x9E37_79B9 + 1, ..case.p }).collect::<Vec<_>>()).unwrap();
    let mut tokens = gpu.stream().alloc_zeros::<i32>(rows * draws).unwrap();
    op::sample_n(gpu, &logits.view(), case.n, &mut sampler, draws, &mut tokens).unwrap();
    assert_eq!(sampler.steps_to_host(gpu, rows).unwrap(), vec![draws as u64; rows]);
    let mut counts = vec![0u64; case.n];
    for t in gpu.stream().clone_dtoh(&tokens).unwrap() {
        counts[Draw::from_raw(t).token().expect("a token") as usize] += 1;
    }
    counts
}

/// transformers' TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper and MinPLogitsWarper on
/// both models' logits rows (golden/gen.py `sampling_goldens`): the same kept set (its count: every
/// filter keeps a prefix of the ranking) and the stored probabilities within their rounding.
fn transformers_warpers_on_both_models(gpu: &Gpu) {
    for cfg in Qwen2Config::presets() {
        let rows = qwen_kernels::check::sampling_golden_cases(cfg.name).unwrap();
        assert!(rows.len() >= 11, "{}: {} cases", cfg.name, rows.len());
        for case in rows {
            let (probs, _) = run_probs(gpu, &case.logits, case.n_valid, &[case.params]);
            let kept = probs.iter().filter(|&&p| p > 0.0).count();
            assert_eq!(kept, case.kept, "{} {}: kept {kept}, transformers {}", cfg.name, case.name, case.kept);
            for (&i, &want) in case.index.iter().zip(&case.truth) {
                let got = probs[i as usize] as f64;
                let (rtol, atol) = case.tolerance;
                assert!((got - want as f64).abs() <= atol + rtol * want as f64, "{} {}: token {i}: {got:e} vs transformers' distribution {want:e}", cfg.name, case.name);
            }
        }
    }
}

fn bad_inputs_are_errors_before_launch(gpu: &Gpu) {
    let logits = DeviceTensor::zeros(gpu, DType::F32, &[2, 8]).unwrap();
    let mut sampler = Sampler::new(gpu, 2).unwrap();
    let e = op::sample(gpu, &logits.view(), 9, &mut sampler).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "sample", .. }), "{e}");
    let e = op::sample(gpu, &logits.view(), 0, &mut sampler).unwrap_err();
    assert!(e.to_string().contains("n_valid 0"), "{e}");
    let mut small = Sampler::new(gpu, 1).unwrap();
    let e = op::sample(gpu, &logits.view(), 8, &mut small).unwrap_err();
    assert!(e.to_string().contains("2 rows") && e.to_string().contains("holds 1"), "{e}");
    let e = sampler.set(gpu, &[SamplingParams::default(), SamplingParams { top_p: 0.0, ..Default::default() }]).unwrap_err();
    assert!(e.to_string().contains("row 1") && e.to_string().contains("top_p 0"), "{e}");
    let e = sampler.set(gpu, &[SamplingParams::default(); 3]).unwrap_err();
    assert!(e.to_string().contains("3 rows"), "{e}");
    let mut probs = DeviceTensor::zeros(gpu, DType::F32, &[2, 7]).unwrap();
    let e = op::filtered_probs(gpu, &logits.view(), 8, &mut sampler, &mut probs.view_mut()).unwrap_err();
    assert!(e.to_string().contains("probs must be f32 [2, 8]"), "{e}");
    let flat = DeviceTensor::zeros(gpu, DType::F32, &[16]).unwrap();
    let e = op::sample(gpu, &flat.view(), 8, &mut sampler).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Nothing was launched: the steps never moved.
    assert_eq!(sampler.steps_to_host(gpu, 2).unwrap(), vec![0, 0]);
}
