"""End-to-end test of earnserve replicas behind nginx (deploy/nginx, docs/replicas.md): two real
`earnserve serve` replicas on the TinyStories model and an unprivileged nginx, all on free
loopback ports, driven with concurrent completions, some streamed, while one replica is stopped.

Run: EARNSERVE_BIN=build/api/earnserve .venv/bin/python -m pytest tests/e2e/test_replicas.py
Skips when nginx is missing (set NGINX_BIN to pick one off PATH).

Client-side retry: nginx retries a request on the other replica only while nothing of the
response has reached the client. A streamed completion sends its headers and first tokens at
once, so a replica killed mid-stream leaves the client with a cut stream that nginx cannot
replay without sending those tokens twice. The SIGKILL test therefore lets the client retry a
cut stream once, from the start, as a robust client would; every other request, and every
request in the SIGTERM test (the replica drains its streams), must succeed on its first try.
"""
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared/models/tinystories-656k"
BIN = os.environ.get("EARNSERVE_BIN", str(ROOT / "build/api/earnserve"))
MAKE_CONF = ROOT / "deploy/nginx/make_conf.py"
NGINX = os.environ.get("NGINX_BIN") or shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
if not NGINX:
    pytest.skip("nginx is not installed (apt-get install nginx-light, or set NGINX_BIN)",
                allow_module_level=True)

NUM_REQUESTS = 60
CONCURRENCY = 12
MAX_TOKENS = 160
PROMPTS = ["Once upon a time", "The little dog", "Tom and Sue went to the park",
           "One day, a bird", "The sun was hot", "Lily had a red ball"]


class Replica:
    """One `earnserve serve` on a free loopback port."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--model", str(MODEL), "--port", "0", "--threads", "1",
             "--kv-cache-memory", "32MiB", "--drain-timeout-s", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if m:
                self.address = f"{m.group(1)}:{m.group(2)}"
                break
        if not hasattr(self, "address"):
            self.proc.kill()
            raise RuntimeError("replica did not start: " + "".join(self.lines))
        self.url = "http://" + self.address
        threading.Thread(target=self._drain_output, daemon=True).start()

    def _drain_output(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def metric(self, name):
        text = requests.get(self.url + "/metrics", timeout=10).text
        m = re.search(r"^earnserve:" + re.escape(name) + r"\{[^}]*\} (\S+)$", text, re.M)
        assert m, f"metric {name} missing"
        return float(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx from deploy/nginx/make_conf.py in front of `replicas`, prefix under `prefix`."""

    def __init__(self, prefix, replicas):
        self.prefix = prefix
        # The free port may be taken again before nginx binds it; try a few.
        for _ in range(3):
            port = free_port()
            subprocess.run([sys.executable, str(MAKE_CONF), "--prefix", str(prefix), "--listen",
                            f"127.0.0.1:{port}", *sum((["--replica", r.address] for r in replicas),
                                                      [])],
                           check=True, capture_output=True)
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                 str(prefix / "logs/error.log"), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 10
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(self.url + "/health", timeout=5).status_code == 200:
                        return
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
            self.stop()
        raise RuntimeError("nginx did not start: " + self.error_log())

    def error_log(self):
        path = self.prefix / "logs/error.log"
        return path.read_text() if path.exists() else "(no error log)"

    def access_log(self):
        return (self.prefix / "logs/access.log").read_text().splitlines()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(tmp_path):
    if not Path(BIN).exists():
        pytest.fail(f"no earnserve binary at {BIN} (set EARNSERVE_BIN)")
    if not MODEL.is_dir():
        pytest.fail(f"no TinyStories model at {MODEL}")
    replicas = []
    nginx = None
    try:
        replicas = [Replica(), Replica()]
        nginx = Nginx(tmp_path / "nginx", replicas)
        yield nginx, replicas
    finally:
        if nginx:
            nginx.stop()
        for r in replicas:
            r.stop()


