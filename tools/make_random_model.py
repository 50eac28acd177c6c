#!/usr/bin/env python3
"""Writes a random LlamaForCausalLM checkpoint (config.json + safetensors) for benchmarks.

The weights are random (transformers' own initialisation, fixed seed), so the model's outputs mean
nothing; it has the shapes of a real model for timing. No tokenizer is written: benchmarks feed
token ids. Not committed; e.g.
  .venv/bin/python tools/make_random_model.py --layers 8 --hidden 1024 --out /tmp/llama-8x1024
"""

import argparse
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--hidden", type=int, default=1024)
  parser.add_argument("--intermediate", type=int, default=2816)
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--kv-heads", type=int, default=16, help="16 for MHA, 4 for GQA")
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--max-positions", type=int, default=4096)
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                      help="storage dtype of the safetensors file")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.hidden % args.heads or args.heads % args.kv_heads:
    parser.error("--hidden must be divisible by --heads, and --heads by --kv-heads")

  config = LlamaConfig(
      vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
      num_hidden_layers=args.layers, num_attention_heads=args.heads,
      num_key_value_heads=args.kv_heads, max_position_embeddings=args.max_positions,
      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
      eos_token_id=2)
  torch.manual_seed(args.seed)
  with torch.no_grad():
    model = LlamaForCausalLM(config).eval()
  dtype = getattr(torch, args.dtype)
  model = model.to(dtype)
  model.config.dtype = dtype
  model.save_pretrained(args.out, safe_serialization=True)
  extra = os.path.join(args.out, "generation_config.json")
  if os.path.exists(extra):
    os.remove(extra)
  params = sum(p.numel() for p in model.parameters())
  print(f"wrote {args.out}: {args.layers} layers, hidden {args.hidden}, {params / 1e6:.1f}M parameters")


if __name__ == "__main__":
  main()
