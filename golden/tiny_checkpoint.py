"""Tiny Qwen2 checkpoints, saved by transformers' own save_pretrained, for testing the
`--checkpoint` path end to end (golden/gen.py --checkpoint, then the Rust reference loading the
same directory):

    python3 golden/tiny_checkpoint.py golden/data/tiny-qwen2/checkpoint
    python3 golden/gen.py --checkpoint golden/data/tiny-qwen2/checkpoint --name tiny-qwen2
    python3 golden/tiny_checkpoint.py golden/data/tiny-qwen2-head-dim/checkpoint head-dim
    python3 golden/gen.py --checkpoint golden/data/tiny-qwen2-head-dim/checkpoint --name tiny-qwen2-head-dim
    python3 golden/tiny_checkpoint.py golden/data/tiny-qwen2-gen/checkpoint gen
    python3 golden/gen.py --checkpoint golden/data/tiny-qwen2-gen/checkpoint --name tiny-qwen2-gen
    python3 golden/generate_expected.py   # golden/data/tiny-qwen2-gen/generate.json

Variants:
- default: 2 layers, hidden 64, 4 query heads / 2 KV heads of 16, vocabulary 256, tied embeddings.
- head-dim: 2 layers, hidden 32, 4 query heads / 2 KV heads of 12 (an explicit head_dim: heads x
  head_dim = 48 != hidden), vocabulary 96, an untied lm_head.
- gen: a model `qwen-kernels generate` can run on the device kernels (head_dim 64) with a real
  tokenizer: 2 layers, hidden 128, intermediate 256, 4 query heads / 2 KV heads of 64 (heads x
  head_dim = 256 != hidden), tied embeddings, 512 positions. Beside the weights it holds what a
  Qwen2 checkpoint's tokenizer is: a byte-level BPE (tokenizer.json: NFC, Qwen2's pre-tokenizer
  regex then ByteLevel, ByteLevel decoder) trained here on CORPUS, 397 ids of BPE then
  <|endoftext|>, <|im_start|>, <|im_end|> (400 ids), and tokenizer_config.json with a Qwen2-style
  chat_template (the default system message when none is given; kept in tokenizer_config.json, as
  Qwen2's checkpoints have it, rather than transformers 5's chat_template.jinja);
  generation_config.json stops at <|im_end|> or <|endoftext|>. The vocabulary is 448 rows (400
  rounded up to a multiple of 64, as Qwen pads 151665 to 151936); the 48 padding rows are zero,
  so their logit is 0. The Rust config reader takes min(vocab_size, 151665) as the real
  vocabulary, so for this model the greedy argmax runs over all 448 rows, padding included; with
  zero padding rows a padding id wins only where every real logit is negative (generate_expected.py
  asserts it never does on its prompts).
Random bf16 weights (seeded) with random biases and norm weights, so a dropped bias or norm weight
shows.
"""
import sys

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

VARIANTS = {
    "default": dict(seed=20251123, hidden_size=64, intermediate_size=128, num_attention_heads=4, head_dim=16,
                    vocab_size=256, max_position_embeddings=128, tie_word_embeddings=True),
    "head-dim": dict(seed=20251124, hidden_size=32, intermediate_size=64, num_attention_heads=4, head_dim=12,
                     vocab_size=96, max_position_embeddings=64, tie_word_embeddings=False),
    # vocab_size: the tokenizer's (build_tokenizer), rounded up.
    "gen": dict(seed=20251125, hidden_size=128, intermediate_size=256, num_attention_heads=4, head_dim=64,
                max_position_embeddings=512, tie_word_embeddings=True),
}

# The gen variant's tokenizer is trained on this text (written for the purpose), nothing else.
CORPUS = """\
This library holds the kernels a small language model needs to answer a question: the norm that
rescales each row of the hidden state, the rotary position embedding that turns every query and
key by an angle that grows with its position, the attention that lets each token read the tokens
before it, the gated feed-forward block, and the projection that turns the last hidden state into
one score per token of the vocabulary. The largest score picks the next token.

Every kernel is checked against a reference that runs on the processor. The reference reads the
same weights and the same inputs, computes in double precision where the framework does, and
rounds where the framework rounds. When a kernel and its reference disagree by more than the
tolerance, the check fails and the report names the layer, the position and the value.

A model reads a prompt in one pass and then writes one token at a time. The keys and values of the
tokens it has already read are kept in a cache, so that each new token costs one small step
instead of a pass over the whole text. The cache grows by one row per token and per layer.

The tokenizer cuts text into pieces the model knows. It starts from single bytes, so no text is
ever unknown, and merges the pairs of pieces that are seen most often into longer pieces. A chat
template wraps each message in markers that say who is speaking: the system, the user or the
assistant. The assistant stops when it writes the marker that ends its turn.

You are a helpful assistant. The user asks a question and the assistant gives a short, clear answer.
"""

# Qwen2's pre-tokenizer: this split (contractions, letters with one leading non-letter, single
# digits, punctuation runs, newlines, spaces), then ByteLevel on each piece.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BPE_IDS = 397
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer():
    """The gen variant's tokenizer: a byte-level BPE trained on CORPUS (the trainer breaks ties
    between equally frequent pairs by the pair itself, so the merges are the same on every run),
    the special tokens appended after the BPE ids as Qwen2 appends them, wrapped as transformers'
    PreTrainedTokenizerFast."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_IDS, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([p for p in CORPUS.split("\n\n")], trainer)
    assert tok.get_vocab_size() == BPE_IDS, tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
                                   model_max_length=512)


def main(out, variant="default"):
    v = dict(VARIANTS[variant])
    tokenizer = None
    if variant == "gen":
        tokenizer = build_tokenizer()
        v["vocab_size"] = -(-len(tokenizer) // 64) * 64
        ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
        v.update(bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0])
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
        if tokenizer is not None:
            model.get_input_embeddings().weight[len(tokenizer):] = 0.0
    model = model.to(torch.bfloat16)
    if tokenizer is not None:
        end, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
        model.generation_config = GenerationConfig(bos_token_id=end, eos_token_id=[im_end, end], pad_token_id=end)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out, save_jinja_files=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
