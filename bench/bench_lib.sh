# Helpers shared by bench/run_llm_bench.sh and bench/run_decode_pairs.sh; sourced, after PYTHON
# is set.

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
