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
}

impl Qwen2Config {
    /// A config from a Hugging Face `config.json` (Qwen2ForCausalLM), named `name`.
    ///
    /// `head_dim` defaults to hidden / heads; `rope_theta` is read from `rope_parameters` (the
    /// transformers 5 layout) or the top level (4.x). The real vocabulary is the Qwen2 tokenizer's
    /// 151665 ids when the embedding is larger, else the whole embedding. The name is leaked once
    /// per call, as configs live for the whole program.
    pub fn from_hf_json(name: &str, json: &str) -> crate::Result<Self> {
        let bad = |detail: String| crate::Error::InvalidArgument { op: "config", detail };
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(format!("config.json of {name} is not JSON: {e}")))?;
        let int = |k: &str| v[k].as_u64().map(|x| x as usize).ok_or_else(|| bad(format!("config.json of {name} lacks integer {k}")));
        let float = |x: &serde_json::Value| x.as_f64();
        let (hidden, heads) = (int("hidden_size")?, int("num_attention_heads")?);
        if heads == 0 || hidden % heads != 0 && v["head_dim"].is_null() {
            return Err(bad(format!("{name}: hidden {hidden} with {heads} heads and no head_dim")));
        }
        let head_dim = v["head_dim"].as_u64().map_or(hidden / heads.max(1), |d| d as usize);
        let theta = float(&v["rope_parameters"]["rope_theta"])
            .or_else(|| float(&v["rope_theta"]))
            .ok_or_else(|| bad(format!("config.json of {name} has no rope_theta")))?;
        let vocab = int("vocab_size")?;
        const QWEN2_TOKENIZER_IDS: usize = 151_665;
        Ok(Qwen2Config {
            name: Box::leak(name.to_string().into_boxed_str()),
            hidden_size: hidden,
            intermediate_size: int("intermediate_size")?,
            num_hidden_layers: int("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: int("num_key_value_heads")?,
            head_dim,
            vocab_size: vocab,
            real_vocab_size: vocab.min(QWEN2_TOKENIZER_IDS),
            max_position_embeddings: int("max_position_embeddings")?,
            rope_theta: theta as f32,
            rms_norm_eps: float(&v["rms_norm_eps"]).ok_or_else(|| bad(format!("config.json of {name} has no rms_norm_eps")))? as f32,
            tie_word_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
        })
    }
}
