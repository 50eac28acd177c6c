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
            "generate --model $story --device tpu" "generate --model $story --device cuda:99"; do
  $bin $args > /dev/null 2> "$tmp/err"
  rc=$?
  check "error exit for: $args" test $rc -ne 0
  check "one-line error for: $args" test "$(head -c 300 "$tmp/err" | wc -l)" -ge 1
done
"$bin" generate --model "$story" --device cuda:99 2> "$tmp/err"
check "a missing GPU is named" grep -q -e "without CUDA" -e "does not exist" "$tmp/err"
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

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
