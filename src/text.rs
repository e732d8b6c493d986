//! Text in and out of a checkpoint's model: the tokenizer, the chat template and the ids generation
//! stops at, read from the checkpoint directory as transformers reads them
//! (`AutoTokenizer.from_pretrained(dir)`, `apply_chat_template`, `GenerationConfig.from_pretrained`).
//!
//! Files of the checkpoint directory, and what each is read for:
//! - `tokenizer.json` (required): the whole tokenizer as the `tokenizers` library serializes it,
//!   which is what transformers' fast tokenizer runs: the normalizer (NFC for Qwen2), the
//!   pre-tokenizer (Qwen2: a regex split, then ByteLevel's byte-to-character map), the BPE
//!   vocabulary and merges, the added tokens (`<|endoftext|>`, `<|im_start|>`, ...) with which of
//!   them are special, and the decoder (ByteLevel: characters back to bytes, then UTF-8). Read by the
//!   `tokenizers` crate itself, so encoding and decoding are that library's, not a re-implementation.
//!   The slow tokenizer's files (`vocab.json`, `merges.txt`) are not read.
//! - `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template` (a string, or a list of
//!   `{name, template}` of which `default` is used), as transformers 5 looks for it: the Jinja
//!   template that turns messages into the prompt text (a list of named templates is kept whole:
//!   `tool_use` renders conversations given tools, as in transformers). Also read from
//!   `tokenizer_config.json`: the special-token strings (`bos_token`, `eos_token`, `pad_token`,
//!   ...), which transformers passes to the template. Its `clean_up_tokenization_spaces` is not
//!   applied (Qwen2's is false).
//! - `generation_config.json`'s `eos_token_id` (an id or a list of ids), else `config.json`'s: the
//!   ids greedy generation stops at (Qwen2.5-Instruct: `<|im_end|>` and `<|endoftext|>`). With
//!   neither, there is none, and generation stops only at its length limit, as in transformers.
//!
//! Encoding adds no special tokens beyond those the text spells out: `<|im_start|>` written in the
//! text is its one id (added tokens are matched before the rest of the text is split), as
//! transformers' `tokenizer(text)` gives for Qwen2, whose tokenizer adds no BOS.
//!
//! Any conversation (system, user, assistant and tool messages, tool calls, tool schemas) is
//! rendered by the chat template as transformers' `apply_chat_template` renders it, byte for
//! byte: [`Tokenizer::render_chat`], [`Tokenizer::encode_chat`] and [`Conversation`]; how, and
//! what is checked first, is in the docs of `src/text/chat.rs`.
//!
//! Every error is [`Error::InvalidArgument`] naming the file and what was wrong with it, with op
//! `"tokenizer"` for the checkpoint's files and `"chat template"` for a conversation and its
//! rendering.

mod chat;
mod python;

pub use chat::Conversation;

use crate::error::{Error, Result};
use chat::Templates;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

const OP: &str = "tokenizer";

/// A checkpoint's tokenizer, chat template and EOS ids (see the module docs for the files).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer.json`'s path, for error messages.
    path: PathBuf,
    /// The chat template and where it came from (a file, for error messages), or why there is none.
    chat_template: std::result::Result<(Templates, String), String>,
    /// `bos_token`, `eos_token`, ... of tokenizer_config.json, passed to the template.
    template_tokens: BTreeMap<String, String>,
    eos: Vec<u32>,
    /// Ids of the added tokens marked special: skipped by `decode(.., true)` and [`StreamDecoder`].
    special: HashSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab", &self.vocab_size())
            .field("chat_template", &self.chat_template.as_ref().map(|(_, origin)| origin))
            .field("eos", &self.eos)
            .finish()
    }
}

/// A file of the checkpoint read as JSON: `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::invalid(OP, format!("{}: cannot read: {e}", path.display()))),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::invalid(OP, format!("{}: not JSON: {e}", path.display())))
}

/// `eos_token_id` of a config file: `None` when absent or null; an id or a list of ids otherwise.
fn eos_ids_of(v: &serde_json::Value, path: &Path) -> Result<Option<Vec<u32>>> {
    let bad = |x: &serde_json::Value| Error::invalid(OP, format!("{}: eos_token_id = {x}, expected a token id or a list of token ids", path.display()));
    let id = |x: &serde_json::Value| x.as_u64().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| bad(&v["eos_token_id"]));
    match &v["eos_token_id"] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Array(items) => items.iter().map(id).collect::<Result<Vec<u32>>>().map(Some),
        x => id(x).map(|i| Some(vec![i])),
    }
}

