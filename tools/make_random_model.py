#!/usr/bin/env python3
"""Writes a random LlamaForCausalLM checkpoint (config.json + safetensors) for benchmarks.

The weights are random (transformers' own initialisation, fixed seed), so the model's outputs mean
nothing; it has the shapes of a real model for timing. No tokenizer is written: benchmarks feed
token ids. Not committed; e.g.
  .venv/bin/python tools/make_random_model.py --layers 8 --hidden 1024 --out /tmp/llama-8x1024
  .venv/bin/python tools/make_random_model.py --shape qwen2.5-0.5b --out /tmp/qwen2.5-0.5b-shape

--shape takes the sizes of a published model (as a Llama: no q/k/v biases), overriding the size
options: qwen2.5-0.5b (24 layers, hidden 896, MLP 4864, 14 / 2 heads, vocab 151,936, tied, 494M
parameters) or llama-3.2-1b (16 layers, hidden 2048, MLP 8192, 32 / 8 heads, vocab 128,256, tied,
1.24B parameters).
"""

import argparse
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "qwen2.5-0.5b": dict(layers=24, hidden=896, intermediate=4864, heads=14, kv_heads=2,
                         vocab=151936, tied=True),
    "llama-3.2-1b": dict(layers=16, hidden=2048, intermediate=8192, heads=32, kv_heads=8,
                         vocab=128256, tied=True),
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--shape", choices=sorted(SHAPES),
                      help="a published model's sizes (overrides --layers ... --vocab)")
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
  parser.add_argument("--tied", action="store_true", help="lm_head shares the embedding table")
  args = parser.parse_args()
  if args.shape:
    for key, value in SHAPES[args.shape].items():
      setattr(args, key, value)
  if args.hidden % args.heads or args.heads % args.kv_heads:
    parser.error("--hidden must be divisible by --heads, and --heads by --kv-heads")

  config = LlamaConfig(
      vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
      num_hidden_layers=args.layers, num_attention_heads=args.heads,
      num_key_value_heads=args.kv_heads, max_position_embeddings=args.max_positions,
      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=args.tied, bos_token_id=1,
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
