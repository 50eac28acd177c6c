"""Fixtures for EARN in the engine, from the PyTorch mask-based reference (tools/earn_model.py).

Writes, for each variant below, tests/fixtures/models/<name>/ (a tiny random 4-layer Llama with
register tokens added to the tiny-rec tokenizer, the Beauty catalogue) and
tests/fixtures/earn/<name>.json: for a few Beauty test users, the prompt ids the engine
receives, the reference logits of the last prompt position, greedy continuations and
catalogue-constrained beam search (transformers' generate on the reference, no KV cache).
Variants: split layer 1 with 4 + 4 registers; split layer L/2 = 2 with 2 + 2; split layer
L - 1 = 3 with suffix registers only (3). The latter two point at tiny-earn's catalogue and
titles instead of copying them.

Run: .venv/bin/python tools/make_earn_fixtures.py
"""
import json
import os
import shutil

import torch
from tokenizers import AddedToken, Tokenizer
from transformers import LlamaConfig

import beauty_data
from earn_model import EarnLlamaForCausalLM, wrap_prompt

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TINY_REC = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-rec")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
# (name, split layer, prefix registers, suffix registers) of 4-layer models.
VARIANTS = [("tiny-earn", 1, 4, 4), ("tiny-earn-half", 2, 2, 2), ("tiny-earn-suffix", 3, 0, 3)]


def make_model(name, split_layer, num_prefix, num_suffix):
    out = os.path.join(MODELS, name)
    os.makedirs(out, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(TINY_REC, "tokenizer.json"))
    names = [f"<|reg_p{i}|>" for i in range(num_prefix)] + \
            [f"<|reg_s{i}|>" for i in range(num_suffix)]
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    tok.save(os.path.join(out, "tokenizer.json"))
    shutil.copy(os.path.join(TINY_REC, "tokenizer_config.json"), out)
    with open(os.path.join(TINY_REC, "recommendation.json")) as f:
        spec = json.load(f)
    if name == "tiny-earn":
        for file in ("catalogue.json", "titles.tsv"):
            shutil.copy(os.path.join(TINY_REC, file), out)
    else:
        spec["catalogue"] = "../tiny-earn/catalogue.json"
        spec["titles"] = "../tiny-earn/titles.tsv"
    with open(os.path.join(out, "recommendation.json"), "w") as f:
        json.dump(spec, f, indent=2)
    ids = [tok.token_to_id(n) for n in names]
    earn = {"split_layer": split_layer, "prefix_register_ids": ids[:num_prefix],
            "suffix_register_ids": ids[num_prefix:]}
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, initializer_range=0.15)
    config.earn = earn
    torch.manual_seed(1)
    model = EarnLlamaForCausalLM(config).float().eval()
    model.save_pretrained(out, safe_serialization=True)
    # An EARN checkpoint is a Llama checkpoint with an "earn" object: keep the plain architecture
    # name (save_pretrained writes the Python class name).
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["architectures"] = ["LlamaForCausalLM"]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    return tok, earn


def make_fixture(name, split_layer, num_prefix, num_suffix):
    tok, earn = make_model(name, split_layer, num_prefix, num_suffix)
    model = EarnLlamaForCausalLM.from_pretrained(os.path.join(MODELS, name), torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    index = beauty_data.load_index()
    trie = {}
    for codes in index.values():
        c = [tok.token_to_id(x) for x in codes]
        for d in range(len(c)):
            trie.setdefault(tuple(c[:d]), set()).add(c[d])
    allowed = {k: sorted(v) for k, v in trie.items()}
    cases = []
    for user, history, _ in beauty_data.test_samples()[:3]:
        prompt_ids = tok.encode(beauty_data.build_prompt(index, history)).ids
        wrapped = wrap_prompt(prompt_ids, earn, 1)
        inp = torch.tensor([wrapped])
        logits = model(inp).logits[0, -1].tolist()
        mask = torch.ones_like(inp)
        greedy = model.generate(inp, attention_mask=mask, do_sample=False, max_new_tokens=12,
                                use_cache=False, eos_token_id=None, pad_token_id=0)
        beams = {}
        for k in (5, 10):
            def fn(batch_id, ids, n=len(wrapped)):
                return allowed.get(tuple(ids[n:].tolist()), [2])
            out = model.generate(inp, attention_mask=mask, num_beams=k, num_return_sequences=k,
                                 do_sample=False, max_new_tokens=5, use_cache=False,
                                 prefix_allowed_tokens_fn=fn, eos_token_id=2, pad_token_id=0,
                                 output_scores=True, return_dict_in_generate=True,
                                 early_stopping=False, length_penalty=1.0)
            beams[str(k)] = {"sequences": [s[len(wrapped):].tolist() for s in out.sequences],
                             "scores": [float(x) for x in out.sequences_scores]}
        cases.append({"user": user, "prompt_token_ids": prompt_ids, "wrapped_token_ids": wrapped,
                      "last_logits": [round(x, 6) for x in logits],
                      "greedy": greedy[0, len(wrapped):].tolist(), "beams": beams})
    os.makedirs(os.path.join(ROOT, "tests", "fixtures", "earn"), exist_ok=True)
    with open(os.path.join(ROOT, "tests", "fixtures", "earn", name + ".json"), "w") as f:
        json.dump({"model": "tests/fixtures/models/" + name, "earn": earn, "cases": cases}, f)
    print("wrote", name, "fixtures")


def main():
    torch.set_grad_enabled(False)
    for variant in VARIANTS:
        make_fixture(*variant)


if __name__ == "__main__":
    main()
