//! Qwen2 models: config presets and whole-model weights (synthetic profile or checkpoint).

pub mod config;
pub mod weights;

pub use config::Qwen2Config;
pub use weights::ModelWeights;
