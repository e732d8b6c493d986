//! Compiles every `cuda/*.cu` into one fatbin in OUT_DIR and embeds them in the crate.
//!
//! nvcc is looked for, in order: `$NVCC`, `$CUDA_HOME/bin/nvcc`, `$CUDA_PATH/bin/nvcc`, `nvcc` on `PATH`,
//! then the project's own toolchain folder that `scripts/setup-cuda.sh` fills
//! (`.toolchain/cuda/nvidia/cu13/bin/nvcc`, CUDA 13.0 from PyPI).
//!
//! Targets: SASS for sm_80, sm_86, sm_89, sm_90 and PTX for compute_80 (JIT for anything newer).
//! `CUDA_COMPUTE_CAP=90` (or `80,90`, ...) replaces the SASS list; PTX is then emitted for the lowest one.
//!
//! Without nvcc the crate still builds: a cargo warning says how to get nvcc, the generated module
//! holds no kernels, and `Gpu::new()` returns `Error::KernelsNotBuilt`. When nvcc is found, a
//! compile error fails the build: kernels are never silently missing.
//!
//! The generated module also records what the kernels were built for (`SASS_TARGETS`,
//! `PTX_TARGET`) and the `CUDA_COMPUTE_CAP` value that chose them (`COMPUTE_CAP`), so tests and
//! tools check the build they run, not the environment they happen to run in.
//!
//! nvcc's `-Xptxas -v` resource report (registers, spills per kernel and target) is kept in
//! `OUT_DIR/ptxas-report.txt` and embedded as `qwen_kernels::kernels::PTXAS_REPORT`, where tests read it.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "softgpu/build.rs"]
mod softgpu;

const DEFAULT_SASS: &[u32] = &[80, 86, 89, 90];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let cuda_dir = manifest.join("cuda");

    println!("cargo:rerun-if-changed=cuda");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // libclang, for tests/kernel_args.rs only (bindgen at test time; the build never needs it).
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    let toolchain_libclang = manifest.join(".toolchain/libclang/clang/native/libclang.so");
    println!("cargo:rerun-if-changed={}", toolchain_libclang.display());
    if env::var_os("LIBCLANG_PATH").is_none() && !toolchain_libclang.exists() {
        println!("cargo:rustc-cfg=qk_no_libclang");
    }
    let toolchain_nvcc = manifest.join(".toolchain/cuda/nvidia/cu13/bin/nvcc");
    println!("cargo:rerun-if-changed={}", toolchain_nvcc.display());

    let mut sources: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(&cuda_dir).expect("cuda/ directory") {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("cu") | Some("cuh") | Some("h")) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        if ext == Some("cu") {
            sources.push(path);
        }
    }
    sources.sort();

    let generated = out_dir.join("kernels.rs");
    let compute_cap = env::var("CUDA_COMPUTE_CAP").ok().filter(|v| !v.trim().is_empty());
    let Some(nvcc) = find_nvcc(&toolchain_nvcc) else {
        println!(
            "cargo:warning=qwen-kernels: nvcc not found, CUDA kernels NOT built (Gpu::new() will return \
             Error::KernelsNotBuilt). Run scripts/setup-cuda.sh (installs CUDA 13.0 nvcc from PyPI into \
             .toolchain/), or set NVCC / CUDA_HOME."
        );
        // Tests that need the kernels are ignored, with the reason, rather than passed unchecked.
        println!("cargo:rustc-cfg=qk_no_kernels");
        write_generated(&generated, None, compute_cap.as_deref(), &[], "", None);
        return;
    };

    let sass = sass_targets(compute_cap.as_deref());
    let ptx = *sass.iter().min().unwrap();
    let mut modules = Vec::new();
    let mut report = String::new();
    for src in &sources {
        let name = src.file_stem().unwrap().to_str().unwrap().to_string();
        let fatbin = out_dir.join(format!("{name}.fatbin"));
        let mut cmd = Command::new(&nvcc);
        cmd.arg("--fatbin")
            .arg("-O3")
            .arg("-std=c++17")
            .arg("-lineinfo")
            .arg("-Xptxas=-v")
            .arg("--Werror=all-warnings")
            .arg("-I")
            .arg(&cuda_dir);
        for cc in &sass {
            cmd.arg(format!("-gencode=arch=compute_{cc},code=sm_{cc}"));
        }
        cmd.arg(format!("-gencode=arch=compute_{ptx},code=compute_{ptx}"));
        cmd.arg("-o").arg(&fatbin).arg(src);
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("failed to run {}: {e}", nvcc.display()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            panic!(
                "nvcc failed on {}:\n{}\n{}",
                src.display(),
                String::from_utf8_lossy(&output.stdout),
                stderr
            );
        }
        writeln!(report, "### {name}.cu").unwrap();
        report.push_str(&stderr);
        modules.push((name, fatbin));
    }
    fs::write(out_dir.join("ptxas-report.txt"), &report).unwrap();
    let soft = softgpu::build(&manifest, &out_dir, &nvcc, &report, &modules);
    let built = Built { sass: &sass, ptx };
    write_generated(&generated, Some(built), compute_cap.as_deref(), &modules, &report, Some(&soft));
}

