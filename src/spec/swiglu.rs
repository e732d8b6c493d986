//! SwiGLU, `out = silu(gate) * up` (Qwen2MLP's `act_fn(gate_proj(x)) * up_proj(x)`): validation.
//!
//! ```text
//! swiglu:        gate [.., width], up [.., width]  -> out [.., width]
//! swiglu_fused:  x [.., 2 * width] = [gate | up]   -> out [.., width]   (a fused gate/up GEMM's output)
//! ```
//! SiLU in FP32, rounded to the storage dtype, times `up`, rounded again.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "swiglu";
pub const FUSED_OP: &str = "swiglu_fused";

/// Validate `gate` and `up` (same dtype and shape, rank >= 1); returns the element count.
pub fn check(gate: Layout, up: Layout) -> Result<usize> {
    if up.dtype != gate.dtype {
        return Err(Error::dtype(OP, format!("up is {} but gate is {}", up.dtype, gate.dtype)));
    }
    if up.shape != gate.shape {
        return Err(Error::shape(OP, format!("up {up} must match gate {gate}")));
    }
    if gate.shape.rank() == 0 || gate.shape.last() == 0 {
        return Err(Error::shape(OP, format!("empty rows: gate {gate}")));
    }
    Ok(gate.numel())
}

/// Validate a fused `x` [.., 2 * width] (gate in the first half of each row, up in the second);
/// returns (rows, width).
pub fn check_fused(x: Layout) -> Result<(usize, usize)> {
    if x.shape.rank() == 0 || x.shape.last() == 0 {
        return Err(Error::shape(FUSED_OP, format!("x must be [.., 2 * width] with width > 0, got {x}")));
    }
    let last = x.shape.last();
    if last % 2 != 0 {
        return Err(Error::shape(FUSED_OP, format!("x {x}: last dimension {last} is not 2 * width")));
    }
    Ok((x.numel() / last, last / 2))
}
