//! Qwen2RMSNorm and the decoder layer's residual add before it, on the CPU.
//!
//! ```python
//! input_dtype = hidden_states.dtype
//! hidden_states = hidden_states.to(torch.float32)
//! variance = hidden_states.pow(2).mean(-1, keepdim=True)
//! hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
//! return self.weight * hidden_states.to(input_dtype)
//! ```
//! The mean is accumulated in f64 (each f32 square is exact there) and rounded once to f32: the
//! value every FP32 reduction order approximates, so the kernel's error against it is its own.

use crate::error::Result;
use crate::ops::rmsnorm::{check, check_same, FUSED_OP, OP};
use crate::tensor::HostTensor;

/// One row: `w * T(x * rsqrt(mean(x^2) + eps))`, appended to `out`.
fn normalize_row(x: &[f32], w: &[f32], eps: f32, dtype: crate::DType, out: &mut Vec<f32>) {
    let sum_sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let variance = (sum_sq / x.len() as f64) as f32; // pow(2).mean(-1) in FP32
    let inv = 1.0f32 / (variance + eps).sqrt(); // torch.rsqrt(variance + eps)
    for (&xi, &wi) in x.iter().zip(w) {
        let normed = dtype.round(xi * inv); // hidden_states.to(input_dtype)
        out.push(dtype.round(wi * normed)); // self.weight * (...), in the input dtype
    }
}

/// `weight * rmsnorm(x)`; x [.., hidden], weight [hidden].
pub fn rmsnorm(x: &HostTensor, weight: &HostTensor, eps: f32) -> Result<HostTensor> {
    let dims = check(OP, x.layout(), weight.layout(), eps)?;
    let mut out = Vec::with_capacity(x.data().len());
    for row in x.data().chunks_exact(dims.hidden) {
        normalize_row(row, weight.data(), eps, x.dtype(), &mut out);
    }
    HostTensor::from_f32(x.dtype(), x.dims(), out)
}

/// Returns `(residual_out, y)`: `residual_out = T(x + residual)` (`residual + hidden_states` in the
/// decoder layer), `y = weight * rmsnorm(residual_out)`.
pub fn add_rmsnorm(x: &HostTensor, residual: &HostTensor, weight: &HostTensor, eps: f32) -> Result<(HostTensor, HostTensor)> {
    let dims = check(FUSED_OP, x.layout(), weight.layout(), eps)?;
    check_same(FUSED_OP, "residual", x.layout(), residual.layout())?;
    let dtype = x.dtype();
    let sum: Vec<f32> = x.data().iter().zip(residual.data()).map(|(&a, &b)| dtype.round(b + a)).collect();
    let mut out = Vec::with_capacity(sum.len());
    for row in sum.chunks_exact(dims.hidden) {
        normalize_row(row, weight.data(), eps, dtype, &mut out);
    }
    Ok((HostTensor::from_f32(dtype, x.dims(), sum)?, HostTensor::from_f32(dtype, x.dims(), out)?))
}
