//! Chat templates rendered as transformers renders them (src/text/chat.rs), on the CPU: the
//! conversations of golden/data/chat/expected.json (golden/gen_chat.py: transformers'
//! `apply_chat_template` with the tiny gen checkpoint's tokenizer) rendered byte for byte and
//! encoded id for id, and the typed errors of conversations that are refused.

mod common;
use common::TempDir;
use qwen_kernels::golden::file::data_dir;
use qwen_kernels::text::{Conversation, Tokenizer};
use serde_json::json;
use std::path::PathBuf;

fn checkpoint() -> PathBuf {
    data_dir().join("tiny-qwen2-gen/checkpoint")
}

fn expected() -> serde_json::Value {
    let path = data_dir().join("chat/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (regenerate: python3 golden/gen_chat.py)", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The tokenizer a case names: the checkpoint's own template, or one of golden/data/chat's.
fn tokenizer_for(record: &serde_json::Value, template: &str) -> Tokenizer {
    let tok = Tokenizer::from_checkpoint(&checkpoint()).unwrap();
    match record["templates"][template].as_str() {
        None => tok,
        Some(file) => {
            let path = data_dir().join(file.strip_prefix("golden/data/").unwrap());
            tok.with_chat_template(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        }
    }
}

fn tools_of(case: &serde_json::Value) -> Option<&serde_json::Value> {
    Some(&case["tools"]).filter(|t| !t.is_null())
}

#[test]
fn conversations_render_as_in_transformers() {
    let record = expected();
    let cases = record["cases"].as_array().unwrap();
    assert!(cases.len() >= 12, "{} cases", cases.len());
    let mut rendered_cases = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let tok = tokenizer_for(&record, case["template"].as_str().unwrap());
        let (messages, tools) = (&case["messages"], tools_of(case));
        let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
        let got = tok.render_chat(messages, tools, add_generation_prompt);
        if let Some(error) = case.get("error") {
            // transformers' TemplateError from raise_exception: ours names the op and says the same.
            let e = got.expect_err(name);
            assert_eq!((e.kind(), error["type"].as_str().unwrap()), ("InvalidArgument", "TemplateError"), "{name}: {e}");
            let said = error["message"].as_str().unwrap();
            assert!(e.to_string().starts_with("chat template: invalid argument: the chat template given: ") && e.to_string().contains(said), "{name}: {e}");
            continue;
        }
        let want = case["rendered"].as_str().unwrap();
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        if got != want {
            let at = got.chars().zip(want.chars()).position(|(a, b)| a != b).unwrap_or(got.chars().count().min(want.chars().count()));
            let from = |s: &str| s.chars().skip(at.saturating_sub(40)).take(80).collect::<String>();
            panic!("{name}: the rendered text differs from transformers' at character {at}:\nours:   {:?}\ntheirs: {:?}", from(&got), from(want));
        }
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| u32::try_from(x.as_u64().unwrap()).unwrap()).collect();
        assert_eq!(tok.encode_chat(messages, tools, add_generation_prompt).unwrap(), ids, "{name}: ids");
        rendered_cases += 1;
    }
    assert!(rendered_cases >= 12, "{rendered_cases} rendered cases");
}

/// The goldens hold the traps the renderer must not fall into, so the comparison above can fail on
/// them: characters Jinja2's and minijinja's own tojson escape for HTML, keys out of alphabetical
/// order, Python's printing of values, and a JSON string given as arguments.
#[test]
fn goldens_hold_the_traps() {
    let record = expected();
    let case = |name: &str| record["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no case {name}"))["rendered"].as_str().unwrap().to_string();
    let tools = case("tools_default_system");
    assert!(tools.contains(r#"{"type": "function", "function": {"name": "get_weather", "description": "The weather at a place, in <units> & 'quotes' — “curly” too""#), "{tools}");
    assert!(tools.contains(r#""days": {"type": "integer", "minimum": 1, "maximum": 16}}, "required""#) && tools.contains(r#""default": 2.5e-07"#), "{tools}");
    let calls = case("string_arguments_and_grouped_replies");
    assert!(calls.contains(r#""arguments": "{\"query\": \"kernels <fast> & 'small'\", \"limit\": 2}"}"#), "{calls}");
    assert!(calls.contains("</tool_response>\n<tool_response>") && calls.matches("<|im_start|>user").count() == 2, "grouped replies: {calls}");
    let bare = case("bare_call_and_dict_reply");
    assert!(bare.contains(r#""limit": 1e+16, "exact": true, "filter": null"#) && bare.contains("{'temperature': 21.5, 'unit': 'celsius', 'sunny': True, 'warning': None, 'hours': [6, 7.25]}"), "{bare}");
    let tricky = case("quotes_markup_jinja");
    assert!(tricky.contains("{{ x }} {% if y %}{# c #}") && !tricky.contains("<|im_start|>assistant\n<|im_start|>"), "{tricky}");
    assert!(case("user_only_default_system").starts_with("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"));
    assert!(case("multi_turn_no_generation_prompt").ends_with("The keys and values.<|im_end|>\n"));
}

#[test]
fn conversations_from_json() {
    let list = r#"[{"role": "user", "content": "hi", "z": 1, "a": 2}]"#;
    let c = Conversation::from_json(list, "list.json").unwrap();
    assert_eq!(c, Conversation { messages: json!([{"role": "user", "content": "hi", "z": 1, "a": 2}]), tools: None });
    // Keys keep the order written (what tojson prints).
    assert_eq!(c.messages[0].as_object().unwrap().keys().collect::<Vec<_>>(), ["role", "content", "z", "a"]);
    let object = r#"{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}"#;
    let c = Conversation::from_json(object, "o.json").unwrap();
    assert_eq!(c.tools, Some(json!([{"type": "function", "function": {"name": "f"}}])));
    assert_eq!(Conversation::from_json(r#"{"messages": [{"role": "user"}], "tools": null}"#, "o.json").unwrap().tools, None);

    let mut c = Conversation::user("hi");
    c.set_system("Be brief.");
    assert_eq!(c.messages, json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]));
    c.set_system("Be kind.");
    assert_eq!(c.messages, json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]));

    for (text, says) in [
        ("[{\"role\": \"user\"", "bad.json: not JSON"),
        ("\"hello\"", "bad.json: \"hello\", expected a list of messages or {\"messages\""),
        ("{\"tools\": []}", "bad.json: an object without \"messages\""),
        ("{\"messages\": [{\"role\": \"user\"}], \"tool\": []}", "bad.json: unexpected key \"tool\""),
        ("[]", "bad.json: messages is an empty list"),
        ("[{\"content\": \"hi\"}]", "bad.json: messages[0] has no role: {\"content\":\"hi\"}"),
    ] {
        let e = Conversation::from_json(text, "bad.json").unwrap_err();
        assert_eq!(e.kind(), "InvalidArgument", "{e}");
        assert!(e.to_string().starts_with("chat template: invalid argument: ") && e.to_string().contains(says), "{text}: {e}");
    }
    let tmp = TempDir::new("chat-json");
    let e = Conversation::from_file(&tmp.path().join("missing.json")).unwrap_err().to_string();
    assert!(e.contains("missing.json: cannot read"), "{e}");
}

/// A conversation the renderer refuses: a typed error naming the message and the value, before
/// the template runs.
#[test]
fn bad_conversations_are_typed_errors_naming_the_value() {
    let tok = Tokenizer::from_checkpoint(&checkpoint()).unwrap();
    let user = json!({"role": "user", "content": "hi"});
    let call = |arguments: serde_json::Value| json!({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": arguments}}]});
    let cases: [(serde_json::Value, Option<serde_json::Value>, &str); 11] = [
        (json!([]), None, "messages is an empty list"),
        (json!({"role": "user"}), None, "messages = {\"role\":\"user\"}, expected a list of messages"),
        (json!([user, "hello"]), None, "messages[1] = \"hello\", expected an object with a role"),
        (json!([{"content": "no role"}]), None, "messages[0] has no role: {\"content\":\"no role\"}"),
        (json!([{"role": 3, "content": "x"}]), None, "messages[0].role = 3, expected a string"),
        (json!([user, call(json!(5))]), None, "messages[1].tool_calls[0].function.arguments = 5, expected an object or a JSON string"),
        (json!([user, call(json!([1, 2]))]), None, "messages[1].tool_calls[0].function.arguments = [1,2]"),
        (json!([user, {"role": "assistant", "tool_calls": [{"name": "f", "arguments": null}]}]), None, "messages[1].tool_calls[0].arguments = null"),
        (json!([user, {"role": "assistant", "tool_calls": {"name": "f"}}]), None, "messages[1].tool_calls = {\"name\":\"f\"}, expected a list of tool calls"),
        (json!([user]), Some(json!({"type": "function"})), "tools = {\"type\":\"function\"}, expected a list of tool schemas"),
        (json!([user]), Some(json!([{"type": "function"}, "get_weather"])), "tools[1] = \"get_weather\", expected a JSON schema (an object)"),
    ];
    for (messages, tools, says) in cases {
        let e = tok.render_chat(&messages, tools.as_ref(), true).unwrap_err();
        assert_eq!(e.kind(), "InvalidArgument", "{e}");
        assert!(e.to_string().starts_with("chat template: invalid argument: ") && e.to_string().contains(says), "{messages}: {e}");
    }
    // Arguments as an object or a string, and tool calls without arguments, are rendered.
    for arguments in [json!({"a": 1}), json!("{\"a\": 1}")] {
        assert!(tok.render_chat(&json!([user, call(arguments)]), None, true).is_ok());
    }
    // A template that fails while rendering names its file and what failed.
    let e = tok.with_chat_template("{{ messages[0].content + 1 }}").render_chat(&json!([user]), None, true).unwrap_err().to_string();
    assert!(e.contains("the chat template given: rendering the chat template"), "{e}");
}

/// Named templates: `tool_use` renders a conversation given tools (an empty list too: tools is
/// not None), `default` the others, as transformers' get_chat_template chooses; a template read
/// from chat_template.jinja renders the same as one given.
#[test]
fn named_templates_and_template_files() {
    let tmp = TempDir::new("chat-named");
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(checkpoint().join(f), dir.join(f)).unwrap();
    }
    let config_path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = json!([{"name": "default", "template": "D{{ tools }}"}, {"name": "tool_use", "template": "T{{ tools | length }}"}]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let tok = Tokenizer::from_checkpoint(&dir).unwrap();
    let messages = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(tok.render_chat(&messages, None, true).unwrap(), "DNone");
    assert_eq!(tok.render_chat(&messages, Some(&json!([{"name": "f"}])), true).unwrap(), "T1");
    assert_eq!(tok.render_chat(&messages, Some(&json!([])), true).unwrap(), "T0");
    config["chat_template"] = json!([{"name": "tool_use", "template": "T"}]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let tok = Tokenizer::from_checkpoint(&dir).unwrap();
    assert_eq!(tok.render_chat(&messages, Some(&json!([])), true).unwrap(), "T");
    let e = tok.render_chat(&messages, None, true).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json: named chat templates [\"tool_use\"] but none named \"default\""), "{e}");
    config["chat_template"] = json!([{"name": "default"}]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let e = Tokenizer::from_checkpoint(&dir).unwrap_err().to_string();
    assert!(e.contains("chat_template is a list whose items are not all"), "{e}");

    let record = expected();
    let case = record["cases"].as_array().unwrap().iter().find(|c| c["name"] == "string_arguments_and_grouped_replies").unwrap();
    std::fs::copy(data_dir().join("chat/template.jinja"), dir.join("chat_template.jinja")).unwrap();
    let tok = Tokenizer::from_checkpoint(&dir).unwrap();
    assert_eq!(tok.render_chat(&case["messages"], tools_of(case), true).unwrap(), case["rendered"].as_str().unwrap());
}
