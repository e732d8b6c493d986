//! Qwen2 configs: the one place model numbers live (kernels take them as arguments).
//!
//! Values are those of the models' config.json files as published:
//! - Qwen/Qwen2.5-0.5B-Instruct: hidden 896, intermediate 4864, 24 layers, 14 q heads / 2 kv heads,
//!   head_dim 64, vocab 151936, rope_theta 1e6, rms_norm_eps 1e-6, tied embeddings, 32768 positions.
//! - WeiboAI/VibeThinker-1.5B: architecture of its base Qwen2.5-Math-1.5B: hidden 1536, intermediate
//!   8960, 28 layers, 12 q heads / 2 kv heads, head_dim 128, vocab 151936, rms_norm_eps 1e-6.
//!   rope_theta, max positions and tie_word_embeddings are the base's (10000, 4096, tied) until read
//!   from VibeThinker's own config.json: each is one field below.

/// The subset of a Hugging Face Qwen2 config.json that the kernels and goldens depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen2Config {
    pub name: &'static str,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// Rows of the embedding / lm_head (padded).
    pub vocab_size: usize,
    /// Token ids the tokenizer can produce (151643 BPE + 22 added); rows past it are padding.
    pub real_vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub tie_word_embeddings: bool,
}

impl Qwen2Config {
    pub fn qwen2_5_0_5b() -> Self {
        Qwen2Config {
            name: "qwen2.5-0.5b",
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            head_dim: 64,
            vocab_size: 151936,
            real_vocab_size: 151665,
            max_position_embeddings: 32768,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
        }
    }

    pub fn vibethinker_1_5b() -> Self {
        Qwen2Config {
            name: "vibethinker-1.5b",
            hidden_size: 1536,
            intermediate_size: 8960,
            num_hidden_layers: 28,
            num_attention_heads: 12,
            num_key_value_heads: 2,
            head_dim: 128,
            vocab_size: 151936,
            real_vocab_size: 151665,
            // Base model (Qwen2.5-Math-1.5B) values; see the module docs.
            max_position_embeddings: 4096,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
        }
    }

    /// Both presets, in the order reports list them.
    pub fn presets() -> Vec<Self> {
        vec![Self::qwen2_5_0_5b(), Self::vibethinker_1_5b()]
    }

    /// The preset called `name` (as printed by reports).
    pub fn preset(name: &str) -> Option<Self> {
        Self::presets().into_iter().find(|c| c.name == name)
    }

    /// Query heads per KV head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Parameters of the model (the embedding once when tied): what a decode step reads once,
    /// whatever the batch, and so the floor of its time at a given bandwidth.
    pub fn parameter_count(&self) -> usize {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let (q, kv) = (self.num_attention_heads * d, self.num_key_value_heads * d);
        let layer = 2 * h + (h * q + q) + 2 * (h * kv + kv) + q * h + 3 * h * i;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + head + h + self.num_hidden_layers * layer
    }
}