/// A special token's string in tokenizer_config.json: a string, or (older files) an object with
/// `content`.
fn token_string(v: &serde_json::Value) -> Option<String> {
    v.as_str().or_else(|| v["content"].as_str()).map(str::to_string)
}

impl Tokenizer {
    /// Reads the tokenizer of the checkpoint directory `dir` (the files and what each is read for
    /// are in the module docs). Only `tokenizer.json` must exist; a file that exists but cannot
    /// be read or parsed is an error naming it.
    pub fn from_checkpoint(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::invalid(OP, format!("{}: cannot read: {e}", path.display())))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| Error::invalid(OP, format!("{}: not a tokenizer: {e}", path.display())))?;
        let special = inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();

        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?;
        let mut template_tokens = BTreeMap::new();
        if let Some(c) = &config {
            for key in chat::TEMPLATE_TOKENS {
                if let Some(s) = token_string(&c[key]) {
                    template_tokens.insert(key.to_string(), s);
                }
            }
        }
        let jinja_path = dir.join("chat_template.jinja");
        let config_origin = config_path.display().to_string();
        let chat_template = match std::fs::read_to_string(&jinja_path) {
            Ok(t) => Ok((Templates::One(t), jinja_path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match config.as_ref().map(|c| &c["chat_template"]) {
                None => Err(format!("the checkpoint has neither chat_template.jinja nor {config_origin}")),
                Some(serde_json::Value::Null) => Err(format!("{config_origin} has no chat_template and there is no chat_template.jinja")),
                Some(serde_json::Value::String(t)) => Ok((Templates::One(t.clone()), config_origin)),
                Some(serde_json::Value::Array(named)) => {
                    // transformers' named templates, [{name, template}, ...]: chosen when rendering.
                    let pair = |t: &serde_json::Value| Some((t["name"].as_str()?.to_string(), t["template"].as_str()?.to_string()));
                    match named.iter().map(pair).collect::<Option<Vec<_>>>() {
                        Some(named) => Ok((Templates::Named(named), config_origin)),
                        None => return Err(Error::invalid(OP, format!("{config_origin}: chat_template is a list whose items are not all {{\"name\": string, \"template\": string}}"))),
                    }
                }
                Some(other) => return Err(Error::invalid(OP, format!("{config_origin}: chat_template = {other}, expected a string or a list of named templates"))),
            },
            Err(e) => return Err(Error::invalid(OP, format!("{}: cannot read: {e}", jinja_path.display()))),
        };

        // What generate stops at: generation_config.json's eos_token_id, else config.json's.
        let mut eos = Vec::new();
        for name in ["generation_config.json", "config.json"] {
            let p = dir.join(name);
            if let Some(ids) = read_json(&p)?.map(|v| eos_ids_of(&v, &p)).transpose()?.flatten() {
                eos = ids;
                break;
            }
        }
        Ok(Tokenizer { inner, path, chat_template, template_tokens, eos, special })
    }

    /// Ids the tokenizer knows: the vocabulary and the added tokens (a model's embedding may have
    /// more rows, as padding).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of `text`, with no special tokens added (those written in the text are kept, each
    /// its one id).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, false).map_err(|e| Error::invalid(OP, format!("{}: encoding {} bytes of text: {e}", self.path.display(), text.len())))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; with `skip_special`, special tokens (`<|im_end|>`, ...) leave no text, as
    /// transformers' `decode(ids, skip_special_tokens=True)`. Ids the tokenizer does not know (a
    /// padded embedding's rows) leave no text either, as in transformers. Bytes that are not UTF-8
    /// become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::invalid(OP, format!("{}: decoding {} ids: {e}", self.path.display(), ids.len())))
    }

    /// The same tokenizer with `source` as its chat template, in place of the checkpoint's (as
    /// transformers' `apply_chat_template(..., chat_template=source)`).
    pub fn with_chat_template(self, source: impl Into<String>) -> Tokenizer {
        Tokenizer { chat_template: Ok((Templates::One(source.into()), "the chat template given".into())), ..self }
    }

    /// The text of a conversation: the chat template rendered with `messages` (a list of message
    /// objects), `tools` (a list of JSON schemas, or `None`) and `add_generation_prompt`, as
    /// transformers' `apply_chat_template(messages, tools=tools, add_generation_prompt=...,
    /// tokenize=False)` gives it (see `src/text/chat.rs` for what is checked first). The text
    /// still has to be encoded ([`encode`](Self::encode), or [`encode_chat`](Self::encode_chat)).
    pub fn render_chat(&self, messages: &serde_json::Value, tools: Option<&serde_json::Value>, add_generation_prompt: bool) -> Result<String> {
        let (templates, origin) = self.chat_template.as_ref().map_err(|why| Error::invalid("chat template", format!("no chat template: {why}")))?;
        chat::render(templates, origin, &self.template_tokens, messages, tools, add_generation_prompt)
    }

    /// The ids of [`render_chat`](Self::render_chat)'s text, with no special tokens added beyond
    /// those it spells out: transformers' `apply_chat_template(..., tokenize=True)`.
    pub fn encode_chat(&self, messages: &serde_json::Value, tools: Option<&serde_json::Value>, add_generation_prompt: bool) -> Result<Vec<u32>> {
        self.encode(&self.render_chat(messages, tools, add_generation_prompt)?)
    }

    /// The prompt text of one user message: the chat template rendered with
    /// `messages = [{role: "user", content: user}]` and `add_generation_prompt = true`. The text
    /// still has to be encoded ([`encode`](Self::encode)); its special-token strings become their ids.
    pub fn apply_chat_template(&self, user: &str) -> Result<String> {
        self.render_chat(&Conversation::user(user).messages, None, true)
    }

    /// The ids generation stops at (module docs): empty when the checkpoint names none.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Whether generation stops at `id`.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// Whether `id` is an added token marked special (left out of decoded text).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// A decoder that gives out the text of generated ids as they come.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder { tokenizer: self, prefix: Vec::new(), prefix_text: String::new(), pending: Vec::new() }
    }
}

