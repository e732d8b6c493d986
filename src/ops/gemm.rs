//! Linear layers, `y = x W^T + b`, with W in Hugging Face's [out_features, in_features] layout.
//! This file is the crate's only cuBLAS call site.
//!
//! ```text
//! x [.., in] (rows = product of the leading dims), W [out, in], b [out] -> y [.., out]
//! ```
//! x, W and b share one storage dtype (f32, f16, bf16); y has that dtype or f32 (logits). Products
//! are accumulated in FP32 (`CUBLAS_COMPUTE_32F`: no TF32 unless [`Precision::Tf32`] is asked for,
//! which only f32 inputs accept), and partial sums are reduced in FP32 too: the handle's math mode
//! ([`crate::gpu::CUBLAS_MATH_MODE`], set when the `Gpu` is opened) disallows reduced-precision
//! reductions, so a split-K GEMM never adds its partials in f16/bf16. The bias is added in FP32 and
//! the sum rounded once to y's dtype, as PyTorch's F.linear (addmm, beta = 1) does; `cuda/linear.cu`
//! fills y with the broadcast bias and the GEMM adds to it with beta = 1.
//!
//! # Row-major to column-major
//!
//! cuBLAS reads matrices column-major; ours are row-major. A row-major [r, c] matrix with row length
//! c is, read column-major with leading dimension c, its transpose [c, r]. So cuBLAS sees
//!   - y (row-major [rows, out]) as y^T, a column-major [out, rows] matrix, ldc = out;
//!   - W (row-major [out, in])   as W^T, a column-major [in, out] matrix,   lda = in;
//!   - x (row-major [rows, in])  as x^T, a column-major [in, rows] matrix,  ldb = in.
//!
//! We want y = x W^T, i.e. y^T = W x^T = (W^T)^T x^T: the matrix cuBLAS holds for W must be
//! transposed (transa = T) and the one it holds for x used as is (transb = N). In cuBLAS' terms
//! C[m, n] = op(A)[m, k] op(B)[k, n] with m = out, n = rows, k = in, A = W (lda = in),
//! B = x (ldb = in), C = y (ldc = out). (llm.c's matmul_forward derives the same: "out.T = weight.T
//! @ inp => transa = T".) A transposed weight ([in, out] passed as [out, in]) has a different shape
//! and is rejected by `check_linear` (the op's specification, [`crate::spec::linear`]), unless
//! in == out; the tests feed one to a non-square layer to show the golden fails.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{Layout, View, ViewMut};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig};
use std::ffi::c_void;

pub use crate::spec::linear::{check_linear, LinearDims, OP};
const MODULE: &str = "linear";

/// Validate `y`: x's leading dims and `out_features`, dtype x's or f32; and cuBLAS' int limits.
pub fn check_output(x: Layout, dims: LinearDims, y: Layout) -> Result<()> {
    if y.dtype != x.dtype && y.dtype != DType::F32 {
        return Err(Error::dtype(OP, format!("y is {} but must be x's {} or f32", y.dtype, x.dtype)));
    }
    let xd = x.shape.dims();
    let yd = y.shape.dims();
    if yd.len() != xd.len() || yd[..yd.len() - 1] != xd[..xd.len() - 1] || y.shape.last() != dims.out_features {
        return Err(Error::shape(OP, format!("y {y} must be {:?} + [{}] for x {x}", &xd[..xd.len() - 1], dims.out_features)));
    }
    let limit = i32::MAX as usize;
    if dims.rows > limit || dims.in_features > limit || dims.out_features > limit {
        return Err(Error::unsupported(OP, format!("{dims:?}: cuBLAS takes i32 sizes")));
    }
    Ok(())
}

/// Arithmetic of the GEMM. `Fp32` (the default everywhere): FP32 multiply-accumulate.
/// `Tf32`: f32 inputs rounded to TF32 (10-bit mantissa) on tensor cores, an explicit opt-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Tf32,
}

