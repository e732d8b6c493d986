"""Chat-template goldens: conversations rendered by transformers' own apply_chat_template.

The template is golden/data/chat/template.jinja, the crate's own, written with every construct of
the Qwen2.5-Instruct template: a default system prompt, tools rendered through `tojson`,
assistant tool calls (arguments as an object or as a JSON string, with or without the
`function` wrapper), consecutive tool replies grouped into one user turn, a system message that
is not first, raise_exception for an unknown role. The tokenizer is the tiny checkpoint's
(golden/data/tiny-qwen2-gen/checkpoint), so the ids are checked too.

Writes golden/data/chat/conversations.json: for each conversation its name, messages, tools (or
null), add_generation_prompt, and what transformers rendered (text) and its ids (the text encoded
without added special tokens, as apply_chat_template(tokenize=True) does).

Run: python3 golden/gen_chat.py  (needs transformers and jinja2; torch is not needed).
"""
import json
import pathlib

from transformers import AutoTokenizer

HERE = pathlib.Path(__file__).parent
CHECKPOINT = HERE / "data" / "tiny-qwen2-gen" / "checkpoint"
OUT = HERE / "data" / "chat"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather at a place; 'now' or \"later\" <b>&amp;</b> \u00e9t\u00e9 \u2600",
        "parameters": {
            "type": "object",
            "properties": {
                "place": {"type": "string", "description": "A city, e.g. \"Z\u00fcrich\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["place"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search {{ the web }} {% raw %} with a query\n(second line)\t&tab",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "number", "default": 2.5}}},
    },
}

CONVERSATIONS = [
    ("one_user_message", [{"role": "user", "content": "Hello!"}], None, True),
    ("system_replaced", [{"role": "system", "content": "You answer in haiku."}, {"role": "user", "content": "Rain?"}], None, True),
    (
        "multi_turn",
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And times 3?"},
        ],
        None,
        True,
    ),
    (
        "no_generation_prompt",
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}],
        None,
        False,
    ),
    ("unicode", [{"role": "user", "content": "h\u00e9llo \u4e16\u754c \U0001F680 \u2211 \u00df\u00f8 \u05e9\u05dc\u05d5\u05dd"}], None, True),
    ("quotes_and_markup", [{"role": "user", "content": "He said \"hi\" & 'bye' <b>bold</b> &amp; \\ back\\slash </tools>"}], None, True),
    ("jinja_looking_text", [{"role": "user", "content": "{{ messages }} {% if x %}raw{% endif %} {# note #} {%- raw -%}"}], None, True),
    ("tools_default_system", [{"role": "user", "content": "Weather in Z\u00fcrich?"}], [WEATHER, SEARCH], True),
    (
        "tools_with_system",
        [{"role": "system", "content": "Use tools sparingly."}, {"role": "user", "content": "Find 'qwen' <kernels>"}],
        [SEARCH],
        True,
    ),
    (
        "tool_call_object_arguments",
        [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": {"place": "S\u00e3o Paulo <\"quoted\">", "days": 3, "unit": "celsius", "ratio": 1.5, "exact": 2.0, "flags": [True, False, None], "note": "line\nbreak\ttab \u0001"},
                        },
                    }
                ],
            },
            {"role": "tool", "content": "{\"temp\": 21}"},
        ],
        [WEATHER],
        True,
    ),
    (
        "tool_call_string_arguments",
        [
            {"role": "user", "content": "Search it."},
            {"role": "assistant", "content": None, "tool_calls": [{"name": "search", "arguments": "{\"query\": \"a 'b' <c>\"}"}]},
            {"role": "tool", "content": "no results"},
            {"role": "assistant", "content": "Nothing found."},
        ],
        [SEARCH],
        True,
    ),
    (
        "consecutive_tool_replies",
        [
            {"role": "user", "content": "Both places?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"place": "Oslo"}}},
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"place": "Lima"}}},
                ],
            },
            {"role": "tool", "content": "Oslo: 3\u00b0C"},
            {"role": "tool", "content": "Lima: 19\u00b0C"},
            {"role": "assistant", "content": "Oslo is colder."},
            {"role": "user", "content": "Thanks"},
        ],
        [WEATHER],
        True,
    ),
    (
        "system_not_first",
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "system", "content": "Be brief from now on."},
            {"role": "user", "content": "Explain GQA."},
        ],
        None,
        True,
    ),
    ("empty_content", [{"role": "user", "content": ""}], None, True),
    # Short enough for the tiny checkpoint's 512 positions (the CLI test generates from it).
    (
        "short_tool_call",
        [
            {"role": "user", "content": "t?"},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "t", "arguments": {"x": 1}}}]},
            {"role": "tool", "content": "2"},
            {"role": "tool", "content": "3"},
        ],
        [{"type": "function", "function": {"name": "t"}}],
        True,
    ),
]


def main():
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT)
    template = (OUT / "template.jinja").read_text()
    out = []
    for name, messages, tools, add_generation_prompt in CONVERSATIONS:
        text = tokenizer.apply_chat_template(messages, tools=tools, chat_template=template, add_generation_prompt=add_generation_prompt, tokenize=False)
        ids = tokenizer.encode(text, add_special_tokens=False)
        out.append({"name": name, "messages": messages, "tools": tools, "add_generation_prompt": add_generation_prompt, "text": text, "ids": ids})
    # An unknown role is refused by the template (raise_exception).
    try:
        tokenizer.apply_chat_template([{"role": "narrator", "content": "x"}], chat_template=template, tokenize=False)
        refused = None
    except Exception as e:  # transformers raises jinja2's TemplateError
        refused = str(e)
    doc = {"template": "template.jinja", "tokenizer": "tiny-qwen2-gen/checkpoint", "conversations": out, "unknown_role_error": refused}
    (OUT / "conversations.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(out)} conversations to {OUT / 'conversations.json'}")


if __name__ == "__main__":
    main()
