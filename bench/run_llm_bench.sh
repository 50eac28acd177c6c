#!/usr/bin/env bash
# The CPU backend at LLM shapes, side by side in one run: earnserve (bench/model_bench) in f32,
# bf16 and int8 weights, transformers (torch CPU) in float32 and bfloat16, and llama.cpp
# (llama-cpp-python built natively) on GGUF F32, BF16 and Q8_0, all on the same random-weight
# models and the same prompt ids, beside the machine's own limits measured in the same run: the
# best GEMM of the libraries at the prefill's shape (earnserve's sgemm, numpy, torch, oneDNN:
# tools/gemm_roofline.py) and the memcpy bandwidth.
#
# Models (random weights, Llama architecture, written under $BENCH_DIR once and reused; about
# 2 GB and 5 GB): qwen2.5-0.5b and llama-3.2-1b shapes (tools/make_random_model.py --shape).
# Measures: prefill at 128 and 512 tokens, decode (32 tokens after a 128-token prompt), and a
# batched step of 10 rows (the shape of a beam-10 recommendation step; earnserve and torch).
#
# Interleaved rounds: the machine's GEMM rate and bandwidth move with its neighbours (on a shared
# VM a cell swings 10-50% between minutes), so every engine runs once per round (each run the best
# of REPEATS), the order of the engines rotating from round to round, and the table shows each
# cell's median over the rounds. The machine's limits are measured every round; the table takes
# their best.
#
#   bash bench/run_llm_bench.sh                       # both shapes, 2 threads
#   SHAPES=qwen2.5-0.5b THREADS=1 bash bench/run_llm_bench.sh
#
# Needs .venv with tools/requirements.txt and tools/requirements-bench.txt (llama-cpp-python).
# Environment: SHAPES, THREADS (default 2), REPEATS (default 2), ROUNDS (default 3), BENCH_DIR (default
# /tmp/earnserve-llm-bench), BUILD_DIR (default build-bench), PYTHON, ENGINES (default
# "earnserve transformers llama.cpp"). Prints a table at the end; every JSON line goes to
# $BENCH_DIR/results.jsonl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
BENCH_DIR="${BENCH_DIR:-/tmp/earnserve-llm-bench}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-2}"
REPEATS="${REPEATS:-2}"
ROUNDS="${ROUNDS:-3}"
SHAPES="${SHAPES:-qwen2.5-0.5b llama-3.2-1b}"
ENGINES="${ENGINES:-earnserve transformers llama.cpp}"
RESULTS="$BENCH_DIR/results.jsonl"
source "$ROOT/bench/bench_lib.sh"
STEP_ROWS=10
DECODE=32

mkdir -p "$BENCH_DIR"
if ! "$PYTHON" -c "import gguf, torch, transformers" 2>/dev/null; then
  echo "run_llm_bench: $PYTHON lacks gguf/torch/transformers; install tools/requirements.txt" >&2
  exit 1
fi
if [[ "$ENGINES" == *llama.cpp* ]] && ! "$PYTHON" -c "import llama_cpp" 2>/dev/null; then
  echo "run_llm_bench: $PYTHON lacks llama_cpp; install tools/requirements-bench.txt" \
       "(see its header) or set ENGINES without llama.cpp" >&2
  exit 1
fi
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DEARNSERVE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j2 --target model_bench earnserve >/dev/null

: >"$RESULTS"
note() { echo "$1" | tee -a "$RESULTS"; }
note "$(machine_line "$THREADS")"
"$BUILD_DIR/api/earnserve" info --json --threads "$THREADS" |
  "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"measure": "info", **d}))' |
  tee -a "$RESULTS"

# Every line a run prints goes to the results with its round.
record() { tag_lines round "$1" | tee -a "$RESULTS"; }

for shape in $SHAPES; do
  model=$(bench_model "$shape")
  hidden=$("$PYTHON" -c "import json; print(json.load(open('$model/config.json'))['hidden_size'])")
  inter=$("$PYTHON" -c "import json; print(json.load(open('$model/config.json'))['intermediate_size'])")
  if [[ "$ENGINES" == *llama.cpp* ]]; then
    for type in f32 bf16 q8_0; do
      bench_gguf "$shape" "$type" >/dev/null
    done
  fi
  for ((round = 0; round < ROUNDS; ++round)); do
    "$PYTHON" "$ROOT/tools/gemm_roofline.py" --label "$shape" --threads "$THREADS" \
      --repeats "$REPEATS" --shapes "128x${hidden}x${inter},512x${hidden}x${inter}" |
      record "$round"
    for prompt in 128 512; do
      decode=0 rows=0
      if [[ $prompt == 128 ]]; then decode=$DECODE rows=$STEP_ROWS; fi
      runs=()
      if [[ "$ENGINES" == *earnserve* ]]; then
        for dtype in f32 bf16 int8; do
          runs+=("$BUILD_DIR/bench/model_bench --model $model --label $shape --prompt-len $prompt \
            --decode-tokens $decode --step-rows $rows --threads $THREADS --repeats $REPEATS \
            --weight-dtype $dtype")
        done
      fi
      if [[ "$ENGINES" == *transformers* ]]; then
        for dtype in float32 bfloat16; do
          runs+=("$PYTHON $ROOT/tools/bench_baselines.py --engines transformers --model $model \
            --label $shape --prompt-len $prompt --decode-tokens $decode --step-rows $rows \
            --threads $THREADS --repeats $REPEATS --torch-dtype $dtype")
        done
      fi
      if [[ "$ENGINES" == *llama.cpp* ]]; then
        for type in f32 bf16 q8_0; do
          runs+=("$PYTHON $ROOT/tools/bench_baselines.py --engines llama.cpp --model $model \
            --gguf $BENCH_DIR/$shape.$type.gguf --gguf-type $type --label $shape \
            --prompt-len $prompt --decode-tokens $decode --threads $THREADS --repeats $REPEATS")
        done
      fi
      # This round's order: the list rotated by the round (no engine always runs first or last).
      n=${#runs[@]}
      for ((i = 0; i < n; ++i)); do
        ${runs[$(((i + round * 3) % n))]} | record "$round"
      done
    done
  done
done
note "{\"measure\": \"load_after\", \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
"$PYTHON" "$ROOT/bench/llm_bench_table.py" "$RESULTS"
