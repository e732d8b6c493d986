//! A conversation rendered by a checkpoint's chat template, as transformers'
//! `tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=...)` renders it.
//!
//! What the template is given, as transformers gives it (`render_jinja_template`):
//! - `messages`: the list of messages as written, every key kept (role, content, tool_calls,
//!   name, ...) in its order; JSON objects become Python dicts, so `tojson` prints their keys in
//!   the order written.
//! - `tools`: the list of JSON schemas, or `None` when none are given (`{% if tools %}` is false
//!   and `tools is defined` true, as in Python); `documents`: `None`.
//! - `add_generation_prompt`, and the special-token strings of tokenizer_config.json (`bos_token`,
//!   `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token`: transformers'
//!   `special_tokens_map`).
//!
//! With named templates (tokenizer_config.json's list of `{name, template}`) the one named
//! `tool_use` renders a conversation given tools, when there is one; otherwise `default` does.
//!
//! The template runs in minijinja with Jinja2's settings as transformers makes them
//! (`trim_blocks`, `lstrip_blocks`, loop controls, no auto-escaping), transformers' globals and
//! filters (`raise_exception`, its `tojson`: src/text/python.rs), the Python string and dict
//! methods (minijinja-contrib's pycompat), and values printed as Python prints them (`None`,
//! `True`, dicts as `{'a': 1}`), both by `{{ x }}` and by the `string` filter. Jinja2's `~`
//! operator still joins values as minijinja writes them (`true`, not `True`).
//!
//! The conversation is checked before rendering, so a mistake is named rather than rendered into
//! a prompt: the messages must be a non-empty list (transformers refuses an empty one too) of
//! objects, each with a string `role`; an assistant's `tool_calls`, when present, a list of
//! objects whose `arguments` (in `function`, or in the call itself) are an object or a string
//! (a JSON string is rendered as the string it is: `tojson` quotes it, as in transformers); the
//! tools a list of objects. Which roles a template accepts is the template's to say
//! (`raise_exception`). Every error is [`Error::InvalidArgument`] with op `"chat template"`,
//! naming the message and the value, or the template's file and what it raised.

use super::python;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

const OP: &str = "chat template";

/// The special-token names transformers passes to a chat template (`SPECIAL_TOKENS_ATTRIBUTES`).
pub(crate) const TEMPLATE_TOKENS: [&str; 7] = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// A checkpoint's chat template: one, or several by name (transformers' template dict).
#[derive(Debug, Clone)]
pub(crate) enum Templates {
    One(String),
    Named(Vec<(String, String)>),
}

impl Templates {
    /// The template transformers' `get_chat_template` chooses: with tools, `tool_use` when there
    /// is one; otherwise `default`.
    fn select(&self, with_tools: bool) -> std::result::Result<&str, String> {
        match self {
            Templates::One(source) => Ok(source),
            Templates::Named(named) => {
                let find = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str());
                with_tools.then(|| find("tool_use")).flatten().or_else(|| find("default")).ok_or_else(|| {
                    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
                    format!("named chat templates {names:?} but none named \"default\"{}", if with_tools { " or \"tool_use\"" } else { "" })
                })
            }
        }
    }
}

/// A conversation as transformers takes it: the messages and, optionally, the tools (JSON
/// schemas) the template may describe to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// A list of message objects (`{"role": "user", "content": "..."}`, ...).
    pub messages: serde_json::Value,
    /// A list of tool schemas, or `None`.
    pub tools: Option<serde_json::Value>,
}

impl Conversation {
    /// One user message.
    pub fn user(content: &str) -> Conversation {
        Conversation { messages: serde_json::json!([{"role": "user", "content": content}]), tools: None }
    }

    /// A conversation from JSON text: a list of messages, or an object `{"messages": [...],
    /// "tools": [...]}` (`tools` may be left out or null; no other key is accepted). `origin`
    /// names the text in errors (a file name).
    pub fn from_json(text: &str, origin: &str) -> Result<Conversation> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::invalid(OP, format!("{origin}: not JSON: {e}")))?;
        let conversation = match value {
            messages @ serde_json::Value::Array(_) => Conversation { messages, tools: None },
            serde_json::Value::Object(mut object) => {
                let messages = object
                    .remove("messages")
                    .ok_or_else(|| Error::invalid(OP, format!("{origin}: an object without \"messages\"; expected a list of messages or {{\"messages\": [...], \"tools\": [...]}}")))?;
                let tools = object.remove("tools").filter(|t| !t.is_null());
                if let Some(key) = object.keys().next() {
                    return Err(Error::invalid(OP, format!("{origin}: unexpected key {key:?}; expected only \"messages\" and \"tools\"")));
                }
                Conversation { messages, tools }
            }
            other => return Err(Error::invalid(OP, format!("{origin}: {}, expected a list of messages or {{\"messages\": [...], \"tools\": [...]}}", shown(&other)))),
        };
        check(&conversation.messages, conversation.tools.as_ref()).map_err(|e| match e {
            Error::InvalidArgument { op, detail } => Error::InvalidArgument { op, detail: format!("{origin}: {detail}") },
            e => e,
        })?;
        Ok(conversation)
    }

    /// [`from_json`](Self::from_json) of a file's text.
    pub fn from_file(path: &Path) -> Result<Conversation> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::invalid(OP, format!("{}: cannot read: {e}", path.display())))?;
        Conversation::from_json(&text, &path.display().to_string())
    }

    /// Makes `content` the system message: it replaces the first message when that is a system
    /// message, else it is put first (so the template's default system prompt is not used).
    pub fn set_system(&mut self, content: &str) {
        let system = serde_json::json!({"role": "system", "content": content});
        if let serde_json::Value::Array(messages) = &mut self.messages {
            match messages.first_mut() {
                Some(first) if first["role"] == "system" => *first = system,
                _ => messages.insert(0, system),
            }
        }
    }
}

