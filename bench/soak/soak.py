#!/usr/bin/env python3
"""Soak and overload test of `earnserve serve` (issue 16): loopback only, bounded in count and time.

Starts `earnserve serve` with the bundled recommender and its AtSpeed draft (or attaches to a
running server with --url and --pid), then:

  1. calibrate: a closed loop of --calibrate-concurrency clients sends the request mix for
     --calibrate-s seconds; what it completes per second is the sustainable rate;
  2. warm-up: --warmup-s seconds of the mix at --rate-factor x that rate, then the load stops, the
     server drains, and its resident memory (VmRSS of /proc/<pid>/status) is read;
  3. soak: the mix at the same rate (Poisson arrivals) until at least --requests requests were sent
     and --duration seconds passed (stopping at --max-duration), then the server drains again.

The mix: /v1/recommendations at beam widths 1..512 (mostly small, some 64/256/512; speculative by
default with the draft, some plain, some strict or relaxed speculation asked for explicitly),
completions (sampled, greedy, beam search, speculative beam search, catalogue-constrained),
streams (a share disconnects after the first events), tokenize/detokenize, malformed bodies and
bad values (each kind with the 4xx it must get), requests with a wrong or no API key (401), beams
that cannot fit the KV cache (400 kv_cache_too_small) and long requests that outrun
--request-timeout-s (408). Overload also brings 429 (--max-queue) and 408.

Checks, each printed as a JSON line with "ok"; the process exits 1 if any fails:
  lost = 0 (every request got a complete response, or was a deliberate disconnect; a stream is
  complete when it ends with [DONE]), no status a request's kind does not allow (no 5xx but 503,
  no 200 for a malformed body), 401/408/429, disconnects and speculation exercised, the 401 and
  408 counters of /metrics equal to what the clients saw, KV usage (the target's and the
  draft's) and running/waiting requests back to 0 after each drain, RSS growth from after warm-up
  to the end below --max-rss-growth, /health 200 at the end and, when started here, a clean exit
  0 on SIGTERM.

  bench/soak/soak.py                                  # full: >= 20,000 requests, >= 10 minutes
  bench/soak/soak.py --requests 2000 --duration 45 --max-duration 240 --calibrate-s 10 \
      --warmup-s 10 --max-queue 16 --progress-s 0    # the CI form (ctest soak_short)

Only the Python standard library.
"""
import argparse
import http.client
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from client import Outcome, Tally, merge, send
from mix import Mix, load_items

ROOT = Path(__file__).resolve().parents[2]


def emit(obj):
    print(json.dumps(obj), flush=True)


