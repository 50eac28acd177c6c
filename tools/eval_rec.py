#!/usr/bin/env python3
"""Recall@5/10/20 and NDCG@5/10/20 of a recommendation checkpoint on the Beauty TEST protocol.

History = train + valid items (last 20), targets = all test items, top-K lists from beam search
with K beams constrained to the catalogue's code sequences (--beam-width W instead uses one
search of W beams for every K, as `earnserve eval --beam-width W` does). Hits compare code
sequences, so items sharing one count as the same answer, as in the engine. Works for plain and
EARN checkpoints (config.json's "earn" object) written by tools/train_rec.py, with the prompt the
engine builds from the checkpoint's recommendation.json (template, item separator, history
limit); PyTorch reference numbers to cross-check the engine.

  .venv/bin/python tools/eval_rec.py --model DIR [--limit 200] [--json]
"""
import argparse
import json
import os
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

import beauty_data
import rec_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR)
    ap.add_argument("--split", choices=("test", "valid"), default="test",
                    help="valid: history = train items (last 20), targets = valid items")
    ap.add_argument("--limit", type=int, default=0, help="first N test users only (0: all)")
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--beam-width", type=int, default=0, help="0: K beams for each K")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        if not os.path.exists(os.path.join(args.model, name)):
            sys.exit(f"{args.model}: missing {name}")
    with open(os.path.join(args.model, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids = {}
    for role in ("bos_token", "eos_token", "pad_token"):
        ids[role] = tok.token_to_id(tok_config.get(role) or "")
        if ids[role] is None:
            sys.exit(f"{args.model}/tokenizer_config.json: {role} is not a token of tokenizer.json")
    spec_path = os.path.join(args.model, "recommendation.json")
    if not os.path.exists(spec_path):
        sys.exit(f"{args.model}: missing recommendation.json")
    with open(spec_path) as f:
        prompt_fn = beauty_data.prompt_builder(json.load(f))
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device).eval()
    earn = getattr(model.config, "earn", None)
    index = beauty_data.load_index(args.data)
    samples = (beauty_data.test_samples(args.data) if args.split == "test"
               else beauty_data.valid_samples(args.data))
    if args.limit > 0:
        samples = samples[:args.limit]
    trie = rec_model.ItemTrie(index, tok.token_to_id)

    result = {"model": args.model, "split": args.split, "users": len(samples), "earn": earn}
    start = time.time()
    runs = [(args.beam_width, ks)] if args.beam_width > 0 else [(k, [k]) for k in ks]
    for beams, run_ks in runs:
        metrics = rec_model.evaluate(model, tok, index, samples, beams, run_ks, earn=earn,
                                     batch_size=args.batch_size, bos_id=ids["bos_token"],
                                     eos_id=ids["eos_token"], pad_id=ids["pad_token"], trie=trie,
                                     prompt_fn=prompt_fn)
        result.update(metrics)
    result["seconds"] = time.time() - start
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: {len(samples)} {args.split} users, "
              f"{'EARN split ' + str(earn['split_layer']) if earn else 'full attention'}, "
              f"{result['seconds']:.0f} s")
        for k in ks:
            print(f"Recall@{k:<2d} {result[f'recall@{k}']:.4f}   NDCG@{k:<2d} {result[f'ndcg@{k}']:.4f}")


if __name__ == "__main__":
    main()
