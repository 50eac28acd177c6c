#!/usr/bin/env python3
"""Prefill and decode speed of transformers (torch, CPU, float32 or bfloat16) and llama.cpp
(llama-cpp-python, a GGUF file: F32, BF16 or Q8_0) on one model, printed as the same JSON lines as
bench/model_bench.

Both engines get the prompt ids bench/model_bench.cpp generates (the same 64-bit LCG, seeded with
the prompt length), prefill them in one batch, then decode --decode-tokens tokens greedily one at
a time. Each figure is the best of --repeats timed repetitions after one untimed warm-up.
--step-rows B (transformers) also times one batched step of B sequences holding 16-token prompts,
one token each, as bench/model_bench does.

  .venv/bin/python tools/bench_baselines.py --model DIR --gguf FILE.gguf --prompt-len 128 \
      --decode-tokens 128 --threads 2 [--engines transformers,llama.cpp] \
      [--torch-dtype bfloat16] [--gguf-type q8_0] [--step-rows 10]
"""

import argparse
import json
import os
import sys
import time

import numpy as np

GREEDY_IDS_SHOWN = 16
MASK64 = (1 << 64) - 1


def prompt_ids(count, vocab, seed):
  """Mirror of prompt_ids() in bench/model_bench.cpp."""
  first = 3 if vocab > 3 else 0
  ids, x = [], seed
  for _ in range(count):
    x = (x * 6364136223846793005 + 1442695040888963407) & MASK64
    ids.append(first + (x >> 33) % (vocab - first))
  return ids


class FlopModel:
  """The FLOP counts bench/model_bench.cpp documents, from config.json."""

  def __init__(self, config):
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    layers = config["num_hidden_layers"]
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    self.layer_params = layers * (hidden * (q_dim + 2 * kv_dim) + q_dim * hidden +
                                  3 * hidden * config["intermediate_size"])
    self.lm_head_params = config["vocab_size"] * hidden
    self.per_pair = 4.0 * layers * heads * head_dim

  def prefill(self, n):
    return 2.0 * self.layer_params * n + 2.0 * self.lm_head_params + self.per_pair * n * (n + 1) / 2

  def decode(self, n, m):
    return (m * 2.0 * (self.layer_params + self.lm_head_params) +
            self.per_pair * (m * (n + 1) + m * (m - 1) / 2))


class TransformersEngine:
  name = "transformers"

  def __init__(self, model_dir, threads, attention, dtype="float32"):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    self.torch = torch
    self.model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, dtype), attn_implementation=attention).eval()
    self.past = None

  def prefill(self, ids):
    """Runs the prompt from an empty cache; returns the last position's argmax."""
    with self.torch.inference_mode():
      out = self.model(input_ids=self.torch.tensor([ids]), use_cache=True, logits_to_keep=1)
    self.past = out.past_key_values
    return int(out.logits[0, -1].argmax())

  def decode(self, token):
    with self.torch.inference_mode():
      out = self.model(input_ids=self.torch.tensor([[token]]), past_key_values=self.past,
                       use_cache=True)
    self.past = out.past_key_values
    return int(out.logits[0, -1].argmax())

  def step_seconds(self, prompts, repeats):
    """Best seconds of one batched step: len(prompts) sequences, one new token each."""
    torch = self.torch
    with torch.inference_mode():
      out = self.model(input_ids=torch.tensor(prompts), use_cache=True, logits_to_keep=1)
      past = out.past_key_values
      best = float("inf")
      for r in range(repeats + 1):  # the first step is an untimed warm-up
        tokens = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        out = self.model(input_ids=tokens, past_key_values=past, use_cache=True)
        if r > 0:
          best = min(best, time.perf_counter() - start)
        past = out.past_key_values
    return best


class LlamaCppEngine:
  """llama.cpp with an F32 KV cache like earnserve's (its default is F16)."""
  name = "llama.cpp"

  def __init__(self, gguf_path, threads, prompt_len, decode_tokens):
    import llama_cpp
    if not os.path.exists(gguf_path):
      raise FileNotFoundError(f"{gguf_path}: no such file (tools/convert_hf_to_gguf.py makes it)")
    self.llm = llama_cpp.Llama(model_path=gguf_path, n_ctx=prompt_len + decode_tokens + 8,
                               n_batch=prompt_len, n_ubatch=prompt_len, n_threads=threads,
                               n_threads_batch=threads, logits_all=False,
                               type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                               verbose=False)
    self.n_vocab = self.llm.n_vocab()

  def _argmax(self):
    # With logits_all off llama.cpp keeps only the batch's last row.
    logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))
    return int(np.argmax(logits))

  def prefill(self, ids):
    self.llm.reset()
    self.llm.eval(ids)
    return self._argmax()

  def decode(self, token):
    self.llm.eval([token])
    return self._argmax()


