"""Write golden/data/synth_vectors.json: checksums and first values of synthetic tensors, made by
golden/synth.py, that tests/synth.rs reproduces in Rust bit for bit (one of them full size: the
151936 x 896 embedding of Qwen2.5-0.5B).

Run: python3 golden/synth_vectors.py   (needs numpy)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402

CASES = [
    (0, "model.layers.0.self_attn.q_proj.weight", 32, "0.02"),
    (1, "model.norm.weight", 17, "1.0"),
    (42, "model.layers.3.mlp.down_proj.weight", 1000, "0.0125"),
    (7, "\u03bb-unicode", 5, "3.5"),
    (2**63 + 12345, "large seed", 64, "0.1"),
    (1234, "model.embed_tokens.weight", 151936 * 896, "0.02"),
]


def main():
    vectors = []
    for seed, name, numel, scale in CASES:
        bits = synth.tensor_bf16_bits(seed, name, numel, scale)
        vectors.append({
            "seed": str(seed),
            "name": name,
            "numel": numel,
            "scale": scale,
            "first_bits": [int(b) for b in bits[:8]],
            "checksum": str(synth.checksum(bits)),
        })
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "synth_vectors.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"format": "qwen-kernels synth vectors", "version": 1,
                   "generator": "python3 golden/synth_vectors.py", "vectors": vectors}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
