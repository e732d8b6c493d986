"""What `qwen-kernels generate` must print for the tiny gen checkpoint (golden/tiny_checkpoint.py gen):
transformers' own greedy generate, with its own tokenizer and chat template.

    python3 golden/generate_expected.py   # golden/data/tiny-qwen2-gen/generate.json

Two cases: a plain prompt, tokenized as it is, and a chat prompt, the user message rendered by the
checkpoint's chat template with add_generation_prompt=True. Each is generated greedily
(do_sample=False, MAX_NEW_TOKENS new tokens, stopping at generation_config.json's EOS ids) with the
model in float32, and recorded with:
- prompt (the text; for the chat case the user message), chat, rendered (the chat template's text,
  the chat case only), prompt_ids (the exact ids the model read);
- generated_ids (the new ids only, the EOS id included when it stopped at one), stopped_at_eos,
  text (the generated ids decoded with skip_special_tokens=True);
- margins (per step, the top-1 logit minus the top-2, over all the logits generate chose from:
  the whole padded vocabulary) and min_margin. Every margin must be at least MIN_MARGIN, so an
  implementation in float32 whose logits differ from these by rounding chooses the same tokens;
- bfloat16: the same generate with the model in bfloat16 (ids only, for information: the tokens
  a bf16 implementation is likely to give, and for how many steps they agree with float32).

The weights' 48 padding rows are zero (logit 0); every generated id must be one the tokenizer
knows (below its 400 ids), asserted here. golden/data/MANIFEST.json is rewritten (gen.py's
write_manifest) to list the new file.
"""
import json
import os
import sys

import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402
import locations  # noqa: E402

CHECKPOINT = os.path.join(HERE, "data", "tiny-qwen2-gen", "checkpoint")
OUT = os.path.join(HERE, "data", "tiny-qwen2-gen", "generate.json")
MAX_NEW_TOKENS = 24
MIN_MARGIN = 1e-3

# (name, prompt, chat)
CASES = [
    ("plain", "The kernel reads", False),
    ("chat", "What does the cache hold?", True),
]


def prompt_ids(tokenizer, prompt, chat):
    """The ids the model reads, and the chat template's text (None for a plain prompt). Plain text
    is tokenized as `tokenizer(prompt)` does; the checkpoint's tokenizer adds no special tokens, so
    this is also the text's ids alone (asserted)."""
    if not chat:
        ids = tokenizer(prompt)["input_ids"]
        assert ids == tokenizer(prompt, add_special_tokens=False)["input_ids"], "the tokenizer adds special tokens"
        return ids, None
    messages = [{"role": "user", "content": prompt}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    direct = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert list(direct["input_ids"]) == ids, (direct["input_ids"], ids)
    return ids, rendered


def greedy(model, ids, eos, pad):
    """transformers' greedy generate: the new ids, whether it stopped at EOS, and each step's margin."""
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=pad,
                             return_dict_in_generate=True, output_logits=True)
    new = [int(t) for t in out.sequences[0, len(ids):]]
    margins = []
    for step, logits in enumerate(out.logits):
        top = torch.topk(logits[0].double(), 2)
        assert int(top.indices[0]) == new[step], (step, int(top.indices[0]), new[step])
        margins.append(float(top.values[0] - top.values[1]))
    return new, bool(new and new[-1] in eos), margins


def main():
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT)
    generation = GenerationConfig.from_pretrained(CHECKPOINT)
    eos = list(generation.eos_token_id)
    pad = generation.pad_token_id
    models = {dtype: AutoModelForCausalLM.from_pretrained(CHECKPOINT, dtype=dtype).eval()
              for dtype in (torch.float32, torch.bfloat16)}
    cases = []
    for name, prompt, chat in CASES:
        ids, rendered = prompt_ids(tokenizer, prompt, chat)
        new, stopped, margins = greedy(models[torch.float32], ids, eos, pad)
        assert min(margins) >= MIN_MARGIN, f"{name}: a greedy margin of {min(margins):.2e}; choose another prompt"
        assert all(t < len(tokenizer) for t in new), f"{name}: a padding id was generated: {new}"
        bf16, bf16_stopped, _ = greedy(models[torch.bfloat16], ids, eos, pad)
        agree = next((i for i, (a, b) in enumerate(zip(new, bf16)) if a != b), min(len(new), len(bf16)))
        case = {"name": name, "prompt": prompt, "chat": chat}
        if chat:
            case["rendered"] = rendered
        case.update({
            "prompt_ids": ids, "generated_ids": new, "stopped_at_eos": stopped,
            "text": tokenizer.decode(new, skip_special_tokens=True),
            "min_margin": min(margins), "margins": margins,
            "bfloat16": {"generated_ids": bf16, "stopped_at_eos": bf16_stopped, "agrees_with_float32_for": agree},
        })
        cases.append(case)
        print(f"{name}: {len(ids)} prompt ids, {len(new)} generated (EOS: {stopped}), min margin {min(margins):.4f}, "
              f"bf16 agrees for {agree}: {case['text']!r}")
    record = {
        "checkpoint": os.path.relpath(CHECKPOINT, os.path.dirname(HERE)),
        "command": "python3 golden/generate_expected.py",
        "torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "dtype": "float32", "attn_implementation": models[torch.float32].config._attn_implementation,
        "max_new_tokens": MAX_NEW_TOKENS, "eos_token_id": eos, "pad_token_id": pad, "min_margin_required": MIN_MARGIN,
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{OUT}: {os.path.getsize(OUT)} bytes")
    gen.write_manifest(locations.COMMITTED)


if __name__ == "__main__":
    main()
