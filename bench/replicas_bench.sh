#!/usr/bin/env bash
# One replica against two behind nginx (tools/replicas.sh), under bench/serve_bench.py streaming
# completions at the same fixed Poisson request rate. Both setups go through nginx, so the only
# difference is the number of replicas. Prints each serve_bench JSON line, then the ratios
# (two replicas / one) of output token throughput and of p50/p90 end-to-end latency and TTFT.
#
#   bench/replicas_bench.sh [--model DIR] [--rate 8] [--num-requests 160] [--max-tokens 128]
#                           [--threads-per-replica 1] [--base-port 18200]
#
# At a rate one replica sustains, throughput is the rate in both runs and the gain shows in
# latency; above it, one replica queues and the throughput ratio approaches 2 (with the cores
# to back it: give each replica its own --threads-per-replica cores).
# Environment: EARNSERVE_BIN (default build/api/earnserve), PYTHON (default .venv/bin/python).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
model="$root/../shared/models/tinystories-656k"
rate=8
num_requests=160
max_tokens=128
threads=1
base_port=18200
while (($#)); do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --num-requests) num_requests="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --threads-per-replica) threads="$2"; shift 2 ;;
    --base-port) base_port="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "replicas_bench: unknown option '$1'" >&2; exit 2 ;;
  esac
done
if [ ! -x "$python" ]; then
  echo "replicas_bench: no python at $python (run tools/setup.sh)" >&2
  exit 1
fi

work="$(mktemp -d)"
running=""
cleanup() {
  [ -z "$running" ] || "$root/tools/replicas.sh" --dir "$running" stop >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Completion bodies: story openings, sampled with a fixed seed each.
"$python" - "$work/bodies.jsonl" "$max_tokens" <<'EOF'
import json, sys
openings = ["Once upon a time", "The little dog", "Tom and Sue went to the park", "One day, a bird",
            "The sun was hot", "Lily had a red ball", "A big bear lived in the woods",
            "Ben wanted to fly"]
with open(sys.argv[1], "w") as f:
    for i, p in enumerate(openings * 4):
        f.write(json.dumps({"prompt": p, "max_tokens": int(sys.argv[2]), "temperature": 0.8,
                            "seed": i}) + "\n")
EOF

run() {
  local k="$1" ports="" i
  for ((i = 1; i <= k; i++)); do ports+="${ports:+,}$((base_port + i))"; done
  running="$work/k$k"
  "$root/tools/replicas.sh" --dir "$running" start --model "$model" --ports "$ports" \
    --listen "127.0.0.1:$base_port" -- --threads "$threads" >&2
  "$python" "$root/bench/serve_bench.py" --url "http://127.0.0.1:$base_port" --mode completions \
    --dataset "$work/bodies.jsonl" --num-requests "$num_requests" --rate "$rate" \
    --json-out "$work/k$k.json" >&2 || echo "replicas_bench: $k replica(s): requests failed" >&2
  "$root/tools/replicas.sh" --dir "$running" stop >&2
  running=""
}

run 1
run 2
"$python" - "$work/k1.json" "$work/k2.json" <<'EOF'
import json, sys
one, two = (json.load(open(p)) for p in sys.argv[1:3])
print("one replica:  " + json.dumps(one))
print("two replicas: " + json.dumps(two))

def ratio(a, b):
    return f"{b / a:.2f}" if a and b else "n/a"

tput = ratio(one["output_token_throughput"], two["output_token_throughput"])
print(f"two/one: output tok/s {tput}"
      f"  e2e p50 {ratio(one['e2e_s']['p50'], two['e2e_s']['p50'])}"
      f"  e2e p90 {ratio(one['e2e_s']['p90'], two['e2e_s']['p90'])}"
      f"  ttft p50 {ratio(one['ttft_s']['p50'], two['ttft_s']['p50'])}"
      f"  ok {one['num_ok']}/{one['num_requests']} and {two['num_ok']}/{two['num_requests']}")
EOF
