//! GQA attention with FP32 logits and softmax: q [T, heads, head_dim] against k, v
//! [S, kv_heads, head_dim]; query t sits at position S - T + t and sees keys 0 ..= that position.
//! kv_head = q_head / (heads / kv_heads).
//!
//! The kernels come with their wrappers; today this file holds the validation shared with the CPU
//! reference (`reference::attention`).

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "attention";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// New tokens (queries).
    pub tokens: usize,
    /// Context length: cached plus new tokens (keys).
    pub context: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionDims {
    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Validate q [T, heads, D], k and v [S, kv_heads, D] with T <= S, heads a multiple of kv_heads.
pub fn check(q: Layout, k: Layout, v: Layout) -> Result<AttentionDims> {
    let [tokens, heads, head_dim] = *q.shape.dims() else {
        return Err(Error::shape(OP, format!("q must be [tokens, heads, head_dim], got {q}")));
    };
    let [context, kv_heads, k_dim] = *k.shape.dims() else {
        return Err(Error::shape(OP, format!("k must be [context, kv_heads, head_dim], got {k}")));
    };
    if v.shape != k.shape {
        return Err(Error::shape(OP, format!("v {v} must match k {k}")));
    }
    if k.dtype != q.dtype || v.dtype != q.dtype {
        return Err(Error::dtype(OP, format!("q {}, k {}, v {} must share one dtype", q.dtype, k.dtype, v.dtype)));
    }
    if k_dim != head_dim || head_dim == 0 {
        return Err(Error::shape(OP, format!("head_dim of q {q} and k {k} differ or are 0")));
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(Error::shape(OP, format!("{heads} query heads are not a multiple of {kv_heads} kv heads")));
    }
    if tokens > context {
        return Err(Error::shape(OP, format!("{tokens} new tokens but a context of only {context}")));
    }
    Ok(AttentionDims { tokens, context, heads, kv_heads, head_dim })
}
