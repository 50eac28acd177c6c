"""End-to-end tests of `earnserve serve`: the real binary on a free loopback port, driven with the
official openai client and plain HTTP.

Run: EARNSERVE_BIN=build/api/earnserve .venv/bin/python -m pytest tests/e2e/test_server.py
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
TINY_REC = ROOT / "tests/fixtures/models/tiny-rec"
BIN = os.environ.get("EARNSERVE_BIN", str(ROOT / "build/api/earnserve"))


class Server:
    def __init__(self, *extra, model=TINY_REC, env=None):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--model", str(model), "--port", "0", "--kv-cache-memory", "16MiB",
             "--max-body-bytes", "1MiB", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=None if env is None else {**os.environ, **env})
        deadline = time.time() + 60
        self.lines = []
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if m:
                self.url = f"http://{m.group(1)}:{m.group(2)}"
                break
        else:
            self.proc.kill()
        if not hasattr(self, "url"):
            self.proc.kill()
            raise RuntimeError("server did not start: " + "".join(self.lines))
        threading.Thread(target=self._drain_output, daemon=True).start()

    def _drain_output(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def post(self, path, body=None, **kw):
        return requests.post(self.url + path, json=body, timeout=60, **kw)

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


@pytest.fixture(scope="module")
def server():
    if not Path(BIN).exists():
        pytest.fail(f"no earnserve binary at {BIN} (set EARNSERVE_BIN)")
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def test_health_and_models(server, client):
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-rec"]


def test_tokenize_round_trip(server):
    r = server.post("/tokenize", {"prompt": "Once upon a time"})
    assert r.status_code == 200
    tokens = r.json()["tokens"]
    assert r.json()["count"] == len(tokens) > 0
    d = server.post("/detokenize", {"tokens": tokens})
    assert d.status_code == 200
    assert "Once upon a time" in d.json()["prompt"]


def test_completion_greedy_is_deterministic(client):
    a = client.completions.create(model="tiny-rec", prompt="Once upon a time", max_tokens=8,
                                  temperature=0)
    b = client.completions.create(model="tiny-rec", prompt="Once upon a time", max_tokens=8,
                                  temperature=0)
    assert a.choices[0].text == b.choices[0].text
    assert a.choices[0].finish_reason in ("length", "stop")
    assert a.usage.completion_tokens <= 8
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens


def test_completion_prompt_forms_and_n(client):
    r = client.completions.create(model="tiny-rec", prompt=["Hello", "A cat"], max_tokens=4, n=2,
                                  temperature=1.0, seed=7)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    ids = client.completions.create(model="tiny-rec", prompt=[[5, 6, 7], [8, 9]], max_tokens=3,
                                    temperature=0)
    assert len(ids.choices) == 2
    assert ids.usage.prompt_tokens == 5


def test_streaming_matches_non_streaming(client):
    full = client.completions.create(model="tiny-rec", prompt="The dog", max_tokens=10,
                                     temperature=0)
    stream = client.completions.create(model="tiny-rec", prompt="The dog", max_tokens=10,
                                       temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == full.choices[0].text
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_sse_wire_format_ends_with_done(server):
    r = server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 3, "stream": True},
                    stream=True)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    json.loads(events[0][len("data: "):])


def test_beam_search_ranks_n_choices(server):
    r = server.post("/v1/completions", {"prompt": "Once upon", "max_tokens": 5,
                                        "use_beam_search": True, "n": 3, "best_of": 4})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    scores = [c["score"] for c in choices]
    assert scores == sorted(scores, reverse=True)
    assert len({c["text"] for c in choices}) == 3


def test_catalogue_constrained_completion_returns_items(server):
    r = server.post("/v1/completions", {"prompt": "Next item:", "max_tokens": 5,
                                        "use_beam_search": True, "n": 2,
                                        "constrain_to_catalogue": True})
    assert r.status_code == 200, r.text
    catalogue = json.loads((TINY_REC / "catalogue.json").read_text())
    for c in r.json()["choices"]:
        assert c["item_id"] in catalogue
        assert c["text"] == "".join(catalogue[c["item_id"]])


def test_recommendations(server):
    catalogue = json.loads((TINY_REC / "catalogue.json").read_text())
    history = ["0", "1", "2"]
    r = server.post("/v1/recommendations", {"model": "tiny-rec", "history": history, "top_k": 5,
                                            "exclude_history": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "recommendation"
    items = body["items"]
    assert len(items) == 5
    assert len({i["item_id"] for i in items}) == 5
    for item in items:
        assert item["item_id"] in catalogue and item["item_id"] not in history
        assert item["identifier"] == "".join(catalogue[item["item_id"]])
        assert item["title"]
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert body["usage"]["prompt_tokens"] > 0
    # One KV group (a plain model): the pages the request held at most, prompt and five beams.
    blocks = body["usage"]["kv_blocks"]
    assert len(blocks) == 1 and blocks[0] >= 5, blocks


def test_chat_without_template_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-rec",
                                       messages=[{"role": "user", "content": "hi"}])
    assert "chat template" in str(e.value)


def test_metrics_count_tokens_and_latencies(server, client):
    before = server.metric("generation_tokens_total")
    client.completions.create(model="tiny-rec", prompt="Hello", max_tokens=4, temperature=0,
                              extra_body={"ignore_eos": True})
    assert server.metric("generation_tokens_total") >= before + 4
    text = requests.get(server.url + "/metrics", timeout=10).text
    for name in ["num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "prefix_cache_queries_total", "prefix_cache_hits_total",
                 "prompt_tokens_total", "num_preemptions_total"]:
        assert f"earnserve:{name}{{" in text, name
    for name in ["time_to_first_token_seconds", "inter_token_latency_seconds",
                 "e2e_request_latency_seconds"]:
        assert f"earnserve:{name}_bucket{{" in text, name
    assert server.metric("e2e_request_latency_seconds_count") >= 1
    assert 'earnserve:request_peak_kv_blocks_count{kv_group="0"' in text


LONG_PROMPT = " ".join(["word"] * 1500)
BAD_INPUTS = [
    ("malformed json", "/v1/completions", b'{"prompt": ', 400, None),
    ("not an object", "/v1/completions", b"[1, 2, 3]", 422, None),
    ("wrong type", "/v1/completions", {"prompt": "a", "max_tokens": "many"}, 400, "max_tokens"),
    ("negative max_tokens", "/v1/completions", {"prompt": "a", "max_tokens": -5}, 400,
     "max_tokens"),
    ("huge max_tokens", "/v1/completions", {"prompt": "a", "max_tokens": 10**12}, 400,
     "max_tokens"),
    ("n over the limit", "/v1/completions", {"prompt": "a", "n": 100000}, 400, "n"),
    ("unknown model", "/v1/completions", {"model": "gpt-nope", "prompt": "a"}, 404, "model"),
    ("empty prompt", "/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("prompt longer than the context", "/v1/completions", {"prompt": LONG_PROMPT}, 400,
     "prompt"),
    ("invalid utf-8", "/v1/completions", b'{"prompt": "ab\xff\xfe"}', 400, None),
    ("token outside vocabulary", "/v1/completions", {"prompt": [1, 10**7]}, 400, "prompt"),
    ("unknown item id", "/v1/recommendations", {"history": ["0", "not-an-item"]}, 400,
     "history"),
    ("unknown route", "/v1/nothing", {"prompt": "a"}, 404, None),
]


@pytest.mark.parametrize("name,path,body,status,param", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_4xx_and_server_stays_healthy(server, name, path, body, status, param):
    if isinstance(body, bytes):
        r = requests.post(server.url + path, data=body, timeout=30,
                          headers={"Content-Type": "application/json"})
    else:
        r = server.post(path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    assert "code" in err and "param" in err
    if param:
        assert err["param"] == param
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_ten_megabyte_body_is_413(server):
    r = requests.post(server.url + "/v1/completions", data=b"x" * (10 << 20), timeout=60)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_bad_input_through_openai_client(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-rec", prompt="a", max_tokens=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="a")


def wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_client_disconnect_mid_stream_frees_pages(server):
    assert wait_for(lambda: server.metric("kv_cache_usage_perc") == 0)
    sock = socket.create_connection((server.url.split("//")[1].split(":")[0],
                                     int(server.url.rsplit(":", 1)[1])))
    body = json.dumps({"prompt": "Once", "max_tokens": 1000, "ignore_eos": True,
                       "stream": True, "n": 4, "temperature": 1.0}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while received.count(b"data: ") < 3:
        chunk = sock.recv(4096)
        assert chunk
        received += chunk
    assert server.metric("kv_cache_usage_perc") > 0
    sock.close()
    assert wait_for(lambda: server.metric("kv_cache_usage_perc") == 0 and
                    server.metric("num_requests_running") == 0), "pages were not freed"
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_queue_full_gets_429():
    s = Server("--max-queue", "1", "--max-num-seqs", "1")
    try:
        long_body = {"prompt": "Once", "max_tokens": 900, "ignore_eos": True, "stream": True}
        first = requests.post(s.url + "/v1/completions", json=long_body, stream=True, timeout=60)
        lines = first.iter_lines()
        assert next(l for l in lines if l).startswith(b"data: ")  # admitted and generating
        r = s.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "queue_full"
        first.close()
        assert wait_for(lambda: s.post("/v1/completions",
                                       {"prompt": "Hi", "max_tokens": 2}).status_code == 200)
    finally:
        s.stop()


def test_request_timeout_is_408_and_frees_pages():
    s = Server("--request-timeout-s", "1")
    try:
        # Sixteen sequences of 1000 tokens take several seconds; the limit is 1 s.
        long_body = {"prompt": "Once", "max_tokens": 1000, "ignore_eos": True, "n": 16,
                     "temperature": 1.0}
        start = time.time()
        r = s.post("/v1/completions", long_body)
        assert r.status_code == 408, r.text
        assert time.time() - start < 30
        err = r.json()["error"]
        assert err["code"] == "request_timeout" and "--request-timeout-s" in err["message"]
        assert wait_for(lambda: s.metric("kv_cache_usage_perc") == 0 and
                        s.metric("num_requests_running") == 0), "pages were not freed"
        assert s.metric("request_timeouts_total") == 1

        # A stream out of time ends with an error event, then [DONE].
        r = requests.post(s.url + "/v1/completions", json={**long_body, "stream": True},
                          stream=True, timeout=60)
        assert r.status_code == 200
        events = [l[len(b"data: "):] for l in r.iter_lines() if l.startswith(b"data: ")]
        assert events[-1] == b"[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "request_timeout"
        assert any("choices" in json.loads(e) for e in events[:-2])
        assert wait_for(lambda: s.metric("kv_cache_usage_perc") == 0 and
                        s.metric("num_requests_running") == 0), "pages were not freed"
        assert s.metric("request_timeouts_total") == 2

        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            client.completions.create(model="tiny-rec", prompt="Once", max_tokens=1000, n=16,
                                      temperature=1.0, extra_body={"ignore_eos": True})
        assert e.value.status_code == 408
        assert s.metric("request_timeouts_total") == 3
        # Requests within the limit are answered as usual.
        ok = client.completions.create(model="tiny-rec", prompt="Once", max_tokens=4,
                                       temperature=0)
        assert ok.usage.completion_tokens <= 4
        assert requests.get(s.url + "/health", timeout=10).status_code == 200
    finally:
        s.stop()


def test_beams_that_cannot_fit_the_kv_cache_even_alone_are_400(server):
    r = server.post("/v1/completions", {"prompt": "Once", "max_tokens": 1000, "n": 128,
                                        "temperature": 1.0})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "kv_cache_too_small"
    assert "KV cache" in err["message"] and "--kv-cache-memory" in err["message"]
    assert wait_for(lambda: server.metric("num_requests_waiting") == 0)

    small = Server("--kv-cache-memory", "2MiB")
    try:
        r = small.post("/v1/recommendations", {"history": ["0", "1", "2"], "top_k": 5,
                                               "beam_width": 512})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "kv_cache_too_small"
        r = small.post("/v1/recommendations", {"history": ["0", "1", "2"], "top_k": 5})
        assert r.status_code == 200, r.text
    finally:
        small.stop()


def test_sigterm_drains_in_flight_requests_and_exits_zero():
    s = Server()
    result = {}

    def run():
        result["r"] = requests.post(s.url + "/v1/completions",
                                    json={"prompt": "Once", "max_tokens": 300, "ignore_eos": True},
                                    timeout=120)

    t = threading.Thread(target=run)
    t.start()
    assert wait_for(lambda: s.metric("num_requests_running") >= 1, timeout=20)
    s.proc.send_signal(signal.SIGTERM)
    t.join(120)
    assert s.proc.wait(60) == 0
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 300


def test_64_concurrent_streaming_clients_equal_offline_runs(server, client):
    """64 streams at once (mixed greedy and seeded sampling, different lengths) all complete, and
    each equals the same request run alone without streaming."""
    prompts = ["The dog", "Once upon a time", "A small bird", "The sun was hot", "Tom and Sue",
               "She went to the park", "My cat", "They found a box"]
    reqs = []
    for i in range(64):
        r = {"prompt": prompts[i % len(prompts)], "max_tokens": 4 + i % 13}
        if i % 2:
            r.update(temperature=0.9, top_p=0.95, seed=100 + i)
        else:
            r.update(temperature=0)
        reqs.append(r)
    streamed = [None] * len(reqs)

    def run(i):
        text, finish = "", None
        for chunk in client.completions.create(model="tiny-rec", stream=True, **reqs[i]):
            if chunk.choices:
                text += chunk.choices[0].text
                finish = chunk.choices[0].finish_reason or finish
        streamed[i] = (text, finish)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(s is not None for s in streamed), "a streaming client did not complete"
    for i, r in enumerate(reqs):
        alone = client.completions.create(model="tiny-rec", **r)
        assert streamed[i] == (alone.choices[0].text, alone.choices[0].finish_reason), (i, r)
    assert server.metric("kv_cache_usage_perc") == 0.0


CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + '\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}")


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory):
    """TinyStories with a chat template added to its tokenizer_config.json."""
    story = ROOT.parent / "shared/models/tinystories-656k"
    if not story.exists():
        pytest.fail(f"missing {story}: the shared models must be beside the checkout")
    d = tmp_path_factory.mktemp("chat-model")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (d / name).symlink_to(story / name)
    cfg = json.loads((story / "tokenizer_config.json").read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    s = Server(model=d)
    yield s
    s.stop()


def test_chat_completions_render_the_template_and_stream(chat_server):
    c = openai.OpenAI(base_url=chat_server.url + "/v1", api_key="none", max_retries=0)
    name = c.models.list().data[0].id
    messages = [{"role": "system", "content": "You tell stories."},
                {"role": "user", "content": "Tell me about a cat."}]
    full = c.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0)
    assert full.choices[0].message.role == "assistant"
    assert full.choices[0].message.content
    rendered = ("<|system|> You tell stories.\n<|user|> Tell me about a cat.\n<|assistant|> ")
    ids = chat_server.post("/tokenize", {"prompt": rendered, "add_special_tokens": False}).json()["tokens"]
    assert full.usage.prompt_tokens == len(ids)
    text = ""
    for chunk in c.chat.completions.create(model=name, messages=messages, max_tokens=12,
                                           temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text == full.choices[0].message.content


# --- Speculative beam search (--draft-model; docs/speculative.md). tiny-rec drafts for itself:
# every drafted level is accepted and the results equal plain beam search exactly (strict).
# --speculative-policy always: every round drafts its tree (the default, auto, drafts only when
# the measured cost model predicts that a tree pays; tested below).

@pytest.fixture(scope="module")
def spec_server():
    s = Server("--draft-model", str(TINY_REC), "--draft-kv-cache-memory", "8MiB",
               "--num-draft-beams", "8", "--num-speculative-steps", "2",
               "--speculative-policy", "always")
    yield s
    s.stop()


def _same_ranking(a, b, key):
    assert [x[key] for x in a] == [x[key] for x in b]
    for x, y in zip(a, b):
        assert abs(x["score"] - y["score"]) <= 1e-4, (x, y)


def test_speculative_recommendations_equal_plain_and_report_stats(server, spec_server):
    body = {"history": ["0", "1", "2"], "top_k": 5, "exclude_history": True}
    plain = server.post("/v1/recommendations", body)
    spec = spec_server.post("/v1/recommendations", body)  # speculative by default with a draft
    assert plain.status_code == 200 and spec.status_code == 200, spec.text
    _same_ranking(plain.json()["items"], spec.json()["items"], "item_id")
    assert "speculative" not in plain.json()["usage"]
    stats = spec.json()["usage"]["speculative"]
    assert set(stats) == {"rounds", "accepted_steps", "accepted_steps_per_round", "target_calls",
                          "draft_calls", "plain_steps", "plain_steps_by_reason", "trees"}
    assert stats["rounds"] >= 1 and len(stats["accepted_steps_per_round"]) == stats["rounds"]
    assert stats["accepted_steps"] == sum(stats["accepted_steps_per_round"])
    # The draft is the target itself: the first round accepts both drafted levels (gamma = 2).
    assert stats["accepted_steps_per_round"][0] == 2, stats
    assert stats["draft_calls"] >= stats["rounds"]
    # An identifier of 4 codes and the end token takes 5 steps; rounds of up to 3 need fewer calls.
    assert 1 <= stats["target_calls"] < 5, stats

    off = spec_server.post("/v1/recommendations", {**body, "speculative": False})
    assert off.status_code == 200
    assert "speculative" not in off.json()["usage"]
    _same_ranking(plain.json()["items"], off.json()["items"], "item_id")


def test_speculative_beam_completion_equals_plain(server, spec_server):
    body = {"prompt": "Next item:", "max_tokens": 5, "use_beam_search": True, "n": 3,
            "best_of": 4, "constrain_to_catalogue": True}
    plain = server.post("/v1/completions", body)
    spec = spec_server.post("/v1/completions", {**body, "speculative": {
        "draft_model": "tiny-rec", "num_draft_beams": 6, "num_speculative_steps": 3,
        "verification": "strict"}})
    assert plain.status_code == 200 and spec.status_code == 200, spec.text
    _same_ranking(plain.json()["choices"], spec.json()["choices"], "text")
    assert spec.json()["usage"]["speculative"]["rounds"] >= 1
    # Completions speculate only when they ask.
    again = spec_server.post("/v1/completions", body)
    assert again.status_code == 200 and "speculative" not in again.json()["usage"]


@pytest.mark.parametrize("body,param", [
    ({"speculative": {"draft_model": "another-draft"}}, "speculative.draft_model"),
    ({"speculative": {"verification": "loose"}}, "speculative.verification"),
    ({"speculative": {"num_draft_beams": 2}}, "speculative.num_draft_beams"),
    ({"speculative": {"num_speculative_steps": 0}}, "speculative.num_speculative_steps"),
    ({"speculative": {"gamma": 2}}, "speculative.gamma"),
    ({"speculative": {"policy": "sometimes"}}, "speculative.policy"),
    ({"speculative": "yes"}, "speculative"),
])
def test_bad_speculative_fields_are_400_naming_the_field(spec_server, body, param):
    r = spec_server.post("/v1/recommendations", {"history": ["0"], "top_k": 4, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    c = spec_server.post("/v1/completions", {"prompt": "A", "max_tokens": 2,
                                             "use_beam_search": True, "best_of": 4, **body})
    assert c.status_code == 400 and c.json()["error"]["param"] == param, c.text


def test_speculative_without_a_draft_is_400(server):
    r = server.post("/v1/recommendations", {"history": ["0"], "top_k": 2, "speculative": True})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "speculative"
    assert "--draft-model" in r.json()["error"]["message"]


def test_relaxed_recommendations_sample_target_scored_items(spec_server):
    body = {"history": ["0", "1", "2"], "top_k": 4, "seed": 5,
            "speculative": {"verification": "relaxed", "num_draft_beams": 8}}
    a = spec_server.post("/v1/recommendations", body)
    b = spec_server.post("/v1/recommendations", body)
    assert a.status_code == 200 and b.status_code == 200, a.text
    items = a.json()["items"]
    assert len(items) == 4 and len({x["item_id"] for x in items}) == 4
    assert [x["score"] for x in items] == sorted((x["score"] for x in items), reverse=True)
    assert a.json()["usage"]["speculative"]["rounds"] >= 1
    _same_ranking(items, b.json()["items"], "item_id")  # same seed, same batch: same sample
    bad = spec_server.post("/v1/recommendations", {**body, "seed": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "seed"


def test_relaxed_verification_as_the_server_default():
    s = Server("--draft-model", str(TINY_REC), "--draft-kv-cache-memory", "8MiB",
               "--num-draft-beams", "8", "--speculative-verification", "relaxed",
               "--speculative-policy", "always")
    try:
        r = s.post("/v1/recommendations", {"history": ["0"], "top_k": 3, "seed": 1})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 3 and r.json()["usage"]["speculative"]["rounds"] >= 1
    finally:
        s.stop()


def test_speculative_policy_auto_is_the_default_and_reports_its_decisions(server):
    # tiny-rec drafting for itself under the default policy: each step is a round or a plain step
    # as the cost model decides; strict results equal plain beam search either way, and the
    # usage and /metrics say what was decided.
    s = Server("--draft-model", str(TINY_REC), "--draft-kv-cache-memory", "8MiB",
               "--num-draft-beams", "8")
    try:
        body = {"history": ["0", "1", "2"], "top_k": 5, "exclude_history": True}
        plain = server.post("/v1/recommendations", body)
        for _ in range(3):
            auto = s.post("/v1/recommendations", body)
            assert auto.status_code == 200, auto.text
            _same_ranking(plain.json()["items"], auto.json()["items"], "item_id")
            stats = auto.json()["usage"]["speculative"]
            reasons = stats["plain_steps_by_reason"]
            assert stats["plain_steps"] == reasons["cost"] + reasons["no_room"]
            assert stats["target_calls"] == 1 + stats["rounds"] + stats["plain_steps"], stats
            assert len(stats["trees"]) == stats["rounds"]
            for n, depth in stats["trees"]:
                assert 5 <= n <= 8 and 0 <= depth <= 3
        forced = s.post("/v1/recommendations", {**body, "speculative": {"policy": "always"}})
        assert forced.status_code == 200
        assert forced.json()["usage"]["speculative"]["rounds"] >= 1
        assert forced.json()["usage"]["speculative"]["plain_steps"] == 0
        _same_ranking(plain.json()["items"], forced.json()["items"], "item_id")
        metrics = requests.get(s.url + "/metrics", timeout=10).text
        assert 'earnserve:spec_plain_steps_total{model_name=' in metrics
        assert 'reason="cost"' in metrics and 'reason="no_room"' in metrics
    finally:
        s.stop()
