"""PyTorch peers of benches/ops.rs, measured the same way: same shapes, same bytes and FLOPs
counted, CUDA events around batches of calls, inputs rotated through buffers larger than L2,
GB/s (1e9), % of the device copy bandwidth measured in this run, TFLOP/s for the GEMMs.

Peers, as transformers' Qwen2 code runs them (eager):
  swiglu_fused  F.silu(gate) * up on the two halves of a fused [gate | up] row
  argmax        torch.argmax(logits[:, :n_valid], dim=-1) (and the max value, as ours writes it)
  sample        what generate(do_sample=True) runs on the last logits: transformers' warpers
                (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, as generate appends
                them), softmax, torch.multinomial(probs, 1); logits normal(0, 2), as ours
  rope_kv       cos/sin from positions as Qwen2RotaryEmbedding, q/k * cos + rotate_half * sin,
                then k and v copied into a [slots, kv_heads, capacity, d] cache with index_put_
  rope          the same without the cache write
  linear        torch.nn.functional.linear(x, W, b) (cuBLAS(Lt) underneath)
Run: python3 benches/peers/ops_torch.py  (needs torch with CUDA).
"""
import sys

import torch
import torch.nn.functional as F

from timing import copy_bandwidth_gbps, time_per_call

ROTATE_BYTES = 256 << 20
VOCAB, REAL_VOCAB = 151936, 151665
MODELS = (
    dict(name="qwen2.5-0.5b", hidden=896, inter=4864, heads=14, kv=2, d=64, theta=1e6),
    dict(name="vibethinker-1.5b", hidden=1536, inter=8960, heads=12, kv=2, d=128, theta=1e4),
)


def windows_for(nbytes):
    return min(4096, max(2, -(-ROTATE_BYTES // nbytes)))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def cos_sin(positions, d, theta, dtype):
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64, device="cuda").float() / d))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def cases():
    bf16 = torch.bfloat16
    for m in MODELS:
        for rows in (1, 64, 4096):
            yield m, "swiglu_fused", rows, dict(width=m["inter"]), 3 * rows * m["inter"] * 2, None
        for rows, kv in ((1, True), (64, True), (4096, False)):
            h, kvh, d = m["heads"], m["kv"], m["d"]
            nbytes = ((2 * rows * h * d + 4 * rows * kvh * d) * 2 + 8 * rows) if kv else (2 * rows * (h + kvh) * d * 2 + 4 * rows)
            yield m, "rope_kv" if kv else "rope", rows, dict(kv=kv), nbytes, None
        qkv = (m["heads"] + 2 * m["kv"]) * m["d"]
        for rows in (1, 16, 32, 64, 4096):
            for name, k, n in (("qkv", m["hidden"], qkv), ("gate_up", m["hidden"], 2 * m["inter"]), ("down", m["inter"], m["hidden"])):
                yield m, f"linear/{name}", rows, dict(k=k, n=n, f32=False), (n * k + rows * k + n) * 2 + rows * n * 2, 2 * rows * k * n
        for rows in (1, 64):
            k, n = m["hidden"], VOCAB
            yield m, "linear/lm_head/f32out", rows, dict(k=k, n=n, f32=True), (n * k + rows * k + n) * 2 + rows * n * 4, 2 * rows * k * n
    for rows in (1, 8, 64):
        yield MODELS[0], "argmax", rows, dict(), 4 * rows * REAL_VOCAB + 8 * rows, None
    for name, params in (("plain", (1.0, 0, 1.0)), ("top_p", (1.0, 0, 0.95)), ("qwen", (0.7, 20, 0.8))):
        for rows in (1, 8, 64):
            yield MODELS[0], f"sample/{name}", rows, dict(params=params), 4 * rows * REAL_VOCAB + 40 * rows, None


