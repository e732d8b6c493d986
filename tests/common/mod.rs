//! Shared by the integration tests: inputs, guard bands, the list of sizes.
#![allow(dead_code)]

use qwen_kernels::{DType, HostTensor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A row of `width` values whose squares are powers of two summing exactly to the sum of
/// 2^e over `exponents` (an even e is one square of 2^(e/2), an odd e two squares of
/// 2^((e-1)/2)), then zeros. Every value is a power of two, exact in f32 and bf16.
pub fn row_with_sum_of_squares(exponents: &[i32], width: usize) -> Vec<f32> {
    let mut row = Vec::with_capacity(width);
    for &e in exponents {
        let half = 2f32.powi(e.div_euclid(2));
        row.push(half);
        if e.rem_euclid(2) == 1 {
            row.push(half);
        }
    }
    assert!(row.len() <= width, "{} values do not fit a row of {width}", row.len());
    row.resize(width, 0.0);
    row
}

/// Exponents whose powers of two sum to f32::MAX = 2^128 - 2^104: 3 * 2^126 + 2^104 + ... + 2^125.
/// With only 24 consecutive bits (104..127) in play, every partial sum, in any order, is an f32.
pub fn exponents_of_f32_max() -> Vec<i32> {
    [126, 126, 126].into_iter().chain(104..=125).collect()
}

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("qwen-kernels-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