/// The targets nvcc compiled for.
#[derive(Clone, Copy)]
struct Built<'a> {
    sass: &'a [u32],
    ptx: u32,
}

fn find_nvcc(toolchain_nvcc: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            let p = PathBuf::from(home).join("bin/nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    toolchain_nvcc.is_file().then(|| toolchain_nvcc.to_path_buf())
}

fn sass_targets(compute_cap: Option<&str>) -> Vec<u32> {
    match compute_cap {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .unwrap_or_else(|_| panic!("CUDA_COMPUTE_CAP: '{s}' is not a number like 90"))
            })
            .collect(),
        None => DEFAULT_SASS.to_vec(),
    }
}

fn write_generated(
    path: &Path,
    built: Option<Built>,
    compute_cap: Option<&str>,
    modules: &[(String, PathBuf)],
    report: &str,
    soft: Option<&softgpu::Built>,
) {
    let mut s = String::new();
    s.push_str("// Generated by build.rs.\n");
    match built {
        Some(Built { sass, ptx }) => {
            let names: Vec<String> = sass.iter().map(|c| format!("sm_{c}")).collect();
            let targets = format!("{} + compute_{ptx} PTX", names.join(", "));
            writeln!(s, "pub const TARGETS: Option<&str> = Some({targets:?});").unwrap();
            writeln!(s, "pub const SASS_TARGETS: &[u32] = &{sass:?};").unwrap();
            writeln!(s, "pub const PTX_TARGET: Option<u32> = Some({ptx});").unwrap();
        }
        None => s.push_str(
            "pub const TARGETS: Option<&str> = None;\n\
             pub const SASS_TARGETS: &[u32] = &[];\n\
             pub const PTX_TARGET: Option<u32> = None;\n",
        ),
    }
    writeln!(s, "pub const COMPUTE_CAP: Option<&str> = {compute_cap:?};").unwrap();
    writeln!(s, "pub const DEFAULT_SASS_TARGETS: &[u32] = &{DEFAULT_SASS:?};").unwrap();
    s.push_str("pub const MODULES: &[(&str, &[u8])] = &[\n");
    for (name, file) in modules {
        writeln!(s, "    ({name:?}, include_bytes!({:?})),", file.display().to_string()).unwrap();
    }
    s.push_str("];\n");
    writeln!(s, "pub const PTXAS_REPORT: &str = {report:?};").unwrap();
    match soft {
        Some(b) => {
            writeln!(
                s,
                "pub const SOFTGPU: Option<SoftGpuLibraries> = Some(SoftGpuLibraries {{ libcuda: include_bytes!({:?}), libcublas: include_bytes!({:?}), libcuda_lines: include_str!({:?}) }});",
                b.libcuda.display().to_string(),
                b.libcublas.display().to_string(),
                format!("{}.lines", b.libcuda.display())
            )
            .unwrap();
            s.push_str("pub const SOFTGPU_MUTANTS: &[(&str, &str)] = &[\n");
            for (name, lib) in &b.mutants {
                writeln!(s, "    ({name:?}, {:?}),", lib.display().to_string()).unwrap();
            }
            s.push_str("];\n");
        }
        None => {
            s.push_str("pub const SOFTGPU: Option<SoftGpuLibraries> = None;\n");
            s.push_str("pub const SOFTGPU_MUTANTS: &[(&str, &str)] = &[];\n");
        }
    }
    fs::write(path, s).unwrap();
}
