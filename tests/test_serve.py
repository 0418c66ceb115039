"""`crosspath serve` end to end: the real `openai` client against the server on 127.0.0.1 (uvicorn in
a background thread, a random free port) over the tiny random Llama with small budgets."""

import json
import logging
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import openai
import pytest

from openai_stub import StubServer

from crosspath.serve.app import ServerThread, create_app
from crosspath.serve.config import ServeConfig
from crosspath.serve.service import Service
from crosspath.backends.base import Completion
from crosspath.backends.hf import HFGenerator

KEY = "test-key"
NAME = "tiny-served"
SMALL = dict(model="tiny-random", served_model_name=NAME, port=0, paths=3, rounds=2, round_tokens=6,
             summary_tokens=4, answer_tokens=4, max_paths=4, max_body_bytes=20_000, max_prompt_tokens=300,
             log_level="warning")
MSG = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def server(tiny):
    model, tok = tiny
    # a wide batching window makes "arrived together" deterministic for the batching test
    svc = Service(ServeConfig(api_key=KEY, batch_window_ms=500, **SMALL), generator=HFGenerator(model, tok), tokenizer=tok)
    with ServerThread(svc) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _error_shape(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"]
    return err


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["accepting"]


def test_chat_completion_is_the_consensus_of_n_paths(client):
    r = client.chat.completions.create(model=NAME, messages=MSG)
    content = r.choices[0].message.content
    assert isinstance(content, str) and content
    assert r.choices[0].finish_reason in ("stop", "length")
    cp = r.model_extra["crosspath"]
    assert cp["method"] == "leap" and len(cp["paths"]) == 3
    u = r.usage
    assert u.prompt_tokens > 0 and u.prompt_tokens % 3 == 0  # the prompt, once per path
    assert u.completion_tokens == sum(p["tokens"] for p in cp["paths"]) > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    for p in cp["paths"]:  # round 0 communicates: a summary and k=2 peers (never itself)
        r0 = p["rounds"][0]
        assert r0["summary"].startswith("So far")
        assert len(r0["peers"]) == 2 and p["index"] not in [q["peer"] for q in r0["peers"]]
    answers = [p["answer"] for p in cp["paths"]]
    assert sum(v["votes"] for v in cp["votes"]) == sum(a is not None for a in answers)
    # the tiny model may give no answer at all: then there are no votes and no consensus (the stub
    # test below checks a real majority); either way the reply is the top of the votes
    assert cp["answer"] == (cp["votes"][0]["answer"] if cp["votes"] else None)
    assert answers[cp["consensus_path"]] == cp["answer"]


def test_completion_raw_prompt_independent_and_seeded(client, tiny):
    prompt = "Question: 2 + 3 =\nAnswer:"
    kw = dict(model=NAME, prompt=prompt, max_tokens=5, seed=7, extra_body={"crosspath": {"method": "independent",
                                                                                          "paths": 2}})
    r = client.completions.create(**kw)
    cp = r.model_extra["crosspath"]
    assert cp["method"] == "independent" and len(cp["paths"]) == 2
    assert all(p["tokens"] <= 5 for p in cp["paths"])
    assert r.usage.prompt_tokens == 2 * len(tiny[1](prompt, add_special_tokens=False)["input_ids"])  # raw prompt
    assert isinstance(r.choices[0].text, str)
    assert client.completions.create(**kw).choices[0].text == r.choices[0].text  # a seed reproduces


def test_streaming_sends_rounds_then_the_answer(client, server):
    kw = dict(model=NAME, messages=MSG, seed=3)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    rounds = [c.model_extra["crosspath"] for c in chunks if c.choices and c.model_extra.get("crosspath")
              and "round" in c.model_extra["crosspath"]]
    assert [r["round"] for r in rounds] == [0, 1] and all(len(r["paths"]) == 3 for r in rounds)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and len(finish[0].model_extra["crosspath"]["paths"]) == 3
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == client.chat.completions.create(**kw).choices[0].message.content  # same seed, same answer
    with httpx.stream("POST", server.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"prompt": "2 + 3 =", "stream": True}, timeout=60) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["choices"][0]["finish_reason"]


