"""What every PyTorch peer shares with the Rust benches (benches/common/mod.rs): the device copy
bandwidth (512 MiB device-to-device, read + write bytes) and CUDA-event timing of batches of
calls, each call on its own window of buffers (`fn(i % windows)`) so inputs come from DRAM."""
import torch


def copy_bandwidth_gbps():
    n = 512 << 20
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 20
    start.record()
    for _ in range(reps):
        dst.copy_(src)
    end.record()
    end.synchronize()
    return 2 * n * reps / (start.elapsed_time(end) * 1e-3) / 1e9


def time_per_call(fn, windows, iters, batches, warmup):
    """Mean seconds per call over `batches` event-timed batches of `iters` calls, after `warmup`."""
    for i in range(warmup):
        fn(i % windows)
    total = 0.0
    for _ in range(batches):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(iters):
            fn(i % windows)
        end.record()
        end.synchronize()
        total += start.elapsed_time(end) * 1e-3 / iters
    return total / batches
