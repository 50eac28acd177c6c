"""The soak's request mix (bench/soak/soak.py): each kind builds a request and names the HTTP
statuses it allows, so that a status outside them is a finding. Kinds and their weights are the
table in Mix.__init__; malformed bodies each name the 4xx (and error code) they must get.
"""
import json
from pathlib import Path

# Statuses a valid request may get by design under overload: answered, timed out, queue full,
# shutting down.
OVERLOAD = {200, 408, 429, 503}
MAX_BEAM_WIDTH = 512  # the server's kMaxBeamWidth: beam_width and num_draft_beams at most


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


def load_items(model_dir):
    rec = json.loads((Path(model_dir) / "recommendation.json").read_text())
    catalogue = json.loads((Path(model_dir) / rec.get("catalogue", "catalogue.json")).read_text())
    ids = sorted(catalogue, key=lambda s: (len(s), s))
    tokens = sorted({t for ident in catalogue.values() for t in ident})
    return ids, tokens
