#!/usr/bin/env python3
"""Baseline for bench/rec_bench: transformers' generate() doing what the LLMRec papers do.

Catalogue-constrained beam search with prefix_allowed_tokens_fn over the item trie, on the same
model and the same LC-Rec prompts of the Beauty test users, batches of --batch prompts
(left-padded), all requests submitted at once. Prints rec_bench's JSON line format.
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
import beauty_data  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    index = beauty_data.load_index(args.data)
    eos = 2
    children = {}
    for codes in index.values():
        ids = tok.convert_tokens_to_ids(codes)
        for d in range(len(ids)):
            children.setdefault(tuple(ids[:d]), set()).add(ids[d])
    allowed = {k: sorted(v) for k, v in children.items()}
    users = beauty_data.test_samples(args.data)
    # The prompt the engine builds from the checkpoint's recommendation.json.
    with open(os.path.join(args.model, "recommendation.json")) as f:
        prompt_fn = beauty_data.prompt_builder(json.load(f))
    prompts = [prompt_fn(index, users[i % len(users)][1]) for i in range(args.requests)]

    latencies = []
    start = time.perf_counter()
    for b in range(0, len(prompts), args.batch):
        batch = prompts[b:b + args.batch]
        enc = tok(batch, return_tensors="pt", padding=True)
        width = enc.input_ids.shape[1]

        def fn(batch_id, input_ids):
            return allowed.get(tuple(input_ids[width:].tolist()), [eos])

        model.generate(**enc, num_beams=args.beam, num_return_sequences=args.beam,
                       do_sample=False, max_new_tokens=5, prefix_allowed_tokens_fn=fn,
                       eos_token_id=eos, pad_token_id=0, early_stopping=False)
        now = (time.perf_counter() - start) * 1000
        latencies.extend([now] * len(batch))
    wall = (time.perf_counter() - start) * 1000
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * (len(latencies) - 1) + 0.5))]
    print(json.dumps({"bench": "rec_throughput", "engine": "transformers", "beam": args.beam,
                      "batch": args.batch, "requests": args.requests,
                      "requests_per_s": args.requests * 1000 / wall, "p50_ms": pct(0.5),
                      "p99_ms": pct(0.99), "threads": args.threads}))


if __name__ == "__main__":
    main()
