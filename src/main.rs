//! The `qwen-kernels` command line.
//!
//! ```text
//! qwen-kernels check [--backend cpu|cuda] [--device N]   every check, one row each; exit 1 on any FAIL
//! qwen-kernels info  [--device N]                        build targets, kernel resources, the device
//! ```

use qwen_kernels::check::{self, Backend};
use qwen_kernels::{kernels, Error, Gpu};
use std::process::ExitCode;

const USAGE: &str = "usage: qwen-kernels check [--backend cpu|cuda] [--device N]\n       qwen-kernels info [--device N]";

struct Args {
    command: String,
    backend: Option<Backend>,
    device: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or_else(|| USAGE.to_string())?;
    let mut args = Args { command, backend: None, device: 0 };
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
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn run_check(args: &Args) -> Result<ExitCode, Error> {
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
    let rows = match &gpu {
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
            rows
        }
    };
    let failed = check::print_table(backend, &rows);
    println!("{} passed, {} failed", rows.len() - failed, failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
        "info" => run_info(&args),
        other => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
