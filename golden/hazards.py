"""The hazard profile: every weight of a whole Qwen2 model, drawn from golden/synth.py and edited by
a short list of overrides, so that the synthetic model has the numerical hazards real checkpoints
have (../shared/DESIGN.md), at their real magnitudes. src/model/weights.rs builds the same weights
from the same recipes (recorded in the golden metadata) and checks each tensor's checksum.

A recipe, per tensor (Hugging Face parameter name, shape [rows, cols] or [n]):

    parts      row blocks, each {"name", "rows", "scale", "offset"}:
               value = bf16(bf16(unit * scale) + offset), unit from synth (offset "0.0": no second rounding)
    overrides  applied in order, each {"rows": [r0, r1], "cols": [c, ...] | "all", "value"}:
               t[r, c] = value for r0 <= r < r1 and each listed column (1-D tensors: rows [0, 1]);
               every value is exactly a bf16 number (asserted)
    checksum   synth.checksum of the final bf16 bits

What the overrides build (token BOS first in every prompt, as a chat template puts it):

  * massive activations: the embedding marks BOS in channel MARK (and no other token: the column
    is zeroed, and layer 0 writes nothing there). Layer WRITE_LAYER's MLP has one neuron that reads
    only MARK and writes about -4192 into channel C1 for BOS alone; layer HOLD_LAYER's MLP reads C1
    and writes about +7968 into C2; the residual stream carries both through the middle layers;
    layer L-2's MLP reads C2 and cancels most of both (the collapse near the end).
  * attention sinks: from layer SINK_FROM on, every query head has a bias along the four
    lowest-frequency rotary pairs (which RoPE barely turns over a prompt), and the key projection
    maps BOS's massive C1 onto the same dims: BOS's key lines up with every query, and attention
    piles onto the first token, as it does in trained models. Layers before SINK_FROM do not.
  * layer-0 q/k bias outliers: VibeThinker's |q| ~ 116 / |k| ~ 405 on eight dims of every head
    (unscaled FP16 q.k overflows); Qwen2.5's -34.0 / -15.4 on three.
  * padded vocabulary: embedding rows past the real vocabulary are 25x larger, so with the tied
    lm_head their logits beat every real logit.
"""
import json

import synth

UNIT_STD = 0.28867513459481287
REAL_VOCAB = 151665
BOS = 151643  # <|endoftext|>

MARK = 11          # the channel the embedding marks BOS in
C1, C2 = 3, 458    # the massive-activation channels
WRITE_LAYER, HOLD_LAYER, SINK_FROM = 1, 3, 2
NEURON = 5         # the intermediate neuron each MLP edit uses
SINK_PAIRS = 4     # lowest-frequency rotary pairs the sink lives on
SINK_Q_BIAS = 2.0  # query bias on the sink dims

# The writing neuron's gain on MARK and its weight into C1. BOS's normalised MARK depends on how
# much layer 0 writes elsewhere (measured: ~9.4 for Qwen2.5, ~4.9 for VibeThinker, whose layer-0
# biases are far larger); gate = up = gain * MARK, silu(gate) * up ~ 50, times the weight ~ -4192.
WRITE = {"qwen2.5-0.5b": (0.75, -84.0), "vibethinker-1.5b": (1.5, -76.5)}


def bf16_exact(value):
    bits = synth.bf16_bits_rne([value])
    assert float(synth.bits_to_f32(bits)[0]) == value, f"override value {value} is not a bf16 number"
    return repr(float(value))


def bf16(value):
    """Nearest bf16 number."""
    return float(synth.bits_to_f32(synth.bf16_bits_rne([value]))[0])


