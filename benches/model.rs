//! Whole-model throughput (src/model/device.rs) for both models at their real sizes, bf16:
//!
//! - decode: tokens/s of one greedy step for a batch of 1, 8 and 32 sequences (each step: every
//!   layer, the final norm, the lm_head, the argmax and the position update) on both decode
//!   paths (`fused`: the GEMV kernels of ops::decode, the default; `cublas`: the unfused
//!   launches), each replayed from its CUDA graph, the fused step launched directly, and the
//!   fused graph with programmatic dependent launches (`/pdl`: each kernel may start while the
//!   one before it finishes, sm_90). Every sequence holds 512 positions when a
//!   timed run starts and at most 768 when it ends (runs longer than 256 steps are split, each
//!   part rolled back to 512 first): the KV cache read per token is 512 to 768 positions.
//! - generate: tokens/s of `DeviceModel::generate` at batch 1 (fused path, graphs), wall clock:
//!   the loop a caller runs, each token read back on the host (one packed copy a step, the next
//!   step queued before the read: model/device/report.rs), against the bare replays above. The
//!   prompt of 512 tokens is prefilled outside the time; runs of at most 256 steps.
//! - prefill: tokens/s of one prompt of 512 and 4096 tokens (one chunk), up to its first token
//!   read back on the host.
//!
//! Beside each decode figure: the weight-bandwidth floor, the step time if the weights (every
//! parameter once, bf16, whatever the batch) were read at the device's copy bandwidth measured in
//! the same run, as tokens/s; and the fraction of it reached. The weights are zeros (the
//! arithmetic and the bytes moved do not depend on the values, and zeros cost nothing to make at
//! 1.5B parameters). Beside each result, the GPU's clocks, power and throttle reasons (NVML).
//!
//! The decode cases are also drawn as a roofline, `model-roofline.svg` in criterion's folder
//! ($CRITERION_HOME, else target/criterion): each case's bytes a step (the weights once and the KV
//! cache read at the mean context) against its measured step time, with the copy bandwidth
//! measured in the same run.
//!
//! `cargo bench --bench model`; without a GPU it prints the cases and their floors at the H200's
//! measured 4.3 TB/s and exits successfully. The PyTorch peer (transformers' generate with a
//! static cache, eager and SDPA attention) is benches/peers/model_torch.py, printing the same
//! columns.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cudarc::driver::sys::CUevent_flags;
use qwen_kernels::model::{DecodePath, DeviceModel, ModelOptions, Qwen2Config};
use qwen_kernels::{telemetry, DType, DeviceTensor, Gpu};
use std::time::{Duration, Instant};

const CONTEXT: usize = 512;
/// Steps per timed part: the context stays within CONTEXT..CONTEXT + PART.
const PART: u64 = 256;
const BATCHES: [usize; 3] = [1, 8, 32];
const PROMPTS: [usize; 2] = [512, 4096];
/// The measured copy bandwidth of the H200 this project benchmarks on (for the plan printed
/// without a GPU).
const H200_COPY_GBPS: f64 = 4300.0;

/// Seconds of one decode step if the weights were read at `gbps` (GB/s, counted as the copy
/// bandwidth counts read bytes).
fn floor_step_seconds(cfg: &Qwen2Config, gbps: f64) -> f64 {
    (cfg.parameter_count() * DType::BF16.size()) as f64 / (gbps * 1e9)
}

fn print_plan() {
    println!("model bench plan (no GPU): bf16, decode at context {CONTEXT}..{}, prefill of {PROMPTS:?} tokens", CONTEXT + PART as usize);
    for cfg in Qwen2Config::presets() {
        let floor = floor_step_seconds(&cfg, H200_COPY_GBPS);
        for b in BATCHES {
            println!(
                "  {:<18} decode b{b:<3} weight floor at {H200_COPY_GBPS:.0} GB/s: {:.1} us/step, {:.0} tokens/s",
                cfg.name,
                floor * 1e6,
                b as f64 / floor
            );
        }
    }
}

/// A model of `cfg`'s sizes with zero weights, every slot able to hold the longest prompt.
fn zero_model(gpu: &Gpu, cfg: &Qwen2Config) -> DeviceModel {
    let capacity = PROMPTS.iter().copied().max().unwrap().max(CONTEXT + PART as usize).min(cfg.max_position_embeddings);
    let options = ModelOptions { prefill_chunk: *PROMPTS.iter().max().unwrap(), ..ModelOptions::new(DType::BF16, *BATCHES.iter().max().unwrap(), capacity) };
    DeviceModel::from_device_tensors(gpu, cfg, options, |_, dims| DeviceTensor::zeros(gpu, DType::BF16, dims)).expect("model")
}

