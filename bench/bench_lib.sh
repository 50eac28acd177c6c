# Helpers shared by bench/run_llm_bench.sh and bench/run_decode_pairs.sh; sourced, after ROOT,
# PYTHON and BENCH_DIR are set.

# The JSON line naming the machine: lscpu's model name, the thread count ($1), the load.
machine_line() {
  echo "{\"measure\": \"machine\", \"lscpu_model\": \"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\", \"threads\": $1, \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
}

# tag_lines KEY VALUE [MEASURE ...]: standard input's JSON lines with "KEY": VALUE (an integer)
# added. With MEASUREs named only the JSON lines of those measures come through; without, every
# line does (other text unchanged).
tag_lines() {
  "$PYTHON" -c '
import json, sys
key, value, keep = sys.argv[1], int(sys.argv[2]), set(sys.argv[3:])
for line in sys.stdin:
  line = line.strip()
  if line.startswith("{"):
    d = json.loads(line)
    if keep and d.get("measure") not in keep:
      continue
    d[key] = value
    line = json.dumps(d)
  elif keep:
    continue
  print(line, flush=True)' "$@"
}

# bench_model SHAPE: prints $BENCH_DIR/SHAPE, the random-weight model of that shape
# (tools/make_random_model.py --shape), written first if it is not there.
bench_model() {
  local model="$BENCH_DIR/$1"
  [[ -f "$model/config.json" ]] ||
    "$PYTHON" "$ROOT/tools/make_random_model.py" --shape "$1" --out "$model" >&2
  echo "$model"
}

# bench_gguf SHAPE TYPE: prints $BENCH_DIR/SHAPE.TYPE.gguf (TYPE f32, bf16 or q8_0), converted
# from bench_model SHAPE first if it is not there.
bench_gguf() {
  local gguf="$BENCH_DIR/$1.$2.gguf"
  [[ -f "$gguf" ]] ||
    "$PYTHON" "$ROOT/tools/convert_hf_to_gguf.py" "$BENCH_DIR/$1" "$gguf" --outtype "$2" >&2
  echo "$gguf"
}
