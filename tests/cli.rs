//! The `qwen-kernels` binary as a user meets it: help, version, usage errors that say what was
//! expected, and `--checkpoint` finding a checkpoint's goldens where gen.py puts them.

mod common;
use common::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary cargo built, or, in a GPU bundle (scripts/bundle.sh copies the tests and the CLI
/// into one bin/), the one beside this test.
fn binary() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_qwen-kernels"));
    if built.exists() {
        return built;
    }
    std::env::current_exe().unwrap().with_file_name("qwen-kernels")
}

fn qwen_kernels(args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (status.code().unwrap_or(-1), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

#[test]
fn help_lists_every_command_and_option() {
    for flag in ["--help", "-h", "help"] {
        let (code, out, err) = run(&mut qwen_kernels(&[flag]));
        assert_eq!(code, 0, "{flag}: {err}");
        for word in ["Usage: qwen-kernels <COMMAND>", "check", "diff", "generate", "profile", "info", "--version"] {
            assert!(out.contains(word), "{flag}: {word:?} missing from\n{out}");
        }
    }
    let options: [(&str, &[&str]); 5] = [
        ("check", &["--backend <BACKEND>", "[possible values: cpu, cuda]", "--device <N>", "--model <M>", "qwen2.5-0.5b", "vibethinker-1.5b", "--checkpoint <DIR>", "--name <NAME>", "--goldens <DIR>"]),
        ("diff", &["--model <M>", "--checkpoint <DIR>", "--name <NAME>", "--goldens <DIR>", "--backend <BACKEND>", "--dtype <DTYPE>", "--device <N>"]),
        ("generate", &["--checkpoint <DIR>", "--prompt <PROMPT>", "--messages <FILE>", "--system <TEXT>", "--max-tokens <N>", "--chat", "--dtype <DTYPE>", "--device <N>", "--show-ids"]),
        ("profile", &["--model <M>", "--batch <B>", "--context <C>", "--op <NAME>", "--device <N>"]),
        ("info", &["--device <N>"]),
    ];
    for (command, wanted) in options {
        let (code, out, err) = run(&mut qwen_kernels(&[command, "--help"]));
        assert_eq!(code, 0, "{command} --help: {err}");
        for w in wanted {
            assert!(out.contains(w), "{command} --help: {w:?} missing from\n{out}");
        }
    }
    // No command at all: the help, on stderr, as a usage error.
    let (code, out, err) = run(&mut qwen_kernels(&[]));
    assert_eq!(code, 2);
    assert!(out.is_empty() && err.contains("Usage: qwen-kernels <COMMAND>"), "{err}");
}

#[test]
fn version_is_the_crate_version() {
    for args in [&["--version"][..], &["-V"]] {
        let (code, out, _) = run(&mut qwen_kernels(args));
        assert_eq!((code, out.trim()), (0, concat!("qwen-kernels ", env!("CARGO_PKG_VERSION"))), "{args:?}");
    }
    let (code, out, _) = run(&mut qwen_kernels(&["check", "--version"]));
    assert_eq!((code, out.trim()), (0, concat!("qwen-kernels-check ", env!("CARGO_PKG_VERSION"))));
}

/// Usage errors exit 2 and say what was given and what was expected.
#[test]
fn usage_errors_say_what_was_expected() {
    let cases: [(&[&str], &[&str]); 12] = [
        (&["generate", "--prompt", "hi"], &["--checkpoint <DIR>"]),
        (&["generate", "--checkpoint", "x"], &["the following required arguments were not provided", "--prompt <PROMPT>"]),
        (&["generate", "--checkpoint", "x", "--prompt", "hi", "--messages", "m.json"], &["'--prompt <PROMPT>' cannot be used with '--messages <FILE>'"]),
        (&["diff", "--dtype", "f8"], &["invalid value 'f8' for '--dtype <DTYPE>'", "[possible values: f32, f16, bf16]"]),
        (&["frobnicate"], &["unrecognized subcommand 'frobnicate'", "Usage: qwen-kernels <COMMAND>"]),
        (&["check", "--backend", "gpu"], &["invalid value 'gpu' for '--backend <BACKEND>'", "[possible values: cpu, cuda]"]),
        (&["check", "--device", "first"], &["invalid value 'first' for '--device <N>'", "invalid digit"]),
        (&["diff", "--model", "llama-3"], &["invalid value 'llama-3' for '--model <M>'", "qwen2.5-0.5b", "vibethinker-1.5b"]),
        (&["check", "--frob"], &["unexpected argument '--frob'"]),
        (&["diff", "--name", "mine"], &["--name <NAME>", "--checkpoint <DIR>"]),
        (&["check", "--model", "qwen2.5-0.5b", "--checkpoint", "x"], &["'--model <M>' cannot be used with '--checkpoint <DIR>'"]),
        (&["info", "--model", "qwen2.5-0.5b"], &["unexpected argument '--model'"]),
    ];
    for (args, wanted) in cases {
        let (code, out, err) = run(&mut qwen_kernels(args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        for w in wanted {
            assert!(err.contains(w), "{args:?}: {w:?} missing from\n{err}");
        }
    }
}

#[test]
fn info_runs_without_a_gpu() {
    let (code, out, err) = run(&mut qwen_kernels(&["info"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("kernels: "), "{out}");
    assert!(out.contains("device"), "{out}");
}

/// `check --backend cuda` runs every kernel against the goldens of both models: on a GPU when one
/// is usable, else on the software device (the kernels compiled for the host), and says which in
/// the backend line and column. Every row must pass. Needs the kernels (scripts/setup-cuda.sh).
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn check_backend_cuda_passes_every_row_on_the_device_it_names() {
    assert!(qwen_kernels::kernels::built(), "the kernels were not built, and build.rs did not set cfg(qk_no_kernels)");
    // On a GPU the decode steps run the fused kernels (the default). The software device runs
    // them thread by thread, 5.5-7.5 s a step of Qwen2.5-0.5B and three times that of
    // VibeThinker-1.5B: there these whole-model rows decode on the cuBLAS path (its GEMMs run
    // natively), and the fused path is checked on whole models by
    // diff_fused_decode_bf16_whole_model_passes below (Qwen2.5-0.5B bf16) and in tests/gpu/model.rs
    // (Qwen2.5-0.5B's and VibeThinker-1.5B's f32 rows, VibeThinker-1.5B's bf16 prefill and first 8
    // decode steps), at the models' shapes kernel by kernel (tests/gpu/decode.rs) and by every
    // small-model test. (This process holds up to 13 GB: beside another real-size model in f32 it
    // would exceed a 24 GiB machine.)
    let software = qwen_kernels::Gpu::any(0).is_ok_and(|g| g.info().kind == qwen_kernels::DeviceKind::Software);
    let path = if software { "cublas" } else { "fused" };
    let (code, out, err) = run(&mut qwen_kernels(&["check", "--backend", "cuda", "--decode-path", path]));
    assert_eq!(code, 0, "{out}\n{err}");
    let column = if out.contains("backend: softgpu on software device") {
        "softgpu"
    } else {
        assert!(out.contains("backend: cuda on "), "the backend line names no device:\n{out}");
        "cuda"
    };
    let rows: Vec<&str> = out.lines().filter(|l| l.ends_with("PASS") || l.ends_with("FAIL")).collect();
    assert!(rows.len() >= 100, "{} rows:\n{out}", rows.len());
    for row in &rows {
        assert!(row.ends_with("PASS") && row.split_whitespace().nth(3) == Some(column), "{row}");
    }
    for model in ["qwen2.5-0.5b", "vibethinker-1.5b"] {
        assert!(rows.iter().any(|r| r.contains(model)), "no row for {model}");
        // The whole model from the kernels: f32 against the error model and the greedy truth, bf16
        // against PyTorch bf16's own error (the prefill's layers and logits, the 31 decode steps).
        for (op, dtype) in [
            ("model.layers.forced", "f32"),
            ("model.logits.forced", "f32"),
            ("model.greedy32", "f32"),
            ("model.layers.free", "bf16"),
            ("model.logits.free", "bf16"),
            ("model.decode31.free", "bf16"),
        ] {
            assert!(
                rows.iter().any(|r| r.split_whitespace().take(3).collect::<Vec<_>>() == [op, model, dtype]),
                "no {op} {dtype} row for {model}"
            );
        }
        assert!(out.contains(&format!("{model} bf16: greedy 32: ours")), "no bf16 greedy note for {model}");
        // The sampling filters against transformers' warpers, on the bf16 and f32 logits rows.
        for op in ["sampling.temperature", "sampling.top_k", "sampling.top_p", "sampling.min_p", "sampling.combined"] {
            for dtype in ["f32", "bf16"] {
                assert!(rows.iter().any(|r| r.split_whitespace().take(3).collect::<Vec<_>>() == [op, model, dtype]), "no {op} {dtype} row for {model}");
            }
        }
        assert!(rows.iter().any(|r| r.starts_with("sampling.top_p") && r.contains(&format!("{model}:tie"))), "no top-p tie row for {model}");
        // The attention goldens through the paged cache: decode over shared pages and a ragged prefill.
        for case in ["paged_decode300", "paged_prefill16", "ragged_prefill16", "ragged_chunk5of40"] {
            for dtype in ["f32", "f16", "bf16"] {
                let op = format!("attention.{case}");
                assert!(rows.iter().any(|r| r.split_whitespace().take(3).collect::<Vec<_>>() == [op.as_str(), model, dtype]), "no {op} {dtype} row for {model}");
            }
        }
    }
    assert!(out.contains(&format!("{} passed, 0 failed", rows.len())), "{out}");
}


/// Qwen2.5-0.5B's whole model on the fused decode path (the default) in bf16, the tensor-core
/// GEMVs, against its golden: `diff --backend cuda` judges the same rows as `check` (the
/// free-running error after every layer and in the logits, which the prefill computes, and the
/// final norm's output of the 31 decode steps fed the truth's tokens, which the fused decode
/// kernels compute, each no larger than PyTorch bf16's own, beyond chance) and exits 1 on any FAIL. On a GPU, `check` above already decodes both models in
/// f32 and bf16 on the fused path; on the software device (about 7.5 s of CPU time a fused step of
/// this model) this is how CI sees the tensor-core path run a real model end to end, 33 steps.
/// The f32 fused path runs there on whole models in model::greedy_f32_equals_the_truth_qwen and
/// model::whole_model_vibethinker_on_the_fused_path (tests/gpu/model.rs), which also runs
/// VibeThinker-1.5B's bf16 prefill and first 8 decode steps.
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn diff_fused_decode_bf16_whole_model_passes() {
    assert!(qwen_kernels::kernels::built(), "the kernels were not built, and build.rs did not set cfg(qk_no_kernels)");
    let (code, out, err) = run(&mut qwen_kernels(&["diff", "--backend", "cuda", "--dtype", "bf16", "--model", "qwen2.5-0.5b"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("bf16, fused decode)"), "not the fused path in bf16:\n{out}");
    // Rows that start with a number: a layer's has 11 columns, a decode step's 4.
    let numbered = |columns: usize| out.lines().filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<usize>().is_ok()) && l.split_whitespace().count() == columns).count();
    assert_eq!(numbered(11), 24, "a row for each of 24 layers:\n{out}");
    assert!(out.contains("logits: forced tolerance used -; free-running rel-L2"), "{out}");
    assert!(out.contains("decode steps 1..31 fed the truth's tokens, final-norm output: rel-L2"), "the decode steps judged:\n{out}");
    assert_eq!(numbered(4), 31, "a row for each of 31 decode steps:\n{out}");
}

/// `generate` on the tiny checkpoint with its own tokenizer (golden/data/tiny-qwen2-gen), in f32,
/// against transformers' `generate` of the same prompts in float32 (`generate.json`, written by
/// golden/generate_expected.py; every step's top-1 margin is at least 1e-3, far above an f32
/// model's logit error, so the tokens must be equal): the same token ids, the same text on stdout,
/// and the throughput line at the end. The plain prompt and the chat template both run.
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn generate_reproduces_transformers_on_the_tiny_checkpoint() {
    assert!(qwen_kernels::kernels::built(), "the kernels were not built, and build.rs did not set cfg(qk_no_kernels)");
    let dir = qwen_kernels::golden::file::data_dir().join("tiny-qwen2-gen");
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("generate.json")).unwrap()).unwrap();
    let checkpoint = dir.join("checkpoint");
    for case in expected["cases"].as_array().unwrap() {
        let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect::<Vec<u64>>();
        let max = expected["max_new_tokens"].as_u64().unwrap().to_string();
        let mut args = vec!["generate", "--checkpoint", checkpoint.to_str().unwrap(), "--prompt", case["prompt"].as_str().unwrap(), "--max-tokens", &max, "--dtype", "f32", "--show-ids"];
        if case["chat"].as_bool().unwrap() {
            args.push("--chat");
        }
        let (code, out, err) = run(&mut qwen_kernels(&args));
        assert_eq!(code, 0, "{}: {err}", case["name"]);
        let line = |prefix: &str| err.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in\n{err}")).to_string();
        let parse = |s: String| serde_json::from_str::<Vec<u64>>(&s).unwrap();
        assert_eq!(parse(line("prompt ids: ")), ids(&case["prompt_ids"]), "{}: the prompt's tokens", case["name"]);
        assert_eq!(parse(line("generated ids: ")), ids(&case["generated_ids"]), "{}: the generated tokens", case["name"]);
        assert_eq!(out, format!("{}\n", case["text"].as_str().unwrap()), "{}: the streamed text", case["name"]);
        let stop = if case["stopped_at_eos"].as_bool().unwrap() { "stopped at EOS" } else { "stopped at the token limit" };
        assert!(err.contains(stop) && err.contains("tokens/s); decode: ") && err.ends_with("tokens/s)\n"), "{err}");
    }
    // The default storage, bf16, as engines run it (its tokens are not held to the f32 run's).
    let (code, out, err) = run(&mut qwen_kernels(&["generate", "--checkpoint", checkpoint.to_str().unwrap(), "--prompt", "The kernel reads", "--max-tokens", "8"]));
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty() && err.contains("bf16: a prompt of 4 tokens") && err.contains("decode: 7 tokens"), "{out}\n{err}");
}

/// `generate` sampling on the tiny gen checkpoint: `--temperature 0.8 --top-p 0.9 --seed 7` prints
/// the same text twice and another text with another seed; `--samples 2` prints two
/// continuations, the first that seed's own run and the second the next seed's.
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn generate_samples_with_a_seed() {
    assert!(qwen_kernels::kernels::built(), "the kernels were not built, and build.rs did not set cfg(qk_no_kernels)");
    let checkpoint = qwen_kernels::golden::file::data_dir().join("tiny-qwen2-gen/checkpoint");
    let sample = |extra: &[&str]| {
        let mut args = vec!["generate", "--checkpoint", checkpoint.to_str().unwrap(), "--prompt", "The kernel reads", "--max-tokens", "12", "--dtype", "f32"];
        args.extend_from_slice(&["--temperature", "0.8", "--top-p", "0.9"]);
        args.extend_from_slice(extra);
        let (code, out, err) = run(&mut qwen_kernels(&args));
        assert_eq!(code, 0, "{extra:?}: {err}");
        out
    };
    let seven = sample(&["--seed", "7"]);
    assert_eq!(sample(&["--seed", "7"]), seven, "the same seed must print the same text");
    let eight = sample(&["--seed", "8"]);
    assert_ne!(eight, seven, "another seed must print another text");
    let two = sample(&["--seed", "7", "--samples", "2"]);
    assert_eq!(two, format!("--- sample 0 (seed 7) ---\n{seven}--- sample 1 (seed 8) ---\n{eight}"), "{two}");
    // Bad sampling flags are refused before anything runs.
    let (code, _, err) = run(&mut qwen_kernels(&["generate", "--checkpoint", checkpoint.to_str().unwrap(), "--prompt", "x", "--top-p", "1.5"]));
    assert!(code != 0 && err.contains("top_p 1.5 must be in (0, 1]"), "{err}");
}

/// `generate --messages FILE` and `--system TEXT` on the tiny gen checkpoint: the prompt ids are
/// those of transformers' apply_chat_template with the checkpoint's own template
/// (golden/data/chat/expected.json, golden/gen_chat.py): a multi-turn conversation as a list, and
/// a system prompt given by --system, to --prompt or to a conversation given as an object. One
/// token each, to stay fast.
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn generate_renders_messages_and_system_as_transformers() {
    assert!(qwen_kernels::kernels::built(), "the kernels were not built, and build.rs did not set cfg(qk_no_kernels)");
    let data = qwen_kernels::golden::file::data_dir();
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("chat/expected.json")).unwrap()).unwrap();
    let case = |name: &str| expected["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    let (messages, system) = (case("cli_messages"), case("cli_system_prompt"));
    assert_eq!(system["messages"][0]["content"], "You are terse.");
    let tmp = TempDir::new("cli-messages");
    let list = tmp.path().join("list.json");
    std::fs::write(&list, messages["messages"].to_string()).unwrap();
    let object = tmp.path().join("object.json");
    std::fs::write(&object, serde_json::json!({"messages": [system["messages"][1]]}).to_string()).unwrap();
    let checkpoint = data.join("tiny-qwen2-gen/checkpoint");
    let checkpoint = checkpoint.to_str().unwrap();
    let runs: [(&[&str], &serde_json::Value); 3] = [
        (&["--messages", list.to_str().unwrap()], &messages["ids"]),
        (&["--prompt", "The kernel reads", "--system", "You are terse."], &system["ids"]),
        (&["--messages", object.to_str().unwrap(), "--system", "You are terse."], &system["ids"]),
    ];
    for (args, ids) in runs {
        let mut all = vec!["generate", "--checkpoint", checkpoint, "--max-tokens", "1", "--dtype", "f32", "--show-ids"];
        all.extend_from_slice(args);
        let (code, out, err) = run(&mut qwen_kernels(&all));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        let prompt = err.lines().find_map(|l| l.strip_prefix("prompt ids: ")).unwrap_or_else(|| panic!("{args:?}: no prompt ids in\n{err}"));
        assert_eq!(serde_json::from_str::<serde_json::Value>(prompt).unwrap(), *ids, "{args:?}: the prompt's tokens");
    }
}

/// A messages file that cannot be read or is not a conversation: exit 1 and an error naming the
/// file and what is wrong, before any model is loaded.
#[test]
fn generate_refuses_a_bad_messages_file() {
    let tmp = TempDir::new("cli-bad-messages");
    let checkpoint = qwen_kernels::golden::file::data_dir().join("tiny-qwen2-gen/checkpoint");
    let file = tmp.path().join("m.json");
    for (text, says) in [(None, "m.json: cannot read"), (Some("[{\"role\": \"user\""), "m.json: not JSON"), (Some("[{\"content\": \"hi\"}]"), "m.json: messages[0] has no role")] {
        match text {
            Some(t) => std::fs::write(&file, t).unwrap(),
            None => std::fs::remove_file(&file).unwrap_or(()),
        }
        let (code, out, err) = run(&mut qwen_kernels(&["generate", "--checkpoint", checkpoint.to_str().unwrap(), "--messages", file.to_str().unwrap()]));
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.starts_with("qwen-kernels generate: chat template: invalid argument: ") && err.contains(says), "{err}");
    }
}

/// Copy `names` from directory `from` into `to` (created).
fn copy_files(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for name in names {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// A checkpoint outside the repository whose goldens gen.py wrote to the user's directory:
/// `check --checkpoint` and `diff --checkpoint` find them there without being told, in
/// $QK_CHECKPOINT_GOLDEN_DIR or ~/.cache/qwen-kernels/goldens; `--goldens` names another place;
/// when they are missing the error says the gen.py command that writes them.
#[test]
fn checkpoint_goldens_are_found_in_the_user_directory() {
    let data = qwen_kernels::golden::file::data_dir().join("tiny-qwen2");
    let tmp = TempDir::new("checkpoint");
    let ckpt = tmp.0.join("ckpt");
    copy_files(&data.join("checkpoint"), &ckpt, &["config.json", "model.safetensors"]);
    let home = tmp.0.join("home");
    copy_files(&data, &home.join(".cache/qwen-kernels/goldens/tiny-qwen2"), &["model.safetensors"]);
    let elsewhere = tmp.0.join("elsewhere");
    copy_files(&data, &elsewhere.join("tiny-qwen2"), &["model.safetensors"]);
    let ckpt_s = ckpt.to_str().unwrap();
    let user = |cmd: &mut Command| {
        cmd.env_remove("QK_CHECKPOINT_GOLDEN_DIR").env_remove("XDG_CACHE_HOME").env("HOME", &home);
    };

    let growth = tmp.0.join("growth.svg");
    for command in ["check", "diff"] {
        let mut cmd = qwen_kernels(&[command, "--checkpoint", ckpt_s, "--name", "tiny-qwen2"]);
        if command == "diff" {
            cmd.args(["--svg", growth.to_str().unwrap()]);
        }
        user(&mut cmd);
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{command} from ~/.cache: {out}{err}");
    }
    // diff --svg: the error after each layer, ours and PyTorch's, a <desc> a layer.
    let svg = std::fs::read_to_string(&growth).unwrap();
    let config = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    let layers = qwen_kernels::model::Qwen2Config::from_hf_json("tiny-qwen2", &config).unwrap().num_hidden_layers;
    assert_eq!(svg.matches("<desc>layer ").count(), layers, "{svg}");
    assert!(svg.contains("against the float64 truth") && svg.contains("PyTorch bf16") && svg.contains("ours ("), "{svg}");
    let mut cmd = qwen_kernels(&["check", "--checkpoint", ckpt_s, "--name", "tiny-qwen2"]);
    user(&mut cmd);
    cmd.env("QK_CHECKPOINT_GOLDEN_DIR", &elsewhere);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "from QK_CHECKPOINT_GOLDEN_DIR: {out}{err}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");

    let mut cmd = qwen_kernels(&["check", "--checkpoint", ckpt_s, "--name", "tiny-qwen2", "--goldens", elsewhere.to_str().unwrap()]);
    cmd.env("HOME", tmp.0.join("nobody"));
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "--goldens: {out}{err}");

    // Missing: exit 1, and the command that makes them.
    let mut cmd = qwen_kernels(&["check", "--checkpoint", ckpt_s, "--name", "tiny-qwen2"]);
    user(&mut cmd);
    cmd.env("HOME", tmp.0.join("nobody"));
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("regenerate: python3 golden/gen.py --checkpoint {ckpt_s} --name tiny-qwen2)")), "{err}");
    // The name defaults to the directory's: "ckpt" has no goldens anywhere.
    let mut cmd = qwen_kernels(&["diff", "--checkpoint", ckpt_s]);
    user(&mut cmd);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ckpt/model.safetensors") && err.contains("--name ckpt"), "{err}");
}