def body(i):
    return {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": MAX_TOKENS, "temperature": 0}


def streamed(i):
    return i % 3 == 0


def complete(url, i):
    """Sends request i; returns (text, finish_reason), or raises on any failure or cut stream."""
    if not streamed(i):
        r = requests.post(url + "/v1/completions", json=body(i), timeout=60)
        assert r.status_code == 200, f"request {i}: HTTP {r.status_code} {r.text[:200]}"
        choice = r.json()["choices"][0]
        return choice["text"], choice["finish_reason"]
    r = requests.post(url + "/v1/completions", json=dict(body(i), stream=True), stream=True,
                      timeout=60)
    assert r.status_code == 200, f"request {i}: HTTP {r.status_code} {r.text[:200]}"
    text, finish, done = "", None, False
    for line in r.iter_lines():
        if not line:
            continue
        assert line.startswith(b"data: "), f"request {i}: not an SSE line: {line[:100]}"
        if line == b"data: [DONE]":
            done = True
            continue
        try:
            chunk = json.loads(line[len(b"data: "):])
        except json.JSONDecodeError:
            raise ConnectionError(f"request {i}: a cut SSE event: {line[:100]}")
        assert "error" not in chunk, f"request {i}: {chunk}"
        text += chunk["choices"][0]["text"]
        finish = chunk["choices"][0]["finish_reason"] or finish
    if not done:
        raise ConnectionError(f"request {i}: the stream ended without data: [DONE]")
    return text, finish


def run_load(url, retry_cut_streams, during=None):
    """Sends NUM_REQUESTS completions through `url`, CONCURRENCY at a time; calls during(done)
    on a side thread, where `done` counts finished requests. Returns per-request results."""
    results = [None] * NUM_REQUESTS
    done = [0]
    lock = threading.Lock()

    def one(i):
        attempts = 0
        while True:
            attempts += 1
            try:
                text, finish = complete(url, i)
                break
            except (requests.RequestException, ConnectionError) as e:
                if not (retry_cut_streams and streamed(i) and attempts == 1):
                    results[i] = {"error": f"request {i}: {e!r}"}
                    return
        results[i] = {"text": text, "finish": finish, "client_retries": attempts - 1}
        with lock:
            done[0] += 1

    side = threading.Thread(target=during, args=(done,)) if during else None
    if side:
        side.start()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(NUM_REQUESTS)))
    if side:
        side.join()
    return results


def reference_texts(replica):
    out = {}
    for p in PROMPTS:
        r = requests.post(replica.url + "/v1/completions",
                          json={"prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0},
                          timeout=60)
        assert r.status_code == 200, r.text
        out[p] = r.json()["choices"][0]["text"]
    return out


def check_results(results, reference):
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, f"{len(errors)} requests failed: {errors[:3]}"
    for i, r in enumerate(results):
        # Greedy decoding is batch-invariant, so every replica and every retry gives the
        # reference text; a stream with lost or repeated chunks would not.
        assert r["text"] == reference[body(i)["prompt"]], f"request {i}: wrong text"
        assert r["finish"] in ("length", "stop"), f"request {i}: finish_reason {r['finish']}"


def failovers(nginx, victim):
    """Access-log lines of requests that were sent to `victim` and then to another replica."""
    return [line for line in nginx.access_log()
            if re.search(r"upstream=\[" + re.escape(victim.address) + r", ", line)]


def test_both_replicas_serve(cluster):
    nginx, replicas = cluster
    reference = reference_texts(replicas[0])
    before = [r.metric("request_success_total") for r in replicas]
    results = run_load(nginx.url, retry_cut_streams=False)
    check_results(results, reference)
    assert all(r["client_retries"] == 0 for r in results)
    served = [r.metric("request_success_total") - b for r, b in zip(replicas, before)]
    assert sum(served) == NUM_REQUESTS, f"replicas served {served}"
    assert min(served) > 0, f"one replica served nothing: {served}"


def stop_mid_run(nginx, replicas, sig, retry_cut_streams):
    """Runs the load and sends `sig` to replica 0 once a few requests finished and it has
    requests running. Returns (results, replica-0 requests running when signalled)."""
    victim, survivor = replicas
    reference = reference_texts(survivor)
    survivor_before = survivor.metric("request_success_total")
    running_at_signal = []

    def stop_victim(done):
        deadline = time.time() + 30
        while time.time() < deadline:
            if done[0] >= NUM_REQUESTS // 6:
                running = victim.metric("num_requests_running")
                if running >= 1:
                    running_at_signal.append(running)
                    victim.proc.send_signal(sig)
                    return
            time.sleep(0.005)

    results = run_load(nginx.url, retry_cut_streams, during=stop_victim)
    assert running_at_signal, "replica 0 never had requests running; it was not stopped"
    check_results(results, reference)
    assert victim.proc.wait(30) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert survivor.metric("request_success_total") > survivor_before
    # The requests that reached the stopped replica after the signal went on to the other one.
    assert failovers(nginx, victim), "no request failed over:\n" + "\n".join(nginx.access_log())
    # nginx keeps answering, from the survivor, after the replica is gone.
    for _ in range(5):
        assert requests.get(nginx.url + "/health", timeout=10).status_code == 200
    assert complete(nginx.url, 1)[0] == reference[body(1)["prompt"]]
    return results


def test_sigterm_mid_run_drains_and_fails_over(cluster):
    nginx, replicas = cluster
    results = stop_mid_run(nginx, replicas, signal.SIGTERM, retry_cut_streams=False)
    # The replica drains what it admitted (streams included) and answers 503 to the rest,
    # which nginx retries: no client sees a failure.
    assert all(r["client_retries"] == 0 for r in results)


def test_sigkill_mid_run_fails_over(cluster):
    nginx, replicas = cluster
    results = stop_mid_run(nginx, replicas, signal.SIGKILL, retry_cut_streams=True)
    # run_load let the client retry only cut streams: a non-streamed request on the killed
    # replica had received nothing yet, so it had to succeed through nginx's retry alone.
    retried = [i for i, r in enumerate(results) if r["client_retries"]]
    print(f"SIGKILL: {len(failovers(nginx, replicas[0]))} requests failed over in nginx, "
          f"{len(retried)} cut streams retried by the client")
