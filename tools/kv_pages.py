#!/usr/bin/env python3
"""KV pages per request of a recommendation checkpoint on the test prompts, from page arithmetic.

For every test user the prompt the engine builds from the checkpoint's recommendation.json is
tokenized (P tokens, BOS included); one beam holding one item keeps g = code length (4) generated
tokens' KV (the final </s> is sampled, never fed back). In layer-slots (page slots x layers, the
same bytes per slot in both models), with block size B, the register layers' block size b
(--earn-block-size, the engine's default 2; 0 = B), L layers, EARN split k and R register
tokens (prefix + suffix):
    full: L * B * ceil((P + g) / B)
    EARN: k * B * ceil((P + R + g) / B) + (L - k) * b * ceil((R + g) / b)
the formulas README's EARN benchmark checks against the engine's allocations. For an EARN
checkpoint the full figure is the same model without registers or split (same prompts).

  python3 tools/kv_pages.py --model models/beauty-earn [--block-sizes 8,16] [--earn-block-size 2]
      [--json]
"""
import argparse
import json
import math
import os

from tokenizers import Tokenizer

import beauty_data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR)
    ap.add_argument("--block-sizes", default="8,16")
    ap.add_argument("--earn-block-size", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(args.model, "recommendation.json")) as f:
        spec = json.load(f)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    index = beauty_data.load_index(args.data)
    prompt_fn = beauty_data.prompt_builder(spec)
    samples = beauty_data.test_samples(args.data)
    lengths = [len(e.ids) for e in tok.encode_batch([prompt_fn(index, h) for _, h, _ in samples])]
    g = len(next(iter(index.values())))
    layers = config["num_hidden_layers"]
    earn = config.get("earn")
    split = earn["split_layer"] if earn else layers
    regs = len(earn["prefix_register_ids"]) + len(earn["suffix_register_ids"]) if earn else 0
    n = len(lengths)
    result = {"model": args.model, "users": n, "mean_prompt_tokens": sum(lengths) / n,
              "layers": layers, "split_layer": split, "register_tokens": regs}
    result["earn_block_size"] = args.earn_block_size
    for b in [0] + [int(x) for x in args.block_sizes.split(",")]:
        # Slots a run of t tokens takes in pages of `size` tokens (0: no page rounding).
        def slots(t, size):
            return t if size == 0 else size * math.ceil(t / size)
        bm = b if b == 0 or args.earn_block_size == 0 else args.earn_block_size

        def earn_slots(p):
            return split * slots(p + regs + g, b) + (layers - split) * slots(regs + g, bm)
        full = sum(layers * slots(p + g, b) for p in lengths) / n
        above_full = sum((layers - split) * slots(p + g, b) for p in lengths) / n
        ear = sum(earn_slots(p) for p in lengths) / n
        above_earn = (layers - split) * slots(regs + g, bm)
        name = "per_token" if b == 0 else f"block_{b}"
        result[name] = {"full": full, "earn": ear, "saved": 1 - ear / full,
                        "marked_block_size": bm,
                        "saved_above_split": 1 - above_earn / above_full if above_full else 0.0,
                        "saved_min_request": min(
                            1 - earn_slots(p) / (layers * slots(p + g, b)) for p in lengths)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.model}: {n} test prompts, mean {result['mean_prompt_tokens']:.1f} tokens, "
          f"{layers} layers, split {split}, {regs} register tokens, {g} generated tokens kept")
    for key in [k for k in result if k == "per_token" or k.startswith("block_")]:
        r = result[key]
        unit = ("entries" if key == "per_token"
                else f"layer-slots (register pages {r['marked_block_size']})")
        print(f"{key:<10} full {r['full']:.1f} {unit}, EARN {r['earn']:.1f}: "
              f"{100 * r['saved']:.1f}% saved ({100 * r['saved_above_split']:.1f}% above the "
              f"split, worst request {100 * r['saved_min_request']:.1f}%)")


if __name__ == "__main__":
    main()
