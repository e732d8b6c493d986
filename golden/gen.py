"""Golden generator: transformers' own Qwen2 modules compute every golden the crate is checked against.

    pip install -r golden/requirements.txt
    python3 golden/gen.py                       # every model, into golden/data/
    python3 golden/gen.py --model qwen2.5-0.5b  # one model
    python3 golden/gen.py --only model          # the whole-model files only (ops: ops + layer0)
    python3 golden/gen.py --only sampling       # transformers' sampling warpers on the model files' logits
    python3 golden/gen.py --checkpoint DIR --name NAME   # whole-model goldens of a real checkpoint,
                                                         # into ~/.cache/qwen-kernels/goldens/NAME/

No math is re-implemented here: each golden is the output of a transformers module (Qwen2RMSNorm, ...)
run twice on the same inputs, once in float64 (the truth) and once at the storage dtype (what PyTorch
itself gets, for the "PyTorch ratio": our error over PyTorch's, both against the truth). One
exception: Qwen2RMSNorm and eager attention's softmax compute in FP32 even in float64, so their
float64 runs keep float64 (`_rmsnorm_forward_float64_truth`, `_softmax_float64_truth`, below).

Inputs are drawn from golden/synth.py, whose bits src/synth.rs reproduces. For each storage dtype the
inputs are first rounded to that dtype and the truth is computed from the rounded inputs, so the truth
of every dtype is exact for the inputs a kernel of that dtype receives.

Files: golden/data/<model>/ops.safetensors, one per model, with metadata (format, version, model,
config, seed, torch and transformers versions, the generating command). Tensor names:
    <op>.<dtype>.<name>        inputs (stored in <dtype>)
    <op>.<dtype>.<out>.truth   float64 output of the module in float64
    <op>.<dtype>.<out>.torch   output of the module at <dtype> (stored in <dtype>)
"""
import argparse
import inspect
import json
import os
import sys

import torch
import transformers
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers import AttentionInterface
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2ForCausalLM,
    Qwen2Attention,
    Qwen2DecoderLayer,
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

# The truth's RMSNorm. Qwen2RMSNorm.forward upcasts its input to torch.float32 whatever the module's
# dtype, so the module run in float64 is an FP32 computation: its 1/rms carries FP32's rounding of the
# mean, of the epsilon add, of the square root and of the division, and its x * (1/rms) is rounded to
# FP32 (every row of such a "truth" equals w * FP32(x * r) for one FP32 r, checked row by row). A
# kernel that is more accurate than PyTorch's FP32 would then score worse against it. For float64
# inputs (the truth runs: op goldens, layer twins, the float64 model) the module's own lines run with
# that upcast made to float64; at a storage dtype (PyTorch's own runs) transformers' forward runs as is.
_TRANSFORMERS_RMSNORM_FORWARD = Qwen2RMSNorm.forward
assert "hidden_states.to(torch.float32)" in inspect.getsource(_TRANSFORMERS_RMSNORM_FORWARD), \
    "Qwen2RMSNorm.forward changed: check the float64 truth's norm below against it"


def _rmsnorm_forward_float64_truth(self, hidden_states):
    if hidden_states.dtype != torch.float64:
        return _TRANSFORMERS_RMSNORM_FORWARD(self, hidden_states)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states


Qwen2RMSNorm.forward = _rmsnorm_forward_float64_truth

# The truth's softmax. transformers' eager attention (the truth's attention) asks for
# softmax(..., dtype=torch.float32) and casts back, so in float64 its weights were FP32 values. For
# a float64 input the softmax stays in float64; every other call is torch's own.
_TORCH_SOFTMAX = torch.nn.functional.softmax
assert "softmax(attn_weights, dim=-1, dtype=torch.float32)" in inspect.getsource(eager_attention_forward), \
    "eager_attention_forward changed: check the float64 truth's softmax below against it"


def _softmax_float64_truth(input, dim=None, _stacklevel=3, dtype=None):
    if input.dtype == torch.float64 and dtype == torch.float32:
        dtype = torch.float64
    return _TORCH_SOFTMAX(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)


torch.nn.functional.softmax = _softmax_float64_truth

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hazards  # noqa: E402
import locations  # noqa: E402
from locations import write_manifest  # noqa: E402
import synth  # noqa: E402

FORMAT = "qwen-kernels-golden"
VERSION = "1"
SEED = 20251123

# The subset of each model's config.json the goldens depend on.
# Qwen/Qwen2.5-0.5B-Instruct: published config.json.
# WeiboAI/VibeThinker-1.5B: the architecture of its base, Qwen/Qwen2.5-Math-1.5B. rope_theta,
# max_position_embeddings and tie_word_embeddings are the base's values until read from
# VibeThinker's own config.json (kept in sync with src/model/config.rs).
PRESETS = {
    "qwen2.5-0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, head_dim=64, vocab_size=151936, max_position_embeddings=32768,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    ),
    "vibethinker-1.5b": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, head_dim=128, vocab_size=151936, max_position_embeddings=4096,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    ),
}

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

# Rows of the per-op goldens: a short prompt's worth of tokens.
TOKENS = 8


def make_config(preset):
    values = dict(PRESETS[preset])
    theta = values.pop("rope_theta")
    config = Qwen2Config(**values, rope_parameters={"rope_type": "default", "rope_theta": theta})
    return config


def synth_tensor(name, shape, scale, offset=0.0):
    """A synthetic bf16 tensor from golden/synth.py (offset added in float32, then rounded to bf16)."""
    numel = 1
    for d in shape:
        numel *= d
    bits = synth.tensor_bf16_bits(SEED, name, numel, repr(float(scale)))
    values = torch.from_numpy(synth.bits_to_f32(bits).copy()).reshape(shape)
    return (values + offset).to(torch.bfloat16)


def hidden_states(name, hidden):
    """Residual-stream-like rows with the hazards of these models: most values within a few units,
    two massive-activation channels on the first token (about -4192 and 7968, as measured in
    Qwen2.5), and a row of small values."""
    x = synth_tensor(name, (TOKENS, hidden), 6.0).float()
    x[0, 3] = -4192.0
    x[0, hidden // 2 + 5] = 7968.0
    x[TOKENS - 1] *= 1e-3
    return x.to(torch.bfloat16)


def rmsnorm_goldens(preset, config, out):
    hidden = config.hidden_size
    eps = config.rms_norm_eps
    x_bf16 = hidden_states(f"golden.{preset}.rmsnorm.x", hidden)
    residual_bf16 = hidden_states(f"golden.{preset}.rmsnorm.residual", hidden)
    # Real RMSNorm weights are mostly positive and spread over a few units.
    w_bf16 = synth_tensor(f"golden.{preset}.rmsnorm.weight", (hidden,), 4.0, offset=1.0)
    for dname, dtype in DTYPES.items():
        x, residual, w = x_bf16.to(dtype), residual_bf16.to(dtype), w_bf16.to(dtype)
        truth_norm = Qwen2RMSNorm(hidden, eps=eps).to(torch.float64)
        torch_norm = Qwen2RMSNorm(hidden, eps=eps).to(dtype)
        with torch.no_grad():
            truth_norm.weight.copy_(w.to(torch.float64))
            torch_norm.weight.copy_(w)
            out[f"rmsnorm.{dname}.x"] = x
            out[f"rmsnorm.{dname}.weight"] = w
            out[f"rmsnorm.{dname}.y.truth"] = truth_norm(x.to(torch.float64))
            out[f"rmsnorm.{dname}.y.torch"] = torch_norm(x)
            # The decoder layer: `hidden_states = residual + hidden_states`, then the norm.
            sum_truth = residual.to(torch.float64) + x.to(torch.float64)
            sum_torch = residual + x
            out[f"add_rmsnorm.{dname}.x"] = x
            out[f"add_rmsnorm.{dname}.residual"] = residual
            out[f"add_rmsnorm.{dname}.weight"] = w
            out[f"add_rmsnorm.{dname}.residual_out.truth"] = sum_truth
            out[f"add_rmsnorm.{dname}.residual_out.torch"] = sum_torch
            out[f"add_rmsnorm.{dname}.y.truth"] = truth_norm(sum_truth)
            out[f"add_rmsnorm.{dname}.y.torch"] = torch_norm(sum_torch)


SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int32: "I32", torch.int64: "I64"}


