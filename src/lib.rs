//! # qwen-kernels
//!
//! Hand-written CUDA kernels for Qwen2-architecture decoders (Qwen2.5-0.5B, VibeThinker-1.5B), each
//! verified against a CPU reference that mirrors transformers' Qwen2 code and against PyTorch goldens.
//!
//! - [`Gpu`] opens a device (errors, never panics, on machines without one).
//! - [`DeviceTensor`] / [`View`] / [`ViewMut`]: device memory with a dtype and shape; [`HostTensor`] on the host.
//! - [`spec`]: each op's specification (validation, contracts, tables), which both the kernels'
//!   safe wrappers, [`ops`], and the CPU references, [`reference`](mod@reference), depend on;
//!   [`golden`]: comparison.
//!
//! Every op stores f32, f16 or bf16 and computes in FP32, rounding where PyTorch rounds.
//! Every public function returns [`Result`]; bad input is an [`Error`] naming the op and the values.
//!
//! ```
//! use qwen_kernels::{reference, DType, Gpu, HostTensor, DeviceTensor, ops};
//!
//! // Two rows of a 4-wide hidden state in bf16, the RMSNorm weight, eps from the model config.
//! let x = HostTensor::from_f32(DType::BF16, &[2, 4], vec![1., -1., 1., -1., 2., 2., 2., 2.])?;
//! let w = HostTensor::from_f32(DType::BF16, &[4], vec![0.5, 1., 2., 4.])?;
//! let expected = reference::rmsnorm::rmsnorm(&x, &w, 1e-6)?;      // the CPU oracle
//! assert_eq!(&expected.data()[..4], &[0.5, -1., 2., -4.]);
//!
//! // The same on a GPU, when there is one (without, Gpu::new says why).
//! if let Ok(gpu) = Gpu::new(0) {
//!     let (dx, dw) = (DeviceTensor::from_host(&gpu, &x)?, DeviceTensor::from_host(&gpu, &w)?);
//!     let mut y = DeviceTensor::zeros(&gpu, DType::BF16, &[2, 4])?;
//!     ops::rmsnorm::rmsnorm(&gpu, &dx.view(), &dw.view(), 1e-6, &mut y.view_mut())?;
//!     assert_eq!(y.to_host(&gpu)?.data()[..4], expected.data()[..4]);
//! }
//!
//! // Bad input is an error before anything runs.
//! let w_wrong = HostTensor::from_f32(DType::BF16, &[3], vec![1.; 3])?;
//! assert!(reference::rmsnorm::rmsnorm(&x, &w_wrong, 1e-6).is_err());
//! # Ok::<(), qwen_kernels::Error>(())
//! ```

pub mod check;
pub mod diff;
pub mod dtype;
pub mod error;
pub mod golden;
pub mod gpu;
/// The kernels' argument structs (bindgen's translation of `cuda/args.h`; see that header).
#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code)]
pub mod kernel_args;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod ops;
pub mod profile;
pub mod reference;
pub mod spec;
pub mod synth;
pub mod telemetry;
pub mod tensor;
pub mod text;

pub use dtype::DType;
pub use error::{Error, Result};
pub use gpu::{DeviceKind, Gpu, SoftwareCounters};
pub use tensor::{DeviceTensor, HostTensor, Layout, Shape, View, ViewMut};
