#!/usr/bin/env python3
"""Averages the weights of checkpoints fine-tuned from one parent (a "model soup").

    .venv/bin/python tools/average_checkpoints.py --out DIR CKPT CKPT [CKPT ...]

Every input must have the same config.json (architecture, sizes, EARN layout) and the same
tensor names and shapes; the output is the element-wise mean of model.safetensors, with the
first input's other files (tokenizer, recommendation.json, catalogue, titles) and a
train_log.json that lists the inputs and keeps each one's log. Averaging only makes sense for
checkpoints that share a parent (tools/TRAINING.md: the recency fine-tunes of one model);
unrelated models average to noise.
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
KEEP = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "recommendation.json", "catalogue.json", "titles.tsv")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("inputs", nargs="+", help="checkpoint directories (at least two)")
    args = ap.parse_args()
    if len(args.inputs) < 2:
        sys.exit("average_checkpoints: give at least two checkpoints")
    configs = []
    for d in args.inputs:
        for name in ("config.json", WEIGHTS):
            if not os.path.exists(os.path.join(d, name)):
                sys.exit(f"average_checkpoints: {d} has no {name}")
        with open(os.path.join(d, "config.json")) as f:
            configs.append(json.load(f))
    keys = ("architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "vocab_size", "earn")
    for d, c in zip(args.inputs[1:], configs[1:]):
        diff = [k for k in keys if c.get(k) != configs[0].get(k)]
        if diff:
            sys.exit(f"average_checkpoints: {d} differs from {args.inputs[0]} in {', '.join(diff)}")

    total = None
    for d in args.inputs:
        tensors = load_file(os.path.join(d, WEIGHTS))
        if total is None:
            total = {k: v.to(torch.float64) for k, v in tensors.items()}
            dtypes = {k: v.dtype for k, v in tensors.items()}
            continue
        if tensors.keys() != total.keys():
            sys.exit(f"average_checkpoints: {d} holds other tensors than {args.inputs[0]}")
        for k, v in tensors.items():
            if v.shape != total[k].shape:
                sys.exit(f"average_checkpoints: {d}: {k} is {tuple(v.shape)}, "
                         f"{args.inputs[0]} has {tuple(total[k].shape)}")
            total[k] += v.to(torch.float64)
    n = len(args.inputs)
    mean = {k: (v / n).to(dtypes[k]).contiguous() for k, v in total.items()}

    os.makedirs(args.out, exist_ok=True)
    for name in KEEP:
        src = os.path.join(args.inputs[0], name)
        if os.path.exists(src):
            dst = os.path.join(args.out, name)
            if os.path.exists(dst):
                os.chmod(dst, 0o644)
            shutil.copy(src, dst)
    save_file(mean, os.path.join(args.out, WEIGHTS), metadata={"format": "pt"})
    logs = {}
    for d in args.inputs:
        path = os.path.join(d, "train_log.json")
        if os.path.exists(path):
            with open(path) as f:
                logs[os.path.abspath(d)] = json.load(f)
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"recipe": "mean of the weights of the inputs (tools/average_checkpoints.py)",
                   "averaged_from": [os.path.abspath(d) for d in args.inputs],
                   "input_logs": logs}, f, indent=2)
    print(f"wrote {args.out}: mean of {n} checkpoints, {len(mean)} tensors")


if __name__ == "__main__":
    main()