def make_call(m, op, rows, p, windows):
    dt = torch.bfloat16
    if op == "swiglu_fused":
        w = p["width"]
        x = torch.randn(windows * rows, 2 * w, dtype=dt, device="cuda")

        def call(i):
            xs = x[i * rows:(i + 1) * rows]
            return F.silu(xs[:, :w]) * xs[:, w:]
        return call
    if op == "argmax":
        logits = torch.randn(windows * rows, VOCAB, dtype=torch.float32, device="cuda")

        def call(i):
            return torch.max(logits[i * rows:(i + 1) * rows, :REAL_VOCAB], dim=-1)
        return call
    if op.startswith("sample/"):
        from transformers.generation.logits_process import (
            LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
        temperature, top_k, top_p = p["params"]
        procs = LogitsProcessorList()
        if temperature != 1.0:
            procs.append(TemperatureLogitsWarper(temperature))
        if top_k:
            procs.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
        logits = torch.randn(windows * rows, VOCAB, dtype=torch.float32, device="cuda") * 2.0

        def call(i):
            scores = procs(None, logits[i * rows:(i + 1) * rows, :REAL_VOCAB])
            return torch.multinomial(torch.softmax(scores, dim=-1), 1)
        return call
    if op in ("rope", "rope_kv"):
        h, kvh, d = m["heads"], m["kv"], m["d"]
        q = torch.randn(windows * rows, h, d, dtype=dt, device="cuda")
        k = torch.randn(windows * rows, kvh, d, dtype=dt, device="cuda")
        v = torch.randn_like(k)
        positions = torch.arange(rows, device="cuda")
        slots = torch.arange(rows, device="cuda")
        k_cache = torch.zeros(windows * rows, kvh, rows, d, dtype=dt, device="cuda")
        v_cache = torch.zeros_like(k_cache)

        def call(i):
            s = slice(i * rows, (i + 1) * rows)
            cos, sin = cos_sin(positions, d, m["theta"], dt)
            cos, sin = cos[:, None, :], sin[:, None, :]
            qs, ks = q[s], k[s]
            q_embed = qs * cos + rotate_half(qs) * sin
            k_embed = ks * cos + rotate_half(ks) * sin
            if not p["kv"]:
                return q_embed, k_embed
            kc, vc = k_cache[s], v_cache[s]
            kc[slots, :, positions] = k_embed
            vc[slots, :, positions] = v[s]
            return q_embed
        return call
    k, n = p["k"], p["n"]
    x = torch.randn(windows * rows, k, dtype=dt, device="cuda")
    w = torch.randn(windows * n, k, dtype=dt, device="cuda") * 0.02
    b = torch.randn(n, dtype=dt, device="cuda")
    if p["f32"]:
        def call(i):
            return F.linear(x[i * rows:(i + 1) * rows], w[i * n:(i + 1) * n], b).float()
        return call

    def call(i):
        return F.linear(x[i * rows:(i + 1) * rows], w[i * n:(i + 1) * n], b)
    return call


def main():
    if not torch.cuda.is_available():
        print("ops peers: skipped: torch sees no CUDA device")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    copy = copy_bandwidth_gbps()
    print(f"ops peers: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"device copy bandwidth {copy:.0f} GB/s")
    print("note: the f32-logits lm_head peer is bf16 F.linear then .float() (PyTorch has no bf16-in, f32-out linear)")
    print(f"{'case':<52} {'bytes':>12} {'time_us':>10} {'GB/s':>9} {'%copy':>9} {'TFLOP/s':>9}")
    for m, op, rows, p, nbytes, flops in cases():
        windows = windows_for(nbytes)
        call = make_call(m, op, rows, p, windows)
        seconds = time_per_call(call, windows, iters=100, batches=10, warmup=20)
        gbps = nbytes / seconds / 1e9
        tflops = f"{flops / seconds / 1e12:.2f}" if flops else "-"
        name = f"{op}/torch/{m['name']}/bf16/rows{rows}"
        print(f"{name:<52} {nbytes:>12} {seconds * 1e6:>10.2f} {gbps:>9.1f} {100 * gbps / copy:>8.1f}% {tflops:>9}")
        del call
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
