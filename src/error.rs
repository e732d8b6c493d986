//! The crate's one error type. Every public function returns `Result<T, Error>`; nothing panics on
//! bad input. Each message names the op (or the CUDA/cuBLAS call) and the offending values.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The crate was compiled without nvcc, so it carries no kernels.
    #[error(
        "CUDA kernels were not built: nvcc was not found when qwen-kernels was compiled. \
         Run scripts/setup-cuda.sh (CUDA 13.0 nvcc from PyPI) or set NVCC / CUDA_HOME, then rebuild"
    )]
    KernelsNotBuilt,

    /// No usable CUDA driver or device on this machine.
    #[error("no CUDA device: {reason}")]
    NoDevice { reason: String },

    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("{op}: dtype mismatch: {detail}")]
    DType { op: &'static str, detail: String },

    #[error("{op}: misaligned: {detail}")]
    Alignment { op: &'static str, detail: String },

    #[error("{op}: unsupported size: {detail}")]
    UnsupportedSize { op: &'static str, detail: String },

    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument { op: &'static str, detail: String },

    /// A golden file is missing, stale or malformed; `regenerate` is the command that writes it
    /// (`python3 golden/gen.py --model M`, or `--checkpoint DIR --name NAME` for a checkpoint's).
    #[error("golden file {path}: {detail} (regenerate: {regenerate})")]
    Golden { path: String, detail: String, regenerate: String },

    #[error("CUDA call {call} failed: {source}")]
    Cuda {
        call: String,
        #[source]
        source: DriverError,
    },

    #[error("cuBLAS call {call} failed: {source}")]
    Cublas {
        call: String,
        #[source]
        source: CublasError,
    },

    #[error("cuBLAS is not available: {reason}")]
    CublasNotFound { reason: String },

    /// A launch whose arguments do not match the kernel's parameters (count or sizes, as the
    /// driver reports them): caught before the launch, where the GPU would read garbage.
    #[error("kernel {kernel}: arguments do not match its parameters: {detail}")]
    KernelArguments { kernel: String, detail: String },
}

impl Error {
    /// The variant's name (`"Shape"`, `"Cuda"`, ...), for reports and tests that expect a kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::KernelsNotBuilt => "KernelsNotBuilt",
            Error::NoDevice { .. } => "NoDevice",
            Error::Shape { .. } => "Shape",
            Error::DType { .. } => "DType",
            Error::Alignment { .. } => "Alignment",
            Error::UnsupportedSize { .. } => "UnsupportedSize",
            Error::InvalidArgument { .. } => "InvalidArgument",
            Error::Golden { .. } => "Golden",
            Error::Cuda { .. } => "Cuda",
            Error::Cublas { .. } => "Cublas",
            Error::CublasNotFound { .. } => "CublasNotFound",
            Error::KernelArguments { .. } => "KernelArguments",
        }
    }

    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape { op, detail: detail.into() }
    }
    pub(crate) fn dtype(op: &'static str, detail: impl Into<String>) -> Self {
        Error::DType { op, detail: detail.into() }
    }
    pub(crate) fn alignment(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Alignment { op, detail: detail.into() }
    }
    pub(crate) fn unsupported(op: &'static str, detail: impl Into<String>) -> Self {
        Error::UnsupportedSize { op, detail: detail.into() }
    }
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument { op, detail: detail.into() }
    }
}

/// Attaches the failing CUDA driver call to a `DriverError`.
pub(crate) trait CudaContext<T> {
    fn cuda(self, call: impl Into<String>) -> Result<T>;
}

impl<T> CudaContext<T> for std::result::Result<T, DriverError> {
    fn cuda(self, call: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Cuda { call: call.into(), source })
    }
}
