#!/usr/bin/env bash
# The HTTP serving benchmark of the README: starts `earnserve serve` on a bundled recommender
# (default models/beauty-earn), sends Beauty test users' recommendation requests (beam 10) with
# Poisson arrivals at several rates through bench/serve_bench.py, and prints one table row per
# rate. JSON summaries go to $OUT (default bench/results/serve_bench.jsonl).
#   bash bench/run_serve_bench.sh [--model DIR] [--rates 5,20,80] [--requests 300] [--port 8123]
# Environment: BUILD (build directory, default build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model=models/beauty-earn rates=5,20,80 requests=300 port=8123
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --rates) rates="$2"; shift 2 ;;
    --requests) requests="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    *) echo "run_serve_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
out=${OUT:-bench/results/serve_bench.jsonl}
mkdir -p "$(dirname "$out")"
: > "$out"
py=.venv/bin/python
build=${BUILD:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target earnserve >/dev/null
"$build/api/earnserve" serve --model "$model" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.2
done
IFS=, read -ra list <<< "$rates"
for rate in "${list[@]}"; do
  # The JSON summary is serve_bench's first line; it prints a table after it (read it whole: a
  # reader that stops early would break its pipe).
  $py bench/serve_bench.py --url "http://127.0.0.1:$port" --mode recommend \
    --num-requests "$requests" --rate "$rate" --top-k 10 > "$out.run"
  grep -m1 '^{' "$out.run" >> "$out"
  rm -f "$out.run"
done
$py - "$out" "$model" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"\n{sys.argv[2]}: recommendation requests, beam 10")
print("| offered req/s | served req/s | ok | p50 ms | p90 ms | p99 ms |")
print("|---|---|---|---|---|---|")
for r in rows:
    e = r["e2e_s"]
    print(f"| {r['rate']} | {r['request_throughput']:.1f} | {r['num_ok']}/{r['num_requests']} | "
          f"{e['p50'] * 1e3:.0f} | {e['p90'] * 1e3:.0f} | {e['p99'] * 1e3:.0f} |")
PY
