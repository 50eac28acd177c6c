#!/usr/bin/env bash
# Tensor parallelism through the command line: `generate --tensor-parallel-size 2` and `4` (rank 0
# plus worker processes over Gloo on loopback) print the same tokens as size 1, greedy and beam
# search, on a Qwen2, a Llama and an EARN checkpoint (and the EARN one with int8 weights), with
# cumulative log-probabilities within 1e-5; `eval` ranks the same items; two nodes started apart equal one rank and refuse a KV
# budget mismatch; bad layouts fail with a one-line error and leave no worker
# behind.
#   tests/cli/tensor_parallel_test.sh BINARY SOURCE_DIR SHARED_DIR
set -uo pipefail
bin=$1
src=$2
shared=$3
models=$src/tests/fixtures/models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() {  # name, then a command that must succeed
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
  fi
}

# tiny-qwen2 and tiny-llama3-bf16 carry no tokenizer: borrow tiny-rec's. "hello there" encodes to
# ids below their 300-token vocabulary.
for m in tiny-qwen2 tiny-llama3-bf16; do
  mkdir -p "$tmp/$m"
  ln -s "$models/$m/config.json" "$models/$m/model.safetensors" "$tmp/$m/"
  cp "$models/tiny-rec/tokenizer.json" "$models/tiny-rec/tokenizer_config.json" "$tmp/$m/"
done

same_output() {  # reference.json candidate.json: same tokens, logprobs within 1e-5
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def rows(j):
    return j.get("choices") or [j]
ra, rb = rows(a), rows(b)
assert len(ra) == len(rb) and len(ra) > 0, (len(ra), len(rb))
for x, y in zip(ra, rb):
    assert x["token_ids"] == y["token_ids"] and len(x["token_ids"]) > 0, (x["token_ids"], y["token_ids"])
    assert abs(x["cumulative_logprob"] - y["cumulative_logprob"]) <= 1e-5, (
        x["cumulative_logprob"], y["cumulative_logprob"])
PY
}

for model in "$tmp/tiny-qwen2" "$tmp/tiny-llama3-bf16" "$models/tiny-earn"; do
  name=$(basename "$model")
  for mode in greedy beam; do
    extra=(--ignore-eos --max-tokens 10)
    [ "$mode" = beam ] && extra=(--max-tokens 8 --beam-width 4 --n 3)
    for tp in 1 2 4; do
      timeout 60 "$bin" generate --model "$model" --prompt "hello there" --kv-cache-memory 16MiB \
        --json "${extra[@]}" --tensor-parallel-size "$tp" > "$tmp/$name-$mode-$tp.json" \
        2> "$tmp/err"
      check "$name $mode tp=$tp runs" test $? -eq 0 -a -s "$tmp/$name-$mode-$tp.json"
      [ -s "$tmp/err" ] && head -3 "$tmp/err"
      if [ "$tp" != 1 ]; then
        check "$name $mode tp=$tp equals tp=1" same_output "$tmp/$name-$mode-1.json" \
          "$tmp/$name-$mode-$tp.json"
      fi
    done
  done
done

# --weight-dtype int8 reaches the workers: 2 ranks (whole-row scales per shard) print what one
# int8 process prints. tiny-earn's row-parallel shards (o_proj 64/2, down_proj 128/2 columns) hold
# whole 32-column activation blocks, so each rank quantises its activations as one process does;
# tiny-qwen2's down_proj shard (176/2 = 88 columns) would cut a block and differ by rounding.
for tp in 1 2; do
  timeout 60 "$bin" generate --model "$models/tiny-earn" --prompt "hello there" --kv-cache-memory \
    16MiB --json --ignore-eos --max-tokens 10 --weight-dtype int8 --tensor-parallel-size "$tp" \
    > "$tmp/int8-$tp.json" 2> /dev/null
  check "int8 tp=$tp runs" test $? -eq 0 -a -s "$tmp/int8-$tp.json"
