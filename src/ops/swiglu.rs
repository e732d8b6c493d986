//! SwiGLU, `out = silu(gate) * up` (Qwen2MLP's `act_fn(gate_proj(x)) * up_proj(x)`).
//!
//! The kernel comes with its wrapper; today this file holds the validation shared with the CPU
//! reference (`reference::swiglu`).

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "swiglu";

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
