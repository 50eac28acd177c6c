"""Fixtures for the serving core's tests, computed with Hugging Face transformers.

Writes:
  tests/fixtures/models/tiny-rec/   a tiny random Llama whose tokenizer is TinyStories' plus the
                                    Beauty LC-Rec code tokens (<a_0> ... <d_255>) as added tokens,
                                    with recommendation.json; the stand-in recommendation model
                                    until a trained one exists.
  tests/fixtures/beam/tiny-rec.json       beam search constrained to the Beauty catalogue trie
                                          (prefix_allowed_tokens_fn) for K = 1, 5, 20
  tests/fixtures/beam/tinystories.json    unconstrained beam search with length penalties

Run: .venv/bin/python tools/make_serving_fixtures.py [--data ../shared/datasets/beauty]
"""
import argparse
import json
import os
import shutil

import torch
from tokenizers import AddedToken, Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

import beauty_data

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))
TINYSTORIES = os.path.join(SHARED, "models", "tinystories-656k")


def make_tiny_rec(out_dir, index, data_dir):
    os.makedirs(out_dir, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(TINYSTORIES, "tokenizer.json"))
    codes = beauty_data.code_tokens(index)
    tok.add_tokens([AddedToken(c, normalized=False, special=False) for c in codes])
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    shutil.copy(os.path.join(TINYSTORIES, "tokenizer_config.json"), out_dir)
    vocab = tok.get_vocab_size()
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, initializer_range=0.15)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).float().eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copy(os.path.join(data_dir, "beauty.LCRec-1e-3lr.json"),
                os.path.join(out_dir, "catalogue.json"))
    shutil.copy(os.path.join(data_dir, "titles.tsv"), os.path.join(out_dir, "titles.tsv"))
    rec = {
        "catalogue": "catalogue.json",
        "titles": "titles.tsv",
        "prompt_template": beauty_data.PROMPT_TEMPLATE,
        "item_separator": beauty_data.ITEM_SEPARATOR,
        "history_limit": beauty_data.HISTORY_LIMIT,
        "note": "random weights: a stand-in with the Beauty vocabulary, not a trained recommender",
    }
    with open(os.path.join(out_dir, "recommendation.json"), "w") as f:
        json.dump(rec, f, indent=2)
    return tok


def trie_fn(index, tok, prompt_len, eos):
    children = {}
    for codes in index.values():
        ids = [tok.token_to_id(c) for c in codes]
        for d in range(len(ids)):
            children.setdefault(tuple(ids[:d]), set()).add(ids[d])
        children.setdefault(tuple(ids), set())
    allowed = {k: sorted(v) if v else [eos] for k, v in children.items()}

    def fn(batch_id, input_ids):
        return allowed.get(tuple(input_ids[prompt_len:].tolist()), [eos])
    return fn


def beam(model, prompt_ids, k, lp, max_new, fn=None):
    # An explicit attention mask: the prompt may contain token 0 (<unk>), which generate() would
    # otherwise take for padding (pad_token_id=0) and mask out.
    out = model.generate(
        torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        num_beams=k, num_return_sequences=k, do_sample=False,
        max_new_tokens=max_new, length_penalty=lp, early_stopping=False,
        prefix_allowed_tokens_fn=fn, output_scores=True, return_dict_in_generate=True,
        eos_token_id=2, pad_token_id=0, bos_token_id=1)
    seqs = [s[len(prompt_ids):].tolist() for s in out.sequences]
    # Drop padding after the end-of-sequence token.
    trimmed = []
    for s in seqs:
        if 2 in s:
            s = s[:s.index(2) + 1]
        trimmed.append(s)
    if k > 1:
        return trimmed, [float(x) for x in out.sequences_scores]
    # num_beams=1 is greedy search, which reports no sequence score: compute it the same way.
    gen = trimmed[0]
    logits = model(torch.tensor([prompt_ids + gen])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    total = sum(float(logprobs[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(gen))
    return trimmed, [total / (len(gen) ** lp)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    index = beauty_data.load_index(args.data)
    rec_dir = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-rec")
    tok = make_tiny_rec(rec_dir, index, args.data)
    model = LlamaForCausalLM.from_pretrained(rec_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    cases = []
    for user, history, targets in beauty_data.test_samples(args.data)[:3]:
        prompt = beauty_data.build_prompt(index, history)
        ids = tok.encode(prompt).ids
        for k in (1, 5, 20):
            seqs, scores = beam(model, ids, k, 1.0, 5, trie_fn(index, tok, len(ids), 2))
            cases.append({"user": user, "prompt_token_ids": ids, "num_beams": k,
                          "length_penalty": 1.0, "max_new_tokens": 5, "constrained": True,
                          "sequences": seqs, "scores": scores})
    os.makedirs(os.path.join(ROOT, "tests", "fixtures", "beam"), exist_ok=True)
    with open(os.path.join(ROOT, "tests", "fixtures", "beam", "tiny-rec.json"), "w") as f:
        json.dump({"model": "tests/fixtures/models/tiny-rec", "cases": cases}, f)

    story = LlamaForCausalLM.from_pretrained(TINYSTORIES, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    st = Tokenizer.from_file(os.path.join(TINYSTORIES, "tokenizer.json"))
    cases = []
    for prompt, k, lp, max_new in [("Once upon a time", 5, 1.0, 24), ("The cat", 4, 0.0, 16),
                                   ("Tom and Lily went to the park", 8, 2.0, 20),
                                   ("One day", 1, 1.0, 30)]:
        ids = st.encode(prompt).ids
        seqs, scores = beam(story, ids, k, lp, max_new)
        cases.append({"prompt": prompt, "prompt_token_ids": ids, "num_beams": k,
                      "length_penalty": lp, "max_new_tokens": max_new, "constrained": False,
                      "sequences": seqs, "scores": scores})
    with open(os.path.join(ROOT, "tests", "fixtures", "beam", "tinystories.json"), "w") as f:
        json.dump({"model": "../shared/models/tinystories-656k", "cases": cases}, f)
    print("wrote tiny-rec and beam fixtures")


if __name__ == "__main__":
    main()
