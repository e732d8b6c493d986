//! Safe wrappers, one file per op. Each validates ranks, shapes, dtypes and alignment first and
//! returns a typed error naming the op and the values; only then does it launch. The validation
//! every implementation shares is the op's specification ([`crate::spec`]), which each wrapper
//! re-exports; what the kernel adds (alignment, compiled sizes, workspaces, grid and i32 limits)
//! is checked here, by pure functions too (`plan`, `check_decode`, ...), so it is tested without a
//! GPU.

pub mod argmax;
pub mod attention;
pub mod decode;
pub mod embed;
pub mod gemm;
pub mod gemv;
pub mod kv_cache;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod swiglu;

/// Which variant of a memory-bound kernel runs (RMSNorm, SwiGLU, argmax). `Auto` picks 16-byte
/// vector access when every operand allows it (width and addresses), else element access; the
/// others force one variant, for benchmarks and tests (`Vector16` where it is not legal is an
/// `Error::Alignment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Auto,
    Vector16,
    Scalar,
}

impl Path {
    /// Whether the 16-byte vector variant runs, given whether it is legal (`vector_ok`); forcing
    /// it where it is not is an `Error::Alignment` of `op` saying `why`.
    pub(crate) fn vectorized(self, op: &'static str, vector_ok: bool, why: impl FnOnce() -> String) -> crate::Result<bool> {
        match self {
            Path::Auto => Ok(vector_ok),
            Path::Scalar => Ok(false),
            Path::Vector16 if vector_ok => Ok(true),
            Path::Vector16 => Err(crate::Error::alignment(op, why())),
        }
    }
}

/// Threads for a one-block-per-row kernel: `items` work items rounded up to whole warps, at most 1024.
pub(crate) fn row_block_threads(items: usize) -> u32 {
    items.div_ceil(32).clamp(1, 32) as u32 * 32
}
