//! Values written as Python writes them, for chat templates rendered as transformers renders them:
//! - [`tojson`]: transformers' `tojson` filter, which replaces Jinja2's (that one escapes `<`, `>`,
//!   `&` and `'` for HTML) with `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//!   sort_keys=False)` (transformers/utils/chat_template_utils.py, `_compile_jinja_template`), taking
//!   those four arguments by position or by name. Python's defaults: `", "` between items and
//!   `": "` after keys; with an indent, `","` between items, each item on its own line. Keys keep
//!   their order unless `sort_keys`; floats are Python's `repr` (`1e-05`, `1e+16`, `2.0`); non-ASCII
//!   characters are written as they are unless `ensure_ascii`, which writes `\uXXXX` (surrogate
//!   pairs above U+FFFF) for every character outside `' '..='~'`.
//! - [`python_str`]: `str(x)`, which is what Jinja2 prints for `{{ x }}` and what its `string`
//!   filter gives: `None`, `True`, `False`, floats as `repr`, lists and dicts as their `repr`
//!   (`{'a': 1, 'b': [True, None]}`).
//!
//! Known differences from Python, which no chat template of a Qwen2 checkpoint meets: NaN and
//! infinities are written as `null` by `tojson` (Python writes `NaN`, `Infinity`; JSON input cannot
//! hold them), so is an undefined value (Python raises), integers beyond 64 bits are floats, and
//! `repr` of a string escapes the ASCII control characters but writes every other character as it
//! is (Python also escapes the non-printable ones beyond ASCII, such as U+00A0 and U+2028).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};
use std::io;

/// Python's `repr(float)`: the shortest digits that read back to `x`, in positional notation when
/// the decimal exponent is in -4..16 (with `.0` when there is no fraction), else `d.dddde±XX`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` and `{}` give the shortest round-trip digits, as Python's repr does.
    let scientific = format!("{x:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} writes an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes an integer exponent");
    if (-4..16).contains(&exponent) {
        let positional = format!("{x}");
        if positional.contains('.') { positional } else { positional + ".0" }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// `json.dumps`' layout: the separators, the indent (`None`: one line) and `ensure_ascii`.
struct PythonFormatter {
    item_separator: String,
    key_separator: String,
    indent: Option<String>,
    ensure_ascii: bool,
    depth: usize,
    /// Whether the innermost open container has had an item (an empty one closes on its line).
    has_items: Vec<bool>,
}

impl PythonFormatter {
    fn newline<W: ?Sized + io::Write>(&self, w: &mut W, depth: usize) -> io::Result<()> {
        if let Some(indent) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..depth {
                w.write_all(indent.as_bytes())?;
            }
        }
        Ok(())
    }

    fn open<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_items.push(false);
        w.write_all(bracket)
    }

    fn close<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth -= 1;
        if self.has_items.pop() == Some(true) {
            self.newline(w, self.depth)?;
        }
        w.write_all(bracket)
    }

    fn item<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if let Some(has) = self.has_items.last_mut() {
            *has = true;
        }
        if !first {
            w.write_all(self.item_separator.as_bytes())?;
        }
        self.newline(w, self.depth)
    }
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(float_repr(value).as_bytes())
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        // Control characters, '"' and '\\' are escaped by the serializer before fragments are
        // written; here the rest of what Python's ensure_ascii escapes: DEL and all non-ASCII.
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.item(w, first)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(self.key_separator.as_bytes())
    }
}

/// Sorts the keys of every object in `v` (Python's `sort_keys`: by code point, which is the
/// byte order of UTF-8).
fn sort_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

fn bad_argument(name: &str, value: &Value, expected: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: {name} = {value}, expected {expected}"))
}

