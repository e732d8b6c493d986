//! What every benchmark shares: opening the GPU (a missing one skips the bench, or fails it under
//! `QK_REQUIRE_GPU=1`), CUDA-event timing of a batch of launches, the device's copy bandwidth (the
//! ceiling memory-bound kernels are reported against), and the commit the figures belong to.

use cudarc::driver::sys::CUevent_flags;
use qwen_kernels::Gpu;
use std::time::Duration;

/// The GPU, or `None` (after saying why) when there is none and none is required.
pub fn open_gpu(bench: &str) -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("QK_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            eprintln!("{bench} bench: QK_REQUIRE_GPU=1 but no GPU: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            println!("{bench} bench: skipped: {e}");
            None
        }
    }
}

/// Event-timed duration of `iters` calls of `launch(i)` queued back to back on the GPU's stream.
pub fn time_launches(gpu: &Gpu, iters: u64, mut launch: impl FnMut(usize)) -> Duration {
    let ctx = gpu.stream().context();
    let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
    let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
    start.record(gpu.stream()).unwrap();
    for i in 0..iters as usize {
        launch(i);
    }
    end.record(gpu.stream()).unwrap();
    end.synchronize().unwrap();
    Duration::from_secs_f64(start.elapsed_ms(&end).unwrap() as f64 * 1e-3)
}

/// Device-to-device copy bandwidth in GB/s (cuMemcpyDtoD of 512 MiB, read + write bytes counted).
pub fn copy_bandwidth_gbps(gpu: &Gpu) -> f64 {
    const BYTES: usize = 512 << 20;
    const REPS: usize = 20;
    let src = gpu.stream().alloc_zeros::<u8>(BYTES).unwrap();
    let mut dst = gpu.stream().alloc_zeros::<u8>(BYTES).unwrap();
    for _ in 0..3 {
        gpu.stream().memcpy_dtod(&src, &mut dst).unwrap();
    }
    let elapsed = time_launches(gpu, REPS as u64, |_| gpu.stream().memcpy_dtod(&src, &mut dst).unwrap());
    (2 * BYTES * REPS) as f64 / elapsed.as_secs_f64() / 1e9
}

/// `$QK_COMMIT` (bundles set it), else `git rev-parse --short HEAD`, else "unknown".
pub fn commit() -> String {
    std::env::var("QK_COMMIT")
        .ok()
        .or_else(|| {
            let out = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}
