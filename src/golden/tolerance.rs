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
/// Both compute the same formula in FP32 from the same inputs; they differ only in the order the
/// sum of squares is added up. Any order of adding `hidden` non-negative terms is within
/// (hidden - 1) * u32 of the exact sum (relative), the reference's mean is the exactly rounded one,
/// so the two means differ by at most (hidden + 1) * u32; 1/sqrt halves that and adds 2 roundings
/// (sqrt, divide), x * inv and w * (.) add 2 more: FP32 outputs agree to
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
