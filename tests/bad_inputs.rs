//! The bad-input table: inputs a user or an engine can get wrong, each given to the public API (or
//! the CLI) and each required to come back as the typed error named in its row, with a message that
//! names the op or file and the offending values. A row fails if its call panics (the table runs it
//! under `catch_unwind`), succeeds, returns another variant, or leaves a wanted substring out.
//!
//! Sizes that overflow 32-bit grids and index math are given as layouts to the pure validation and
//! `plan` functions (nothing that large is allocated); files are temporary copies of the committed
//! goldens and the tiny checkpoint, truncated or edited. Device-side inputs (positions, slots and
//! lens that live on the GPU) are in `tests/gpu/bad_inputs.rs`, which runs on the software device
//! without a GPU; [`CPU_ROWS`] and the CLI rows here, plus the GPU table there, are the count the
//! README states.

mod common;
use common::TempDir;
use qwen_kernels::golden::file::data_dir;
use qwen_kernels::golden::metrics::{compare, Tolerance};
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::weights::recipe_host;
use qwen_kernels::model::{ModelWeights, Qwen2Config};
use qwen_kernels::ops::{argmax, attention, gemm, kv_cache, rmsnorm, rope, swiglu};
use qwen_kernels::reference::model::{self as model_ref, KvCache};
use qwen_kernels::{diff, reference, DType, HostTensor, Layout, Result, Shape};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Rows of the library table below (checked, so the README's count stays true).
const CPU_ROWS: usize = 95;
/// Rows of the CLI table below.
const CLI_ROWS: usize = 9;

/// One bad input: what it is, the call it is given to, and what must come back.
struct Row {
    input: String,
    call: &'static str,
    run: Box<dyn Fn() -> Result<()>>,
    variant: &'static str,
    contains: Vec<String>,
}

/// `row!(input, call, expression, Variant, [substrings])`: the expression's `Ok` value is dropped.
macro_rules! row {
    ($input:expr, $call:expr, $run:expr, $variant:ident, [$($s:expr),* $(,)?]) => {{
        let contains = vec![$($s.to_string()),*];
        Row { input: $input.to_string(), call: $call, run: Box::new(move || $run.map(|_| ())), variant: stringify!($variant), contains }
    }};
}

/// Runs every row; returns one line per row that did not come out as its row says.
fn run_table(rows: &[Row]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in rows {
        let outcome = catch_unwind(AssertUnwindSafe(|| (r.run)()));
        let what = format!("{} <- {}", r.call, r.input);
        match outcome {
            Err(_) => problems.push(format!("{what}: PANICKED")),
            Ok(Ok(())) => problems.push(format!("{what}: accepted (expected {})", r.variant)),
            Ok(Err(e)) => {
                let message = e.to_string();
                if e.kind() != r.variant {
                    problems.push(format!("{what}: {} (expected {}): {message}", e.kind(), r.variant));
                }
                for s in &r.contains {
                    if !message.contains(s.as_str()) {
                        problems.push(format!("{what}: message lacks {s:?}: {message}"));
                    }
                }
            }
        }
    }
    problems
}

/// An HND cache of one page per sequence: [pages, kv_heads, page_size, head_dim].
fn hnd(dims: &[usize]) -> kv_cache::KvCacheDims {
    kv_cache::KvCacheDims { num_pages: dims[0], kv_heads: dims[1], page_size: dims[2], head_dim: dims[3], layout: kv_cache::KvLayout::Hnd }
}

fn l(dtype: DType, dims: &[usize]) -> Layout {
    Layout::new(dtype, dims).unwrap()
}

fn host(dtype: DType, dims: &[usize], values: Vec<f32>) -> HostTensor {
    HostTensor::from_f32(dtype, dims, values).unwrap()
}


type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// The tensors and metadata of a safetensors file.
fn read_safetensors(path: &Path) -> (Tensors, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    (tensors, meta.metadata().clone().unwrap_or_default())
}

fn write_safetensors(path: &Path, tensors: &Tensors, metadata: HashMap<String, String>) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::tensor::serialize(views, Some(metadata)).unwrap()).unwrap();
}

fn tiny_checkpoint() -> PathBuf {
    data_dir().join("tiny-qwen2/checkpoint")
}

fn tiny_golden() -> PathBuf {
    data_dir().join("tiny-qwen2/model.safetensors")
}

fn tiny_config() -> Qwen2Config {
    Qwen2Config::from_hf_json("tiny-qwen2", &std::fs::read_to_string(tiny_checkpoint().join("config.json")).unwrap()).unwrap()
}

/// A copy of the tiny golden at `<dir>/<file>` with `edit` applied to its tensors and metadata.
fn edited_golden(dir: &Path, file: &str, edit: impl FnOnce(&mut Tensors, &mut HashMap<String, String>)) -> PathBuf {
    let (mut tensors, mut meta) = read_safetensors(&tiny_golden());
    edit(&mut tensors, &mut meta);
    let path = dir.join(file);
    write_safetensors(&path, &tensors, meta);
    path
}

/// Replace tensor `name` by an i32 tensor of `values`.
fn set_i32(tensors: &mut Tensors, name: &str, values: &[i32]) {
    let t = tensors.iter_mut().find(|t| t.0 == name).unwrap();
    t.1 = safetensors::Dtype::I32;
    t.2 = vec![values.len()];
    t.3 = values.iter().flat_map(|v| v.to_le_bytes()).collect();
}

