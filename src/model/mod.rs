//! Qwen2 model descriptions.

pub mod config;

pub use config::Qwen2Config;
