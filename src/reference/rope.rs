//! Qwen2RotaryEmbedding + apply_rotary_pos_emb, on the CPU.
//!
//! ```python
//! inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))   # FP32
//! freqs = (inv_freq[None, :, None] @ position_ids[:, None, :].float()).transpose(1, 2)  # FP32
//! emb = torch.cat((freqs, freqs), dim=-1); cos, sin = emb.cos(), emb.sin()       # FP32
//! return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)
//! q_embed = (q * cos) + (rotate_half(q) * sin)          # in the activation dtype
//! rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])
//! ```
//! The angle is the FP32 product position * inv_freq (exactly rounded), cos/sin in FP32 by the
//! platform's correctly rounded-or-nearly cosf/sinf (no fast-math), rounded to the dtype, then the
//! three roundings of the two products and their sum.

use crate::error::Result;
pub use crate::spec::rope::inv_freq;
use crate::spec::rope::check;
use crate::tensor::HostTensor;

/// cos and sin [T, head_dim] in FP32 (emb = cat(freqs, freqs)).
pub fn cos_sin(positions: &[i32], inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * 2 * half);
    let mut sin = Vec::with_capacity(positions.len() * 2 * half);
    for &p in positions {
        for _ in 0..2 {
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

/// RoPE of `x` [T, heads, head_dim] at `positions` (one per token).
pub fn rope(x: &HostTensor, positions: &[i32], theta: f32, max_positions: usize) -> Result<HostTensor> {
    let d = check(x.layout(), positions, max_positions, theta)?;
    let dtype = x.dtype();
    let (cos, sin) = cos_sin(positions, &inv_freq(theta, d.head_dim));
    let half = d.head_dim / 2;
    let mut out = Vec::with_capacity(x.data().len());
    for (t, token) in x.data().chunks_exact(d.heads * d.head_dim).enumerate() {
        let cs = &cos[t * d.head_dim..(t + 1) * d.head_dim];
        let sn = &sin[t * d.head_dim..(t + 1) * d.head_dim];
        for head in token.chunks_exact(d.head_dim) {
            for i in 0..d.head_dim {
                let rotated = if i < half { -head[i + half] } else { head[i - half] };
                let a = dtype.round(head[i] * dtype.round(cs[i]));
                let b = dtype.round(rotated * dtype.round(sn[i]));
                out.push(dtype.round(a + b));
            }
        }
    }
    HostTensor::from_f32(dtype, x.dims(), out)
}

/// |x_i| + |x_partner(i)| per element: the scale of RoPE's absolute rounding error.
pub fn error_scale(x: &HostTensor) -> Vec<f32> {
    let head_dim = *x.dims().last().unwrap_or(&1);
    let half = head_dim / 2;
    x.data()
        .chunks_exact(head_dim.max(1))
        .flat_map(|head| (0..head_dim).map(move |i| head[i].abs() + head[(i + half) % head_dim].abs()))
        .collect()
}
