//! Storage dtypes. Every op stores f32, f16 or bf16 and computes in FP32.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Machine epsilon: the gap between 1 and the next representable value
    /// (2^-23 for f32, 2^-10 for f16, 2^-7 for bf16). One rounding to nearest changes a value by at
    /// most half of this, relatively.
    pub const fn epsilon(self) -> f32 {
        match self {
            DType::F32 => f32::EPSILON,
            DType::F16 => 9.765625e-4,
            DType::BF16 => 7.8125e-3,
        }
    }

    /// Round an f32 to this dtype (round to nearest, ties to even: PyTorch's `.to(dtype)`) and back.
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// [`DType::round`] of every value, in place. The same values as one at a time; the conversions
    /// run a block at a time (`half`'s slice conversions: F16C's 8-wide instructions where the CPU
    /// has them), which matters at the models' sizes (an lm_head is 136-233 M values).
    pub fn round_slice(self, values: &mut [f32]) {
        match self {
            DType::F32 => {}
            DType::F16 => round_blocks::<f16>(values),
            DType::BF16 => round_blocks::<bf16>(values),
        }
    }

    /// Little-endian storage bytes of `values`, each rounded to this dtype (converted a block at a
    /// time, as in [`DType::round_slice`]).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let bits = match self {
            DType::F32 => return values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F16 => half_bits::<f16>(values),
            DType::BF16 => half_bits::<bf16>(values),
        };
        bits.iter().flat_map(|b| b.to_le_bytes()).collect()
    }

    /// Values of little-endian storage bytes. `bytes.len()` must be a multiple of `size()`.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `values` rounded to the 16-bit float `H` and back, a block at a time.
fn round_blocks<H: Copy + Default>(values: &mut [f32])
where
    [H]: HalfFloatSliceExt,
{
    let mut tmp = [H::default(); 1024];
    for chunk in values.chunks_mut(tmp.len()) {
        let tmp = &mut tmp[..chunk.len()];
        tmp.convert_from_f32_slice(chunk);
        tmp.convert_to_f32_slice(chunk);
    }
}

/// The bits of `values` rounded to the 16-bit float `H`.
fn half_bits<H: Copy + Default>(values: &[f32]) -> Vec<u16>
where
    [H]: HalfFloatSliceExt,
{
    let mut h = vec![H::default(); values.len()];
    h.convert_from_f32_slice(values);
    h.reinterpret_cast().to_vec()
}