/// Event-timed seconds of `steps` decode steps of a batch of `batch` sequences at CONTEXT.
fn time_decode(gpu: &Gpu, m: &mut DeviceModel, batch: usize, steps: u64) -> Duration {
    let slots: Vec<usize> = (0..batch).collect();
    let ctx = gpu.stream().context();
    let (start, end) = (ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap(), ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap());
    let mut total = Duration::ZERO;
    let mut left = steps;
    while left > 0 {
        let n = left.min(PART);
        for &s in &slots {
            m.truncate(s, CONTEXT).unwrap();
        }
        m.begin_decode(gpu, &slots, &vec![0; batch]).unwrap();
        start.record(gpu.stream()).unwrap();
        for _ in 0..n {
            m.decode_step(gpu).unwrap();
        }
        end.record(gpu.stream()).unwrap();
        end.synchronize().unwrap();
        total += Duration::from_secs_f64(start.elapsed_ms(&end).unwrap() as f64 * 1e-3);
        left -= n;
    }
    total
}

/// Wall-clock seconds of `steps` decode steps of `DeviceModel::generate` in slot 0 (each run: a
/// prompt of CONTEXT tokens, prefilled outside the time, then at most PART steps).
fn time_generate(m: &mut DeviceModel, gpu: &Gpu, steps: u64) -> Duration {
    let prompt = vec![1u32; CONTEXT];
    let mut total = Duration::ZERO;
    let mut left = steps;
    while left > 0 {
        let n = left.min(PART);
        let g = m.generate(gpu, 0, &prompt, n as usize + 1, &[], |_| Ok(())).unwrap();
        assert_eq!(g.decode_steps() as u64, n, "zero weights choose token 0, never an EOS");
        total += Duration::from_secs_f64(g.decode_seconds);
        left -= n;
    }
    total
}

/// Wall-clock seconds of a prefill of `tokens` tokens into slot 0, to its token read back.
fn time_prefill(gpu: &Gpu, m: &mut DeviceModel, tokens: usize) -> Duration {
    m.reset(0).unwrap();
    let prompt = vec![1u32; tokens];
    gpu.synchronize().unwrap();
    let t = Instant::now();
    m.prefill(gpu, 0, &prompt).unwrap();
    t.elapsed()
}

struct Measured {
    case: String,
    tokens_per_step: usize,
    seconds: f64,
    floor: Option<f64>,
    /// Decode: the bytes one step must read (the weights once, the KV cache at the mean context).
    step_bytes: Option<f64>,
    telemetry: String,
}

/// Bytes one decode step of `batch` sequences must read at the mean context of a timed run: every
/// parameter once (bf16) and each sequence's K and V of every layer.
fn step_bytes(cfg: &Qwen2Config, batch: usize) -> f64 {
    let context = CONTEXT as f64 + PART as f64 / 2.0;
    let kv = (cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * DType::BF16.size()) as f64 * context * batch as f64;
    (cfg.parameter_count() * DType::BF16.size()) as f64 + kv
}

/// The decode cases as a roofline SVG in criterion's folder.
fn write_roofline(results: &[Measured], copy_gbps: f64, device: &str) {
    let points = results
        .iter()
        .filter_map(|r| r.step_bytes.map(|bytes| qwen_kernels::plot::RooflinePoint { label: r.case.clone(), bytes, us: r.seconds * 1e6 }))
        .collect();
    let roofline = qwen_kernels::plot::Roofline {
        title: format!("decode steps, bf16, context {CONTEXT}..{} on {device}, commit {}", CONTEXT + PART as usize, common::commit()),
        times: "decode steps, measured",
        bandwidth: copy_gbps * 1e9,
        bandwidth_source: "copy, measured in this run".to_string(),
        fixed_us: 0.0,
        points,
    };
    let dir = std::env::var_os("CRITERION_HOME").map_or_else(|| std::path::PathBuf::from("target/criterion"), std::path::PathBuf::from);
    let file = dir.join("model-roofline.svg");
    match qwen_kernels::plot::roofline(&roofline).and_then(|svg| {
        std::fs::create_dir_all(&dir).ok();
        qwen_kernels::plot::write(&file, &svg)
    }) {
        Ok(()) => println!("roofline: {}", file.display()),
        Err(e) => println!("roofline: not written ({e})"),
    }
}

