"""PyTorch peers of benches/rmsnorm.rs, measured the same way: same shapes, same bytes counted,
CUDA events around batches of calls, inputs rotated through buffers larger than L2, GB/s (1e9) and
% of the device copy bandwidth measured in this run.

Peers: transformers' Qwen2RMSNorm (eager, as the model runs it), torch.nn.functional.rms_norm, and
for the fused op `residual = x + residual` followed by each of them.
Run: python3 benches/peers/rmsnorm_torch.py  (needs torch with CUDA; transformers optional).
"""
import sys

import torch

ROTATE_BYTES = 256 << 20
EPS = 1e-6


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


def time_per_call(fn, windows, iters=200, batches=10):
    for i in range(20):
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


def main():
    if not torch.cuda.is_available():
        print("rmsnorm peers: skipped: torch sees no CUDA device")
        return 0
    try:
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm
    except ImportError:
        Qwen2RMSNorm = None
    copy = copy_bandwidth_gbps()
    print(f"rmsnorm peers: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"device copy bandwidth {copy:.0f} GB/s")
    print(f"{'case':<52} {'bytes':>12} {'time_us':>10} {'GB/s':>9} {'%copy':>9}")
    for model, hidden in (("qwen2.5-0.5b", 896), ("vibethinker-1.5b", 1536)):
        for rows in (1, 64, 4096):
            for fused in (False, True):
                dtype = torch.bfloat16
                size = 2
                nbytes = ((4 if fused else 2) * rows * hidden + hidden) * size
                windows = max(2, -(-ROTATE_BYTES // nbytes))
                x = torch.randn(windows * rows, hidden, dtype=dtype, device="cuda")
                res = torch.randn_like(x)
                w = torch.rand(hidden, dtype=dtype, device="cuda")
                peers = {"F.rms_norm": lambda t: torch.nn.functional.rms_norm(t, (hidden,), w, EPS)}
                if Qwen2RMSNorm is not None:
                    module = Qwen2RMSNorm(hidden, eps=EPS).to(device="cuda", dtype=dtype)
                    peers["Qwen2RMSNorm"] = module
                for peer, norm in peers.items():
                    def call(i, norm=norm):
                        xs = x[i * rows:(i + 1) * rows]
                        if fused:
                            r = res[i * rows:(i + 1) * rows]
                            r.add_(xs)
                            return norm(r)
                        return norm(xs)
                    op = "add_rmsnorm" if fused else "rmsnorm"
                    name = f"{op}/{peer}/{model}/bf16/rows{rows}"
                    seconds = time_per_call(call, windows)
                    gbps = nbytes / seconds / 1e9
                    print(f"{name:<52} {nbytes:>12} {seconds * 1e6:>10.2f} {gbps:>9.1f} {100 * gbps / copy:>8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