/// A golden file holding no tensors, only `metadata` (plus the format, version and model).
fn metadata_golden(dir: &Path, file: &str, metadata: &[(&str, &str)]) -> PathBuf {
    let mut meta: HashMap<String, String> =
        [("format", "qwen-kernels-golden"), ("version", "1"), ("model", "m")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    meta.extend(metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let path = dir.join(file);
    write_safetensors(&path, &Vec::new(), meta);
    path
}

/// A copy of the tiny checkpoint (config.json and model.safetensors) in `<dir>/<name>`, with
/// `edit` applied to its tensors.
fn edited_checkpoint(dir: &Path, name: &str, edit: impl FnOnce(&mut Tensors)) -> PathBuf {
    let ckpt = dir.join(name);
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::copy(tiny_checkpoint().join("config.json"), ckpt.join("config.json")).unwrap();
    let (mut tensors, meta) = read_safetensors(&tiny_checkpoint().join("model.safetensors"));
    edit(&mut tensors);
    write_safetensors(&ckpt.join("model.safetensors"), &tensors, meta);
    ckpt
}

/// The published Qwen2.5-0.5B config.json with `edit` applied (a null value removes the field).
fn config_with(edit: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
    });
    for (k, x) in edit.as_object().unwrap() {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v.to_string()
}

fn config_row(input: &str, edit: serde_json::Value, contains: &[&str]) -> Row {
    let json = config_with(edit);
    Row {
        input: format!("config.json with {input}"),
        call: "Qwen2Config::from_hf_json",
        run: Box::new(move || Qwen2Config::from_hf_json("cfg", &json).map(|_| ())),
        variant: "InvalidArgument",
        contains: ["config.json of cfg"].iter().chain(contains).map(|s| s.to_string()).collect(),
    }
}

#[test]
fn every_bad_input_is_a_typed_error_naming_the_op_and_values() {
    use DType::{BF16, F16, F32};
    let tmp = TempDir::new("lib");
    let dir = tmp.path().to_path_buf();
    const BIG: usize = 1 << 31; // one past i32::MAX

    let mut rows = vec![
        // ---- tensors --------------------------------------------------------------------------
        row!("rank 5 [1, 2, 3, 4, 5]", "Shape::new", Shape::new(&[1, 2, 3, 4, 5]), Shape, ["Shape::new", "rank 5", "[1, 2, 3, 4, 5]"]),
        row!("dims whose product overflows usize", "Shape::new", Shape::new(&[1 << 40, 1 << 40]), Shape, ["overflows usize"]),
        row!("f32 [2^62, 1]: 2^64 bytes", "Layout::new", Layout::new(F32, &[1 << 62, 1]), Shape, ["f32", "4611686018427387904", "bytes"]),
        row!("5 values for [2, 3]", "HostTensor::from_f32", HostTensor::from_f32(F32, &[2, 3], vec![0.0; 5]), Shape, ["5 values", "[2, 3]"]),
        // ---- RMSNorm ----------------------------------------------------------------------------
        row!("weight [895] for x [3, 896]", "rmsnorm::check", rmsnorm::check(rmsnorm::OP, l(BF16, &[3, 896]), l(BF16, &[895]), 1e-6), Shape, ["rmsnorm", "[895]", "[896]"]),
        row!("f32 weight for bf16 x", "rmsnorm::check", rmsnorm::check(rmsnorm::OP, l(BF16, &[3, 896]), l(F32, &[896]), 1e-6), DType, ["rmsnorm", "f32", "bf16"]),
        row!("eps NaN", "rmsnorm::check", rmsnorm::check(rmsnorm::OP, l(F32, &[3, 8]), l(F32, &[8]), f32::NAN), InvalidArgument, ["rmsnorm", "eps", "NaN"]),
        row!("eps -1", "reference::rmsnorm::rmsnorm", reference::rmsnorm::rmsnorm(&host(F32, &[1, 2], vec![1.0, 2.0]), &host(F32, &[2], vec![1.0; 2]), -1.0), InvalidArgument, ["rmsnorm", "eps", "-1"]),
        row!("x [4, 0] (empty rows)", "rmsnorm::check", rmsnorm::check(rmsnorm::OP, l(F16, &[4, 0]), l(F16, &[0]), 1e-6), Shape, ["rmsnorm", "hidden size 0", "[4, 0]"]),
        row!("scalar x", "rmsnorm::check", rmsnorm::check(rmsnorm::FUSED_OP, l(F16, &[]), l(F16, &[1]), 1e-6), Shape, ["add_rmsnorm", "rank >= 1"]),
        row!("residual [2, 4] for x [2, 5]", "reference::rmsnorm::add_rmsnorm", reference::rmsnorm::add_rmsnorm(&host(F32, &[2, 5], vec![0.0; 10]), &host(F32, &[2, 4], vec![0.0; 8]), &host(F32, &[5], vec![1.0; 5]), 1e-6), Shape, ["add_rmsnorm", "residual", "[2, 4]", "[2, 5]"]),
        row!("hidden 900 bf16, Vector16 forced", "rmsnorm::plan", rmsnorm::plan(rmsnorm::OP, false, BF16, rmsnorm::Dims { rows: 2, hidden: 900 }, rmsnorm::Path::Vector16, true), Alignment, ["rmsnorm", "hidden 900", "% 8"]),
        row!("view 8 bytes off 16, Vector16 forced", "rmsnorm::plan", rmsnorm::plan(rmsnorm::FUSED_OP, true, F32, rmsnorm::Dims { rows: 2, hidden: 896 }, rmsnorm::Path::Vector16, false), Alignment, ["add_rmsnorm", "aligned: false"]),
        row!("2^31 rows (grid.x is one block per row, i32 in the kernel)", "rmsnorm::plan", rmsnorm::plan(rmsnorm::OP, false, BF16, rmsnorm::check(rmsnorm::OP, l(BF16, &[BIG, 896]), l(BF16, &[896]), 1e-6)?, rmsnorm::Path::Auto, true), UnsupportedSize, ["rmsnorm", "rows 2147483648"]),
        // ---- SwiGLU -----------------------------------------------------------------------------
        row!("up f16, gate bf16", "swiglu::check", swiglu::check(l(BF16, &[3, 4864]), l(F16, &[3, 4864])), DType, ["swiglu", "f16", "bf16"]),
        row!("fused x [3, 4863] (odd)", "swiglu::check_fused", swiglu::check_fused(l(BF16, &[3, 4863])), Shape, ["swiglu_fused", "4863", "2 * width"]),
        row!("gate [3, 0]", "reference::swiglu::swiglu", reference::swiglu::swiglu(&host(F32, &[3, 0], vec![]), &host(F32, &[3, 0], vec![])), Shape, ["swiglu", "empty rows", "[3, 0]"]),
        row!("out [4, 8960] for x [3, 2 * 8960]", "swiglu::check_out", swiglu::check_out(swiglu::FUSED_OP, l(BF16, &[3, 17920]), 8960, l(BF16, &[4, 8960])), Shape, ["swiglu_fused", "[4, 8960]", "[3]"]),
        row!("width 6 f32, Vector16 forced", "swiglu::plan", swiglu::plan(swiglu::OP, F32, 2, 6, [6, 6], true, swiglu::Path::Vector16), Alignment, ["swiglu", "width 6"]),
        row!("width 2^31", "swiglu::plan", swiglu::plan(swiglu::OP, BF16, 1, BIG, [BIG, BIG], true, swiglu::Path::Auto), UnsupportedSize, ["swiglu", "width 2147483648"]),
        // ---- argmax -----------------------------------------------------------------------------
        row!("n_valid 0", "argmax::check", argmax::check(l(F32, &[2, 151936]), 0), InvalidArgument, ["argmax", "n_valid 0", "151936"]),
        row!("n_valid 151937 > stride 151936", "reference::argmax::argmax", reference::argmax::argmax(&host(F32, &[1, 4], vec![0.0; 4]), 5), InvalidArgument, ["argmax", "n_valid 5", "1..=4"]),
        row!("logits [151936] (rank 1)", "argmax::check", argmax::check(l(F32, &[151936]), 151665), Shape, ["argmax", "[rows, stride]", "[151936]"]),
        row!("65536 rows (grid.y)", "argmax::plan", argmax::plan(F32, 65_536, 151936, 151665, true, argmax::Path::Auto), UnsupportedSize, ["argmax", "rows 65536", "65535"]),
        row!("n_valid 2^30 + 1", "argmax::plan", argmax::plan(F32, 1, (1 << 30) + 8, (1 << 30) + 1, true, argmax::Path::Auto), UnsupportedSize, ["argmax", "n_valid 1073741825"]),
        row!("f32 rows of stride 151665 (not 16-byte rows), Vector16 forced", "argmax::plan", argmax::plan(F32, 2, 151665, 151665, true, argmax::Path::Vector16), Alignment, ["argmax", "stride 151665"]),
        // ---- linear -----------------------------------------------------------------------------
        row!("weight [896, 4864] for x [3, 896] (transposed)", "gemm::check_linear", gemm::check_linear(l(BF16, &[3, 896]), l(BF16, &[896, 4864]), None), Shape, ["linear", "[896, 4864]", "transposed"]),
        row!("bias [895] for out 896", "reference::linear::linear", reference::linear::linear(&host(F32, &[1, 2], vec![1.0; 2]), &host(F32, &[896, 2], vec![1.0; 1792]), Some(&host(F32, &[895], vec![0.0; 895]))), Shape, ["linear", "bias", "[895]", "[896]"]),
        row!("f16 bias for bf16 x", "gemm::check_linear", gemm::check_linear(l(BF16, &[3, 896]), l(BF16, &[128, 896]), Some(l(F16, &[128]))), DType, ["linear", "bias is f16", "bf16"]),
        row!("x [3, 0] (no in_features)", "gemm::check_linear", gemm::check_linear(l(BF16, &[3, 0]), l(BF16, &[128, 0]), None), Shape, ["linear", "empty layer", "[3, 0]"]),
        row!("f16 y for bf16 x", "gemm::check_output", gemm::check_output(l(BF16, &[7, 896]), gemm::check_linear(l(BF16, &[7, 896]), l(BF16, &[128, 896]), None)?, l(F16, &[7, 128])), DType, ["linear", "f16", "bf16"]),
        row!("2^31 rows (cuBLAS takes i32)", "gemm::check_output", gemm::check_output(l(BF16, &[BIG, 896]), gemm::check_linear(l(BF16, &[BIG, 896]), l(BF16, &[128, 896]), None)?, l(BF16, &[BIG, 128])), UnsupportedSize, ["linear", "2147483648", "i32"]),
        row!("TF32 for bf16 inputs", "gemm::compute_type", gemm::compute_type(BF16, gemm::Precision::Tf32), DType, ["linear", "TF32", "bf16"]),
        // ---- RoPE -------------------------------------------------------------------------------
        row!("position -1", "reference::rope::rope", reference::rope::rope(&host(F32, &[2, 1, 4], vec![1.0; 8]), &[0, -1], 1e4, 128), InvalidArgument, ["rope", "position -1", "token 1", "0..128"]),
        row!("position 32768 = max_positions", "rope::check", rope::check(l(BF16, &[1, 14, 64]), &[32768], 32768, 1e6), InvalidArgument, ["rope", "position 32768", "0..32768"]),
        row!("theta NaN", "rope::check", rope::check(l(BF16, &[1, 14, 64]), &[0], 32768, f32::NAN), InvalidArgument, ["rope", "theta", "NaN"]),
        row!("head_dim 63 (odd)", "rope::check", rope::check(l(BF16, &[1, 14, 63]), &[0], 32768, 1e6), Shape, ["rope", "even", "[1, 14, 63]"]),
        row!("3 positions for 2 tokens", "rope::check", rope::check(l(BF16, &[2, 14, 64]), &[0, 1, 2], 32768, 1e6), Shape, ["rope", "3 positions", "2 tokens"]),
        row!("max_positions 2^24 + 1", "rope::check_table", rope::check_table(1e6, 64, (1 << 24) + 1), UnsupportedSize, ["rope", "max_positions 16777217"]),
        row!("head_dim 4096", "rope::check_table", rope::check_table(1e6, 4096, 4096), UnsupportedSize, ["rope", "head_dim 4096", "2..=2048"]),
        row!("14 q heads over 3 kv heads", "rope::check_qk", rope::check_qk(rope::OP, l(BF16, &[5, 14, 64]), l(BF16, &[5, 3, 64]), 64, 5), Shape, ["rope", "heads 14", "kv_heads 3"]),
        row!("2^31 tokens", "rope::check_qk", rope::check_qk(rope::KV_OP, l(BF16, &[BIG, 1, 64]), l(BF16, &[BIG, 1, 64]), 64, BIG), UnsupportedSize, ["rope_kv", "tokens 2147483648"]),
        row!("f32 cache for bf16 q", "rope::check_kv", rope::check_kv(l(BF16, &[3, 14, 128]), l(BF16, &[3, 2, 128]), l(BF16, &[3, 2, 128]), 3, l(F32, &[4, 2, 4096, 128]), l(F32, &[4, 2, 4096, 128]), kv_cache::KvLayout::Hnd), DType, ["rope_kv", "f32", "bf16"]),
        row!("cache with 2^31 slots", "rope::check_kv", rope::check_kv(l(BF16, &[3, 14, 64]), l(BF16, &[3, 2, 64]), l(BF16, &[3, 2, 64]), 3, l(BF16, &[BIG, 2, 1, 64]), l(BF16, &[BIG, 2, 1, 64]), kv_cache::KvLayout::Hnd), UnsupportedSize, ["rope_kv", "2147483648", "i32"]),
        row!("empty cache [0, 2, 4096, 64]", "kv_cache::check", kv_cache::check(attention::DECODE_OP, l(BF16, &[0, 2, 4096, 64]), l(BF16, &[0, 2, 4096, 64]), kv_cache::KvLayout::Hnd), Shape, ["attention_decode", "empty cache", "[0, 2, 4096, 64]"]),
        row!("NHD cache read as HND with 16 kv heads", "rope::check_kv", rope::check_kv(l(BF16, &[3, 14, 64]), l(BF16, &[3, 2, 64]), l(BF16, &[3, 2, 64]), 3, l(BF16, &[8, 16, 2, 64]), l(BF16, &[8, 16, 2, 64]), kv_cache::KvLayout::Hnd), Shape, ["rope_kv", "HND", "kv_heads 2"]),
        row!("a block table past the cache", "kv_cache::check_block_tables", kv_cache::check_block_tables("attention", &hnd(&[4, 2, 16, 64]), &[0, 4], 2, &[20]), InvalidArgument, ["attention", "page 1 is 4", "4 pages"]),
        row!("decreasing CSR indptr", "kv_cache::block_tables_from_csr", kv_cache::block_tables_from_csr(&[0, 2, 1], &[0, 1], &[5, 5], 16, 4), InvalidArgument, ["kv_cache", "indptr[1..=2] = 2..1"]),
        // ---- attention --------------------------------------------------------------------------
        row!("5 new tokens over a context of 4", "reference::attention::attention", reference::attention::attention(&host(F32, &[5, 1, 2], vec![0.0; 10]), &host(F32, &[4, 1, 2], vec![0.0; 8]), &host(F32, &[4, 1, 2], vec![0.0; 8])), Shape, ["attention", "5 new tokens", "context of only 4"]),
        row!("14 q heads over 3 kv heads", "attention::check", attention::check(l(BF16, &[2, 14, 64]), l(BF16, &[2, 3, 64]), l(BF16, &[2, 3, 64])), Shape, ["attention", "14 query heads", "3 kv heads"]),
        row!("head_dim 96", "attention::plan_prefill", attention::plan_prefill(l(BF16, &[2, 14, 96]), l(BF16, &[2, 2, 96]), l(BF16, &[2, 2, 96]), l(BF16, &[2, 14, 96]), [0; 4], attention::PrefillPath::Auto), UnsupportedSize, ["attention", "head_dim 96", "[64, 128]"]),
        row!("q view 8 bytes into its allocation", "attention::plan_prefill", attention::plan_prefill(l(BF16, &[2, 14, 64]), l(BF16, &[2, 2, 64]), l(BF16, &[2, 2, 64]), l(BF16, &[2, 14, 64]), [8, 0, 0, 0], attention::PrefillPath::Auto), Alignment, ["attention", "q starts 8 bytes"]),
        row!("f32 storage on tensor cores", "attention::plan_prefill", attention::plan_prefill(l(F32, &[2, 14, 64]), l(F32, &[2, 2, 64]), l(F32, &[2, 2, 64]), l(F32, &[2, 14, 64]), [0; 4], attention::PrefillPath::TensorCore), DType, ["attention", "tensor-core", "f32"]),
        row!("context 2^31", "attention::plan_prefill", attention::plan_prefill(l(BF16, &[1, 14, 64]), l(BF16, &[BIG, 2, 64]), l(BF16, &[BIG, 2, 64]), l(BF16, &[1, 14, 64]), [0; 4], attention::PrefillPath::Auto), UnsupportedSize, ["attention", "context 2147483648"]),
        row!("65536 heads on tensor cores (grid.y)", "attention::plan_prefill", attention::plan_prefill(l(BF16, &[1, 65536, 64]), l(BF16, &[1, 1, 64]), l(BF16, &[1, 1, 64]), l(BF16, &[1, 65536, 64]), [0; 4], attention::PrefillPath::TensorCore), UnsupportedSize, ["attention", "heads 65536", "65535"]),
        row!("decode workspace one f32 short", "attention::check_decode", attention::check_decode(l(BF16, &[3, 14, 64]), &hnd(&[4, 2, 512, 64]), BF16, l(BF16, &[3, 14, 64]), 3, 1, 3, l(F32, &[attention::decode_workspace_len(3, 14, 64, 512, 256) - 1]), 256, [0; 4]), Shape, ["attention_decode", "workspace of 5586", "5587 needed"]),
        row!("f16 decode workspace", "attention::check_decode", attention::check_decode(l(BF16, &[3, 14, 64]), &hnd(&[4, 2, 512, 64]), BF16, l(BF16, &[3, 14, 64]), 3, 1, 3, l(F16, &[1 << 20]), 256, [0; 4]), DType, ["attention_decode", "workspace must be f32", "f16"]),
        row!("decode chunk 100", "attention::check_decode", attention::check_decode(l(BF16, &[3, 14, 64]), &hnd(&[4, 2, 512, 64]), BF16, l(BF16, &[3, 14, 64]), 3, 1, 3, l(F32, &[1 << 20]), 100, [0; 4]), InvalidArgument, ["attention_decode", "chunk 100", "64"]),
        row!("2 table rows, 3 lens for a batch of 3", "attention::check_decode", attention::check_decode(l(BF16, &[3, 14, 64]), &hnd(&[4, 2, 512, 64]), BF16, l(BF16, &[3, 14, 64]), 2, 1, 3, l(F32, &[1 << 20]), 256, [0; 4]), Shape, ["attention_decode", "2 block-table entries", "3 seq_lens for a batch of 3"]),
        row!("cache capacity 2^22 in chunks of 64 (grid.z)", "attention::check_decode", attention::check_decode(l(BF16, &[1, 14, 64]), &hnd(&[1, 2, 1 << 22, 64]), BF16, l(BF16, &[1, 14, 64]), 1, 1, 1, l(F32, &[1 << 30]), 64, [0; 4]), UnsupportedSize, ["attention_decode", "splits 65536", "65535"]),
        // ---- configs (item 9's refusals) ----------------------------------------------------------
        config_row("a sliding window that slides", serde_json::json!({"use_sliding_window": true, "max_window_layers": 0}), &["use_sliding_window", "max_window_layers = 0"]),
        config_row("yarn RoPE scaling", serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}), &["rope_scaling.rope_type", "yarn"]),
        config_row("hidden_act gelu", serde_json::json!({"hidden_act": "gelu"}), &["hidden_act", "gelu"]),
        config_row("head_dim 63", serde_json::json!({"head_dim": 63}), &["head_dim = 63", "odd"]),
        config_row("14 heads over 4 kv heads", serde_json::json!({"num_key_value_heads": 4}), &["num_attention_heads = 14", "num_key_value_heads = 4"]),
        config_row("hidden_size 0", serde_json::json!({"hidden_size": 0}), &["hidden_size = 0"]),
        config_row("vocab x hidden overflowing", serde_json::json!({"vocab_size": 1u64 << 40, "hidden_size": 14u64 << 36}), &["vocab_size x hidden_size", "1099511627776 x 962072674304", "overflows"]),
        row!("not JSON", "Qwen2Config::from_hf_json", Qwen2Config::from_hf_json("cfg", "{\"hidden_size\": 896,"), InvalidArgument, ["config.json of cfg", "not JSON"]),
    ];

    // ---- golden files ---------------------------------------------------------------------------
    let bytes = std::fs::read(tiny_golden()).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let t = truncated.clone();
    rows.push(row!("a golden cut to a third", "GoldenFile::open_path", GoldenFile::open_path(t.clone(), "tiny-qwen2", "regen".into()), Golden, [t.display(), "regenerate: regen"]));
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, [0xffu8; 64]).unwrap();
    let g = garbage.clone();
    rows.push(row!("64 bytes of 0xff", "GoldenFile::open_path", GoldenFile::open_path(g.clone(), "tiny-qwen2", "regen".into()), Golden, [g.display(), "not a safetensors file"]));
    let other_model = tiny_golden();
    rows.push(row!("tiny-qwen2's golden opened as vibethinker-1.5b", "GoldenFile::open_path", GoldenFile::open_path(other_model.clone(), "vibethinker-1.5b", "regen".into()), Golden, ["holds model tiny-qwen2", "expected vibethinker-1.5b"]));
    let old = edited_golden(&dir, "version0.safetensors", |_, m| {
        m.insert("version".into(), "0".into());
    });
    rows.push(row!("format version 0", "GoldenFile::open_path", GoldenFile::open_path(old.clone(), "tiny-qwen2", "regen".into()), Golden, ["version 0", "expected qwen-kernels-golden version 1"]));
    let zero_cols = metadata_golden(&dir, "zero-cols.safetensors", &[(
        "weight.w",
        r#"{"shape": [4, 0], "seed": "1", "parts": [], "overrides": [], "checksum": "0"}"#,
    )]);
    rows.push(row!("a weight recipe of shape [4, 0]", "model::weights::recipe_host", recipe_host(&GoldenFile::open_path(zero_cols.clone(), "m", "regen".into())?, "w"), InvalidArgument, ["weight.w", "[4, 0]"]));
    let huge_part = metadata_golden(&dir, "huge-part.safetensors", &[(
        "weight.w",
        r#"{"shape": [4, 8], "seed": "1", "parts": [{"name": "a", "rows": 1000000000000, "scale": "1", "offset": "0"}], "overrides": [], "checksum": "0"}"#,
    )]);
    rows.push(row!("a recipe part of 10^12 rows for a [4, 8] weight", "model::weights::recipe_host", recipe_host(&GoldenFile::open_path(huge_part.clone(), "m", "regen".into())?, "w"), InvalidArgument, ["weight.w", "1000000000000", "[4, 8]"]));
    let huge_synth = metadata_golden(&dir, "huge-synth.safetensors", &[(
        "synth.w",
        r#"{"seed": "1", "name": "w", "shape": [1099511627776, 1099511627776], "scale": "1", "checksum": "0"}"#,
    )]);
    rows.push(row!("a synthetic weight of shape [2^40, 2^40]", "GoldenFile::synth_weight", GoldenFile::open_path(huge_synth.clone(), "m", "regen".into())?.synth_weight("w"), Golden, ["synth.w", "1099511627776", "regenerate: regen"]));
    let rank5 = edited_golden(&dir, "rank5.safetensors", |t, _| {
        let x = t.iter_mut().find(|t| t.0 == "logits.truth").unwrap();
        x.2 = vec![2, 2, 2, 2, 16];
    });
    rows.push(row!("tensor logits.truth of rank 5", "GoldenFile::host", GoldenFile::open_path(rank5.clone(), "tiny-qwen2", "regen".into())?.host("logits.truth"), Golden, ["logits.truth", "rank 5", "regenerate: regen"]));

    // The whole-model check on the tiny checkpoint, with its golden corrupted.
    let weights = ModelWeights::from_checkpoint(&tiny_config(), &tiny_checkpoint()).unwrap();
    let w = weights.clone();
    let bad_prompt = edited_golden(&dir, "prompt-999.safetensors", |t, _| set_i32(t, "prompt", &[1, 2, 999, 4, 5, 6, 7, 8]));
    rows.push(row!("prompt token 999 (vocab 256)", "diff::analyse_with", diff::analyse_with(&GoldenFile::open_path(bad_prompt.clone(), "tiny-qwen2", "regen".into())?, &w), InvalidArgument, ["token id 999", "vocab size 256"]));
    let w = weights.clone();
    let negative_prompt = edited_golden(&dir, "prompt-neg.safetensors", |t, _| set_i32(t, "prompt", &[1, 2, -3, 4, 5, 6, 7, 8]));
    rows.push(row!("prompt token -3", "diff::analyse_with", diff::analyse_with(&GoldenFile::open_path(negative_prompt.clone(), "tiny-qwen2", "regen".into())?, &w), Golden, ["prompt", "-3", "regenerate: regen"]));
    let w = weights.clone();
    let empty_prompt = edited_golden(&dir, "prompt-empty.safetensors", |t, _| set_i32(t, "prompt", &[]));
    rows.push(row!("empty prompt", "diff::analyse_with", diff::analyse_with(&GoldenFile::open_path(empty_prompt.clone(), "tiny-qwen2", "regen".into())?, &w), Golden, ["hidden.truth is [3, 8, 64]", "expected [3, 0, 64]"]));
    let w = weights.clone();
    let short_logits = edited_golden(&dir, "logits-short.safetensors", |t, _| {
        let x = t.iter_mut().find(|t| t.0 == "logits.truth").unwrap();
        x.2 = vec![255];
        x.3.truncate(255 * 4);
    });
    rows.push(row!("logits.truth of 255 entries (vocab 256)", "diff::analyse_with", diff::analyse_with(&GoldenFile::open_path(short_logits.clone(), "tiny-qwen2", "regen".into())?, &w), Golden, ["logits.truth", "255", "256"]));
    let w = weights.clone();
    let short_torch = edited_golden(&dir, "hidden-torch-short.safetensors", |t, _| {
        let x = t.iter_mut().find(|t| t.0 == "hidden.torch").unwrap();
        x.2 = vec![2, 8, 64];
        x.3.truncate(2 * 8 * 64 * 2);
    });
    rows.push(row!("hidden.torch of 2 layers for 3", "diff::analyse_with", diff::analyse_with(&GoldenFile::open_path(short_torch.clone(), "tiny-qwen2", "regen".into())?, &w), Golden, ["hidden.torch holds 1024 values", "[3, 8, 64]"]));
    let w = weights.clone();
    let fractional = edited_golden(&dir, "greedy-fraction.safetensors", |t, _| {
        let x = t.iter_mut().find(|t| t.0 == "greedy.tokens.truth").unwrap();
        x.1 = safetensors::Dtype::F32;
        x.3 = (0..32).flat_map(|i| (i as f32 + 0.5).to_le_bytes()).collect();
    });
    rows.push(row!("greedy.tokens.truth of 0.5, 1.5, ...", "diff::analyse_with", diff::analyse_with(&GoldenFile::open_path(fractional.clone(), "tiny-qwen2", "regen".into())?, &w), Golden, ["greedy.tokens.truth[0] = 0.5", "not a token id"]));
    let w = weights.clone();
    let no_greedy = edited_golden(&dir, "no-greedy.safetensors", |t, _| t.retain(|t| t.0 != "greedy.tokens.truth"));
    rows.push(row!("no greedy.tokens.truth", "diff::analyse_with", diff::analyse_with(&GoldenFile::open_path(no_greedy.clone(), "tiny-qwen2", "regen".into())?, &w), Golden, ["no tensor greedy.tokens.truth", "regenerate: regen"]));
    // A greedy run cut to no tokens, or to more than the golden holds (its 32).
    let w = weights.clone();
    rows.push(row!("greedy run cut to 0 steps", "diff::analyse_with_steps_on", diff::analyse_with_steps_on(&GoldenFile::open_path(tiny_golden(), "tiny-qwen2", "regen".into())?, &w, diff::Forward::Cpu, Some(0)), InvalidArgument, ["diff", "0 greedy steps", "golden with 32"]));
    let w = weights.clone();
    rows.push(row!("greedy run cut to 33 of 32 steps", "diff::analyse_with_steps_on", diff::analyse_with_steps_on(&GoldenFile::open_path(tiny_golden(), "tiny-qwen2", "regen".into())?, &w, diff::Forward::Cpu, Some(33)), InvalidArgument, ["diff", "33 greedy steps", "golden with 32"]));

    // ---- checkpoints ----------------------------------------------------------------------------
    let cfg = tiny_config();
    let truncated_ckpt = edited_checkpoint(&dir, "ckpt-truncated", |_| {});
    let file = truncated_ckpt.join("model.safetensors");
    let b = std::fs::read(&file).unwrap();
    std::fs::write(&file, &b[..b.len() - 100]).unwrap();
    let (c, p) = (cfg.clone(), truncated_ckpt.clone());
    rows.push(row!("model.safetensors 100 bytes short", "ModelWeights::from_checkpoint", ModelWeights::from_checkpoint(&c, &p), InvalidArgument, ["model weights", file.display()]));
    let f32_norm = edited_checkpoint(&dir, "ckpt-f32", |t| {
        let x = t.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
        x.1 = safetensors::Dtype::F32;
        x.3 = vec![0; x.3.len() * 2];
    });
    let (c, p) = (cfg.clone(), f32_norm.clone());
    rows.push(row!("model.norm.weight stored as F32", "ModelWeights::from_checkpoint", ModelWeights::from_checkpoint(&c, &p), DType, ["model weights", "model.norm.weight", "F32", "BF16"]));
    let missing = edited_checkpoint(&dir, "ckpt-missing", |t| t.retain(|t| t.0 != "model.layers.1.self_attn.k_proj.bias"));
    let (c, p) = (cfg.clone(), missing.clone());
    rows.push(row!("no model.layers.1.self_attn.k_proj.bias", "ModelWeights::from_checkpoint", ModelWeights::from_checkpoint(&c, &p), InvalidArgument, ["has no tensor model.layers.1.self_attn.k_proj.bias"]));
    let reshaped = edited_checkpoint(&dir, "ckpt-shape", |t| {
        let x = t.iter_mut().find(|t| t.0 == "model.layers.0.mlp.up_proj.weight").unwrap();
        x.2 = vec![x.2[1], x.2[0]];
    });
    let (c, p) = (cfg.clone(), reshaped.clone());
    rows.push(row!("up_proj.weight stored transposed [64, 128]", "ModelWeights::from_checkpoint", ModelWeights::from_checkpoint(&c, &p), Shape, ["model.layers.0.mlp.up_proj.weight", "[64, 128]", "[128, 64]"]));
    let escaping = dir.join("ckpt-index");
    std::fs::create_dir_all(&escaping).unwrap();
    std::fs::write(escaping.join("model.safetensors.index.json"), r#"{"weight_map": {"model.norm.weight": "../outside.safetensors"}}"#).unwrap();
    let (c, p) = (cfg.clone(), escaping.clone());
    rows.push(row!("an index naming ../outside.safetensors", "ModelWeights::from_checkpoint", ModelWeights::from_checkpoint(&c, &p), InvalidArgument, ["model.safetensors.index.json", "../outside.safetensors", "not a file inside"]));
    let no_config = dir.join("ckpt-empty");
    std::fs::create_dir_all(&no_config).unwrap();
    let p = no_config.clone();
    rows.push(row!("a checkpoint without config.json", "diff::analyse_checkpoint", diff::analyse_checkpoint(&p, "x", None), InvalidArgument, ["checkpoint", "config.json"]));

    // ---- the CPU model ----------------------------------------------------------------------------
    let w = weights.clone();
    rows.push(row!("token 256 (vocab 256)", "reference::model::greedy", model_ref::greedy(&w, &[1, 256], 2), InvalidArgument, ["embedding", "token id 256", "vocab size 256"]));
    let w = weights.clone();
    rows.push(row!("cache capacity 129 (max positions 128)", "reference::model::KvCache::new", KvCache::new(&w, 129, false), InvalidArgument, ["model", "capacity 129", "1..=128"]));
    let w = weights.clone();
    rows.push(row!("9 tokens into a cache of 8", "reference::model::forward", KvCache::new(&w, 8, false).and_then(|mut c| model_ref::forward(&w, &[1; 9], &mut c)), InvalidArgument, ["model", "9 new tokens", "cache of 8"]));
    let w = weights.clone();
    rows.push(row!("the head of no rows", "reference::model::head", model_ref::head(&w, &model_ref::Act::new(0, 64, Vec::new(), false, false)), Shape, ["model", "head input [0, 64]", "at least one row"]));

    assert_eq!(rows.len(), CPU_ROWS, "CPU_ROWS (and the README's count) must match the table");
    let problems = run_table(&rows);
    assert!(problems.is_empty(), "{} of {} bad inputs misbehaved:\n{}", problems.len(), rows.len(), problems.join("\n"));
}

