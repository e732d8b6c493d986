//! `Gpu`: one CUDA device with its context, the stream every op is queued on, the loaded kernels and
//! a cuBLAS handle.
//!
//! All ops of one `Gpu` run in order on its single stream; nothing in an op synchronises with the
//! host, so a sequence of ops can be captured in a CUDA graph. Only downloads (`to_host`) synchronise.
//!
//! # Hardware or the software device
//!
//! The crate reaches a device only through the CUDA driver API (cudarc) and cuBLAS, both loaded at
//! run time by `dlopen("libcuda.so")` / `dlopen("libcublas.so")`. The software device (`softgpu/`)
//! is a pair of libraries with those SONAMEs that run the crate's own kernel sources on the CPU;
//! [`Gpu::emulated`] loads them by absolute path first, so cudarc's own `dlopen` binds to them and
//! every op takes exactly the code path it takes on a GPU. A process uses one or the other: the first
//! choice binds cudarc for the life of the process, and asking for the other afterwards is an error.
//!
//! - [`Gpu::new`]: hardware, unless `QK_DEVICE=emulated` (how an engine's own tests run on the
//!   software device without a code change).
//! - [`Gpu::hardware`]: hardware only. [`Gpu::emulated`]: the software device only.
//! - [`Gpu::any`]: hardware when a GPU is usable, else the software device (the GPU test runner,
//!   `qwen-kernels check`), unless `QK_REQUIRE_GPU=1`.
//!
//! [`DeviceInfo::kind`] says which one a `Gpu` is; every report prints it.

