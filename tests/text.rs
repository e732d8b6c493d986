//! The tokenizer of `qwen-kernels generate` (src/text.rs) against transformers, on the CPU: the tiny
//! gen checkpoint's prompts and generated ids as golden/generate_expected.py recorded them with
//! transformers' own tokenizer, the streamed text, the EOS ids, and typed errors for broken files.

mod common;
use common::TempDir;
use qwen_kernels::golden::file::data_dir;
use qwen_kernels::text::Tokenizer;
use std::path::{Path, PathBuf};

fn checkpoint() -> PathBuf {
    data_dir().join("tiny-qwen2-gen/checkpoint")
}

fn expected() -> serde_json::Value {
    let path = data_dir().join("tiny-qwen2-gen/generate.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| u32::try_from(x.as_u64().unwrap()).unwrap()).collect()
}

/// What a StreamDecoder gives out for `ids` pushed one by one, then finished, and how many pushes
/// gave nothing.
fn streamed(tok: &Tokenizer, ids: &[u32]) -> (String, usize) {
    let mut decoder = tok.stream_decoder();
    let (mut text, mut held) = (String::new(), 0);
    for &id in ids {
        let piece = decoder.push(id).unwrap();
        held += piece.is_empty() as usize;
        text.push_str(&piece);
    }
    text.push_str(&decoder.finish().unwrap());
    (text, held)
}

/// A copy of the gen checkpoint's tokenizer files (no weights) in a temporary directory.
fn copied(tmp: &TempDir) -> PathBuf {
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"] {
        std::fs::copy(checkpoint().join(f), dir.join(f)).unwrap();
    }
    dir
}

fn error_of(dir: &Path) -> (String, String) {
    let e = Tokenizer::from_checkpoint(dir).unwrap_err();
    (e.kind().to_string(), e.to_string())
}

#[test]
fn prompts_and_generations_match_transformers() {
    let tok = Tokenizer::from_checkpoint(&checkpoint()).unwrap();
    let record = expected();
    let cases = record["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        let text = if case["chat"].as_bool().unwrap() {
            let rendered = tok.apply_chat_template(prompt).unwrap();
            assert_eq!(rendered, case["rendered"].as_str().unwrap(), "{name}: the chat template's text");
            rendered
        } else {
            prompt.to_string()
        };
        assert_eq!(tok.encode(&text).unwrap(), ids(&case["prompt_ids"]), "{name}: prompt ids");
        assert_eq!(tok.decode(&ids(&case["prompt_ids"]), false).unwrap(), text, "{name}: the prompt decodes to itself");

        let generated = ids(&case["generated_ids"]);
        let want = case["text"].as_str().unwrap();
        assert_eq!(tok.decode(&generated, true).unwrap(), want, "{name}: decoded generation");
        let (got, held) = streamed(&tok, &generated);
        assert_eq!(got, want, "{name}: streamed generation");
        // The recorded text has characters that are not UTF-8 (U+FFFD): some pushes held bytes back.
        assert!(!want.contains('\u{FFFD}') || held > 0, "{name}");
        assert_eq!(generated.last().is_some_and(|&id| tok.is_eos(id)), case["stopped_at_eos"].as_bool().unwrap(), "{name}");
        // bf16's ids: the same decoding, streamed or not.
        let bf16 = ids(&case["bfloat16"]["generated_ids"]);
        assert_eq!(streamed(&tok, &bf16).0, tok.decode(&bf16, true).unwrap(), "{name}: bf16 ids");
    }
}

#[test]
fn eos_ids_and_special_tokens() {
    let tok = Tokenizer::from_checkpoint(&checkpoint()).unwrap();
    let record = expected();
    let eos = ids(&record["eos_token_id"]);
    assert_eq!(tok.eos_ids(), eos.as_slice());
    assert_eq!(tok.eos_ids(), &[399, 397]);
    assert!(eos.iter().all(|&id| tok.is_eos(id)) && !tok.is_eos(398) && !tok.is_eos(0));
    assert_eq!(tok.vocab_size(), 400);
    // Special tokens written in the text are their ids; text around them is split as usual.
    assert_eq!(tok.encode("<|im_start|>").unwrap(), [398]);
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|><|endoftext|>").unwrap();
    assert_eq!((ids[0], ids[ids.len() - 2], ids[ids.len() - 1]), (398, 399, 397));
    assert!((398..=399).chain([397]).all(|id| tok.is_special(id)) && !tok.is_special(0));
    assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>user\nhi<|im_end|><|endoftext|>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");
    // Ids past the tokenizer (the embedding's padding rows) leave no text, as in transformers.
    assert_eq!(tok.decode(&[400, 447], true).unwrap(), "");
}

