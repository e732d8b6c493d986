//! The decode projections without cuBLAS (`cuda/gemv.cu`): `y = x W^T + b` for up to
//! [`max_rows`] rows of x (32 in f16/bf16, 16 in f32), W in Hugging Face's [out_features, in_features] layout, every weight
//! byte read once for all rows, FP32 products and sums, the bias added in FP32 and the sum rounded
//! once to y's dtype (x's, or f32 for logits): the specification of `linear`
//! ([`crate::spec::linear`]), which this shares with the cuBLAS wrapper ([`crate::ops::gemm`]).
//!
//! What it adds over cuBLAS at decode's few rows: the order of every addition is fixed by the
//! row's length alone, so a row's result is bit for bit the same whatever the number of rows in the
//! launch and its place among them. f16/bf16 run on tensor cores (`mma.sync` m16n8k16: each warp
//! sums fixed chunks of k, the 8 warps' partials meet in a fixed tree), so 32 rows cost the bytes of
//! the weights and next to no arithmetic; f32 runs on CUDA cores (per-lane FMA chains over a fixed
//! slice of k, then a butterfly over the 32 lanes), where a tensor core would round to tf32.
//! `cuda/gemv.cuh` has both. Prefill keeps cuBLAS.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel_args::QkGemvArgs;
use crate::tensor::{View, ViewMut};
use cudarc::driver::LaunchConfig;

pub use super::gemm::check_output;
pub use super::Path;
pub use crate::spec::linear::{check_linear, LinearDims, OP};
const MODULE: &str = "gemv";

/// Most rows of x one launch of any dtype takes (the kernels' GEMV_MAX_ROWS).
pub const MAX_ROWS: usize = 32;

/// Most rows of x one launch takes in `dtype`: 32 on tensor cores (two m16 tiles; f16, bf16), 16
/// on CUDA cores (f32: one FP32 accumulator per row and lane).
pub fn max_rows(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 16,
        DType::F16 | DType::BF16 => 32,
    }
}

/// Dynamic shared memory a launch of `dtype` needs beside any rows it stages: the 8 warps'
/// partials of `units_out` outputs a unit for `tiles` tiles of 8 units on tensor cores (gemv.cuh's
/// gemv_mma_exchange_bytes: 8 warps x outputs x tiles x 8 units x 36 floats), none on CUDA cores.
pub fn exchange_bytes(dtype: DType, units_out: usize, tiles: usize) -> usize {
    match dtype {
        DType::F32 => 0,
        DType::F16 | DType::BF16 => 8 * units_out * tiles * 8 * 36 * 4,
    }
}
/// Output features a block computes (one per warp of 256 threads).
const FEATURES_PER_BLOCK: usize = 8;

/// The kernel for these dtypes and path; validates the row limit and the vector path's alignment.
pub fn plan(dims: LinearDims, dtype: DType, y_dtype: DType, aligned16: bool, path: Path) -> Result<(&'static str, bool)> {
    let most = max_rows(dtype);
    if dims.rows == 0 || dims.rows > most {
        return Err(Error::unsupported(OP, format!("gemv takes 1..={most} rows of {dtype}, got {} (prefill: ops::gemm)", dims.rows)));
    }
    let vector_ok = aligned16 && (dims.in_features * dtype.size()) % 16 == 0;
    let vectorized = path.vectorized(OP, vector_ok, || {
        format!("16-byte vector path needs 16-byte aligned rows: in_features {} of {dtype}, bases aligned: {aligned16}", dims.in_features)
    })?;
    let name = match (dtype, y_dtype, vectorized) {
        (DType::F32, DType::F32, true) => "gemv_f32_f32_vec",
        (DType::F32, DType::F32, false) => "gemv_f32_f32_scalar",
        (DType::F16, DType::F16, true) => "gemv_f16_f16_vec",
        (DType::F16, DType::F16, false) => "gemv_f16_f16_scalar",
        (DType::F16, DType::F32, true) => "gemv_f16_f32_vec",
        (DType::F16, DType::F32, false) => "gemv_f16_f32_scalar",
        (DType::BF16, DType::BF16, true) => "gemv_bf16_bf16_vec",
        (DType::BF16, DType::BF16, false) => "gemv_bf16_bf16_scalar",
        (DType::BF16, DType::F32, true) => "gemv_bf16_f32_vec",
        (DType::BF16, DType::F32, false) => "gemv_bf16_f32_scalar",
        (x, y, _) => return Err(Error::dtype(OP, format!("y is {y} but must be x's {x} or f32"))),
    };
    Ok((name, vectorized))
}

