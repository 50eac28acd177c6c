#!/usr/bin/env bash
# End-to-end checks of the earnserve command line: generate equals transformers' greedy story,
# tokenize, eval, batch with a bad line among good ones, and one-line errors with non-zero exits.
#   tests/cli/cli_test.sh BINARY SOURCE_DIR SHARED_DIR
set -uo pipefail
bin=$1
src=$2
shared=$3
story=$shared/models/tinystories-656k
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
[ -d "$story" ] || { echo "missing $story: the shared models must be beside the checkout"; exit 1; }

# generate: greedy from BOS equals transformers' continuation (fixture from tools/make_fixtures.py).
"$bin" generate --model "$story" --max-tokens 100 --temperature 0 --json > "$tmp/gen.json"
check "generate runs" test -s "$tmp/gen.json"
check "generate equals transformers' greedy story" python3 - "$tmp/gen.json" \
  "$src/tests/fixtures/logits/tinystories.json" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
ref = next(g for g in json.load(open(sys.argv[2]))["greedy"] if g["prompt"] == [1])["new_tokens"]
ids = out["token_ids"]
assert out["prompt_token_ids"] == [1], out["prompt_token_ids"]
assert len(ids) == 100 and ids == ref[:100], (ids[:10], ref[:10])
assert out["text"].startswith("Once upon a time"), out["text"][:40]
PY
check "generate prints the story" bash -c "'$bin' generate --model '$story' --max-tokens 20 --temperature 0 | grep -q 'Once upon a time'"

# tokenize
check "tokenize" bash -c "[ \"\$('$bin' tokenize --model '$story' --text 'Hello world' --json)\" = '[80, 1288, 139, 410, 555]' ]"

# errors: one line on stderr, non-zero exit
for args in "generate --model $tmp/missing" "generate --model $story --max-tokens x" \
            "tokenize --text hi" "frobnicate" "batch --model $story" \
            "generate --model $story --device tpu" "generate --model $story --device cuda:99" \
            "generate --model $story --weight-dtype int4"; do
  $bin $args > /dev/null 2> "$tmp/err"
  rc=$?
  check "error exit for: $args" test $rc -ne 0
  check "one-line error for: $args" test "$(head -c 300 "$tmp/err" | wc -l)" -ge 1
done
"$bin" generate --model "$story" --device cuda:99 2> "$tmp/err"
check "a missing GPU is named" grep -q -e "without CUDA" -e "does not exist" "$tmp/err"
"$bin" generate --model "$story" --weight-dtype int4 2> "$tmp/err"
check "a bad --weight-dtype lists the supported ones" grep -q "f32, bf16 or int8" "$tmp/err"
# int8 weights (per output row, activations quantised in blocks of 32): the story starts as in f32.
check "generate with --weight-dtype int8" bash -c "'$bin' generate --model '$story' --weight-dtype int8 --max-tokens 20 --temperature 0 | grep -q 'Once upon a time'"
mkdir "$tmp/badmodel" && echo '{"architectures": ["GPT2LMHeadModel"]}' > "$tmp/badmodel/config.json"
"$bin" generate --model "$tmp/badmodel" 2> "$tmp/err"
check "unsupported architecture exits non-zero" test $? -ne 0
check "error names the file" grep -q "config.json" "$tmp/err"

# batch: good and bad lines; every line answered, in order.
cat > "$tmp/in.jsonl" <<'JSONL'
{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}}
{"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"prompt": "Once", "max_tokens": -3}}
not json
{"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"prompt": ["The cat", "A dog"], "max_tokens": 6, "use_beam_search": true, "n": 2, "temperature": 0}}
JSONL
"$bin" batch --model "$story" --input "$tmp/in.jsonl" --output "$tmp/out.jsonl" 2> /dev/null
check "batch exits 0" test $? -eq 0
check "batch answers every line in order" python3 - "$tmp/out.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["custom_id"] for r in rows] == ["a", "b", None, "c"], rows
assert [r["response"]["status_code"] for r in rows] == [200, 400, 400, 200]
assert rows[0]["response"]["body"]["usage"]["completion_tokens"] == 8
assert rows[1]["response"]["body"]["error"]["param"] == "max_tokens"
assert len(rows[3]["response"]["body"]["choices"]) == 4  # 2 prompts x n = 2
PY

# batch: fields of the wrong JSON type are errors of their own line, not a crash.
cat > "$tmp/types.jsonl" <<'JSONL'
{"custom_id": "t1", "method": "POST", "url": 5, "body": {"prompt": "Once", "max_tokens": 2}}
{"custom_id": "t2", "method": 7, "url": "/v1/completions", "body": {"prompt": "Once", "max_tokens": 2}}
{"custom_id": "t3", "method": "POST", "url": "/v1/completions", "body": "Once"}
{"custom_id": "t4", "method": null, "url": "/v1/completions", "body": {"prompt": "Once", "max_tokens": 2}}
JSONL
"$bin" batch --model "$story" --input "$tmp/types.jsonl" --output "$tmp/types.out" 2> /dev/null
check "batch with mistyped fields exits 0" test $? -eq 0
check "batch answers mistyped fields per line" python3 - "$tmp/types.out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["custom_id"] for r in rows] == ["t1", "t2", "t3", "t4"], rows
assert [r["response"]["status_code"] for r in rows] == [400, 400, 400, 200], rows
assert [r["response"]["body"]["error"]["param"] for r in rows[:3]] == ["url", "method", "body"]
PY

# batch survives a kill: SIGKILL once the first results are out, a torn last line as a kill
# mid-write leaves, then --resume answers the rest; each custom_id exactly once.
python3 - "$tmp/many.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(400):
        body = {"prompt": "Once upon a time", "max_tokens": 32, "temperature": 1.0, "seed": i,
                "ignore_eos": True}
        f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                            "body": body}) + "\n")
    f.write('{"custom_id": "bad", "method": "POST", "url": "/nowhere", "body": {}}\n')
