//! `act_fn(gate) * up` of Qwen2MLP, act_fn = SiLU:
//!
//! ```python
//! down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
//! ```
//! SiLU is computed in FP32 as x / (1 + exp(-x)) (PyTorch's CPU and CUDA kernels), rounded to the
//! storage dtype, then multiplied by `up` and rounded again.

use crate::error::Result;
use crate::spec::swiglu::check;
use crate::tensor::HostTensor;

/// SiLU in FP32.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn swiglu(gate: &HostTensor, up: &HostTensor) -> Result<HostTensor> {
    check(gate.layout(), up.layout())?;
    let dtype = gate.dtype();
    let out = gate
        .data()
        .iter()
        .zip(up.data())
        .map(|(&g, &u)| dtype.round(dtype.round(silu(g)) * u))
        .collect();
    HostTensor::from_f32(dtype, gate.dims(), out)
}
