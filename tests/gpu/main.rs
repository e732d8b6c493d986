//! Every GPU test, in one binary with its own runner (`harness = false`), so that a test without a
//! device is reported as SKIPPED, never as passed.
//!
//! ```text
//! cargo test --release --test gpu                   # skips visibly without a device
//! QK_REQUIRE_GPU=1 cargo test --release --test gpu  # a missing device fails every test
//! cargo test --release --test gpu -- rmsnorm        # only tests whose name contains "rmsnorm"
//! ```
//! Tests run one after another on one shared `Gpu` (compute-sanitizer runs stay readable).
//! The last line reads `gpu: N passed, N failed, N skipped`; the exit code is non-zero on any failure.

#[path = "../common/mod.rs"]
mod common;
mod argmax;
mod attention;
mod golden;
mod graph;
mod linear;
mod rmsnorm;
mod rope;
mod support;
mod swiglu;
mod tensor;

use qwen_kernels::Gpu;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::OnceLock;

pub type GpuTest = (&'static str, fn(&Gpu));

/// The shared GPU, or why there is none.
fn gpu() -> &'static Result<Gpu, String> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new(0).map_err(|e| e.to_string()))
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
        attention::TESTS,
        graph::TESTS,
        golden::TESTS,
    ]
    .concat();
    let selected: Vec<GpuTest> =
        tests.into_iter().filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))).collect();

    match gpu() {
        Ok(g) => {
            let i = g.info();
            println!("gpu: {} (sm_{}{}), driver {}", i.name, i.compute_capability.0, i.compute_capability.1, i.driver_version);
        }
        Err(reason) => println!("gpu: none ({reason}){}", if require { "; QK_REQUIRE_GPU=1: failing" } else { "" }),
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, test) in selected {
        match gpu() {
            Ok(g) => {
                let outcome = catch_unwind(AssertUnwindSafe(|| test(g)));
                if outcome.is_ok() {
                    passed += 1;
                    println!("test {name} ... ok");
                } else {
                    failed += 1;
                    println!("test {name} ... FAILED");
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
    println!("gpu: {passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
