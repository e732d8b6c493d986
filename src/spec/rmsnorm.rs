//! RMSNorm and the fused residual-add + RMSNorm: validation and the overflow contract.
//!
//! ```text
//! rmsnorm:      y = w * T(x * rsqrt(mean(x^2) + eps))                 x, y [.., hidden], w [hidden]
//! add_rmsnorm:  residual = T(x + residual); y = rmsnorm(residual)      residual updated in place
//! ```
//! with the sum of squares in FP32 (PyTorch's, and its overflow), rsqrt(mean + eps) computed from
//! that sum in FP64 and rounded once to FP32 (PyTorch rounds the mean, the epsilon add, the square
//! root and the division in FP32: four errors common to the whole row, which made our f32 rows
//! less accurate than PyTorch's against a float64 truth), the products in FP32, and T(.) rounding
//! to the storage dtype exactly where transformers' Qwen2RMSNorm rounds. All leading dimensions are rows; zero rows are valid (nothing
//! to do), a zero-width row is not.
//!
//! # Overflow: PyTorch's FP32 sum, not a scaled one
//!
//! `pow(2).mean(-1)` sums the squares in an FP32 accumulator (CPU: sum, then divide; CUDA: sum
//! times 1/n). When the sum of squares passes f32's range it is +inf, the mean is +inf,
//! `rsqrt(inf + eps)` is 0 and the row comes out as zeros (`w * T(x * 0)`, signs kept); a row
//! holding an inf gives `inf * 0 = NaN`. That is what transformers computes at every storage
//! dtype, and the rounding contract (round and overflow where PyTorch does) makes it ours: the
//! kernel and the reference both give zero rows. A scaled sum (divide by the row's max first)
//! would stay finite, but would then disagree with PyTorch on exactly these rows, and no real
//! activation comes near: the threshold is an RMS of sqrt(f32::MAX / hidden), about 4.7e17 at
//! hidden 1536, where the largest activations of these models are about 8e3. f16 cannot reach
//! it (its maximum squares to 4.3e9); bf16 and f32 can.
//!
//! The boundary is the f64 sum rounded once to f32, [`SUM_OF_SQUARES_OVERFLOW`] = 2^128 - 2^103
//! (f32::MAX plus half an ulp; ties go to the even 2^128, which is inf): below it the mean is
//! finite, at or above it the row is zeros. An FP32 reduction in another order rounds its partial
//! sums differently, so a row whose sum lies within that rounding error of the threshold (a
//! relative 1e-4 at hidden 1536) may fall on either side in the kernel; the tests use rows whose
//! every partial sum is exact.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "rmsnorm";
pub const FUSED_OP: &str = "add_rmsnorm";

/// The smallest sum of squares an FP32 accumulator cannot hold: 2^128 - 2^103, halfway between
/// f32::MAX (2^128 - 2^104) and 2^128. A sum at or above it rounds to +inf.
pub const SUM_OF_SQUARES_OVERFLOW: f64 = f32::MAX as f64 + (1u128 << 103) as f64;

/// Rows and row width of a validated RMSNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub rows: usize,
    pub hidden: usize,
}

/// Validate `x` \[.., hidden\], `weight` \[hidden\] and `eps`.
pub fn check(op: &'static str, x: Layout, weight: Layout, eps: f32) -> Result<Dims> {
    if x.shape.rank() == 0 {
        return Err(Error::shape(op, format!("x must have rank >= 1, got {x}")));
    }
    let hidden = x.shape.last();
    if hidden == 0 {
        return Err(Error::shape(op, format!("empty rows: hidden size 0 in x {x}")));
    }
    if weight.shape.dims() != [hidden] {
        return Err(Error::shape(op, format!("weight {weight} must be [{hidden}] for x {x}")));
    }
    if weight.dtype != x.dtype {
        return Err(Error::dtype(op, format!("weight is {} but x is {}", weight.dtype, x.dtype)));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(op, format!("eps must be finite and >= 0, got {eps}")));
    }
    Ok(Dims { rows: x.numel() / hidden, hidden })
}

/// Validate an operand that must have exactly `x`'s layout (output, residual).
pub fn check_same(op: &'static str, what: &str, x: Layout, other: Layout) -> Result<()> {
    if other.dtype != x.dtype {
        return Err(Error::dtype(op, format!("{what} is {} but x is {}", other.dtype, x.dtype)));
    }
    if other.shape != x.shape {
        return Err(Error::shape(op, format!("{what} {other} must match x {x}")));
    }
    Ok(())
}
