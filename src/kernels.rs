//! The compiled kernels, embedded at build time (see build.rs).
//!
//! - `MODULES`: one fatbin per `cuda/*.cu`, by file stem. Empty when the crate was built without nvcc.
//! - `TARGETS`: the SASS and PTX targets compiled, as text (None without nvcc); `SASS_TARGETS` and
//!   `PTX_TARGET` the same as numbers (empty / None without nvcc).
//! - `COMPUTE_CAP`: the `CUDA_COMPUTE_CAP` value the crate was built with (None: unset, so
//!   `DEFAULT_SASS_TARGETS`). It is the build's, whatever the environment at run time says.
//! - `PTXAS_REPORT`: nvcc's `-Xptxas -v` output (registers, spills, shared memory per kernel and target).

//! - `SOFTGPU`: the software device's `libcuda.so` and `libcublas.so` (softgpu/), built with the
//!   kernels (None without nvcc). `SOFTGPU_MUTANTS`: test-only libraries with one planted defect
//!   each (softgpu/mutants.rs), by name and path in the build folder.

/// The two libraries of the software device, as built (see `Gpu::emulated`).
pub struct SoftGpuLibraries {
    pub libcuda: &'static [u8],
    pub libcublas: &'static [u8],
    /// libcuda.so's line table: the source line of each access site the tools report
    /// (softgpu/build.rs, `line_table`), handed to the device when it is loaded.
    pub libcuda_lines: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Whether this build carries compiled kernels.
pub fn built() -> bool {
    !MODULES.is_empty()
}

/// One kernel's resource usage on one target, parsed from `PTXAS_REPORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: String,
    pub target: String,
    pub registers: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub stack_frame_bytes: u32,
    /// Static shared memory ("bytes smem").
    pub static_shared_bytes: u32,
}

/// Parse ptxas' verbose report into one entry per (kernel, target).
///
/// ptxas prints, per entry function and target:
/// `Compiling entry function 'NAME' for 'sm_90'`, then
/// `N bytes stack frame, N bytes spill stores, N bytes spill loads`, then `Used N registers, ...`.
pub fn resources() -> Vec<KernelResources> {
    parse_ptxas_report(PTXAS_REPORT)
}

pub fn parse_ptxas_report(report: &str) -> Vec<KernelResources> {
    fn number_before(line: &str, unit: &str) -> Option<u32> {
        let end = line.find(unit)?;
        line[..end].split_whitespace().last()?.parse().ok()
    }
    let mut out: Vec<KernelResources> = Vec::new();
    let mut current: Option<KernelResources> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let mut parts = rest.split('\'');
            let kernel = parts.next().unwrap_or_default().to_string();
            let target = parts.nth(1).unwrap_or_default().to_string();
            current = Some(KernelResources {
                kernel,
                target,
                registers: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                stack_frame_bytes: 0,
                static_shared_bytes: 0,
            });
        } else if let Some(cur) = current.as_mut() {
            if line.contains("bytes stack frame") {
                cur.stack_frame_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                cur.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
                cur.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                cur.registers = number_before(line, "registers").unwrap_or(0);
                cur.static_shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out.extend(current);
    out
}
