//! Golden files: safetensors written by `golden/gen.py`, one per model and group of ops
//! (`golden/data/<model>/<name>.safetensors`), with metadata saying how they were made.
//!
//! The data directory is `$QK_GOLDEN_DIR` when set (bundles set it), else the crate's `golden/data`.
//!
//! A real checkpoint's goldens (`golden/gen.py --checkpoint DIR --name NAME`) are the user's, not
//! the project's: they are written to and read from `<dir>/<NAME>/model.safetensors` with `<dir>`
//! from [`checkpoint_golden_dir`]: `$QK_CHECKPOINT_GOLDEN_DIR`, else
//! `$XDG_CACHE_HOME/qwen-kernels/goldens`, else `~/.cache/qwen-kernels/goldens`. A checkpoint
//! committed under the data directory (the tiny `save_pretrained` fixture) keeps its goldens beside
//! it, in the data directory. golden/locations.py applies the same rule for gen.py.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "qwen-kernels-golden";
pub const VERSION: &str = "1";

/// Where golden files are read from.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("QK_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/golden/data")),
    }
}

/// The directory holding `<NAME>/model.safetensors` for the goldens of `checkpoint`, by the rule in
/// the module docs, from this process' environment.
pub fn checkpoint_golden_dir(checkpoint: &Path) -> Result<PathBuf> {
    resolve_checkpoint_golden_dir(checkpoint, &data_dir(), |k| std::env::var_os(k))
}

/// [`checkpoint_golden_dir`] with the data directory and the environment given: `committed` is
/// the data directory, `env` looks up `QK_CHECKPOINT_GOLDEN_DIR`, `XDG_CACHE_HOME` and `HOME`.
/// An `XDG_CACHE_HOME` that is not absolute is ignored, as the XDG spec says.
pub fn resolve_checkpoint_golden_dir(checkpoint: &Path, committed: &Path, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if let (Ok(ckpt), Ok(data)) = (checkpoint.canonicalize(), committed.canonicalize()) {
        if ckpt.starts_with(&data) {
            return Ok(committed.to_path_buf());
        }
    }
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("QK_CHECKPOINT_GOLDEN_DIR") {
        return Ok(dir);
    }
    let cache = set("XDG_CACHE_HOME").filter(|d| d.is_absolute()).or_else(|| set("HOME").map(|h| h.join(".cache")));
    cache.map(|c| c.join("qwen-kernels").join("goldens")).ok_or_else(|| {
        Error::invalid(
            "checkpoint goldens",
            format!("no directory for the goldens of {}: HOME, XDG_CACHE_HOME and QK_CHECKPOINT_GOLDEN_DIR are all unset", checkpoint.display()),
        )
    })
}