def share_across_dtypes(tensors, metadata):
    """Store once what dtypes share. `<a>.<dtype>.<b>` of two or three of f32, f16 and bf16 that hold
    the same values (inputs drawn in bf16 and cast exactly; truths computed from those same values)
    become one tensor `<a>.<b>` (the other dtypes keep their own), in the narrowest dtype that holds the values exactly, and metadata
    `shared.<a>.<b>` says how the loader (src/golden/file.rs) serves it under each dtype's name:
    "per-dtype" (converted to that dtype, exactly) or the variants' common storage dtype."""
    groups = {}
    for name in tensors:
        parts = name.split(".")
        for i, p in enumerate(parts):
            if p in DTYPES:
                groups.setdefault(".".join(parts[:i] + parts[i + 1:]), {})[p] = name
                break
    for base, variants in sorted(groups.items()):
        if len(variants) < 2 or base in tensors:
            continue
        # The largest set of dtypes whose tensors hold the same values; the rest keep their names.
        wide = {d: tensors[n].to(torch.float64) for d, n in variants.items()}
        classes = []
        for d in DTYPES:
            if d not in wide:
                continue
            for c in classes:
                if wide[c[0]].shape == wide[d].shape and torch.equal(wide[c[0]], wide[d]):
                    c.append(d)
                    break
            else:
                classes.append([d])
        members = max(classes, key=len)
        if len(members) < 2:
            continue
        kinds = [tensors[variants[d]].dtype for d in members]
        if kinds == [DTYPES[d] for d in members]:
            served = "per-dtype"
        elif all(k == kinds[0] for k in kinds):
            served = SAFETENSORS_DTYPES[kinds[0]]
        else:
            continue
        value = wide[members[0]]
        for narrow in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
            if torch.equal(value.to(narrow).to(torch.float64), value):
                break
        tensors[base] = value.to(narrow)
        metadata[f"shared.{base}"] = served
        for d in members:
            del tensors[variants[d]]


def f16_truths_as_float32(tensors):
    """A float64 truth that only f16 results are compared with (`<a>.f16.<b>.truth`, left after
    sharing) is stored as float32: one rounding, 2^-24 relative, 2^13 times finer than f16's own
    2^-11, so no f16 comparison can tell; it halves those tensors (the golden budget). Truths that
    f32 results are compared with stay float64."""
    for name, t in tensors.items():
        if ".f16." in f".{name}." and name.endswith(".truth") and t.dtype == torch.float64:
            tensors[name] = t.float()


def save_safetensors(tensors, path, metadata):
    """The safetensors format, written with sorted keys so the same goldens give the same bytes
    (safetensors' own writer orders the metadata by a hash map). Tensors every dtype shares are
    stored once (share_across_dtypes); f16-only truths as float32 (f16_truths_as_float32)."""
    tensors, metadata = dict(tensors), dict(metadata)
    share_across_dtypes(tensors, metadata)
    f16_truths_as_float32(tensors)
    header = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for data in chunks:
            f.write(data)


# Standard deviation of synth's unit stream (four 16-bit uniforms): 1/sqrt(12).
UNIT_STD = 0.28867513459481287

# Bias outliers of Qwen2.5's q/k projections (values seen in the released checkpoints): a dropped
# bias changes these outputs by tens, which no tolerance hides.
Q_BIAS_OUTLIERS = {5: -14.4, 70: -15.4, 131: -34.0}


def synth_weight(name, shape, scale, recorded):
    """A bf16 weight from golden/synth.py that the golden file does not store: its recipe and
    checksum go into the metadata (`synth.<name>`) and Rust regenerates it (src/synth.rs)."""
    numel = 1
    for d in shape:
        numel *= d
    scale_text = repr(float(scale))
    bits = synth.tensor_bf16_bits(SEED, name, numel, scale_text)
    recorded[f"synth.{name}"] = json.dumps({"seed": str(SEED), "name": name, "shape": list(shape),
                                           "scale": scale_text, "checksum": str(synth.checksum(bits))},
                                          sort_keys=True)
    return torch.from_numpy(synth.bits_to_f32(bits).copy()).reshape(shape).to(torch.bfloat16)


def linear_goldens(preset, config, out, recorded):
    """q_proj and k_proj (with biases carrying Qwen2.5's outliers) and o_proj (no bias) of a
    Qwen2Attention layer, weights in [out_features, in_features] layout. k_proj is non-square in both
    models; q_proj and o_proj are square, where only values (not shapes) expose a transposed read.
    The weights are not stored: for dtype d the weight is synth `<proj>.weight` rounded to d."""
    hidden = config.hidden_size
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    x_bf16 = synth_tensor(f"golden.{preset}.linear.x", (TOKENS, hidden), 1.0 / UNIT_STD)
    attn_out = synth_tensor(f"golden.{preset}.linear.o_in", (TOKENS, q_out), 1.0 / UNIT_STD)
    projections = {  # name: (out_features, in_features, input, has bias)
        "q_proj": (q_out, hidden, x_bf16, True),
        "k_proj": (kv_out, hidden, x_bf16, True),
        "o_proj": (hidden, q_out, attn_out, False),
    }
    params = {}
    for name, (n_out, n_in, _, has_bias) in projections.items():
        w = synth_weight(f"golden.{preset}.{name}.weight", (n_out, n_in), 0.02 / UNIT_STD, recorded)
        b = None
        if has_bias:
            b = synth_tensor(f"golden.{preset}.{name}.bias", (n_out,), 0.5 / UNIT_STD).float()
            for i, v in Q_BIAS_OUTLIERS.items():
                b[i % n_out] = v
            b = b.to(torch.bfloat16)
        params[name] = (w, b)
    for dname, dtype in DTYPES.items():
        truth_attn = Qwen2Attention(config, layer_idx=0).to(torch.float64)
        torch_attn = Qwen2Attention(config, layer_idx=0).to(dtype)
        for name, (_, _, inp, _) in projections.items():
            w, b = params[name]
            w, b = w.to(dtype), (b.to(dtype) if b is not None else None)
            truth_mod, torch_mod = getattr(truth_attn, name), getattr(torch_attn, name)
            assert (truth_mod.bias is not None) == (b is not None), f"{name}: bias presence differs from Qwen2"
            assert tuple(truth_mod.weight.shape) == tuple(w.shape), f"{name}: {truth_mod.weight.shape}"
            with torch.no_grad():
                truth_mod.weight.copy_(w.to(torch.float64))
                torch_mod.weight.copy_(w)
                if b is not None:
                    truth_mod.bias.copy_(b.to(torch.float64))
                    torch_mod.bias.copy_(b)
                    out[f"{name}.{dname}.bias"] = b
                x = inp.to(dtype)
                out[f"{name}.{dname}.x"] = x
                out[f"{name}.{dname}.y.truth"] = truth_mod(x.to(torch.float64))
                out[f"{name}.{dname}.y.torch"] = torch_mod(x)


