"""A tiny Qwen2 checkpoint, saved by transformers' own save_pretrained, for testing the
`--checkpoint` path end to end (golden/gen.py --checkpoint, then the Rust reference loading the
same directory):

    python3 golden/tiny_checkpoint.py golden/data/tiny-qwen2/checkpoint
    python3 golden/gen.py --checkpoint golden/data/tiny-qwen2/checkpoint --name tiny-qwen2

2 layers, hidden 64, 4 query heads / 2 KV heads of 16, vocabulary 256, random bf16 weights (seeded)
with random biases and norm weights, so a dropped bias or norm weight shows.
"""
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main(out):
    torch.manual_seed(20251123)
    config = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, vocab_size=256, max_position_embeddings=128,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, initializer_range=0.2)
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
    main(sys.argv[1])