def test_errors_are_openai_shaped(server, client):
    url = server.url + "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert _error_shape(httpx.post(url, json={"messages": MSG}), 401)["code"] == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=MSG, extra_body={"crosspath": {"paths": 5}})
    assert e.value.body["code"] == "too_many_paths"
    assert _error_shape(httpx.post(url, headers=auth, json={"messages": MSG, "crosspath": {"bogus": 1}}), 400)
    assert _error_shape(httpx.post(url, headers=auth, json={"messages": MSG, "max_tokens": 10**6}), 400)
    big = {"messages": [{"role": "user", "content": "x" * 30_000}]}
    assert _error_shape(httpx.post(url, headers=auth, json=big), 413)["code"] == "body_too_large"
    assert _error_shape(httpx.post(url, headers=auth, content=b"{not json"), 422)["code"] == "invalid_json"
    assert _error_shape(httpx.post(url, headers=auth, json={"messages": "hi"}), 422)
    last_not_user = {"messages": MSG + [{"role": "assistant", "content": "5"}]}
    assert _error_shape(httpx.post(url, headers=auth, json=last_not_user), 400)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other-model", messages=MSG)


def test_concurrent_requests_run_as_one_batch(server, client):
    svc = server.service
    before, calls0 = len(svc.scheduler.batch_sizes), svc.generator_calls
    go, out = threading.Barrier(2), [None, None]

    def ask(i):
        go.wait()
        out[i] = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": f"{i} + 1?"}])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(o is not None and o.choices[0].message.content for o in out)
    assert svc.scheduler.batch_sizes[before:] == [2]
    batches = [o.model_extra["crosspath"]["batch"] for o in out]
    assert batches[0] == batches[1] and batches[0]["requests"] == 2
    # one LeaP run for both: 2 rounds + 1 summary call + the forced answer, not twice that
    assert svc.generator_calls - calls0 <= 4


def test_openai_backend_votes_and_stop():
    """--backend openai: paths are generated by an upstream server (a scripted stub here)."""
    with StubServer() as stub:
        cfg = ServeConfig(backend="openai", base_url=[stub.url], upstream_model=stub.model, **SMALL)
        with ServerThread(Service(cfg)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="-", max_retries=0, timeout=60)
            r = client.completions.create(model=NAME, prompt="ECHO: 2 + 3 = \\boxed{5}")
            assert r.choices[0].text == " 2 + 3 = \\boxed{5}" and r.choices[0].finish_reason == "stop"
            cp = r.model_extra["crosspath"]
            assert cp["answer"] == "5" and cp["votes"] == [{"answer": "5", "votes": 3, "paths": [0, 1, 2]}]
            assert [p["answer"] for p in cp["paths"]] == ["5"] * 3 and cp["consensus_path"] == 0
            assert r.usage.completion_tokens == 3 * 5  # every path echoed 5 whitespace tokens, then EOS
            cut = client.completions.create(model=NAME, prompt="ECHO: 2 + 3 = \\boxed{5}", stop=["="])
            assert cut.choices[0].text == " 2 + 3 " and cut.choices[0].finish_reason == "stop"
        assert {b["model"] for b in stub.requests} == {stub.model}


class Votes:
    """Stateless and scripted: path i of a request writes TEXTS[i] (the tiny model's tokenizer renders)."""

    TEXTS = ["so \\boxed{3}", "half: \\boxed{0.5}", "again \\boxed{1/2}"]

    def __init__(self, tok):
        self.tok = tok

    def generate(self, prompts, params):
        return [Completion(text=self.TEXTS[i], token_ids=[1, 2], finish_reason="stop") for i in range(len(prompts))]


def test_the_reply_is_the_first_path_of_the_top_vote(tiny):
    """A real majority: 0.5 and 1/2 are one answer with 2 votes against 1; the reply is the text of
    the first path that gave it."""
    cfg = ServeConfig(**{**SMALL, "method": "independent"})
    with ServerThread(Service(cfg, generator=Votes(tiny[1]), tokenizer=tiny[1])) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="-", max_retries=0, timeout=60)
        r = client.chat.completions.create(model=NAME, messages=MSG)
    cp = r.model_extra["crosspath"]
    assert [p["answer"] for p in cp["paths"]] == ["3", "0.5", "1/2"]
    assert cp["votes"] == [{"answer": "0.5", "votes": 2, "paths": [1, 2]}, {"answer": "3", "votes": 1, "paths": [0]}]
    assert (cp["answer"], cp["consensus_path"]) == ("0.5", 1)
    assert r.choices[0].message.content == Votes.TEXTS[1]


