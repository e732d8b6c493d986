//! Golden files: safetensors written by `golden/gen.py`, one per model and group of ops
//! (`golden/data/<model>/<name>.safetensors`), with metadata saying how they were made.
//!
//! The data directory is `$QK_GOLDEN_DIR` when set (bundles set it), else the crate's `golden/data`.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::PathBuf;

pub const FORMAT: &str = "qwen-kernels-golden";
pub const VERSION: &str = "1";

/// Where golden files are read from.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("QK_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/golden/data")),
    }
}

/// A tensor read from a golden file, as f64 values.
#[derive(Clone, Debug)]
pub struct GoldenTensor {
    pub shape: Vec<usize>,
    /// The storage dtype, `None` for float64 truths.
    pub dtype: Option<DType>,
    pub values: Vec<f64>,
}

impl GoldenTensor {
    pub fn values_f32(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
}

pub struct GoldenFile {
    path: PathBuf,
    model: String,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl GoldenFile {
    /// Open `<data_dir>/<model>/<name>.safetensors` and check its format, version and model.
    pub fn open(model: &str, name: &str) -> Result<Self> {
        let path = data_dir().join(model).join(format!("{name}.safetensors"));
        let fail = |detail: String| Error::Golden { path: path.display().to_string(), detail, model: model.to_string() };
        let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| fail(format!("not a safetensors file: {e}")))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let field = |k: &str| metadata.get(k).map(String::as_str).unwrap_or("<missing>");
        if field("format") != FORMAT || field("version") != VERSION {
            return Err(fail(format!(
                "format {} version {}, expected {FORMAT} version {VERSION}",
                field("format"),
                field("version")
            )));
        }
        if field("model") != model {
            return Err(fail(format!("holds model {}, expected {model}", field("model"))));
        }
        Ok(GoldenFile { path, model: model.to_string(), bytes, metadata })
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    fn fail(&self, detail: String) -> Error {
        Error::Golden { path: self.path.display().to_string(), detail, model: self.model.clone() }
    }

    /// Tensor `name` as f64 values.
    pub fn tensor(&self, name: &str) -> Result<GoldenTensor> {
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| self.fail(format!("corrupt: {e}")))?;
        let view = st.tensor(name).map_err(|_| self.fail(format!("no tensor {name}")))?;
        let data = view.data();
        let (dtype, values): (Option<DType>, Vec<f64>) = match view.dtype() {
            Dtype::F64 => (
                None,
                data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            ),
            Dtype::F32 => (Some(DType::F32), DType::F32.decode(data).into_iter().map(f64::from).collect()),
            Dtype::F16 => (Some(DType::F16), DType::F16.decode(data).into_iter().map(f64::from).collect()),
            Dtype::BF16 => (Some(DType::BF16), DType::BF16.decode(data).into_iter().map(f64::from).collect()),
            Dtype::I32 => (
                None,
                data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            ),
            Dtype::I64 => (
                None,
                data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            ),
            other => return Err(self.fail(format!("tensor {name} has unsupported dtype {other:?}"))),
        };
        Ok(GoldenTensor { shape: view.shape().to_vec(), dtype, values })
    }

    /// Tensor `name`, stored in f32/f16/bf16, as a host tensor of that dtype.
    pub fn host(&self, name: &str) -> Result<HostTensor> {
        let t = self.tensor(name)?;
        let dtype = t.dtype.ok_or_else(|| self.fail(format!("tensor {name} is not stored as f32/f16/bf16")))?;
        HostTensor::from_f32(dtype, &t.shape, t.values_f32())
    }
}
