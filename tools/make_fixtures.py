#!/usr/bin/env python3
"""Writes the model test fixtures: two tiny random checkpoints and reference logits from transformers.

  tests/fixtures/models/tiny-qwen2/        Qwen2ForCausalLM, q/k/v bias, GQA, untied, f32
  tests/fixtures/models/tiny-llama3-bf16/  LlamaForCausalLM, llama3 rope scaling, explicit head_dim,
                                           attention_bias, stored in bf16
  tests/fixtures/logits/<model>.json       prompts, full-vocab logits at chosen positions (fp32,
                                           eager attention) and greedy continuations

The TinyStories reference reads the shared checkpoint (../shared/models/tinystories-656k).
Deterministic: fixed seeds, CPU, fp32. Run with the project's pinned venv:
  .venv/bin/python tools/make_fixtures.py
"""

import argparse
import json
import os
import shutil

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))
SIG_DIGITS = 7
MIN_GREEDY_MARGIN = 1e-3


def perturb_(model, seed, scale):
  """Re-draws every parameter so that biases and norm weights are not their trivial init (0 / 1)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in sorted(model.named_parameters()):
      noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
      if name.endswith("norm.weight") or "layernorm" in name:
        p.copy_(1.0 + 0.2 * noise)
      elif name.endswith(".bias"):
        p.copy_(0.2 * noise)
      else:
        p.copy_(scale * noise)


def make_tiny_qwen2(out_dir):
  config = Qwen2Config(
      vocab_size=300, hidden_size=64, intermediate_size=176, num_hidden_layers=3,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
      rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
      eos_token_id=2)
  torch.manual_seed(1234)
  model = Qwen2ForCausalLM(config).eval()
  perturb_(model, seed=1, scale=0.12)
  model.save_pretrained(out_dir, safe_serialization=True)


def make_tiny_llama3_bf16(out_dir):
  config = LlamaConfig(
      vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
      rms_norm_eps=1e-5, attention_bias=True, tie_word_embeddings=False, bos_token_id=1,
      eos_token_id=[2, 3],
      rope_theta=500000.0,
      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
  torch.manual_seed(5678)
  model = LlamaForCausalLM(config).eval()
  perturb_(model, seed=2, scale=0.12)
  model = model.to(torch.bfloat16)
  model.config.dtype = torch.bfloat16
  model.save_pretrained(out_dir, safe_serialization=True)


def rounded(values):
  return [float(f"{v:.{SIG_DIGITS}g}") for v in values]


def chosen_positions(n):
  return sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})


def greedy(model, prompt, max_new_tokens):
  """transformers' greedy generate with EOS ignored (so the length is fixed), plus the smallest
  top-1/top-2 logit margin along the path, to tell whether the fixture is robust to rounding."""
  ids = torch.tensor([prompt])
  out = model.generate(ids, do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=0,
                       eos_token_id=None, pad_token_id=0, output_logits=True,
                       return_dict_in_generate=True)
  new_tokens = out.sequences[0, len(prompt):].tolist()
  margin = min(float((lambda t: t[0] - t[1])(torch.topk(l[0].float(), 2).values)) for l in out.logits)
  return new_tokens, margin


def reference(model_dir, rel_dir, prompts, greedy_cases, out_path):
  model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                               attn_implementation="eager").eval()
  model.generation_config.eos_token_id = None
  doc = {"model_dir": rel_dir,
         "note": "fp32 eager transformers " + __import__("transformers").__version__ +
                 "; logits rounded to %d significant digits" % SIG_DIGITS,
         "inv_freq": [float(v) for v in model.model.rotary_emb.inv_freq.tolist()],
         "prompts": [], "greedy": []}
  with torch.no_grad():
    for prompt in prompts:
      logits = model(torch.tensor([prompt])).logits[0]
      positions = chosen_positions(len(prompt))
      doc["prompts"].append({"token_ids": prompt, "positions": positions,
                             "logits": [rounded(logits[p].tolist()) for p in positions]})
    for candidates, n in greedy_cases:
      # The first candidate prompt whose greedy path has no near tie: a tie would make the fixture
      # depend on rounding rather than on the model being right.
      for prompt in candidates:
        new_tokens, margin = greedy(model, prompt, n)
        print(f"  greedy from {len(prompt)} tokens: {n} new, min top-2 margin {margin:.4g}")
        if margin >= MIN_GREEDY_MARGIN:
          break
      else:
        raise SystemExit(f"{out_path}: every candidate greedy path has a near tie")
      doc["greedy"].append({"prompt": prompt, "new_tokens": new_tokens, "min_margin": margin})
  with open(out_path, "w") as f:
    json.dump(doc, f, separators=(",", ":"))
    f.write("\n")
  print(f"wrote {out_path} ({os.path.getsize(out_path)} bytes)")


def random_prompt(seed, n, vocab):
  gen = torch.Generator().manual_seed(seed)
  return torch.randint(3, vocab, (n,), generator=gen).tolist()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.parse_args()
  torch.set_num_threads(1)
  fixtures = os.path.join(REPO, "tests", "fixtures")
  models = os.path.join(fixtures, "models")
  logits = os.path.join(fixtures, "logits")
  os.makedirs(logits, exist_ok=True)

  for name, make in [("tiny-qwen2", make_tiny_qwen2), ("tiny-llama3-bf16", make_tiny_llama3_bf16)]:
    out_dir = os.path.join(models, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    make(out_dir)
    for extra in ("generation_config.json",):
      path = os.path.join(out_dir, extra)
      if os.path.exists(path):
        os.remove(path)
    print(f"wrote {out_dir}")
    prompts = [random_prompt(10, 7, 300), random_prompt(11, 37, 300), random_prompt(12, 130, 300)]
    greedy_cases = [([[1]], 24), ([random_prompt(seed, 9, 300) for seed in range(13, 33)], 24)]
    reference(out_dir, f"tests/fixtures/models/{name}", prompts, greedy_cases,
              os.path.join(logits, f"{name}.json"))

  from tokenizers import Tokenizer
  ts_dir = os.path.join(SHARED, "models", "tinystories-656k")
  tok = Tokenizer.from_file(os.path.join(ts_dir, "tokenizer.json"))
  text = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
          "sun with her dog, Max. One day, Lily and Max went to the park. They saw a big tree with "
          "red apples. Lily wanted an apple, but the tree was too tall. Max barked and ran around "
          "the tree. Then a kind old man came and helped Lily pick an apple. Lily said thank you "
          "and shared the apple with Max. They were very happy and went home to tell Mom. Mom smiled "
          "and gave Lily a big hug. She made a warm apple pie for dinner, and Max got a bone.")
  story = [1] + tok.encode(text, add_special_tokens=False).ids
  short = [1] + tok.encode("Tom had a red ball.", add_special_tokens=False).ids
  assert len(story) > 100, len(story)
  prompts = [[1], short, story]
  greedy_cases = [([[1]], 120), ([short], 100)]
  reference(ts_dir, "shared:models/tinystories-656k", prompts, greedy_cases,
            os.path.join(logits, "tinystories.json"))


if __name__ == "__main__":
  main()