class SlowGen:
    """The tiny model, `delay` seconds slower per generator call (keeps a request in flight)."""

    def __init__(self, gen, delay):
        self._gen, self.delay = gen, delay

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def advance(self, handles, params):
        time.sleep(self.delay)
        return self._gen.advance(handles, params)


def _in_flight(svc, timeout=30.0):
    end = time.monotonic() + timeout
    while svc.stats()["running"] == 0:
        assert time.monotonic() < end, "the request never started"
        time.sleep(0.02)


@pytest.mark.parametrize("grace, delay, status", [(20.0, 0.2, 200), (0.3, 1.0, 503)])
def test_graceful_shutdown(tiny, grace, delay, status):
    """SIGTERM (should_exit): stop accepting; an in-flight request finishes within the grace
    period, or is answered 503 when the grace period runs out."""
    model, tok = tiny
    cfg = ServeConfig(shutdown_timeout=grace, **{**SMALL, "served_model_name": None})
    srv = ServerThread(Service(cfg, generator=SlowGen(HFGenerator(model, tok), delay), tokenizer=tok)).start()
    url, result = srv.url, {}

    def ask():
        r = httpx.post(url + "/v1/chat/completions", json={"messages": MSG}, timeout=60)
        result["status"], result["body"] = r.status_code, r.json()

    t = threading.Thread(target=ask)
    t.start()
    _in_flight(srv.service)
    stopper = threading.Thread(target=srv.stop)
    stopper.start()
    refused = False
    for _ in range(100):  # bounded: new work is refused while the request is still being served
        try:
            refused = httpx.get(url + "/health", timeout=2).status_code == 503
        except httpx.TransportError:
            refused = True
        if refused:
            break
        time.sleep(0.05)
    assert refused
    t.join(60)
    stopper.join(60)
    assert result["status"] == status
    if status == 200:
        assert result["body"]["choices"][0]["message"]["content"]
    else:
        assert result["body"]["error"]["code"] == "unavailable"
    assert not srv.thread.is_alive()


def test_cli_serve_parser():
    from crosspath.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "tiny-random", "--paths", "2", "--api-key", "k",
                                      "--base-url", "http://a/v1", "http://b/v1"])
    assert args.command == "serve" and args.paths == 2 and args.base_url == ["http://a/v1", "http://b/v1"]
    assert callable(args.func)


# ---- what the server refuses, and what one bad request cannot do to the others ----------------------
def _together(url: str, bodies: dict[str, tuple[str, dict]], auth: dict | None = None) -> dict[str, httpx.Response]:
    """POST every (route, body) at once (raw JSON: it may hold lone surrogates); name -> response."""
    go, out = threading.Barrier(len(bodies)), {}

    def post(name, route, body):
        go.wait()
        out[name] = httpx.post(url + route, content=json.dumps(body).encode(), timeout=120,
                               headers={"Content-Type": "application/json", **(auth or {})})

    threads = [threading.Thread(target=post, args=(n, *rb)) for n, rb in bodies.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_a_bad_request_never_joins_or_fails_a_batch(server):
    """Empty prompts and lone surrogates are refused with 4xx naming the field (not internal text),
    and the honest requests sent at the same moment are answered together in one batch."""
    svc, before = server.service, len(server.service.scheduler.batch_sizes)
    chat = "/v1/chat/completions"
    window, svc.scheduler.window = svc.scheduler.window, 3.0  # "together" even on a loaded machine
    try:
        out = _together(server.url, {
            "honest0": (chat, {"messages": [{"role": "user", "content": "1 + 1?"}]}),
            "honest1": (chat, {"messages": [{"role": "user", "content": "2 + 2?"}]}),
            "surrogate": (chat, {"messages": [{"role": "user", "content": "3 + \ud800?"}]}),
            "surrogate_part": (chat, {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]}),
            "surrogate_stop": (chat, {"messages": MSG, "stop": ["ok", "\ud800"]}),
            "empty": ("/v1/completions", {"prompt": ""}),
            "empty_list": ("/v1/completions", {"prompt": [""]}),
        }, {"Authorization": f"Bearer {KEY}"})
    finally:
        svc.scheduler.window = window
    for name in ("honest0", "honest1"):
        assert out[name].status_code == 200, out[name].text
        assert out[name].json()["choices"][0]["message"]["content"]
    assert out["honest0"].json()["crosspath"]["batch"] == out["honest1"].json()["crosspath"]["batch"]
    assert svc.scheduler.batch_sizes[before:] == [2]  # the bad ones never reached the scheduler
    params = {"surrogate": "messages.0.content", "surrogate_part": "messages.0.content.0.text",
              "surrogate_stop": "stop.1", "empty": "prompt", "empty_list": "prompt"}
    for name, param in params.items():
        err = _error_shape(out[name], 422 if name.startswith("surrogate") else 400)
        assert err["param"].replace("[", ".").replace("]", "") == param, err
        assert "Error" not in err["message"] and "Traceback" not in err["message"]


