#!/usr/bin/env python3
"""Writes tests/fixtures/chat/{qwen3,llama3,features}.json: chat conversations rendered by
transformers' tokenizer.apply_chat_template(..., tokenize=False), the reference that
api/jinja/chat_template.cpp must match byte for byte.

qwen3 / llama3 use the real chat templates of ../shared/tokenizers/<name>. features.json holds
small templates written here to pin down Jinja semantics the real templates touch only lightly
(loop variables, filters, tests, macros, whitespace control, Python value printing); they are
rendered with the same tokenizer (qwen3) through apply_chat_template(chat_template=...).

Run: .venv/bin/python tools/make_chat_fixtures.py
"""
import json
import os

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "tokenizers"))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "chat")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_catalogue",
        "description": "Find items in the shop's catalogue.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    },
}

QWEN3_CASES = [
    {
        "name": "system_and_user",
        "messages": [
            {"role": "system", "content": "You are a shopping assistant."},
            {"role": "user", "content": "Recommend a moisturiser for dry skin."},
        ],
        "add_generation_prompt": True,
        "extra_context": {},
    },
    {
        "name": "user_only_no_generation_prompt",
        "messages": [{"role": "user", "content": "Hello!"}],
        "add_generation_prompt": False,
        "extra_context": {},
    },
    {
        "name": "multi_turn_with_reasoning",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\n4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6", "reasoning_content": "Add three and three."},
            {"role": "user", "content": "Thanks — und jetzt auf Deutsch? 谢谢"},
        ],
        "add_generation_prompt": True,
        "extra_context": {},
    },
    {
        "name": "last_assistant_turn_after_query",
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "<think>\nPick one.\n</think>\n\nBlue."},
        ],
        "add_generation_prompt": False,
        "extra_context": {},
    },
    {
        "name": "thinking_alias_field",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello.", "thinking": "Greet back.", "tool_calls": None},
        ],
        "add_generation_prompt": False,
        "extra_context": {},
    },
    {
        "name": "enable_thinking_false",
        "messages": [{"role": "user", "content": "Quick answer please."}],
        "add_generation_prompt": True,
        "extra_context": {"enable_thinking": False},
    },
    {
        "name": "enable_thinking_true",
        "messages": [{"role": "user", "content": "Think it through."}],
        "add_generation_prompt": True,
        "extra_context": {"enable_thinking": True},
    },
    {
        "name": "tool_calls_and_responses",
        "messages": [
            {"role": "system", "content": "You can use tools."},
            {"role": "user", "content": "Weather in Paris and some umbrellas?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
                    {"type": "function", "function": {"name": "search_catalogue", "arguments": "{\"query\": \"umbrella\", \"limit\": 3}"}},
                ],
            },
            {"role": "tool", "content": "{\"temperature\": 18.5, \"sky\": \"rain\"}"},
            {"role": "tool", "content": "[\"B00X1\", \"B00X2\"]"},
            {"role": "assistant", "content": "It is raining (18.5°C); here are two umbrellas."},
            {"role": "user", "content": "<tool_response>\nnot really a tool\n</tool_response>"},
        ],
        "add_generation_prompt": True,
        "extra_context": {"tools": [WEATHER_TOOL, SEARCH_TOOL]},
    },
    {
        "name": "tools_without_system",
        "messages": [
            {"role": "user", "content": "Find socks."},
            {"role": "assistant", "content": "Searching.", "tool_calls": [{"name": "search_catalogue", "arguments": {"query": "socks"}}]},
            {"role": "tool", "content": "[]"},
        ],
        "add_generation_prompt": True,
        "extra_context": {"tools": [SEARCH_TOOL]},
    },
    {
        "name": "system_later_in_conversation",
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "Switch to French."},
            {"role": "user", "content": "b"},
        ],
        "add_generation_prompt": True,
        "extra_context": {},
    },
]