/// `profile` of one decode step of Qwen2.5-0.5B at batch 1 on the software device (the fused
/// path, the default): a row per node, the counts-not-times notice, and the summary line scripts
/// read, whose node count is the step's and the captured graph's (24 layers of 5 nodes: q/k/v
/// with norm, RoPE and cache write, attention (512 keys are several splits, merged inside the
/// launch), o with the residual, gate/up with norm and SwiGLU, down with the residual; and 4 more:
/// the status clear, embed, the head with the final norm, the argmax with the position update and
/// the step's report: 124, under the 148 the decode-speed work set), plus the report's copy to
/// the host after the graph, and whose bytes add up to the table's.
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn profile_prints_every_node_of_a_decode_step_and_the_summary() {
    let tmp = TempDir::new("profile-svg");
    let svg = tmp.0.join("step.svg");
    let (code, out, err) = run(qwen_kernels(&["profile", "--model", "qwen2.5-0.5b", "--batch", "1", "--context", "512", "--svg", svg.to_str().unwrap()]).env("QK_DEVICE", "emulated"));
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(out.contains("counts (softgpu counters tool), times are a model, not measurements"), "{out}");
    let summary = out.lines().last().unwrap_or_default();
    // step: N nodes (G in the graph), R bytes read, W bytes written, ideal I bytes, ratio X,
    // requested Q bytes (Yx moved), modelled T us (H200)
    assert!(summary.starts_with("step: ") && summary.ends_with(" us (H200)"), "{summary}");
    // The number just before `what` in the summary.
    let number = |what: &str| -> f64 {
        let before = summary.split(what).next().filter(|b| b.len() < summary.len()).unwrap_or_else(|| panic!("no {what:?} in {summary}"));
        before.trim_end().rsplit([' ', ',']).next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{what:?} in {summary}"))
    };
    let nodes = number(" nodes") as usize;
    let rows: Vec<&str> = out.lines().filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<usize>().is_ok())).collect();
    assert_eq!(rows.len(), nodes, "{out}");
    let graph: usize = summary.split_once(" nodes (").and_then(|(_, g)| g.split(' ').next()).and_then(|g| g.parse().ok()).unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(graph, 24 * 5 + 4, "{out}");
    assert_eq!(nodes, graph + 1, "the graph's nodes and the report's copy: {out}");
    let last_row = rows.last().unwrap();
    assert!(last_row.contains("cuMemcpy") && last_row.split_whitespace().nth(7) == Some("16"), "the last node is the report's copy (16 bytes): {last_row}");
    assert!(out.contains("(fused path)"), "{out}");
    let moved: u64 = rows.iter().map(|r| r.split_whitespace().nth(7).unwrap().parse::<u64>().unwrap()).sum();
    let (read, written) = (number(" bytes read"), number(" bytes written"));
    assert_eq!(read as u64 + written as u64, moved, "{summary}");
    // The bytes the threads requested (L2 serves what a DRAM does not move): the column's sum.
    let requested: u64 = rows.iter().map(|r| r.split_whitespace().nth(6).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(number(" bytes ("), requested as f64, "{summary}");
    let (_, ratio) = summary.split_once("ratio ").unwrap();
    let ratio: f64 = ratio.split(',').next().unwrap().parse().unwrap();
    // Each node moves at least its ideal (a sector holds the bytes it serves); the whole step,
    // almost all of it weights read once, within 5% of the ideal.
    assert!((1.0..=1.05).contains(&ratio), "moved over ideal {ratio}: {summary}");
    // --svg: the roofline, one point (and one <desc>) a node, the copy line and the node floor.
    let svg = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<desc>node ").count(), nodes, "{svg}");
    assert_eq!(svg.matches("<circle").count(), nodes + 1, "a point a node and the legend's: {svg}");
    for words in ["copy bandwidth 4.30 TB/s", "per-node floor: bandwidth + 1.5 us a node", "nodes, modelled (software device: counted bytes)", "bytes moved", "time (us)"] {
        assert!(svg.contains(words), "{words:?} in the SVG");
    }
}
