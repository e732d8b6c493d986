//! Shared by the integration tests: inputs, guard bands, the list of sizes.
#![allow(dead_code)]

use qwen_kernels::{DType, HostTensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