/// `v` as JSON, cut to 120 characters, for error messages.
fn shown(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The checks of the module docs.
pub(crate) fn check(messages: &serde_json::Value, tools: Option<&serde_json::Value>) -> Result<()> {
    let bad = |detail: String| Err(Error::invalid(OP, detail));
    let list = match messages.as_array() {
        Some(list) => list,
        None => return bad(format!("messages = {}, expected a list of messages", shown(messages))),
    };
    if list.is_empty() {
        return bad("messages is an empty list: a conversation needs at least one message".into());
    }
    for (i, message) in list.iter().enumerate() {
        let Some(object) = message.as_object() else {
            return bad(format!("messages[{i}] = {}, expected an object with a role", shown(message)));
        };
        match object.get("role") {
            Some(serde_json::Value::String(_)) => {}
            None => return bad(format!("messages[{i}] has no role: {}", shown(message))),
            Some(role) => return bad(format!("messages[{i}].role = {}, expected a string", shown(role))),
        }
        let calls = match object.get("tool_calls") {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::Array(calls)) => calls,
            Some(other) => return bad(format!("messages[{i}].tool_calls = {}, expected a list of tool calls", shown(other))),
        };
        for (j, call) in calls.iter().enumerate() {
            if !call.is_object() {
                return bad(format!("messages[{i}].tool_calls[{j}] = {}, expected an object", shown(call)));
            }
            // {"type": "function", "function": {"name", "arguments"}}, or the function's keys alone.
            let (path, function) = match call.get("function") {
                Some(function) if function.is_object() => ("function.", function),
                Some(other) => return bad(format!("messages[{i}].tool_calls[{j}].function = {}, expected an object", shown(other))),
                None => ("", call),
            };
            match function.get("arguments") {
                None | Some(serde_json::Value::Object(_) | serde_json::Value::String(_)) => {}
                Some(other) => return bad(format!("messages[{i}].tool_calls[{j}].{path}arguments = {}, expected an object or a JSON string", shown(other))),
            }
        }
    }
    if let Some(tools) = tools {
        let Some(list) = tools.as_array() else {
            return bad(format!("tools = {}, expected a list of tool schemas", shown(tools)));
        };
        if let Some((k, tool)) = list.iter().enumerate().find(|(_, t)| !t.is_object()) {
            return bad(format!("tools[{k}] = {}, expected a JSON schema (an object)", shown(tool)));
        }
    }
    Ok(())
}

/// minijinja with the settings, globals, filters and printing of the module docs.
fn environment<'source>() -> Result<minijinja::Environment<'source>> {
    let mut env = minijinja::Environment::new();
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.trim_blocks(true).lstrip_blocks(true);
    env.set_syntax(syntax.build().map_err(|e| Error::invalid(OP, format!("syntax settings: {e}")))?);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // transformers' templates call raise_exception(message) to refuse a conversation.
    env.add_function("raise_exception", |message: String| -> std::result::Result<minijinja::Value, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
    });
    env.add_filter("tojson", python::tojson);
    env.add_filter("string", |value: minijinja::Value| minijinja::Value::from(python::python_str(&value).unwrap_or_else(|| value.to_string())));
    env.set_formatter(|out, state, value| match python::python_str(value) {
        Some(text) => out.write_str(&text).map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())),
        None => minijinja::escape_formatter(out, state, value),
    });
    Ok(env)
}

/// The template's text for `messages` and `tools` (module docs). `origin` names the template in
/// errors (its file).
pub(crate) fn render(
    templates: &Templates,
    origin: &str,
    tokens: &BTreeMap<String, String>,
    messages: &serde_json::Value,
    tools: Option<&serde_json::Value>,
    add_generation_prompt: bool,
) -> Result<String> {
    check(messages, tools)?;
    let source = templates.select(tools.is_some()).map_err(|why| Error::invalid(OP, format!("{origin}: {why}")))?;
    let mut context: BTreeMap<&str, minijinja::Value> = tokens.iter().map(|(k, v)| (k.as_str(), minijinja::Value::from(v.as_str()))).collect();
    context.insert("messages", minijinja::Value::from(minijinja::value::Serde(messages)));
    context.insert("tools", tools.map(|t| minijinja::Value::from(minijinja::value::Serde(t))).unwrap_or(minijinja::Value::from(())));
    context.insert("documents", minijinja::Value::from(()));
    context.insert("add_generation_prompt", add_generation_prompt.into());
    let failed = |e: minijinja::Error| {
        let mut detail = format!("{origin}: rendering the chat template: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            detail.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Error::invalid(OP, detail)
    };
    // Named after its file, so a syntax error or a raise_exception says "(in FILE:LINE)".
    let env = environment()?;
    env.template_from_named_str(origin, source).map_err(failed)?.render(context).map_err(failed)
}
