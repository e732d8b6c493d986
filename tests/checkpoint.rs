//! Real checkpoints and their goldens, on the CPU: where `golden/gen.py --checkpoint` writes the
//! goldens and `qwen-kernels check --checkpoint` reads them, what a golden error tells the user to
//! run, which safetensors files a checkpoint's weights come from, and which config.json values
//! are refused.

mod common;
use common::TempDir;
use qwen_kernels::diff;
use qwen_kernels::golden::file::{data_dir, resolve_checkpoint_golden_dir};
use std::ffi::OsString;
use std::path::{Path, PathBuf};


/// The committed tiny save_pretrained checkpoint and its golden.
fn tiny_checkpoint() -> PathBuf {
    data_dir().join("tiny-qwen2/checkpoint")
}

fn tiny_golden() -> PathBuf {
    data_dir().join("tiny-qwen2/model.safetensors")
}

/// A copy of the tiny checkpoint outside the data directory (at `<tmp>/ckpt`), and a goldens
/// directory holding its golden under `tiny-qwen2` (at `<tmp>/goldens`).
fn copied_checkpoint(tmp: &TempDir) -> (PathBuf, PathBuf) {
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_checkpoint().join(f), ckpt.join(f)).unwrap();
    }
    let goldens = tmp.path().join("goldens");
    std::fs::create_dir_all(goldens.join("tiny-qwen2")).unwrap();
    std::fs::copy(tiny_golden(), goldens.join("tiny-qwen2/model.safetensors")).unwrap();
    (ckpt, goldens)
}

/// The environment cases both sides are asked about: (QK_CHECKPOINT_GOLDEN_DIR, XDG_CACHE_HOME, HOME).
const ENV_CASES: [[Option<&str>; 3]; 5] = [
    [Some("/srv/goldens"), Some("/xdg"), Some("/home/u")],
    [None, Some("/xdg"), Some("/home/u")],
    [None, Some("relative/cache"), Some("/home/u")],
    [None, None, Some("/home/u")],
    [Some(""), Some(""), Some("/home/u")],
];

fn env_of<'a>(case: &'a [Option<&'a str>; 3]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |k| {
        let i = ["QK_CHECKPOINT_GOLDEN_DIR", "XDG_CACHE_HOME", "HOME"].iter().position(|&n| n == k)?;
        case[i].map(OsString::from)
    }
}

#[test]
fn checkpoint_goldens_default_to_the_user_directory() {
    let tmp = TempDir::new("locations");
    let (ckpt, _) = copied_checkpoint(&tmp);
    let committed = data_dir();
    let expected = [
        "/srv/goldens",
        "/xdg/qwen-kernels/goldens",
        "/home/u/.cache/qwen-kernels/goldens",
        "/home/u/.cache/qwen-kernels/goldens",
        "/home/u/.cache/qwen-kernels/goldens",
    ];
    for (case, want) in ENV_CASES.iter().zip(expected) {
        let got = resolve_checkpoint_golden_dir(&ckpt, &committed, env_of(case)).unwrap();
        assert_eq!(got, Path::new(want), "{case:?}");
        // A checkpoint that does not exist (yet) is not under the data directory either.
        let got = resolve_checkpoint_golden_dir(&tmp.path().join("absent"), &committed, env_of(case)).unwrap();
        assert_eq!(got, Path::new(want), "{case:?}");
        // The committed fixture keeps its goldens beside it, whatever the environment.
        assert_eq!(resolve_checkpoint_golden_dir(&tiny_checkpoint(), &committed, env_of(case)).unwrap(), committed);
    }
    let e = resolve_checkpoint_golden_dir(&ckpt, &committed, |_| None).unwrap_err();
    assert!(e.to_string().contains("HOME") && e.to_string().contains("QK_CHECKPOINT_GOLDEN_DIR"), "{e}");
}

