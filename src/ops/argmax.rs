//! Argmax over the first `n_valid` entries of each row of logits [rows, stride] (the real
//! vocabulary of a padded lm_head), ties to the lowest index (torch.argmax), NaN rows reported.
//!
//! The kernel comes with its wrapper; today this file holds the validation shared with the CPU
//! reference (`reference::argmax`).

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "argmax";

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