impl Qwen2Config {
    /// A config from a Hugging Face `config.json` (Qwen2ForCausalLM), named `name`.
    ///
    /// The values are read as transformers 5's `Qwen2Config` reads them, and every value that
    /// would make transformers' forward compute something ours does not is refused, with an
    /// `InvalidArgument` error naming the field and the value (nothing is left to show up as
    /// numeric FAILs):
    ///
    /// | field | accepted | otherwise |
    /// |---|---|---|
    /// | `model_type` | absent or `qwen2` | another architecture |
    /// | `hidden_act` | `silu` (or `swish`, the same `nn.SiLU` in transformers' ACT2FN) | refused |
    /// | `rope_scaling` / `rope_parameters` | absent, null, or `rope_type` (or legacy `type`) `default` without `partial_rotary_factor` != 1; `rope_scaling`, when a non-empty object, replaces `rope_parameters` as in transformers | linear, dynamic, yarn, longrope, llama3, ..., per-layer-type parameters |
    /// | `use_sliding_window` | false, or true when no layer slides (`max_window_layers` >= `num_hidden_layers`: transformers makes only layers from `max_window_layers` on sliding) | refused: a window longer than the tested positions would pass unnoticed |
    /// | `layer_types` | absent, null, or every entry `full_attention` | `sliding_attention` or other |
    /// | `quantization_config` | absent or null | quantized weights |
    /// | `head_dim` | absent (hidden / heads, which must divide) or any even value: heads x head_dim may differ from hidden, as the projections' shapes follow it | odd (RoPE rotates halves), 0 |
    /// | `num_key_value_heads` | a divisor of the heads; null means the heads (transformers) | not a divisor |
    /// | `rope_theta` | `rope_parameters.rope_theta`, else the top level (transformers 4.x), else transformers' default 10000 | not a positive number |
    ///
    /// Read and required: `hidden_size`, `intermediate_size`, `num_hidden_layers`,
    /// `num_attention_heads`, `num_key_value_heads`, `vocab_size`, `max_position_embeddings` (each
    /// a positive integer), `rms_norm_eps` (a non-negative number); `tie_word_embeddings` defaults
    /// to false, as in transformers. Ignored because they do not change the inference forward:
    /// `attention_dropout` (applied only in training: `dropout=0.0 if not self.training`),
    /// `sliding_window` and `max_window_layers` when nothing slides, `initializer_range`,
    /// `use_cache`, `pad_token_id` (the embedding's padding row only matters to training), `bos/eos_token_id`, `dtype` (each
    /// tensor's dtype is checked when the weights are read), `architectures`,
    /// `transformers_version`.
    ///
    /// The real vocabulary is the Qwen2 tokenizer's 151665 ids when the embedding is larger, else
    /// the whole embedding. The name is leaked once per call, as configs live for the whole
    /// program.
    pub fn from_hf_json(name: &str, json: &str) -> crate::Result<Self> {
        let bad = |detail: String| crate::Error::InvalidArgument { op: "config", detail: format!("config.json of {name}: {detail}") };
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(bad(format!("not a JSON object: {v}")));
        }
        let present = |k: &str| !v[k].is_null();
        let positive = |k: &str| match v[k].as_u64() {
            Some(x) if x > 0 => usize::try_from(x).map_err(|_| bad(format!("{k} = {x} does not fit this machine's usize"))),
            _ if v[k].is_null() => Err(bad(format!("lacks {k}"))),
            _ => Err(bad(format!("{k} = {}, expected a positive integer", v[k]))),
        };
        // A number that `ok` accepts and f32 holds.
        let in_f32_range = |k: &str, x: &serde_json::Value, ok: fn(f64) -> bool| match x.as_f64() {
            Some(f) if ok(f) && (f as f32).is_finite() => Ok(f),
            _ => Err(bad(format!("{k} = {x}, expected a {} number within f32's range", if ok(0.0) { "non-negative" } else { "positive" }))),
        };
        let flag = |k: &str| match &v[k] {
            serde_json::Value::Null => Ok(false),
            serde_json::Value::Bool(b) => Ok(*b),
            other => Err(bad(format!("{k} = {other}, expected true or false"))),
        };

        if present("model_type") && v["model_type"] != "qwen2" {
            return Err(bad(format!("model_type = {}: only qwen2 is implemented", v["model_type"])));
        }
        if present("hidden_act") && !(v["hidden_act"] == "silu" || v["hidden_act"] == "swish") {
            return Err(bad(format!("hidden_act = {}: the MLP implements silu only", v["hidden_act"])));
        }
        if present("quantization_config") {
            return Err(bad(format!("quantization_config = {}: quantized checkpoints are not supported", v["quantization_config"])));
        }