class Server:
    """A local `earnserve serve` on a free loopback port; its output goes to --server-log."""

    def __init__(self, args, api_key):
        cmd = [args.bin, "serve", "--model", args.model, "--host", "127.0.0.1", "--port", "0",
               "--max-queue", str(args.max_queue), "--request-timeout-s",
               str(args.request_timeout_s), "--max-body-bytes", str(args.max_body_bytes),
               "--kv-cache-memory", args.kv_cache_memory]
        if args.draft_model:
            cmd += ["--draft-model", args.draft_model]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += args.server_arg
        self.command = cmd
        self.log = open(args.server_log, "w")
        env = {**os.environ, "EARNSERVE_API_KEY": api_key}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.url = None
        deadline = time.time() + 120
        lines = []
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            self.log.write(line)
            m = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if m:
                self.url = m.group(1)
                break
        if self.url is None:
            self.proc.kill()
            sys.exit("soak: the server did not start:\n" + "".join(lines))
        self.log.flush()
        threading.Thread(target=self._copy_output, daemon=True).start()
        self.pid = self.proc.pid

    def _copy_output(self):
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()

    def stop(self, timeout):
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Driver:
    def __init__(self, url, api_key, mix, args):
        u = urlparse(url)
        self.url = url
        self.host, self.port = u.hostname, u.port
        self.api_key = api_key
        self.mix = mix
        self.args = args
        self.pool = ThreadPoolExecutor(max_workers=args.client_concurrency)
        self.slots = threading.BoundedSemaphore(args.client_concurrency)

    def _run(self, req, tally):
        try:
            tally.add(send(self.host, self.port, self.api_key, req, self.args.client_timeout_s))
        except Exception as e:  # a bug here must not hide as a lost request
            o = Outcome(req.kind)
            o.lost, o.why = True, f"client error {type(e).__name__}: {e}"
            tally.add(o)
        finally:
            self.slots.release()

    def closed_loop(self, seconds, concurrency, rng, tally):
        stop = time.monotonic() + seconds
        lock = threading.Lock()

        def worker(seed):
            r = random.Random(seed)
            while time.monotonic() < stop:
                with lock:
                    tally.sent += 1
                req = self.mix.next(r)
                self.slots.acquire()
                self._run(req, tally)

        threads = [threading.Thread(target=worker, args=(rng.randrange(1 << 30),))
                   for _ in range(concurrency)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - start

    def open_loop(self, rate, min_requests, min_seconds, max_seconds, rng, tally):
        """Poisson arrivals at `rate` until min_requests and min_seconds (or max_seconds)."""
        start = time.monotonic()
        next_at = start
        blocked = 0.0
        last_report = start
        while True:
            now = time.monotonic()
            elapsed = now - start
            if (tally.sent >= min_requests and elapsed >= min_seconds) or elapsed >= max_seconds:
                break
            next_at += rng.expovariate(rate)
            if next_at > now:
                time.sleep(next_at - now)
            t0 = time.monotonic()
            self.slots.acquire()  # all client slots busy: the offered rate falls behind
            blocked += time.monotonic() - t0
            tally.sent += 1
            self.pool.submit(self._run, self.mix.next(rng), tally)
            if self.args.progress_s and time.monotonic() - last_report >= self.args.progress_s:
                last_report = time.monotonic()
                s = tally.summary()
                emit({"progress_s": round(last_report - start), "sent": s["sent"],
                      "by_status": s["by_status"], "lost": s["lost"],
                      "unexpected": s["unexpected"], "examples": tally.examples[:3]})
        sent_for = time.monotonic() - start
        for _ in range(self.args.client_concurrency):  # wait for every answer
            self.slots.acquire()
        for _ in range(self.args.client_concurrency):
            self.slots.release()
        return sent_for, time.monotonic() - start, blocked

    def get(self, path):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            headers = {"Authorization": "Bearer " + self.api_key}
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def metrics(self):
        status, text = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        values = {}
        for m in re.finditer(r"^earnserve:(\w+)\{[^}]*\} (\S+)$", text, re.M):
            values.setdefault(m.group(1), float(m.group(2)))
        return values

    def drain(self, timeout):
        """Polls /metrics until nothing runs, waits or holds KV; returns the last values."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            idle = (m.get("num_requests_running") == 0 and m.get("num_requests_waiting") == 0
                    and m.get("kv_cache_usage_perc") == 0
                    and m.get("draft_kv_cache_usage_perc", 0) == 0)
            if idle or time.monotonic() >= deadline:
                return m, idle
            time.sleep(0.5)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=str(ROOT / "build/api/earnserve"))
    p.add_argument("--url", help="attach to this server instead of starting one (loopback only)")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for its RSS")
    p.add_argument("--api-key", help="with --url: the server's key")
    p.add_argument("--model", default=str(ROOT / "models/beauty-full"))
    p.add_argument("--draft-model", default=str(ROOT / "models/beauty-full-draft-atspeed-s"),
                   help="'' for none")
    p.add_argument("--requests", type=int, default=20000, help="soak phase: at least this many")
    p.add_argument("--duration", type=float, default=600, help="soak phase: at least this long")
    p.add_argument("--max-duration", type=float, default=1800, help="soak phase: at most this")
    p.add_argument("--rate", type=float, help="requests/s (default: --rate-factor x calibrated)")
    p.add_argument("--rate-factor", type=float, default=2.0)
    p.add_argument("--calibrate-s", type=float, default=30)
    p.add_argument("--calibrate-concurrency", type=int, default=8)
    p.add_argument("--warmup-s", type=float, default=30)
    p.add_argument("--max-queue", type=int, default=32, help="the server's --max-queue")
    p.add_argument("--request-timeout-s", type=float, default=3.0)
    p.add_argument("--max-body-bytes", type=int, default=256 * 1024)
    p.add_argument("--kv-cache-memory", default="512MiB")
    p.add_argument("--threads", type=int, help="the server's --threads")
    p.add_argument("--server-arg", action="append", default=[], help="more server arguments")
    p.add_argument("--server-log", default="/tmp/earnserve-soak-server.log")
    p.add_argument("--client-concurrency", type=int, default=96)
    p.add_argument("--client-timeout-s", type=float, default=300)
    p.add_argument("--drain-timeout-s", type=float, default=120)
    p.add_argument("--max-rss-growth", type=float, default=0.05)
    p.add_argument("--progress-s", type=float, default=60, help="0: no progress lines")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.url:
        host = urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            p.error("--url must be a loopback address")
        if not args.api_key:
            p.error("--url needs --api-key (the soak sends requests with and without it)")
    if args.client_concurrency <= args.max_queue:
        p.error("--client-concurrency must exceed --max-queue, or 429 cannot happen")
    return args


def main():
    args = parse_args()
    rng = random.Random(args.seed)
    server = None
    if args.url:
        url, pid, api_key = args.url, args.pid, args.api_key
    else:
        api_key = "soak-" + secrets.token_hex(8)
        server = Server(args, api_key)
        url, pid = server.url, server.pid
        emit({"server": server.command, "url": url, "pid": pid})
    ids, tokens = load_items(args.model)
    mix = Mix(args, ids, tokens)
    driver = Driver(url, api_key, mix, args)
    checks = []

    def check(name, ok, **detail):
        checks.append(ok)
        emit({"check": name, "ok": bool(ok), **detail})

    # SIGTERM (a CI timeout) stops the server too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("soak: terminated"))
    try:
        run(args, rng, driver, pid, check)
    finally:
        if server is not None:
            code = server.stop(60)
            check("server_exits_0_on_sigterm", code == 0, exit_code=code)
        driver.pool.shutdown(wait=True)
    ok = all(checks)
    emit({"soak": "pass" if ok else "fail", "checks": len(checks),
          "failed": sum(1 for c in checks if not c)})
    return 0 if ok else 1


def run(args, rng, driver, pid, check):
    m0 = driver.metrics()
    tallies = []
    # 1. Calibrate.
    rate = args.rate
    if rate is None:
        cal = Tally()
        tallies.append(cal)
        seconds = driver.closed_loop(args.calibrate_s, args.calibrate_concurrency, rng, cal)
        answered = cal.summary()["answered"]
        sustainable = answered / seconds
        rate = args.rate_factor * sustainable
        emit({"phase": "calibrate", "seconds": round(seconds, 1),
              "concurrency": args.calibrate_concurrency, "answered": answered,
              "sustainable_rps": round(sustainable, 2), "rate_factor": args.rate_factor,
              "rate_rps": round(rate, 2), "by_status": cal.summary()["by_status"]})
    max_seconds = max(args.max_duration, args.duration)
    if rate * max_seconds < 1.05 * args.requests:
        # Too busy a machine for the count within --max-duration: overload it more, not less.
        raised = 1.05 * args.requests / max_seconds
        emit({"note": "rate raised so that --requests fit in --max-duration",
              "from_rps": round(rate, 2), "rate_rps": round(raised, 2)})
        rate = raised
    # 2. Warm up at the soak rate, drain, read RSS.
    warm = Tally()
    tallies.append(warm)
    if args.warmup_s > 0:
        driver.open_loop(rate, 0, args.warmup_s, args.warmup_s, rng, warm)
    m, idle = driver.drain(args.drain_timeout_s)
    rss_before = rss_kib(pid) if pid else None
    emit({"phase": "warmup", "seconds": args.warmup_s, "rate_rps": round(rate, 2),
          "rss_kib": rss_before, **warm.summary()})
    check("warmup_drained", idle, running=m.get("num_requests_running"),
          waiting=m.get("num_requests_waiting"), kv_usage=m.get("kv_cache_usage_perc"),
          draft_kv_usage=m.get("draft_kv_cache_usage_perc"))
    # 3. Soak.
    soak = Tally()
    tallies.append(soak)
    sent_for, took, blocked = driver.open_loop(rate, args.requests, args.duration, max_seconds,
                                               rng, soak)
    m, idle = driver.drain(args.drain_timeout_s)
    rss_after = rss_kib(pid) if pid else None
    s = soak.summary()
    emit({"phase": "soak", "seconds_sending": round(sent_for, 1), "seconds": round(took, 1),
          "offered_rps": round(rate, 2), "sent_rps": round(s["sent"] / sent_for, 2),
          "client_blocked_s": round(blocked, 1), "rss_kib": rss_after, **s})
    emit({"phase": "soak", "by_kind": soak.by_kind})
    check("requests_sent", soak.sent >= args.requests, sent=soak.sent, wanted=args.requests)
    check("duration", sent_for >= args.duration, seconds=round(sent_for, 1),
          wanted=args.duration)
    # The rest over every phase.
    total = merge(tallies)
    emit({"phase": "all", **total.summary()})
    check("lost_is_0", total.lost == 0, lost=total.lost, examples=total.examples[:10])
    check("every_status_by_design", total.unexpected == 0, unexpected=total.unexpected,
          examples=total.examples[:10])
    five = {k: n for k, n in total.by_status.items() if k.startswith("5") and k != "503"}
    check("no_5xx_but_503", not five, statuses=five)
    for status in (401, 408, 429):
        seen = total.count(status) + (total.timeout_events if status == 408 else 0)
        check(f"exercised_{status}", seen > 0, count=seen)
    check("exercised_disconnects", total.disconnected > 0, count=total.disconnected)
    if args.draft_model:
        check("exercised_speculative", total.speculative > 0, count=total.speculative)
    check("kv_usage_0_after_drain", idle, kv_usage=m.get("kv_cache_usage_perc"),
          draft_kv_usage=m.get("draft_kv_cache_usage_perc"),
          running=m.get("num_requests_running"), waiting=m.get("num_requests_waiting"))
    # The server's error counters against what the clients saw. A stream closed by its client
    # may pass its deadline before the server notices: a 408 no client saw.
    unauthorized = m.get("http_unauthorized_total", 0) - m0.get("http_unauthorized_total", 0)
    check("metrics_401_counter", unauthorized == total.count(401), metric=unauthorized,
          clients=total.count(401))
    timeouts = m.get("request_timeouts_total", 0) - m0.get("request_timeouts_total", 0)
    seen_408 = total.count(408) + total.timeout_events
    check("metrics_408_counter", seen_408 <= timeouts <= seen_408 + total.disconnected,
          metric=timeouts, clients=seen_408)
    if pid:
        growth = (rss_after - rss_before) / rss_before
        check("rss_growth", growth < args.max_rss_growth, rss_after_warmup_kib=rss_before,
              rss_end_kib=rss_after, growth=round(growth, 4), limit=args.max_rss_growth)
    status, _ = driver.get("/health")
    check("health_200_at_end", status == 200, status=status)


if __name__ == "__main__":
    sys.exit(main())
