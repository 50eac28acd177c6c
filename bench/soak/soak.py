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
  408 counters of /metrics equal to what the clients saw, KV usage and running/waiting requests
  back to 0 after each drain, RSS growth from after warm-up to the end below --max-rss-growth,
  /health 200 at the end and, when started here, a clean exit 0 on SIGTERM.

  bench/soak/soak.py                                  # full: >= 20,000 requests, >= 10 minutes
  bench/soak/soak.py --requests 2000 --duration 60 --calibrate-s 10 --warmup-s 10   # CI form

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

ROOT = Path(__file__).resolve().parents[2]

# Statuses a valid request may get by design under overload: answered, timed out, queue full,
# shutting down.
OVERLOAD = {200, 408, 429, 503}
MAX_BEAM_WIDTH = 512  # the server's kMaxBeamWidth: beam_width and num_draft_beams at most


def emit(obj):
    print(json.dumps(obj), flush=True)


class Server:
    """A local `earnserve serve` on a free loopback port; its output goes to `log_path`."""

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


# ---------------------------------------------------------------------------------------------
# The request mix. Each kind builds a request and names the statuses it allows.


class Req:
    __slots__ = ("kind", "method", "path", "body", "headers", "allowed", "stream", "disconnect",
                 "expect_items", "expect_code")

    def __init__(self, kind, path, body=None, method="POST", allowed=OVERLOAD, stream=False,
                 disconnect=0, expect_items=None, expect_code=None, headers=None):
        self.kind = kind
        self.method = method
        self.path = path
        self.body = body  # a dict/list (sent as JSON), bytes (sent as is) or None
        self.headers = headers
        self.allowed = allowed
        self.stream = stream
        self.disconnect = disconnect  # close after this many events (0: read to the end)
        self.expect_items = expect_items
        self.expect_code = expect_code  # the error code a 4xx of this kind must carry


