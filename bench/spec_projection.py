#!/usr/bin/env python3
"""GPU projection of speculative beam search (a projection, not a measurement).

Reads spec_bench JSON lines (bench/run_spec_bench.sh; speculative lines of policy `always`
carry, per configuration K / N / gamma / verification, the measured target and draft forward
calls per request) and projects the speed-up of each configuration over target-only beam search
for a large target on an H100/H200-class GPU, where a forward of r rows costs

    T(r) = launch + max(weight bytes / HBM bandwidth, 2 * params * r / (peak FLOP/s * efficiency))

(the weight read up to a few hundred rows, compute beyond). Per request:

    target-only:  T_t(prompt) + (calls - 1) * T_t(C * K)
    speculative:  T_t(prompt) + T_d(prompt) + (target calls - 1) * T_t(C * (K + N * gamma + K * a))
                  + draft calls * T_d(C * N)

with C requests per step (the concurrency), `a` the measured accepted levels per round, and the
calls per request measured on the CPU (they depend on the models and the data, not on the
machine). The acceptance is that of the bundled 1.7M-parameter pairs: a 7B target with its own
draft accepts differently; the projection says what these acceptance figures are worth where
rows are nearly free. It also prints what the policy (`--speculative-policy auto`) would pick
from these configurations at each concurrency: the fastest, or target-only when none is faster.

To confirm on a GPU (see docs/speculative.md): build with -DEARNSERVE_CUDA=ON and run
    build/bench/spec_bench --target DIR --draft DIR --device cuda --compare 1,8,32 --repeats 3
which measures target-only, auto and always side by side on the device.

    python3 bench/spec_projection.py bench/results/spec_bench.jsonl [--gpu h200|h100]
        [--target-params 7e9] [--draft-params 3.5e8] [--prompt-tokens 128]
"""
import argparse
import json
import sys

GPUS = {
    # HBM TB/s, dense BF16 TFLOP/s
    "h100": (3.35, 989.0),
    "h200": (4.8, 989.0),
}


def forward_ms(rows, params, bytes_per_param, hbm_tbps, tflops, efficiency, launch_ms):
    weights = params * bytes_per_param / (hbm_tbps * 1e12) * 1e3
    compute = 2.0 * params * rows / (tflops * 1e12 * efficiency) * 1e3
    return launch_ms + max(weights, compute)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="spec_bench JSON lines")
    ap.add_argument("--gpu", choices=sorted(GPUS), default="h200")
    ap.add_argument("--target-params", type=float, default=7e9)
    ap.add_argument("--draft-params", type=float, default=3.5e8)
    ap.add_argument("--bytes-per-param", type=float, default=2.0)
    ap.add_argument("--efficiency", type=float, default=0.6, help="of peak FLOP/s")
    ap.add_argument("--target-launch-ms", type=float, default=0.3)
    ap.add_argument("--draft-launch-ms", type=float, default=0.2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--concurrency", default="1,8,32")
    args = ap.parse_args()
    hbm, tflops = GPUS[args.gpu]

    def t_target(rows):
        return forward_ms(rows, args.target_params, args.bytes_per_param, hbm, tflops,
                          args.efficiency, args.target_launch_ms)

    def t_draft(rows):
        return forward_ms(rows, args.draft_params, args.bytes_per_param, hbm, tflops,
                          args.efficiency, args.draft_launch_ms)

    rows = [json.loads(l) for l in open(args.results) if l.startswith("{")]
    runs = [r for r in rows if r.get("bench") == "spec" and "skipped" not in r]
    base = {r["beam"]: r for r in runs if r["mode"] == "target"}
    spec = [r for r in runs if r["mode"] != "target" and r.get("policy", "always") == "always"]
    if not base or not spec:
        sys.exit("no target-only and policy-always speculative lines in " + args.results)

    concurrency = [int(c) for c in args.concurrency.split(",")]
    p = args.prompt_tokens
    print(f"PROJECTION ({args.gpu}, {args.target_params / 1e9:.1f}B target, "
          f"{args.draft_params / 1e6:.0f}M draft, bf16, {p}-token prompts; acceptance and calls "
          f"per request measured on the CPU with the bundled models)\n")
    print("| K | mode | N | gamma | acc. levels/round | target calls/req | draft calls/req | "
          + " | ".join(f"x (C={c})" for c in concurrency) + " |")
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(concurrency))
    best = {}
    for r in spec:
        k, n, g = r["beam"], r["num_draft_beams"], r["gamma"]
        b = base.get(k)
        if b is None:
            continue
        plain_calls = b["target_calls_per_request"] or 5.0
        tc, dc = r["target_calls_per_request"], r["draft_calls_per_request"]
        a = r["accepted_steps_per_round"]
        xs = []
        for c in concurrency:
            plain = t_target(p) + (plain_calls - 1) * t_target(c * k)
            spec_ms = (t_target(p) + t_draft(p) + (tc - 1) * t_target(c * (k + n * g + k * a))
                       + dc * t_draft(c * n))
            x = plain / spec_ms
            xs.append(x)
            key = (k, r["mode"], c)
            if x > best.get(key, (1.0, None))[0]:
                best[key] = (x, f"N {n}, gamma {g}")
        print(f"| {k} | {r['mode']} | {n} | {g} | {a:.2f} | {tc:.2f} | {dc:.2f} | "
              + " | ".join(f"{x:.2f}" for x in xs) + " |")
    print("\nWhat auto would pick (the fastest configuration above, or target-only):")
    for k in sorted(base):
        for mode in sorted({r["mode"] for r in spec}):
            for c in concurrency:
                x, shape = best.get((k, mode, c), (1.0, None))
                print(f"  K {k} {mode} C {c}: " + (f"{shape} ({x:.2f}x)" if shape else
                                                  "target-only (1.00x)"))


if __name__ == "__main__":
    main()
