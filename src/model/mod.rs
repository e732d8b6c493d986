//! Qwen2 models: config presets and whole-model weights (synthetic profile or checkpoint).

pub(crate) mod cache;
pub(crate) mod sampling;
pub mod config;
pub mod device;
pub mod weights;

pub use config::Qwen2Config;
pub use device::{DecodePath, DeviceModel, EnginePrefill, EngineStep, Generation, MemoryReport, ModelOptions};
pub use weights::ModelWeights;
