//! SwiGLU, `out = silu(gate) * up` (Qwen2MLP's `act_fn(gate_proj(x)) * up_proj(x)`), `cuda/swiglu.cu`.
//!
//! ```text
//! swiglu:        gate [.., width], up [.., width]  -> out [.., width]
//! swiglu_fused:  x [.., 2 * width] = [gate | up]   -> out [.., width]   (a fused gate/up GEMM's output)
//! ```
//! SiLU in FP32, rounded to the storage dtype, times `up`, rounded again (see the kernel's header).
//! The inputs' validation is the op's specification, [`crate::spec::swiglu`] (re-exported here).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{Layout, View, ViewMut};
use cudarc::driver::LaunchConfig;

pub use crate::spec::swiglu::{check, check_fused, FUSED_OP, OP};
const MODULE: &str = "swiglu";
/// Threads per block; blocks = work items / THREADS, capped at MAX_BLOCKS (grid-stride beyond).
const THREADS: u32 = 256;
const MAX_BLOCKS: usize = 65_535;

pub use super::Path;

/// Validate `out`: `dtype` and the input's leading dimensions with last dimension `width`.
pub fn check_out(op: &'static str, input: Layout, width: usize, out: Layout) -> Result<()> {
    if out.dtype != input.dtype {
        return Err(Error::dtype(op, format!("out is {} but the input is {}", out.dtype, input.dtype)));
    }
    let dims = input.shape.dims();
    let lead = &dims[..dims.len() - 1];
    let od = out.shape.dims();
    if od.len() != dims.len() || &od[..od.len() - 1] != lead || out.shape.last() != width {
        return Err(Error::shape(op, format!("out {out} must be {lead:?} + [{width}] for input {input}")));
    }
    Ok(())
}

/// The launch a SwiGLU gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub kernel: &'static str,
    pub vectorized: bool,
    pub grid: u32,
    pub threads: u32,
}

/// Choose the variant and grid for `rows` x `width` outputs read at row strides `strides` (elements).
/// `aligned16`: every base pointer is 16-byte aligned.
pub fn plan(op: &'static str, dtype: DType, rows: usize, width: usize, strides: [usize; 2], aligned16: bool, path: Path) -> Result<Launch> {
    if width > i32::MAX as usize {
        return Err(Error::unsupported(op, format!("width {width} > {}", i32::MAX)));
    }
    let per_vec = 16 / dtype.size();
    let vector_ok = aligned16 && width % per_vec == 0 && strides.iter().all(|s| s % per_vec == 0);
    let vectorized = path.vectorized(op, vector_ok, || {
        format!(
            "16-byte vector path needs width and row strides % {per_vec} == 0 for {dtype} and \
             16-byte aligned operands; got width {width}, strides {strides:?} (aligned: {aligned16})"
        )
    })?;
    let items = rows * if vectorized { width / per_vec } else { width };
    let kernel = match (dtype, vectorized) {
        (DType::F32, true) => "swiglu_f32_vec",
        (DType::F32, false) => "swiglu_f32_scalar",
        (DType::F16, true) => "swiglu_f16_vec",
        (DType::F16, false) => "swiglu_f16_scalar",
        (DType::BF16, true) => "swiglu_bf16_vec",
        (DType::BF16, false) => "swiglu_bf16_scalar",
    };
    let grid = items.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
    Ok(Launch { kernel, vectorized, grid, threads: THREADS })
}

/// `out = silu(gate) * up` for `gate`, `up`, `out` [.., width] of one dtype.
pub fn swiglu(gpu: &Gpu, gate: &View, up: &View, out: &mut ViewMut) -> Result<()> {
    swiglu_with_path(gpu, gate, up, out, Path::Auto)
}

pub fn swiglu_with_path(gpu: &Gpu, gate: &View, up: &View, out: &mut ViewMut, path: Path) -> Result<()> {
    let n = check(gate.layout(), up.layout())?;
    let width = gate.layout().shape.last();
    check_out(OP, gate.layout(), width, out.layout())?;
    let aligned16 = [gate.byte_offset(), up.byte_offset(), out.byte_offset()].iter().all(|o| o % 16 == 0);
    let rows = n / width;
    let launch = plan(OP, gate.layout().dtype, rows, width, [width, width], aligned16, path)?;
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function(MODULE, launch.kernel)?;
    let (rows_i, width_i, stride) = (rows as i64, width as i32, width as i64);
    let mut args = gpu.launcher(&f, launch.kernel);
    args.arg(&gate.data).arg(&up.data).arg(&mut out.data).arg(&rows_i).arg(&width_i).arg(&stride).arg(&stride);
    // SAFETY: gate, up and out each hold rows * width elements of the kernel's dtype (checked above);
    // the kernel touches item (r, c) with r < rows, c < width only, at row stride width, and uses
    // 16-byte access only when width, the strides and every pointer allow it (plan).
    unsafe { args.launch(config(&launch)) }?;
    Ok(())
}

/// `out = silu(x[.., :width]) * x[.., width:]` for `x` [.., 2 * width] (the fused gate/up GEMM
/// output, gate first) and `out` [.., width].
pub fn swiglu_fused(gpu: &Gpu, x: &View, out: &mut ViewMut) -> Result<()> {
    swiglu_fused_with_path(gpu, x, out, Path::Auto)
}

pub fn swiglu_fused_with_path(gpu: &Gpu, x: &View, out: &mut ViewMut, path: Path) -> Result<()> {
    let (rows, width) = check_fused(x.layout())?;
    check_out(FUSED_OP, x.layout(), width, out.layout())?;
    let dtype = x.layout().dtype;
    // `up` starts width elements after `gate`: aligned when the gate pointer is and width is whole vectors.
    let up_offset = x.byte_offset() + width * dtype.size();
    let aligned16 = [x.byte_offset(), up_offset, out.byte_offset()].iter().all(|o| o % 16 == 0);
    let launch = plan(FUSED_OP, dtype, rows, width, [2 * width, 2 * width], aligned16, path)?;
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function(MODULE, launch.kernel)?;
    let up = x.data.slice(width * dtype.size()..);
    let (rows_i, width_i, stride) = (rows as i64, width as i32, 2 * width as i64);
    let mut args = gpu.launcher(&f, launch.kernel);
    args.arg(&x.data).arg(&up).arg(&mut out.data).arg(&rows_i).arg(&width_i).arg(&stride).arg(&stride);
    // SAFETY: x holds rows * 2 * width elements; gate item (r, c) is x[r * 2w + c] and up item
    // x[w + r * 2w + c], c < w, both inside x; out holds rows * width elements (checked above).
    unsafe { args.launch(config(&launch)) }?;
    Ok(())
}

fn config(launch: &Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: (launch.grid, 1, 1), block_dim: (launch.threads, 1, 1), shared_mem_bytes: 0 }
}