/// Characters of several bytes are split over byte tokens (the corpus is ASCII): the decoder holds
/// the first bytes back until the character is complete, and skips special tokens in between.
#[test]
fn stream_decoder_holds_incomplete_characters() {
    let tok = Tokenizer::from_checkpoint(&checkpoint()).unwrap();
    let text = "The kernel — naïve café, 日本語 ✓ and 🦀.";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() > text.chars().count() / 2);
    let (got, held) = streamed(&tok, &ids);
    assert_eq!(got, text);
    assert!(held >= 8, "{held} pushes held back");
    let mut decoder = tok.stream_decoder();
    let euro = tok.encode("€").unwrap();
    assert_eq!(euro.len(), 3, "one byte token per byte");
    assert_eq!(decoder.push(euro[0]).unwrap(), "");
    assert_eq!(decoder.push(399).unwrap(), "", "a special token leaves no text");
    assert_eq!(decoder.push(euro[1]).unwrap(), "");
    assert_eq!(decoder.push(euro[2]).unwrap(), "€");
    assert_eq!(decoder.finish().unwrap(), "");
    // Bytes that never make a character: U+FFFD, as decode gives them, from finish at the latest.
    let broken = [euro[0], euro[1]];
    assert_eq!(streamed(&tok, &broken).0, tok.decode(&broken, true).unwrap());
    assert_eq!(tok.decode(&broken, true).unwrap(), "\u{FFFD}");
    let mixed = [euro[1], euro[0], tok.encode("a").unwrap()[0], euro[2], euro[2]];
    assert_eq!(streamed(&tok, &mixed).0, tok.decode(&mixed, true).unwrap());
}

#[test]
fn chat_template_sources() {
    let tmp = TempDir::new("text-template");
    let dir = copied(&tmp);
    // chat_template.jinja takes precedence over tokenizer_config.json's, as in transformers 5; it
    // is rendered with trim_blocks and lstrip_blocks, as transformers renders it.
    // (Jinja2 with transformers' settings renders this template as asserted.)
    let template = "{% for m in messages %}\n  {% if m.role == 'user' %}\n  {{ m.role | upper }}: {{ m.content.strip() }}|{{ eos_token }}\n  {% endif %}\n{% endfor %}\n";
    std::fs::write(dir.join("chat_template.jinja"), template).unwrap();
    let tok = Tokenizer::from_checkpoint(&dir).unwrap();
    assert_eq!(tok.apply_chat_template("  hi ").unwrap(), "  USER: hi|<|im_end|>\n");
    std::fs::write(dir.join("chat_template.jinja"), "{{ raise_exception('no such role') }}").unwrap();
    let e = Tokenizer::from_checkpoint(&dir).unwrap().apply_chat_template("hi").unwrap_err().to_string();
    assert!(e.contains("chat_template.jinja") && e.contains("no such role"), "{e}");
    std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();

    // Named templates: "default" is used.
    let config_path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = serde_json::json!([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages[0].content }}"}]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    assert_eq!(Tokenizer::from_checkpoint(&dir).unwrap().apply_chat_template("x").unwrap(), "Dx");

    // No template: loading works, applying one is an error saying why.
    config.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let tok = Tokenizer::from_checkpoint(&dir).unwrap();
    assert_eq!(tok.encode("The kernel reads").unwrap().len(), 4);
    let e = tok.apply_chat_template("hi").unwrap_err();
    assert_eq!(e.kind(), "InvalidArgument");
    assert!(e.to_string().contains("no chat template") && e.to_string().contains("tokenizer_config.json"), "{e}");
    std::fs::remove_file(&config_path).unwrap();
    let e = Tokenizer::from_checkpoint(&dir).unwrap().apply_chat_template("hi").unwrap_err().to_string();
    assert!(e.contains("neither chat_template.jinja nor"), "{e}");

    // A template that does not parse: an error naming its file.
    config["chat_template"] = serde_json::json!("{% for m in messages %}");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let e = Tokenizer::from_checkpoint(&dir).unwrap().apply_chat_template("hi").unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json: rendering the chat template"), "{e}");
}

