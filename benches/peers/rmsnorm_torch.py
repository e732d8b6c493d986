"""PyTorch peers of benches/rmsnorm.rs, measured the same way: same shapes, same bytes counted,
CUDA events around batches of calls, inputs rotated through buffers larger than L2, GB/s (1e9) and
% of the device copy bandwidth measured in this run.

Peers: transformers' Qwen2RMSNorm (eager, as the model runs it), torch.nn.functional.rms_norm, and
for the fused op `residual = x + residual` followed by each of them.
Run: python3 benches/peers/rmsnorm_torch.py  (needs torch with CUDA; transformers optional).
"""
import sys

import torch

from timing import copy_bandwidth_gbps, time_per_call

ROTATE_BYTES = 256 << 20
EPS = 1e-6


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
                    seconds = time_per_call(call, windows, iters=200, batches=10, warmup=20)
                    gbps = nbytes / seconds / 1e9
                    print(f"{name:<52} {nbytes:>12} {seconds * 1e6:>10.2f} {gbps:>9.1f} {100 * gbps / copy:>8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
