//! Tolerances, each derived from the rounding it allows for. Never tuned to make a check pass.
//!
//! Notation: u32 = 2^-24 (FP32 unit roundoff), eps_T = machine epsilon of the storage dtype T
//! (`DType::epsilon`: 2^-23, 2^-10, 2^-7), tiny_T = the spacing of T's subnormals (2^-149, 2^-24, 2^-133).

use super::metrics::Tolerance;
use crate::DType;

/// Spacing of the subnormals of `dtype`: the absolute error floor of one rounding near zero.
pub fn subnormal_spacing(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => f32::from_bits(1),     // 2^-149
        DType::F16 => 5.960_464_5e-8,        // 2^-24
        DType::BF16 => f32::from_bits(1 << 16), // 2^-133
    }
}

/// RMSNorm kernel against the CPU reference (`reference::rmsnorm`), rows of `hidden` elements.
///
/// Both compute the same formula from the same inputs; they differ in the sum of squares: any FP32
/// order of adding `hidden` non-negative terms is within (hidden - 1) * u32 of the exact sum the
/// reference uses (relative). 1/sqrt halves that; each side computes inv in FP64 and rounds it
/// to FP32 once (u32 each, the FP64 steps' 2^-53 terms inside the slack below); x * inv and
/// w * (.) add 2 roundings more: FP32 outputs agree to ((hidden - 1) / 2 + 4) * u32, used as
///     rtol = ((hidden + 1) / 2 + 4) * u32.
/// In f16/bf16 the intermediate T(x * inv) may then round to the neighbouring value (one eps_T
/// relative), and w * (.) rounded again may land one more step away: rtol = 2 * eps_T plus the FP32
/// part. Near zero each of the two roundings may lose tiny_T / 2: atol = tiny_T.
pub fn rmsnorm_vs_reference(dtype: DType, hidden: usize) -> Tolerance {
    let fp32 = ((hidden as f32 + 1.0) / 2.0 + 4.0) * 2f32.powi(-24);
    let rtol = match dtype {
        DType::F32 => fp32,
        DType::F16 | DType::BF16 => 2.0 * dtype.epsilon() + fp32,
    };
    Tolerance { atol: subnormal_spacing(dtype), rtol }
}

/// Unit roundoff of `dtype`: the largest relative change one rounding to nearest makes (eps / 2).
pub fn unit_roundoff(dtype: DType) -> f32 {
    dtype.epsilon() / 2.0
}

/// How an op's output is rounded, counted from the PyTorch code it mirrors.
#[derive(Clone, Copy, Debug)]
pub struct Roundings {
    /// Roundings to the storage dtype between the inputs and the output, each counted with the
    /// relative error it can carry into the output (one unit roundoff each).
    pub storage: u32,
    /// Length of the longest FP32 reduction feeding the output (0 if none).
    pub fp32_reduction: usize,
    /// Largest factor by which an absolute rounding error near zero is multiplied on its way to the
    /// output (a weight applied after a rounding), at least 1.
    pub gain: f32,
}

/// Tolerance against a float64 truth computed by PyTorch from the same storage-dtype inputs.
///
/// Each of the `storage` roundings changes the output by at most one unit roundoff u_T relative
/// (normal numbers) or tiny_T / 2 absolute near zero, times `gain`; the FP32 arithmetic around a
/// reduction of n terms adds (n / 2 + 4) u32 (see `rmsnorm_vs_reference`). So
///     rtol = storage * u_T + (n / 2 + 4) * u32,   atol = storage * gain * tiny_T / 2.
/// In f32 storage u_T = u32.
pub fn vs_truth(dtype: DType, r: Roundings) -> Tolerance {
    let u32_ = unit_roundoff(DType::F32);
    let rtol = r.storage as f32 * unit_roundoff(dtype) + (r.fp32_reduction as f32 / 2.0 + 4.0) * u32_;
    let atol = r.storage as f32 * r.gain.max(1.0) * subnormal_spacing(dtype) / 2.0;
    Tolerance { atol, rtol }
}