class Profile:
    """Recipes for every parameter of one model."""

    def __init__(self, preset, config, seed):
        self.preset, self.config, self.seed = preset, config, seed
        self.recipes = {}

    def add(self, name, shape, scale, offset=0.0, parts=None):
        rows = shape[0] if len(shape) == 2 else 1
        if parts is None:
            parts = [(f"golden.{self.preset}.model.{name}", rows, scale, offset)]
        self.recipes[name] = {
            "shape": list(shape),
            "parts": [{"name": n, "rows": r, "scale": repr(float(s)), "offset": repr(float(o))} for n, r, s, o in parts],
            "overrides": [],
        }

    def override(self, name, rows, cols, value):
        recipe = self.recipes[name]
        limit = recipe["shape"][0] if len(recipe["shape"]) == 2 else 1
        assert 0 <= rows[0] < rows[1] <= limit, (name, rows)
        recipe["overrides"].append({"rows": list(rows), "cols": cols if cols == "all" else list(cols), "value": bf16_exact(value)})

    def tensor(self, name):
        """The bf16 bits of `name` (numpy uint16, in the recipe's shape) and its checksum."""
        import numpy as np
        recipe = self.recipes[name]
        shape = recipe["shape"]
        cols = shape[-1]
        blocks = []
        for part in recipe["parts"]:
            bits = synth.tensor_bf16_bits(self.seed, part["name"], part["rows"] * cols, part["scale"])
            offset = float(part["offset"])
            if offset != 0.0:
                bits = synth.bf16_bits_rne(synth.bits_to_f32(bits) + np.float32(offset))
            blocks.append(bits)
        bits = np.concatenate(blocks).reshape(-1, cols)
        for o in recipe["overrides"]:
            value = synth.bf16_bits_rne([float(o["value"])])[0]
            columns = slice(None) if o["cols"] == "all" else o["cols"]
            bits[o["rows"][0]:o["rows"][1], columns] = value
        bits = bits.reshape(-1)
        recipe["checksum"] = str(synth.checksum(bits))
        return bits.reshape(shape)

    def metadata(self):
        """`weight.<name>` -> recipe JSON (call after every tensor() so checksums are set)."""
        return {f"weight.{n}": json.dumps({"seed": str(self.seed), **r}, sort_keys=True) for n, r in self.recipes.items()}


LAYER0_BIAS_HAZARDS = {  # dims of every head, q bias, k bias (signs alternate over the dims)
    "vibethinker-1.5b": (range(0, 8), 116.0, 405.0),
    "qwen2.5-0.5b": (range(0, 3), -34.0, -15.4),
}