/// `<a>.<b>` and the dtype of a per-dtype name `<a>.<dtype>.<b>` (first segment naming a dtype).
fn shared_name(name: &str) -> Option<(String, DType)> {
    let parts: Vec<&str> = name.split('.').collect();
    let (i, dtype) = parts.iter().enumerate().find_map(|(i, p)| DType::ALL.into_iter().find(|d| d.to_string() == *p).map(|d| (i, d)))?;
    let base: Vec<&str> = parts[..i].iter().chain(&parts[i + 1..]).copied().collect();
    Some((base.join("."), dtype))
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
    /// The command that writes this file, for error messages.
    regenerate: String,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl GoldenFile {
    /// Open `<data_dir>/<model>/<name>.safetensors` (a preset's goldens) and check its format,
    /// version and model.
    pub fn open(model: &str, name: &str) -> Result<Self> {
        let path = data_dir().join(model).join(format!("{name}.safetensors"));
        Self::open_path(path, model, format!("python3 golden/gen.py --model {model}"))
    }

    /// Open the whole-model goldens of checkpoint directory `checkpoint`, filed under `name` in
    /// `goldens` (None: [`checkpoint_golden_dir`]). Errors say the gen.py command that writes them.
    pub fn open_checkpoint(checkpoint: &Path, name: &str, goldens: Option<&Path>) -> Result<Self> {
        let mut regenerate = format!("python3 golden/gen.py --checkpoint {} --name {name}", checkpoint.display());
        let dir = match goldens {
            Some(dir) => {
                regenerate.push_str(&format!(" --out {}", dir.display()));
                dir.to_path_buf()
            }
            None => checkpoint_golden_dir(checkpoint)?,
        };
        Self::open_path(dir.join(name).join("model.safetensors"), name, regenerate)
    }

    /// Open the golden file at `path`, which must hold `model`; `regenerate` is the command that
    /// writes it.
    pub fn open_path(path: PathBuf, model: &str, regenerate: String) -> Result<Self> {
        let fail = |detail: String| Error::Golden { path: path.display().to_string(), detail, regenerate: regenerate.clone() };
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
        Ok(GoldenFile { path, regenerate, bytes, metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// An error about this file: its path, `detail`, and the command that regenerates it.
    pub fn error(&self, detail: String) -> Error {
        Error::Golden { path: self.path.display().to_string(), detail, regenerate: self.regenerate.clone() }
    }

    /// Whether the file holds tensor `name` (stored under that name or shared across dtypes).
    pub fn has(&self, name: &str) -> bool {
        let stored = |n: &str| SafeTensors::deserialize(&self.bytes).is_ok_and(|st| st.tensor(n).is_ok());
        stored(name) || shared_name(name).is_some_and(|(base, _)| self.metadata.contains_key(&format!("shared.{base}")) && stored(&base))
    }

    /// Tensor `name` as f64 values.
    ///
    /// A tensor every dtype shares is stored once: `<a>.<dtype>.<b>` of f32, f16 and bf16 with the
    /// same values is the one tensor `<a>.<b>` (golden/gen.py's `share_across_dtypes`), and its
    /// metadata `shared.<a>.<b>` says which dtype each name is served as: "per-dtype" (the dtype in
    /// the name: inputs, which the generator checked convert exactly) or one storage dtype for all
    /// (truths, "F64"). Readers always use the per-dtype names.
    pub fn tensor(&self, name: &str) -> Result<GoldenTensor> {
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| self.error(format!("corrupt: {e}")))?;
        if st.tensor(name).is_err() {
            if let Some((base, dtype)) = shared_name(name) {
                if let Some(served) = self.metadata(&format!("shared.{base}")) {
                    let mut t = self.stored(&st, &base)?;
                    t.dtype = match served {
                        "per-dtype" => Some(dtype),
                        "F32" => Some(DType::F32),
                        "F16" => Some(DType::F16),
                        "BF16" => Some(DType::BF16),
                        "F64" | "I32" | "I64" => None,
                        other => return Err(self.error(format!("metadata shared.{base} = {other}: unknown"))),
                    };
                    return Ok(t);
                }
            }
        }
        self.stored(&st, name)
    }

    fn stored(&self, st: &SafeTensors, name: &str) -> Result<GoldenTensor> {
        let view = st.tensor(name).map_err(|_| self.error(format!("no tensor {name}")))?;
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
            other => return Err(self.error(format!("tensor {name} has unsupported dtype {other:?}"))),
        };
        Ok(GoldenTensor { shape: view.shape().to_vec(), dtype, values })
    }

    /// A weight the file does not store but describes (metadata `synth.<name>`: seed, generator
    /// name, shape, scale, checksum): regenerated by `crate::synth` as bf16, its checksum verified.
    pub fn synth_weight(&self, name: &str) -> Result<HostTensor> {
        let key = format!("synth.{name}");
        let text = self.metadata(&key).ok_or_else(|| self.error(format!("no metadata {key}")))?;
        let recipe: serde_json::Value =
            serde_json::from_str(text).map_err(|e| self.error(format!("metadata {key} is not JSON: {e}")))?;
        let field = |f: &str| recipe[f].as_str().ok_or_else(|| self.error(format!("metadata {key} lacks {f}")));
        let seed: u64 = field("seed")?.parse().map_err(|_| self.error(format!("{key}: bad seed")))?;
        let scale = crate::synth::parse_scale(field("scale")?).ok_or_else(|| self.error(format!("{key}: bad scale")))?;
        let checksum: u64 = field("checksum")?.parse().map_err(|_| self.error(format!("{key}: bad checksum")))?;
        let shape: Vec<usize> = recipe["shape"]
            .as_array()
            .ok_or_else(|| self.error(format!("metadata {key} lacks shape")))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| self.error(format!("{key}: bad shape")))?;
        // A corrupted shape must not decide how much is generated: refuse one that overflows.
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= isize::MAX as usize / 2)
            .ok_or_else(|| self.error(format!("{key}: shape {shape:?} is too large")))?;
        let bits = crate::synth::tensor_bf16_bits(seed, field("name")?, numel, scale);
        let got = crate::synth::checksum(&bits);
        if got != checksum {
            return Err(self.error(format!("{key}: regenerated checksum {got} != recorded {checksum}")));
        }
        let values = bits.into_iter().map(|b| f32::from_bits((b as u32) << 16)).collect();
        HostTensor::from_f32(DType::BF16, &shape, values)
    }

    /// Tensor `name`, stored in f32/f16/bf16, as a host tensor of that dtype.
    pub fn host(&self, name: &str) -> Result<HostTensor> {
        let t = self.tensor(name)?;
        let dtype = t.dtype.ok_or_else(|| self.error(format!("tensor {name} is not stored as f32/f16/bf16")))?;
        HostTensor::from_f32(dtype, &t.shape, t.values_f32()).map_err(|e| self.error(format!("tensor {name}: {e}")))
    }
}