def swiglu_goldens(preset, config, out):
    """Qwen2MLP's `act_fn(gate_proj(x)) * up_proj(x)`: the module's own act_fn and product on gate
    and up given in dtype d (as a kernel receives them from the gate/up GEMMs), spanning the values
    where SiLU bends and products that overflow f16."""
    inter = config.intermediate_size
    # Two rows: the op is elementwise, 2 x intermediate values cover its numerics.
    gate_bf16 = synth_tensor(f"golden.{preset}.swiglu.gate", (2, inter), 6.0 / UNIT_STD)
    up_bf16 = synth_tensor(f"golden.{preset}.swiglu.up", (2, inter), 3.0 / UNIT_STD)
    gate_bf16[0, :4] = torch.tensor([-30.0, 30.0, -0.0, 300.0], dtype=torch.bfloat16)
    up_bf16[0, :4] = torch.tensor([2.0, -2.0, 5.0, 300.0], dtype=torch.bfloat16)
    for dname, dtype in DTYPES.items():
        truth_mlp = Qwen2MLP(config).to(torch.float64)
        torch_mlp = Qwen2MLP(config).to(dtype)
        with torch.no_grad():
            gate, up = gate_bf16.to(dtype), up_bf16.to(dtype)
            out[f"swiglu.{dname}.gate"] = gate
            out[f"swiglu.{dname}.up"] = up
            out[f"swiglu.{dname}.y.truth"] = truth_mlp.act_fn(gate.to(torch.float64)) * up.to(torch.float64)
            out[f"swiglu.{dname}.y.torch"] = torch_mlp.act_fn(gate) * up


