//! `torch.nn.Linear`: `y = x W^T + b` (F.linear, i.e. addmm with the bias fused).
//!
//! W is [out_features, in_features] (Hugging Face layout), x [.., in_features], y [.., out_features].
//! PyTorch accumulates the products in FP32, adds the bias in FP32 and rounds once to the storage
//! dtype. The reference accumulates in f64 and rounds to f32 (the value an ideal FP32 accumulation
//! reaches), adds the bias in f32, then rounds to the dtype.

use crate::error::Result;
use crate::spec::linear::check_linear;
use crate::tensor::HostTensor;

pub fn linear(x: &HostTensor, weight: &HostTensor, bias: Option<&HostTensor>) -> Result<HostTensor> {
    let d = check_linear(x.layout(), weight.layout(), bias.map(|b| b.layout()))?;
    let dtype = x.dtype();
    let mut y = Vec::with_capacity(d.rows * d.out_features);
    for row in x.data().chunks_exact(d.in_features) {
        for (j, w_row) in weight.data().chunks_exact(d.in_features).enumerate() {
            let acc: f64 = row.iter().zip(w_row).map(|(&a, &b)| a as f64 * b as f64).sum();
            let mut v = acc as f32;
            if let Some(b) = bias {
                v += b.data()[j];
            }
            y.push(dtype.round(v));
        }
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().unwrap() = d.out_features;
    HostTensor::from_f32(dtype, &dims, y)
}

/// For each output element, sum over k of |x_k w_jk| + |b_j|: the scale an FP32 accumulation's
/// rounding error is proportional to (used to derive tolerances; cancellation makes |y| useless).
pub fn abs_dot_bound(x: &HostTensor, weight: &HostTensor, bias: Option<&HostTensor>) -> Result<Vec<f32>> {
    let d = check_linear(x.layout(), weight.layout(), bias.map(|b| b.layout()))?;
    let mut out = Vec::with_capacity(d.rows * d.out_features);
    for row in x.data().chunks_exact(d.in_features) {
        for (j, w_row) in weight.data().chunks_exact(d.in_features).enumerate() {
            let s: f64 = row.iter().zip(w_row).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            out.push((s + bias.map_or(0.0, |b| b.data()[j].abs() as f64)) as f32);
        }
    }
    Ok(out)
}
