//! Comparing results against references and goldens.

pub mod file;
pub mod metrics;
pub mod tolerance;

pub use file::{GoldenFile, GoldenTensor};
