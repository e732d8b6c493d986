"""PyTorch peers of benches/attention.rs, measured the same way: same shapes, same work counted,
CUDA events around batches of calls, the same columns.

Peers: torch.nn.functional.scaled_dot_product_attention with each of the flash
(SDPBackend.FLASH_ATTENTION) and cuDNN (SDPBackend.CUDNN_ATTENTION) backends, selected with
torch.nn.attention.sdpa_kernel, bf16 (and f16 for one prefill size, as the Rust bench).
- Prefill: q [1, heads, T, D], k/v [1, kv_heads, T, D], is_causal=True, enable_gqa=True.
  FLOPs counted 4 * T * S * D * heads / 2.
- Decode: q [B, heads, 1, D] against k/v [B, kv_heads, len, D] (all visible: no mask),
  enable_gqa=True. Bytes counted B * 2 * kv_heads * len * D * 2 (K and V read once). Inputs are
  rotated through windows of caches past 256 MiB so bytes come from DRAM.
A backend that rejects a shape (GQA or a head dim it lacks) is printed as "unsupported" with the
reason. If enable_gqa is rejected, k/v are repeated to `heads` heads (noted in the line; the
counted work stays the same, so that peer reads more bytes than it is credited with).
Run: python3 benches/peers/attention_torch.py  (needs torch >= 2.5 with CUDA).
"""
import sys

import torch

from timing import copy_bandwidth_gbps, time_per_call

ROTATE_BYTES = 256 << 20
MODELS = (("qwen2.5-0.5b", 14, 2, 64), ("vibethinker-1.5b", 12, 2, 128))


def sdpa_call(backend, q, k, v, causal):
    from torch.nn.attention import sdpa_kernel
    F = torch.nn.functional

    def call(kk, vv):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, enable_gqa=True)

    try:
        call(k[0], v[0])
        torch.cuda.synchronize()
        return (lambda i: call(k[i], v[i])), ""
    except (RuntimeError, TypeError) as gqa_error:
        group = q.shape[1] // k[0].shape[1]

        def call_repeated(i):
            kk = k[i].repeat_interleave(group, dim=1)
            vv = v[i].repeat_interleave(group, dim=1)
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal)

        try:
            call_repeated(0)
            torch.cuda.synchronize()
            return call_repeated, " (kv repeated)"
        except RuntimeError as e:
            raise RuntimeError(f"{gqa_error}; repeated: {e}".replace("\n", " ")[:160]) from None


def main():
    if not torch.cuda.is_available():
        print("attention peers: skipped: torch sees no CUDA device")
        return 0
    from torch.nn.attention import SDPBackend
    backends = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION))
    copy = copy_bandwidth_gbps()
    print(f"attention peers: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"device copy bandwidth {copy:.0f} GB/s")
    print(f"{'case':<48} {'work':>16} {'time_us':>11} {'TFLOP/s':>9} {'GB/s':>9} {'%copy':>8}")
    for model, heads, kv_heads, dim in MODELS:
        prefill = [(torch.bfloat16, "bf16", t) for t in (1024, 4096, 16384, 32768)]
        prefill.append((torch.float16, "f16", 4096))
        for dtype, dname, tokens in prefill:
            q = torch.randn(1, heads, tokens, dim, dtype=dtype, device="cuda")
            k = [torch.randn(1, kv_heads, tokens, dim, dtype=dtype, device="cuda")]
            v = [torch.randn(1, kv_heads, tokens, dim, dtype=dtype, device="cuda")]
            flops = 4 * tokens * tokens * dim * heads // 2
            for bname, backend in backends:
                name = f"prefill/sdpa-{bname}/{model}/{dname}/b1/T{tokens}"
                try:
                    fn, note = sdpa_call(backend, q, k, v, causal=True)
                except RuntimeError as e:
                    print(f"{name:<48} unsupported: {e}")
                    continue
                iters = max(1, min(500, int(0.02 / (flops / 100e12))))
                seconds = time_per_call(fn, 1, iters, batches=5, warmup=3)
                tflops = flops / seconds / 1e12
                print(f"{name:<48} {flops:>13} FL {seconds * 1e6:>11.1f} {tflops:>9.1f} {'-':>9} {'-':>8}{note}")
            del q, k, v
        # Decode: the short contexts (batch 1 and 16) first, then the long ones.
        shapes = [(b, n) for b in (1, 16) for n in (256, 512, 2048)]
        shapes += [(b, n) for b in (1, 8, 64) for n in (1024, 4096, 16384, 32768)]
        for batch, length in shapes:
            nbytes = batch * 2 * kv_heads * length * dim * 2
            windows = max(2, -(-ROTATE_BYTES // nbytes))
            q = torch.randn(batch, heads, 1, dim, dtype=torch.bfloat16, device="cuda")
            k = [torch.randn(batch, kv_heads, length, dim, dtype=torch.bfloat16, device="cuda") for _ in range(windows)]
            v = [torch.randn_like(x) for x in k]
            for bname, backend in backends:
                name = f"decode/sdpa-{bname}/{model}/bf16/b{batch}/ctx{length}"
                try:
                    fn, note = sdpa_call(backend, q, k, v, causal=False)
                except RuntimeError as e:
                    print(f"{name:<48} unsupported: {e}")
                    continue
                iters = max(1, min(500, int(0.02 / (nbytes / 2e12 + 5e-6))))
                seconds = time_per_call(fn, windows, iters, batches=5, warmup=3)
                gbps = nbytes / seconds / 1e9
                print(f"{name:<48} {nbytes:>13} B  {seconds * 1e6:>11.1f} {'-':>9} {gbps:>9.1f} "
                      f"{100 * gbps / copy:>7.1f}%{note}")
            del q, k, v
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