def measure(engine, ids, decode_tokens, repeats):
  """(best prefill seconds, best decode seconds, every repeat's decode seconds, greedy ids) after
  one untimed warm-up."""
  token = engine.prefill(ids)
  for _ in range(min(decode_tokens, 4)):
    token = engine.decode(token)
  best_prefill = best_decode = float("inf")
  greedy = []
  decode_each = []
  for _ in range(repeats):
    start = time.perf_counter()
    token = engine.prefill(ids)
    best_prefill = min(best_prefill, time.perf_counter() - start)
    if decode_tokens == 0:
      continue
    tokens = [token]
    start = time.perf_counter()
    for _ in range(decode_tokens):
      tokens.append(engine.decode(tokens[-1]))
    decode_each.append(time.perf_counter() - start)
    best_decode = min(best_decode, decode_each[-1])
    greedy = tokens
  return best_prefill, best_decode, decode_each, greedy[:GREEDY_IDS_SHOWN]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
  parser.add_argument("--gguf", help="the model as GGUF (needed for llama.cpp)")
  parser.add_argument("--gguf-type", default="f32", choices=["f32", "bf16", "q8_0"],
                      help="the GGUF file's matrix type (tools/convert_hf_to_gguf.py --outtype)")
  parser.add_argument("--torch-dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--step-rows", type=int, default=0,
                      help="also time a batched step of this many sequences (transformers)")
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--decode-tokens", type=int, default=64)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--engines", default="transformers,llama.cpp")
  parser.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"],
                      help="transformers attention implementation")
  parser.add_argument("--label", help="model name in the JSON lines (default: directory name)")
  args = parser.parse_args()
  if (args.prompt_len < 1 or args.decode_tokens < 0 or args.threads < 1 or args.repeats < 1 or
      args.step_rows < 0):
    parser.error("--prompt-len, --threads, --repeats must be >= 1 and --decode-tokens, "
                 "--step-rows >= 0")
  config_path = os.path.join(args.model, "config.json")
  try:
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    print(f"bench_baselines: {config_path}: {e}", file=sys.stderr)
    return 1
  label = args.label or os.path.basename(os.path.normpath(args.model))
  flops = FlopModel(config)
  n, m = args.prompt_len, args.decode_tokens
  ids = prompt_ids(n, config["vocab_size"], seed=n)

  for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
    if name == "transformers":
      engine = TransformersEngine(args.model, args.threads, args.attention, args.torch_dtype)
      extra = {"attention": args.attention,
               "weight_dtype": {"float32": "f32", "bfloat16": "bf16"}[args.torch_dtype]}
    elif name == "llama.cpp":
      if not args.gguf:
        parser.error("--gguf is required for llama.cpp")
      try:
        engine = LlamaCppEngine(args.gguf, args.threads, n, m)
      except (FileNotFoundError, ValueError) as e:
        print(f"bench_baselines: {e}", file=sys.stderr)
        return 1
      extra = {"weight_dtype": args.gguf_type}
    else:
      parser.error(f"unknown engine {name!r} (transformers, llama.cpp)")
    prefill_s, decode_s, decode_each, greedy = measure(engine, ids, m, args.repeats)
    base = {"engine": name, "model": label, "threads": args.threads, "repeats": args.repeats,
            **extra}
    print(json.dumps({**base, "measure": "prefill", "prompt_len": n, "seconds": prefill_s,
                      "tokens_per_s": n / prefill_s,
                      "gflops": flops.prefill(n) / prefill_s / 1e9}), flush=True)
    if m > 0:
      print(json.dumps({**base, "measure": "decode", "prompt_len": n, "decode_tokens": m,
                        "seconds": decode_s, "tokens_per_s": m / decode_s,
                        "tokens_per_s_each": [m / s for s in decode_each],
                        "gflops": flops.decode(n, m) / decode_s / 1e9, "greedy_ids": greedy}),
            flush=True)
    if args.step_rows > 0 and name == "transformers":
      prompts = [prompt_ids(16, config["vocab_size"], seed=1000 + s) for s in range(args.step_rows)]
      seconds = engine.step_seconds(prompts, args.repeats)
      print(json.dumps({**base, "measure": "step", "rows": args.step_rows, "seconds": seconds,
                        "rows_per_s": args.step_rows / seconds}), flush=True)
    del engine
  return 0


if __name__ == "__main__":
  sys.exit(main())
