//! CPU references: one per op, mirroring the PyTorch code line by line, computing in FP32 and
//! rounding to the storage dtype exactly where PyTorch does. They are the oracle the kernels are
//! checked against, and are themselves checked against hand-computed cases and PyTorch goldens.
//! They use the same validation as the kernels, so bad input is an error here too.

pub mod argmax;
pub mod attention;
pub mod linear;
pub mod model;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