fn bench(c: &mut Criterion) {
    let Some(gpu) = common::open_gpu("model") else {
        print_plan();
        return;
    };
    let copy = common::copy_bandwidth_gbps(&gpu);
    let mut results = Vec::new();
    let mut group = c.benchmark_group("model");
    for cfg in Qwen2Config::presets() {
        let mut m = zero_model(&gpu, &cfg);
        assert_eq!(m.memory().weights, cfg.parameter_count() * DType::BF16.size(), "the floor counts every parameter once");
        for s in 0..*BATCHES.iter().max().unwrap() {
            m.prefill(&gpu, s, &vec![1u32; CONTEXT]).unwrap();
        }
        let floor = floor_step_seconds(&cfg, copy);
        // Both decode paths in the same run (the fused GEMV kernels, the default, and the unfused
        // launches over cuBLAS), from graphs; the fused path also launched directly, and from its
        // graph with programmatic dependent launches (PDL).
        for (path, graphs, pdl) in [(DecodePath::Fused, true, false), (DecodePath::Cublas, true, false), (DecodePath::Fused, false, false), (DecodePath::Fused, true, true)] {
            m.set_decode_path(path);
            m.set_graphs(graphs);
            m.set_pdl(pdl);
            for batch in BATCHES {
                let case = format!("decode/{}/b{batch}/{path}/{}{}", cfg.name, if graphs { "graph" } else { "direct" }, if pdl { "/pdl" } else { "" });
                time_decode(&gpu, &mut m, batch, 8); // capture and warm up
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(&case, |b| b.iter_custom(|iters| time_decode(&gpu, &mut m, batch, iters)));
                let seconds = time_decode(&gpu, &mut m, batch, 2 * PART).as_secs_f64() / (2 * PART) as f64;
                let telemetry = telemetry::read(&gpu).map_or_else(|why| format!("telemetry: none ({why})"), |t| t.to_string());
                results.push(Measured { case, tokens_per_step: batch, seconds, floor: Some(floor), step_bytes: Some(step_bytes(&cfg, batch)), telemetry });
            }
        }
        // The generate loop at batch 1, read back token by token as a caller does.
        m.set_decode_path(DecodePath::Fused);
        m.set_graphs(true);
        m.set_pdl(false);
        let case = format!("generate/{}/b1/fused/graph", cfg.name);
        time_generate(&mut m, &gpu, 8); // warm up
        group.throughput(Throughput::Elements(1));
        group.bench_function(&case, |b| b.iter_custom(|iters| time_generate(&mut m, &gpu, iters)));
        let seconds = time_generate(&mut m, &gpu, 2 * PART).as_secs_f64() / (2 * PART) as f64;
        let telemetry = telemetry::read(&gpu).map_or_else(|why| format!("telemetry: none ({why})"), |t| t.to_string());
        results.push(Measured { case, tokens_per_step: 1, seconds, floor: Some(floor), step_bytes: Some(step_bytes(&cfg, 1)), telemetry });
        for tokens in PROMPTS.into_iter().filter(|&t| t <= cfg.max_position_embeddings) {
            let case = format!("prefill/{}/T{tokens}", cfg.name);
            time_prefill(&gpu, &mut m, tokens); // warm up
            group.throughput(Throughput::Elements(tokens as u64));
            group.bench_function(&case, |b| b.iter_custom(|iters| (0..iters).map(|_| time_prefill(&gpu, &mut m, tokens)).sum()));
            let seconds = (0..3).map(|_| time_prefill(&gpu, &mut m, tokens).as_secs_f64()).sum::<f64>() / 3.0;
            let telemetry = telemetry::read(&gpu).map_or_else(|why| format!("telemetry: none ({why})"), |t| t.to_string());
            results.push(Measured { case, tokens_per_step: tokens, seconds, floor: None, step_bytes: None, telemetry });
        }
    }
    group.finish();

    let i = gpu.info();
    println!(
        "\nmodel summary: {} (sm_{}{}), commit {}, bf16, device copy bandwidth {copy:.0} GB/s",
        i.name,
        i.compute_capability.0,
        i.compute_capability.1,
        common::commit()
    );
    println!("{:<44} {:>11} {:>12} {:>14} {:>8}  telemetry", "case", "time_us", "tokens/s", "floor tok/s", "%floor");
    for r in &results {
        let rate = r.tokens_per_step as f64 / r.seconds;
        let (floor, pct) = match r.floor {
            Some(f) => {
                let floor_rate = r.tokens_per_step as f64 / f;
                (format!("{floor_rate:.0}"), format!("{:.1}%", 100.0 * rate / floor_rate))
            }
            None => ("-".to_string(), "-".to_string()),
        };
        println!("{:<44} {:>11.1} {:>12.0} {:>14} {:>8}  {}", r.case, r.seconds * 1e6, rate, floor, pct, r.telemetry);
    }
    write_roofline(&results, copy, &i.name);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(1000));
    targets = bench
}

criterion_main!(benches);