/// golden/locations.py (what gen.py writes to) and the Rust rule (what check reads from) agree on
/// every case. locations.py is compiled into this test (it needs only the standard library), so
/// the test runs the same wherever the binary is, a GPU bundle included; it needs python3
/// (setup-cuda.sh, CI and the bundle's runner have it) and fails, saying so, without it.
#[test]
fn gen_py_writes_checkpoint_goldens_where_qwen_kernels_reads_them() {
    let tmp = TempDir::new("gen-py");
    let (ckpt, _) = copied_checkpoint(&tmp);
    let committed = data_dir();
    let golden_py = tmp.path().join("golden-py");
    std::fs::create_dir_all(&golden_py).unwrap();
    std::fs::write(golden_py.join("locations.py"), include_str!("../golden/locations.py")).unwrap();
    let checkpoints = [ckpt.clone(), tmp.path().join("absent"), tiny_checkpoint()];
    for case in &ENV_CASES {
        for checkpoint in &checkpoints {
            let mut cmd = std::process::Command::new("python3");
            cmd.arg("-c")
                .arg("import sys, locations; print(locations.checkpoint_out_dir(sys.argv[1], sys.argv[2]))")
                .arg(checkpoint)
                .arg(&committed)
                .current_dir(&golden_py)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env_remove("QK_CHECKPOINT_GOLDEN_DIR")
                .env_remove("XDG_CACHE_HOME")
                .env_remove("HOME");
            for (k, v) in ["QK_CHECKPOINT_GOLDEN_DIR", "XDG_CACHE_HOME", "HOME"].iter().zip(case) {
                if let Some(v) = v {
                    cmd.env(k, v);
                }
            }
            let out = cmd.output().unwrap_or_else(|e| panic!("python3 cannot be run ({e}); this test needs it"));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let python = String::from_utf8(out.stdout).unwrap();
            let rust = resolve_checkpoint_golden_dir(checkpoint, &committed, env_of(case)).unwrap();
            assert_eq!(python.trim_end(), rust.to_str().unwrap(), "{} {case:?}", checkpoint.display());
        }
    }
}

/// A checkpoint outside the data directory with its goldens in a directory of the user's: found
/// there, and the whole model passes.
#[test]
fn a_checkpoints_goldens_are_read_from_the_given_directory() {
    let tmp = TempDir::new("given");
    let (ckpt, goldens) = copied_checkpoint(&tmp);
    let report = diff::analyse_checkpoint(&ckpt, "tiny-qwen2", Some(&goldens)).unwrap();
    for r in diff::rows(&report) {
        assert!(r.comparison.passed(), "{} {}: {}", r.op, r.case, r.comparison);
    }
    // The committed fixture, by its default location (beside it in the data directory).
    assert!(diff::analyse_checkpoint(&tiny_checkpoint(), "tiny-qwen2", None).is_ok());
}

/// Every golden error about a checkpoint's goldens says the command that writes them:
/// `--checkpoint DIR --name NAME` (and `--out` when the goldens were looked for elsewhere).
#[test]
fn checkpoint_golden_errors_name_the_checkpoint_command() {
    let tmp = TempDir::new("hint");
    let (ckpt, goldens) = copied_checkpoint(&tmp);
    let want = |name: &str, out: Option<&Path>| {
        let mut c = format!("python3 golden/gen.py --checkpoint {} --name {name}", ckpt.display());
        if let Some(o) = out {
            c.push_str(&format!(" --out {}", o.display()));
        }
        c
    };
    // Missing, in a given directory.
    let e = diff::analyse_checkpoint(&ckpt, "mine", Some(&goldens)).unwrap_err().to_string();
    assert!(e.contains(&format!("(regenerate: {})", want("mine", Some(&goldens)))), "{e}");
    assert!(!e.contains("--model"), "{e}");
    // Missing, in the default (user) directory: a name nobody has.
    let name = format!("qk-test-missing-{}", std::process::id());
    let e = diff::analyse_checkpoint(&ckpt, &name, None).unwrap_err().to_string();
    assert!(e.contains(&format!("(regenerate: {})", want(&name, None))), "{e}");
    // Made from another config.json.
    let text = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    std::fs::write(ckpt.join("config.json"), text.replace("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 1e-6")).unwrap();
    let e = diff::analyse_checkpoint(&ckpt, "tiny-qwen2", Some(&goldens)).unwrap_err().to_string();
    assert!(e.contains("made from another config.json"), "{e}");
    assert!(e.contains(&format!("(regenerate: {})", want("tiny-qwen2", Some(&goldens)))), "{e}");
    std::fs::write(ckpt.join("config.json"), &text).unwrap();
    // Truncated.
    let golden = goldens.join("tiny-qwen2/model.safetensors");
    let bytes = std::fs::read(&golden).unwrap();
    std::fs::write(&golden, &bytes[..bytes.len() / 2]).unwrap();
    let e = diff::analyse_checkpoint(&ckpt, "tiny-qwen2", Some(&goldens)).unwrap_err().to_string();
    assert!(e.contains(&format!("(regenerate: {})", want("tiny-qwen2", Some(&goldens)))), "{e}");
}

