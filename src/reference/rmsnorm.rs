//! Qwen2RMSNorm and the decoder layer's residual add before it, on the CPU.
//!
//! ```python
//! input_dtype = hidden_states.dtype
//! hidden_states = hidden_states.to(torch.float32)
//! variance = hidden_states.pow(2).mean(-1, keepdim=True)
//! hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
//! return self.weight * hidden_states.to(input_dtype)
//! ```
//! The sum of squares is accumulated in f64 (each f32 square is exact there): the value every FP32
//! reduction order approximates, so the kernel's error against it is its own. 1/rms is the
//! kernel's (`cuda/rmsnorm.cuh`): 1 / sqrt(sum / hidden + eps) in f64, rounded once to f32, where
//! PyTorch rounds the mean, the epsilon add, the square root and the division in FP32.
//!
//! Overflow: a row whose FP32 sum of squares passes f32's range comes out as zeros, as in
//! PyTorch; [`crate::spec::rmsnorm`] gives the contract and its boundary, which
//! [`mean_of_squares`] implements.

use crate::error::Result;
pub use crate::spec::rmsnorm::SUM_OF_SQUARES_OVERFLOW;
use crate::spec::rmsnorm::{check, check_same, FUSED_OP, OP};
use crate::tensor::HostTensor;

/// `pow(2).mean(-1)` in FP32: +inf when the sum of squares overflows f32 (`crate::spec::rmsnorm`).
pub fn mean_of_squares(x: &[f32]) -> f32 {
    let sum_sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    if (sum_sq as f32).is_infinite() {
        return f32::INFINITY; // the FP32 sum overflowed: mean = inf / n = inf
    }
    (sum_sq / x.len() as f64) as f32
}

/// `rsqrt(mean(x^2) + eps)` as the kernels compute it: in f64 from the sum of squares, rounded
/// once to f32; 0 when the FP32 sum of squares overflows (`rsqrt(inf)`, `crate::spec::rmsnorm`).
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum_sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    if (sum_sq as f32).is_infinite() {
        return 0.0;
    }
    (1.0 / (sum_sq / x.len() as f64 + eps as f64).sqrt()) as f32
}

/// One row: `w * T(x * rsqrt(mean(x^2) + eps))`, appended to `out`.
fn normalize_row(x: &[f32], w: &[f32], eps: f32, dtype: crate::DType, out: &mut Vec<f32>) {
    let inv = inv_rms(x, eps); // torch.rsqrt(variance + eps), rounded once
    for (&xi, &wi) in x.iter().zip(w) {
        let normed = dtype.round(xi * inv); // hidden_states.to(input_dtype)
        out.push(dtype.round(wi * normed)); // self.weight * (...), in the input dtype
    }
}

/// `weight * rmsnorm(x)`; x \[.., hidden\], weight \[hidden\].
pub fn rmsnorm(x: &HostTensor, weight: &HostTensor, eps: f32) -> Result<HostTensor> {
    let dims = check(OP, x.layout(), weight.layout(), eps)?;
    let mut out = Vec::with_capacity(x.data().len());
    for row in x.data().chunks_exact(dims.hidden) {
        normalize_row(row, weight.data(), eps, x.dtype(), &mut out);
    }
    HostTensor::from_f32(x.dtype(), x.dims(), out)
}

/// `residual + hidden_states` in the storage dtype (the decoder layer's two residual adds).
pub fn residual_add(x: &HostTensor, residual: &HostTensor) -> Result<HostTensor> {
    check_same(FUSED_OP, "residual", x.layout(), residual.layout())?;
    let dtype = x.dtype();
    let sum = x.data().iter().zip(residual.data()).map(|(&a, &b)| dtype.round(b + a)).collect();
    HostTensor::from_f32(dtype, x.dims(), sum)
}

/// Returns `(residual_out, y)`: `residual_out = T(x + residual)` (`residual + hidden_states` in the
/// decoder layer), `y = weight * rmsnorm(residual_out)`.
pub fn add_rmsnorm(x: &HostTensor, residual: &HostTensor, weight: &HostTensor, eps: f32) -> Result<(HostTensor, HostTensor)> {
    let dims = check(FUSED_OP, x.layout(), weight.layout(), eps)?;
    let sum = residual_add(x, residual)?;
    let mut out = Vec::with_capacity(sum.data().len());
    for row in sum.data().chunks_exact(dims.hidden) {
        normalize_row(row, weight.data(), eps, x.dtype(), &mut out);
    }
    let y = HostTensor::from_f32(x.dtype(), x.dims(), out)?;
    Ok((sum, y))
}

