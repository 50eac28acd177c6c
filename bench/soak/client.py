"""The soak's client side (bench/soak/soak.py): sends one request over a fresh loopback
connection and judges the answer (complete? a status its kind allows? for streams, [DONE] or a
deliberate disconnect), and tallies outcomes. Standard library only; Tally is thread-safe.
"""
import http.client
import json
import threading
import time


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


def parse_json(raw, out, what):
    """The JSON value of `raw`; else marks `out` lost (an incomplete answer) and returns None."""
    try:
        return json.loads(raw)
    except ValueError:
        out.lost = True
        out.why = f"{what} is not JSON: {raw[:120]!r}"
        return None


def judge_body(req, status, raw, out):
    body = parse_json(raw, out, f"HTTP {status}: the body")
    if out.lost:
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
        event = parse_json(data, out, "an event")
        if out.lost:
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
