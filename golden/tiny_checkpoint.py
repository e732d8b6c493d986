"""Tiny Qwen2 checkpoints, saved by transformers' own save_pretrained, for testing the
`--checkpoint` path end to end (golden/gen.py --checkpoint, then the Rust reference loading the
same directory):

    python3 golden/tiny_checkpoint.py golden/data/tiny-qwen2/checkpoint
    python3 golden/gen.py --checkpoint golden/data/tiny-qwen2/checkpoint --name tiny-qwen2
    python3 golden/tiny_checkpoint.py golden/data/tiny-qwen2-head-dim/checkpoint head-dim
    python3 golden/gen.py --checkpoint golden/data/tiny-qwen2-head-dim/checkpoint --name tiny-qwen2-head-dim

Variants:
- default: 2 layers, hidden 64, 4 query heads / 2 KV heads of 16, vocabulary 256, tied embeddings.
- head-dim: 2 layers, hidden 32, 4 query heads / 2 KV heads of 12 (an explicit head_dim: heads x
  head_dim = 48 != hidden), vocabulary 96, an untied lm_head.
Random bf16 weights (seeded) with random biases and norm weights, so a dropped bias or norm weight
shows.
"""
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

VARIANTS = {
    "default": dict(seed=20251123, hidden_size=64, intermediate_size=128, num_attention_heads=4, head_dim=16,
                    vocab_size=256, max_position_embeddings=128, tie_word_embeddings=True),
    "head-dim": dict(seed=20251124, hidden_size=32, intermediate_size=64, num_attention_heads=4, head_dim=12,
                     vocab_size=96, max_position_embeddings=64, tie_word_embeddings=False),
}


def main(out, variant="default"):
    v = dict(VARIANTS[variant])
    torch.manual_seed(v.pop("seed"))
    config = Qwen2Config(num_hidden_layers=2, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
                         initializer_range=0.2, **v)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
            elif "norm" in name:
                p.normal_(1.0, 0.3)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
