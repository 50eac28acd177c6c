#!/usr/bin/env bash
# Decode against llama.cpp at each matching dtype, measured the way a comparison at the machine's
# memory bandwidth needs on a shared VM. Both engines read every weight once per token, so their
# decode rate is the machine's read bandwidth of the moment, and on a VM that bandwidth moves
# with the neighbours (on the machine of the README it sits at 31-35 or at 47-62 GB/s for seconds
# to minutes at a time, switching within one process). A median of a few best-of-2 figures,
# engine after engine, then says which engine drew the fast minutes. Two measurements:
#
# - interleaved (ROUNDS, default 20; bench/decode_interleaved.py): both engines loaded side by
#   side take turns in bursts of 8 greedy tokens (4 bursts each a round, the order alternating),
#   so each burst has one of the other engine within a second of it; each round's ratio is
#   earnserve's tokens/s over llama.cpp's. This is the comparison the README states.
# - pairs of processes (PAIRS, default 4): each engine's usual run (model_bench /
#   tools/bench_baselines.py, REPEATS timed decodes of 32 tokens after a 128-token prompt, every
#   one kept as `tokens_per_s_each`), alternating; the table pools the samples and, where both
#   engines' samples show the two bandwidth levels, compares them level by level.
#
#   BENCH_DIR=/work/llmbench SHAPES=llama-3.2-1b bash bench/run_decode_pairs.sh
#   DTYPES="f32 bf16 int8" PAIRS=0 bash bench/run_decode_pairs.sh
#
# Models and GGUF files as bench/run_llm_bench.sh writes them (this script writes any missing).
# Environment: SHAPES (default both), DTYPES (earnserve's: f32, bf16, int8; default bf16;
# llama.cpp's F32, BF16 and Q8_0 match them), ROUNDS (default 20), PAIRS (default 4), REPEATS
# (default 4), THREADS (default 2), BENCH_DIR, BUILD_DIR, PYTHON. JSON lines go to
# $BENCH_DIR/decode_pairs.jsonl; bench/decode_pairs_table.py prints the tables.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
BENCH_DIR="${BENCH_DIR:-/tmp/earnserve-llm-bench}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-2}"
REPEATS="${REPEATS:-4}"
PAIRS="${PAIRS:-4}"
ROUNDS="${ROUNDS:-20}"
SHAPES="${SHAPES:-qwen2.5-0.5b llama-3.2-1b}"
DTYPES="${DTYPES:-bf16}"
RESULTS="$BENCH_DIR/decode_pairs.jsonl"
source "$ROOT/bench/bench_lib.sh"

mkdir -p "$BENCH_DIR"
if ! "$PYTHON" -c "import gguf, llama_cpp" 2>/dev/null; then
  echo "run_decode_pairs: $PYTHON lacks gguf/llama_cpp; install tools/requirements.txt and" \
       "tools/requirements-bench.txt" >&2
  exit 1
fi
for dtype in $DTYPES; do
  case "$dtype" in f32 | bf16 | int8) ;; *)
    echo "run_decode_pairs: DTYPES takes f32, bf16 and int8, got '$dtype'" >&2
    exit 1
    ;;
  esac
done
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DEARNSERVE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j2 --target model_bench >/dev/null

: >"$RESULTS"
machine_line "$THREADS" | tee -a "$RESULTS"

# The decode (and memcpy) lines of a run, tagged with its pair; other lines are dropped.
record() { tag_lines pair "$1" decode copy | tee -a "$RESULTS"; }
# The interleaved run's round and summary lines (not every burst).
record_rounds() { grep --line-buffered '"measure": "\(round\|summary\)"' | tee -a "$RESULTS"; }

for shape in $SHAPES; do
  model=$(bench_model "$shape")
  for dtype in $DTYPES; do
    type=$dtype
    [[ $dtype == int8 ]] && type=q8_0
    gguf=$(bench_gguf "$shape" "$type")
    ours="$BUILD_DIR/bench/model_bench --model $model --label $shape --prompt-len 128 \
      --decode-tokens 32 --threads $THREADS --repeats $REPEATS --weight-dtype $dtype"
    theirs="$PYTHON $ROOT/tools/bench_baselines.py --engines llama.cpp --model $model \
      --gguf $gguf --gguf-type $type --label $shape --prompt-len 128 --decode-tokens 32 \
      --threads $THREADS --repeats $REPEATS"
    if ((ROUNDS > 0)); then
      "$PYTHON" "$ROOT/bench/decode_interleaved.py" --bin "$BUILD_DIR/bench/model_bench" \
        --model "$model" --gguf "$gguf" --gguf-type "$type" --label "$shape" \
        --threads "$THREADS" --rounds "$ROUNDS" | record_rounds
    fi
    for ((pair = 0; pair < PAIRS; ++pair)); do
      if ((pair % 2 == 0)); then
        $ours | record "$pair"
        $theirs | record "$pair"
      else
        $theirs | record "$pair"
        $ours | record "$pair"
      fi
    done
  done
done
"$PYTHON" "$ROOT/bench/decode_pairs_table.py" "$RESULTS"