/// `y = x W^T + b` for x [.., K] of at most [`max_rows`] rows (see the module documentation).
pub fn gemv(gpu: &Gpu, x: &View, w: &View, b: Option<&View>, y: &mut ViewMut) -> Result<()> {
    gemv_with_path(gpu, x, w, b, y, Path::Auto)
}

pub fn gemv_with_path(gpu: &Gpu, x: &View, w: &View, b: Option<&View>, y: &mut ViewMut, path: Path) -> Result<()> {
    let dims = check_linear(x.layout(), w.layout(), b.map(|b| b.layout()))?;
    check_output(x.layout(), dims, y.layout())?;
    let aligned16 = x.byte_offset() % 16 == 0 && w.byte_offset() % 16 == 0;
    let (name, _) = plan(dims, x.layout().dtype, y.layout().dtype, aligned16, path)?;
    let f = gpu.function(MODULE, name)?;
    let (rows, k, n) = (dims.rows as i32, dims.in_features as i32, dims.out_features as i32);
    let mut p = gpu.addresses();
    let a = QkGemvArgs {
        x: p.read(&x.data),
        w: p.read(&w.data),
        b: b.map_or(std::ptr::null(), |b| p.read(&b.data)),
        y: p.write(&mut y.data),
        rows,
        k,
        n,
    };
    let blocks = dims.out_features.div_ceil(FEATURES_PER_BLOCK) as u32;
    let shared = exchange_bytes(x.layout().dtype, 1, 1) as u32;
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: shared };
    // SAFETY: x holds rows * K, W N * K and b (when given) N elements of the dtype, y rows * N of
    // its own (check_linear, check_output); block c reads W's rows 8c..8c+7 that are < N and x's
    // rows < rows (16-byte vectors only when every row start is aligned), and writes y[r, feature]
    // for features < N and r < rows <= max_rows; f16/bf16 exchange partials in the 9,216 bytes of
    // dynamic shared memory given. The null bias pointer is never dereferenced.
    unsafe { gpu.launch_struct(&f, name, &a, cfg) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(rows: usize, k: usize, n: usize) -> LinearDims {
        LinearDims { rows, in_features: k, out_features: n }
    }

    #[test]
    fn plans_the_vector_path_only_where_it_is_legal() {
        assert_eq!(plan(dims(1, 896, 1152), DType::BF16, DType::BF16, true, Path::Auto).unwrap(), ("gemv_bf16_bf16_vec", true));
        assert_eq!(plan(dims(16, 896, 151936), DType::BF16, DType::F32, true, Path::Auto).unwrap(), ("gemv_bf16_f32_vec", true));
        assert_eq!(plan(dims(3, 7, 5), DType::F16, DType::F16, true, Path::Auto).unwrap(), ("gemv_f16_f16_scalar", false));
        assert_eq!(plan(dims(3, 896, 5), DType::F32, DType::F32, false, Path::Auto).unwrap(), ("gemv_f32_f32_scalar", false));
        let e = plan(dims(3, 7, 5), DType::F16, DType::F16, true, Path::Vector16).unwrap_err();
        assert!(matches!(e, Error::Alignment { .. }), "{e}");
        assert_eq!(plan(dims(32, 896, 5), DType::BF16, DType::BF16, true, Path::Auto).unwrap(), ("gemv_bf16_bf16_vec", true));
        let e = plan(dims(33, 896, 5), DType::BF16, DType::BF16, true, Path::Auto).unwrap_err();
        assert!(e.to_string().contains("1..=32 rows of bf16, got 33"), "{e}");
        let e = plan(dims(17, 896, 5), DType::F32, DType::F32, true, Path::Auto).unwrap_err();
        assert!(e.to_string().contains("1..=16 rows of f32, got 17"), "{e}");
        let e = plan(dims(1, 896, 5), DType::F32, DType::BF16, true, Path::Auto).unwrap_err();
        assert!(matches!(e, Error::DType { .. }), "{e}");
    }
}
