//! Negative tests: the software device can fail, and the suite catches each planted defect.
//!
//! - `source_mutants_are_caught` (software device only): for each source mutant of
//!   softgpu/mutants.rs (one kernel file with one defect: a wrong ldmatrix .trans, bf16 P in one
//!   term or in two, a causal mask off by one, no barrier after the cp.async wait, no trailing
//!   barrier in the double-buffered loop, a read one past a buffer, a warp that exits before a
//!   barrier the others wait at, a shuffle half the lanes skip, half a warp at an mma on another
//!   line), this binary
//!   runs the GPU tests named in the mutant's `caught_by` again, in a child process with the mutant
//!   in place of the real module (QK_SOFTGPU_MUTANT), and requires them to fail, printing `says`.
//! - A launch above 48 KiB of dynamic shared memory without cuFuncSetAttribute fails, as on a GPU.
//! - An argument of the wrong size (an i32 where the kernel takes a long long) is an error before
//!   the launch.
//! - With QK_REQUIRE_GPU=1 a test filter that selects nothing fails the run.

use crate::mutants::MUTANTS;
use crate::GpuTest;
use cudarc::driver::LaunchConfig;
use cudarc::nvrtc::Ptx;
use qwen_kernels::{kernels, DType, DeviceTensor, Error, Gpu, HostTensor};
use std::process::Command;

pub const TESTS: &[GpuTest] = &[
    ("negative::source_mutants_are_caught", source_mutants_are_caught),
    ("negative::launch_over_48k_without_attribute_fails", launch_over_48k_without_attribute_fails),
    ("negative::argument_of_the_wrong_size_is_an_error", argument_of_the_wrong_size_is_an_error),
    ("negative::required_gpu_with_a_filter_that_selects_nothing_fails", required_gpu_with_a_filter_that_selects_nothing_fails),
    ("negative::lazily_loaded_functions_launch_and_capture", lazily_loaded_functions_launch_and_capture),
];

/// Under CUDA's lazy loading a function is loaded at its first launch, and until then
/// cuFuncGetParamInfo may answer CUDA_ERROR_NOT_FOUND; the decode step's kernels are first
/// fetched inside a stream capture. With the software device acting so
/// (QK_SOFTGPU_LAZY_FUNCTIONS=1), the graph tests must pass: `Gpu::function` loads each function
/// (cuFuncLoad) before anything can capture it, and an argument check the driver cannot answer
/// is not a failed launch. (Before that, every launch of a not-yet-loaded kernel failed.)
fn lazily_loaded_functions_launch_and_capture(_gpu: &Gpu) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["graph::", "model::graph_replay_equals_direct_launches"])
        .env("QK_DEVICE", "emulated")
        .env("QK_SOFTGPU_LAZY_FUNCTIONS", "1")
        .env(CHILD, "1")
        .env("QK_GPU_JOBS", "1")
        .env_remove("QK_GPU_SHARD")
        .env_remove("QK_GPU_CLAIMS")
        .env_remove("QK_REQUIRE_GPU")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let closing = text.lines().rev().find(|l| l.starts_with("software-gpu: ")).unwrap_or("(no closing line)");
    assert!(out.status.success() && closing.ends_with(" 0 failed, 0 skipped") && !closing.starts_with("software-gpu: 0 passed"), "{text}");
}

/// With QK_REQUIRE_GPU=1, a filter that matches no test must fail the run, not report "0 passed".
fn required_gpu_with_a_filter_that_selects_nothing_fails(_gpu: &Gpu) {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("no-test-is-called-this")
        .env("QK_REQUIRE_GPU", "1")
        .env(CHILD, "1")
        .env("QK_GPU_JOBS", "1")
        .env_remove("QK_GPU_SHARD")
        .env_remove("QK_GPU_CLAIMS")
        .env_remove("QK_DEVICE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "exit {} with:\n{text}", out.status);
    assert!(text.contains("selects none of the"), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.ends_with(": 0 passed, 1 failed, 0 skipped")), "{text}");
}

/// How the software device prints an error that failed a launch (softgpu/runtime.cpp, driver.cpp).
const SOFTWARE_DEVICE_ERROR: &str = "qwen-kernels software device: ";

/// Set in the child runs, which must not start children of their own.
pub const CHILD: &str = "QK_GPU_NEGATIVE_CHILD";