class PoisonGen(SlowGen):
    """The tiny model, except that a call carrying a path whose text holds POISON raises."""

    def __init__(self, gen):
        super().__init__(gen, 0.0)

    def advance(self, handles, params):
        if any("POISON" in self._gen.text(h) for h in handles):
            raise RuntimeError("secret internal detail")
        return self._gen.advance(handles, params)


def test_a_request_that_breaks_generation_fails_alone(tiny):
    """A batch that fails is run again request by request: only the request that fails on its own
    gets an error (500, without the exception's text); the others are answered."""
    model, tok = tiny
    cfg = ServeConfig(batch_window_ms=500, **SMALL)
    with ServerThread(Service(cfg, generator=PoisonGen(HFGenerator(model, tok)), tokenizer=tok)) as srv:
        out = _together(srv.url, {f"q{i}": ("/v1/chat/completions", {"messages": [{"role": "user", "content": q}]})
                                  for i, q in enumerate(["1 + 1?", "POISON 2 + 2?", "3 + 3?"])})
        assert srv.service.scheduler.batch_sizes == [3]
    for name in ("q0", "q2"):
        assert out[name].status_code == 200, out[name].text
        body = out[name].json()
        assert body["choices"][0]["message"]["content"] and body["crosspath"]["batch"]["retry"] is True
    err = _error_shape(out["q1"], 500)
    assert err["code"] == "backend_error" and "secret" not in err["message"] and "RuntimeError" not in err["message"]


