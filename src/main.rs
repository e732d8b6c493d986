//! The `qwen-kernels` command line.
//!
//! ```text
//! qwen-kernels check [--backend cpu|cuda] [--device N] [--model M]   every check, one row each; exit 1 on any FAIL
//! qwen-kernels diff  [--model M]                                     the whole model layer by layer (CPU reference)
//! qwen-kernels info  [--device N]                                    build targets, kernel resources, the device
//! ```
//! qwen-kernels check --checkpoint DIR [--name NAME]                  a real checkpoint's whole-model golden
//! qwen-kernels diff  --checkpoint DIR [--name NAME]
//! `--model` is a preset name (qwen2.5-0.5b, vibethinker-1.5b); without it, every preset.
//! `--checkpoint` reads a Hugging Face checkpoint directory (config.json, bf16 safetensors) whose
//! goldens `python3 golden/gen.py --checkpoint DIR --name NAME` wrote (NAME defaults to the
//! directory's name; goldens are read from $QK_GOLDEN_DIR or golden/data).

use qwen_kernels::check::{self, Backend};
use qwen_kernels::diff;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::{kernels, Error, Gpu};
use std::process::ExitCode;

const USAGE: &str = "usage: qwen-kernels check [--backend cpu|cuda] [--device N] [--model M]\n       \
                     qwen-kernels diff [--model M]\n       \
                     qwen-kernels check|diff --checkpoint DIR [--name NAME]\n       qwen-kernels info [--device N]";

struct Args {
    command: String,
    backend: Option<Backend>,
    device: usize,
    model: Option<Qwen2Config>,
    checkpoint: Option<std::path::PathBuf>,
    name: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or_else(|| USAGE.to_string())?;
    let mut args = Args { command, backend: None, device: 0, model: None, checkpoint: None, name: None };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => {
                args.backend = Some(match it.next().as_deref() {
                    Some("cpu") => Backend::Cpu,
                    Some("cuda") => Backend::Cuda,
                    other => return Err(format!("--backend takes cpu or cuda, got {other:?}\n{USAGE}")),
                })
            }
            "--device" => {
                args.device = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("--device takes a device ordinal\n{USAGE}"))?
            }
            "--model" => {
                let name = it.next().unwrap_or_default();
                let names: Vec<&str> = Qwen2Config::presets().iter().map(|c| c.name).collect();
                args.model = Some(
                    Qwen2Config::preset(&name).ok_or_else(|| format!("--model takes one of {names:?}, got {name:?}\n{USAGE}"))?,
                );
            }
            "--checkpoint" => args.checkpoint = Some(it.next().ok_or_else(|| format!("--checkpoint takes a directory\n{USAGE}"))?.into()),
            "--name" => args.name = Some(it.next().ok_or_else(|| format!("--name takes a model name\n{USAGE}"))?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// `--checkpoint`'s report: the directory and the name its goldens are filed under.
fn checkpoint_report(args: &Args) -> Option<Result<diff::ModelReport, Error>> {
    let dir = args.checkpoint.as_ref()?;
    let name = args.name.clone().unwrap_or_else(|| {
        dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default()
    });
    println!("checkpoint {} (goldens: {name})", dir.display());
    Some(diff::analyse_checkpoint(dir, &name, None))
}

fn run_check(args: &Args) -> Result<ExitCode, Error> {
    if let Some(report) = checkpoint_report(args) {
        let rows = diff::rows(&report?);
        let failed = check::print_table(Backend::Cpu, &rows);
        println!("{} passed, {} failed", rows.len() - failed, failed);
        return Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let (backend, gpu) = match args.backend {
        Some(Backend::Cpu) => (Backend::Cpu, None),
        Some(Backend::Cuda) => (Backend::Cuda, Some(Gpu::new(args.device)?)),
        None => match Gpu::new(args.device) {
            Ok(gpu) => (Backend::Cuda, Some(gpu)),
            Err(e) => {
                println!("backend: cpu (no usable GPU: {e})");
                (Backend::Cpu, None)
            }
        },
    };
    let mut rows = match &gpu {
        Some(gpu) => {
            let i = gpu.info();
            println!(
                "backend: cuda on device {} {} (sm_{}{}, driver {})",
                i.ordinal, i.name, i.compute_capability.0, i.compute_capability.1, i.driver_version
            );
            let mut rows = check::golden_rows(Some(gpu))?;
            rows.extend(check::cuda_rows(gpu)?);
            rows
        }
        None => {
            let mut rows = check::golden_rows(None)?;
            rows.extend(check::layer_rows()?);
            rows.extend(check::cpu_rows()?);
            // The whole model runs on the CPU reference only, until a GPU forward exists.
            for cfg in selected(args) {
                rows.extend(diff::rows(&diff::analyse(&cfg)?));
            }
            rows
        }
    };
    if let Some(m) = &args.model {
        rows.retain(|r| r.case == m.name);
    }
    let failed = check::print_table(backend, &rows);
    println!("{} passed, {} failed", rows.len() - failed, failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The presets `--model` selects (all without it).
fn selected(args: &Args) -> Vec<Qwen2Config> {
    match &args.model {
        Some(m) => vec![m.clone()],
        None => Qwen2Config::presets(),
    }
}

fn run_diff(args: &Args) -> Result<ExitCode, Error> {
    let mut failed = false;
    let reports: Vec<Result<diff::ModelReport, Error>> = match checkpoint_report(args) {
        Some(report) => vec![report],
        None => selected(args).iter().map(diff::analyse).collect(),
    };
    for report in reports {
        let report = report?;
        diff::print(&report);
        failed |= diff::rows(&report).iter().any(|r| !r.comparison.passed());
        println!();
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run_info(args: &Args) -> ExitCode {
    match kernels::TARGETS {
        Some(t) => println!("kernels: built for {t}"),
        None => println!("kernels: NOT built ({})", Error::KernelsNotBuilt),
    }
    for r in kernels::resources() {
        println!(
            "  {:<28} {:<6} {:>3} registers, {:>4} B stack, {:>4} B spill stores, {:>4} B spill loads",
            r.kernel, r.target, r.registers, r.stack_frame_bytes, r.spill_store_bytes, r.spill_load_bytes
        );
    }
    match Gpu::new(args.device) {
        Ok(gpu) => {
            let i = gpu.info();
            println!(
                "device {}: {} (sm_{}{}), {:.1} GiB, driver {}",
                i.ordinal,
                i.name,
                i.compute_capability.0,
                i.compute_capability.1,
                i.total_memory_bytes as f64 / (1u64 << 30) as f64,
                i.driver_version
            );
            if let Err(e) = gpu.blas() {
                println!("cuBLAS: {e}");
            }
        }
        Err(e) => println!("device: {e}"),
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match args.command.as_str() {
        "check" => run_check(&args).unwrap_or_else(|e| {
            eprintln!("qwen-kernels check: {e}");
            ExitCode::FAILURE
        }),
        "diff" => run_diff(&args).unwrap_or_else(|e| {
            eprintln!("qwen-kernels diff: {e}");
            ExitCode::FAILURE
        }),
        "info" => run_info(&args),
        other => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
