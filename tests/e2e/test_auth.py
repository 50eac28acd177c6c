"""End-to-end tests of `earnserve serve --api-key`: every protected route refuses a request
without the right bearer key (401, OpenAI-shaped) and answers it with one, the official openai
client works with api_key=, /health stays open and /metrics is open unless --protect-metrics.

Run: EARNSERVE_BIN=build/api/earnserve .venv/bin/python -m pytest tests/e2e/test_auth.py
"""
import json
import subprocess
from pathlib import Path

import openai
import pytest
import requests

from test_server import BIN, CHAT_TEMPLATE, TINY_REC, Server

KEYS = ["sk-earnserve-test-1", "second-key"]

# Every protected route with a body it answers 200 (tiny-rec with a chat template added).
ROUTES = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/completions", {"prompt": "Once", "max_tokens": 2}),
    ("POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
    ("POST", "/v1/recommendations", {"history": ["0", "1", "2"], "top_k": 3}),
    ("POST", "/tokenize", {"prompt": "Once"}),
    ("POST", "/detokenize", {"tokens": [5, 6]}),
]
ROUTE_IDS = [r[1] for r in ROUTES]


@pytest.fixture(scope="module")
def chat_rec_model(tmp_path_factory):
    """tiny-rec with a chat template, so that every route has a 200 to give."""
    d = tmp_path_factory.mktemp("chat-rec")
    for f in TINY_REC.iterdir():
        if f.name != "tokenizer_config.json":
            (d / f.name).symlink_to(f)
    cfg = json.loads((TINY_REC / "tokenizer_config.json").read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def server(chat_rec_model):
    if not Path(BIN).exists():
        pytest.fail(f"no earnserve binary at {BIN} (set EARNSERVE_BIN)")
    s = Server("--api-key", KEYS[0], "--api-key=" + KEYS[1], "--served-model-name", "tiny-rec",
               model=chat_rec_model)
    yield s
    s.stop()


def call(server, method, path, body, headers):
    return requests.request(method, server.url + path, json=body, headers=headers, timeout=60)


def assert_401(r):
    assert r.status_code == 401, r.text
    assert r.headers.get("WWW-Authenticate") == "Bearer"
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_api_key"
    assert err["param"] is None
    assert err["message"]
    for key in KEYS:
        assert key not in r.text


@pytest.mark.parametrize("method,path,body", ROUTES, ids=ROUTE_IDS)
def test_protected_route_without_a_key_is_401(server, method, path, body):
    r = call(server, method, path, body, {})
    assert_401(r)
    assert "didn't provide an API key" in r.json()["error"]["message"]


@pytest.mark.parametrize("method,path,body", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("authorization", [
    "Bearer wrong-key", "Bearer " + KEYS[0] + "x", "Bearer " + KEYS[0][:-1], "Basic " + KEYS[0],
    KEYS[0], "Bearer"])
def test_protected_route_with_a_wrong_key_is_401(server, method, path, body, authorization):
    assert_401(call(server, method, path, body, {"Authorization": authorization}))


@pytest.mark.parametrize("method,path,body", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("key", KEYS)
def test_protected_route_with_a_key_is_200(server, method, path, body, key):
    r = call(server, method, path, body, {"Authorization": "Bearer " + key})
    assert r.status_code == 200, r.text


def test_unknown_routes_need_a_key_too(server):
    assert_401(call(server, "POST", "/v1/embeddings", {"input": "a"}, {}))
    r = call(server, "POST", "/v1/embeddings", {"input": "a"},
             {"Authorization": "Bearer " + KEYS[0]})
    assert r.status_code == 404


def test_a_refused_request_leaves_the_connection_usable(server):
    with requests.Session() as session:
        for _ in range(3):
            r = session.post(server.url + "/v1/completions", json={"prompt": "Once"}, timeout=30)
            assert_401(r)
            r = session.post(server.url + "/tokenize", json={"prompt": "Once"}, timeout=30,
                             headers={"Authorization": "Bearer " + KEYS[0]})
            assert r.status_code == 200, r.text


def test_refused_requests_count_in_metrics(server):
    before = server.metric("http_unauthorized_total")
    for _ in range(3):
        assert_401(call(server, "POST", "/v1/completions", {"prompt": "Once"}, {}))
    assert_401(call(server, "GET", "/v1/models", None, {"Authorization": "Bearer wrong-key"}))
    r = call(server, "POST", "/tokenize", {"prompt": "Once"},
             {"Authorization": "Bearer " + KEYS[0]})
    assert r.status_code == 200, r.text
    assert server.metric("http_unauthorized_total") == before + 4


def test_health_and_metrics_stay_open(server):
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    r = requests.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200 and "earnserve:" in r.text


def test_openai_client_with_api_key(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS[0], max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-rec"]
    c = client.completions.create(model="tiny-rec", prompt="Once upon a time", max_tokens=4,
                                  temperature=0)
    assert c.usage.completion_tokens <= 4 and c.choices[0].finish_reason
    chat = client.chat.completions.create(
        model="tiny-rec", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
        temperature=0)
    assert chat.choices[0].message.role == "assistant"
    text = "".join(chunk.choices[0].text
                   for chunk in client.completions.create(model="tiny-rec", prompt="Once",
                                                          max_tokens=4, temperature=0,
                                                          stream=True)
                   if chunk.choices)
    plain = client.completions.create(model="tiny-rec", prompt="Once", max_tokens=4,
                                      temperature=0)
    assert text == plain.choices[0].text
    rec = client.post("/recommendations", cast_to=object,
                      body={"history": ["0", "1", "2"], "top_k": 3})
    assert len(rec["items"]) == 3


def test_openai_client_with_a_wrong_key_raises_authentication_error(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        client.completions.create(model="tiny-rec", prompt="Once", max_tokens=2)
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_protect_metrics_and_the_environment_key():
    s = Server("--protect-metrics", env={"EARNSERVE_API_KEY": "env-key"})
    try:
        assert requests.get(s.url + "/health", timeout=10).status_code == 200
        metrics = requests.get(s.url + "/metrics", timeout=10)
        assert metrics.status_code == 401
        assert metrics.json()["error"]["code"] == "invalid_api_key"
        r = requests.get(s.url + "/metrics", headers={"Authorization": "Bearer env-key"},
                         timeout=10)
        assert r.status_code == 200 and "earnserve:" in r.text
        assert s.post("/tokenize", {"prompt": "a"}).status_code == 401
        assert s.post("/tokenize", {"prompt": "a"},
                      headers={"Authorization": "Bearer env-key"}).status_code == 200
    finally:
        s.stop()


def test_protect_metrics_without_a_key_is_a_usage_error():
    r = subprocess.run([BIN, "serve", "--model", str(TINY_REC), "--protect-metrics"],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "--protect-metrics needs --api-key" in r.stderr
