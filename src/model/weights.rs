//! The weights of a whole Qwen2 model, by Hugging Face parameter name, held as bf16 (the dtype the
//! checkpoints ship in and the goldens were computed from).
//!
//! Two sources:
//! - [`ModelWeights::from_recipes`]: the synthetic hazard profile of a golden file. Its metadata
//!   holds one recipe per tensor (`weight.<name>`, written by `golden/hazards.py`): row blocks
//!   drawn from [`crate::synth`] (`bf16(bf16(unit * scale) + offset)`), then overrides applied in
//!   order (`t[r, c] = value` for rows `r0..r1` and the listed columns, or all), then a checksum
//!   of the final bits, which is verified here.
//! - [`ModelWeights::from_checkpoint`]: a Hugging Face checkpoint directory, bf16 tensors from the
//!   files transformers' `from_pretrained` loads (what golden/gen.py read): `model.safetensors`
//!   when present, else exactly the shards `model.safetensors.index.json` names. Any other
//!   `*.safetensors` in the directory (a stale download, a conversion left behind) is not read.
//!   A tensor found in two of the files read is an error, as is one the index places in a file
//!   that does not hold it.

use crate::error::{Error, Result};
use crate::golden::GoldenFile;
use crate::model::Qwen2Config;
use crate::synth;
use crate::DType;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

const OP: &str = "model weights";

/// A bf16 matrix [rows, cols] (a vector is one row).
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub bits: Vec<u16>,
}

impl Matrix {
    pub fn row(&self, r: usize) -> &[u16] {
        &self.bits[r * self.cols..(r + 1) * self.cols]
    }
}

#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `nn.Linear` parameters: weight \[out, in\], optional bias \[out\].
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Vec<f32>>,
}

#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub input_layernorm: Vec<f32>,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub post_attention_layernorm: Vec<f32>,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub config: Qwen2Config,
    /// [vocab, hidden]; also the lm_head when the embeddings are tied.
    pub embed_tokens: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// [vocab, hidden] when not tied to the embedding.
    pub lm_head: Option<Matrix>,
}

impl ModelWeights {
    /// The lm_head weight [vocab, hidden].
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Every tensor of the synthetic profile recorded in `file`'s metadata.
    pub fn from_recipes(config: &Qwen2Config, file: &GoldenFile) -> Result<Self> {
        build(config, |name, shape| {
            let key = format!("weight.{name}");
            let text = file.metadata(&key).ok_or_else(|| Error::invalid(OP, format!("golden metadata lacks {key}")))?;
            recipe_tensor(&key, text, shape)
        })
    }

    /// A Hugging Face checkpoint directory (see the module docs for which files are read), whose
    /// tensors must be bf16 (what the CPU reference and the goldens hold).
    pub fn from_checkpoint(config: &Qwen2Config, dir: &Path) -> Result<Self> {
        let ckpt = Checkpoint::open(dir)?;
        build(config, |name, shape| {
            let (dtype, data) = ckpt.tensor(name, shape)?;
            if dtype != DType::BF16 {
                return Err(Error::dtype(OP, format!("{name} in {} is {dtype:?} on disk; the CPU reference reads BF16 checkpoints", dir.display())));
            }
            Ok(data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
        })
    }
}

/// The tensors of a Hugging Face checkpoint directory, by name: the files transformers'
/// from_pretrained loads (`model.safetensors`, else exactly the shards its index names), read once;
/// a tensor in two of them, or placed by the index in a file that does not hold it, is an error.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Tensor name -> index into `files`.
    found: HashMap<String, usize>,
    weight_map: Option<HashMap<String, String>>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        let CheckpointFiles { paths, weight_map } = checkpoint_files(dir)?;
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = std::fs::read(&path).map_err(|e| Error::invalid(OP, format!("cannot read {}: {e}", path.display())))?;
            files.push((path, bytes));
        }
        let mut found: HashMap<String, usize> = HashMap::new();
        for (i, (path, bytes)) in files.iter().enumerate() {
            let st = SafeTensors::deserialize(bytes).map_err(|e| Error::invalid(OP, format!("{}: {e}", path.display())))?;
            for name in st.names() {
                if let Some(&j) = found.get(name) {
                    return Err(Error::invalid(OP, format!("tensor {name} is in both {} and {}", files[j].0.display(), path.display())));
                }
                found.insert(name.to_string(), i);
            }
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), files, found, weight_map })
    }

    /// Tensor `name`, which must have `shape` and be stored as bf16, f16 or f32: its dtype and
    /// its little-endian bytes.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<(DType, &[u8])> {
        let dir = &self.dir;
        let &i = self.found.get(name).ok_or_else(|| {
            let read: Vec<String> = self.files.iter().map(|(p, _)| p.display().to_string()).collect();
            Error::invalid(OP, format!("checkpoint {} has no tensor {name} (read {})", dir.display(), read.join(", ")))
        })?;
        let (path, bytes) = &self.files[i];
        if let Some(map) = &self.weight_map {
            let listed = map.get(name).ok_or_else(|| Error::invalid(OP, format!("{} does not list {name} (found in {})", dir.join(INDEX).display(), path.display())))?;
            if dir.join(listed) != *path {
                return Err(Error::invalid(OP, format!("{} places {name} in {listed}, but it is in {}", dir.join(INDEX).display(), path.display())));
            }
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::invalid(OP, format!("{}: {e}", path.display())))?;
        let view = st.tensor(name).map_err(|e| Error::invalid(OP, format!("{name} in {}: {e}", path.display())))?;
        if view.shape() != shape {
            return Err(Error::shape(OP, format!("{name} in {} is {:?}, the config says {shape:?}", path.display(), view.shape())));
        }
        let dtype = match view.dtype() {
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            Dtype::F32 => DType::F32,
            other => return Err(Error::dtype(OP, format!("{name} in {} is {other:?}; checkpoints are read as BF16, F16 or F32", path.display()))),
        };
        // The view borrows `st`, which borrows `bytes`: hand out the same range of `bytes`.
        let data = view.data();
        let offset = data.as_ptr() as usize - bytes.as_ptr() as usize;
        Ok((dtype, &bytes[offset..offset + data.len()]))
    }
}

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// The safetensors files a checkpoint's weights are read from.
struct CheckpointFiles {
    paths: Vec<PathBuf>,
    /// The index's `weight_map` (tensor name -> file name) for a sharded checkpoint.
    weight_map: Option<HashMap<String, String>>,
}

