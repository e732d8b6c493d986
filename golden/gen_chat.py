"""What the chat template must render (src/text/chat.rs): conversations rendered by transformers'
own `apply_chat_template`, text and token ids, for tests/chat.rs and tests/cli.rs.

    python3 golden/gen_chat.py   # golden/data/chat/expected.json (needs transformers, no model)

The tokenizer is the tiny gen checkpoint's (golden/data/tiny-qwen2-gen/checkpoint, golden/
tiny_checkpoint.py: a byte-level BPE with <|endoftext|>, <|im_start|>, <|im_end|>). Templates:
- "qwen": golden/data/chat/template.jinja, every construct of Qwen2.5-Instruct's template (a
  default system prompt, tools through tojson, tool calls, grouped tool replies) and a role it
  refuses with raise_exception;
- "values": golden/data/chat/values.jinja, each message's content through tojson with each of its
  arguments, and printed as Jinja2 prints it (Python's str);
- "checkpoint": the checkpoint's own template (tokenizer_config.json), which `qwen-kernels generate
  --messages/--system` renders (tests/cli.rs).

Each case records the messages, the tools (or none), add_generation_prompt, and either the rendered
text and its ids (`apply_chat_template(..., tokenize=True)`, asserted equal to the text's ids with
no special tokens added), or the error transformers raised (`error`: its type and message).
golden/data/MANIFEST.json is rewritten (locations.write_manifest) to list the files.
"""
import json
import os
import sys

import jinja2
import tokenizers
import transformers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import locations  # noqa: E402

CHECKPOINT = os.path.join(HERE, "data", "tiny-qwen2-gen", "checkpoint")
DIR = os.path.join(HERE, "data", "chat")
OUT = os.path.join(DIR, "expected.json")
TEMPLATES = {"qwen": "template.jinja", "values": "values.jinja", "checkpoint": None}

