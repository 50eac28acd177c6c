#!/usr/bin/env python3
"""Tables of bench/run_decode_pairs.sh's JSON lines: earnserve's decode against llama.cpp's at
each matching dtype. First the interleaved runs (bench/decode_interleaved.py: both engines loaded
side by side, taking turns in bursts; the median and range of the rounds' ratios). Then the
alternating pairs of processes, from every timed decode (pooled: median, quartiles, best), pair
by pair (each run's median over its repeats, earnserve's over llama.cpp's in the same pair, then
the median of those ratios) and, where both engines' samples show the machine's two bandwidth
levels, level by level. Rates are also shown as GB/s of weights read (both engines read the same
weights once per token), beside the memcpy bandwidth model_bench measured.

  python3 bench/decode_pairs_table.py /tmp/earnserve-llm-bench/decode_pairs.jsonl
"""

import json
import statistics
import sys

# earnserve's dtype name in the JSON lines (model_bench says i8) -> llama.cpp's GGUF type.
MATCH = {"f32": "f32", "bf16": "bf16", "i8": "q8_0"}
SHOWN = {"i8": "int8", "f32": "F32", "bf16": "BF16", "q8_0": "Q8_0"}


# Two levels are told apart when the upper group's median is this many times the lower's.
LEVEL_GAP = 1.2


def levels(values):
  """The samples split into a slow and a fast level where the machine's bandwidth jumped between
  two (the split minimising the groups' squared deviations, as 2-means in one dimension), or
  None when one level explains them. (slow samples, fast samples)."""
  xs = sorted(values)
  best = None
  for i in range(1, len(xs)):
    lo, hi = xs[:i], xs[i:]
    cost = sum((x - statistics.fmean(lo)) ** 2 for x in lo) + sum(
        (x - statistics.fmean(hi)) ** 2 for x in hi)
    if best is None or cost < best[0]:
      best = (cost, lo, hi)
  if best is None or len(best[1]) < 2 or len(best[2]) < 2:
    return None
  _, lo, hi = best
  if statistics.median(hi) < LEVEL_GAP * statistics.median(lo):
    return None
  return lo, hi


def quartiles(values):
  if len(values) < 2:
    return values[0], values[0]
  q = statistics.quantiles(values, n=4, method="inclusive")
  return q[0], q[2]


