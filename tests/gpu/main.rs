//! Every GPU test, in one binary with its own runner (`harness = false`).
//!
//! ```text
//! cargo test --release --test gpu                   # hardware if usable, else the software device
//! QK_REQUIRE_GPU=1 cargo test --release --test gpu  # hardware only: without one every test fails
//! QK_DEVICE=emulated cargo test --release --test gpu   # the software device even on a GPU machine
//! cargo test --release --test gpu -- rmsnorm        # only tests whose name contains "rmsnorm"
//! ```
//! Tests run one after another on one shared `Gpu` (compute-sanitizer runs stay readable). The
//! last line says which device ran them: `gpu: N passed, N failed, N skipped` on hardware,
//! `software-gpu: N passed, ...` on the software device (softgpu/). A test without any device is
//! reported as skipped, never as passed. The exit code is non-zero on any failure, and when
//! QK_REQUIRE_GPU=1 and the filter selects no test. On the software device the tests are spread
//! over several processes of this binary (QK_GPU_JOBS, default the CPU count up to 4), whose
//! outputs are printed in turn before the total.

#[path = "../common/mod.rs"]
mod common;
mod argmax;
mod attention;
mod bad_inputs;
mod decode;
mod gemv;
mod golden;
mod graph;
mod linear;
mod model;
#[allow(dead_code)] // find, replace: read by the build
#[path = "../../softgpu/mutants.rs"]
mod mutants;
mod negative;
mod paged;
mod pdl;
mod pipeline;
mod rmsnorm;
mod rope;
mod sampling;
mod schedules;
mod support;
mod swiglu;
mod tensor;
mod tools;

use qwen_kernels::{DeviceKind, Gpu};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::OnceLock;

pub type GpuTest = (&'static str, fn(&Gpu));

/// Set to "i/n" in a shard process (see run_shards).
const SHARD: &str = "QK_GPU_SHARD";
/// In a shard process: the folder where the shards claim tests (see run_shards).
const CLAIMS: &str = "QK_GPU_CLAIMS";

/// The tests that take minutes on the software device (whole models at their real size): the
/// shards claim them first, so that none is left to start when the others are done.
const LONGEST: &[&str] =
    &["model::whole_model_vibethinker_on_the_fused_path", "model::greedy_f32_equals_the_truth_qwen", "golden::kernels_pass_every_golden"];

/// Tests that need the software device (its schedules or its mutant modules): skipped on hardware.
const SOFTWARE_ONLY: &[&str] = &[
    "schedules::attention_prefill",
    "schedules::attention_decode",
    "schedules::add_rmsnorm",
    "schedules::argmax",
    "negative::source_mutants_are_caught",
    "negative::lazily_loaded_functions_launch_and_capture",
    "tools::memcheck_and_initcheck_are_on",
    "tools::counters_of_rmsnorm",
    "tools::counters_of_copies_sets_and_gemms",
    "tools::decode_reads_only_the_workspace_it_writes",
];

/// On the software device every test runs under memcheck and initcheck (its default tools), and
/// the tests of every kernel also under racecheck: these prefixes. The whole-model tests run the
/// same kernels at the models' sizes; two small ones are raced for the kernels only the model
/// launches (cuda/model.cu's embedding and position update) and the step as a whole;
/// negative:: starts its own runs.
const RACECHECK: &[&str] = &[
    "tensor::",
    "rmsnorm::",
    "swiglu::",
    "argmax::",
    "rope::",
    "linear::",
    "gemv::",
    "decode::",
    "attention::",
    "paged::",
    "sampling::",
    "graph::",
    "schedules::",
    "bad_inputs::",
    "tools::",
    "model::engine_tensors_on_its_own_stream",
    "model::graph_replay_equals_direct_launches",
];

/// Kernel tests left out of racecheck to keep CI within its time: the four longest attention
/// tests, whose kernels (tensor-core and SIMT prefill, split decode and its merge) racecheck sees in the
/// other attention tests (goldens, chunk invariance, many sequences, the SIMT row, graph replay)
/// and in schedules::attention_*.
const RACECHECK_SKIP: &[&str] = &[
    "attention::future_keys_poisoned_do_not_reach_earlier_queries",
    "attention::long_context_prefill_and_decode",
    "attention::decode_every_step_of_a_300_token_golden_in_one_launch",
    "attention::proptest_prefill_shapes",
];

/// The shared GPU, or why there is none.
fn gpu() -> &'static Result<Gpu, String> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::any(0).map_err(|e| e.to_string()))
}

