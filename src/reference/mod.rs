//! CPU references: one per op, mirroring the PyTorch code line by line, computing in FP32 and
//! rounding to the storage dtype exactly where PyTorch does. They are the oracle the kernels are
//! checked against, and are themselves checked against hand-computed cases and PyTorch goldens.
//! They validate their inputs with the ops' specifications ([`crate::spec`]), as the kernel
//! wrappers do, so bad input is the same error here; they never depend on the kernel wrappers.

pub mod argmax;
pub mod attention;
pub mod linear;
pub mod model;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod swiglu;
