#!/usr/bin/env bash
# Tensor parallel 1 against 2 on the CPU (Gloo), in one run, on a random Llama large enough that
# the split matters (8 layers, hidden 1024, 16 heads: ~105M parameters, made once by
# tools/make_rec_model.py with the Beauty tokenizer). Each configuration gets the same cores:
# tp 1 with all threads, tp N with threads/N per rank. Greedy generation of 64 tokens after a
# ~500-token prompt; prints prefill and decode tokens/s per size and the ratios, JSON lines to $OUT
# (default bench/results/tp_bench.jsonl).
#   bash bench/run_tp_bench.sh [--sizes 1,2] [--max-tokens 64]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
sizes=1,2 max_tokens=64
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    *) echo "run_tp_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
model=${TP_BENCH_MODEL:-/tmp/earnserve-rec-8x1024}
out=${OUT:-bench/results/tp_bench.jsonl}
mkdir -p "$(dirname "$out")"
: > "$out"
[ -f "$model/model.safetensors" ] || .venv/bin/python tools/make_rec_model.py --layers 8 \
  --hidden 1024 --intermediate 2816 --heads 16 --kv-heads 16 --out "$model" >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target earnserve >/dev/null
# A long LC-Rec-style prompt: the template around 80 items of the Beauty catalogue.
prompt="Below is an instruction that describes a task. Write a response that appropriately completes the request.

### Instruction:
The user has interacted with items $(python3 -c "
import json; c = json.load(open('$model/catalogue.json'))
print(', '.join(''.join(v) for v in list(c.values())[:80]))") in chronological order. Can you predict the next possible item that the user may expect?

### Response:"
IFS=, read -ra list <<< "$sizes"
for tp in "${list[@]}"; do
  for rep in 1 2; do
    ./build/api/earnserve generate --model "$model" --prompt "$prompt" --max-tokens "$max_tokens" \
      --temperature 0 --json --tensor-parallel-size "$tp" \
      | python3 -c "
import hashlib, json, sys
r = json.load(sys.stdin)
t = r['timings']
print(json.dumps({'bench': 'tensor_parallel', 'tensor_parallel_size': $tp, 'rep': $rep,
                  'prompt_tokens': t['prompt_tokens'], 'generated_tokens': t['generated_tokens'],
                  'prefill_tokens_per_s': t['prompt_tokens'] / t['prefill_ms'] * 1e3,
                  'decode_tokens_per_s': t['decode_tokens_per_second'],
                  'output_digest': hashlib.sha1(json.dumps(r['token_ids']).encode()).hexdigest()[:12]}))
" >> "$out"
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
best = {}
for r in rows:  # best of the repetitions per size
    b = best.setdefault(r["tensor_parallel_size"], dict(r))
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        b[key] = max(b[key], r[key])
base = best[min(best)]
print("\n| tensor-parallel size | prefill tok/s | decode tok/s | prefill vs tp 1 | decode vs tp 1 | same tokens as tp 1 |")
print("|---|---|---|---|---|---|")
for tp, b in sorted(best.items()):
    print(f"| {tp} | {b['prefill_tokens_per_s']:.0f} | {b['decode_tokens_per_s']:.1f} | "
          f"{b['prefill_tokens_per_s'] / base['prefill_tokens_per_s']:.2f}x | "
          f"{b['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x | "
          f"{b['output_digest'] == base['output_digest']} |")
PY
