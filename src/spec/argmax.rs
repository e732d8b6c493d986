//! Argmax over the first `n_valid` entries of each row of logits [rows, stride] (the real
//! vocabulary of a padded lm_head): `torch.argmax(logits[:, :n_valid], dim=-1)`, ties to the lowest
//! index. A row holding a NaN among its valid entries has no answer and says so ([`RowMax`] `None`),
//! never an arbitrary index.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "argmax";

/// The winning index and value of one row, or `None` if the row's valid part holds a NaN.
pub type RowMax = Option<(u32, f32)>;

/// Validate logits [rows, stride] and `n_valid` in 1..=stride; returns (rows, stride).
pub fn check(logits: Layout, n_valid: usize) -> Result<(usize, usize)> {
    let [rows, stride] = *logits.shape.dims() else {
        return Err(Error::shape(OP, format!("logits must be [rows, stride], got {logits}")));
    };
    if n_valid == 0 || n_valid > stride {
        return Err(Error::invalid(OP, format!("n_valid {n_valid} must be in 1..={stride}")));
    }
    if n_valid > u32::MAX as usize {
        return Err(Error::unsupported(OP, format!("n_valid {n_valid} > {}", u32::MAX)));
    }
    Ok((rows, stride))
}