/// transformers' `tojson` filter (module docs): `value | tojson(ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, each argument by position or by name.
pub fn tojson(value: &Value, args: &[Value], kwargs: Kwargs) -> Result<Value, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(Error::new(ErrorKind::TooManyArguments, format!("tojson takes at most {} arguments, {} given", NAMES.len(), args.len())));
    }
    let mut given: [Option<Value>; 4] = Default::default();
    for (i, name) in NAMES.iter().enumerate() {
        let by_name: Option<Value> = kwargs.get(name)?;
        given[i] = match (args.get(i), by_name) {
            (Some(_), Some(_)) => return Err(Error::new(ErrorKind::TooManyArguments, format!("tojson: {name} given by position and by name"))),
            (Some(v), None) => Some(v.clone()),
            (None, v) => v,
        };
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort] = given;
    let ensure_ascii = ensure_ascii.is_some_and(|v| v.is_true());
    // Python: an int is that many spaces (0: newlines without indent), a string is used as it is.
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
            None => return Err(bad_argument("indent", &v, "an integer or a string")),
        },
    };
    let (item_separator, key_separator) = match separators {
        None => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
        Some(v) if v.is_none() => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
        Some(v) => {
            let pair: Vec<Value> = v.try_iter().map(|items| items.collect()).unwrap_or_default();
            match pair.as_slice() {
                [item, key] if item.kind() == ValueKind::String && key.kind() == ValueKind::String => {
                    (item.as_str().unwrap_or_default().to_string(), key.as_str().unwrap_or_default().to_string())
                }
                _ => return Err(bad_argument("separators", &v, "a pair of strings")),
            }
        }
    };
    let mut json = serde_json::to_value(value).map_err(|e| Error::new(ErrorKind::BadSerialization, format!("tojson: {value} is not JSON: {e}")))?;
    if sort.is_some_and(|v| v.is_true()) {
        sort_keys(&mut json);
    }
    let formatter = PythonFormatter { item_separator, key_separator, indent, ensure_ascii, depth: 0, has_items: Vec::new() };
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&json, &mut serializer).map_err(|e| Error::new(ErrorKind::BadSerialization, format!("tojson: {e}")))?;
    // Everything written is UTF-8: serde_json writes strings whole, and the rest is ASCII.
    let text = String::from_utf8(out).map_err(|e| Error::new(ErrorKind::BadSerialization, format!("tojson: {e}")))?;
    Ok(Value::from(text))
}

/// Python's `repr(s)` of a string: single quotes unless the string holds `'` and no `"`; `\\`, the
/// quote, `\n`, `\r`, `\t` escaped, the other ASCII control characters as `\xNN`.
fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr(x)` of a value inside a list or dict (`str` of a container is made of these).
fn python_repr(value: &Value) -> Option<String> {
    match value.kind() {
        ValueKind::String => Some(string_repr(value.as_str().unwrap_or_default())),
        _ => python_str(value),
    }
}

/// Python's `str(x)` (module docs); `None` for values Python has no counterpart of (undefined,
/// functions, the loop object, ...), which are left to minijinja.
pub fn python_str(value: &Value) -> Option<String> {
    match value.kind() {
        ValueKind::None => Some("None".into()),
        ValueKind::Bool => Some(if value.is_true() { "True" } else { "False" }.into()),
        ValueKind::Number if !value.is_integer() => f64::try_from(value.clone()).ok().map(float_repr),
        ValueKind::Number | ValueKind::String => Some(value.to_string()),
        ValueKind::Seq => {
            let items: Option<Vec<String>> = value.try_iter().ok()?.map(|v| python_repr(&v)).collect();
            Some(format!("[{}]", items?.join(", ")))
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter().ok()? {
                let item = value.get_item(&key).ok()?;
                entries.push(format!("{}: {}", python_repr(&key)?, python_repr(&item)?));
            }
            Some(format!("{{{}}}", entries.join(", ")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value as CPython 3.11 writes it (`repr(x)`).
    #[test]
    fn floats_are_written_as_python_repr() {
        for (x, python) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (2.0, "2.0"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e100, "1.2345e+100"),
            (-2.5e-300, "-2.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(float_repr(x), python, "{x:e}");
        }
    }

    #[test]
    fn strings_are_written_as_python_repr() {
        for (s, python) in [("a", "'a'"), ("it's", "\"it's\""), ("'\"", "'\\'\"'"), ("a\\b\n\t\u{1}\u{7f}é", "'a\\\\b\\n\\t\\x01\\x7fé'")] {
            assert_eq!(string_repr(s), python, "{s:?}");
        }
    }
}
