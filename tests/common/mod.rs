//! Shared by the integration tests: the GPU (or a visible skip), inputs, guard bands.
#![allow(dead_code)]

use qwen_kernels::{DType, Error, Gpu, HostTensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::sync::OnceLock;

/// The shared GPU, or `None` after printing why GPU tests are skipped. With `QK_REQUIRE_GPU=1` a
/// missing GPU fails the test instead. The message goes straight to the process's stderr, past the
/// test harness's output capture, so skips are visible in every `cargo test` run.
pub fn gpu(test: &str) -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| Gpu::new(0).map_err(|e: Error| e.to_string()));
    match gpu {
        Ok(g) => Some(g),
        Err(reason) => {
            if std::env::var("QK_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: QK_REQUIRE_GPU=1 but no GPU: {reason}");
            }
            let _ = writeln!(std::io::stderr(), "{test}: skipped: {reason}");
            None
        }
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [lo, hi) rounded to `dtype`.
pub fn uniform(rng: &mut StdRng, dtype: DType, dims: &[usize], lo: f32, hi: f32) -> HostTensor {
    let n = dims.iter().product();
    HostTensor::from_f32(dtype, dims, (0..n).map(|_| rng.gen_range(lo..hi)).collect()).unwrap()
}

/// Guard-band value written around outputs and checked unchanged afterwards (exact in every dtype).
pub const GUARD: f32 = -7.75;

/// Written into outputs before a run, so an element the kernel fails to write cannot pass.
pub const POISON: f32 = f32::NAN;

/// Hidden sizes: both models', odd ones, and ones that exercise the vector/scalar split and
/// more work items than one block has threads.
pub const HIDDEN_SIZES: &[usize] = &[1, 2, 7, 8, 31, 111, 500, 896, 1536, 4097, 8192, 12289];

/// Dtypes with their names, for loops.
pub const DTYPES: [DType; 3] = DType::ALL;