LLAMA3_CASES = [
    {
        "name": "system_and_user",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Suggest a shampoo."},
        ],
        "add_generation_prompt": True,
        "extra_context": {"date_string": "26 Jul 2024"},
    },
    {
        "name": "multi_turn_trimmed",
        "messages": [
            {"role": "user", "content": "  Hello there \n"},
            {"role": "assistant", "content": "\tHi! How can I help?  "},
            {"role": "user", "content": "Lipstick, please. Größe egal."},
        ],
        "add_generation_prompt": False,
        "extra_context": {"date_string": "26 Jul 2024"},
    },
    {
        "name": "user_only",
        "messages": [{"role": "user", "content": "One line."}],
        "add_generation_prompt": True,
        "extra_context": {"date_string": "26 Jul 2024"},
    },
]

# Templates written for these tests; each isolates a few Jinja behaviours.
FEATURE_CASES = [
    ("loop_variables",
     "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ loop.revindex }} "
     "{{ loop.revindex0 }} {{ loop.first }} {{ loop.last }} {{ m.role }}\n{% endfor %}"),
    ("for_else_inline_if_break_continue",
     "{% for m in messages if m.role == 'user' %}[{{ m.content }}:{{ loop.length }}]{% endfor %}"
     "{% for x in [] %}never{% else %}empty{% endfor %}|"
     "{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}|"
     "{% for k, v in {'a': 1, 'b': [2, 3]}.items() %}{{ k }}={{ v }};{% endfor %}"),
    ("scoping_and_namespace",
     "{% set x = 'outer' %}{% for m in messages %}{% set x = m.role %}{{ x }},{% endfor %}{{ x }}|"
     "{% set ns = namespace(count=0, last='') %}{% for m in messages %}{% set ns.count = ns.count + 1 %}"
     "{% set ns.last = m.role %}{% endfor %}{{ ns.count }} {{ ns.last }}|"
     "{% if true %}{% set y = 5 %}{% endif %}{{ y }}"),
    ("python_values",
     "{{ 7 / 2 }} {{ 8 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1.5 * 2 }} {{ 0.1 + 0.2 }} "
     "{{ 1e20 }} {{ 1e-5 }} {{ 123456789.0 }}\n"
     "{{ [1, 'two', none, true, 2.5] }} {{ {'k': 'it\\'s', 'n': {'x': false}} }} {{ none }} {{ undefined_name }}|"
     "{{ 'ab' * 3 }} {{ [1] + [2] }} {{ 'a' ~ 1 ~ none }} {{ -(3) }}"),
    ("string_methods_and_slices",
     "{% set s = messages[0].content %}{{ s.upper() }}|{{ s.lower() }}|{{ s.title() }}|{{ s.split() }}|"
     "{{ s.split(' ', 1) }}|{{ s.replace('o', '0') }}|{{ s.startswith('He') }}|{{ s.endswith(('x', 'd!')) }}|"
     "{{ s[::-1] }}|{{ s[1:] }}|{{ s[-3:] }}|{{ s[::2] }}|{{ s[0] }}{{ s[-1] }}|{{ '  pad  '.strip() }}|"
     "{{ 'xxhixx'.strip('x') }}|{{ '--a'.lstrip('-') }}|{{ 'a\\n\\n'.rstrip('\\n') }}|{{ s.find('o') }}|{{ s.count('l') }}|"
     "{{ '-'.join(['a', 'b']) }}|{{ messages[::-1][0].role }}|{{ messages[1:] | length }}"),
    ("filters",
     "{{ '  hi  ' | trim }}|{{ messages | length }}|{{ messages | map(attribute='role') | join(', ') }}|"
     "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|"
     "{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='content') | first }}|"
     "{{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'c'] | sort(reverse=true) }}|{{ [1, 1, 2] | unique | list }}|"
     "{{ 'abc' | reverse }}|{{ [1, 2] | reverse | list }}|{{ '42' | int + 1 }}|{{ '2.5' | float }}|{{ 3 | string ~ 'x' }}|"
     "{{ undefined_name | default('fallback') }}|{{ '' | default('empty', true) }}|{{ -3 | abs }}|"
     "{{ 'hello world' | capitalize }}|{{ 'a\\nb' | indent(2) }}|"
     "{% for k, v in {'b': 1, 'a': 2} | items %}{{ k }}{{ v }}{% endfor %}|"
     "{{ 'x<y' | e }}|{{ 2.567 | round(2) }}|{{ messages | last | tojson }}"),
    ("tojson_options",
     "{{ tools | tojson }}\n{{ tools[0] | tojson(indent=2) }}\n{{ {'b': 1, 'a': [1.0, 'é\\u2028\"']} | tojson(sort_keys=true) }}\n"
     "{{ {'a': 1} | tojson(separators=(',', ':')) }}|{{ 'ü' | tojson(ensure_ascii=true) }}"),
    ("tests_and_comparisons",
     "{{ messages is defined }} {{ nothing is defined }} {{ nothing is undefined }} {{ none is none }} "
     "{{ 'x' is string }} {{ 3 is number }} {{ 3 is integer }} {{ 3.0 is float }} {{ true is boolean }} "
     "{{ {} is mapping }} {{ [] is iterable }} {{ enable_thinking is false }} {{ enable_thinking is true }} "
     "{{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 2 is in [1, 2] }} {{ 'a' is not none }}|"
     "{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 5 }} {{ 'ell' in 'hello' }} {{ 'z' not in 'hello' }} "
     "{{ 'role' in messages[0] }} {{ [1, 2] == [1, 2] }} {{ 'b' >= 'a' }}|"
     "{{ 'yes' if messages else 'no' }} {{ 'x' if false }} {{ none or 'alt' }} {{ 0 and 1 }} {{ not messages }}"),
    ("whitespace_control",
     "<start>\n  {% if true %}\n    kept\n  {% endif %}\n  {%- if true -%}\n   stripped   \n  {%- endif %}\n"
     "  {%+ if true %}plus{% endif +%}\n  {# comment #}\n  {{- ' var' -}}  \n{% raw %}{{ not evaluated }}{% endraw %}\n<end>\n"),
    ("macros_and_set_blocks",
     "{% macro render(m, prefix='> ') %}{{ prefix }}{{ m.role | upper }}: {{ m.content }}{% endmacro %}"
     "{% for m in messages %}{{ render(m) }}\n{{ render(m, prefix='# ') }}\n{% endfor %}"
     "{% set block %}inside {{ messages | length }}{% endset %}[{{ block }}]"
     "{% set a, b = [1, 2] %}{{ a + b }}{% set d = dict(x=1, y='z') %}{{ d.x }}{{ d['y'] }}{{ d.get('q', 'none') }}"),
    ("date_string_default",
     "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
     "Today Date: {{ date_string }}\n{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}"),
    ("generation_block",
     "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
     "{% else %}{{ m.content }}{% endif %}|{% endfor %}"),
]

