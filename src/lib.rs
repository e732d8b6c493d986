//! # qwen-kernels
//!
//! Hand-written CUDA kernels for Qwen2-architecture decoders (Qwen2.5-0.5B, VibeThinker-1.5B), each
//! verified against a CPU reference that mirrors transformers' Qwen2 code and against PyTorch goldens.
//!
//! - [`Gpu`] opens a device (errors, never panics, on machines without one).
//! - [`DeviceTensor`] / [`View`] / [`ViewMut`]: device memory with a dtype and shape; [`HostTensor`] on the host.
//! - [`ops`]: the kernels' safe wrappers; [`reference`]: the CPU references; [`golden`]: comparison.
//!
//! Every op stores f32, f16 or bf16 and computes in FP32, rounding where PyTorch rounds.
//! Every public function returns [`Result`]; bad input is an [`Error`] naming the op and the values.

pub mod check;
pub mod dtype;
pub mod error;
pub mod golden;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod reference;
pub mod tensor;

pub use dtype::DType;
pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DeviceTensor, HostTensor, Layout, Shape, View, ViewMut};