/// The tolerance table against float64 truths: one entry per op output, the roundings counted from
/// the transformers code beside it.
pub mod table {
    use super::{vs_truth, Roundings, Tolerance};
    use crate::DType;

    /// Qwen2RMSNorm: `T(x * inv)` then `T(w * .)`: 2 roundings, the weight multiplies the first;
    /// the mean of squares is an FP32 reduction over the row.
    pub fn rmsnorm(dtype: DType, hidden: usize, max_abs_weight: f32) -> Tolerance {
        vs_truth(dtype, Roundings { storage: 2, fp32_reduction: hidden, gain: max_abs_weight })
    }

    /// nn.Linear (`addmm`): FP32 accumulation of `in_features` products and the bias, one rounding
    /// to the storage dtype. The accumulation's error is bounded by (in_features + 2) u32 times the
    /// sum of |x_k w_k| + |b| (not |y|: products cancel), so that bound's largest value over the
    /// outputs, `max_abs_dot`, sets atol; the final rounding sets rtol.
    pub fn linear(dtype: DType, in_features: usize, max_abs_dot: f32) -> Tolerance {
        let u32_ = super::unit_roundoff(DType::F32);
        let accumulation = (in_features as f32 + 2.0) * u32_ * max_abs_dot;
        Tolerance {
            atol: accumulation + super::subnormal_spacing(dtype) / 2.0,
            rtol: super::unit_roundoff(dtype) + 2.0 * u32_,
        }
    }

    /// `act_fn(gate) * up`: SiLU in FP32, rounded to the dtype, times `up`, rounded again: 2
    /// roundings, the first multiplied by |up|. SiLU = g / (1 + exp(-g)): the exp errs by up to 2
    /// ulp (4 u32) in CUDA's expf (CUDA C Programming Guide, single-precision functions; glibc's
    /// expf: 1 ulp) and the add and divide by 1 u32 each, 6 u32 in all; `vs_truth` carries 4, so 2
    /// more are added.
    pub fn swiglu(dtype: DType, max_abs_up: f32) -> Tolerance {
        let t = vs_truth(dtype, Roundings { storage: 2, fp32_reduction: 0, gain: max_abs_up });
        Tolerance { rtol: t.rtol + 2.0 * super::unit_roundoff(DType::F32), ..t }
    }

    /// apply_rotary_pos_emb: out_i = T(T(x_i T(c_i)) + T(+-x_j T(s_i))): the roundings of cos, sin
    /// and the two products act on |x_i| + |x_j| (2 u_T each side), the sum's on |out_i| (u_T).
    /// Used with `compare_scaled` and scale_i = |x_i| + |x_j|; the FP32 cos/sin differ from
    /// PyTorch's by a few u32 (4 u32 of atol).
    pub fn rope(dtype: DType) -> Tolerance {
        let u = super::unit_roundoff(dtype);
        let u32_ = super::unit_roundoff(DType::F32);
        Tolerance { atol: 2.0 * u + 4.0 * u32_, rtol: u }
    }

    /// Attention with FP32 logits and softmax (`reference::attention`): one rounding of the output
    /// (rtol u_T); the FP32 error, proportional to the logits' and v's sizes, goes through
    /// `compare_scaled` with `reference::attention::error_scale` (in units of u32, so atol = u32).
    pub fn attention(dtype: DType) -> Tolerance {
        Tolerance { atol: super::unit_roundoff(DType::F32), rtol: super::unit_roundoff(dtype) }
    }

    /// `residual + hidden_states` in the storage dtype: 1 rounding.
    pub fn residual_add(dtype: DType) -> Tolerance {
        vs_truth(dtype, Roundings { storage: 1, fp32_reduction: 0, gain: 1.0 })
    }

    /// RMSNorm of the rounded residual sum: the sum's rounding moves each element by u_T and the
    /// row's norm by at most u_T (2 roundings' worth), then RMSNorm's own 2.
    pub fn add_rmsnorm(dtype: DType, hidden: usize, max_abs_weight: f32) -> Tolerance {
        vs_truth(dtype, Roundings { storage: 4, fp32_reduction: hidden, gain: max_abs_weight })
    }
}
