//! GQA attention with FP32 logits and softmax: validation, the scale, and the contract's error
//! bound.
//!
//! q [T, heads, D] against k, v [S, kv_heads, D]; query t sits at position S - T + t and sees keys
//! 0 ..= that position (causal; chunked prefill when T < S). kv_head = q_head / (heads / kv_heads).
//! transformers' eager path computes `matmul(q, k^T)` in the storage dtype (FP16 overflows there);
//! the crate's contract keeps every intermediate in FP32 and rounds once at the end:
//! ```text
//! logit[s] = f32(sum_i q_i k_si) * softmax_scale(D)       for s <= position(t)
//! p[s]     = exp(logit[s] - max) / sum_s exp(...)          FP32
//! o_d      = T(sum_s p[s] v_sd)                            FP32 accumulation, one rounding
//! ```
//! Decode reads k and v from the KV cache ([`crate::spec::kv_cache`]) instead.

use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Layout};

pub const OP: &str = "attention";
pub const DECODE_OP: &str = "attention_decode";

/// D^-0.5 rounded once to FP32 (transformers: `self.head_dim ** -0.5`).
pub fn softmax_scale(head_dim: usize) -> f32 {
    (head_dim as f64).powf(-0.5) as f32
}

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

/// Per output element, the scale of FP32 attention's absolute error, in units of u32 (2^-24):
/// with L the largest scaled |logit| bound of the row (sum_i |q_i k_si| / sqrt(D)) and V_d the
/// largest |v_sd| over visible keys, logits err by at most (D + 2) u32 L, the softmax turns that
/// into at most twice as much relative error in each p (plus (S + 8) u32 for exp, sum, divide),
/// and p v adds (S + 2) u32 V_d: |error| <= u32 V_d (2 (D + 2) L + 3 S + 12).
pub fn error_scale(q: &HostTensor, k: &HostTensor, v: &HostTensor) -> Result<Vec<f32>> {
    let d = check(q.layout(), k.layout(), v.layout())?;
    let scale = (d.head_dim as f64).powf(-0.5);
    let kv_row = d.kv_heads * d.head_dim;
    let (qd, kd, vd) = (q.data(), k.data(), v.data());
    let mut out = Vec::with_capacity(qd.len());
    for t in 0..d.tokens {
        let visible = d.context - d.tokens + t + 1;
        for h in 0..d.heads {
            let kvh = h / d.group();
            let qv = &qd[(t * d.heads + h) * d.head_dim..][..d.head_dim];
            let l = (0..visible)
                .map(|s| {
                    let kv = &kd[s * kv_row + kvh * d.head_dim..][..d.head_dim];
                    qv.iter().zip(kv).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum::<f64>() * scale
                })
                .fold(0f64, f64::max);
            for i in 0..d.head_dim {
                let v_max = (0..visible).map(|s| vd[s * kv_row + kvh * d.head_dim + i].abs() as f64).fold(0f64, f64::max);
                let factor = 2.0 * (d.head_dim as f64 + 2.0) * l + 3.0 * visible as f64 + 12.0;
                out.push((v_max * factor) as f32);
            }
        }
    }
    Ok(out)
}
