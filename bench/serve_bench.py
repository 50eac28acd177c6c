#!/usr/bin/env python3
"""Load generator for `earnserve serve` over HTTP.

Sends N requests with Poisson arrivals at --rate requests/s (inf: all at once), either
recommendation requests built from the Beauty test users (tools/beauty_data.py: each user's last
20 items as the history) or completion bodies read from a JSONL file (one JSON object a line; they
are streamed so that time to first token and inter-token latency can be measured). Reports TTFT,
TPOT, inter-token latency and end-to-end latency at p50/p90/p99, request and token throughput and
errors, as one JSON line and as a table.

  bench/serve_bench.py --url http://127.0.0.1:8000 --mode recommend --num-requests 200 --rate 20
  bench/serve_bench.py --url http://127.0.0.1:8000 --mode completions --dataset bodies.jsonl

Recommendations are not streamed (beam search reports when done): their TTFT is the end-to-end
latency and they have no TPOT. Uses only the standard library and requests.
"""
import argparse
import json
import os
import random
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))


def percentiles(values):
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    s = sorted(values)

    def pick(q):
        # Nearest rank.
        return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "mean": sum(s) / len(s)}


def recommendation_bodies(args):
    import beauty_data

    samples = beauty_data.test_samples(args.data_dir) if args.data_dir else beauty_data.test_samples()
    rng = random.Random(args.seed)
    rng.shuffle(samples)
    bodies = []
    for _, history, _ in samples[: args.num_requests]:
        body = {"history": history, "top_k": args.top_k, "exclude_history": True}
        if args.beam_width:
            body["beam_width"] = args.beam_width
        if args.model:
            body["model"] = args.model
        bodies.append(body)
    return bodies


def completion_bodies(args):
    bodies = []
    with open(args.dataset) as f:
        for line in f:
            if line.strip():
                body = json.loads(line)
                if args.model:
                    body.setdefault("model", args.model)
                bodies.append(body)
    if not bodies:
        sys.exit(f"serve_bench: {args.dataset} holds no request bodies")
    return [bodies[i % len(bodies)] for i in range(args.num_requests)]


def run_recommendation(url, body, result):
    start = time.perf_counter()
    r = requests.post(url + "/v1/recommendations", json=body, timeout=600)
    end = time.perf_counter()
    result["e2e"] = end - start
    result["status"] = r.status_code
    if r.status_code != 200:
        result["error"] = r.text[:200]
        return
    result["ttft"] = end - start
    usage = r.json().get("usage", {})
    result["prompt_tokens"] = usage.get("prompt_tokens", 0)
    result["output_tokens"] = usage.get("completion_tokens", 0)


def run_completion(url, body, result):
    body = dict(body, stream=True, stream_options={"include_usage": True})
    start = time.perf_counter()
    r = requests.post(url + "/v1/completions", json=body, stream=True, timeout=600)
    result["status"] = r.status_code
    if r.status_code != 200:
        result["error"] = r.text[:200]
        result["e2e"] = time.perf_counter() - start
        return
    last, itls, first = None, [], None
    for line in r.iter_lines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            result["error"] = chunk["error"].get("message", "error")
            continue
        now = time.perf_counter()
        if chunk.get("usage"):
            result["prompt_tokens"] = chunk["usage"]["prompt_tokens"]
            result["output_tokens"] = chunk["usage"]["completion_tokens"]
        if any(c.get("text") for c in chunk.get("choices", [])):
            if first is None:
                first = now
            else:
                itls.append(now - last)
            last = now
    end = time.perf_counter()
    result["e2e"] = end - start
    if first is not None:
        result["ttft"] = first - start
        n = result.get("output_tokens", 0)
        if n > 1:
            result["tpot"] = (end - first) / (n - 1)
    result["itl"] = itls


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--mode", choices=["recommend", "completions"], default="recommend")
    p.add_argument("--dataset", help="JSONL of completion bodies (--mode completions)")
    p.add_argument("--data-dir", help="Beauty data directory (default ../shared/datasets/beauty)")
    p.add_argument("--model", help="model name to send")
    p.add_argument("--num-requests", type=int, default=100)
    p.add_argument("--rate", type=float, default=float("inf"), help="requests/s (Poisson)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--beam-width", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", help="also write the JSON summary to this file")
    args = p.parse_args()
    if args.mode == "completions" and not args.dataset:
        p.error("--mode completions needs --dataset")

    bodies = recommendation_bodies(args) if args.mode == "recommend" else completion_bodies(args)
    run = run_recommendation if args.mode == "recommend" else run_completion
    rng = random.Random(args.seed)
    results = [dict() for _ in bodies]
    threads = []
    bench_start = time.perf_counter()
    next_arrival = bench_start
    for body, result in zip(bodies, results):
        if args.rate != float("inf"):
            next_arrival += rng.expovariate(args.rate)
            delay = next_arrival - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

        def task(body=body, result=result):
            try:
                run(args.url, body, result)
            except requests.RequestException as e:
                result["status"] = 0
                result["error"] = str(e)[:200]

        t = threading.Thread(target=task)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    duration = time.perf_counter() - bench_start

    ok = [r for r in results if r.get("status") == 200 and "error" not in r]
    errors = {}
    for r in results:
        if r not in ok:
            key = str(r.get("status"))
            errors[key] = errors.get(key, 0) + 1
    output_tokens = sum(r.get("output_tokens", 0) for r in ok)
    summary = {
        "mode": args.mode,
        "num_requests": len(results),
        "num_ok": len(ok),
        "errors": errors,
        "rate": args.rate if args.rate != float("inf") else "inf",
        "duration_s": duration,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "output_token_throughput": output_tokens / duration if duration else 0.0,
        "ttft_s": percentiles([r["ttft"] for r in ok if "ttft" in r]),
        "tpot_s": percentiles([r["tpot"] for r in ok if "tpot" in r]),
        "itl_s": percentiles([x for r in ok for x in r.get("itl", [])]),
        "e2e_s": percentiles([r["e2e"] for r in ok if "e2e" in r]),
    }
    print(json.dumps(summary))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=1)
    print(f"\n{'metric':<8} {'p50 ms':>10} {'p90 ms':>10} {'p99 ms':>10} {'mean ms':>10}")
    for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        row = summary[name]
        cells = ["-" if row[k] is None else f"{row[k] * 1e3:.2f}" for k in ("p50", "p90", "p99", "mean")]
        print(f"{name[:-2]:<8} " + " ".join(f"{c:>10}" for c in cells))
    print(f"\nok {len(ok)}/{len(results)}  errors {errors}  duration {duration:.2f} s  "
          f"{summary['request_throughput']:.2f} req/s  "
          f"{summary['output_token_throughput']:.1f} output tok/s")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