def main(path):
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip().startswith("{")]
  machine = next((r for r in rows if r["measure"] == "machine"), {})
  print(f"CPU: {machine.get('lscpu_model', '?')}, {machine.get('threads', '?')} threads, "
        f"load before {machine.get('loadavg', '?')}")
  summaries = [r for r in rows if r["measure"] == "summary"]
  if summaries:
    print("\nInterleaved bursts (both engines loaded, taking turns):\n")
    print("| shape | earnserve | llama.cpp | rounds | earnserve median burst tok/s | "
          "llama.cpp median burst tok/s | ratio, median of rounds (range) | rounds ahead | "
          "leading greedy ids shared |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in summaries:
      print(f"| {r['model']} | {SHOWN.get(r['ours_dtype'], r['ours_dtype'])} | "
            f"{SHOWN.get(r['their_dtype'], r['their_dtype'])} | {r['rounds']} | "
            f"{r['earnserve_median_burst_tokens_per_s']:.1f} | "
            f"{r['llama.cpp_median_burst_tokens_per_s']:.1f} | {r['median_ratio']:.2f}x "
            f"({r['min_ratio']:.2f}-{r['max_ratio']:.2f}) | {r['rounds_ahead']} of {r['rounds']} | "
            f"{r['same_leading_ids_median']:.0f} of {r['ids_per_round']} |")
  if not any(r["measure"] == "decode" for r in rows):
    print(f"\nJSON lines: {path}")
    return 0
  print("\nAlternating pairs of processes:")
  print("\n| shape | dtype | engine | runs | timed decodes | median tok/s | quartiles | best | "
        "median GB/s of weights |")
  print("|---|---|---|---:|---:|---:|---:|---:|---:|")
  summary = []
  for shape in dict.fromkeys(r["model"] for r in rows if r.get("model")):
    mine = [r for r in rows if r.get("model") == shape]
    copies = [r["gb_per_s"] for r in mine if r["measure"] == "copy"]
    for ours_dtype, their_dtype in MATCH.items():
      runs = {}
      for engine, dtype in (("earnserve", ours_dtype), ("llama.cpp", their_dtype)):
        runs[engine] = [r for r in mine if r["measure"] == "decode" and
                        r.get("engine") == engine and r.get("weight_dtype") == dtype]
      if not runs["earnserve"] or not runs["llama.cpp"]:
        continue
      # Bytes of weights per token, from earnserve's lines (the same weights for both).
      ref = runs["earnserve"][0]
      gb_per_token = ref["weight_gb_per_s"] / ref["tokens_per_s"]
      medians = {}
      split = {}
      for engine, found in runs.items():
        samples = [x for r in found for x in r.get("tokens_per_s_each", [r["tokens_per_s"]])]
        med = statistics.median(samples)
        lo, hi = quartiles(samples)
        medians[engine] = med
        split[engine] = levels(samples)
        dtype = ours_dtype if engine == "earnserve" else their_dtype
        print(f"| {shape} | {SHOWN.get(ours_dtype)} | {engine} {SHOWN.get(dtype)} | {len(found)} | "
              f"{len(samples)} | {med:.1f} | {lo:.1f}-{hi:.1f} | {max(samples):.1f} | "
              f"{med * gb_per_token:.1f} |")
      pair_ratios = []
      for pair in sorted({r["pair"] for r in runs["earnserve"]}):
        a = [r for r in runs["earnserve"] if r["pair"] == pair]
        b = [r for r in runs["llama.cpp"] if r["pair"] == pair]
        if a and b:
          pair_ratios.append(
              statistics.median(a[0].get("tokens_per_s_each", [a[0]["tokens_per_s"]])) /
              statistics.median(b[0].get("tokens_per_s_each", [b[0]["tokens_per_s"]])))
      summary.append((shape, ours_dtype, their_dtype, medians, pair_ratios, copies, split,
                      gb_per_token))
  print()
  for shape, ours_dtype, their_dtype, medians, pair_ratios, copies, split, gb in summary:
    ahead = sum(1 for x in pair_ratios if x >= 1.0)
    line = (f"{shape} {SHOWN.get(ours_dtype)}: earnserve / llama.cpp {SHOWN.get(their_dtype)} "
            f"pooled medians {medians['earnserve'] / medians['llama.cpp']:.2f}x")
    if pair_ratios:
      line += (f"; pair by pair median {statistics.median(pair_ratios):.2f}x "
               f"(range {min(pair_ratios):.2f}-{max(pair_ratios):.2f}, earnserve ahead in "
               f"{ahead} of {len(pair_ratios)} pairs)")
    if copies:
      line += f"; memcpy {min(copies):.1f}-{max(copies):.1f} GB/s"
    print(line)
    # Level by level: the slow and the fast bandwidth of the machine, each engine's samples in it.
    if split["earnserve"] and split["llama.cpp"]:
      parts = []
      for index, name in ((0, "slow"), (1, "fast")):
        a, b = split["earnserve"][index], split["llama.cpp"][index]
        ma, mb = statistics.median(a), statistics.median(b)
        parts.append(f"{name} level {ma:.1f} ({len(a)} decodes, {ma * gb:.1f} GB/s) against "
                     f"{mb:.1f} ({len(b)}, {mb * gb:.1f} GB/s) = {ma / mb:.2f}x")
      print("  by level: " + "; ".join(parts))
    else:
      one = [e for e in ("earnserve", "llama.cpp") if not split[e]]
      print(f"  by level: one level only in {' and '.join(one)}'s samples (no split)")
  print(f"\nJSON lines: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
