#!/usr/bin/env bash
# One command for the model benchmark: earnserve (bench/model_bench) beside transformers (torch
# CPU, float32) and llama.cpp (llama-cpp-python, GGUF F32) in one run, on TinyStories-656k
# (prompt 128, decode 128) and a random 8-layer hidden-1024 Llama (prompt 512, decode 64).
#
# Builds the release bench in build-bench if needed, makes the random model and the GGUF files
# under $BENCH_DIR (default /tmp/earnserve-bench; reused on later runs), prints a side-by-side
# table and writes every JSON line to $BENCH_DIR/results.jsonl.
#
# Needs .venv with tools/requirements.txt and tools/requirements-bench.txt installed.
# Environment: THREADS (default 2), REPEATS (default 3), BENCH_DIR, BUILD_DIR, PYTHON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
BENCH_DIR="${BENCH_DIR:-/tmp/earnserve-bench}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-2}"
REPEATS="${REPEATS:-3}"
TINY="$ROOT/../shared/models/tinystories-656k"
RANDOM_MODEL="$BENCH_DIR/llama-8x1024"
RESULTS="$BENCH_DIR/results.jsonl"

mkdir -p "$BENCH_DIR"
if ! "$PYTHON" -c "import llama_cpp, gguf, torch, transformers" 2>/dev/null; then
  echo "run_model_bench: $PYTHON lacks llama_cpp/gguf/torch/transformers;" \
       "install tools/requirements.txt and tools/requirements-bench.txt" >&2
  exit 1
fi

if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DEARNSERVE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j2 --target model_bench >/dev/null

if [[ ! -f "$RANDOM_MODEL/config.json" ]]; then
  "$PYTHON" "$ROOT/tools/make_random_model.py" --layers 8 --hidden 1024 --out "$RANDOM_MODEL"
fi
# The conversion of TinyStories is verified against transformers (tokens, logits, greedy ids).
[[ -f "$BENCH_DIR/tinystories-656k.gguf" ]] ||
  "$PYTHON" "$ROOT/tools/convert_hf_to_gguf.py" "$TINY" "$BENCH_DIR/tinystories-656k.gguf" --verify
[[ -f "$BENCH_DIR/llama-8x1024.gguf" ]] ||
  "$PYTHON" "$ROOT/tools/convert_hf_to_gguf.py" "$RANDOM_MODEL" "$BENCH_DIR/llama-8x1024.gguf"

: >"$RESULTS"
run_case() {  # model_dir gguf label prompt_len decode_tokens
  local load
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "{\"measure\": \"load\", \"model\": \"$3\", \"loadavg\": \"$load\"}" >>"$RESULTS"
  "$BUILD_DIR/bench/model_bench" --model "$1" --label "$3" --prompt-len "$4" \
    --decode-tokens "$5" --threads "$THREADS" --repeats "$REPEATS" | tee -a "$RESULTS"
  "$PYTHON" "$ROOT/tools/bench_baselines.py" --model "$1" --gguf "$2" --label "$3" \
    --prompt-len "$4" --decode-tokens "$5" --threads "$THREADS" --repeats "$REPEATS" |
    tee -a "$RESULTS"
}
run_case "$TINY" "$BENCH_DIR/tinystories-656k.gguf" tinystories-656k 128 128
run_case "$RANDOM_MODEL" "$BENCH_DIR/llama-8x1024.gguf" llama-8x1024 512 64

"$PYTHON" - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
models = list(dict.fromkeys(r["model"] for r in rows))
def get(model, engine, measure):
  return next((r for r in rows if r["model"] == model and r.get("engine") == engine
               and r["measure"] == measure), None)
def lead(a, b):  # leading greedy ids two engines agree on
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n
print()
print(f"{'model':18} {'measure':13} {'earnserve':>10} {'transformers':>12} {'llama.cpp':>10}"
      f" {'ours/hf':>8} {'ours/llama':>10}")
for model in models:
  load = next(r["loadavg"] for r in rows if r["model"] == model and r["measure"] == "load")
  for measure in ("prefill", "decode"):
    ours, hf, cpp = (get(model, e, measure) for e in ("earnserve", "transformers", "llama.cpp"))
    v = [r["tokens_per_s"] if r else float("nan") for r in (ours, hf, cpp)]
    print(f"{model:18} {measure + ' tok/s':13} {v[0]:10.1f} {v[1]:12.1f} {v[2]:10.1f}"
          f" {v[0] / v[1]:8.2f} {v[0] / v[2]:10.2f}")
  pre, sg = get(model, "earnserve", "prefill"), get(model, "earnserve", "sgemm")
  print(f"{model:18} prefill {pre['gflops']:.1f} GFLOP/s = {100 * pre['fraction_of_sgemm']:.0f}% "
        f"of sgemm {sg['gflops']:.1f} GFLOP/s ({sg['m']}x{sg['k']}x{sg['n']}); load {load}")
  dec = {e: (get(model, e, "decode") or {}).get("greedy_ids", [])
         for e in ("earnserve", "transformers", "llama.cpp")}
  print(f"{model:18} greedy ids equal to earnserve's: transformers "
        f"{lead(dec['earnserve'], dec['transformers'])}/{len(dec['earnserve'])}, llama.cpp "
        f"{lead(dec['earnserve'], dec['llama.cpp'])}/{len(dec['earnserve'])}")
print(f"\nJSON lines: {sys.argv[1]}")
EOF