# Text that a renderer could get wrong: quotes, markup (which Jinja2's own tojson would escape),
# text that looks like Jinja, characters of several bytes, escapes.
TRICKY = "He said \"it's <b>bold</b> &amp; 'quoted'\" {{ x }} {% if y %}{# c #} \\n"
UNICODE = "naïve café — 日本語 ✓ 🦀"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather at a place, in <units> & 'quotes' — “curly” too",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "A city, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 16},
            },
            "required": ["location"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Searches the documents",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "number", "default": 2.5e-07}}},
    },
}
CALL_OBJECT = {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Zürich", "unit": "celsius", "days": 3, "note": "<b> & 'x'"}}}
CALL_STRING = {"type": "function", "function": {"name": "search", "arguments": "{\"query\": \"kernels <fast> & 'small'\", \"limit\": 2}"}}
CALL_BARE = {"name": "search", "arguments": {"query": UNICODE, "limit": 1e16, "exact": True, "filter": None}}
REPLY = {"temperature": 21.5, "unit": "celsius", "sunny": True, "warning": None, "hours": [6, 7.25]}

SYSTEM = {"role": "system", "content": "You answer in one sentence."}
USER = {"role": "user", "content": "What does the cache hold?"}

# (name, template, messages, tools, add_generation_prompt)
CASES = [
    ("user_only_default_system", "qwen", [USER], None, True),
    ("system_and_user", "qwen", [SYSTEM, USER], None, True),
    ("multi_turn", "qwen", [SYSTEM, USER, {"role": "assistant", "content": "The keys and values."}, {"role": "user", "content": "Of which tokens?"}], None, True),
    ("multi_turn_no_generation_prompt", "qwen", [USER, {"role": "assistant", "content": "The keys and values."}], None, False),
    ("unicode", "qwen", [{"role": "user", "content": UNICODE}], None, True),
    ("quotes_markup_jinja", "qwen", [{"role": "system", "content": TRICKY}, {"role": "user", "content": TRICKY}, {"role": "assistant", "content": TRICKY}], None, False),
    ("tools_default_system", "qwen", [USER], [WEATHER, SEARCH], True),
    ("tools_with_system_and_a_call", "qwen", [
        SYSTEM,
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL_OBJECT]},
        {"role": "tool", "name": "get_weather", "content": "{\"temperature\": 21.5}"},
        {"role": "assistant", "content": "21.5 °C."},
        {"role": "user", "content": "Thanks"},
    ], [WEATHER], True),
    ("string_arguments_and_grouped_replies", "qwen", [
        {"role": "user", "content": "Find two things."},
        {"role": "assistant", "content": "Searching twice.", "tool_calls": [CALL_STRING, CALL_OBJECT]},
        {"role": "tool", "content": "first <result> & 'one'"},
        {"role": "tool", "content": "second: " + UNICODE},
        {"role": "tool", "content": "third"},
    ], [SEARCH, WEATHER], True),
    ("bare_call_and_dict_reply", "qwen", [
        {"role": "user", "content": "Search."},
        {"role": "assistant", "tool_calls": [CALL_BARE]},
        {"role": "tool", "content": REPLY},
    ], [SEARCH], False),
    ("tool_reply_first", "qwen", [{"role": "tool", "content": "a reply with no call"}, {"role": "user", "content": "And?"}], None, True),
    ("second_system_message", "qwen", [SYSTEM, USER, {"role": "system", "content": "Now answer in French."}, {"role": "user", "content": "Encore?"}], None, True),
    ("tools_no_generation_prompt", "qwen", [USER, {"role": "assistant", "content": "", "tool_calls": [CALL_STRING]}, {"role": "tool", "content": "done"}], [SEARCH], False),
    ("empty_tools_list", "qwen", [USER], [], True),
    ("refused_role", "qwen", [USER, {"role": "critic", "content": "Too long."}], None, True),
    ("values", "values", [
        {"role": "user", "content": {"b": 1, "a": [1.5, 2.0, 1e-07, 1e16, -0.0, 12345678901234567890], "ключ": "значение", "z": {"y": {}, "x": []}}},
        {"role": "user", "content": "naïve <tag> & 'q' \"dq\" \\ \n\t \u0001 \u007f 🦀"},
        {"role": "user", "content": [True, False, None, {"k": []}, "it's", 0.1]},
        {"role": "user", "content": None},
        {"role": "user", "content": 7},
    ], None, False),
    # What `qwen-kernels generate` renders with the checkpoint's own template.
    ("cli_messages", "checkpoint", [SYSTEM, USER, {"role": "assistant", "content": "The keys and values."}, {"role": "user", "content": "Of which <tokens> & 'why'?"}], None, True),
    ("cli_system_prompt", "checkpoint", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "The kernel reads"}], None, True),
]


def main():
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT)
    sources = {name: None if f is None else open(os.path.join(DIR, f), encoding="utf-8").read() for name, f in TEMPLATES.items()}
    cases = []
    for name, template, messages, tools, add_generation_prompt in CASES:
        case = {"name": name, "template": template, "messages": messages, "tools": tools, "add_generation_prompt": add_generation_prompt}
        kwargs = dict(tools=tools, chat_template=sources[template], add_generation_prompt=add_generation_prompt)
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
        except Exception as e:  # noqa: BLE001 (the error is the expected outcome, recorded)
            case["error"] = {"type": type(e).__name__, "message": str(e)}
            print(f"{name}: {type(e).__name__}: {e}")
            cases.append(case)
            continue
        ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])
        assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"], name
        case.update(rendered=rendered, ids=ids)
        print(f"{name}: {len(rendered)} characters, {len(ids)} ids")
        cases.append(case)
    record = {
        "command": "python3 golden/gen_chat.py",
        "tokenizer": os.path.relpath(CHECKPOINT, os.path.dirname(HERE)),
        "templates": {name: f and os.path.relpath(os.path.join(DIR, f), os.path.dirname(HERE)) for name, f in TEMPLATES.items()},
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__, "jinja2": jinja2.__version__,
        "cases": cases,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{OUT}: {os.path.getsize(OUT)} bytes")
    locations.write_manifest(locations.COMMITTED)


if __name__ == "__main__":
    main()