FEATURE_MESSAGES = [
    {"role": "system", "content": "Hello World!"},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "an answer"},
    {"role": "user", "content": "second question"},
]


def render(tokenizer, case, chat_template=None):
    return tokenizer.apply_chat_template(
        case["messages"],
        tokenize=False,
        add_generation_prompt=case["add_generation_prompt"],
        chat_template=chat_template,
        **case["extra_context"],
    )


def write(name, payload):
    path = os.path.join(OUT_DIR, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path, len(payload["cases"]), "cases")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    tokenizers = {}
    for model, cases in (("qwen3", QWEN3_CASES), ("llama3", LLAMA3_CASES)):
        tokenizer = AutoTokenizer.from_pretrained(os.path.join(SHARED, model))
        tokenizers[model] = tokenizer
        for case in cases:
            case["expected"] = render(tokenizer, case)
        write(model, {"tokenizer": model, "special_tokens_map": tokenizer.special_tokens_map, "cases": cases})

    feature_cases = []
    for name, template in FEATURE_CASES:
        case = {
            "name": name,
            "template": template,
            "messages": FEATURE_MESSAGES,
            "add_generation_prompt": False,
            "extra_context": {
                "tools": [WEATHER_TOOL],
                "enable_thinking": False,
                "date_string": "26 Jul 2024",
                "bos_token": "<s>",
                "eos_token": "</s>",
            },
        }
        case["expected"] = render(tokenizers["qwen3"], case, chat_template=template)
        feature_cases.append(case)
    write("features", {"cases": feature_cases})


if __name__ == "__main__":
    main()