fn source_mutants_are_caught(_gpu: &Gpu) {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut missed = Vec::new();
    for m in MUTANTS {
        // Where the build put it, or, in a GPU bundle (scripts/bundle.sh), bin/../softgpu-mutants/.
        let built = kernels::SOFTGPU_MUTANTS.iter().find(|(name, _)| *name == m.name).map(|(_, p)| std::path::PathBuf::from(p));
        let bundled = exe.parent().and_then(|bin| bin.parent()).map(|b| b.join("softgpu-mutants").join(format!("lib{}.so", m.name)));
        let lib = [built, bundled].into_iter().flatten().find(|p| p.exists());
        let lib = lib.unwrap_or_else(|| panic!("mutant {} was not built (softgpu/mutants.rs)", m.name));
        let out = Command::new(&exe)
            .args(m.caught_by)
            .env("QK_DEVICE", "emulated")
            .env("QK_SOFTGPU_MUTANT", lib)
            .env(CHILD, "1")
            .env("QK_GPU_JOBS", "1")
            .env_remove("QK_GPU_SHARD")
            .env_remove("QK_GPU_CLAIMS")
            .env_remove("QK_REQUIRE_GPU")
            .env_remove("QK_SOFTGPU_SCHEDULE")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let closing = text.lines().rev().find(|l| l.starts_with("software-gpu: ")).unwrap_or("(no closing line)");
        let failed = closing.split(", ").nth(1).and_then(|f| f.split(' ').next()).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
        // A defect of results must be caught by the assertion it trips, in a run where every
        // launch ran: a software device error there (a launch that failed, not a wrong answer)
        // shows that the mutant broke something other than what it plants.
        let device_error = text.lines().find(|l| l.contains(SOFTWARE_DEVICE_ERROR));
        let unexpected_device_error = !m.device_error && device_error.is_some();
        // A tool's report must name the line of the access: <line of `at`> in the mutated module.
        let line = m.at.map(|at| {
            let source = std::fs::read_to_string(format!("{}/cuda/{}.cu", env!("CARGO_MANIFEST_DIR"), m.module))
                .map(|s| s.replacen(m.find, m.replace, 1))
                .unwrap_or_default();
            let n = source.find(at).map(|i| source[..i].matches('\n').count() + 1);
            // The mutated file is built as mutants/<name>.<module>.cu, and the report names it so.
            format!("{}.{}.cu:{}", m.name, m.module, n.unwrap_or_else(|| panic!("mutant {}: `at` text is not in the mutated source", m.name)))
        });
        let names_line = line.as_ref().is_none_or(|l| text.lines().any(|t| t.contains(m.says) && t.contains(&format!("{l} ")) || t.contains(m.says) && t.contains(&format!("{l})"))));
        let caught = !out.status.success() && failed > 0 && text.contains(m.says) && !unexpected_device_error && names_line;
        let evidence = if unexpected_device_error { device_error.unwrap_or("") } else { text.lines().find(|l| l.contains(m.says)).unwrap_or("") }.trim();
        // The child's summary is reworded so that no line here reads like this runner's own.
        println!(
            "  mutant {:<32} {} by {:?} (child run: {}); {:.150}",
            m.name,
            if caught {
                "caught"
            } else if unexpected_device_error {
                "NOT CAUGHT (a software device error, not the assertion)"
            } else if !names_line {
                "NOT CAUGHT (the report does not name the line)"
            } else {
                "NOT CAUGHT"
            },
            m.caught_by,
            closing.replace(", ", " / "),
            evidence
        );
        if !caught {
            missed.push(m.name);
        }
    }
    assert!(missed.is_empty(), "planted defects the suite did not catch: {missed:?}");
}