/// Gives out the text of ids one at a time, as generation produces them: [`push`](Self::push)
/// returns the text a token completes, and what all pushes and a final [`finish`](Self::finish)
/// return, joined, is `decode(ids, true)` of all the ids.
///
/// A token's text is not always complete alone: a byte-level token may hold the first bytes of a
/// character whose last bytes come with the next token. The decoder holds ids back while their
/// text ends in U+FFFD (an incomplete character decodes to it) and gives it out once a later token
/// completes it. Each step decodes the ids held back after the ids of the text given out last
/// (and takes away that text), so a decoder that treats the start of a text differently (strips
/// a leading space) gives the text it gives inside a sequence. Bytes that never form a character
/// are given out as U+FFFD by [`finish`](Self::finish), as `decode` gives them. Special tokens
/// leave no text.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    /// The ids of the text given out last, decoded again before the held ids.
    prefix: Vec<u32>,
    /// `prefix` decoded alone.
    prefix_text: String,
    /// Ids pushed since, whose text is not given out yet.
    pending: Vec<u32>,
}

impl StreamDecoder<'_> {
    /// The text completed by `id`: empty while it is held back (or for a special token).
    pub fn push(&mut self, id: u32) -> Result<String> {
        if self.tokenizer.is_special(id) {
            return Ok(String::new());
        }
        self.pending.push(id);
        let text = self.decode_pending()?;
        match text.strip_prefix(self.prefix_text.as_str()) {
            Some(new) if !new.is_empty() && !new.ends_with('\u{FFFD}') => {
                let new = new.to_string();
                self.prefix = std::mem::take(&mut self.pending);
                self.prefix_text = self.tokenizer.decode(&self.prefix, true)?;
                Ok(new)
            }
            _ => Ok(String::new()),
        }
    }

    /// The text of the ids still held back (an incomplete character at the end decodes to
    /// U+FFFD, as in `decode`); the decoder then goes on from there.
    pub fn finish(&mut self) -> Result<String> {
        if self.pending.is_empty() {
            return Ok(String::new());
        }
        let text = self.decode_pending()?;
        let new = match text.strip_prefix(self.prefix_text.as_str()) {
            Some(new) => new.to_string(),
            None => self.tokenizer.decode(&self.pending, true)?,
        };
        self.prefix = std::mem::take(&mut self.pending);
        self.prefix_text = self.tokenizer.decode(&self.prefix, true)?;
        Ok(new)
    }

    /// The text of the prefix's ids followed by the held ids.
    fn decode_pending(&self) -> Result<String> {
        let ids: Vec<u32> = self.prefix.iter().chain(&self.pending).copied().collect();
        self.tokenizer.decode(&ids, true)
    }
}
