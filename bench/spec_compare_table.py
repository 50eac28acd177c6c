#!/usr/bin/env python3
"""Markdown table of a `spec_bench --compare ... --policies auto[,always][,control]` run.

Per (K, C): target-only requests/s; auto's ratio to target-only as the median of the engines'
medians, the median of the round-by-round ratios and their mean with its standard error; with
--policies control the same for a second target-only engine (the A/A control: the noise floor of
the ratios on this machine); the same ratios in process CPU time per request (blind to other
processes' share of the cores); one-at-a-time p50 ratio (C = 1); what auto chose; the share of
the run's wall time auto spent deciding (planning_fraction); the load average before the cell.

  python3 bench/spec_compare_table.py bench/results/spec_bench.jsonl
"""

import json
import statistics
import sys


def ratios(runs, policy, k, c, key="requests_per_s"):
  base = {r["repeat"]: r[key] for r in runs
          if r["policy"] == "target" and r["beam"] == k and r["concurrency"] == c}
  other = {r["repeat"]: r[key] for r in runs
           if r["policy"] == policy and r["beam"] == k and r["concurrency"] == c}
  if key in ("p50_ms", "cpu_ms_per_request"):  # target / other, so that > 1 means faster
    return [base[i] / other[i] for i in sorted(other) if i in base]
  return [other[i] / base[i] for i in sorted(other) if i in base]


def mean_se(values):
  if len(values) < 2:
    return f"{values[0]:.2f}" if values else "-"
  return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def main(path):
  rows = [json.loads(line) for line in open(path) if line.startswith("{")]
  runs = [r for r in rows if r["bench"] == "spec_compare_run"]
  cells = [r for r in rows if r["bench"] == "spec_compare"]
  control = any(r["policy"] == "control" for r in runs)
  always = any(r["policy"] == "always" for r in runs)
  head = ["K", "C", "target req/s", "auto x req/s (medians)", "auto x, round by round: median",
          "mean ± s.e."]
  if control:
    head += ["control x: median", "mean ± s.e."]
  if always:
    head += ["always x req/s (medians)", "always x, round by round"]
  cpu = all("cpu_ms_per_request" in r for r in runs)
  if cpu:
    head += ["auto x CPU: mean ± s.e."] + (["control x CPU"] if control else [])
  head += ["auto x p50 (one at a time)", "auto: trees (N x levels) / plain steps",
           "auto deciding, % of wall", "load before"]
  print("| " + " | ".join(head) + " |")
  print("|" + "|".join("---:" if i > 1 else "---" for i in range(len(head))) + "|")
  for cell in cells:
    k, c = cell["beam"], cell["concurrency"]
    auto = [r for r in runs if r["policy"] == "auto" and r["beam"] == k and r["concurrency"] == c]
    trees, plain = {}, 0
    for a in auto:
      for t, n in a["choices"]["trees"].items():
        trees[t] = trees.get(t, 0) + n
      plain += sum(a["choices"]["plain_steps"].values())
    chosen = ", ".join(f"{t}: {n}" for t, n in sorted(trees.items())) or "none"
    planning = [a["planning_fraction"] for a in auto if "planning_fraction" in a]
    out = [str(k), str(c), f"{cell['target_requests_per_s']:.1f}",
           f"{cell['auto_x_requests_per_s']:.2f}", f"{cell['auto_paired_x_requests_per_s']:.2f}",
           mean_se(ratios(runs, "auto", k, c))]
    if control:
      out += [f"{cell['control_paired_x_requests_per_s']:.2f}",
              mean_se(ratios(runs, "control", k, c))]
    if always:
      out += [f"{cell['always_x_requests_per_s']:.2f}",
              f"{cell['always_paired_x_requests_per_s']:.2f}"]
    if cpu:
      out.append(mean_se(ratios(runs, "auto", k, c, "cpu_ms_per_request")))
      if control:
        out.append(mean_se(ratios(runs, "control", k, c, "cpu_ms_per_request")))
    out += [f"{cell['auto_paired_x_p50']:.2f}" if c == 1 else "-", f"{chosen} / {plain}",
            f"{100 * statistics.mean(planning):.2f}" if planning else "-", cell["load_before"]]
    print("| " + " | ".join(out) + " |")
  mismatched = sum(r.get("mismatched_requests", 0) for r in cells)
  print(f"\nstrict lists differing from target-only: {mismatched}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