// ---- Which files a checkpoint's weights come from -------------------------------------------

use qwen_kernels::model::{ModelWeights, Qwen2Config};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

fn tiny_config() -> Qwen2Config {
    let text = std::fs::read_to_string(tiny_checkpoint().join("config.json")).unwrap();
    Qwen2Config::from_hf_json("tiny-qwen2", &text).unwrap()
}

/// The tiny checkpoint's tensors: (name, dtype, shape, bytes), sorted by name.
fn tiny_tensors() -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(tiny_checkpoint().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Write `tensors` (a subset of the tiny checkpoint's, by name) to `path` as safetensors.
fn write_shard(path: &Path, tensors: &[&(String, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// A directory holding the tiny checkpoint's config.json and its tensors split over two shards
/// (layer 1 and the final norm in the second), with `model.safetensors.index.json` naming them.
fn sharded_checkpoint(tmp: &TempDir) -> PathBuf {
    let dir = tmp.path().join("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tiny_checkpoint().join("config.json"), dir.join("config.json")).unwrap();
    let tensors = tiny_tensors();
    let second = |n: &str| n.starts_with("model.layers.1.") || n == "model.norm.weight";
    let (b, a): (Vec<_>, Vec<_>) = tensors.iter().partition(|t| second(&t.0));
    write_shard(&dir.join("model-00001-of-00002.safetensors"), &a);
    write_shard(&dir.join("model-00002-of-00002.safetensors"), &b);
    let map: serde_json::Map<String, serde_json::Value> = tensors
        .iter()
        .map(|t| (t.0.clone(), format!("model-0000{}-of-00002.safetensors", if second(&t.0) { 2 } else { 1 }).into()))
        .collect();
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
    dir
}

fn same_weights(a: &ModelWeights, b: &ModelWeights) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Files beside the checkpoint that transformers would not load: a stale copy with other values and
/// a file that is not safetensors at all.
fn add_stale_files(dir: &Path) {
    let mut tensors = tiny_tensors();
    for t in &mut tensors {
        t.3.iter_mut().for_each(|b| *b = 0);
    }
    write_shard(&dir.join("model-old.safetensors"), &tensors.iter().collect::<Vec<_>>());
    std::fs::write(dir.join("consolidated.safetensors"), b"not a safetensors file").unwrap();
}

#[test]
fn a_single_file_checkpoint_reads_model_safetensors_only() {
    let tmp = TempDir::new("single");
    let (ckpt, _) = copied_checkpoint(&tmp);
    let clean = ModelWeights::from_checkpoint(&tiny_config(), &ckpt).unwrap();
    add_stale_files(&ckpt);
    let with_stale = ModelWeights::from_checkpoint(&tiny_config(), &ckpt).unwrap();
    assert!(same_weights(&clean, &with_stale), "a stale *.safetensors beside model.safetensors changed the weights");
    // Without model.safetensors (or an index) nothing is guessed: the error names what is missing
    // and the files it did not read.
    std::fs::remove_file(ckpt.join("model.safetensors")).unwrap();
    let e = ModelWeights::from_checkpoint(&tiny_config(), &ckpt).unwrap_err().to_string();
    assert!(e.contains("model.safetensors.index.json") && e.contains("model-old.safetensors") && e.contains("2 not read"), "{e}");
}

#[test]
fn a_sharded_checkpoint_reads_exactly_what_its_index_names() {
    let tmp = TempDir::new("sharded");
    let dir = sharded_checkpoint(&tmp);
    let single = ModelWeights::from_checkpoint(&tiny_config(), &tiny_checkpoint()).unwrap();
    let sharded = ModelWeights::from_checkpoint(&tiny_config(), &dir).unwrap();
    assert!(same_weights(&single, &sharded));
    add_stale_files(&dir);
    let with_stale = ModelWeights::from_checkpoint(&tiny_config(), &dir).unwrap();
    assert!(same_weights(&single, &with_stale), "a stale *.safetensors beside the shards changed the weights");
}

#[test]
fn a_tensor_found_twice_is_an_error() {
    let tmp = TempDir::new("twice");
    let dir = sharded_checkpoint(&tmp);
    // The second shard also holds the embedding (the index still places it in the first).
    let tensors = tiny_tensors();
    let second: Vec<_> = tensors.iter().filter(|t| t.0.starts_with("model.layers.1.") || t.0 == "model.norm.weight" || t.0 == "model.embed_tokens.weight").collect();
    write_shard(&dir.join("model-00002-of-00002.safetensors"), &second);
    let e = ModelWeights::from_checkpoint(&tiny_config(), &dir).unwrap_err().to_string();
    assert!(e.contains("model.embed_tokens.weight is in both") && e.contains("model-00001-of-00002") && e.contains("model-00002-of-00002"), "{e}");
}

#[test]
fn an_index_that_disagrees_with_its_shards_is_an_error() {
    let tmp = TempDir::new("index");
    let dir = sharded_checkpoint(&tmp);
    let index_path = dir.join("model.safetensors.index.json");
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let write = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = index.clone();
        edit(&mut v);
        std::fs::write(&index_path, serde_json::to_string(&v).unwrap()).unwrap();
        ModelWeights::from_checkpoint(&tiny_config(), &dir).unwrap_err().to_string()
    };
    // A tensor placed in the wrong shard.
    let e = write(&|v| v["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors".into());
    assert!(e.contains("places model.norm.weight in model-00001-of-00002.safetensors") && e.contains("model-00002-of-00002"), "{e}");
    // A tensor the index does not list.
    let e = write(&|v| {
        v["weight_map"].as_object_mut().unwrap().remove("model.norm.weight");
    });
    assert!(e.contains("does not list model.norm.weight"), "{e}");
    // A shard that is not there, and one outside the directory.
    let e = write(&|v| v["weight_map"]["model.norm.weight"] = "model-00003-of-00003.safetensors".into());
    assert!(e.contains("model-00003-of-00003.safetensors") && e.contains("cannot read"), "{e}");
    let e = write(&|v| v["weight_map"]["model.norm.weight"] = "../model.safetensors".into());
    assert!(e.contains("\"../model.safetensors\" is not a file inside"), "{e}");
    // Not an index at all.
    let e = write(&|v| *v = serde_json::json!({ "weights": {} }));
    assert!(e.contains("no weight_map"), "{e}");
    std::fs::write(&index_path, "{").unwrap();
    let e = ModelWeights::from_checkpoint(&tiny_config(), &dir).unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
}

// ---- config.json values: read as transformers reads them, refused where not implemented ------

use qwen_kernels::Error;

/// Qwen/Qwen2.5-0.5B-Instruct's published config.json (transformers 4.x layout).
const QWEN2_5_0_5B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936
}"#;

/// The published config with `edit` applied (a null value removes the field).
fn edited(edit: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(QWEN2_5_0_5B).unwrap();
    for (k, x) in edit.as_object().unwrap() {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v.to_string()
}

#[test]
fn published_and_saved_configs_are_read_as_transformers_reads_them() {
    assert_eq!(Qwen2Config::from_hf_json("qwen2.5-0.5b", QWEN2_5_0_5B).unwrap(), Qwen2Config::qwen2_5_0_5b());
    let cfg = tiny_config();
    assert_eq!((cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads, cfg.rope_theta, cfg.tie_word_embeddings), (64, 16, 2, 10_000.0, true));
    let read = |edit| Qwen2Config::from_hf_json("m", &edited(edit)).unwrap();
    // Accepted: what transformers computes the same way we do.
    let base = read(serde_json::json!({}));
    for (edit, why) in [
        (serde_json::json!({ "rope_scaling": {} }), "an empty rope_scaling is no scaling"),
        (serde_json::json!({ "rope_scaling": { "type": "default" } }), "the default type, legacy key"),
        (serde_json::json!({ "rope_theta": null, "rope_parameters": { "rope_type": "default", "rope_theta": 1e6 } }), "transformers 5 layout"),
        (serde_json::json!({ "rope_parameters": { "rope_type": "default", "partial_rotary_factor": 1.0 } }), "a whole-head rotary factor"),
        (serde_json::json!({ "use_sliding_window": true, "max_window_layers": 24 }), "no layer index reaches max_window_layers"),
        (serde_json::json!({ "use_sliding_window": true, "sliding_window": null }), "no window: transformers slides nothing"),
        (serde_json::json!({ "layer_types": vec!["full_attention"; 24] }), "every layer full attention"),
        (serde_json::json!({ "attention_dropout": 0.1 }), "dropout applies only in training"),
        (serde_json::json!({ "hidden_act": "swish" }), "ACT2FN's swish is nn.SiLU"),
        (serde_json::json!({ "sliding_window": 4, "pad_token_id": 7, "initializer_range": 1.0, "quantization_config": null }), "inference ignores them"),
    ] {
        assert_eq!(read(edit), base, "{why}");
    }
    // Defaults transformers fills in.
    assert_eq!(read(serde_json::json!({ "rope_theta": null })).rope_theta, 10_000.0);
    let v = edited(serde_json::json!({})).replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":null");
    assert_eq!(Qwen2Config::from_hf_json("m", &v).unwrap().num_key_value_heads, 14, "null: as many as the heads");
    assert!(!read(serde_json::json!({ "tie_word_embeddings": null })).tie_word_embeddings);
    // An explicit head_dim with heads x head_dim != hidden: the projections follow head_dim.
    let cfg = read(serde_json::json!({ "head_dim": 80 }));
    assert_eq!((cfg.head_dim, cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size), (80, 1120, 896));
}

#[test]
fn config_values_the_forward_does_not_implement_are_refused() {
    use serde_json::json;
    let mut sliding_fourth = vec!["full_attention"; 24];
    sliding_fourth[3] = "sliding_attention";
    let cases: Vec<(serde_json::Value, &[&str])> = vec![
        (json!({ "use_sliding_window": true }), &["use_sliding_window = true", "max_window_layers = 21", "num_hidden_layers = 24"]),
        (json!({ "use_sliding_window": true, "max_window_layers": null, "num_hidden_layers": 30 }), &["max_window_layers = 28", "num_hidden_layers = 30"]),
        (json!({ "use_sliding_window": "yes" }), &["use_sliding_window = \"yes\""]),
        (json!({ "layer_types": sliding_fourth }), &["layer_types[3] = \"sliding_attention\""]),
        (json!({ "layer_types": vec!["full_attention"; 2] }), &["layer_types has 2 entries", "num_hidden_layers = 24"]),
        (json!({ "rope_scaling": { "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768 } }), &["rope_scaling.rope_type = \"yarn\""]),
        (json!({ "rope_scaling": { "rope_type": "dynamic", "factor": 2.0 } }), &["rope_scaling.rope_type = \"dynamic\""]),
        (json!({ "rope_scaling": "linear" }), &["rope_scaling = \"linear\""]),
        (json!({ "rope_parameters": { "rope_type": "linear", "factor": 2.0, "rope_theta": 1e6 } }), &["rope_parameters.rope_type = \"linear\""]),
        (json!({ "rope_parameters": { "rope_type": "llama3", "rope_theta": 1e6 } }), &["rope_parameters.rope_type = \"llama3\""]),
        (json!({ "rope_parameters": { "full_attention": { "rope_type": "default", "rope_theta": 1e6 } } }), &["rope_parameters.full_attention", "per layer type"]),
        (json!({ "rope_parameters": { "rope_type": "default", "partial_rotary_factor": 0.5 } }), &["rope_parameters.partial_rotary_factor = 0.5"]),
        (json!({ "partial_rotary_factor": 0.25 }), &["partial_rotary_factor = 0.25"]),
        (json!({ "rope_theta": -1.0 }), &["rope_theta = -1.0", "positive"]),
        (json!({ "rope_theta": 1e40 }), &["rope_theta = 1e+40"]),
        (json!({ "rope_theta": "1e6" }), &["rope_theta = \"1e6\""]),
        (json!({ "hidden_act": "gelu" }), &["hidden_act = \"gelu\"", "silu"]),
        (json!({ "hidden_act": "gelu_pytorch_tanh" }), &["hidden_act = \"gelu_pytorch_tanh\""]),
        (json!({ "model_type": "qwen2_moe" }), &["model_type = \"qwen2_moe\""]),
        (json!({ "quantization_config": { "quant_method": "awq", "bits": 4 } }), &["quantization_config = {", "awq"]),
        (json!({ "head_dim": 15 }), &["head_dim = 15 is odd"]),
        (json!({ "head_dim": 0 }), &["head_dim = 0"]),
        (json!({ "hidden_size": 900 }), &["hidden_size = 900 is not a multiple of num_attention_heads = 14"]),
        (json!({ "num_key_value_heads": 3 }), &["num_attention_heads = 14 is not a multiple of num_key_value_heads = 3"]),
        (json!({ "num_key_value_heads": 0 }), &["num_key_value_heads = 0"]),
        (json!({ "hidden_size": 0 }), &["hidden_size = 0"]),
        (json!({ "hidden_size": "896" }), &["hidden_size = \"896\""]),
        (json!({ "num_hidden_layers": -2 }), &["num_hidden_layers = -2"]),
        (json!({ "vocab_size": null }), &["lacks vocab_size"]),
        (json!({ "num_key_value_heads": null }), &["lacks num_key_value_heads"]),
        (json!({ "vocab_size": 1u64 << 62, "hidden_size": 1u64 << 20, "num_attention_heads": 2, "head_dim": 64 }), &["vocab_size x hidden_size", "overflows"]),
        (json!({ "rms_norm_eps": -1e-6 }), &["rms_norm_eps = -1e-6", "non-negative"]),
        (json!({ "rms_norm_eps": null }), &["lacks rms_norm_eps"]),
        (json!({ "tie_word_embeddings": "true" }), &["tie_word_embeddings = \"true\""]),
    ];
    for (edit, wanted) in cases {
        let e = Qwen2Config::from_hf_json("m", &edited(edit.clone())).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "config", .. }), "{edit}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("config.json of m"), "{edit}: {msg}");
        for w in wanted {
            assert!(msg.contains(w), "{edit}: {msg:?} lacks {w:?}");
        }
    }
    for (text, wanted) in [("[1, 2]", "not a JSON object"), ("{", "not JSON"), ("", "not JSON")] {
        let e = Qwen2Config::from_hf_json("m", text).unwrap_err().to_string();
        assert!(e.contains(wanted), "{text:?}: {e}");
    }
}

/// A checkpoint with an explicit head_dim (4 heads x 12 = 48, hidden 32) and an untied lm_head,
/// saved by save_pretrained, against transformers' own goldens (golden/tiny_checkpoint.py
/// head-dim): the reference runs it as transformers does.
#[test]
fn an_explicit_head_dim_passes_its_transformers_golden() {
    let dir = data_dir().join("tiny-qwen2-head-dim/checkpoint");
    let report = diff::analyse_checkpoint(&dir, "tiny-qwen2-head-dim", None).unwrap();
    for r in diff::rows(&report) {
        assert!(r.comparison.passed(), "{} {}: {}", r.op, r.case, r.comparison);
    }
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = Qwen2Config::from_hf_json("tiny-qwen2-head-dim", &text).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.tie_word_embeddings), (32, 4, 12, false));
    let w = ModelWeights::from_checkpoint(&cfg, &dir).unwrap();
    assert_eq!((w.layers[0].q_proj.weight.rows, w.layers[0].o_proj.weight.cols), (48, 48));
}
