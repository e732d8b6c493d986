//! Rotary position embedding (half-split "neox" layout) on q [T, heads, head_dim] and
//! k [T, kv_heads, head_dim], positions per token.
//!
//! The kernel comes with its wrapper; today this file holds the validation shared with the CPU
//! reference (`reference::rope`).

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "rope";

/// Tokens, heads and head_dim of a validated RoPE input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeDims {
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// Validate `x` [T, heads, head_dim] and its positions: one per token, each in
/// 0..max_positions; head_dim even and non-zero; theta finite and > 1.
pub fn check(x: Layout, positions: &[i32], max_positions: usize, theta: f32) -> Result<RopeDims> {
    let [tokens, heads, head_dim] = x.shape.dims() else {
        return Err(Error::shape(OP, format!("x must be [tokens, heads, head_dim], got {x}")));
    };
    if *head_dim == 0 || head_dim % 2 != 0 || *heads == 0 {
        return Err(Error::shape(OP, format!("head_dim must be even and heads non-zero, got {x}")));
    }
    if positions.len() != *tokens {
        return Err(Error::shape(OP, format!("{} positions for {tokens} tokens", positions.len())));
    }
    if let Some((i, &p)) = positions.iter().enumerate().find(|(_, &p)| p < 0 || p as usize >= max_positions) {
        return Err(Error::invalid(OP, format!("position {p} of token {i} is outside 0..{max_positions}")));
    }
    if !(theta.is_finite() && theta > 1.0) {
        return Err(Error::invalid(OP, format!("rope theta must be finite and > 1, got {theta}")));
    }
    Ok(RopeDims { tokens: *tokens, heads: *heads, head_dim: *head_dim })
}
