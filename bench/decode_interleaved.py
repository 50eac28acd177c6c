#!/usr/bin/env python3
"""earnserve's decode and llama.cpp's, interleaved burst by burst in one run: the comparison of
two engines that both run at the machine's memory bandwidth, on a machine whose bandwidth moves.

Both engines read every weight once per token, so their decode rate is the read bandwidth of the
moment; on a shared VM that bandwidth jumps between levels (on the README's machine 31-35 and
47-62 GB/s) for seconds to minutes at a time, so engines run one after the other, even in
alternating pairs of processes, are compared in whatever levels each happened to draw.
Here both engines are loaded side by side (bench/model_bench --bursts as a child process, llama.cpp
through llama-cpp-python in this one) and take turns: each round prefills the same prompt in both
(untimed), then alternates bursts of --burst greedy tokens, earnserve first in even turns and
llama.cpp first in odd ones, so that every burst of one engine has a burst of the other within
a second of it. Each round's ratio is earnserve's tokens/s over the round's bursts against
llama.cpp's; the summary gives the median and range of the rounds' ratios, each engine's median
burst, and how many leading greedy ids (the prefill's and the bursts') the engines share (random
weights have flat logits, so the two engines' rounding parts them after a while).

  .venv/bin/python bench/decode_interleaved.py --bin build-bench/bench/model_bench \\
      --model DIR --gguf DIR.bf16.gguf --gguf-type bf16 --rounds 20

earnserve runs with the --weight-dtype matching --gguf-type (f32, bf16, and int8 for q8_0).
Run by bench/run_decode_pairs.sh (ROUNDS rounds, default 20). Prints JSON lines.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from bench_baselines import LlamaCppEngine, prompt_ids  # noqa: E402

# earnserve's --weight-dtype for each GGUF type.
OURS = {"f32": "f32", "bf16": "bf16", "q8_0": "int8"}


class Ours:
  """bench/model_bench --bursts, driven over its stdin and stdout."""

  def __init__(self, binary, model, dtype, threads, prompt_len, capacity, label):
    self.proc = subprocess.Popen(
        [binary, "--model", model, "--weight-dtype", dtype, "--threads", str(threads),
         "--prompt-len", str(prompt_len), "--decode-tokens", str(capacity), "--label", label,
         "--bursts"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    self.ready = self._reply("ready")

  def _reply(self, measure):
    for line in self.proc.stdout:
      if line.startswith("{"):
        d = json.loads(line)
        if d["measure"] == "error":
          raise RuntimeError(f"model_bench: {d['message']}")
        if d["measure"] == measure:
          return d
    raise RuntimeError(f"model_bench exited ({self.proc.wait()}) before its {measure!r} line")

  def prefill(self):
    self.proc.stdin.write("prefill\n")
    return self._reply("prefilled")["first_id"]

  def burst(self, k):
    self.proc.stdin.write(f"decode {k}\n")
    d = self._reply("burst")
    return d["seconds"], d["ids"]

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.write("quit\n")
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


class Theirs:
  """llama.cpp's decode, in bursts."""

  def __init__(self, gguf, threads, ids, capacity):
    self.engine = LlamaCppEngine(gguf, threads, len(ids), capacity)
    self.ids = ids
    self.last = None

  def prefill(self):
    self.last = self.engine.prefill(self.ids)
    return self.last

  def burst(self, k):
    out = []
    start = time.perf_counter()
    for _ in range(k):
      self.last = self.engine.decode(self.last)
      out.append(self.last)
    return time.perf_counter() - start, out


def common_prefix(a, b):
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bin", required=True, help="bench/model_bench")
  parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
  parser.add_argument("--gguf", required=True, help="the same model as GGUF")
  parser.add_argument("--gguf-type", default="bf16", choices=sorted(OURS))
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--burst", type=int, default=8, help="tokens per burst")
  parser.add_argument("--bursts-per-round", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=20)
  parser.add_argument("--label", help="model name in the JSON lines (default: directory name)")
  args = parser.parse_args()
  if min(args.threads, args.prompt_len, args.burst, args.bursts_per_round, args.rounds) < 1:
    parser.error("--threads, --prompt-len, --burst, --bursts-per-round and --rounds must be >= 1")
  try:
    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    print(f"decode_interleaved: {args.model}/config.json: {e}", file=sys.stderr)
    return 1
  label = args.label or os.path.basename(os.path.normpath(args.model))
  capacity = args.burst * args.bursts_per_round
  ids = prompt_ids(args.prompt_len, config["vocab_size"], seed=args.prompt_len)
  ours_dtype = OURS[args.gguf_type]
  base = {"model": label, "threads": args.threads, "prompt_len": args.prompt_len,
          "burst_tokens": args.burst, "ours_dtype": ours_dtype, "their_dtype": args.gguf_type}

  ours = Ours(args.bin, args.model, ours_dtype, args.threads, args.prompt_len, capacity, label)
  try:
    theirs = Theirs(args.gguf, args.threads, ids, capacity)
  except (FileNotFoundError, ValueError) as e:
    ours.close()
    print(f"decode_interleaved: {e}", file=sys.stderr)
    return 1
  engines = {"earnserve": ours, "llama.cpp": theirs}
  dtypes = {"earnserve": ours_dtype, "llama.cpp": args.gguf_type}
  try:
    rows = []
    ratios = []  # per round: earnserve's tokens/s over llama.cpp's
    agree = []  # per round: how many leading greedy ids the engines share
    # Round -1 is an untimed warm-up (faults in both engines' weights and buffers).
    for rnd in range(-1, args.rounds):
      generated = {name: [e.prefill()] for name, e in engines.items()}
      seconds = {name: 0.0 for name in engines}
      for turn in range(args.bursts_per_round):
        order = ["earnserve", "llama.cpp"] if (rnd + turn) % 2 == 0 else ["llama.cpp",
                                                                           "earnserve"]
        for name in order:
          s, out = engines[name].burst(args.burst)
          generated[name] += out
          seconds[name] += s
          if rnd >= 0:
            line = {**base, "measure": "burst", "engine": name, "weight_dtype": dtypes[name],
                    "round": rnd, "turn": turn, "seconds": s, "tokens_per_s": args.burst / s}
            print(json.dumps(line), flush=True)
            rows.append(line)
      if rnd >= 0:
        agree.append(common_prefix(generated["earnserve"], generated["llama.cpp"]))
        rate = {name: capacity / seconds[name] for name in engines}
        ratios.append(rate["earnserve"] / rate["llama.cpp"])
        print(json.dumps({**base, "measure": "round", "round": rnd,
                          "earnserve_tokens_per_s": rate["earnserve"],
                          "llama.cpp_tokens_per_s": rate["llama.cpp"],
                          "ratio": ratios[-1],
                          "same_leading_ids": agree[-1]}),
              flush=True)
  finally:
    ours.close()

  medians = {name: statistics.median(r["tokens_per_s"] for r in rows if r["engine"] == name)
             for name in engines}
  print(json.dumps({**base, "measure": "summary", "rounds": args.rounds,
                    "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
                    "max_ratio": max(ratios), "rounds_ahead": sum(1 for x in ratios if x >= 1.0),
                    "earnserve_median_burst_tokens_per_s": medians["earnserve"],
                    "llama.cpp_median_burst_tokens_per_s": medians["llama.cpp"],
                    "same_leading_ids_median": statistics.median(agree),
                    "ids_per_round": capacity + 1}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
