#!/usr/bin/env bash
# EARN against the plain model over prompt length at the Qwen2.5-0.5B shape: the README's table
# and plot in one run. Writes the random-weight models once (tools/make_llm_rec_models.py, about
# 2 GB under $MODELS), runs bench/llm_earn_bench for each point (split layer 2, 2+2 registers),
# appends every JSON line to $OUT and draws docs/llm_earn.png from them (tools/plot_llm_earn.py).
#
#   bash bench/run_llm_earn_sweep.sh
#
# Points (workload, users, beams, concurrency): codes of the last 20 items (first users, beam 10
# and 20; 16 requests at a time), codes of 50 items and titled items of 20, 30 and 50 (the users
# with the longest histories: prompts of 600-1,600 tokens; titles of 20 also 16 at a time).
# Environment: MODELS (default /tmp/llm-rec), BUILD (default build), THREADS (default 2), OUT
# (default bench/results/llm_earn_bench.jsonl, truncated first), PYTHON, PLOT (0: no plot).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODELS="${MODELS:-/tmp/llm-rec}"
BUILD="${BUILD:-build}"
THREADS="${THREADS:-2}"
OUT="${OUT:-bench/results/llm_earn_bench.jsonl}"
PYTHON="${PYTHON:-.venv/bin/python}"
M="$MODELS/qwen2.5-0.5b"

"$PYTHON" tools/make_llm_rec_models.py --out "$MODELS" --shape qwen2.5-0.5b --splits 2 \
  --registers 4 --workloads codes-20,codes-50,titles-20,titles-30,titles-50 >/dev/null
cmake --build "$BUILD" -j2 --target llm_earn_bench >/dev/null
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
point() {  # workload, then llm_earn_bench options
  local w="$1"
  shift
  "$BUILD/bench/llm_earn_bench" --full "$M/full-$w" --earn "$M/earn-k2-r4-$w" \
    --threads "$THREADS" "$@" | tee -a "$OUT"
}
point codes-20 --requests 3 --beam-widths 10,20
point codes-20 --requests 16 --concurrency 16 --beam-widths 10
point codes-50 --longest --requests 3 --beam-widths 10
point titles-20 --requests 3 --beam-widths 10
point titles-20 --longest --requests 3 --beam-widths 10,20
point titles-20 --longest --requests 16 --concurrency 16 --beam-widths 10
point titles-30 --longest --requests 3 --beam-widths 10
point titles-50 --longest --requests 2 --beam-widths 10
if [[ "${PLOT:-1}" != 0 ]]; then
  "$PYTHON" tools/plot_llm_earn.py "$OUT" --out docs/llm_earn.png
fi
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| prompt tokens | beam | C | full / EARN wall (CPU) | roofline | of roofline | token-layers "
      "| KV per request saved | capacity, beam W (beam 1) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
  if r["bench"] != "llm_earn_ratio":
    continue
  print(f"| {r['mean_prompt_tokens']:.0f} | {r['beam']} | {r['concurrency']} | "
        f"{r['throughput_ratio']:.2f}x ({r['cpu_time_ratio']:.2f}x) | "
        f"{r['roofline_prediction']:.2f}x | {100 * r['of_roofline']:.0f}% | "
        f"{r['token_layer_prediction']:.2f}x | {100 * r['kv_reduction']:.1f}% | "
        f"{r['capacity_ratio']:.1f}x ({r['capacity_ratio_beam1']:.1f}x) |")
machine = [r for r in rows if r["bench"] == "llm_earn_machine"]
print(f"machine per point: GEMM {min(m['gemm_gflops'] for m in machine):.0f}-"
      f"{max(m['gemm_gflops'] for m in machine):.0f} GFLOP/s, copy "
      f"{min(m['copy_gb_per_s'] for m in machine):.1f}-{max(m['copy_gb_per_s'] for m in machine):.1f} GB/s")
EOF