#[test]
fn eos_ids_from_the_config_files() {
    let tmp = TempDir::new("text-eos");
    let dir = copied(&tmp);
    let generation = dir.join("generation_config.json");
    std::fs::write(&generation, r#"{"eos_token_id": 5}"#).unwrap();
    assert_eq!(Tokenizer::from_checkpoint(&dir).unwrap().eos_ids(), &[5]);
    // generation_config.json without eos_token_id: config.json's (399).
    std::fs::write(&generation, r#"{"bos_token_id": 397}"#).unwrap();
    assert_eq!(Tokenizer::from_checkpoint(&dir).unwrap().eos_ids(), &[399]);
    std::fs::remove_file(&generation).unwrap();
    assert_eq!(Tokenizer::from_checkpoint(&dir).unwrap().eos_ids(), &[399]);
    // Neither names one: none (generation stops at its length limit).
    std::fs::write(dir.join("config.json"), r#"{"eos_token_id": null}"#).unwrap();
    assert!(Tokenizer::from_checkpoint(&dir).unwrap().eos_ids().is_empty());

    for (bad, shown) in [(r#"{"eos_token_id": "</s>"}"#, "\"</s>\""), (r#"{"eos_token_id": [1, -2]}"#, "[1,-2]"), (r#"{"eos_token_id": 4294967296}"#, "4294967296")] {
        std::fs::write(&generation, bad).unwrap();
        let (kind, e) = error_of(&dir);
        assert_eq!(kind, "InvalidArgument", "{e}");
        assert!(e.contains("generation_config.json") && e.contains(&format!("eos_token_id = {shown}")), "{e}");
    }
    std::fs::write(&generation, "{").unwrap();
    let (_, e) = error_of(&dir);
    assert!(e.contains("generation_config.json: not JSON"), "{e}");
}

#[test]
fn broken_files_are_typed_errors_naming_them() {
    let tmp = TempDir::new("text-errors");
    let dir = copied(&tmp);
    let tokenizer_json = dir.join("tokenizer.json");
    let good = std::fs::read(&tokenizer_json).unwrap();

    std::fs::remove_file(&tokenizer_json).unwrap();
    let (kind, e) = error_of(&dir);
    assert_eq!(kind, "InvalidArgument");
    assert!(e.starts_with("tokenizer: invalid argument: ") && e.contains(&tokenizer_json.display().to_string()) && e.contains("cannot read"), "{e}");

    for (broken, says) in [
        (good[..good.len() / 2].to_vec(), "not a tokenizer"),
        (b"{\"version\": \"1.0\"}".to_vec(), "not a tokenizer"),
        (b"\xff\xfe".to_vec(), "not a tokenizer"),
        (String::from_utf8(good.clone()).unwrap().replace("\"type\": \"BPE\"", "\"type\": \"NoSuchModel\"").into_bytes(), "not a tokenizer"),
    ] {
        std::fs::write(&tokenizer_json, &broken).unwrap();
        let (kind, e) = error_of(&dir);
        assert_eq!(kind, "InvalidArgument", "{e}");
        assert!(e.contains(&tokenizer_json.display().to_string()) && e.contains(says), "{e}");
    }
    std::fs::write(&tokenizer_json, &good).unwrap();

    let config = dir.join("tokenizer_config.json");
    std::fs::write(&config, "[1, 2").unwrap();
    let (kind, e) = error_of(&dir);
    assert_eq!(kind, "InvalidArgument");
    assert!(e.contains("tokenizer_config.json: not JSON"), "{e}");
    std::fs::write(&config, r#"{"chat_template": 7}"#).unwrap();
    let (_, e) = error_of(&dir);
    assert!(e.contains("tokenizer_config.json: chat_template = 7"), "{e}");

    // A directory where a file should be: cannot be read, named.
    std::fs::remove_file(&config).unwrap();
    std::fs::create_dir(&config).unwrap();
    let (_, e) = error_of(&dir);
    assert!(e.contains("tokenizer_config.json: cannot read"), "{e}");
    let (_, e) = error_of(&tmp.path().join("no-such-dir"));
    assert!(e.contains("no-such-dir/tokenizer.json: cannot read"), "{e}");
}
