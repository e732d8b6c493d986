"""PyTorch peer of benches/model.rs, measured the same way: both models at their real sizes in
bf16 with zero weights, decode at a batch of 1, 8 and 32 sequences whose context starts at 512
positions, prefill of one prompt of 512 and 4096 tokens; the weight-bandwidth floor (every
parameter once, bf16, at the device copy bandwidth measured in this run) beside each decode figure.

Peer: transformers' Qwen2ForCausalLM.generate, greedy, with a static KV cache
(cache_implementation="static"), in eager and SDPA attention, as a PyTorch user runs it (no
torch.compile). A decode step's time is (generate of 1 + N new tokens - generate of 1) / N, so
the prefill is not counted; prefill is one forward of the prompt with the cache, to its first
token on the host. CUDA events around each; the median of 3.
Run: python3 benches/peers/model_torch.py  (needs torch with CUDA and transformers).
"""
import statistics
import sys

import torch

from timing import copy_bandwidth_gbps

CONTEXT, STEPS = 512, 64
BATCHES = (1, 8, 32)
PROMPTS = (512, 4096)
MODELS = (
    dict(name="qwen2.5-0.5b", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
         num_key_value_heads=2, head_dim=64, rope_theta=1e6, max_position_embeddings=32768),
    dict(name="vibethinker-1.5b", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
         num_key_value_heads=2, head_dim=128, rope_theta=1e4, max_position_embeddings=4096),
)


def build(spec, attn):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    fields = {k: v for k, v in spec.items() if k not in ("name", "rope_theta")}
    cfg = Qwen2Config(vocab_size=151936, rms_norm_eps=1e-6, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "default", "rope_theta": spec["rope_theta"]}, **fields)
    cfg._attn_implementation = attn
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = Qwen2ForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    params = sum(p.numel() for p in model.parameters())  # tied: the embedding once
    return model, params


def timed(fn, reps=3):
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def main():
    if not torch.cuda.is_available():
        print("model peer: skipped: no CUDA device")
        return 0
    copy = copy_bandwidth_gbps()
    name = torch.cuda.get_device_name()
    rows = []
    for spec in MODELS:
        for attn in ("sdpa", "eager"):
            model, params = build(spec, attn)
            floor = params * 2 / (copy * 1e9)
            gen = model.generation_config
            gen.eos_token_id, gen.pad_token_id, gen.do_sample = None, 0, False
            with torch.no_grad():
                for b in BATCHES:
                    ids = torch.ones((b, CONTEXT), dtype=torch.long, device="cuda")

                    def run(n):
                        return lambda: model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                      cache_implementation="static")
                    run(2)()  # warm-up
                    step = (timed(run(1 + STEPS)) - timed(run(1))) / STEPS
                    rows.append((f"decode/{spec['name']}/b{b}/{attn}", step, b, floor))
                for t in (t for t in PROMPTS if t <= spec["max_position_embeddings"]):
                    ids = torch.ones((1, t), dtype=torch.long, device="cuda")
                    fwd = lambda: int(model(input_ids=ids, use_cache=True).logits[0, -1].argmax())
                    fwd()
                    rows.append((f"prefill/{spec['name']}/T{t}/{attn}", timed(fwd), t, None))
            del model
            torch.cuda.empty_cache()
    import transformers
    print(f"\nmodel peer summary: {name}, torch {torch.__version__}, transformers {transformers.__version__}, bf16, "
          f"device copy bandwidth {copy:.0f} GB/s")
    print(f"{'case':<40} {'time_us':>11} {'tokens/s':>12} {'floor tok/s':>14} {'%floor':>8}")
    for case, seconds, tokens, floor in rows:
        rate = tokens / seconds
        if floor is None:
            print(f"{case:<40} {seconds * 1e6:>11.1f} {rate:>12.0f} {'-':>14} {'-':>8}")
        else:
            f = tokens / floor
            print(f"{case:<40} {seconds * 1e6:>11.1f} {rate:>12.0f} {f:>14.0f} {100 * rate / f:>7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
