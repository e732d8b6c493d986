//! Each op's specification, one file per op: what it computes, which inputs are valid, and the
//! constants and tables that define it. Both implementations depend on it and neither on the other:
//!
//! ```text
//! spec/<op>.rs  ->  ops/<op>.rs         the kernel wrapper: the spec's validation, then what the
//!                                       kernel adds (alignment, compiled head dims, workspaces,
//!                                       grid and i32 limits), then the launch
//!               ->  reference/<op>.rs   the CPU oracle: the spec's validation, then the math
//! ```
//!
//! What belongs here: the validation every implementation of the op shares (pure functions of
//! [`Layout`](crate::Layout)s and host values returning a typed [`Error`](crate::Error) that names
//! the op and the values), the op names those errors carry, the dimensions a validated call
//! returns, the contracts both sides keep (RMSNorm's overflow boundary, the attention scale and its
//! FP32 error bound, the KV-cache layout) and the tables both read (RoPE's inv_freq). What does not:
//! launch planning, kernel names, device buffers (`ops`), and the arithmetic of the oracle
//! (`reference`). The kernel wrappers re-export the items their callers need (`ops::rope::check`,
//! `ops::kv_cache`, ...), so a user of one op imports from one module.

pub mod argmax;
pub mod attention;
pub mod embed;
pub mod kv_cache;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod swiglu;