use crate::error::{CudaContext as _, Error, Result};
use crate::kernels;
use cudarc::cublas::sys::cublasMath_t;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtrMut, LaunchArgs, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Hardware, or the software device that runs the kernels on the CPU (`softgpu/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Hardware,
    Software,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Hardware => "hardware",
            DeviceKind::Software => "software device",
        }
    }
}

/// The driver this process's cudarc is bound to, once chosen.
static BOUND: OnceLock<DeviceKind> = OnceLock::new();

/// What the device is, read once at start.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors: launch planning (decode attention) spreads small grids over them.
    pub multiprocessors: usize,
    pub total_memory_bytes: usize,
    pub driver_version: i32,
    pub kind: DeviceKind,
}

pub struct Gpu {
    info: DeviceInfo,
    stream: Arc<CudaStream>,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    /// Parameter sizes of each kernel, from cuFuncGetParamInfo (None: the driver cannot say).
    params: Mutex<HashMap<&'static str, Option<Vec<usize>>>>,
    blas: std::result::Result<Blas, String>,
    /// While node timing is on: an event recorded after each launch (kernel or cuBLAS call).
    node_marks: Mutex<Option<Vec<(&'static str, cudarc::driver::CudaEvent)>>>,
    /// Launch the kernels that allow it as programmatic dependent launches ([`Gpu::launch_struct`]).
    programmatic: std::sync::atomic::AtomicBool,
    // Declared last: dropped after everything allocated from it.
    _ctx: Arc<CudaContext>,
}

/// Whether a hardware GPU is usable, found without binding cudarc to any driver (so that the
/// software device can still be chosen when it is not).
pub fn hardware_probe() -> std::result::Result<(), String> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    // SAFETY: loads the NVIDIA driver by its usual name and calls cuInit and cuDeviceGetCount,
    // which have no preconditions. With a usable device the library stays loaded (cudarc binds to
    // it next); without one it is closed, so that dlopen("libcuda.so") can still find the software
    // device.
    unsafe {
        let lib = libloading::Library::new("libcuda.so")
            .or_else(|_| libloading::Library::new("libcuda.so.1"))
            .map_err(|e| format!("the NVIDIA driver library (libcuda.so) was not found ({e})"))?;
        if lib.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"qksoft_version").is_ok() {
            return Err("libcuda.so is the software device".into());
        }
        // Plain function pointers: valid while `lib` is loaded, which outlives their use here.
        let init: Init = *lib.get(b"cuInit").map_err(|e| e.to_string())?;
        let count: Count = *lib.get(b"cuDeviceGetCount").map_err(|e| e.to_string())?;
        let rc = init(0);
        if rc != 0 {
            return Err(format!("cuInit failed ({rc})"));
        }
        let mut n = 0;
        let rc = count(&mut n);
        if rc != 0 || n <= 0 {
            return Err(format!("the driver reports {n} CUDA devices"));
        }
        std::mem::forget(lib);
    }
    Ok(())
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

/// Bytes of the workspace each cuBLAS handle gets (what NVIDIA's cuBLAS documentation advises for
/// Hopper, enough for every architecture before it).
pub const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle and the workspace it was given (which must outlive it).
pub(crate) struct Blas {
    handle: CudaBlas,
    _workspace: CudaSlice<u8>,
}

/// A cuBLAS handle on `stream` with [`CUBLAS_MATH_MODE`] set and a workspace of its own
/// ([`CUBLAS_WORKSPACE_BYTES`], allocated here): a GEMM captured into a CUDA graph then never
/// takes memory from cuBLAS' pool, so a replayed decode step allocates nothing. `Ok(Err(reason))`
/// when cublasCreate fails (ops that need cuBLAS report it, the others work); `Err` when the mode
/// or the workspace cannot be set.
fn blas_handle(stream: &Arc<CudaStream>) -> Result<std::result::Result<Blas, String>> {
    let blas = match CudaBlas::new(stream.clone()) {
        Ok(blas) => blas,
        Err(e) => return Ok(Err(format!("cublasCreate failed: {e}"))),
    };
    let mut workspace = stream.alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES).cuda("cuMemAlloc(cuBLAS workspace)")?;
    {
        let (ptr, _sync) = workspace.device_ptr_mut(stream);
        // SAFETY: the handle is live; the workspace is CUBLAS_WORKSPACE_BYTES of device memory of
        // this context, kept alive beside the handle (Blas) and used only by it, on its stream.
        unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*blas.handle(), ptr as *mut std::ffi::c_void, CUBLAS_WORKSPACE_BYTES) }
            .result()
            .map_err(|source| Error::Cublas { call: format!("cublasSetWorkspace({CUBLAS_WORKSPACE_BYTES} bytes)"), source })?;
    }
    // SAFETY: the handle is live (owned by `blas`); cublasSetMathMode only stores the mode in it.
    unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), CUBLAS_MATH_MODE) }
        .result()
        .map_err(|source| Error::Cublas {
            call: "cublasSetMathMode(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)".into(),
            source,
        })?;
    Ok(Ok(Blas { handle: blas, _workspace: workspace }))
}

fn driver_version() -> Result<i32> {
    let mut version = 0i32;
    // SAFETY: cuDriverGetVersion writes one int through a valid pointer.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }.result().cuda("cuDriverGetVersion")?;
    Ok(version)
}

/// One kernel argument: how many bytes the launch passes for it (what cuLaunchKernel copies).
pub trait KernelArg {
    const BYTES: usize;
}
macro_rules! scalar_args {
    ($($t:ty),*) => { $(impl KernelArg for &$t { const BYTES: usize = std::mem::size_of::<$t>(); })* };
}
scalar_args!(i32, u32, i64, u64, f32);
impl<T> KernelArg for &CudaSlice<T> {
    const BYTES: usize = 8;
}
impl<T> KernelArg for &mut CudaSlice<T> {
    const BYTES: usize = 8;
}
impl<T> KernelArg for &CudaView<'_, T> {
    const BYTES: usize = 8;
}
impl<T> KernelArg for &mut CudaViewMut<'_, T> {
    const BYTES: usize = 8;
}

/// An argument struct of `cuda/args.h` (src/kernel_args.rs), passed by value as its kernel's one
/// parameter ([`Gpu::launch_struct`]).
pub trait KernelStruct: cudarc::driver::DeviceRepr {}
macro_rules! struct_args {
    ($($t:ident),*) => {$(
        impl KernelStruct for crate::kernel_args::$t {}
        // SAFETY: a #[repr(C)] struct of integers, floats and device addresses, laid out as nvcc
        // lays out the same C declaration (bindgen's layout tests pin every offset).
        unsafe impl cudarc::driver::DeviceRepr for crate::kernel_args::$t {}
    )*};
}
struct_args!(QkGemvArgs, QkDecQkvArgs, QkDecResidualArgs, QkDecGateUpArgs, QkDecHeadArgs, QkDecFinishArgs, QkDecodeAdvanceArgs);

/// Device addresses for an argument struct (`cuda/args.h`), each with cudarc's record of the
/// buffer's use on the stream, kept until this is dropped: create it before the struct and the
/// launch, so that it outlives both.
pub struct Addresses<'a> {
    stream: &'a CudaStream,
    guards: Vec<cudarc::driver::SyncOnDrop<'a>>,
}

impl<'a> Addresses<'a> {
    /// The address of a buffer the kernel reads.
    pub fn read<T>(&mut self, buf: &'a impl cudarc::driver::DevicePtr<T>) -> *const std::ffi::c_void {
        let (ptr, guard) = buf.device_ptr(self.stream);
        self.guards.push(guard);
        ptr as usize as *const std::ffi::c_void
    }

    /// The address of a buffer the kernel writes.
    pub fn write<T>(&mut self, buf: &'a mut impl DevicePtrMut<T>) -> *mut std::ffi::c_void {
        let (ptr, guard) = buf.device_ptr_mut(self.stream);
        self.guards.push(guard);
        ptr as usize as *mut std::ffi::c_void
    }
}

/// A kernel launch being assembled (see [`Gpu::launcher`]).
pub struct KernelLaunch<'a> {
    gpu: &'a Gpu,
    name: &'static str,
    func: &'a CudaFunction,
    args: LaunchArgs<'a>,
    sizes: Vec<usize>,
}

impl<'a> KernelLaunch<'a> {
    /// Push one argument (a device pointer: 8 bytes; a scalar: its size).
    pub fn arg<A: KernelArg>(&mut self, a: A) -> &mut Self
    where
        LaunchArgs<'a>: PushKernelArg<A>,
    {
        self.sizes.push(A::BYTES);
        self.args.arg(a);
        self
    }

    /// Check the arguments against the kernel's parameters, then launch.
    ///
    /// # Safety
    /// As `cudarc::driver::LaunchArgs::launch`: the kernel must stay in bounds of every buffer it
    /// is given for this configuration (each call site says why it does).
    pub unsafe fn launch(&mut self, cfg: LaunchConfig) -> Result<()> {
        self.gpu.check_arguments(self.name, self.func, &self.sizes)?;
        // SAFETY: the caller's contract (above).
        unsafe { self.args.launch(cfg) }.map_err(|source| Error::Cuda { call: format!("cuLaunchKernel({})", self.name), source })?;
        self.gpu.mark_node(self.name)
    }
}

/// What the software device's `counters` tool saw of one launch (or copy, set, cuBLAS call):
/// counts, not times. Global bytes "as requested" sum every access's size; sectors are 32-byte
/// units; a request is one warp's execution of one access site (lane i's k-th execution paired
/// with lane j's k-th); shared-memory wavefronts and bank conflicts follow the 32 banks of 4
/// bytes, 8-byte accesses in 2 phases of 16 lanes and 16-byte accesses in 4 phases of 8.
/// Copies, sets and cuBLAS calls are counted from their operands (each byte once).
/// Layout shared with softgpu/tools.cpp (`Counters`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SoftwareCounters {
    name: [u8; 64],
    /// 0 a kernel, 1 a copy or set, 2 a cuBLAS call.
    pub kind: u32,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
    pub static_shared: u32,
    /// Bit 0: a programmatic dependent launch ([`Gpu::launch_struct`]).
    pub flags: u32,
    pub global_read_bytes: u64,
    pub global_write_bytes: u64,
    pub global_read_requests: u64,
    pub global_write_requests: u64,
    /// Summed over the requests: distinct sectors each one touches.
    pub global_read_sectors: u64,
    pub global_write_sectors: u64,
    /// Distinct over the whole launch.
    pub distinct_read_sectors: u64,
    pub distinct_write_sectors: u64,
    pub distinct_read_bytes: u64,
    pub distinct_write_bytes: u64,
    pub shared_read_bytes: u64,
    pub shared_write_bytes: u64,
    pub shared_requests: u64,
    pub shared_wavefronts: u64,
    pub shared_bank_conflicts: u64,
}

impl Default for SoftwareCounters {
    fn default() -> Self {
        // SAFETY: plain integers; all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    }
}

impl SoftwareCounters {
    /// The kernel's name, or `cuMemcpy` / `cuMemset` / `cublasGemmEx`.
    pub fn name(&self) -> &str {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        std::str::from_utf8(&self.name[..end]).unwrap_or("?")
    }

    /// Mean distinct sectors per warp read request (4 for 32 lanes reading 4 contiguous bytes each).
    pub fn sectors_per_read_request(&self) -> f64 {
        self.global_read_sectors as f64 / self.global_read_requests.max(1) as f64
    }

    pub fn sectors_per_write_request(&self) -> f64 {
        self.global_write_sectors as f64 / self.global_write_requests.max(1) as f64
    }
}

/// Whether the driver cudarc is bound to is the software device (it exports `qksoft_version`).
fn bound_to_software() -> bool {
    // SAFETY: culib() returns the library cudarc loaded; looking up a symbol has no side effect.
    unsafe { cudarc::driver::sys::culib().get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"qksoft_version").is_ok() }
}

/// Write the software device's libraries into a new private folder (mode 0700, a name no other
/// process uses), so that what is loaded is exactly what this build embeds.
fn softgpu_files(libs: &kernels::SoftGpuLibraries) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("qwen-kernels-softgpu-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let (cuda, cublas) = (dir.join("libcuda.so"), dir.join("libcublas.so"));
    std::fs::write(&cuda, libs.libcuda)?;
    std::fs::write(&cublas, libs.libcublas)?;
    Ok((cuda, cublas))
}

/// Load the software device's libcuda.so and libcublas.so (once per process).
fn load_softgpu() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let libs = kernels::SOFTGPU.as_ref().ok_or("this build has no software device (built without nvcc)")?;
            let (cuda, cublas) = softgpu_files(libs).map_err(|e| format!("cannot write the software device's libraries: {e}"))?;
            let loaded = [&cuda, &cublas].into_iter().try_for_each(|path| {
                // SAFETY: our own libraries, built with the crate; their initialisers only register kernels.
                let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot load {}: {e}", path.display()))?;
                if path == &cuda {
                    type AddLines = unsafe extern "C" fn(*const std::ffi::c_char, *const std::ffi::c_char, usize);
                    // SAFETY: the device's export with this signature; it copies the table.
                    let add = unsafe { lib.get::<AddLines>(b"qksoft_add_line_table") }.map_err(|e| format!("{}: {e}", path.display()))?;
                    unsafe { add(c"libcuda.so".as_ptr(), libs.libcuda_lines.as_ptr().cast(), libs.libcuda_lines.len()) };
                }
                // Kept for the life of the process: cudarc's handles point into it.
                std::mem::forget(lib);
                Ok::<(), String>(())
            });
            // Loaded (or not): the files are no longer needed.
            if let Some(dir) = cuda.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
            loaded
        })
        .clone()
        .map_err(|reason| Error::NoDevice { reason })
}

impl Gpu {
    /// Open device `ordinal` on hardware, or the software device when `QK_DEVICE=emulated`. Never
    /// panics: without compiled kernels this is `Err(Error::KernelsNotBuilt)`, without a driver or
    /// device `Err(Error::NoDevice { .. })`.
    pub fn new(ordinal: usize) -> Result<Self> {
        match std::env::var("QK_DEVICE").as_deref() {
            Ok("emulated") | Ok("software") => Self::emulated(),
            Ok("") | Ok("hardware") | Err(_) => Self::hardware(ordinal),
            Ok(other) => Err(Error::NoDevice {
                reason: format!("QK_DEVICE={other:?}: expected \"hardware\" or \"emulated\""),
            }),
        }
    }

    /// Hardware when a GPU is usable, else the software device, unless `QK_REQUIRE_GPU=1` (then
    /// only hardware). For runners: the device actually used is in [`Gpu::info`].
    pub fn any(ordinal: usize) -> Result<Self> {
        let require = std::env::var("QK_REQUIRE_GPU").is_ok_and(|v| v == "1");
        if std::env::var("QK_DEVICE").is_ok_and(|v| !v.is_empty()) || require {
            return Self::new(ordinal);
        }
        match hardware_probe() {
            Ok(()) => Self::hardware(ordinal),
            Err(_) => Self::emulated(),
        }
    }

    /// The software device: the crate's kernels, compiled for the host, run on the CPU behind the
    /// same driver and cuBLAS calls (`softgpu/`). Fails if this process already uses the hardware
    /// driver.
    pub fn emulated() -> Result<Self> {
        if !kernels::built() {
            return Err(Error::KernelsNotBuilt);
        }
        if BOUND.get() == Some(&DeviceKind::Hardware) {
            return Err(Error::NoDevice { reason: "this process already uses the NVIDIA driver; choose the software device before any hardware call".into() });
        }
        load_softgpu()?;
        if !bound_to_software() {
            return Err(Error::NoDevice { reason: "cudarc was bound to another libcuda.so before the software device was loaded".into() });
        }
        let _ = BOUND.set(DeviceKind::Software);
        Self::open(0, DeviceKind::Software)
    }

    /// Device `ordinal` on hardware only.
    pub fn hardware(ordinal: usize) -> Result<Self> {
        if !kernels::built() {
            return Err(Error::KernelsNotBuilt);
        }
        if BOUND.get() == Some(&DeviceKind::Software) {
            return Err(Error::NoDevice { reason: "this process uses the software device; hardware cannot be opened in it".into() });
        }
        // cudarc panics if libcuda cannot be loaded; probe for it first.
        // SAFETY: only tries to dlopen the driver library by its usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDevice {
                reason: "the NVIDIA driver library (libcuda.so) was not found".into(),
            });
        }
        if bound_to_software() {
            return Err(Error::NoDevice { reason: "this process uses the software device; hardware cannot be opened in it".into() });
        }
        let _ = BOUND.set(DeviceKind::Hardware);
        Self::open(ordinal, DeviceKind::Hardware)
    }

    fn open(ordinal: usize, kind: DeviceKind) -> Result<Self> {
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
            multiprocessors: ctx
                .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .cuda("cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)")?
                .max(1) as usize,
            total_memory_bytes: ctx.total_mem().cuda("cuDeviceTotalMem")?,
            driver_version: driver_version()?,
            kind,
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

        Ok(Gpu {
            info,
            stream,
            modules,
            functions: Mutex::new(HashMap::new()),
            params: Mutex::new(HashMap::new()),
            node_marks: Mutex::new(None),
            programmatic: std::sync::atomic::AtomicBool::new(false),
            blas,
            _ctx: ctx,
        })
    }

    /// The same device and kernels on another stream of the same context: an engine's own stream
    /// (from cudarc: `gpu.context().new_stream()`, or one it already has), so that every op, and a
    /// [`crate::model::DeviceModel`] driven with the returned `Gpu`, runs in the engine's stream
    /// order. It has its own cuBLAS handle (bound to that stream, with the same math mode).
    pub fn with_stream(&self, stream: Arc<CudaStream>) -> Result<Gpu> {
        if !Arc::ptr_eq(stream.context(), &self._ctx) {
            return Err(Error::invalid("Gpu::with_stream", "the stream belongs to another context than this Gpu's".to_string()));
        }
        let blas = match &self.blas {
            Ok(_) => blas_handle(&stream)?,
            Err(why) => Err(why.clone()),
        };
        Ok(Gpu {
            info: self.info.clone(),
            stream,
            modules: self.modules.clone(),
            functions: Mutex::new(HashMap::new()),
            params: Mutex::new(HashMap::new()),
            node_marks: Mutex::new(None),
            programmatic: std::sync::atomic::AtomicBool::new(false),
            blas,
            _ctx: self._ctx.clone(),
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// One line: which device this is (hardware or the software device), name, compute capability.
    pub fn describe(&self) -> String {
        let i = &self.info;
        match i.kind {
            DeviceKind::Hardware => format!(
                "{} (sm_{}{}), driver {}, device {}",
                i.name, i.compute_capability.0, i.compute_capability.1, i.driver_version, i.ordinal
            ),
            DeviceKind::Software => format!("software device: the kernels compiled for the host, run on the CPU ({})", i.name),
        }
    }

    /// The software device's scheduling of threads, blocks and cp.async completion, e.g.
    /// `"threads=random:7,blocks=reverse,cp.async=issue"` (softgpu/runtime.cpp). An error on
    /// hardware, or for a string the device does not accept.
    pub fn set_software_schedule(&self, spec: &str) -> Result<()> {
        self.software_setting(b"qksoft_set_schedule", "schedule", spec)
    }

    /// The software device's last error report (what a failed launch printed), or an error on hardware.
    pub fn software_last_error(&self) -> Result<String> {
        let f = self.softgpu_symbol::<unsafe extern "C" fn(*mut std::ffi::c_char, usize)>(b"qksoft_last_error")?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: writes at most buf.len() bytes, NUL-terminated.
        unsafe { f(buf.as_mut_ptr().cast(), buf.len()) };
        Ok(String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned())
    }

    /// The software device's checking and counting tools, a comma-separated subset of
    /// `memcheck,initcheck,racecheck,counters` (or `none`); `memcheck,initcheck` unless
    /// `QK_SOFTGPU_TOOLS` says otherwise (softgpu/tools.cpp says what each does). A finding of
    /// memcheck, initcheck or racecheck fails the launch, as a fault does, and is the device's
    /// last error ([`Gpu::software_last_error`]). An error on hardware or for an unknown tool.
    pub fn set_software_tools(&self, spec: &str) -> Result<()> {
        self.software_setting(b"qksoft_set_tools", "tools", spec)
    }

    /// The software device's tools now on, e.g. `"memcheck,initcheck"`.
    pub fn software_tools(&self) -> Result<String> {
        let f = self.softgpu_symbol::<unsafe extern "C" fn(*mut std::ffi::c_char, usize)>(b"qksoft_tools")?;
        let mut buf = vec![0u8; 256];
        // SAFETY: writes at most buf.len() bytes, NUL-terminated.
        unsafe { f(buf.as_mut_ptr().cast(), buf.len()) };
        Ok(String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned())
    }

    /// The traffic counters of every launch, copy, set and cuBLAS call run since the last take,
    /// oldest first, while the `counters` tool is on (software device only).
    pub fn take_software_counters(&self) -> Result<Vec<SoftwareCounters>> {
        let size = self.softgpu_symbol::<unsafe extern "C" fn() -> usize>(b"qksoft_counters_size")?;
        let take = self.softgpu_symbol::<unsafe extern "C" fn(*mut SoftwareCounters, usize) -> usize>(b"qksoft_take_counters")?;
        // SAFETY: no arguments.
        let device_size = unsafe { size() };
        if device_size != std::mem::size_of::<SoftwareCounters>() {
            return Err(Error::unsupported("software device", format!("counters record of {device_size} bytes, expected {}", std::mem::size_of::<SoftwareCounters>())));
        }
        let mut all = Vec::new();
        loop {
            let mut chunk = vec![SoftwareCounters::default(); 4096];
            // SAFETY: the device writes at most chunk.len() records of this layout (size checked above).
            let n = unsafe { take(chunk.as_mut_ptr(), chunk.len()) };
            chunk.truncate(n);
            all.extend(chunk);
            if n < 4096 {
                return Ok(all);
            }
        }
    }

    /// Start timing every launch (kernel or cuBLAS call) on this `Gpu`'s stream: an event is
    /// recorded after each one until [`Gpu::end_node_timing`]. For profiling direct launches (not
    /// inside a stream capture: events are not graph nodes here).
    pub fn begin_node_timing(&self) -> Result<()> {
        let start = self._ctx.new_event(None).cuda("cuEventCreate")?;
        start.record(&self.stream).cuda("cuEventRecord")?;
        *self.node_marks.lock().unwrap_or_else(|e| e.into_inner()) = Some(vec![("start", start)]);
        Ok(())
    }

    /// Records the event after a launch named `name`, while node timing is on.
    pub(crate) fn mark_node(&self, name: &'static str) -> Result<()> {
        let mut marks = self.node_marks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(marks) = marks.as_mut() {
            let e = self._ctx.new_event(None).cuda("cuEventCreate")?;
            e.record(&self.stream).cuda("cuEventRecord")?;
            marks.push((name, e));
        }
        Ok(())
    }

    /// Stop timing; each launch since [`Gpu::begin_node_timing`] with the milliseconds from the
    /// previous mark to its own (so a copy or set queued between two launches counts in the second).
    pub fn end_node_timing(&self) -> Result<Vec<(&'static str, f64)>> {
        let marks = self.node_marks.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        if let Some((_, last)) = marks.last() {
            last.synchronize().cuda("cuEventSynchronize")?;
        }
        marks
            .windows(2)
            .map(|w| Ok((w[1].0, w[0].1.elapsed_ms(&w[1].1).cuda("cuEventElapsedTime")? as f64)))
            .collect()
    }

    /// Nanoseconds per fiber switch on the software device: (hand-written switch, ucontext).
    pub fn software_switch_ns(&self) -> Result<(f64, f64)> {
        let f = self.softgpu_symbol::<unsafe extern "C" fn(*mut f64, *mut f64)>(b"qksoft_measure_switch")?;
        let (mut custom, mut uc) = (0.0, 0.0);
        // SAFETY: writes two doubles.
        unsafe { f(&mut custom, &mut uc) };
        Ok((custom, uc))
    }

    /// Hands `spec` to the software device's setter `export` (schedule, tools); its refusal,
    /// with the device's reason, is an error naming `what`.
    fn software_setting(&self, export: &[u8], what: &str, spec: &str) -> Result<()> {
        let f = self.softgpu_symbol::<unsafe extern "C" fn(*const std::ffi::c_char, *mut std::ffi::c_char, usize) -> i32>(export)?;
        let spec_c = std::ffi::CString::new(spec).map_err(|_| Error::unsupported("software device", format!("{what} contain NUL")))?;
        let mut why = vec![0u8; 512];
        // SAFETY: the device reads `spec` and writes at most why.len() bytes, NUL-terminated.
        if unsafe { f(spec_c.as_ptr(), why.as_mut_ptr().cast(), why.len()) } != 0 {
            let why = String::from_utf8_lossy(&why[..why.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
            return Err(Error::unsupported("software device", format!("{what} {spec:?}: {why}")));
        }
        Ok(())
    }

    fn softgpu_symbol<F: Copy>(&self, name: &[u8]) -> Result<F> {
        if self.info.kind != DeviceKind::Software {
            return Err(Error::unsupported("software device", "this Gpu is hardware"));
        }
        // SAFETY: the symbol is one of the software device's exports, with the signature F.
        unsafe { cudarc::driver::sys::culib().get::<F>(name) }
            .map(|s| *s)
            .map_err(|e| Error::unsupported("software device", format!("missing export: {e}")))
    }

    /// The CUDA context (for loading modules or allocating outside the crate's tensors).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self._ctx
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
        self.blas.as_ref().map(|b| &b.handle).map_err(|reason| Error::CublasNotFound { reason: reason.clone() })
    }

    /// Launch `func` (kernel `name`), whose one parameter is the argument struct `args`
    /// (`cuda/args.h`), checked like [`Gpu::launcher`]'s launches. With programmatic launches on
    /// ([`Gpu::set_programmatic_launches`]) and supported ([`Gpu::programmatic_launches_supported`])
    /// it is a programmatic dependent launch (cuLaunchKernelEx with programmatic stream
    /// serialization; inside a captured graph, a programmatic edge): it may start while the kernel
    /// before it finishes, which these kernels allow by waiting for it first (`cuda/ptx.cuh`'s
    /// grid_dependency_wait).
    ///
    /// # Safety
    /// As [`KernelLaunch::launch`]: the kernel stays in bounds of every buffer `args` points to.
    pub unsafe fn launch_struct<S: KernelStruct>(&self, func: &CudaFunction, name: &'static str, args: &S, cfg: LaunchConfig) -> Result<()> {
        self.check_arguments(name, func, &[std::mem::size_of::<S>()])?;
        let call = || format!("cuLaunchKernelEx({name})");
        if self.programmatic.load(std::sync::atomic::Ordering::Relaxed) && self.programmatic_launches_supported() {
            use cudarc::driver::sys;
            self._ctx.bind_to_thread().map_err(|source| Error::Cuda { call: call(), source })?;
            // SAFETY: zero is a valid bit pattern of the attribute (an id and a union of integers).
            let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
            attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let config = sys::CUlaunchConfig {
                gridDimX: cfg.grid_dim.0,
                gridDimY: cfg.grid_dim.1,
                gridDimZ: cfg.grid_dim.2,
                blockDimX: cfg.block_dim.0,
                blockDimY: cfg.block_dim.1,
                blockDimZ: cfg.block_dim.2,
                sharedMemBytes: cfg.shared_mem_bytes,
                hStream: self.stream.cu_stream(),
                attrs: &mut attr,
                numAttrs: 1,
            };
            let mut params = [args as *const S as *mut std::ffi::c_void];
            // SAFETY: the config, attribute and parameter array outlive the call, which copies
            // them; the one parameter is `args`, of the size the kernel declares (checked above);
            // the caller's contract covers what the kernel does.
            unsafe { sys::cuLaunchKernelEx(&config, func.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }
                .result()
                .map_err(|source| Error::Cuda { call: call(), source })?;
        } else {
            let mut launch = self.stream.launch_builder(func);
            launch.arg(args);
            // SAFETY: the caller's contract (above).
            unsafe { launch.launch(cfg) }.map_err(|source| Error::Cuda { call: format!("cuLaunchKernel({name})"), source })?;
        }
        self.mark_node(name)
    }

    /// Launch the kernels that allow it ([`Gpu::launch_struct`]) as programmatic dependent
    /// launches from now on (`on`), or not; returns the previous setting. Off by default.
    pub fn set_programmatic_launches(&self, on: bool) -> bool {
        self.programmatic.swap(on, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether programmatic dependent launches are used when asked for: on a GPU of compute
    /// capability 9.0 or later whose SASS this build holds (the PTX fallback is compiled for sm_80,
    /// where the kernels' griddepcontrol.wait is compiled out, so a GPU running it JIT-compiled
    /// must not overlap them), and on the software device, which checks what such a launch
    /// promises (each thread waits before it touches device memory).
    pub fn programmatic_launches_supported(&self) -> bool {
        let (major, minor) = self.info.compute_capability;
        let cc = (major * 10 + minor) as u32;
        match self.info.kind {
            DeviceKind::Software => true,
            DeviceKind::Hardware => cc >= 90 && kernels::SASS_TARGETS.contains(&cc),
        }
    }

    /// A collector of device addresses for an argument struct on this GPU's stream ([`Addresses`]).
    pub fn addresses(&self) -> Addresses<'_> {
        Addresses { stream: &self.stream, guards: Vec::new() }
    }

    /// A launch of `func` (kernel `name`) on this Gpu's stream whose arguments are checked, before
    /// anything is queued, against the parameters the kernel declares: their count and each size,
    /// from cuFuncGetParamInfo. A 4-byte `int` pushed where the kernel takes a `long long` is an
    /// `Error::KernelArguments`, not 8 bytes of which 4 are garbage. Every op launches through this.
    pub fn launcher<'a>(&'a self, func: &'a CudaFunction, name: &'static str) -> KernelLaunch<'a> {
        KernelLaunch { gpu: self, name, args: self.stream.launch_builder(func), func, sizes: Vec::new() }
    }

    /// Compare the argument sizes `pushed` with the parameters of `func` as the driver reports
    /// them (cuFuncGetParamInfo, asked once per kernel; a driver older than CUDA 12.4 cannot say,
    /// and then nothing is checked).
    fn check_arguments(&self, name: &'static str, func: &CudaFunction, pushed: &[usize]) -> Result<()> {
        let mut cache = self.params.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !cache.contains_key(name) {
            match Self::param_sizes(func) {
                ParamSizes::Known(sizes) => cache.insert(name, Some(sizes)),
                ParamSizes::Never => cache.insert(name, None),
                // Not this time (asked again at the next launch); never a failed launch.
                ParamSizes::NotNow => return Ok(()),
            };
        }
        let Some(expected) = cache.get(name).and_then(|s| s.as_deref()) else { return Ok(()) };
        if expected == pushed {
            return Ok(());
        }
        let detail = if expected.len() != pushed.len() {
            format!("{} arguments pushed, the kernel takes {}", pushed.len(), expected.len())
        } else {
            let i = (0..expected.len()).find(|&i| expected[i] != pushed[i]).unwrap_or(0);
            format!("argument {i} is {} bytes, the kernel's parameter {i} is {} bytes", pushed[i], expected[i])
        };
        Err(Error::KernelArguments { kernel: name.to_string(), detail })
    }

    /// Parameter sizes of `func` from the driver. A driver without cuFuncGetParamInfo (older than
    /// CUDA 12.4), or one that lists no parameters, can never say. Any status other than success
    /// and the end of the list (CUDA_ERROR_INVALID_VALUE; CUDA_ERROR_NOT_SUPPORTED) means the
    /// driver cannot say now (e.g. a function that lazy loading has not loaded yet): the check is
    /// skipped for that launch, and the launch itself goes ahead and reports what it meets.
    fn param_sizes(func: &CudaFunction) -> ParamSizes {
        // SAFETY: looks the symbol up in the library cudarc loaded; no call is made.
        let present = unsafe { cudarc::driver::sys::culib().get::<unsafe extern "C" fn()>(b"cuFuncGetParamInfo").is_ok() };
        if !present {
            return ParamSizes::Never;
        }
        let mut sizes = Vec::new();
        loop {
            let (mut offset, mut size) = (0usize, 0usize);
            // SAFETY: a live function handle; the driver writes two size_t.
            let rc = unsafe { cudarc::driver::sys::cuFuncGetParamInfo(func.cu_function(), sizes.len(), &mut offset, &mut size) };
            match rc {
                cudarc::driver::sys::CUresult::CUDA_SUCCESS => sizes.push(size),
                // Past the last parameter.
                cudarc::driver::sys::CUresult::CUDA_ERROR_INVALID_VALUE => break,
                cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_SUPPORTED => return ParamSizes::Never,
                _ => return ParamSizes::NotNow,
            }
        }
        // A kernel of this crate always has parameters: a driver that lists none cannot say.
        if sizes.is_empty() { ParamSizes::Never } else { ParamSizes::Known(sizes) }
    }

    /// Kernel `name` from the fatbin compiled from `cuda/<module>.cu`, loaded once and cached.
    pub fn function(&self, module: &'static str, name: &'static str) -> Result<CudaFunction> {
        let mut cache = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = cache.get(name) {
            return Ok(f.clone());
        }
        let m = self.modules.get(module).ok_or_else(|| Error::Cuda {
            call: format!("load kernel {name}: module {module}.fatbin is not embedded"),
            source: cudarc::driver::DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_FOUND),
        })?;
        let f = m.load_function(name).cuda(format!("cuModuleGetFunction({module}, {name})"))?;
        // With lazy module loading (CUDA_MODULE_LOADING=LAZY, the default since CUDA 12.2) the
        // function is loaded at its first launch, which may be inside a stream capture (a decode
        // step's kernels are first fetched there). Load it now, where a failure is this call's.
        // SAFETY: looks the symbol up in the library cudarc loaded; no call is made.
        let loadable = unsafe { cudarc::driver::sys::culib().get::<unsafe extern "C" fn()>(b"cuFuncLoad").is_ok() };
        if loadable {
            // SAFETY: a live function handle of a module this Gpu holds.
            let rc = unsafe { cudarc::driver::sys::cuFuncLoad(f.cu_function()) };
            if rc != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
                return Err(Error::Cuda { call: format!("cuFuncLoad({module}, {name})"), source: cudarc::driver::DriverError(rc) });
            }
        }
        cache.insert(name, f.clone());
        Ok(f)
    }
}

/// What the driver says about a kernel's parameters.
enum ParamSizes {
    Known(Vec<usize>),
    /// It never can (no cuFuncGetParamInfo, or it is not supported): nothing is checked.
    Never,
    /// It cannot now: ask again at the next launch.
    NotNow,
}
