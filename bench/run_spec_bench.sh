#!/usr/bin/env bash
# Speculative beam search (AtSpeed) benchmark: target-only beam search against strict speculative
# beam search (strict and relaxed verification) with a draft model, on the LC-Rec prompts of the Beauty test users (spec_bench).
# With --compare 1,8,32 (spec_bench): the speculation policies side by side (target-only, auto,
# always; interleaved, repeated, medians and the load average).
# Prints a markdown table with ratios to target-only; all JSON lines go to $OUT (default
# bench/results/spec_bench.jsonl). Exits non-zero when a speculative result differs from the
# target-only one.
#   bash bench/run_spec_bench.sh --target DIR --draft DIR [spec_bench options: --requests N
#        --beam-widths 10,20 --gammas 2,3,4 --num-draft-beams 40 --threads T ...]
# Environment: BUILD (build directory, default build), JOBS (default 2), OUT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build=${BUILD:-build}
out=${OUT:-bench/results/spec_bench.jsonl}
mkdir -p "$(dirname "$out")"
if [ -z "${NO_BUILD:-}" ]; then  # NO_BUILD=1: use the existing $build/bench/spec_bench
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j"${JOBS:-2}" --target spec_bench >/dev/null
fi
status=0
"$build/bench/spec_bench" "$@" | tee "$out" || status=$?
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
compare = [r for r in rows if r["bench"] == "spec_compare"]
if compare:
    # The side-by-side comparison's table (medians, round-by-round ratios, the A/A control).
    import subprocess
    sys.exit(subprocess.call([sys.executable, "bench/spec_compare_table.py", sys.argv[1]]))
runs = [r for r in rows if r["bench"] == "spec" and "skipped" not in r]
for r in rows:
    if r["bench"] == "spec" and "skipped" in r:
        print(f"skipped: K {r['beam']} {r['mode']} gamma {r['gamma']}: {r['skipped']}")
if not runs:
    sys.exit("no spec_bench results")
r0 = runs[0]
print(f"\n{r0['requests']} requests offline (at most {r0['max_concurrent_requests']} running), "
      f"{r0['serial_requests']} one at a time, {r0['threads']} threads\n")
print("| K | mode | gamma | N | req/s | x | p50 ms | p99 ms | serial p50 ms | serial p99 ms | x serial "
      "| acc. steps/round | target calls/req | R@5 | N@5 | R@10 | N@10 | R@20 | N@20 | equal |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
base = {}
for r in runs:
    k = r["beam"]
    if r["mode"] == "target":
        base[k] = r
    b = base.get(k, r)
    x = r["requests_per_s"] / b["requests_per_s"]
    serial = r["serial_requests"] > 0
    xs = f"{b['serial_p50_ms'] / r['serial_p50_ms']:.2f}" if serial else "-"
    sp50 = f"{r['serial_p50_ms']:.0f}" if serial else "-"
    sp99 = f"{r['serial_p99_ms']:.0f}" if serial else "-"
    # Target-only calls per request come from the one-at-a-time runs.
    calls = f"{r['target_calls_per_request']:.2f}" if r["mode"] != "target" or serial else "-"
    spec = r["mode"] != "target"
    acc = f"{r['accepted_steps_per_round']:.2f}" if spec else "-"
    eq = ("yes" if r["equal_to_target"] else f"NO ({r['mismatched_requests']})") if "equal_to_target" in r else "-"
    if r.get("tie_reordered_requests"):
        eq += f" ({r['tie_reordered_requests']} tie reordered)"
    mode = r["mode"] if r["mode"] == "target" else f"{r['mode']} ({r.get('policy', 'always')})"
    print(f"| {k} | {mode} | {r.get('gamma', '-')} | {r.get('num_draft_beams', '-')} "
          f"| {r['requests_per_s']:.2f} | {x:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
          f"| {sp50} | {sp99} | {xs} | {acc} "
          f"| {calls} | {r['recall@5']:.4f} | {r['ndcg@5']:.4f} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} "
          f"| {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | {eq} |")
summary = [r for r in rows if r["bench"] == "spec_summary"]
if summary:
    print("\nevery speculative result equals target-only:",
          "yes" if summary[-1]["all_equal_to_target"] else "NO")
PY
exit $status