def test_prompt_length_is_bounded(server, client, tiny):
    """A prompt over --max-prompt-tokens, or one that cannot fit the model's context with what a
    path may add, is refused with 400 naming the limit; a huge body is refused before it is read."""
    long = "one two three four five " * 80  # 400 words: over the test server's 300 tokens
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": long}])
    err = e.value.body
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "300" in err["message"] and "--max-prompt-tokens" in err["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt=long)
    assert e.value.body["param"] == "prompt" and "--max-prompt-tokens" in e.value.body["message"]
    # the tiny model's context is 4096 tokens: 4000 per path plus a 200-token prompt do not fit
    ctx = tiny[0].config.max_position_embeddings
    assert server.service.context == ctx == 4096
    mid = "one two three four five " * 40
    kw = dict(model=NAME, prompt=mid, extra_body={"crosspath": {"method": "independent"}})
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(max_tokens=4000, **kw)
    assert e.value.body["code"] == "context_length_exceeded" and f"context of {ctx} tokens" in e.value.body["message"]
    assert client.completions.create(max_tokens=3, **kw).choices[0].text is not None  # the same prompt fits
    # 5 MB declared: answered 413 from the headers alone, while the client has sent 1 KB of it
    with socket.create_connection((server.service.cfg.host, server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {KEY}\r\nContent-Length: {5_000_000}\r\n\r\n".encode() + b"{" * 1024)
        reply = b""
        while b"body_too_large" not in reply and (part := sock.recv(4096)):
            reply += part
    assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply


class LengthGen(SlowGen):
    """The tiny model; records how many tokens each path held in the model when it was closed."""

    def __init__(self, gen):
        super().__init__(gen, 0.0)
        self.lengths = []

    def close(self, h):
        self.lengths.append(len(self._gen._paths[h].ids) + 1)  # + the last sampled token (not cached yet)
        self._gen.close(h)


@pytest.mark.parametrize("opts", [dict(peers_k=2, rounds=3, round_tokens=8, summary_tokens=6, temperature=1.0),
                                  dict(router="all", peers_k=1, rounds=2, round_tokens=8, summary_tokens=16)])
def test_the_context_check_reserves_what_a_path_really_adds(tiny, opts):
    """Settings.path_growth (what prepare reserves in the model's context after the prompt) covers
    every token a LeaP path really held: its own text, summaries, peers' summaries and cues."""
    model, tok = tiny
    gen = LengthGen(HFGenerator(model, tok))
    cfg = ServeConfig(**{**SMALL, "paths": 4, "answer_tokens": 6, "batch_window_ms": 500, **opts})
    svc = Service(cfg, generator=gen, tokenizer=tok)
    try:
        reqs = [svc.prepare("chat", {"messages": [{"role": "user", "content": f"{q} + 7?"}]}) for q in range(2)]
        events = [[] for _ in reqs]
        for req, ev in zip(reqs, events):
            svc.submit(req, lambda kind, payload, ev=ev: ev.append(kind))
        assert svc.scheduler.wait_idle(60) and all(ev[-1] == "done" for ev in events)
        assert len(gen.lengths) == 8 and svc.scheduler.batch_sizes == [2]
        assert max(gen.lengths) - min(r.prompt_tokens for r in reqs) <= reqs[0].settings.path_growth(svc.count)
    finally:
        svc.scheduler.close()


def test_docs_need_the_key_and_load_nothing(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    for route in ("/docs", "/openapi.json"):
        assert _error_shape(httpx.get(server.url + route), 401)["code"] == "invalid_api_key"
    spec = httpx.get(server.url + "/openapi.json", headers=auth).json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= set(spec["paths"])
    page = httpx.get(server.url + "/docs", headers=auth)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == "default-src 'none'"
    html = page.text.lower()
    assert "/v1/chat/completions" in html and "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert httpx.get(server.url + "/redoc", headers=auth).status_code == 404


def test_authentication_cannot_be_switched_off_by_accident(monkeypatch, capsys, caplog):
    import crosspath.serve.app as app_module
    from crosspath.cli import main

    started = []
    monkeypatch.setattr(app_module, "serve", lambda cfg: started.append(cfg))
    monkeypatch.delenv("CROSSPATH_API_KEY", raising=False)
    assert main(["serve", "--model", "tiny-random", "--api-key", ""]) == 2
    err = capsys.readouterr().err
    assert "--api-key is empty" in err and "Traceback" not in err
    monkeypatch.setenv("CROSSPATH_API_KEY", " ")
    assert main(["serve", "--model", "tiny-random"]) == 2 and "CROSSPATH_API_KEY" in capsys.readouterr().err
    assert started == []
    monkeypatch.setenv("CROSSPATH_API_KEY", "k")
    assert main(["serve", "--model", "tiny-random", "--host", "0.0.0.0"]) == 0 and started[-1].api_key == "k"
    assert "warning" not in capsys.readouterr().err
    monkeypatch.delenv("CROSSPATH_API_KEY")
    assert main(["serve", "--model", "tiny-random", "--host", "0.0.0.0"]) == 0
    assert "crosspath serve: warning: --host 0.0.0.0 exposes the server" in capsys.readouterr().err
    with pytest.raises(ValueError, match="empty"):  # the library refuses it too
        create_app(SimpleNamespace(cfg=ServeConfig(api_key="")))
    caplog.set_level(logging.WARNING, logger="crosspath.serve")
    for host, key, warned in [("0.0.0.0", None, True), ("192.168.1.5", None, True), ("::", None, True),
                              ("0.0.0.0", "k", False), ("127.0.0.1", None, False), ("::1", None, False),
                              ("localhost", None, False)]:
        caplog.clear()
        create_app(SimpleNamespace(cfg=ServeConfig(host=host, api_key=key)))
        assert any("no --api-key" in r.getMessage() for r in caplog.records) == warned, (host, key)