/// NaN and inf inputs are not errors of the call (the data may legitimately be anything) but must
/// never give a silent answer: each is reported where the result says so.
#[test]
fn nan_and_inf_inputs_are_reported_not_hidden() {
    use DType::F32;
    // argmax: a NaN among the valid entries is a None row, even behind a larger value; a NaN in
    // the padding past n_valid does not count.
    let logits = host(F32, &[3, 4], vec![1.0, f32::NAN, 9.0, 0.0, 1.0, 2.0, 3.0, f32::NAN, f32::INFINITY, 1.0, f32::NEG_INFINITY, 0.0]);
    assert_eq!(reference::argmax::argmax(&logits, 3).unwrap(), vec![None, Some((2, 3.0)), Some((0, f32::INFINITY))]);
    // A comparison never passes a NaN or an infinity where the truth is finite.
    let tol = Tolerance { atol: 1.0, rtol: 1.0 };
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let c = compare(&[1.0, bad], &[1.0, 2.0], tol);
        assert!(!c.passed() && c.nonfinite_mismatches == 1, "{bad}: {c}");
    }
    // RMSNorm of a row holding inf: the sum of squares overflows, so the row is zeros except the
    // inf, which becomes inf * 0 = NaN (the contract in spec::rmsnorm): the row is marked.
    let y = reference::rmsnorm::rmsnorm(&host(F32, &[1, 2], vec![f32::INFINITY, 1.0]), &host(F32, &[2], vec![1.0; 2]), 1e-6).unwrap();
    assert!(y.data()[0].is_nan() && y.data()[1] == 0.0, "{:?}", y.data());
}