def rope_positions(config):
    """Positions from the start to the model's last one, out of order, with 15962 (whose angle bf16
    cannot hold: it rounds to 15936 or 15968) where the model reaches it."""
    last = config.max_position_embeddings - 1
    positions = [0, 1, last, 7, 100, last // 2 + 3, last - 1, 15962 if last >= 15962 else last // 4]
    assert len(positions) == TOKENS and max(positions) <= last
    return positions


def rope_goldens(preset, config, out):
    """Qwen2RotaryEmbedding (cos/sin from FP32 angles, cast to the activation dtype) and
    apply_rotary_pos_emb on q [T, heads, head_dim] and k [T, kv_heads, head_dim], at positions up to
    the model's maximum; q and k carry VibeThinker layer-0 magnitudes (|q| ~ 116, |k| ~ 405) in a few
    heads. Stored in our layout [T, heads, head_dim]; transformers works on [1, heads, T, head_dim].
    The truth is the same modules on float64 q and k: transformers computes the angles in FP32 even
    then (its forward forces float32), so the truth is exact for FP32 angles."""
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    positions = torch.tensor([rope_positions(config)], dtype=torch.int64)
    q_bf16 = synth_tensor(f"golden.{preset}.rope.q", (TOKENS, heads, head_dim), 2.0 / UNIT_STD).float()
    k_bf16 = synth_tensor(f"golden.{preset}.rope.k", (TOKENS, kv_heads, head_dim), 2.0 / UNIT_STD).float()
    q_bf16[:, 0, 3] = 116.0
    k_bf16[:, 0, head_dim // 2 + 3] = -405.0
    q_bf16, k_bf16 = q_bf16.to(torch.bfloat16), k_bf16.to(torch.bfloat16)
    rotary = Qwen2RotaryEmbedding(config)
    out["rope.positions"] = positions[0].to(torch.int32)
    out["rope.inv_freq"] = rotary.inv_freq.float()
    for dname, dtype in DTYPES.items():
        q, k = q_bf16.to(dtype), k_bf16.to(dtype)
        out[f"rope.{dname}.q"] = q
        out[f"rope.{dname}.k"] = k
        for kind, qq, kk in (("truth", q.to(torch.float64), k.to(torch.float64)), ("torch", q, k)):
            q_hf, k_hf = qq.transpose(0, 1)[None], kk.transpose(0, 1)[None]  # [1, heads, T, head_dim]
            cos, sin = rotary(q_hf, positions)
            q_embed, k_embed = apply_rotary_pos_emb(q_hf, k_hf, cos, sin)
            out[f"rope.{dname}.q_embed.{kind}"] = q_embed[0].transpose(0, 1)
            out[f"rope.{dname}.k_embed.{kind}"] = k_embed[0].transpose(0, 1)
            if kind == "truth":
                out["rope.cos"] = cos[0].float()  # FP32 values (exact in float64)
                out["rope.sin"] = sin[0].float()


# (label, new tokens T, context length S): queries are the last T of S positions, causal.
ATTENTION_CASES = [
    ("prefill16", 16, 16),  # a prompt, no cache
    ("chunk5of40", 5, 40),  # a prompt chunk after 35 cached tokens
    ("decode1", 1, 1),      # first decode step
    ("decode37", 1, 37),
    ("decode300", 1, 300),
]

# VibeThinker layer 0: |q| up to about 116 and |k| up to about 405. Eight aligned dimensions give
# q.k = 8 * 116 * 405 = 375840, past FP16's 65504 before scaling; scaled by 128^-0.5 it is 33226.
STRESS_DIMS, STRESS_Q, STRESS_K = 8, 116.0, 405.0


def attention_goldens(preset, config, out):
    """Attention as Qwen2Attention computes it: transformers' eager_attention_forward (q k^T in the
    storage dtype, scaled, additive causal mask, softmax in FP32, cast, p v) on given q [T, H, D]
    and k, v [S, KV, D] (after RoPE), and the SDPA path transformers uses by default. The truth is
    eager attention in float64, its softmax too (`_softmax_float64_truth`). Stored in our layouts; transformers works on [1, heads, tokens, D].

    Every case has an attention sink: key 0 aligned with every query, so the first token takes
    most of the weight, as in trained models. VibeThinker also gets `stress8`, its layer-0
    magnitudes, where PyTorch's eager FP16 attention overflows (asserted below)."""
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    scaling = head_dim ** -0.5
    cases = list(ATTENTION_CASES) + ([("stress8", 8, 8)] if preset == "vibethinker-1.5b" else [])
    for label, tokens, context in cases:
        q = synth_tensor(f"golden.{preset}.attention.{label}.q", (tokens, heads, head_dim), 1.5 / UNIT_STD).float()
        k = synth_tensor(f"golden.{preset}.attention.{label}.k", (context, kv_heads, head_dim), 1.5 / UNIT_STD).float()
        v = synth_tensor(f"golden.{preset}.attention.{label}.v", (context, kv_heads, head_dim), 1.0 / UNIT_STD).float()
        sink = torch.where(torch.arange(head_dim) % 2 == 0, 1.0, -1.0)
        k[0] += 4.0 * sink
        q += 0.5 * sink
        if label == "stress8":
            q[:, :, :STRESS_DIMS] = STRESS_Q * sink[:STRESS_DIMS]
            k[:, :, :STRESS_DIMS] = STRESS_K * sink[:STRESS_DIMS]
        q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
        # Query i sits at position context - tokens + i and sees keys 0 ..= that position.
        masked = torch.arange(context)[None, :] > (context - tokens + torch.arange(tokens))[:, None]
        for dname, dtype in DTYPES.items():
            qd, kd, vd = q.to(dtype), k.to(dtype), v.to(dtype)
            key = f"attention.{label}.{dname}"
            out[f"{key}.q"], out[f"{key}.k"], out[f"{key}.v"] = qd, kd, vd
            for kind, run_dtype in (("truth", torch.float64), ("torch", dtype)):
                module = Qwen2Attention(config, layer_idx=0).to(run_dtype).eval()
                mask = torch.zeros(tokens, context, dtype=run_dtype).masked_fill(masked, torch.finfo(run_dtype).min)
                hf = lambda t: t.to(run_dtype).transpose(0, 1)[None]  # noqa: E731  [1, heads, tokens, D]
                with torch.no_grad():
                    o, _ = eager_attention_forward(module, hf(qd), hf(kd), hf(vd), mask[None, None], scaling=scaling)
                    out[f"{key}.o.{kind}"] = o[0]  # eager returns [1, tokens, heads, D]
                    if kind == "torch":
                        o, _ = sdpa_attention_forward(module, hf(qd), hf(kd), hf(vd), mask[None, None], scaling=scaling)
                        out[f"{key}.o.sdpa"] = o[0]
            if label == "stress8":
                eager_finite = bool(torch.isfinite(out[f"{key}.o.torch"]).all())
                if dname == "f16":
                    assert not eager_finite, "the stress case must overflow PyTorch's eager FP16 attention"
                else:
                    assert eager_finite, f"stress8 {dname}: eager attention should stay finite"
                assert bool(torch.isfinite(out[f"{key}.o.truth"]).all())


# Token ids the tokenizer can produce; embedding rows past it are padding (never trained).
REAL_VOCAB = 151665


def lm_head_goldens(preset, config, out, recorded):
    """The tied lm_head of Qwen2ForCausalLM (its `nn.Linear(hidden, vocab, bias=False)`, sharing the
    embedding's weight when tie_word_embeddings) on one final-normed hidden state, and torch.argmax of its logits bounded by
    the real vocabulary. The embedding's real rows and its padded rows are two synth tensors; the
    padded rows are drawn 25 times larger, so their logits beat every real logit (asserted): an
    unbounded argmax picks a padded id. Logits truths are stored as float32 (one rounding of the
    float64 value: 2^-24 relative, far inside every tolerance) to keep the files small."""
    hidden, vocab = config.hidden_size, config.vocab_size
    real = synth_weight(f"golden.{preset}.embed_tokens.real", (REAL_VOCAB, hidden), 0.02 / UNIT_STD, recorded)
    padded = synth_weight(f"golden.{preset}.embed_tokens.padded", (vocab - REAL_VOCAB, hidden), 0.5 / UNIT_STD, recorded)
    weight = torch.cat([real, padded])
    # Through f16 and back: every dtype then holds x exactly (no f16 subnormal rounds), so one
    # truth serves all three.
    x_bf16 = synth_tensor(f"golden.{preset}.lm_head.x", (1, hidden), 1.0 / UNIT_STD).to(torch.float16).to(torch.bfloat16)
    for dname, dtype in DTYPES.items():
        x = x_bf16.to(dtype)
        out[f"lm_head.{dname}.x"] = x
        for kind, run_dtype in (("truth", torch.float64), ("torch", dtype)):
            lm_head = torch.nn.Linear(hidden, vocab, bias=False).to(run_dtype)
            with torch.no_grad():
                lm_head.weight.copy_(weight.to(dtype).to(run_dtype))
                logits = lm_head(x.to(run_dtype))
            out[f"lm_head.{dname}.logits.{kind}"] = logits.float() if kind == "truth" else logits
            bounded = torch.argmax(logits[:, :REAL_VOCAB], dim=-1)
            unbounded = torch.argmax(logits, dim=-1)
            assert int(unbounded[0]) >= REAL_VOCAB, "padded rows must beat every real logit"
            out[f"argmax.{dname}.index.{kind}"] = bounded.to(torch.int32)
            out[f"argmax.{dname}.unbounded.{kind}"] = unbounded.to(torch.int32)


LAYER_TOKENS = 4

# Layer-0 q/k bias hazards. VibeThinker (measured on the real model): |q| up to ~116 and |k| up to
# ~405, scaled logits up to ~2.5e4, and the unscaled FP16 q.k overflows. Qwen2.5: q/k bias outliers
# of -14.4, -15.4, -34.0. Each entry: (dims of every head, q bias value, k bias value); the signs
# alternate over the dims, the same for q and k, so q and k align where the biases dominate.
LAYER0_BIAS_HAZARDS = {
    "vibethinker-1.5b": (range(0, 8), 116.0, 405.0),
    "qwen2.5-0.5b": (range(0, 3), -34.0, -15.4),
}

# The stages of Qwen2DecoderLayer captured by forward hooks: module name -> what is stored.
LAYER_STAGES = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
# Projections whose decode GEMV `check` compares at the model's shape on layer 0's own inputs (the
# ops file has q/k/o): PyTorch's FP32 output is stored beside the bf16 one, for the f32 rows.
LAYER_F32_STAGES = ["self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def layer_goldens(preset, config, layer_idx=0, params=None, x=None):
    """Layer 0 of the model as Qwen2DecoderLayer runs it in bf16 (eager attention), every
    intermediate captured, and for each stage the float64 truth of that stage computed from the
    bf16 inputs PyTorch gave it (teacher forcing: each of our ops is checked in the layer's real
    context, fed exactly what PyTorch's own previous stage produced). The q/k biases carry the
    layer-0 hazards (LAYER0_BIAS_HAZARDS), asserted below at their real magnitudes.

    Tensors (bf16 unless noted; `.truth` float64):
        layer.x, layer.positions (i32), <stage>.out and <stage>.truth for each LAYER_STAGES module,
        <stage>.f32.out (float32: the module in FP32 on the same bf16 input) for LAYER_F32_STAGES
        (its input is the stored tensor the layer's wiring feeds it, asserted below), rope.q / rope.k (after RoPE, [T, heads, D]) and their .truth, attention.o (+ .truth),
        swiglu.out (+ .truth), residual1.out (+ .truth: x + o_proj), layer.out (+ .truth), biases and
        norm weights; big weights as synth recipes in the metadata.

    With `params` (this layer's parameters by name, e.g. "self_attn.q_proj.weight") and `x` (its
    bf16 input [1, T, H]), the same for layer `layer_idx` of the whole model (hazard profile):
    the layer's weight recipes are recorded by the caller, truths are stored as float32 (one
    rounding of float64, 2^-24 relative: it keeps the file within the golden budget) and the
    layer-0 hazard assertions are skipped."""
    out, recorded = {}, {}
    tokens = LAYER_TOKENS
    dtype = torch.bfloat16
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    hidden, inter = config.hidden_size, config.intermediate_size

    captured = {}

    def capturing_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        captured["q"], captured["k"], captured["v"] = query, key, value
        o, w = eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
        captured["o"] = o
        return o, w

    AttentionInterface.register("qwen_kernels_capture", capturing_attention)
    cfg = make_config(preset)
    cfg._attn_implementation = "qwen_kernels_capture"
    layer = Qwen2DecoderLayer(cfg, layer_idx=layer_idx).to(dtype).eval()
    twin = Qwen2DecoderLayer(cfg, layer_idx=layer_idx).to(torch.float64).eval()  # float64 copy, same weights

    dims, q_bias_value, k_bias_value = LAYER0_BIAS_HAZARDS[preset]
    sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in dims])
    with torch.no_grad():
        if params is not None:
            layer.load_state_dict(params)
            for name, value in params.items():
                if name.endswith(".bias") or "layernorm" in name:
                    out[name] = value.detach().clone()
        for name, module in (layer.named_modules() if params is None else []):
            if isinstance(module, torch.nn.Linear):
                w = synth_weight(f"golden.{preset}.layer0.{name}.weight", tuple(module.weight.shape), 0.02 / UNIT_STD, recorded)
                module.weight.copy_(w)
                if module.bias is not None:
                    b = synth_tensor(f"golden.{preset}.layer0.{name}.bias", tuple(module.bias.shape), 0.5 / UNIT_STD).float()
                    n_heads = module.bias.shape[0] // head_dim
                    value = {"self_attn.q_proj": q_bias_value, "self_attn.k_proj": k_bias_value}.get(name)
                    if value is not None:
                        b = b.view(n_heads, head_dim)
                        b[:, list(dims)] = value * sign
                        b = b.reshape(-1)
                    module.bias.copy_(b.to(dtype))
                    out[f"{name}.bias"] = module.bias.detach().clone()
            elif isinstance(module, Qwen2RMSNorm):
                module.weight.copy_(synth_tensor(f"golden.{preset}.layer0.{name}.weight", (hidden,), 2.0, offset=1.0))
                out[f"{name}.weight"] = module.weight.detach().clone()
        twin.load_state_dict({k: v.to(torch.float64) for k, v in layer.state_dict().items()})

    if x is None:
        x = synth_tensor(f"golden.{preset}.layer0.x", (1, tokens, hidden), 0.05 / UNIT_STD)
    tokens = x.shape[1]
    positions = torch.arange(tokens)[None]
    rotary = Qwen2RotaryEmbedding(cfg)
    mask = torch.zeros(tokens, tokens, dtype=dtype).masked_fill(
        torch.ones(tokens, tokens, dtype=torch.bool).triu(1), torch.finfo(dtype).min)[None, None]

    stage_io = {}
    hooks = [dict(layer.named_modules())[n].register_forward_hook(
        lambda mod, inp, outp, n=n: stage_io.__setitem__(n, (inp[0].detach().clone(), outp.detach().clone())))
        for n in LAYER_STAGES]
    with torch.no_grad():
        y = layer(x, attention_mask=mask, position_ids=positions, position_embeddings=rotary(x, positions))
    for h in hooks:
        h.remove()

    twin_modules = dict(twin.named_modules())
    with torch.no_grad():
        out["layer.x"] = x[0]
        out["layer.positions"] = positions[0].to(torch.int32)
        for n in LAYER_STAGES:
            inp, outp = stage_io[n]
            out[f"{n}.out"] = outp[0]
            out[f"{n}.truth"] = twin_modules[n](inp.to(torch.float64))[0]
        if params is None:
            single = Qwen2DecoderLayer(cfg, layer_idx=0).to(torch.float32).eval()
            single.load_state_dict({k: v.to(torch.float32) for k, v in layer.state_dict().items()})
            single_modules = dict(single.named_modules())
            for n in LAYER_F32_STAGES:
                out[f"{n}.f32.out"] = single_modules[n](stage_io[n][0].to(torch.float32))[0]
        # The wiring the Rust side reproduces: which stored tensor feeds each stage.
        feeds = {
            "input_layernorm": x,
            "self_attn.q_proj": stage_io["input_layernorm"][1],
            "self_attn.k_proj": stage_io["input_layernorm"][1],
            "self_attn.v_proj": stage_io["input_layernorm"][1],
            "self_attn.o_proj": captured["o"].reshape(1, tokens, heads * head_dim),
            "post_attention_layernorm": x + stage_io["self_attn.o_proj"][1],
            "mlp.gate_proj": stage_io["post_attention_layernorm"][1],
            "mlp.up_proj": stage_io["post_attention_layernorm"][1],
        }
        for n, feed in feeds.items():
            assert torch.equal(stage_io[n][0], feed), f"layer wiring: {n}"
        # RoPE on the bf16 q/k projections (FP32 angles, as the module computes them).
        q_proj = stage_io["self_attn.q_proj"][1].view(1, tokens, heads, head_dim).transpose(1, 2)
        k_proj = stage_io["self_attn.k_proj"][1].view(1, tokens, kv_heads, head_dim).transpose(1, 2)
        cos64, sin64 = rotary(q_proj.to(torch.float64), positions)
        q_truth, k_truth = apply_rotary_pos_emb(q_proj.to(torch.float64), k_proj.to(torch.float64), cos64, sin64)
        ours_layout = lambda t: t[0].transpose(0, 1)  # noqa: E731  [1, heads, T, D] -> [T, heads, D]
        out["rope.q"], out["rope.k"] = ours_layout(captured["q"]), ours_layout(captured["k"])
        out["rope.q.truth"], out["rope.k.truth"] = ours_layout(q_truth), ours_layout(k_truth)
        out["attention.v"] = ours_layout(captured["v"])
        out["attention.o"] = captured["o"][0]
        o64, _ = eager_attention_forward(twin.self_attn, captured["q"].to(torch.float64), captured["k"].to(torch.float64),
                                         captured["v"].to(torch.float64), mask.to(torch.float64).clamp_min(-1e300),
                                         scaling=head_dim ** -0.5)
        out["attention.o.truth"] = o64[0]
        gate, up = stage_io["mlp.gate_proj"][1], stage_io["mlp.up_proj"][1]
        out["swiglu.out"] = stage_io["mlp.down_proj"][0][0]
        assert torch.equal(stage_io["mlp.down_proj"][0], layer.mlp.act_fn(gate) * up), "layer wiring: mlp.down_proj"
        out["swiglu.truth"] = (twin.mlp.act_fn(gate.to(torch.float64)) * up.to(torch.float64))[0]
        residual1 = stage_io["post_attention_layernorm"][0]
        out["residual1.out"] = residual1[0]
        out["residual1.truth"] = (x.to(torch.float64) + stage_io["self_attn.o_proj"][1].to(torch.float64))[0]
        out["layer.out"] = y[0]
        out["layer.truth"] = (residual1.to(torch.float64) + stage_io["mlp.down_proj"][1].to(torch.float64))[0]

        if params is not None:
            for name in list(out):
                if name.endswith(".truth"):
                    out[name] = out[name].float()
            return out, recorded
        # The hazards, at their real magnitudes.
        q_max, k_max = float(captured["q"].abs().max()), float(captured["k"].abs().max())
        logits = (captured["q"].float() @ captured["k"].float().repeat_interleave(heads // kv_heads, 1).transpose(2, 3))
        scaled_max = float(logits.abs().max()) * head_dim ** -0.5
        if preset == "vibethinker-1.5b":
            assert 100 < q_max < 135 and 350 < k_max < 460, (q_max, k_max)
            assert scaled_max > 2.0e4, scaled_max
            half_layer = Qwen2DecoderLayer(cfg, layer_idx=0).to(torch.float16).eval()
            half_layer.load_state_dict({k: v.to(torch.float16) for k, v in layer.state_dict().items()})
            y16 = half_layer(x.to(torch.float16), attention_mask=mask.to(torch.float16).clamp_min(-65504.0),
                             position_ids=positions, position_embeddings=rotary(x.to(torch.float16), positions))
            assert not bool(torch.isfinite(y16).all()), "eager FP16 must overflow on VibeThinker's layer 0"
        else:
            # The first token is not rotated: its q and k keep the -34.0 and -15.4 bias outliers.
            assert q_max > 30 and k_max > 13, (q_max, k_max)
        for key, value in (("q_abs_max", q_max), ("k_abs_max", k_max), ("scaled_logit_abs_max", scaled_max)):
            recorded[f"hazard.{key}"] = repr(value)
    return out, recorded


PROMPT_TOKENS = 8
GREEDY_STEPS = 32
# A greedy golden is only a fair test where the truth's choice is clear: every step's top-1 logit
# beats the runner-up by at least this much (an FP32 forward errs by ~1e-5 here).
MIN_MARGIN = 1e-3


def load_model(config, dtype, weights, attn):
    """Qwen2ForCausalLM at `dtype` with the given parameters (bf16 tensors by HF name). Built with
    `dtype` as the default, as from_pretrained builds it: the rotary inv_freq stays FP32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        cfg = Qwen2Config.from_dict(config.to_dict())
        cfg._attn_implementation = attn
        model = Qwen2ForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(weights[name])
    assert model.lm_head.weight is model.model.embed_tokens.weight or not config.tie_word_embeddings
    return model


def run_model(model, prompt, steps, real_vocab, feed=None):
    """Prefill `prompt`, then `steps` greedy tokens with transformers' KV cache (argmax over the
    real vocabulary; with `feed`, step i is fed feed[i] instead of its own argmax). Returns the
    residual stream after the embedding and every layer [L+1, T, H], after each layer's attention
    [L, T, H], the final norm's output that produced each greedy token [steps, H], the tokens, each
    step's top-1 margin, the prefill's last logits and the eager attention probabilities of the
    prefill (when the model returns them)."""
    layers = model.model.layers
    captured = {"out": [None] * len(layers), "mid": [None] * len(layers), "norm": None}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(
            lambda m, inp, out, i=i: captured["out"].__setitem__(i, (out[0] if isinstance(out, tuple) else out).detach().clone())))
        hooks.append(layer.post_attention_layernorm.register_forward_hook(
            lambda m, inp, out, i=i: captured["mid"].__setitem__(i, inp[0].detach().clone())))
    hooks.append(model.model.norm.register_forward_hook(lambda m, inp, out: captured.__setitem__("norm", out.detach().clone())))
    eager = model.config._attn_implementation == "eager"
    with torch.no_grad():
        ids = torch.tensor([prompt])
        out = model(input_ids=ids, use_cache=True, output_attentions=eager)
        embedded = model.model.embed_tokens(ids)[0]
        hidden = torch.stack([embedded] + [h[0] for h in captured["out"]])
        mid = torch.stack([h[0] for h in captured["mid"]])
        probs = [a[0] for a in out.attentions] if eager else None
        last_logits = out.logits[0, -1].clone()
        cache, logits = out.past_key_values, out.logits[0, -1]
        tokens, margins, normed = [], [], []
        for _ in range(steps):
            top = torch.topk(logits[:real_vocab].double(), 2)
            tokens.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            normed.append(captured["norm"][0, -1].clone())
            fed = tokens[-1] if feed is None else feed[len(tokens) - 1]
            out = model(input_ids=torch.tensor([[fed]]), past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[0, -1]
    for h in hooks:
        h.remove()
    return dict(hidden=hidden, mid=mid, normed=torch.stack(normed), tokens=tokens, margins=margins,
                last_logits=last_logits, probs=probs)


def model_goldens(preset, config, weights=None, profile_meta=None, real_vocab=hazards.REAL_VOCAB, bos=hazards.BOS):
    """The whole model, Qwen2ForCausalLM: a prompt of PROMPT_TOKENS (BOS first) prefilled, then
    GREEDY_STEPS greedy tokens with the KV cache, in bfloat16 (transformers' default SDPA attention:
    what PyTorch users get) and in float64 (eager attention: the truth). Weights: the hazard profile
    (golden/hazards.py) unless given (a checkpoint). The hazards are asserted on the truth.

    Tensors: prompt (i32 [T]); hidden.truth / hidden.torch [L+1, T, H] (the residual stream after
    the embedding and after each layer); attn_residual.truth [L, T, H] (after each layer's
    attention add); logits.truth (f32, one rounding of float64) / logits.torch [V] at the prompt's
    last position; greedy.tokens.truth / .torch (i32 [N]); greedy.margin.truth (f32 [N]: top-1 minus
    top-2 logit of the real vocabulary); greedy.normed.truth [N, H] (the final norm's output each
    greedy token was chosen from); greedy.normed.torch [N, H] (PyTorch bf16's, fed the truth's
    tokens: its error at each decode step along the same text). Truths are stored as float32 (relative error 2^-24)."""
    recorded = {}
    if weights is None:
        prof = hazards.build(preset, config, SEED)
        weights = {}
        for name in prof.recipes:
            bits = prof.tensor(name)
            weights[name] = torch.from_numpy(synth.bits_to_f32(bits.reshape(-1)).copy()).reshape(bits.shape).to(torch.bfloat16)
        recorded.update(prof.metadata())
        recorded["profile.constants"] = json.dumps({"bos": hazards.BOS, "mark": hazards.MARK, "c1": hazards.C1, "c2": hazards.C2,
                                                    "write_layer": hazards.WRITE_LAYER, "hold_layer": hazards.HOLD_LAYER,
                                                    "sink_from": hazards.SINK_FROM}, sort_keys=True)
    if config.tie_word_embeddings:
        weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
    # The prompt: BOS, then ids drawn from synth; the first draw whose greedy continuation has
    # clear choices at every step (MIN_MARGIN) is used, and the attempt number recorded.
    model = load_model(config, torch.float64, weights, "eager")
    for attempt in range(8):
        drawn = synth.tensor_bf16_bits(SEED, f"golden.{preset}.model.prompt.{attempt}", PROMPT_TOKENS - 1, "1.0")
        prompt = [bos] + [int(b) * 7919 % (min(real_vocab, bos) or real_vocab) for b in drawn]
        truth = run_model(model, prompt, GREEDY_STEPS, real_vocab)
        if min(truth["margins"]) >= MIN_MARGIN:
            break
        print(f"{preset}: prompt {attempt} has a greedy margin of {min(truth['margins']):.2e}; next", flush=True)
    else:
        raise AssertionError("no prompt with clear greedy choices")
    recorded["prompt.attempt"] = str(attempt)
    del model
    out = {"prompt": torch.tensor(prompt, dtype=torch.int32)}
    out["hidden.truth"], out["attn_residual.truth"] = truth["hidden"].float(), truth["mid"].float()
    out["logits.truth"] = truth["last_logits"].float()
    out["greedy.tokens.truth"] = torch.tensor(truth["tokens"], dtype=torch.int32)
    out["greedy.margin.truth"] = torch.tensor(truth["margins"], dtype=torch.float32)
    out["greedy.normed.truth"] = truth["normed"].float()

    model = load_model(config, torch.bfloat16, weights, "sdpa")
    got = run_model(model, prompt, GREEDY_STEPS, real_vocab)
    # Fed the truth's tokens instead of its own, PyTorch bf16 decodes the truth's text: its final
    # norm's output at every step is what a 16-bit decode step of ours is judged against.
    out["greedy.normed.torch"] = run_model(model, prompt, GREEDY_STEPS, real_vocab, feed=truth["tokens"])["normed"]
    del model
    out["hidden.torch"] = got["hidden"]
    out["logits.torch"] = got["last_logits"]
    out["greedy.tokens.torch"] = torch.tensor(got["tokens"], dtype=torch.int32)
    agree = next((i for i, (a, b) in enumerate(zip(got["tokens"], truth["tokens"])) if a != b), GREEDY_STEPS)
    recorded["greedy.torch_agrees_for"] = str(agree)

    # Stage by stage, the layer where the massive activations collapse (the layer-0 machinery of
    # layer_goldens on the first LAYER_TOKENS tokens, fed PyTorch bf16's own input to that layer).
    layer_files = {}
    if profile_meta is None:
        h = config.num_hidden_layers - 2
        prefix = f"model.layers.{h}."
        params = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        x = got["hidden"][h][None, :LAYER_TOKENS].to(torch.bfloat16)
        tensors, layer_meta = layer_goldens(preset, config, layer_idx=h, params=params, x=x)
        layer_meta.update({k: v for k, v in recorded.items() if k.startswith(f"weight.{prefix}")})
        assert float(x[0, 0].abs().max()) > 7000, "the collapse layer's input carries the massive activations"
        assert float(tensors["layer.truth"][0].abs().max()) < 1000, "and its output no longer does"
        layer_files[f"layer{h}"] = (tensors, layer_meta)
    recorded["layer_files"] = json.dumps(sorted(layer_files))

    # The hazards, measured on the truth.
    h = truth["hidden"]
    first = h[:, 0].abs().max(dim=-1).values  # BOS, after each layer
    rest = h[:, 1:].abs().amax(dim=(1, 2))
    probs = truth["probs"]  # per layer [heads, T, T]
    sink = [float(p[:, 1:, 0].mean()) for p in probs]
    recorded["hazard.bos_abs_max_per_layer"] = json.dumps([round(float(v), 1) for v in first])
    recorded["hazard.other_abs_max_per_layer"] = json.dumps([round(float(v), 2) for v in rest])
    recorded["hazard.sink_weight_per_layer"] = json.dumps([round(v, 3) for v in sink])
    recorded["hazard.unbounded_argmax"] = str(int(truth["last_logits"].argmax()))
    if profile_meta is None:
        w, c1, c2, L = hazards.WRITE_LAYER, hazards.C1, hazards.C2, config.num_hidden_layers
        assert -5500 < float(h[w + 1, 0, c1]) < -3000, float(h[w + 1, 0, c1])
        middle = first[hazards.HOLD_LAYER + 1:L - 1]
        assert float(middle.min()) > 6500 and float(middle.max()) < 9500, middle
        assert 7000 < float(h[hazards.HOLD_LAYER + 1, 0, c2]) < 9000, float(h[hazards.HOLD_LAYER + 1, 0, c2])
        assert float(first[L - 1]) < 1000, float(first[L - 1])
        assert min(sink[hazards.SINK_FROM:]) > 0.5 and max(sink[:hazards.SINK_FROM]) < 0.5, sink
        assert int(truth["last_logits"].argmax()) >= real_vocab, "padded rows must beat every real logit"
    else:
        recorded.update(profile_meta)
    return out, recorded, layer_files


def checkpoint_goldens(directory, name, out_dir, command):
    """The whole-model goldens of a Hugging Face checkpoint directory (config.json + safetensors),
    written to <out_dir>/<name>/model.safetensors (golden/locations.py says where by default); the
    Rust side reads the same directory's weights (`qwen-kernels check --checkpoint DIR`). The prompt starts with <|endoftext|> (151643) when the
    vocabulary has it, else id 0; the real vocabulary is the Qwen2 tokenizer's 151665 ids or the
    whole embedding if smaller."""
    config = Qwen2Config.from_pretrained(directory)
    model = Qwen2ForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(w.dtype == torch.bfloat16 for w in weights.values())
    del model
    real_vocab = min(config.vocab_size, hazards.REAL_VOCAB)
    bos = hazards.BOS if hazards.BOS < config.vocab_size else 0
    tensors, recorded, _ = model_goldens(name, config, weights=weights, profile_meta={"checkpoint": directory},
                                         real_vocab=real_vocab, bos=bos)
    with open(os.path.join(directory, "config.json")) as f:
        config_text = f.read()
    meta = {
        "format": FORMAT, "version": VERSION, "model": name, "config": config_text, "seed": str(SEED),
        "profile": "checkpoint", "torch": torch.__version__, "transformers": transformers.__version__,
        "command": command,
    }
    meta.update(recorded)
    path = os.path.join(out_dir, name, "model.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_safetensors(tensors, path, meta)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
    return path


# ---- sampling: transformers' logits warpers on both models' logits rows ----------------------------

# Off values as generate() leaves a warper out of the list.
SAMPLING_OFF = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
# Every decision of a case (the probability ranked above a token against top_p, a token's
# probability over the top one's against min_p) is at least this far from its cut-off, so the
# crate's rounding cannot move a token across it: its exp is within 2 ulp (2.4e-7 relative) of
# float64's, so a sum of them is too, and its fixed-point masses lose at most V * 2^-40 / Z
# (1.4e-7, Z >= 1): |error| <= 2 * 2.4e-7 + 1.4e-7 = 6.2e-7, and the margin is three times that.
# PyTorch's own FP32 rounding is checked instead: transformers' kept set must equal float64's.
# A parameter that lands closer is moved by steps of 1e-4 until it does not.
SAMPLING_MARGIN = 2e-6
# Probabilities stored per case: the first this many kept tokens of the ranking (32 KiB).
SAMPLING_STORED = 4096


def stable_sort(fn):
    """torch.sort with stable=True while `fn` runs. TopPLogitsWarper sorts ascending with the default
    unstable sort, so which members of a tie group at the cut-off it keeps is an accident of the
    sort (on CPU, for rows past a few hundred entries, not index order); the crate's definition
    (src/spec/sampling.rs) is the stable sort's, highest index kept first. The goldens are that
    definition; the unstable run's kept count is recorded beside it and must be the same."""
    original = torch.sort

    def sort(*args, **kwargs):
        kwargs["stable"] = True
        return original(*args, **kwargs)

    torch.sort = sort
    try:
        return fn()
    finally:
        torch.sort = original


def warpers(temperature, top_k, top_p, min_p):
    """The warpers generate(do_sample=True) appends, in its order (transformers.generation.utils,
    _get_logits_processor: temperature, top_k, top_p, min_p), each only when it is on."""
    from transformers.generation.logits_process import (
        LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
    out = LogitsProcessorList()
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        out.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    if min_p != 0.0:
        out.append(MinPLogitsWarper(min_p=min_p, min_tokens_to_keep=1))
    return out


def exact_margin(x, params):
    """The float64 view of a case (the crate's CPU reference, src/reference/sampling.rs): the kept
    mask and the smallest relative distance of a top-p / min-p decision from its cut-off."""
    x = x.double()
    keep = torch.ones_like(x, dtype=torch.bool)
    if 0 < params["top_k"] < x.numel():
        kth = torch.sort(x, descending=True).values[params["top_k"] - 1]
        keep = x >= kth
    e = torch.exp(x - x.max())
    margin = float("inf")
    if params["top_p"] < 1.0:
        idx = torch.nonzero(keep).flatten()
        # Rank by (value, index) descending: a stable ascending sort, reversed.
        order = idx[torch.sort(x[idx], stable=True).indices].flip(0)
        mass = e[order]
        above = torch.cumsum(mass, 0) - mass
        frac = above / mass.sum()
        margin = min(margin, float((frac - params["top_p"]).abs().min()))
        drop = order[(frac >= params["top_p"]) & (above > 0)]
        keep[drop] = False
    if params["min_p"] > 0.0:
        margin = min(margin, float((e[keep] - params["min_p"]).abs().min()))
        keep = keep & (e >= params["min_p"])
    return keep, margin


def sampling_goldens(preset, directory):
    """sampling.safetensors: transformers' warpers (golden/gen.py `warpers`) on the logits rows of the
    model's golden (model.safetensors: the bf16 model's last logits, `logits.torch`, and the float64
    truth's as f32, `logits.truth`), bounded to the real vocabulary as the crate samples. Per case C:
    sampling.C.index i32 [N], sampling.C.probs.truth and .torch f32 [N]: softmax of the warpers'
    output (what torch.multinomial draws from) in float64 and in PyTorch's FP32, at the first
    N = min(kept, SAMPLING_STORED) tokens of the ranking
    (value, then index, descending; every filter keeps a prefix of it, so `kept` fixes the set);
    metadata sampling.C = {dtype (the row: bf16 is logits.torch, f32 is logits.truth, both cut to
    the real vocabulary), temperature, top_k, top_p, min_p, kept, margin, tie_at_cut,
    unstable_kept}. Parameters: fixed ones, and some chosen from the row so a
    tie group straddles the cut-off (top-k: the k-th value repeats; top-p: a group of equal values
    is cut inside), always at least SAMPLING_MARGIN from every cut."""
    from safetensors.torch import load_file
    model = load_file(os.path.join(directory, "model.safetensors"))
    rows = {"bf16": model["logits.torch"][:hazards.REAL_VOCAB].reshape(1, -1),
            "f32": model["logits.truth"][:hazards.REAL_VOCAB].float().reshape(1, -1)}

    def tie_top_k(x):
        """The smallest k >= 40 whose k-th largest value equals the (k+1)-th."""
        s = torch.sort(x.flatten(), descending=True).values
        k = 40
        while s[k - 1] != s[k]:
            k += 1
        return k

    def tie_top_p(x, temperature):
        """A top_p (f32) cutting the second group of >= 3 equal values of the top 64 inside."""
        x = (x.flatten().float() / temperature).double()
        e = torch.exp(x - x.max())
        order = torch.sort(x, stable=True).indices.flip(0)
        v, mass = x[order], e[order]
        above = (torch.cumsum(mass, 0) - mass) / mass.sum()
        seen = 0
        for start in range(64):
            if start > 0 and v[start] == v[start - 1]:
                continue
            end = start
            while v[end + 1] == v[start]:
                end += 1
            if end - start >= 2:
                seen += 1
                if seen == 2:
                    mid = start + (end - start + 1) // 2
                    return float(torch.tensor((float(above[mid]) + float(above[mid - 1])) / 2, dtype=torch.float32))
        raise AssertionError("no tie group of 3 among the top 64 values")

    cases = [
        ("temperature", "bf16", dict(temperature=0.7)),
        ("temperature_f32", "f32", dict(temperature=1.3)),
        ("top_k", "bf16", dict(top_k="tie")),
        ("top_k_f32", "f32", dict(temperature=0.8, top_k=40)),
        ("top_p", "bf16", dict(temperature=0.1, top_p=0.9)),
        ("top_p_tie", "bf16", dict(top_p="tie")),
        ("top_p_f32", "f32", dict(temperature=0.7, top_p=0.5)),
        ("min_p", "bf16", dict(min_p=0.05)),
        ("min_p_f32", "f32", dict(temperature=0.5, min_p=0.1)),
        ("combined", "bf16", dict(temperature=0.7, top_k=20, top_p=0.8, min_p=0.05)),
        ("combined_f32", "f32", dict(temperature=0.3, top_k=1000, top_p=0.95, min_p=0.02)),
    ]
    tensors, recorded = {}, {}
    for name, dtype, given in cases:
        logits = rows[dtype]
        params = dict(SAMPLING_OFF, **given)
        if params["top_k"] == "tie":
            params["top_k"] = tie_top_k(logits.float() / params["temperature"])
        if params["top_p"] == "tie":
            params["top_p"] = tie_top_p(logits, params["temperature"])
        # Parameters travel as f32 (the crate's type): transformers gets the same values.
        f32 = lambda v: float(torch.tensor(v, dtype=torch.float32))  # noqa: E731
        for key in ("temperature", "top_p", "min_p"):
            params[key] = f32(params[key])
        scores_in = logits.float()  # generate() casts the last logits to f32 before the warpers
        x = scores_in.flatten() / params["temperature"]
        for step in range(1, 41):
            if exact_margin(x, params)[1] >= SAMPLING_MARGIN:
                break
            key = "top_p" if params["top_p"] < 1.0 else "min_p"
            params[key] = f32(params[key] + (step // 2) * 1e-4 * (1 if step % 2 else -1))
        procs = warpers(**params)
        scores = stable_sort(lambda: procs(None, scores_in.clone()))
        unstable = procs(None, scores_in.clone())
        kept = int(torch.isfinite(scores).sum())
        unstable_kept = int(torch.isfinite(unstable).sum())
        assert kept == unstable_kept, f"{name}: the stable and unstable sorts keep {kept} and {unstable_kept}"
        exact, margin = exact_margin(x, params)
        assert torch.equal(exact, torch.isfinite(scores.flatten())), f"{name}: transformers and float64 keep different sets"
        assert margin >= SAMPLING_MARGIN, f"{name}: a decision {margin:.2e} from its cut-off"
        # A tie at the cut-off: the smallest value kept is held by more than one token (kept whole
        # by top-k, maybe cut inside by top-p).
        low = x[exact].min()
        tie_at_cut = bool(kept < x.numel() and int((x == low).sum()) > 1)
        # Every filter keeps a prefix of the ranking (value, then index, descending), so the kept
        # count fixes the kept set; the probabilities of its first SAMPLING_STORED tokens are stored.
        ranked = torch.sort(x, stable=True).indices.flip(0)[:min(kept, SAMPLING_STORED)]
        assert bool(torch.isfinite(scores.flatten()[ranked]).all())
        tensors[f"sampling.{name}.index"] = ranked.to(torch.int32)
        # The distribution transformers samples from: softmax of its processed scores, in float64
        # (the truth) and as PyTorch computes it in FP32 (its own error beside ours).
        tensors[f"sampling.{name}.probs.truth"] = torch.softmax(scores.double(), dim=-1).flatten()[ranked].float()
        tensors[f"sampling.{name}.probs.torch"] = torch.softmax(scores, dim=-1).flatten()[ranked]
        recorded[f"sampling.{name}"] = json.dumps(dict(params, dtype=dtype, kept=kept, margin=None if margin == float("inf") else margin,
                                                       tie_at_cut=tie_at_cut, unstable_kept=unstable_kept), sort_keys=True)
        print(f"  sampling.{name}: {params} kept {kept}, margin {margin:.2e}, tie at cut {tie_at_cut}")
    recorded["sampling.cases"] = json.dumps([c[0] for c in cases])
    return tensors, recorded


def metadata(preset, config, command):
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": preset,
        "config": json.dumps(PRESETS[preset], sort_keys=True),
        "seed": str(SEED),
        "profile": "synthetic",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": command,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="all", choices=["all", *PRESETS])
    parser.add_argument("--out", help="where golden files go (default: golden/data; with --checkpoint, the user "
                        "directory of golden/locations.py, or golden/data for a checkpoint committed there)")
    parser.add_argument("--only", default="all", choices=["all", "ops", "model", "sampling"],
                        help="ops: ops + layer0 files; model: the whole-model file; sampling: the warpers on the model file's logits")
    parser.add_argument("--checkpoint", help="a Hugging Face checkpoint directory: write its whole-model goldens only")
    parser.add_argument("--name", help="with --checkpoint: the model name the goldens are filed under")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.checkpoint:
        name = args.name or os.path.basename(os.path.normpath(args.checkpoint))
        command = f"python3 golden/gen.py --checkpoint {args.checkpoint} --name {name}"
        if args.out:
            command += f" --out {args.out}"
        out = args.out or locations.checkpoint_out_dir(args.checkpoint)
        path = checkpoint_goldens(args.checkpoint, name, out, command)
        if locations.is_committed(out):
            write_manifest(out)
        else:
            print(f"{path}: outside golden/data (not committed, MANIFEST.json untouched); "
                  f"read by: qwen-kernels check --checkpoint {args.checkpoint} --name {name}"
                  + (f" --goldens {args.out}" if args.out else ""))
        return
    if args.out is None:
        args.out = locations.COMMITTED
    models = list(PRESETS) if args.model == "all" else [args.model]
    for preset in models:
        config = make_config(preset)
        directory = os.path.join(args.out, preset)
        os.makedirs(directory, exist_ok=True)
        if args.only in ("all", "model"):
            tensors, recorded, layer_files = model_goldens(preset, config)
            path = os.path.join(directory, "model.safetensors")
            meta = metadata(preset, config, f"python3 golden/gen.py --model {preset} --only model")
            meta["profile"] = "synthetic, hazards (golden/hazards.py)"
            meta.update(recorded)
            save_safetensors(tensors, path, meta)
            print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
            for name, (tensors, recorded) in layer_files.items():
                path = os.path.join(directory, f"{name}.safetensors")
                meta = metadata(preset, config, f"python3 golden/gen.py --model {preset} --only model")
                meta["profile"] = "synthetic, hazards (golden/hazards.py)"
                meta.update(recorded)
                save_safetensors(tensors, path, meta)
                print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
        if args.only in ("all", "sampling"):
            tensors, recorded = sampling_goldens(preset, directory)
            path = os.path.join(directory, "sampling.safetensors")
            meta = metadata(preset, config, f"python3 golden/gen.py --model {preset} --only sampling")
            meta.update(recorded)
            save_safetensors(tensors, path, meta)
            print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
        if args.only in ("model", "sampling"):
            continue
        tensors = {}
        rmsnorm_goldens(preset, config, tensors)
        recorded = {}
        linear_goldens(preset, config, tensors, recorded)
        swiglu_goldens(preset, config, tensors)
        rope_goldens(preset, config, tensors)
        attention_goldens(preset, config, tensors)
        lm_head_goldens(preset, config, tensors, recorded)
        path = os.path.join(directory, "ops.safetensors")
        meta = metadata(preset, config, f"python3 golden/gen.py --model {preset}")
        meta.update(recorded)
        save_safetensors(tensors, path, meta)
        print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")

        tensors, recorded = layer_goldens(preset, config)
        path = os.path.join(directory, "layer0.safetensors")
        meta = metadata(preset, config, f"python3 golden/gen.py --model {preset}")
        meta.update(recorded)
        save_safetensors(tensors, path, meta)
        print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")
    write_manifest(args.out)


if __name__ == "__main__":
    main()