/// The files of checkpoint `dir` that transformers' from_pretrained loads: `model.safetensors`
/// when it exists, else the shards of `model.safetensors.index.json`. File names must stay inside
/// `dir`.
fn checkpoint_files(dir: &Path) -> Result<CheckpointFiles> {
    let single = dir.join(SINGLE);
    if single.is_file() {
        return Ok(CheckpointFiles { paths: vec![single], weight_map: None });
    }
    let index = dir.join(INDEX);
    if !index.is_file() {
        let others: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::invalid(OP, format!("cannot read checkpoint {}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        let ignored = if others.is_empty() { String::new() } else { format!(" ({} not read: {})", others.len(), others.join(", ")) };
        return Err(Error::invalid(OP, format!("checkpoint {} has neither {SINGLE} nor {INDEX}{ignored}", dir.display())));
    }
    let bad = |detail: String| Error::invalid(OP, format!("{}: {detail}", index.display()));
    let text = std::fs::read_to_string(&index).map_err(|e| bad(format!("cannot read: {e}")))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let entries = json["weight_map"].as_object().ok_or_else(|| bad("no weight_map object".into()))?;
    let mut map = HashMap::with_capacity(entries.len());
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in entries {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map[{tensor}] is {file}, not a file name")))?;
        if file.is_empty() || !Path::new(file).components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad(format!("weight_map[{tensor}] = {file:?} is not a file inside {}", dir.display())));
        }
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
        map.insert(tensor.clone(), file.to_string());
    }
    if files.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    files.sort();
    Ok(CheckpointFiles { paths: files, weight_map: Some(map) })
}

type Getter<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<u16>> + 'a;

fn matrix(get: &mut Getter, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    Ok(Matrix { rows, cols, bits: get(name, &[rows, cols])? })
}

fn vector(get: &mut Getter, name: &str, n: usize) -> Result<Vec<f32>> {
    Ok(get(name, &[n])?.into_iter().map(bf16_to_f32).collect())
}

fn linear(get: &mut Getter, name: &str, rows: usize, cols: usize, bias: bool) -> Result<Linear> {
    let weight = matrix(get, &format!("{name}.weight"), rows, cols)?;
    let bias = if bias { Some(vector(get, &format!("{name}.bias"), rows)?) } else { None };
    Ok(Linear { weight, bias })
}

/// Assemble the model from `get(name, shape) -> bf16 bits`.
fn build(config: &Qwen2Config, mut get: impl FnMut(&str, &[usize]) -> Result<Vec<u16>>) -> Result<ModelWeights> {
    let get: &mut Getter = &mut get;
    let c = config;
    let (h, inter, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (q_out, kv_out) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let embed_tokens = matrix(get, "model.embed_tokens.weight", c.vocab_size, h)?;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        layers.push(LayerWeights {
            input_layernorm: vector(get, &p("input_layernorm.weight"), h)?,
            q_proj: linear(get, &p("self_attn.q_proj"), q_out, h, true)?,
            k_proj: linear(get, &p("self_attn.k_proj"), kv_out, h, true)?,
            v_proj: linear(get, &p("self_attn.v_proj"), kv_out, h, true)?,
            o_proj: linear(get, &p("self_attn.o_proj"), h, q_out, false)?,
            post_attention_layernorm: vector(get, &p("post_attention_layernorm.weight"), h)?,
            gate_proj: linear(get, &p("mlp.gate_proj"), inter, h, false)?,
            up_proj: linear(get, &p("mlp.up_proj"), inter, h, false)?,
            down_proj: linear(get, &p("mlp.down_proj"), h, inter, false)?,
        });
    }
    let norm = vector(get, "model.norm.weight", h)?;
    let lm_head = if c.tie_word_embeddings { None } else { Some(matrix(get, "lm_head.weight", c.vocab_size, h)?) };
    Ok(ModelWeights { config: config.clone(), embed_tokens, layers, norm, lm_head })
}

