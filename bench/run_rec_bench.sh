#!/usr/bin/env bash
# Recommendation benchmarks side by side in one run: earnserve (rec_bench) against transformers'
# generate with prefix_allowed_tokens_fn on the same random 8-layer, hidden-512 model with the
# Beauty vocabulary (a stand-in until a trained recommender lands), the same LC-Rec prompts of
# the Beauty test users. Prints a table with ratios; all JSON lines go to $OUT (default
# bench/results/rec_bench.jsonl).
#   bash bench/run_rec_bench.sh [--requests N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
requests=200
[[ "${1:-}" == "--requests" ]] && requests="$2"
py=.venv/bin/python
model=${REC_BENCH_MODEL:-/tmp/earnserve-rec-8x512}
out=${OUT:-bench/results/rec_bench.jsonl}
mkdir -p "$(dirname "$out")"
[ -f "$model/model.safetensors" ] || $py tools/make_rec_model.py --layers 8 --hidden 512 --out "$model"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target rec_bench >/dev/null
data=../shared/datasets/beauty
{
  ./build/bench/rec_bench --model "$model" --data "$data" --requests "$requests" \
    --max-num-seqs 1,8,32 --beam-widths 10,20
  for beam in 10 20; do
    for batch in 1 8; do
      $py tools/bench_rec_transformers.py --model "$model" --data "$data" \
        --requests "$requests" --beam $beam --batch $batch 2>/dev/null
    done
  done
} | tee "$out"
$py - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
tp = [r for r in rows if r["bench"] == "rec_throughput"]
print("\n| engine | beam | concurrency | req/s | p50 ms | p99 ms | vs best transformers |")
print("|---|---|---|---|---|---|---|")
for beam in sorted({r["beam"] for r in tp}):
    hf = max((r["requests_per_s"] for r in tp if r["engine"] == "transformers" and r["beam"] == beam), default=0)
    for r in tp:
        if r["beam"] != beam:
            continue
        conc = r.get("max_concurrent_requests", r.get("batch"))
        ratio = r["requests_per_s"] / hf if hf else float("nan")
        print(f"| {r['engine']} | {beam} | {conc} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {ratio:.2f}x |")
for r in rows:
    if r["bench"] in ("prefix_cache", "prefix_cache_speedup", "beam_width"):
        print(json.dumps(r))
PY
