"""What an operator sees of `earnserve serve`: the Grafana dashboard's queries against the real
/metrics, the access log (--log-format json and text, --no-access-log), X-Request-Id, and
GET /v1/items with its clean 4xx answers and API keys. The real binary on the tiny-rec fixture.

Run: EARNSERVE_BIN=build/api/earnserve .venv/bin/python -m pytest tests/e2e/test_operator.py
"""
import json
import re
import time
from pathlib import Path

import pytest
import requests

from test_server import BIN, ROOT, Server

DASHBOARD = ROOT / "deploy/grafana/earnserve.json"
PROMETHEUS = ROOT / "deploy/prometheus.yml"
KEY = "sk-operator-test"


@pytest.fixture(scope="module")
def json_server():
    if not Path(BIN).exists():
        pytest.fail(f"no earnserve binary at {BIN} (set EARNSERVE_BIN)")
    s = Server("--log-format", "json")
    yield s
    s.stop()


def access_lines(server, count, timeout=10):
    """The access log lines (JSON objects) once there are at least `count`."""
    deadline = time.time() + timeout
    while True:
        lines = [json.loads(l) for l in server.lines if l.startswith("{")]
        if len(lines) >= count or time.time() > deadline:
            return lines
        time.sleep(0.05)


def dashboard_metrics():
    """Every earnserve metric name a dashboard query reads."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for var in dash["templating"]["list"]:
        if var.get("definition"):
            exprs.append(var["definition"])
    names = set()
    for e in exprs:
        names.update(re.findall(r"earnserve:[A-Za-z0-9_:]+", e))
    return names


def test_every_metric_the_dashboard_queries_is_exported(json_server):
    # Histograms with labels (KV pages per group) exist once a request has finished.
    r = json_server.post("/v1/recommendations", {"history": ["0", "1"], "top_k": 3})
    assert r.status_code == 200, r.text
    text = requests.get(json_server.url + "/metrics", timeout=10).text
    exported = set(re.findall(r"^(earnserve:[A-Za-z0-9_:]+)[{ ]", text, re.M))
    wanted = dashboard_metrics()
    # The list: request rate, running/waiting, TTFT/ITL/e2e percentiles, KV usage per
    # group, prefix-cache hit rate, preemptions, speculative acceptance.
    for must in ("earnserve:request_success_total", "earnserve:num_requests_running",
                 "earnserve:num_requests_waiting", "earnserve:time_to_first_token_seconds_bucket",
                 "earnserve:inter_token_latency_seconds_bucket",
                 "earnserve:e2e_request_latency_seconds_bucket",
                 "earnserve:request_peak_kv_blocks_bucket", "earnserve:kv_cache_usage_perc",
                 "earnserve:prefix_cache_hits_total", "earnserve:num_preemptions_total",
                 "earnserve:spec_accepted_steps_total", "earnserve:spec_rounds_total"):
        assert must in wanted, f"the dashboard does not chart {must}"
    missing = sorted(wanted - exported)
    assert not missing, f"the dashboard queries metrics /metrics lacks: {missing}"
    dash = json.loads(DASHBOARD.read_text())
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_prometheus_example_scrapes_metrics():
    text = PROMETHEUS.read_text()
    assert re.search(r"^\s*metrics_path: /metrics$", text, re.M)
    assert re.search(r"^\s*- targets: \[\"127\.0\.0\.1:8000\"\]$", text, re.M)


def test_json_access_log_and_request_ids(json_server):
    before = len(access_lines(json_server, 0))
    rec = json_server.post("/v1/recommendations", {"history": ["0", "1", "2"], "top_k": 4})
    assert rec.status_code == 200
    rec_id = rec.headers["X-Request-Id"]
    assert rec_id == rec.json()["id"]
    mine = json_server.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 3},
                            headers={"X-Request-Id": "client-id-42"})
    assert mine.status_code == 200
    assert mine.headers["X-Request-Id"] == "client-id-42"
    bad_id = requests.get(json_server.url + "/v1/models", headers={"X-Request-Id": "a b"},
                          timeout=10)
    assert re.fullmatch(r"req-[0-9a-f]+", bad_id.headers["X-Request-Id"])
    missing = requests.get(json_server.url + "/nope", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["X-Request-Id"].startswith("req-")
    with requests.post(json_server.url + "/v1/completions", json={
            "prompt": "Once upon a time", "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}, stream=True, timeout=30) as streamed:
        assert streamed.status_code == 200
        stream_id = streamed.headers["X-Request-Id"]
        events = [l for l in streamed.iter_lines() if l]
    assert events[-1] == b"data: [DONE]"
    stream_usage = json.loads(events[-2][len(b"data: "):])["usage"]

    lines = access_lines(json_server, before + 5)[before:]
    assert len(lines) == 5, lines
    by_id = {l["request_id"]: l for l in lines}
    r = by_id[rec_id]
    assert (r["method"], r["path"], r["status"]) == ("POST", "/v1/recommendations", 200)
    assert r["prompt_tokens"] == rec.json()["usage"]["prompt_tokens"]
    assert r["completion_tokens"] == rec.json()["usage"]["completion_tokens"]
    assert r["latency_ms"] >= 0 and r["remote_addr"] == "127.0.0.1"
    c = by_id["client-id-42"]
    assert c["completion_tokens"] == mine.json()["usage"]["completion_tokens"] > 0
    assert c["prompt_tokens"] == mine.json()["usage"]["prompt_tokens"]
    assert by_id[bad_id.headers["X-Request-Id"]]["path"] == "/v1/models"
    assert by_id[missing.headers["X-Request-Id"]]["status"] == 404
    assert by_id[missing.headers["X-Request-Id"]]["prompt_tokens"] is None
    s = by_id[stream_id]
    assert s["completion_tokens"] == stream_usage["completion_tokens"] > 0
    assert s["prompt_tokens"] == stream_usage["prompt_tokens"]
    for line in lines:
        assert set(line) == {"time", "remote_addr", "method", "path", "status", "latency_ms",
                             "prompt_tokens", "completion_tokens", "request_id"}


def test_items_endpoint_over_http(json_server):
    r = requests.get(json_server.url + "/v1/items", params={"search": "Eucerin", "limit": 2},
                     timeout=10)
    assert r.status_code == 200
    page = r.json()
    assert page["object"] == "list" and len(page["data"]) == 2 and page["total"] > 2
    assert page["data"][0] == {"item_id": "0", "identifier": "<a_47><b_103><c_234><d_99>",
                               "title": "Eucerin Redness Relief Soothing Cleanser 6.8 fl oz (200 ml)"}
    for query, param in (("limit=0", "limit"), ("limit=x", "limit"), ("offset=-2", "offset"),
                         ("limit=1&limit=2", "limit"), ("colour=red", "colour")):
        bad = requests.get(json_server.url + "/v1/items?" + query, timeout=10)
        assert bad.status_code == 400, query
        assert bad.json()["error"]["param"] == param
        assert bad.json()["error"]["type"] == "invalid_request_error"


def test_text_access_log_keys_and_no_access_log():
    s = Server("--api-key", KEY)
    try:
        page = requests.get(s.url + "/", timeout=10)
        assert page.status_code == 200  # the page is open; what it asks for needs the key
        assert page.headers["Content-Type"].startswith("text/html")
        assert "<title>earnserve playground</title>" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing external
        assert requests.get(s.url + "/v1/items", timeout=10).status_code == 401
        ok = requests.get(s.url + "/v1/items", params={"search": "soap"},
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["data"]
        deadline = time.time() + 10
        pattern = re.compile(r'^\S+Z 127\.0\.0\.1 "GET /v1/items" 200 [\d.]+ms request_id=req-')
        while not any(pattern.match(l) for l in s.lines) and time.time() < deadline:
            time.sleep(0.05)
        assert any(pattern.match(l) for l in s.lines), s.lines
        assert any('"GET /v1/items" 401' in l for l in s.lines)
    finally:
        s.stop()
    quiet = Server("--no-access-log")
    try:
        assert requests.get(quiet.url + "/health", timeout=10).status_code == 200
        time.sleep(0.3)
        assert not any("/health" in l for l in quiet.lines), quiet.lines
    finally:
        quiet.stop()


def test_bad_log_format_is_a_one_line_error():
    import subprocess
    p = subprocess.run([BIN, "serve", "--model", str(ROOT / "tests/fixtures/models/tiny-rec"),
                        "--log-format", "xml"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "--log-format must be text or json" in p.stderr