def build(preset, config, seed):
    c = config
    hidden, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    heads, kv_heads, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    p = Profile(preset, config, seed)
    w_scale, b_scale = 0.02 / UNIT_STD, 0.5 / UNIT_STD
    emb = "model.embed_tokens.weight"
    p.add(emb, (c.vocab_size, hidden), None, parts=[
        (f"golden.{preset}.model.embed_tokens.real", REAL_VOCAB, w_scale, 0.0),
        (f"golden.{preset}.model.embed_tokens.padded", c.vocab_size - REAL_VOCAB, 25 * w_scale, 0.0)])
    p.override(emb, (0, REAL_VOCAB), [MARK, C1, C2], 0.0)
    p.override(emb, (BOS, BOS + 1), [MARK], 8.0)
    for i in range(layers):
        pre = f"model.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            p.add(pre + norm + ".weight", (hidden,), 2.0, offset=1.0)
        for name, rows, cols, bias in (("self_attn.q_proj", heads * d, hidden, True),
                                       ("self_attn.k_proj", kv_heads * d, hidden, True),
                                       ("self_attn.v_proj", kv_heads * d, hidden, True),
                                       ("self_attn.o_proj", hidden, heads * d, False),
                                       ("mlp.gate_proj", inter, hidden, False),
                                       ("mlp.up_proj", inter, hidden, False),
                                       ("mlp.down_proj", hidden, inter, False)):
            p.add(pre + name + ".weight", (rows, cols), w_scale)
            if bias:
                p.add(pre + name + ".bias", (rows,), b_scale)
    p.add("model.norm.weight", (hidden,), 2.0, offset=1.0)

    L = lambda i, n: f"model.layers.{i}.{n}"  # noqa: E731
    # Nothing before WRITE_LAYER's MLP writes into MARK: only BOS's embedding sets it. No layer
    # writes C1 or C2 but the three neurons below, so every other token keeps 0 there and never
    # triggers them.
    for i in range(WRITE_LAYER + 1):
        p.override(L(i, "self_attn.o_proj.weight"), (MARK, MARK + 1), "all", 0.0)
        p.override(L(i, "mlp.down_proj.weight"), (MARK, MARK + 1), "all", 0.0)
    for i in range(layers):
        for proj in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            p.override(L(i, proj), (C1, C1 + 1), "all", 0.0)
            p.override(L(i, proj), (C2, C2 + 1), "all", 0.0)

    def neuron(layer, reads, gain, writes):
        """MLP neuron NEURON of `layer` reads channel `reads` alone (gate and up weight `gain`) and
        writes `writes` {channel: weight}; the channels it reads get norm weight 1."""
        for proj in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
            p.override(L(layer, proj), (NEURON, NEURON + 1), "all", 0.0)
            p.override(L(layer, proj), (NEURON, NEURON + 1), [reads], gain)
        p.override(L(layer, "post_attention_layernorm.weight"), (0, 1), [reads], 1.0)
        for channel, weight in writes.items():
            p.override(L(layer, "mlp.down_proj.weight"), (channel, channel + 1), [NEURON], weight)

    # BOS after layer 0: MARK = 8 against layer 0's output (WRITE above): about -4192 into C1.
    gain, weight = WRITE[preset]
    neuron(WRITE_LAYER, MARK, gain, {C1: weight})
    # BOS, dominated by C1, then normalises to -sqrt(hidden) there: gate = up ~ 15, product ~ 225,
    # about 7968 into C2.
    root = hidden ** 0.5
    g = bf16(-15.0 / root)
    neuron(HOLD_LAYER, C1, g, {C2: bf16(7968.0 / (g * root) ** 2)})
    # Near the end BOS normalises to 7968 sqrt(hidden) / |(4192, 7968)| ~ 0.885 sqrt(hidden) in C2:
    # gate = up ~ 13.2, product ~ 175; the weights cancel all of C1 and all but ~300 of C2.
    g = bf16(13.2 / (0.885 * root))
    product = (g * 0.885 * root) ** 2
    neuron(layers - 2, C2, g, {C1: bf16(4192.0 / product), C2: bf16(-7680.0 / product)})

    # Attention sinks from SINK_FROM on: queries lean along the lowest-frequency rotary pairs; the
    # key projection maps BOS's C1 (normalised ~ -sqrt(hidden) before HOLD_LAYER, ~ -0.47 sqrt(hidden)
    # after) and C2 (~ +0.885 sqrt(hidden) after) onto the same dims: the BOS logit is
    # ~ 2 * SINK_PAIRS * SINK_Q_BIAS * sqrt(hidden) * k_gain / sqrt(d), set to about 6.5 (and ~ 8.8
    # once C2 holds its value).
    sink_dims = [i for i in range(d // 2 - SINK_PAIRS, d // 2)] + [i for i in range(d - SINK_PAIRS, d)]
    k_gain = bf16(6.5 * d ** 0.5 / (len(sink_dims) * SINK_Q_BIAS * hidden ** 0.5))
    for i in range(SINK_FROM, layers):
        p.override(L(i, "input_layernorm.weight"), (0, 1), [C1, C2], 1.0)
        p.override(L(i, "self_attn.q_proj.bias"), (0, 1), [h * d + s for h in range(heads) for s in sink_dims], SINK_Q_BIAS)
        for h in range(kv_heads):
            for s in sink_dims:
                p.override(L(i, "self_attn.k_proj.weight"), (h * d + s, h * d + s + 1), [C1], -k_gain)
                p.override(L(i, "self_attn.k_proj.weight"), (h * d + s, h * d + s + 1), [C2], k_gain)

    # Layer-0 q/k bias outliers.
    dims, q_value, k_value = LAYER0_BIAS_HAZARDS[preset]
    for sign, chosen in ((1.0, [x for x in dims if x % 2 == 0]), (-1.0, [x for x in dims if x % 2 == 1])):
        p.override(L(0, "self_attn.q_proj.bias"), (0, 1), [h * d + s for h in range(heads) for s in chosen], bf16(sign * q_value))
        p.override(L(0, "self_attn.k_proj.bias"), (0, 1), [h * d + s for h in range(kv_heads) for s in chosen], bf16(sign * k_value))
    return p