class Mix:
    def __init__(self, args, item_ids, item_tokens):
        self.args = args
        self.items = item_ids
        self.item_tokens = item_tokens  # identifier tokens, e.g. "<a_47>"
        # (weight, builder); weights are parts of 1000.
        self.table = [
            (518, self.rec_small), (50, self.rec_64), (15, self.rec_256), (5, self.rec_512),
            (110, self.completion), (30, self.completion_speculative),
            (60, self.stream_full), (50, self.stream_disconnect),
            (15, self.tokenize), (90, self.malformed), (20, self.unauthorized),
            (5, self.kv_too_small), (4, self.slow), (3, self.slow_stream),
        ]
        self.total = sum(w for w, _ in self.table)
        self.malformed_kinds = [
            self.bad_json, self.not_an_object, self.unknown_item, self.top_k_over_beam,
            self.beam_negative, self.beam_too_wide, self.wrong_type, self.unknown_route,
            self.unknown_model, self.bad_utf8, self.no_chat_template, self.too_large,
            self.prompt_too_long, self.bad_speculative,
        ]

    def next(self, rng):
        x = rng.randrange(self.total)
        for w, build in self.table:
            if x < w:
                return build(rng)
            x -= w
        raise AssertionError

    def history(self, rng):
        return rng.sample(self.items, rng.randint(1, 20))

    def prompt(self, rng):
        return "".join(rng.choice(self.item_tokens) for _ in range(rng.randint(1, 12)))

    def rec(self, rng, kind, beam):
        top_k = rng.randint(1, min(beam, 20))
        body = {"history": self.history(rng), "top_k": top_k, "beam_width": beam,
                "exclude_history": rng.random() < 0.5}
        if self.args.draft_model:
            s = rng.random()
            if s < 0.3:
                body["speculative"] = False
            elif s < 0.4:
                body["speculative"] = True
            elif s < 0.5:
                body["speculative"] = {"verification": "relaxed",
                                      "num_draft_beams": min(2 * beam, MAX_BEAM_WIDTH)}
                body["seed"] = rng.randrange(1 << 30)
            # else: absent, the server's default (speculate)
        else:
            body["speculative"] = False
        return Req(kind, "/v1/recommendations", body, expect_items=top_k)

    def rec_small(self, rng):
        return self.rec(rng, "rec_small", rng.choice([1, 1, 2, 4, 5, 8, 10, 10, 16, 20, 32]))

    def rec_64(self, rng):
        return self.rec(rng, "rec_64", 64)

    def rec_256(self, rng):
        return self.rec(rng, "rec_256", 256)

    def rec_512(self, rng):
        return self.rec(rng, "rec_512", 512)

    def completion_body(self, rng):
        body = {"prompt": self.prompt(rng), "max_tokens": rng.randint(1, 32)}
        s = rng.random()
        if s < 0.4:
            body.update(temperature=1.0, n=rng.randint(1, 4), seed=rng.randrange(1000))
        elif s < 0.7:
            body["temperature"] = 0
        elif s < 0.85:
            body.update(use_beam_search=True, n=rng.randint(1, 8), temperature=0)
        else:
            body.update(use_beam_search=True, n=rng.randint(1, 10), constrain_to_catalogue=True,
                        max_tokens=5, temperature=0)
        return body

    def completion(self, rng):
        return Req("completion", "/v1/completions", self.completion_body(rng))

    def completion_speculative(self, rng):
        body = {"prompt": self.prompt(rng), "max_tokens": rng.randint(2, 8), "temperature": 0,
                "use_beam_search": True, "n": rng.randint(1, 16)}
        body["speculative"] = bool(self.args.draft_model)
        return Req("completion_speculative", "/v1/completions", body)

    def stream_full(self, rng):
        body = {"prompt": self.prompt(rng), "max_tokens": rng.randint(1, 48), "stream": True,
                "temperature": rng.choice([0, 1.0]), "n": rng.randint(1, 3)}
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        return Req("stream_full", "/v1/completions", body, stream=True)

    def stream_disconnect(self, rng):
        body = {"prompt": self.prompt(rng), "max_tokens": rng.randint(100, 300),
                "ignore_eos": True, "stream": True, "temperature": 1.0,
                "n": rng.randint(1, 4)}
        return Req("stream_disconnect", "/v1/completions", body, stream=True,
                   disconnect=rng.randint(1, 3))

    def tokenize(self, rng):
        if rng.random() < 0.5:
            return Req("tokenize", "/tokenize", {"prompt": self.prompt(rng)}, allowed={200})
        return Req("tokenize", "/detokenize",
                   {"tokens": [rng.randrange(3, 1800) for _ in range(rng.randint(1, 10))]},
                   allowed={200})

    def unauthorized(self, rng):
        headers = {}
        if rng.random() >= 0.5:
            headers["Authorization"] = "Bearer wrong-" + str(rng.random())
        r = self.rec_small(rng)
        return Req("unauthorized", r.path, r.body, headers=headers, allowed={401},
                   expect_code="invalid_api_key")

    def kv_too_small(self, rng):
        # More beams x tokens than the whole KV cache: refused before it is queued.
        body = {"prompt": self.prompt(rng), "max_tokens": 400, "ignore_eos": True, "n": 256,
                "temperature": 1.0}
        return Req("kv_too_small", "/v1/completions", body, allowed={400, 429},
                   expect_code="kv_cache_too_small")

    def slow(self, rng):
        # 32 sequences of 400 tokens: several times --request-timeout-s on a CPU.
        body = {"prompt": self.prompt(rng), "max_tokens": 400, "ignore_eos": True, "n": 32,
                "temperature": 1.0}
        return Req("slow", "/v1/completions", body, allowed={408, 429, 503, 200},
                   expect_code="request_timeout")

    def slow_stream(self, rng):
        # The same as a stream: it ends with a request_timeout error event, then [DONE].
        r = self.slow(rng)
        return Req("slow_stream", r.path, {**r.body, "stream": True}, stream=True)

    def malformed(self, rng):
        return rng.choice(self.malformed_kinds)(rng)

    def bad(self, name, path, body, status, code=None):
        return Req("malformed:" + name, path, body, allowed={status}, expect_code=code)

    def bad_json(self, rng):
        return self.bad("json", "/v1/recommendations", b'{"history": ["1", ', 400)

    def not_an_object(self, rng):
        return self.bad("not_object", "/v1/completions", [1, 2, 3], 422)

    def unknown_item(self, rng):
        return self.bad("unknown_item", "/v1/recommendations",
                        {"history": ["no-such-item-" + str(rng.randrange(1000))], "top_k": 3},
                        400)

    def top_k_over_beam(self, rng):
        return self.bad("top_k_over_beam", "/v1/recommendations",
                        {"history": self.history(rng), "top_k": 10, "beam_width": 4}, 400)

    def beam_negative(self, rng):
        return self.bad("beam_negative", "/v1/recommendations",
                        {"history": self.history(rng), "top_k": 1, "beam_width": -1}, 400)

    def beam_too_wide(self, rng):
        return self.bad("beam_too_wide", "/v1/recommendations",
                        {"history": self.history(rng), "top_k": 1,
                         "beam_width": MAX_BEAM_WIDTH + 1}, 400)

    def wrong_type(self, rng):
        return self.bad("wrong_type", "/v1/completions",
                        {"prompt": self.prompt(rng), "max_tokens": "ten"}, 400)

    def unknown_route(self, rng):
        return self.bad("unknown_route", "/v1/embeddings", {"input": "x"}, 404)

    def unknown_model(self, rng):
        return self.bad("unknown_model", "/v1/completions",
                        {"model": "no-such-model", "prompt": "x"}, 404)

    def bad_utf8(self, rng):
        return self.bad("bad_utf8", "/v1/completions", b'{"prompt": "\xff\xfe", "max_tokens": 2}',
                        400)

    def no_chat_template(self, rng):
        return self.bad("no_chat_template", "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "hi"}]}, 400)

    def too_large(self, rng):
        pad = "x" * (self.args.max_body_bytes + 1024)
        return self.bad("too_large", "/v1/completions", {"prompt": pad}, 413,
                        "request_too_large")

    def prompt_too_long(self, rng):
        return self.bad("prompt_too_long", "/v1/completions",
                        {"prompt": [5] * 600, "max_tokens": 1}, 400)

    def bad_speculative(self, rng):
        return self.bad("bad_speculative", "/v1/recommendations",
                        {"history": self.history(rng), "top_k": 2,
                         "speculative": {"num_speculative_steps": 99}}, 400)


# ---------------------------------------------------------------------------------------------
# Sending one request and judging its answer.


class Outcome:
    __slots__ = ("kind", "status", "lost", "unexpected", "disconnected", "timeout_event",
                 "speculative", "why", "latency")

    def __init__(self, kind):
        self.kind = kind
        self.status = None
        self.lost = False
        self.unexpected = False
        self.disconnected = False
        self.timeout_event = False
        self.speculative = False
        self.why = ""
        self.latency = 0.0


def send(host, port, api_key, req, timeout):
    out = Outcome(req.kind)
    start = time.perf_counter()
    headers = {"Connection": "close"}
    if req.headers is not None:
        headers.update(req.headers)
    else:
        headers["Authorization"] = "Bearer " + api_key
    body = None
    if req.body is not None:
        body = req.body if isinstance(req.body, bytes) else json.dumps(req.body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(req.method, req.path, body=body, headers=headers)
        resp = conn.getresponse()
        out.status = resp.status
        if req.stream and resp.status == 200:
            judge_stream(req, resp, out)
        else:
            judge_body(req, resp.status, resp.read(), out)
    except (OSError, http.client.HTTPException) as e:
        out.lost = True
        out.why = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    if out.status is not None and out.status not in req.allowed:
        out.unexpected = True
        out.why = out.why or f"HTTP {out.status} not in {sorted(req.allowed)}"
    out.latency = time.perf_counter() - start
    return out


def judge_body(req, status, raw, out):
    try:
        body = json.loads(raw)
    except ValueError:
        out.lost = True
        out.why = f"HTTP {status}: the body is not JSON: {raw[:120]!r}"
        return
    if status == 200:
        if req.path == "/v1/recommendations":
            if len(body.get("items", [])) > req.expect_items or "usage" not in body:
                out.unexpected = True
                out.why = f"recommendation answer without items/usage: {raw[:200]!r}"
            out.speculative = "speculative" in body.get("usage", {})
        elif req.path == "/v1/completions":
            if not body.get("choices"):
                out.unexpected = True
                out.why = f"completion without choices: {raw[:200]!r}"
            out.speculative = "speculative" in body.get("usage", {})
        return
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or not err.get("message"):
        out.unexpected = True
        out.why = f"HTTP {status} without an OpenAI-style error: {raw[:200]!r}"
    elif req.expect_code and status == min(req.allowed) and err.get("code") != req.expect_code:
        out.unexpected = True
        out.why = f"HTTP {status} code {err.get('code')!r}, expected {req.expect_code!r}"


def judge_stream(req, resp, out):
    """Reads server-sent events to [DONE], or closes after req.disconnect events."""
    events = 0
    while True:
        line = resp.readline()
        if not line:
            out.lost = True
            out.why = f"stream ended after {events} events without [DONE]"
            return
        line = line.strip()
        if not line:
            continue
        if not line.startswith(b"data: "):
            out.lost = True
            out.why = f"not an event: {line[:120]!r}"
            return
        data = line[len(b"data: "):]
        if data == b"[DONE]":
            return
        events += 1
        try:
            event = json.loads(data)
        except ValueError:
            out.lost = True
            out.why = f"event is not JSON: {data[:120]!r}"
            return
        if "error" in event:
            if event["error"].get("code") == "request_timeout":
                out.timeout_event = True
            else:
                out.unexpected = True
                out.why = f"stream error event: {data[:200]!r}"
        if req.disconnect and events >= req.disconnect:
            out.disconnected = True
            return  # the caller closes the connection mid-stream


# ---------------------------------------------------------------------------------------------
# Load phases.


class Tally:
    def __init__(self):
        self.mu = threading.Lock()
        self.sent = 0
        self.by_status = {}
        self.by_kind = {}
        self.lost = 0
        self.unexpected = 0
        self.disconnected = 0
        self.timeout_events = 0
        self.speculative = 0
        self.examples = []
        self.latency_ok = []

    def add(self, o):
        with self.mu:
            key = str(o.status) if o.status is not None else "none"
            self.by_status[key] = self.by_status.get(key, 0) + 1
            k = self.by_kind.setdefault(o.kind, {})
            k[key] = k.get(key, 0) + 1
            self.lost += o.lost
            self.unexpected += o.unexpected
            self.disconnected += o.disconnected
            self.timeout_events += o.timeout_event
            self.speculative += o.speculative
            if (o.lost or o.unexpected) and len(self.examples) < 20:
                self.examples.append({"kind": o.kind, "status": o.status, "why": o.why})
            if o.status == 200 and not o.disconnected:
                self.latency_ok.append(o.latency)

    def count(self, status):
        return self.by_status.get(str(status), 0)

    def summary(self):
        classes = {}
        for s, n in self.by_status.items():
            c = s[0] + "xx" if s != "none" else "none"
            classes[c] = classes.get(c, 0) + n
        lat = sorted(self.latency_ok)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 4)) if lat else (
            lambda q: None)
        return {"sent": self.sent, "answered": sum(self.by_status.values()) - self.by_status.get(
                    "none", 0),
                "by_class": classes, "by_status": dict(sorted(self.by_status.items())),
                "ok_200": self.count(200),
                "rejected_by_design": sum(n for s, n in self.by_status.items()
                                          if s != "none" and s[0] == "4") + self.count(503),
                "disconnected_by_client": self.disconnected,
                "stream_timeouts": self.timeout_events, "speculative_answers": self.speculative,
                "lost": self.lost, "unexpected": self.unexpected,
                "latency_200_p50_s": pick(0.5), "latency_200_p99_s": pick(0.99)}


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
                    and m.get("kv_cache_usage_perc") == 0)
            if idle or time.monotonic() >= deadline:
                return m, idle
            time.sleep(0.5)