done
check "int8 tp=2 equals int8 tp=1" same_output "$tmp/int8-1.json" "$tmp/int8-2.json"

# eval: catalogue-constrained beam search over 8 users, the same ranking with 2 ranks.
for tp in 1 2; do
  timeout 120 "$bin" eval --model "$models/tiny-rec" --data "$shared/datasets/beauty" --limit 8 \
    --beam-width 5 --json --tensor-parallel-size "$tp" > "$tmp/eval-$tp.json" 2> /dev/null
  check "eval tp=$tp runs" test $? -eq 0
done
check "eval tp=2 equals tp=1" python3 - "$tmp/eval-1.json" "$tmp/eval-2.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
keys = [k for k in a if k.startswith(("recall@", "ndcg@"))] + ["users", "invalid_items"]
assert keys and all(a[k] == b[k] for k in keys), {k: (a[k], b.get(k)) for k in keys}
PY

# Two "nodes" on this machine, started as on two machines: node 1 hosts rank 1 and waits for it.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
two_nodes() {  # node-1 KV budget, output file; sets node0_rc and node1_rc
  local master control node1
  master=$(free_port)
  control=$(free_port)
  local layout=(--tensor-parallel-size 2 --nnodes 2 --master-addr 127.0.0.1 --node-addr 127.0.0.1
                --master-port "$master" --tp-control-port "$control" --tp-timeout-s 20)
  timeout 60 "$bin" generate --model "$tmp/tiny-qwen2" --prompt "hello there" --json --ignore-eos \
    --max-tokens 10 "${layout[@]}" --node-rank 1 --kv-cache-memory "$1" > /dev/null 2> "$tmp/node1.err" &
  node1=$!
  timeout 60 "$bin" generate --model "$tmp/tiny-qwen2" --prompt "hello there" --json --ignore-eos \
    --max-tokens 10 "${layout[@]}" --node-rank 0 --kv-cache-memory 16MiB > "$2" 2> "$tmp/node0.err"
  node0_rc=$?
  wait "$node1"
  node1_rc=$?
}
two_nodes 16MiB "$tmp/nodes.json"
check "two nodes: node 0 exits 0" test "$node0_rc" -eq 0
check "two nodes: node 1 exits 0" test "$node1_rc" -eq 0
check "two nodes equal one rank" same_output "$tmp/tiny-qwen2-greedy-1.json" "$tmp/nodes.json"
two_nodes 8MiB "$tmp/mismatch.json"
check "mismatched KV budget: node 0 fails" test "$node0_rc" -ne 0 -a "$node0_rc" -ne 124
check "mismatched KV budget: node 1 fails" test "$node1_rc" -ne 0 -a "$node1_rc" -ne 124
check "mismatched KV budget: the error names the KV blocks" grep -q "KV blocks" "$tmp/node0.err"

# Bad layouts: one line on stderr naming the problem, non-zero exit, no worker left running.
expect_error() {  # expected text, then arguments
  local text=$1
  shift
  timeout 60 "$bin" generate --model "$tmp/tiny-qwen2" --prompt "hello there" --max-tokens 2 "$@" \
    > /dev/null 2> "$tmp/err"
  local rc=$?
  check "error exit ($text)" test $rc -ne 0 -a $rc -ne 124
  check "error names the problem ($text)" grep -q "$text" "$tmp/err"
}
expect_error "not divisible by the tensor-parallel size 3" --tensor-parallel-size 3
expect_error "needs --master-addr" --tensor-parallel-size 2 --nnodes 2
expect_error "divide --tensor-parallel-size" --tensor-parallel-size 2 --nnodes 3
expect_error "tensor-parallel-size must be" --tensor-parallel-size 0
check "no worker left behind" bash -c "! pgrep -f -- 'worker --rank [0-9]+ --model $tmp/' > /dev/null"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
