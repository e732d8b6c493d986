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
