#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/{qwen3,llama3,tinystories}.json: reference tokenizations.

The reference is the Hugging Face `tokenizers` library (pinned in tools/requirements.txt) reading
the same tokenizer.json files the C++ tokenizer reads. For each text the fixture holds:
  ids                   encode(text, add_special_tokens=False)
  ids_with_special      encode(text, add_special_tokens=True)
  decoded               decode(ids_with_special, skip_special_tokens=False)
  decoded_skip_special  decode(ids_with_special minus the ids of special added tokens)
  round_trips           decode(ids) == text
The last one filters by id because tokenizers 0.23 skips special tokens by their (normalized)
string, which misses normalized special tokens such as tinystories' <|start_story|>.

Run from the repository root:  .venv/bin/python tools/make_tokenizer_fixtures.py
"""
import json
import os

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

TOKENIZERS = {
    "qwen3": "tokenizers/qwen3/tokenizer.json",
    "llama3": "tokenizers/llama3/tokenizer.json",
    "tinystories": "models/tinystories-656k/tokenizer.json",
}

TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "  leading and trailing spaces  ",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "I'm sure you're right; it's what they've said, we'll see, he'd go. DON'T SHOUT'S",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i] * 2;\n}",
    "1234567890 3.14159 1,000,000 -42 +7 0x1F 2024-05-17 12:30:45",
    "333 4444 55555 666666",
    "Emoji: 🚀 🦙 😶‍🌫️ 👍🏽 ❤️ 🇫🇷 ✅",
    "我想在apple工作1314151天～ 日本語のテキストです。 한국어 문장",
    "Äpfel, café, naïve, Crème brûlée, Ångström, São Paulo, Cửa Việt",
    "Decomposed: cafe\u0301 A\u030angstro\u0308m",
    "нещо на Български. Привет, мир!",
    "مرحبا بالعالم — नमस्ते दुनिया — កាន់តែពិសេស",
    "a    b\t\tc\n\n\nd   \n  e \u00a0 f\u3000g",
    "line one\r\nline two\r\n\r\nline four",
    "\n",
    "   ",
    "\t",
    "trailing newline\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<think>step by step</think> The answer is 4.<|endoftext|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|start_story|>Once upon a time<|end_story|>",
    "Once <|end_story|> after",
    "<|im_start|><|im_start|>",
    "text with <|unknown_token|> and <|im_start",
    "!!!!!! ???? ... ---- ==== ****",
    "' era ' s 'S 'LL",
    "zero\u200bwidth joiner\u200d and BOM\ufeff here",
    "Mixed: abc123def ４５６ ⅫⅣ ½ ²³",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "The ant and the dove. " * 12,
    "Ωμέγα αλφάβητο ΑΒΓ, Straße, İstanbul, ǅemal",
]


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, rel in TOKENIZERS.items():
        tok = Tokenizer.from_file(os.path.join(SHARED, rel))
        special_ids = sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special)
        cases = []
        for text in TEXTS:
            ids = tok.encode(text, add_special_tokens=False).ids
            with_special = tok.encode(text, add_special_tokens=True).ids
            kept = [i for i in with_special if i not in set(special_ids)]
            cases.append({
                "text": text,
                "ids": ids,
                "ids_with_special": with_special,
                "decoded": tok.decode(with_special, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(kept, skip_special_tokens=False),
                "round_trips": tok.decode(ids, skip_special_tokens=False) == text,
            })
        vocab = tok.get_vocab(with_added_tokens=True)
        fixture = {
            "tokenizer": rel,
            "reference": "tokenizers " + __import__("tokenizers").__version__,
            "vocab_size": max(vocab.values()) + 1,
            "special_ids": special_ids,
            "cases": cases,
        }
        path = os.path.join(OUT_DIR, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(fixture, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
