//! GQA attention with FP32 logits and softmax, on the CPU: the crate's attention contract.
//!
//! transformers' eager path (eager_attention_forward) computes `matmul(q, k^T)` in the storage
//! dtype (rounded, unscaled: FP16 overflows there), scales, adds the mask, softmaxes in FP32, casts
//! back and multiplies by v in the storage dtype. This reference keeps every intermediate in FP32
//! instead, as our kernels do, rounding once at the end:
//! ```text
//! logit[s] = f32(sum_i q_i k_si) * head_dim^-0.5          for s <= position(t)   (sum exact in f64)
//! p[s]     = exp(logit[s] - max) / sum_s exp(...)          (FP32; the sum exact in f64)
//! o_d      = T(f32(sum_s p[s] v_sd))
//! ```

use crate::error::Result;
pub use crate::spec::attention::error_scale;
use crate::spec::attention::{check, softmax_scale};
use crate::tensor::HostTensor;

/// o [T, heads, head_dim] of q [T, heads, D] against k, v [S, kv_heads, D], causal.
pub fn attention(q: &HostTensor, k: &HostTensor, v: &HostTensor) -> Result<HostTensor> {
    let dtype = q.dtype();
    let out = attention_unrounded(q, k, v)?;
    HostTensor::from_f32(dtype, q.dims(), out.iter().map(|&o| dtype.round(o as f32)).collect())
}

/// The same output before its final rounding to the storage dtype (f64, flattened [T, heads, D]).
/// Compare a kernel's rounded output with this, not with [`attention`]: two independently rounded
/// values of one number near a rounding midpoint differ by a whole ulp, twice the kernel's own
/// rounding error.
pub fn attention_unrounded(q: &HostTensor, k: &HostTensor, v: &HostTensor) -> Result<Vec<f64>> {
    let d = check(q.layout(), k.layout(), v.layout())?;
    let scale = softmax_scale(d.head_dim);
    let (qd, kd, vd) = (q.data(), k.data(), v.data());
    let kv_row = d.kv_heads * d.head_dim;
    let mut out = Vec::with_capacity(qd.len());
    let mut logits = vec![0f32; d.context];
    for t in 0..d.tokens {
        let visible = d.context - d.tokens + t + 1;
        for h in 0..d.heads {
            let kvh = h / d.group();
            let qv = &qd[(t * d.heads + h) * d.head_dim..][..d.head_dim];
            for (s, l) in logits[..visible].iter_mut().enumerate() {
                let kv = &kd[s * kv_row + kvh * d.head_dim..][..d.head_dim];
                let dot: f64 = qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum();
                *l = dot as f32 * scale;
            }
            let max = logits[..visible].iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
            for l in &mut logits[..visible] {
                *l = (*l - max).exp();
            }
            let sum = logits[..visible].iter().map(|&e| e as f64).sum::<f64>() as f32;
            for i in 0..d.head_dim {
                let acc: f64 = (0..visible).map(|s| (logits[s] / sum) as f64 * vd[s * kv_row + kvh * d.head_dim + i] as f64).sum();
                out.push(acc);
            }
        }
    }
    Ok(out)
}