# ---------------------------------------------------------------------------------------------


def load_items(model_dir):
    rec = json.loads((Path(model_dir) / "recommendation.json").read_text())
    catalogue = json.loads((Path(model_dir) / rec.get("catalogue", "catalogue.json")).read_text())
    ids = sorted(catalogue, key=lambda s: (len(s), s))
    tokens = sorted({t for ident in catalogue.values() for t in ident})
    return ids, tokens


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


def merge(tallies):
    total = Tally()
    for t in tallies:
        total.sent += t.sent
        for attr in ("lost", "unexpected", "disconnected", "timeout_events", "speculative"):
            setattr(total, attr, getattr(total, attr) + getattr(t, attr))
        for k, n in t.by_status.items():
            total.by_status[k] = total.by_status.get(k, 0) + n
        total.examples += t.examples
        total.latency_ok += t.latency_ok
    return total


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
          waiting=m.get("num_requests_waiting"), kv_usage=m.get("kv_cache_usage_perc"))
    # 3. Soak.
    soak = Tally()
    tallies.append(soak)
    max_seconds = max(args.max_duration, args.duration)
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
    check("kv_usage_0_after_drain", idle and m.get("kv_cache_usage_perc") == 0,
          kv_usage=m.get("kv_cache_usage_perc"), running=m.get("num_requests_running"),
          waiting=m.get("num_requests_waiting"))
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