fn main() -> ExitCode {
    // cargo passes libtest flags (--nocapture, --test-threads=N, ...); a bare word filters by name.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let require = std::env::var("QK_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let tests: Vec<GpuTest> = [
        tensor::TESTS,
        rmsnorm::TESTS,
        swiglu::TESTS,
        argmax::TESTS,
        rope::TESTS,
        linear::TESTS,
        gemv::TESTS,
        decode::TESTS,
        attention::TESTS,
        paged::TESTS,
        sampling::TESTS,
        graph::TESTS,
        golden::TESTS,
        schedules::TESTS,
        negative::TESTS,
        bad_inputs::TESTS,
        model::TESTS,
        pipeline::TESTS,
        pdl::TESTS,
        tools::TESTS,
    ]
    .concat();
    let count = tests.len();
    let selected: Vec<GpuTest> =
        tests.into_iter().filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))).collect();
    let shard = std::env::var(SHARD).ok().and_then(|s| {
        let (i, n) = s.split_once('/')?;
        Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?))
    });
    // The longest first (a stable sort: the rest keep their order).
    let mut selected = selected;
    selected.sort_by_key(|(name, _)| !LONGEST.contains(name));
    let claims = std::env::var_os(CLAIMS).map(std::path::PathBuf::from);

    let device_word = match gpu() {
        Ok(g) => {
            println!("device: {}", g.describe());
            match g.info().kind {
                DeviceKind::Hardware => "gpu",
                DeviceKind::Software => "software-gpu",
            }
        }
        Err(reason) => {
            println!("device: none ({reason}){}", if require { "; QK_REQUIRE_GPU=1: failing" } else { "" });
            "gpu"
        }
    };
    if require && selected.is_empty() {
        println!("QK_REQUIRE_GPU=1 and the filter {filters:?} selects none of the {} tests: failing", count);
        println!("{device_word}: 0 passed, 1 failed, 0 skipped");
        return ExitCode::FAILURE;
    }
    let jobs = std::env::var("QK_GPU_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(4));
    let software = gpu().as_ref().is_ok_and(|g| g.info().kind == DeviceKind::Software);
    if software && shard.is_none() && jobs > 1 && selected.len() > 1 {
        return run_shards(jobs.min(selected.len()), device_word);
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (index, (name, test)) in selected.into_iter().enumerate() {
        // A shard runs the tests it claims: the first to create the test's file in the claims
        // folder (create_new: atomic) runs it, so a shard that is done takes the next one.
        if let Some(dir) = &claims {
            if std::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(index.to_string())).is_err() {
                continue;
            }
        }
        match gpu() {
            Ok(g) if g.info().kind == DeviceKind::Hardware && SOFTWARE_ONLY.contains(&name) => {
                skipped += 1;
                println!("test {name} ... skipped: a software-device test (schedules, source mutants; on hardware compute-sanitizer racecheck covers races)");
            }
            Ok(g) => {
                let tools = (g.info().kind == DeviceKind::Software).then(|| {
                    let default = g.software_tools().expect("the software device's tools");
                    let race = RACECHECK.iter().any(|p| name.starts_with(p)) && !RACECHECK_SKIP.contains(&name) && !default.contains("racecheck");
                    if race {
                        g.set_software_tools(&format!("{default},racecheck")).expect("racecheck");
                    }
                    default
                });
                let start = std::time::Instant::now();
                let outcome = catch_unwind(AssertUnwindSafe(|| test(g)));
                if let Some(default) = tools {
                    g.set_software_tools(&default).expect("the software device's tools");
                }
                let secs = start.elapsed().as_secs_f64();
                if outcome.is_ok() {
                    passed += 1;
                    println!("test {name} ... ok ({secs:.2} s)");
                } else {
                    failed += 1;
                    println!("test {name} ... FAILED ({secs:.2} s)");
                }
            }
            Err(reason) if require => {
                failed += 1;
                println!("test {name} ... FAILED (QK_REQUIRE_GPU=1 and no GPU: {reason})");
            }
            Err(reason) => {
                skipped += 1;
                println!("test {name} ... skipped: {reason}");
            }
        }
    }
    match shard {
        Some((i, n)) => println!("shard {i}/{n}: {passed} passed, {failed} failed, {skipped} skipped"),
        None => println!("{device_word}: {passed} passed, {failed} failed, {skipped} skipped"),
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The software device runs a launch on one CPU core: spread the tests over `n` processes of
/// this binary, each taking the next unclaimed test when it is done with one (claims in a fresh
/// folder, removed at the end), then print each one's output and the total.
fn run_shards(n: usize, device_word: &str) -> ExitCode {
    let exe = std::env::current_exe().expect("the test binary's path");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let claims = std::env::temp_dir().join(format!("qk-gpu-claims-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&claims).expect("the shards' claims folder");
    println!("running the tests in {n} processes (QK_GPU_JOBS=1: one)");
    let children: Vec<_> = (0..n)
        .map(|i| {
            let (exe, args, claims) = (exe.clone(), args.clone(), claims.clone());
            std::thread::spawn(move || {
                std::process::Command::new(exe).args(args).env(SHARD, format!("{i}/{n}")).env(CLAIMS, claims).output()
            })
        })
        .collect();
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    for (i, child) in children.into_iter().enumerate() {
        let out = child.join().expect("shard thread");
        let Ok(out) = out else {
            failed += 1;
            println!("shard {i}/{n}: could not start: {:?}", out.err());
            continue;
        };
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let counts = text.lines().rev().find_map(|l| {
            let rest = l.strip_prefix(&format!("shard {i}/{n}: "))?;
            let nums: Vec<u32> = rest.split(", ").filter_map(|p| p.split(' ').next()?.parse().ok()).collect();
            (nums.len() == 3).then(|| (nums[0], nums[1], nums[2]))
        });
        match counts {
            Some((p, f, s)) => {
                passed += p;
                failed += f;
                skipped += s;
                if f == 0 && !out.status.success() {
                    failed += 1;
                    println!("shard {i}/{n} exited with {} after its tests", out.status);
                }
            }
            None => {
                failed += 1;
                println!("shard {i}/{n} ended without its summary ({})", out.status);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&claims);
    println!("{device_word}: {passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