        let layers = positive("num_hidden_layers")?;
        let use_sliding_window = flag("use_sliding_window")?;
        if use_sliding_window {
            // transformers: layer i slides when sliding_window is set and i >= max_window_layers (default 28).
            let max_window_layers = if present("max_window_layers") { v["max_window_layers"].as_u64().ok_or_else(|| bad(format!("max_window_layers = {}, expected an integer", v["max_window_layers"])))? } else { 28 };
            if present("sliding_window") && (max_window_layers as usize) < layers {
                return Err(bad(format!(
                    "use_sliding_window = true with sliding_window = {} and max_window_layers = {max_window_layers} < num_hidden_layers = {layers}: \
                     layers {max_window_layers}.. would use sliding-window attention, which is not implemented",
                    v["sliding_window"]
                )));
            }
        }
        if present("layer_types") {
            let types = v["layer_types"].as_array().ok_or_else(|| bad(format!("layer_types = {}, expected a list", v["layer_types"])))?;
            if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| **t != "full_attention") {
                return Err(bad(format!("layer_types[{i}] = {t}: only full_attention is implemented")));
            }
            if types.len() != layers {
                return Err(bad(format!("layer_types has {} entries for num_hidden_layers = {layers}", types.len())));
            }
        }

        // RoPE: transformers takes rope_scaling (the legacy name) over rope_parameters when it is a
        // non-empty object; the type is rope_type, else type, else default.
        let rope_scaling_used = v["rope_scaling"].as_object().is_some_and(|o| !o.is_empty());
        if present("rope_scaling") && !v["rope_scaling"].is_object() {
            return Err(bad(format!("rope_scaling = {}, expected an object or null", v["rope_scaling"])));
        }
        let (rope_field, rope) = if rope_scaling_used { ("rope_scaling", &v["rope_scaling"]) } else { ("rope_parameters", &v["rope_parameters"]) };
        if !rope.is_null() && !rope.is_object() {
            return Err(bad(format!("{rope_field} = {rope}, expected an object or null")));
        }
        if let Some(key) = ["full_attention", "sliding_attention"].into_iter().find(|k| !rope[*k].is_null()) {
            return Err(bad(format!("{rope_field}.{key} = {}: RoPE parameters per layer type are not supported", rope[key])));
        }
        let rope_type = if !rope["rope_type"].is_null() { &rope["rope_type"] } else { &rope["type"] };
        if !rope_type.is_null() && *rope_type != "default" {
            return Err(bad(format!("{rope_field}.rope_type = {rope_type}: only the default RoPE (no scaling) is implemented")));
        }
        if !rope["partial_rotary_factor"].is_null() && rope["partial_rotary_factor"].as_f64() != Some(1.0) {
            return Err(bad(format!("{rope_field}.partial_rotary_factor = {}: RoPE over part of each head is not implemented", rope["partial_rotary_factor"])));
        }
        if present("partial_rotary_factor") && v["partial_rotary_factor"].as_f64() != Some(1.0) {
            return Err(bad(format!("partial_rotary_factor = {}: RoPE over part of each head is not implemented", v["partial_rotary_factor"])));
        }
        let theta = if !rope["rope_theta"].is_null() {
            in_f32_range(&format!("{rope_field}.rope_theta"), &rope["rope_theta"], |x| x > 0.0)?
        } else if present("rope_theta") {
            in_f32_range("rope_theta", &v["rope_theta"], |x| x > 0.0)?
        } else {
            10_000.0 // transformers' default_theta
        };

        let (hidden, heads) = (positive("hidden_size")?, positive("num_attention_heads")?);
        let head_dim = if present("head_dim") {
            positive("head_dim")?
        } else if hidden % heads == 0 {
            hidden / heads
        } else {
            return Err(bad(format!("hidden_size = {hidden} is not a multiple of num_attention_heads = {heads}, and there is no head_dim")));
        };
        if head_dim % 2 != 0 {
            return Err(bad(format!("head_dim = {head_dim} is odd: RoPE rotates the two halves of each head")));
        }
        let kv_heads = if v["num_key_value_heads"].is_null() && v.get("num_key_value_heads").is_some() { heads } else { positive("num_key_value_heads")? };
        if heads % kv_heads != 0 {
            return Err(bad(format!("num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv_heads}")));
        }
        let vocab = positive("vocab_size")?;
        let intermediate = positive("intermediate_size")?;
        for (what, a, b) in [("heads x head_dim", heads, head_dim), ("vocab_size x hidden_size", vocab, hidden), ("intermediate_size x hidden_size", intermediate, hidden)] {
            if a.checked_mul(b).is_none_or(|n| n > isize::MAX as usize) {
                return Err(bad(format!("{what} = {a} x {b} overflows")));
            }
        }
        if !present("rms_norm_eps") {
            return Err(bad("lacks rms_norm_eps".into()));
        }
        let eps = in_f32_range("rms_norm_eps", &v["rms_norm_eps"], |x| x >= 0.0)?;
        const QWEN2_TOKENIZER_IDS: usize = 151_665;
        Ok(Qwen2Config {
            name: Box::leak(name.to_string().into_boxed_str()),
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: vocab,
            real_vocab_size: vocab.min(QWEN2_TOKENIZER_IDS),
            max_position_embeddings: positive("max_position_embeddings")?,
            rope_theta: theta as f32,
            rms_norm_eps: eps as f32,
            tie_word_embeddings: flag("tie_word_embeddings")?,
        })
    }
}
