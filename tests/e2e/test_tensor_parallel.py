"""Failure handling of `earnserve serve --tensor-parallel-size 2`: the real binary with one worker
process over Gloo on loopback. A worker killed mid-request or while the server is idle, or one
that stops answering (SIGSTOP) past --tp-timeout-s, fails the engine: requests get 503, /health
turns 503 and the server exits non-zero within a bound; a killed rank 0 takes its workers with
it.

Run: EARNSERVE_BIN=build/api/earnserve .venv/bin/python -m pytest tests/e2e/test_tensor_parallel.py
"""
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
TINY_REC = ROOT / "tests/fixtures/models/tiny-rec"
BIN = os.environ.get("EARNSERVE_BIN", str(ROOT / "build/api/earnserve"))
EXIT_BOUND_S = 30


class TpServer:
    def __init__(self, timeout_s=10):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--model", str(TINY_REC), "--port", "0", "--kv-cache-memory", "16MiB",
             "--tensor-parallel-size", "2", "--tp-timeout-s", str(timeout_s)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if m:
                self.url = m.group(1)
                break
        if not hasattr(self, "url"):
            self.proc.kill()
            raise RuntimeError("server did not start: " + "".join(self.lines))
        threading.Thread(target=self._drain, daemon=True).start()
        self.worker = self._worker_pid()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def _worker_pid(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        workers = [p for p in pids
                   if b"worker" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
        assert len(workers) == 1, (pids, workers)
        return workers[0]

    def complete(self, max_tokens=4, timeout=60):
        return requests.post(self.url + "/v1/completions", timeout=timeout,
                             json={"prompt": "the user likes", "max_tokens": max_tokens,
                                   "temperature": 0})

    def health(self):
        return requests.get(self.url + "/health", timeout=10).status_code

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if pid_alive(self.worker):
            os.kill(self.worker, signal.SIGKILL)


def pid_alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_exit(server, since):
    code = server.proc.wait(timeout=EXIT_BOUND_S + 5)
    assert time.time() - since <= EXIT_BOUND_S, time.time() - since
    return code


def test_worker_killed_mid_request_fails_requests_health_and_exits():
    server = TpServer()
    try:
        assert server.health() == 200
        ok = server.complete()
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["completion_tokens"] == 4

        # Stop the worker so the next step waits in a collective, then kill it there.
        os.kill(server.worker, signal.SIGSTOP)
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=server.complete(max_tokens=16)))
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive(), "the request finished although a rank was stopped"
        killed_at = time.time()
        os.kill(server.worker, signal.SIGKILL)
        thread.join(timeout=EXIT_BOUND_S)
        assert not thread.is_alive()
        in_flight = result["r"]
        assert in_flight.status_code == 503, in_flight.text
        assert "rank" in in_flight.json()["error"]["message"], in_flight.text
        assert server.health() == 503
        later = server.complete()
        assert later.status_code == 503, later.text
        assert wait_exit(server, killed_at) != 0
    finally:
        server.close()


def test_worker_killed_while_idle_turns_health_unhealthy_and_exits():
    server = TpServer()
    try:
        assert server.health() == 200
        killed_at = time.time()
        os.kill(server.worker, signal.SIGKILL)
        seen = []
        while time.time() - killed_at < EXIT_BOUND_S:
            try:
                seen.append(server.health())
            except requests.ConnectionError:
                break
            if seen[-1] == 503:
                break
            time.sleep(0.1)
        assert seen and seen[-1] == 503, seen
        assert wait_exit(server, killed_at) != 0
        assert any("worker" in l or "rank 1" in l for l in server.lines), "".join(server.lines)
    finally:
        server.close()


def test_worker_that_stops_answering_fails_the_request_after_the_timeout():
    server = TpServer(timeout_s=3)
    try:
        assert server.complete().status_code == 200
        os.kill(server.worker, signal.SIGSTOP)
        stopped_at = time.time()
        hung = server.complete(max_tokens=8)
        assert hung.status_code == 503, hung.text
        assert server.health() == 503
        assert wait_exit(server, stopped_at) != 0
    finally:
        if pid_alive(server.worker):
            os.kill(server.worker, signal.SIGCONT)
        server.close()


def test_worker_exits_when_rank_zero_is_killed():
    server = TpServer()
    try:
        assert server.complete().status_code == 200
        server.proc.kill()
        server.proc.wait()
        deadline = time.time() + EXIT_BOUND_S
        while pid_alive(server.worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not pid_alive(server.worker)
    finally:
        server.close()
