//! RMSNorm and fused residual-add + RMSNorm (`cuda/rmsnorm.cu`).
//!
//! ```text
//! rmsnorm:      y = w * T(x * rsqrt(mean(x^2) + eps))                 x, y [.., hidden], w [hidden]
//! add_rmsnorm:  residual = T(x + residual); y = rmsnorm(residual)      residual updated in place
//! ```
//! with the mean, rsqrt and products in FP32 and T(.) rounding to the storage dtype exactly where
//! transformers' Qwen2RMSNorm rounds (see the kernel's header). All leading dimensions are rows.
//! A row whose FP32 sum of squares passes f32's range comes out as zeros, as in PyTorch
//! ([`crate::spec::rmsnorm`] gives the contract and its boundary, and the validation).

use super::row_block_threads;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{View, ViewMut};
use cudarc::driver::LaunchConfig;

pub use crate::spec::rmsnorm::{check, check_same, Dims, FUSED_OP, OP};
const MODULE: &str = "rmsnorm";

pub use super::Path;

/// The launch an RMSNorm of `dims` gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub kernel: &'static str,
    pub vectorized: bool,
    pub grid: u32,
    pub threads: u32,
}

/// Choose the kernel variant and launch shape. `aligned16`: every operand starts 16-byte aligned.
pub fn plan(op: &'static str, fused: bool, dtype: DType, dims: Dims, path: Path, aligned16: bool) -> Result<Launch> {
    if dims.hidden > i32::MAX as usize {
        return Err(Error::unsupported(op, format!("hidden {} > {}", dims.hidden, i32::MAX)));
    }
    if dims.rows > i32::MAX as usize {
        return Err(Error::unsupported(op, format!("rows {} > {} (one block per row)", dims.rows, i32::MAX)));
    }
    let per_vec = 16 / dtype.size();
    let vector_ok = dims.hidden % per_vec == 0 && aligned16;
    let vectorized = path.vectorized(op, vector_ok, || {
        format!(
            "16-byte vector path needs hidden % {per_vec} == 0 for {dtype} and 16-byte aligned \
             operands; got hidden {} (aligned: {aligned16})",
            dims.hidden
        )
    })?;
    let items = if vectorized { dims.hidden / per_vec } else { dims.hidden };
    let kernel = match (fused, dtype, vectorized) {
        (false, DType::F32, true) => "rmsnorm_f32_vec",
        (false, DType::F32, false) => "rmsnorm_f32_scalar",
        (false, DType::F16, true) => "rmsnorm_f16_vec",
        (false, DType::F16, false) => "rmsnorm_f16_scalar",
        (false, DType::BF16, true) => "rmsnorm_bf16_vec",
        (false, DType::BF16, false) => "rmsnorm_bf16_scalar",
        (true, DType::F32, true) => "add_rmsnorm_f32_vec",
        (true, DType::F32, false) => "add_rmsnorm_f32_scalar",
        (true, DType::F16, true) => "add_rmsnorm_f16_vec",
        (true, DType::F16, false) => "add_rmsnorm_f16_scalar",
        (true, DType::BF16, true) => "add_rmsnorm_bf16_vec",
        (true, DType::BF16, false) => "add_rmsnorm_bf16_scalar",
    };
    Ok(Launch { kernel, vectorized, grid: dims.rows as u32, threads: row_block_threads(items) })
}

fn config(launch: &Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: (launch.grid, 1, 1), block_dim: (launch.threads, 1, 1), shared_mem_bytes: 0 }
}

/// `out = rmsnorm(x) * weight`. `x`, `out`: \[.., hidden\]; `weight`: \[hidden\]; one dtype.
pub fn rmsnorm(gpu: &Gpu, x: &View, weight: &View, eps: f32, out: &mut ViewMut) -> Result<()> {
    rmsnorm_with_path(gpu, x, weight, eps, out, Path::Auto)
}

pub fn rmsnorm_with_path(gpu: &Gpu, x: &View, weight: &View, eps: f32, out: &mut ViewMut, path: Path) -> Result<()> {
    let dims = check(OP, x.layout(), weight.layout(), eps)?;
    check_same(OP, "out", x.layout(), out.layout())?;
    let aligned16 = [x.byte_offset(), weight.byte_offset(), out.byte_offset()].iter().all(|o| o % 16 == 0);
    let launch = plan(OP, false, x.layout().dtype, dims, path, aligned16)?;
    if dims.rows == 0 {
        return Ok(());
    }
    let f = gpu.function(MODULE, launch.kernel)?;
    let hidden = dims.hidden as i32;
    let mut args = gpu.launcher(&f, launch.kernel);
    args.arg(&x.data).arg(&weight.data).arg(&mut out.data).arg(&hidden).arg(&eps);
    // SAFETY: x and out hold rows * hidden elements and weight hidden elements of the kernel's dtype
    // (checked above); the grid has one block per row and each block touches only its row.
    unsafe { args.launch(config(&launch)) }?;
    Ok(())
}

/// `residual = x + residual` (rounded to the dtype, in place), then `out = rmsnorm(residual) * weight`.
pub fn add_rmsnorm(gpu: &Gpu, x: &View, residual: &mut ViewMut, weight: &View, eps: f32, out: &mut ViewMut) -> Result<()> {
    add_rmsnorm_with_path(gpu, x, residual, weight, eps, out, Path::Auto)
}

pub fn add_rmsnorm_with_path(
    gpu: &Gpu,
    x: &View,
    residual: &mut ViewMut,
    weight: &View,
    eps: f32,
    out: &mut ViewMut,
    path: Path,
) -> Result<()> {
    let dims = check(FUSED_OP, x.layout(), weight.layout(), eps)?;
    check_same(FUSED_OP, "residual", x.layout(), residual.layout())?;
    check_same(FUSED_OP, "out", x.layout(), out.layout())?;
    let aligned16 = [x.byte_offset(), residual.byte_offset(), weight.byte_offset(), out.byte_offset()]
        .iter()
        .all(|o| o % 16 == 0);
    let launch = plan(FUSED_OP, true, x.layout().dtype, dims, path, aligned16)?;
    if dims.rows == 0 {
        return Ok(());
    }
    let f = gpu.function(MODULE, launch.kernel)?;
    let hidden = dims.hidden as i32;
    let mut args = gpu.launcher(&f, launch.kernel);
    args.arg(&x.data).arg(&mut residual.data).arg(&weight.data).arg(&mut out.data).arg(&hidden).arg(&eps);
    // SAFETY: x, residual and out hold rows * hidden elements and weight hidden elements of the
    // kernel's dtype (checked above); one block per row, each block touches only its row. Rust's
    // borrows guarantee residual and out do not alias each other or x.
    unsafe { args.launch(config(&launch)) }?;
    Ok(())
}