PY
"$bin" batch --model "$story" --input "$tmp/many.jsonl" --output "$tmp/many.out" \
  --max-num-seqs 16 2> /dev/null &
pid=$!
for _ in $(seq 600); do [ -s "$tmp/many.out" ] && break; sleep 0.05; done
kill -9 "$pid"
wait "$pid" 2> /dev/null
killed_lines=$(wc -l < "$tmp/many.out")
check "the killed batch had written some results, not all" \
  test "$killed_lines" -ge 1 -a "$killed_lines" -lt 401
printf '{"id": "batch_req_400", "custom_id": "r4' >> "$tmp/many.out"
"$bin" batch --model "$story" --input "$tmp/many.jsonl" --output "$tmp/many.out" \
  --max-num-seqs 16 --resume 2> /dev/null
check "batch --resume exits 0" test $? -eq 0
check "after kill and resume each custom_id is answered once" python3 - "$tmp/many.out" <<'PY'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]  # the torn line is gone: every line parses
counts = collections.Counter(r["custom_id"] for r in rows)
expected = {f"r{i}" for i in range(400)} | {"bad"}
assert set(counts) == expected, sorted(set(counts) ^ expected)[:10]
assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:10]
by_id = {r["custom_id"]: r for r in rows}
assert all(by_id[f"r{i}"]["response"]["status_code"] == 200 for i in range(400))
assert all(by_id[f"r{i}"]["id"] == f"batch_req_{i}" for i in range(400))
assert by_id["bad"]["response"]["status_code"] == 404
assert by_id["r7"]["response"]["body"]["usage"]["completion_tokens"] == 32
PY
"$bin" batch --model "$story" --input "$tmp/many.jsonl" --output "$tmp/many.out" --resume \
  2> "$tmp/err"
check "a finished batch resumed again answers nothing twice" \
  test "$(wc -l < "$tmp/many.out")" -eq 401
check "a finished batch resumed again says so" \
  grep -q "0 lines, 0 failed, 401 answered before" "$tmp/err"
echo "not an output line" > "$tmp/other.out"
"$bin" batch --model "$story" --input "$tmp/many.jsonl" --output "$tmp/other.out" --resume \
  2> "$tmp/err"
check "resume refuses a file that is not batch output" test $? -ne 0
check "resume leaves a foreign file alone" grep -qx "not an output line" "$tmp/other.out"

# eval on the stand-in recommendation model: every ranked item is valid.
"$bin" eval --model "$src/tests/fixtures/models/tiny-rec" --data "$shared/datasets/beauty" \
  --limit 40 --beam-width 10 --json > "$tmp/eval.json"
check "eval runs" test $? -eq 0
check "eval reports metrics and no invalid item" python3 - "$tmp/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["users"] == 40 and r["invalid_items"] == 0, r
assert all(0 <= r[f"recall@{k}"] <= 1 and 0 <= r[f"ndcg@{k}"] <= 1 for k in (5, 10, 20)), r
PY

# info: the CPU's features, the kernel path and the GEMM core chosen from them.
"$bin" info --json > "$tmp/info.json"
check "info runs" test $? -eq 0
check "info reports features, kernels, gemm core and threads" python3 - "$tmp/info.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
feats = r["cpu"]["features"].split()
flags = open("/proc/cpuinfo").read().split("\nflags")[1].split("\n")[0].split()
# Every feature reported is one the kernel reports too (cpuinfo spells a few differently).
alias = {"avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "avx_vnni": "avx_vnni"}
for f in feats:
    assert alias.get(f, f) in flags, (f, flags)
avx2 = {"avx2", "fma", "f16c"} <= set(feats)
avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_vnni"} <= set(feats)
assert r["kernels"]["isa"] == ("avx512" if avx512 else "avx2" if avx2 else "portable"), r
assert r["kernels"]["isa"] in r["kernels"]["int8_linear"], r
assert "OpenBLAS" in r["gemm"]["backend"] and r["gemm"]["core"], r
if r["gemm"]["core_choice"] == "cpu features" and "avx2" in feats and "fma" in feats:
    want = "Cooperlake" if "avx512_bf16" in feats else "SkylakeX" if "avx512bw" in feats else "Haswell"
    assert r["gemm"]["core"] == want, r
assert r["threads"] >= 1 and r["cpu"]["logical_cpus"] >= 1, r
PY
check "EARNSERVE_CPU_ISA=portable is honoured" bash -c \
  "EARNSERVE_CPU_ISA=portable '$bin' info | grep -qx 'kernel path: portable'"
check "EARNSERVE_CPU_ISA naming no path warns and keeps the best" bash -c \
  "EARNSERVE_CPU_ISA=sse9 '$bin' info 2>&1 | grep -q 'not a path (portable, avx2 or avx512)'"
check "info --threads is reported" bash -c "'$bin' info --threads 1 | grep -qx 'threads: 1'"
check "info honours OPENBLAS_CORETYPE" bash -c \
  "OPENBLAS_CORETYPE=Prescott '$bin' info | grep -q 'core Prescott, chosen by OPENBLAS_CORETYPE'"
"$bin" info --bogus > /dev/null 2> "$tmp/info.err"
check "info rejects an unknown option with exit 2" test $? -eq 2
check "info names the bad option" grep -q "^earnserve info: .*--bogus" "$tmp/info.err"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