/// cuBLAS' compute type for `x_dtype` at `precision` (TF32 only for f32 inputs).
pub fn compute_type(x_dtype: DType, precision: Precision) -> Result<cublasComputeType_t> {
    match (x_dtype, precision) {
        (_, Precision::Fp32) => Ok(cublasComputeType_t::CUBLAS_COMPUTE_32F),
        (DType::F32, Precision::Tf32) => Ok(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
        (d, Precision::Tf32) => Err(Error::dtype(OP, format!("TF32 applies to f32 inputs, not {d}"))),
    }
}

fn data_type(dtype: DType) -> cudaDataType {
    match dtype {
        DType::F32 => cudaDataType::CUDA_R_32F,
        DType::F16 => cudaDataType::CUDA_R_16F,
        DType::BF16 => cudaDataType::CUDA_R_16BF,
    }
}

fn fill_bias_kernel(bias: DType, y: DType) -> Result<&'static str> {
    match (bias, y) {
        (DType::F32, DType::F32) => Ok("fill_bias_f32_f32"),
        (DType::F16, DType::F16) => Ok("fill_bias_f16_f16"),
        (DType::BF16, DType::BF16) => Ok("fill_bias_bf16_bf16"),
        (DType::F16, DType::F32) => Ok("fill_bias_f16_f32"),
        (DType::BF16, DType::F32) => Ok("fill_bias_bf16_f32"),
        (b, y) => Err(Error::dtype(OP, format!("no bias fill from {b} to {y}"))),
    }
}

/// `y = x W^T + b` with FP32 accumulation.
pub fn linear(gpu: &Gpu, x: &View, weight: &View, bias: Option<&View>, y: &mut ViewMut) -> Result<()> {
    linear_with_precision(gpu, x, weight, bias, y, Precision::Fp32)
}

pub fn linear_with_precision(gpu: &Gpu, x: &View, weight: &View, bias: Option<&View>, y: &mut ViewMut, precision: Precision) -> Result<()> {
    let dims = check_linear(x.layout(), weight.layout(), bias.map(|b| b.layout()))?;
    check_output(x.layout(), dims, y.layout())?;
    let compute = compute_type(x.layout().dtype, precision)?;
    let blas = gpu.blas()?;
    if dims.rows == 0 {
        return Ok(());
    }
    let beta: f32 = match bias {
        Some(b) => {
            let kernel = fill_bias_kernel(b.layout().dtype, y.layout().dtype)?;
            let f = gpu.function(MODULE, kernel)?;
            let (rows_i, out_i) = (dims.rows as i64, dims.out_features as i32);
            let blocks = (dims.rows * dims.out_features).div_ceil(256).clamp(1, 65_535) as u32;
            let mut args = gpu.launcher(&f, kernel);
            args.arg(&b.data).arg(&mut y.data).arg(&rows_i).arg(&out_i);
            let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: bias holds out elements, y rows * out elements of the kernels' dtypes (checked
            // above); the kernel writes y[e] for e < rows * out and reads bias[e % out].
            unsafe { args.launch(cfg) }?;
            1.0
        }
        None => 0.0,
    };
    let alpha: f32 = 1.0;
    let stream = gpu.stream();
    let (m, n, k) = (dims.out_features as i32, dims.rows as i32, dims.in_features as i32);
    let (w_type, x_type, y_type) = (data_type(weight.layout().dtype), data_type(x.layout().dtype), data_type(y.layout().dtype));
    let (w_ptr, _w_sync) = weight.data.device_ptr(stream);
    let (x_ptr, _x_sync) = x.data.device_ptr(stream);
    let (y_ptr, _y_sync) = y.data.device_ptr_mut(stream);
    // SAFETY: with the derivation in the module docs, cuBLAS reads A = W as k x m (lda = k = in),
    // B = x as k x n (ldb = k), and reads/writes C = y as m x n (ldc = m = out): exactly the
    // out * in, rows * in and rows * out elements the views hold (checked above), in the dtypes
    // named. alpha and beta are host f32, as CUBLAS_COMPUTE_32F* requires, and live across the call.
    // The handle runs on this Gpu's stream, after the bias fill.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            m,
            n,
            k,
            &alpha as *const f32 as *const c_void,
            w_ptr as *const c_void,
            w_type,
            k,
            x_ptr as *const c_void,
            x_type,
            k,
            &beta as *const f32 as *const c_void,
            y_ptr as *mut c_void,
            y_type,
            m,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|source| Error::Cublas { call: format!("cublasGemmEx(T, N, m={m}, n={n}, k={k})"), source })?;
    gpu.mark_node("cublasGemmEx")
}
