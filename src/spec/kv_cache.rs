//! The KV cache layout, shared by the RoPE cache write (`ops::rope`) and decode attention
//! (`ops::attention`). Documented here, once.
//!
//! One layer's cache is two tensors of one storage dtype, `k_cache` and `v_cache`, each
//!
//! ```text
//! [slots, kv_heads, capacity, head_dim]      row-major, head_dim fastest
//! ```
//!
//! A *slot* holds one sequence. The key of the token at position `p` of the sequence in slot `s`,
//! KV head `h`, lives at `k_cache[s, h, p, :]` (already rotated by RoPE); its value at
//! `v_cache[s, h, p, :]`. Positions `0..len` of a slot are valid, where `len` is that sequence's
//! current length, kept by the caller (an engine's scheduler), never by the crate.
//!
//! Why this order: decode reads, for one (slot, KV head), the keys of every position once for the
//! whole query group; with positions next to each other those reads are one contiguous run of
//! `len * head_dim` elements, which is what the memory system serves fastest. Prefill writes one
//! position of every head per token, `head_dim` contiguous elements each (256 bytes for bf16 at
//! head_dim 128), which is still whole cache lines.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "kv_cache";

/// The dimensions of a validated cache pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheDims {
    /// Sequences the cache can hold at once.
    pub slots: usize,
    pub kv_heads: usize,
    /// Positions per slot (at most the model's max positions).
    pub capacity: usize,
    pub head_dim: usize,
}

impl KvCacheDims {
    /// Element offset of `[slot, head, pos, 0]`.
    pub fn offset(&self, slot: usize, head: usize, pos: usize) -> usize {
        ((slot * self.kv_heads + head) * self.capacity + pos) * self.head_dim
    }
}

/// Validate `k_cache` and `v_cache`: both `[slots, kv_heads, capacity, head_dim]`, same shape and
/// dtype, no dimension 0.
pub fn check(op: &'static str, k_cache: Layout, v_cache: Layout) -> Result<KvCacheDims> {
    let [slots, kv_heads, capacity, head_dim] = *k_cache.shape.dims() else {
        return Err(Error::shape(op, format!("k_cache must be [slots, kv_heads, capacity, head_dim], got {k_cache}")));
    };
    if v_cache.shape != k_cache.shape {
        return Err(Error::shape(op, format!("v_cache {v_cache} must match k_cache {k_cache}")));
    }
    if v_cache.dtype != k_cache.dtype {
        return Err(Error::dtype(op, format!("v_cache is {} but k_cache is {}", v_cache.dtype, k_cache.dtype)));
    }
    if slots == 0 || kv_heads == 0 || capacity == 0 || head_dim == 0 {
        return Err(Error::shape(op, format!("empty cache {k_cache}")));
    }
    Ok(KvCacheDims { slots, kv_heads, capacity, head_dim })
}
