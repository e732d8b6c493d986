//! `Gpu`: one CUDA device with its context, the stream every op is queued on, the loaded kernels and
//! a cuBLAS handle.
//!
//! All ops of one `Gpu` run in order on its single stream; nothing in an op synchronises with the
//! host, so a sequence of ops can be captured in a CUDA graph. Only downloads (`to_host`) synchronise.

use crate::error::{CudaContext as _, Error, Result};
use crate::kernels;
use cudarc::cublas::sys::cublasMath_t;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the device is, read once at start.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
    pub driver_version: i32,
}

pub struct Gpu {
    info: DeviceInfo,
    stream: Arc<CudaStream>,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    blas: std::result::Result<CudaBlas, String>,
    // Declared last: dropped after everything allocated from it.
    _ctx: Arc<CudaContext>,
}

/// The math mode of every cuBLAS handle: `CUBLAS_DEFAULT_MATH |
/// CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION`. Default math: no tensor-op or TF32 shortcut
/// unless a call's compute type asks for one (`ops::gemm::Precision::Tf32`). Disallowing
/// reduced-precision reductions: split-K partial sums are reduced in the compute type (FP32),
/// never in the output's f16/bf16, which cuBLAS may otherwise do at small row counts. cudarc's
/// `cublasMath_t` is an enum with no OR, so the value is its variant of the same bits (0 | 16).
pub const CUBLAS_MATH_MODE: cublasMath_t = cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
const _: () = assert!(
    CUBLAS_MATH_MODE as u32
        == cublasMath_t::CUBLAS_DEFAULT_MATH as u32 | cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION as u32
);

/// A cuBLAS handle on `stream` with [`CUBLAS_MATH_MODE`] set. `Ok(Err(reason))` when cublasCreate
/// fails (ops that need cuBLAS report it, the others work); `Err` when the mode cannot be set.
fn blas_handle(stream: &Arc<CudaStream>) -> Result<std::result::Result<CudaBlas, String>> {
    let blas = match CudaBlas::new(stream.clone()) {
        Ok(blas) => blas,
        Err(e) => return Ok(Err(format!("cublasCreate failed: {e}"))),
    };
    // SAFETY: the handle is live (owned by `blas`); cublasSetMathMode only stores the mode in it.
    unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), CUBLAS_MATH_MODE) }
        .result()
        .map_err(|source| Error::Cublas {
            call: "cublasSetMathMode(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)".into(),
            source,
        })?;
    Ok(Ok(blas))
}

fn driver_version() -> Result<i32> {
    let mut version = 0i32;
    // SAFETY: cuDriverGetVersion writes one int through a valid pointer.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }.result().cuda("cuDriverGetVersion")?;
    Ok(version)
}

impl Gpu {
    /// Open device `ordinal`. Never panics: without compiled kernels this is
    /// `Err(Error::KernelsNotBuilt)`, without a driver or device `Err(Error::NoDevice { .. })`.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !kernels::built() {
            return Err(Error::KernelsNotBuilt);
        }
        // cudarc panics if libcuda cannot be loaded; probe for it first.
        // SAFETY: only tries to dlopen the driver library by its usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDevice {
                reason: "the NVIDIA driver library (libcuda.so) was not found".into(),
            });
        }
        cudarc::driver::result::init()
            .map_err(|e| Error::NoDevice { reason: format!("cuInit failed: {e}") })?;
        let count = CudaContext::device_count().cuda("cuDeviceGetCount")?;
        if count <= 0 {
            return Err(Error::NoDevice { reason: "the driver reports 0 CUDA devices".into() });
        }
        if ordinal >= count as usize {
            return Err(Error::NoDevice {
                reason: format!("device {ordinal} requested, {count} present"),
            });
        }
        let ctx = CudaContext::new(ordinal).cuda(format!("cuDevicePrimaryCtxRetain({ordinal})"))?;
        // SAFETY: every op of this crate runs on the one stream below, so stream order already
        // orders all reads and writes; cudarc's per-buffer events would only add work (and nodes to
        // captured graphs).
        unsafe { ctx.disable_event_tracking() };
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().cuda("cuDeviceGetName")?,
            compute_capability: ctx.compute_capability().cuda("cuDeviceGetAttribute(COMPUTE_CAPABILITY)")?,
            total_memory_bytes: ctx.total_mem().cuda("cuDeviceTotalMem")?,
            driver_version: driver_version()?,
        };
        let stream = ctx.new_stream().cuda("cuStreamCreate")?;

        let mut modules = HashMap::new();
        for &(name, image) in kernels::MODULES {
            let module = ctx
                .load_module(Ptx::from_binary(image.to_vec()))
                .cuda(format!("cuModuleLoadData({name}.fatbin) on {} (sm_{}{})", info.name,
                    info.compute_capability.0, info.compute_capability.1))?;
            modules.insert(name, module);
        }

        // cudarc also panics if libcublas cannot be loaded: probe first. Ops that need cuBLAS report
        // its absence; the others work without it. A handle whose math mode cannot be set is an
        // error: the GEMM's FP32 promise depends on it.
        // SAFETY: only tries to dlopen the cuBLAS library by its usual names.
        let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            blas_handle(&stream)?
        } else {
            Err("libcublas.so was not found on the library search path (CUDA 13 wheels keep it in \
                 site-packages/nvidia/cu13/lib; add that to LD_LIBRARY_PATH)"
                .to_string())
        };

        Ok(Gpu { info, stream, modules, functions: Mutex::new(HashMap::new()), blas, _ctx: ctx })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The stream every op of this `Gpu` is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Wait for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().cuda("cuStreamSynchronize")
    }

    /// The cuBLAS handle (bound to this `Gpu`'s stream, math mode [`CUBLAS_MATH_MODE`]).
    pub fn blas(&self) -> Result<&CudaBlas> {
        self.blas.as_ref().map_err(|reason| Error::CublasNotFound { reason: reason.clone() })
    }

    /// Kernel `name` from the fatbin compiled from `cuda/<module>.cu`, loaded once and cached.
    pub(crate) fn function(&self, module: &'static str, name: &'static str) -> Result<CudaFunction> {
        let mut cache = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = cache.get(name) {
            return Ok(f.clone());
        }
        let m = self.modules.get(module).ok_or_else(|| Error::Cuda {
            call: format!("load kernel {name}: module {module}.fatbin is not embedded"),
            source: cudarc::driver::DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_FOUND),
        })?;
        let f = m.load_function(name).cuda(format!("cuModuleGetFunction({module}, {name})"))?;
        cache.insert(name, f.clone());
        Ok(f)
    }
}