/// The CLI's bad inputs: usage errors exit 2 and say what was expected; bad files and configs exit
/// 1 with the library's error; nothing panics.
#[test]
fn cli_bad_inputs_exit_with_the_error() {
    let tmp = TempDir::new("cli");
    let bin = {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_qwen-kernels"));
        if built.exists() { built } else { std::env::current_exe().unwrap().with_file_name("qwen-kernels") }
    };
    // A checkpoint whose config asks for yarn scaling, and a good one whose golden is truncated.
    let yarn = tmp.path().join("yarn");
    std::fs::create_dir_all(&yarn).unwrap();
    let config = std::fs::read_to_string(tiny_checkpoint().join("config.json")).unwrap();
    std::fs::write(yarn.join("config.json"), config.replace("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\", \"factor\": 2.0")).unwrap();
    let ckpt = edited_checkpoint(tmp.path(), "ckpt", |_| {});
    let goldens = tmp.path().join("goldens");
    std::fs::create_dir_all(goldens.join("tiny-qwen2")).unwrap();
    let golden_bytes = std::fs::read(tiny_golden()).unwrap();
    std::fs::write(goldens.join("tiny-qwen2/model.safetensors"), &golden_bytes[..golden_bytes.len() / 2]).unwrap();
    let (yarn_s, ckpt_s, goldens_s) = (yarn.display().to_string(), ckpt.display().to_string(), goldens.display().to_string());
    let missing = tmp.path().join("missing").display().to_string();
    let gen_s = data_dir().join("tiny-qwen2-gen/checkpoint").display().to_string();

    let rows: Vec<(&str, Vec<&str>, i32, Vec<String>)> = vec![
        ("an unknown model", vec!["check", "--model", "qwen3"], 2, vec!["qwen3".into(), "possible values".into()]),
        ("a device that is not a number", vec!["info", "--device", "first"], 2, vec!["first".into(), "--device".into()]),
        ("--name without --checkpoint", vec!["diff", "--name", "x"], 2, vec!["--checkpoint".into()]),
        ("--model with --checkpoint", vec!["check", "--model", "qwen2.5-0.5b", "--checkpoint", "x"], 2, vec!["--model".into(), "--checkpoint".into()]),
        ("a checkpoint directory that does not exist", vec!["check", "--checkpoint", &missing], 1, vec!["qwen-kernels check".into(), format!("{missing}/config.json")]),
        ("a config with yarn RoPE scaling", vec!["diff", "--checkpoint", &yarn_s], 1, vec!["qwen-kernels diff".into(), "rope_type".into(), "yarn".into()]),
        ("a truncated checkpoint golden", vec!["check", "--checkpoint", &ckpt_s, "--name", "tiny-qwen2", "--goldens", &goldens_s], 1, vec!["model.safetensors".into(), "regenerate: python3 golden/gen.py --checkpoint".into()]),
        ("generate from a checkpoint without tokenizer.json", vec!["generate", "--checkpoint", &ckpt_s, "--prompt", "hi"], 1, vec!["qwen-kernels generate".into(), format!("{ckpt_s}/tokenizer.json")]),
        ("generate from an empty prompt", vec!["generate", "--checkpoint", &gen_s, "--prompt", ""], 1, vec!["qwen-kernels generate".into(), "a prompt of 0 tokens".into()]),
    ];
    assert_eq!(rows.len(), CLI_ROWS);
    let mut problems = Vec::new();
    for (input, args, code, contains) in &rows {
        let out = Command::new(&bin).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(*code) {
            problems.push(format!("{input} ({args:?}): exit {:?}, expected {code}: {stderr}", out.status.code()));
        }
        if stderr.contains("panicked") {
            problems.push(format!("{input} ({args:?}): PANICKED: {stderr}"));
        }
        for s in contains {
            if !stderr.contains(s.as_str()) {
                problems.push(format!("{input} ({args:?}): stderr lacks {s:?}: {stderr}"));
            }
        }
    }
    assert!(problems.is_empty(), "{} of {} CLI bad inputs misbehaved:\n{}", problems.len(), rows.len(), problems.join("\n"));
}