/// The shape a recipe records.
fn recipe_shape(key: &str, text: &str) -> Result<Vec<usize>> {
    let r: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::invalid(OP, format!("{key}: not JSON: {e}")))?;
    r["shape"]
        .as_array()
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
        .ok_or_else(|| Error::invalid(OP, format!("{key}: no shape")))
}

/// One tensor from its recipe (see the module docs), checksum verified. `shape` is what the config
/// expects; the recipe must agree.
fn recipe_tensor(key: &str, text: &str, shape: &[usize]) -> Result<Vec<u16>> {
    let bad = |detail: String| Error::invalid(OP, format!("{key}: {detail}"));
    let r: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let recorded = recipe_shape(key, text)?;
    if recorded != shape {
        return Err(Error::shape(OP, format!("{key}: recipe shape {recorded:?}, the config says {shape:?}")));
    }
    let seed: u64 = r["seed"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| bad("no seed".into()))?;
    // Rows of `cols` values; the parts fill them in order. An empty or overflowing shape, or parts
    // past its rows, is refused before anything is generated (a corrupted recipe must not allocate
    // what it claims).
    let cols = *shape.last().unwrap_or(&1);
    let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n > 0 && n <= isize::MAX as usize / 2);
    let Some(numel) = numel else {
        return Err(bad(format!("shape {shape:?} is empty or too large")));
    };
    let rows_total = numel / cols;
    let mut bits = Vec::with_capacity(numel);
    for part in r["parts"].as_array().ok_or_else(|| bad("no parts".into()))? {
        let name = part["name"].as_str().ok_or_else(|| bad("part without name".into()))?;
        let rows = part["rows"].as_u64().ok_or_else(|| bad("part without rows".into()))?;
        let filled = bits.len() / cols;
        let rows = match usize::try_from(rows) {
            Ok(r) if r <= rows_total - filled => r,
            _ => return Err(bad(format!("part {name} has {rows} rows, but shape {shape:?} has {} left", rows_total - filled))),
        };
        let num = |f: &str| part[f].as_str().and_then(synth::parse_scale).ok_or_else(|| bad(format!("part {name}: bad {f}")));
        let (scale, offset) = (num("scale")?, num("offset")?);
        let mut block = synth::tensor_bf16_bits(seed, name, rows * cols, scale);
        if offset != 0.0 {
            for b in &mut block {
                *b = synth::bf16_bits_rne(bf16_to_f32(*b) + offset);
            }
        }
        bits.extend(block);
    }
    if bits.len() != numel {
        return Err(bad(format!("parts give {} values for shape {shape:?}", bits.len())));
    }
    for o in r["overrides"].as_array().ok_or_else(|| bad("no overrides".into()))? {
        let range: Vec<usize> = o["rows"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad("override without rows".into()))?;
        let [r0, r1] = range[..] else { return Err(bad(format!("override rows {range:?}"))) };
        if !(r0 < r1 && r1 <= rows_total) {
            return Err(bad(format!("override rows {r0}..{r1} outside 0..{rows_total}")));
        }
        let value = o["value"].as_str().and_then(synth::parse_scale).ok_or_else(|| bad("override without value".into()))?;
        let v = synth::bf16_bits_rne(value);
        if bf16_to_f32(v) != value {
            return Err(bad(format!("override value {value} is not a bf16 number")));
        }
        let columns: Vec<usize> = match &o["cols"] {
            serde_json::Value::String(s) if s == "all" => (0..cols).collect(),
            serde_json::Value::Array(a) => a.iter().map(|c| c.as_u64().map(|c| c as usize)).collect::<Option<_>>().ok_or_else(|| bad("bad cols".into()))?,
            other => return Err(bad(format!("override cols {other}"))),
        };
        if let Some(&c) = columns.iter().find(|&&c| c >= cols) {
            return Err(bad(format!("override column {c} outside 0..{cols}")));
        }
        for row in r0..r1 {
            for &c in &columns {
                bits[row * cols + c] = v;
            }
        }
    }
    let expected: u64 = r["checksum"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| bad("no checksum".into()))?;
    let got = synth::checksum(&bits);
    if got != expected {
        return Err(bad(format!("regenerated checksum {got} != recorded {expected}")));
    }
    Ok(bits)
}

/// One tensor of a golden file's hazard-profile recipes (metadata `weight.<name>`, Hugging Face
/// name), checksum verified, as a bf16 host tensor of the recipe's shape.
pub fn recipe_host(file: &GoldenFile, name: &str) -> Result<crate::HostTensor> {
    let key = format!("weight.{name}");
    let text = file.metadata(&key).ok_or_else(|| Error::invalid(OP, format!("golden metadata lacks {key}")))?;
    let shape = recipe_shape(&key, text)?;
    let bits = recipe_tensor(&key, text, &shape)?;
    crate::HostTensor::from_f32(crate::DType::BF16, &shape, bits.into_iter().map(bf16_to_f32).collect())
}
