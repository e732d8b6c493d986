//! Comparing results against references and goldens.

pub mod metrics;
pub mod tolerance;
