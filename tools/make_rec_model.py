#!/usr/bin/env python3
"""Writes a random Llama recommendation model with the Beauty vocabulary, for benchmarks.

Copies the tokenizer, recommendation.json, catalogue and titles from a model directory that has
them (by default the tiny fixture tests/fixtures/models/tiny-rec) and writes random weights of
the requested size. Stands in for a trained recommender until one exists: timings only. Not
committed; e.g.
  .venv/bin/python tools/make_rec_model.py --layers 8 --hidden 512 --out /tmp/rec-8x512
"""
import argparse
import os
import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--like", default=os.path.join(ROOT, "tests", "fixtures", "models", "tiny-rec"))
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "recommendation.json",
                 "catalogue.json", "titles.tsv"):
        src = os.path.join(args.like, name)
        if os.path.exists(src):
            shutil.copy(src, args.out)
    like = LlamaConfig.from_pretrained(args.like)
    config = LlamaConfig(
        vocab_size=like.vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=2048, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        initializer_range=0.05)
    torch.manual_seed(args.seed)
    LlamaForCausalLM(config).float().save_pretrained(args.out, safe_serialization=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