/// A case whose answer was worked out by hand (derivations beside each), for checking the reference.
pub struct KnownAnswer {
    pub name: &'static str,
    pub dtype: crate::DType,
    pub x: Vec<f32>,
    /// `Some` for the fused add + RMSNorm.
    pub residual: Option<Vec<f32>>,
    pub weight: Vec<f32>,
    pub eps: f32,
    /// For the fused op, the expected residual sum.
    pub expected_residual: Option<Vec<f32>>,
    pub expected: Vec<f32>,
}

/// Hand-computed cases: each exposes one part of the formula (mean of squares, eps, weight,
/// double rounding, rounding of the residual sum).
pub fn known_answers() -> Vec<KnownAnswer> {
    use crate::DType::{BF16, F32};
    let case = |name, dtype, x: &[f32], weight: &[f32], eps, expected: &[f32]| KnownAnswer {
        name,
        dtype,
        x: x.to_vec(),
        residual: None,
        weight: weight.to_vec(),
        eps,
        expected_residual: None,
        expected: expected.to_vec(),
    };
    let s = 12.5f64.sqrt();
    vec![
        // mean(9, 16) = 12.5; y = x / sqrt(12.5).
        case("3-4-5", F32, &[3.0, 4.0], &[1.0, 1.0], 0.0, &[(3.0 / s) as f32, (4.0 / s) as f32]),
        // mean = 1, inv = 1: y = w (each element of the weight reaches its own column).
        case("weight", F32, &[1.0, -1.0, 1.0, -1.0], &[0.5, 2.0, -1.0, 0.0], 0.0, &[0.5, -2.0, -1.0, -0.0]),
        // mean(4) = 4, inv = 0.5.
        case("halves", F32, &[2.0, -2.0, 2.0, -2.0], &[1.0; 4], 0.0, &[1.0, -1.0, 1.0, -1.0]),
        // mean 0: eps keeps rsqrt finite, y = 0 rather than NaN.
        case("zeros+eps", F32, &[0.0; 3], &[1.0; 3], 1e-6, &[0.0; 3]),
        // eps = 3 with mean 1: inv = 1/sqrt(4) = 0.5.
        case("eps", F32, &[1.0, 1.0], &[1.0, 1.0], 3.0, &[0.5, 0.5]),
        // bf16 double rounding: x * inv = [0.63245553, 1.26491106] -> bf16 [0.6328125, 1.265625];
        // times 1.015625 = [0.64270020, 1.28540039] -> bf16 [0.64453125, 1.2890625].
        // Rounding once (w * x * inv -> bf16) would give [0.640625, 1.28125].
        case("bf16-double-rounding", BF16, &[1.0, 2.0], &[1.015625, 1.015625], 0.0, &[0.64453125, 1.2890625]),
        // Fused: r = x + residual = [3, 4], then the 3-4-5 case.
        KnownAnswer {
            name: "fused-3-4-5",
            dtype: F32,
            x: vec![1.0, 2.0],
            residual: Some(vec![2.0, 2.0]),
            weight: vec![1.0, 1.0],
            eps: 0.0,
            expected_residual: Some(vec![3.0, 4.0]),
            expected: vec![(3.0 / s) as f32, (4.0 / s) as f32],
        },
        // Fused, bf16: 256 + 1 = 257 lies halfway between bf16 256 and 258: ties to even -> 256.
        // The row [256, 256] has mean 65536, inv 1/256: y = [1, 1].
        KnownAnswer {
            name: "fused-bf16-sum-rounding",
            dtype: BF16,
            x: vec![256.0, 255.0],
            residual: Some(vec![1.0, 1.0]),
            weight: vec![1.0, 1.0],
            eps: 0.0,
            expected_residual: Some(vec![256.0, 256.0]),
            expected: vec![1.0, 1.0],
        },
    ]
}