/// The tensor-core prefill at D 128 needs 68 KiB of dynamic shared memory. On a fresh load of the
/// module (so no earlier call has raised the limit) the launch must fail until the attribute is set.
fn launch_over_48k_without_attribute_fails(gpu: &Gpu) {
    let name = "attn_prefill_mma_bf16_d128";
    let image = kernels::MODULES.iter().find(|(m, _)| *m == "attention").unwrap().1;
    let module = gpu.context().load_module(Ptx::from_binary(image.to_vec())).unwrap();
    let f = module.load_function(name).unwrap();
    let (tokens, heads, dim) = (64usize, 2usize, 128usize);
    let t = |n: usize| DeviceTensor::from_host(gpu, &HostTensor::full(DType::BF16, &[n], 0.5).unwrap()).unwrap();
    let (q, k, v, mut o) = (t(tokens * heads * dim), t(tokens * dim), t(tokens * dim), t(tokens * heads * dim));
    let shared = (2 * 2 * 64 * (dim + 8) * 2) as u32;
    assert!(shared > 48 * 1024);
    let cfg = LaunchConfig { grid_dim: (1, heads as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: shared };
    let (ti, hi, gi, hs, rs, scale) = (tokens as i32, heads as i32, heads as i32, dim as i64, dim as i64, 1.0f32 / (dim as f32).sqrt());
    let launch = |gpu: &Gpu, q: &DeviceTensor, k: &DeviceTensor, v: &DeviceTensor, o: &mut DeviceTensor| {
        let (qv, kv, vv) = (q.view(), k.view(), v.view());
        let mut ov = o.view_mut();
        let mut args = gpu.launcher(&f, name);
        args.arg(qv.device_data()).arg(kv.device_data()).arg(vv.device_data()).arg(ov.device_data_mut());
        // Contiguous keys: no status, block table, lengths or cu_seqlens (null); one page of the
        // whole context.
        let (null, one, page_stride) = (0u64, 1i32, 0i64);
        args.arg(&null).arg(&null).arg(&null).arg(&null).arg(&ti).arg(&one).arg(&ti).arg(&one);
        args.arg(&ti).arg(&ti).arg(&hi).arg(&gi).arg(&page_stride).arg(&hs).arg(&rs).arg(&scale);
        // SAFETY: q, o hold 64 tokens x 2 heads x 128, k, v 64 x 1 x 128 bf16 (one kv head,
        // group 2); one block of 64 query rows per head.
        unsafe { args.launch(cfg) }
    };
    match launch(gpu, &q, &k, &v, &mut o) {
        Err(Error::Cuda { source, .. }) => {
            assert_eq!(source.0, cudarc::driver::sys::CUresult::CUDA_ERROR_INVALID_VALUE, "{name} without the attribute: {source}");
        }
        other => panic!("{name} with {shared} bytes of dynamic shared memory and no attribute: expected CUDA_ERROR_INVALID_VALUE, got {other:?}"),
    }
    f.set_attribute(cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32).unwrap();
    launch(gpu, &q, &k, &v, &mut o).unwrap();
    // Every weight is equal and every v is 0.5: the output is 0.5.
    assert!(o.to_host(gpu).unwrap().data().iter().all(|&x| x == 0.5));
}

/// argmax_partial takes (logits, part_v, part_i, long long stride, int n_valid, int chunk).
fn argument_of_the_wrong_size_is_an_error(gpu: &Gpu) {
    let name = "argmax_partial_f32_scalar";
    let f = gpu.function("argmax", name).unwrap();
    let logits = DeviceTensor::from_host(gpu, &HostTensor::full(DType::F32, &[8], 1.0).unwrap()).unwrap();
    let mut part = DeviceTensor::from_host(gpu, &HostTensor::full(DType::F32, &[256], 0.0).unwrap()).unwrap();
    let mut part_i = DeviceTensor::from_host(gpu, &HostTensor::full(DType::F32, &[256], 0.0).unwrap()).unwrap();
    let (stride_wrong, n_valid, chunk) = (8i32, 8i32, 8i32);
    let (lv, mut pv, mut piv) = (logits.view(), part.view_mut(), part_i.view_mut());
    let mut args = gpu.launcher(&f, name);
    args.arg(lv.device_data()).arg(pv.device_data_mut()).arg(piv.device_data_mut());
    args.arg(&stride_wrong).arg(&n_valid).arg(&chunk);
    let cfg = LaunchConfig { grid_dim: (256, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: never launched: the argument check fails first (asserted below).
    match unsafe { args.launch(cfg) } {
        Err(Error::KernelArguments { kernel, detail }) => {
            assert_eq!(kernel, name);
            assert!(detail.contains("argument 3 is 4 bytes") && detail.contains("is 8 bytes"), "{detail}");
        }
        other => panic!("an i32 pushed for a long long: expected Error::KernelArguments, got {other:?}"),
    }
}
