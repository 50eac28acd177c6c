#!/usr/bin/env python3
"""Plots EARN against the plain model by prompt length from bench/llm_earn_bench.cpp's JSON lines.

One panel: full / EARN throughput measured at each prompt length (per beam width and
concurrency), with the token-layer and roofline predictions the bench printed beside it; a
second panel: KV per request saved. Writes a PNG, e.g.
  .venv/bin/python tools/plot_llm_earn.py bench/results/llm_earn_bench.jsonl \\
      --out docs/llm_earn.png
(matplotlib is pinned in tools/requirements-bench.txt.)
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="EARN vs full, Qwen2.5-0.5B shape (random weights)")
    args = ap.parse_args()
    rows = []
    for path in args.jsonl:
        with open(path) as f:
            rows += [json.loads(l) for l in f if l.startswith("{")]
    ratios = [r for r in rows if r.get("bench") == "llm_earn_ratio"]
    if not ratios:
        raise SystemExit("no llm_earn_ratio lines in " + ", ".join(args.jsonl))
    fig, (speed, kv) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in sorted({(r["beam"], r["concurrency"]) for r in ratios}):
        pts = sorted((r for r in ratios if (r["beam"], r["concurrency"]) == key),
                     key=lambda r: r["mean_prompt_tokens"])
        x = [r["mean_prompt_tokens"] for r in pts]
        label = f"beam {key[0]}, {key[1]} at a time"
        line, = speed.plot(x, [r["throughput_ratio"] for r in pts], "o-",
                           label=f"measured, {label}")
        speed.plot(x, [r["roofline_prediction"] for r in pts], "s--", color=line.get_color(),
                   alpha=0.7, label=f"roofline, {label}")
        speed.plot(x, [r["token_layer_prediction"] for r in pts], "^:", color=line.get_color(),
                   alpha=0.5, label=f"token-layers, {label}")
        kv.plot(x, [100 * r["kv_reduction"] for r in pts], "o-", color=line.get_color(),
                label=label)
    speed.set_xlabel("prompt tokens (mean over the requests)")
    speed.set_ylabel("full time / EARN time")
    speed.set_title(args.title, fontsize=10)
    speed.grid(alpha=0.3)
    speed.legend(fontsize=7)
    kv.set_xlabel("prompt tokens")
    kv.set_ylabel("KV per request saved (%)")
    kv.set_ylim(0, 100)
    kv.grid(alpha=0.3)
    kv.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
