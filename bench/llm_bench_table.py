#!/usr/bin/env python3
"""Table of bench/run_llm_bench.sh's JSON lines: engines x dtypes per shape, the machine's limits
and the ratios issue-style acceptance needs (prefill vs the best GEMM, decode vs copy bandwidth,
int8 vs bf16 decode, earnserve vs llama.cpp and torch at each matching dtype). A cell measured
in several rounds shows its median (and the ratios are of medians); the machine's limits are the
best of the rounds.

  python3 bench/llm_bench_table.py /tmp/earnserve-llm-bench/results.jsonl
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_pairs_table import levels  # noqa: E402

COLUMNS = [("earnserve", "f32"), ("earnserve", "bf16"), ("earnserve", "i8"),
           ("transformers", "f32"), ("transformers", "bf16"),
           ("llama.cpp", "f32"), ("llama.cpp", "bf16"), ("llama.cpp", "q8_0")]
# earnserve's dtype -> the peers' matching dtype.
MATCH = {"f32": ("f32", "f32"), "bf16": ("bf16", "bf16"), "i8": (None, "q8_0")}
# model_bench names int8 weights "i8" (dtype_name); the table says int8.
SHOWN = {"i8": "int8"}


def main(path):
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip().startswith("{")]
  machine = next((r for r in rows if r["measure"] == "machine"), {})
  info = next((r for r in rows if r["measure"] == "info"), {})
  print(f"CPU: {machine.get('lscpu_model', '?')}, {machine.get('threads', '?')} threads, "
        f"load before {machine.get('loadavg', '?')}")
  if info:
    print(f"earnserve info: {json.dumps({k: info[k] for k in info if k != 'measure'})[:400]}")
  shapes = list(dict.fromkeys(r["model"] for r in rows if r.get("model")))
  for shape in shapes:
    mine = [r for r in rows if r.get("model") == shape]

    def matching(engine, dtype, measure, prompt, key):
      return [r[key] for r in mine
              if (r.get("engine") == engine and r.get("weight_dtype") == dtype and
                  r["measure"] == measure and (prompt is None or r.get("prompt_len") == prompt) and
                  r.get(key) is not None)]

    def value(engine, dtype, measure, prompt=None, key="tokens_per_s"):
      found = matching(engine, dtype, measure, prompt, key)
      if not found:
        return None
      if not isinstance(found[0], (int, float)):
        return found[0]
      return statistics.median(found)

    def pooled(engine, dtype, measure, prompt, key):
      """Every timed run's values (`key` + "_each" lists) of all rounds together."""
      lists = matching(engine, dtype, measure, prompt, key + "_each")
      return [x for each in lists for x in each]

    def value_each(engine, dtype, measure, prompt=None, key="tokens_per_s"):
      found = pooled(engine, dtype, measure, prompt, key)
      return statistics.median(found) if found else None

    def spread_each(engine, dtype, measure, prompt, key):
      found = pooled(engine, dtype, measure, prompt, key)
      if len(found) < 2:
        return ""
      q = statistics.quantiles(found, n=4, method="inclusive")
      return f" ({q[0]:.0f}-{q[2]:.0f})"

    def spread(engine, dtype, measure, prompt, key):
      found = matching(engine, dtype, measure, prompt, key)
      if len(found) < 2:
        return ""
      return f" ({min(found):.0f}-{max(found):.0f})"

    def best_gemm(m):
      lines = [r for r in mine if r["measure"] in ("gemm", "sgemm") and r.get("m") == m and
               r.get("dtype", "f32") == "f32" and "gflops" in r]
      if not lines:
        return None, None
      top = max(lines, key=lambda r: r["gflops"])
      return top["gflops"], top["engine"] if top["measure"] == "gemm" else "earnserve sgemm"

    copy = max((r["gb_per_s"] for r in mine if r["measure"] == "copy"), default=None)
    print(f"\n## {shape}")
    for m in (128, 512):
      g, who = best_gemm(m)
      libs = ", ".join(f"{r['engine']} {r.get('dtype', 'f32')} {r['gflops']:.0f}"
                       for r in mine if r["measure"] == "gemm" and r.get("m") == m)
      ours = max((r["gflops"] for r in mine if r["measure"] == "sgemm" and r.get("m") == m),
                 default=None)
      if g:
        print(f"GEMM {m}-row roofline {g:.0f} GFLOP/s ({who}); earnserve sgemm "
              f"{ours or float('nan'):.0f}; {libs}")
    if copy:
      print(f"memcpy bandwidth {copy:.1f} GB/s")
    header = "| measure | " + " | ".join(f"{e} {SHOWN.get(d, d)}" for e, d in COLUMNS) + " |"
    print("\n" + header)
    print("|---|" + "---:|" * len(COLUMNS))
    measures = [("prefill 128 tok/s", "prefill", 128, "tokens_per_s"),
                ("prefill 512 tok/s", "prefill", 512, "tokens_per_s"),
                ("decode tok/s", "decode", 128, "tokens_per_s"),
                ("10-row step rows/s", "step", None, "rows_per_s")]
    rounds = len({r.get("round") for r in mine if "round" in r})
    if rounds > 1:
      print(f"(medians of {rounds} interleaved rounds; the rounds' range in brackets)")
    for label, measure, prompt, key in measures:
      cells = []
      for engine, dtype in COLUMNS:
        v = value(engine, dtype, measure, prompt, key)
        cells.append(f"{v:.1f}{spread(engine, dtype, measure, prompt, key)}"
                     if v is not None else "-")
      print(f"| {label} | " + " | ".join(cells) + " |")
    # Decode sits on the memory bandwidth, which on a shared VM moves between levels within
    # seconds: also the median of every timed decode (all repeats of all rounds; quartiles).
    each = [value_each(e, d, "decode", 128) for e, d in COLUMNS]
    if any(v is not None for v in each):
      cells = [f"{v:.1f}{spread_each(e, d, 'decode', 128, 'tokens_per_s')}" if v is not None
               else "-" for v, (e, d) in zip(each, COLUMNS)]
      print("| decode tok/s, every timed run | " + " | ".join(cells) + " |")

    print()
    for label, measure, prompt, key in measures:
      parts = []
      for dtype, (torch_dtype, cpp_dtype) in MATCH.items():
        ours = value("earnserve", dtype, measure, prompt, key)
        if ours is None:
          continue
        if torch_dtype:
          t = value("transformers", torch_dtype, measure, prompt, key)
          if t:
            parts.append(f"{SHOWN.get(dtype, dtype)} x torch {ours / t:.2f}")
        c = value("llama.cpp", cpp_dtype, measure, prompt, key)
        if c:
          parts.append(f"{SHOWN.get(dtype, dtype)} x llama.cpp {cpp_dtype} {ours / c:.2f}")
      if parts:
        print(f"{label}: " + ", ".join(parts))
    parts = []
    for dtype, (torch_dtype, cpp_dtype) in MATCH.items():
      ours = value_each("earnserve", dtype, "decode", 128)
      for engine, other in (("transformers", torch_dtype), ("llama.cpp", cpp_dtype)):
        theirs = value_each(engine, other, "decode", 128) if ours and other else None
        if theirs:
          name = "torch" if engine == "transformers" else f"llama.cpp {other}"
          parts.append(f"{SHOWN.get(dtype, dtype)} x {name} {ours / theirs:.2f}")
    if parts:
      print("decode, every timed run: " + ", ".join(parts))
    # Level by level against llama.cpp where both engines' samples show the two bandwidth levels.
    for dtype, (_, cpp_dtype) in MATCH.items():
      ours = levels(pooled("earnserve", dtype, "decode", 128, "tokens_per_s"))
      theirs = levels(pooled("llama.cpp", cpp_dtype, "decode", 128, "tokens_per_s"))
      if ours and theirs:
        print(f"decode {SHOWN.get(dtype, dtype)} x llama.cpp {cpp_dtype} by bandwidth level: " +
              "; ".join(f"{name} {statistics.median(a):.1f} against {statistics.median(b):.1f} "
                        f"({len(a)} and {len(b)} decodes) = "
                        f"{statistics.median(a) / statistics.median(b):.2f}x"
                        for name, a, b in (("slow", ours[0], theirs[0]),
                                           ("fast", ours[1], theirs[1]))))
    g512, _ = best_gemm(512)
    for dtype in ("f32", "bf16", "i8"):
      p = value("earnserve", dtype, "prefill", 512, "gflops")
      d = value("earnserve", dtype, "decode", 128, "weight_gb_per_s")
      bits = []
      if p and g512:
        bits.append(f"prefill 512 = {p:.0f} GFLOP/s = {100 * p / g512:.0f}% of the best f32 GEMM")
      if d and copy:
        bits.append(f"decode reads {d:.1f} GB/s of weights = {100 * d / copy:.0f}% of memcpy")
      if bits:
        print(f"earnserve {SHOWN.get(dtype, dtype)}: " + "; ".join(bits))
    i8, b16 = (value("earnserve", d, "decode", 128) for d in ("i8", "bf16"))
    if i8 and b16:
      print(f"earnserve int8 decode / bf16 decode = {i8 / b16:.2f}x")
    greedy = {(e, d): value(e, d, "decode", 128, "greedy_ids") for e, d in COLUMNS}
    ref = greedy.get(("earnserve", "f32"))
    if ref:
      same = [f"{e} {SHOWN.get(d, d)} {sum(1 for a, b in zip(ref, g) if a == b)}/{len(ref)}"
              for (e, d), g in greedy.items() if g and (e, d) != ("earnserve", "f32")]
      print("greedy ids equal to earnserve f32 (position by position): " + ", ".join(same))
  print(f"\nJSON lines: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
