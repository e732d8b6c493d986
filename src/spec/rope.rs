//! Rotary position embedding (Qwen2RotaryEmbedding + apply_rotary_pos_emb, the half-split "neox"
//! layout) on q [T, heads, head_dim] and k [T, kv_heads, head_dim], one position per token:
//! validation and the inv_freq table.
//!
//! ```text
//! inv_freq[i] = 1 / theta^(2i / head_dim)                 FP32, i < head_dim / 2
//! angle       = f32(position) * inv_freq[i]               FP32
//! x'[i]       = T(T(x[i] cos) + T(rotate_half(x)[i] sin)) cos, sin of the FP32 angle, rounded to T
//! rope_kv:    k rotated and written, with v, to k_cache[slot, h, position, :] (crate::spec::kv_cache)
//! ```
//!
//! inv_freq is one table that every implementation reads ([`inv_freq`]), rather than each
//! computing `powf` itself: CUDA's powf and the host's may differ by an ulp, which moves an angle of
//! 3e4 rad by ~2e-3 rad at late positions; one table makes the kernel and the CPU reference agree
//! exactly on every angle.

use crate::error::{Error, Result};
use crate::spec::kv_cache::{self, KvCacheDims, KvLayout};
use crate::tensor::Layout;

pub const OP: &str = "rope";
pub const KV_OP: &str = "rope_kv";

/// 1 / theta^(2i / head_dim) for i in 0..head_dim/2, in FP32.
pub fn inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0f32 / theta.powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// Validate rope theta: finite and > 1 (the angles shrink with the dimension).
pub fn check_theta(theta: f32) -> Result<()> {
    if !(theta.is_finite() && theta > 1.0) {
        return Err(Error::invalid(OP, format!("rope theta must be finite and > 1, got {theta}")));
    }
    Ok(())
}

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
    check_theta(theta)?;
    Ok(RopeDims { tokens: *tokens, heads: *heads, head_dim: *head_dim })
}

/// Validate q [T, heads, d] and k [T, kv_heads, d] for a table of `head_dim`: same dtype, tokens
/// and head_dim, heads a multiple of kv_heads (GQA); `positions` holds one entry per token.
pub fn check_qk(op: &'static str, q: Layout, k: Layout, head_dim: usize, positions: usize) -> Result<RopeDims> {
    let [tokens, heads, d] = *q.shape.dims() else {
        return Err(Error::shape(op, format!("q must be [tokens, heads, head_dim], got {q}")));
    };
    let [k_tokens, kv_heads, k_d] = *k.shape.dims() else {
        return Err(Error::shape(op, format!("k must be [tokens, kv_heads, head_dim], got {k}")));
    };
    if k.dtype != q.dtype {
        return Err(Error::dtype(op, format!("k is {} but q is {}", k.dtype, q.dtype)));
    }
    if k_tokens != tokens || k_d != d {
        return Err(Error::shape(op, format!("k {k} must have q's tokens and head_dim (q {q})")));
    }
    if d != head_dim {
        return Err(Error::shape(op, format!("head_dim {d} of q {q} but the rope table is for head_dim {head_dim}")));
    }
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(Error::shape(op, format!("heads {heads} must be a non-zero multiple of kv_heads {kv_heads}")));
    }
    if positions != tokens {
        return Err(Error::shape(op, format!("{positions} positions for {tokens} tokens")));
    }
    if tokens > i32::MAX as usize || heads + kv_heads > i32::MAX as usize {
        return Err(Error::unsupported(op, format!("tokens {tokens} or heads {heads} + {kv_heads} past i32")));
    }
    Ok(RopeDims { tokens, heads, head_dim })
}

/// Validate v against k, the slot mapping's length and the caches against q/k (dtype, kv_heads,
/// head_dim); returns the cache's dimensions. The caches' own shape is [`kv_cache::check`]'s.
pub fn check_kv(q: Layout, k: Layout, v: Layout, slot_mapping: usize, k_cache: Layout, v_cache: Layout, layout: KvLayout) -> Result<KvCacheDims> {
    if v.dtype != k.dtype {
        return Err(Error::dtype(KV_OP, format!("v is {} but k is {}", v.dtype, k.dtype)));
    }
    if v.shape != k.shape {
        return Err(Error::shape(KV_OP, format!("v {v} must match k {k}")));
    }
    let [tokens, kv_heads, d] = *k.shape.dims() else {
        return Err(Error::shape(KV_OP, format!("k must be [tokens, kv_heads, head_dim], got {k}")));
    };
    if slot_mapping != tokens {
        return Err(Error::shape(KV_OP, format!("a slot mapping of {slot_mapping} for {tokens} tokens")));
    }
    let cache = kv_cache::check(KV_OP, k_cache, v_cache, layout)?;
    if k_cache.dtype != q.dtype {
        return Err(Error::dtype(KV_OP, format!("the cache is {} but q is {}", k_cache.dtype, q.dtype)));
    }
    if cache.kv_heads != kv_heads || cache.head_dim != d {
        return Err(Error::shape(KV_OP, format!("{} cache {k_cache} must have k's kv_heads {kv_heads} and head_dim {d}", layout.name())));
    }
    Ok(cache)
}
