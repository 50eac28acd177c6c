#!/usr/bin/env bash
# EARN against the plain model in one run, on the same machine and the same Beauty test prompts:
# the bundled models/beauty-earn and models/beauty-full (or EARN_MODEL / FULL_MODEL). Prints a
# table with ratios; all JSON lines go to $OUT (default bench/results/earn_bench.jsonl).
#   bash bench/run_earn_bench.sh [earn_bench options, e.g. --requests 1000 --threads 2]
# Environment: BUILD (build directory, default build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
full=${FULL_MODEL:-models/beauty-full}
earn=${EARN_MODEL:-models/beauty-earn}
out=${OUT:-bench/results/earn_bench.jsonl}
mkdir -p "$(dirname "$out")"
build=${BUILD:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target earn_bench >/dev/null
"$build/bench/earn_bench" --full "$full" --earn "$earn" --data ../shared/datasets/beauty "$@" | tee "$out"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = lambda name: [r for r in rows if r["bench"] == name]
for r in by("kv_pages_reduction"):
    print(f"\nKV per sequence: {r['slot_reduction']:.1%} fewer layer-slots ({r['ratio_full_over_earn']:.2f}x), "
          f"{r['token_entry_reduction']:.1%} fewer per-token entries; all as predicted: {r['all_as_predicted']}")
print("\n| case | beam | full | EARN | EARN vs full |")
print("|---|---|---|---|---|")
for kind, field, unit in (("earn_throughput", "requests_per_s", "req/s"), ("earn_throughput", "p50_ms", "p50 ms (all at once)"),
                          ("earn_throughput", "p99_ms", "p99 ms (all at once)"), ("earn_latency", "p50_ms", "p50 ms (one at a time)"),
                          ("earn_latency", "p99_ms", "p99 ms (one at a time)"),
                          ("earn_capacity", "max_concurrent_requests", "concurrent requests at a fixed KV budget, no preemption")):
    for beam in sorted({r["beam"] for r in by(kind)}):
        f = [r for r in by(kind) if r["beam"] == beam and r["model"] == "full"]
        e = [r for r in by(kind) if r["beam"] == beam and r["model"] == "earn"]
        if not f or not e:
            continue
        a, b = f[0][field], e[0][field]
        ratio = (a / b) if field.endswith("_ms") else (b / a if a else float("nan"))
        print(f"| {unit} | {beam} | {a:.1f} | {b:.1f} | {ratio:.2f}x |")
PY
