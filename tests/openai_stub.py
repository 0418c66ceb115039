"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted behaviour, for backend tests.

    with StubServer() as srv:                      # random free port, background thread
        srv.fail("429", times=2)                   # the next 2 completion requests answer 429
        gen = OpenAIGenerator(srv.url, model=srv.model)

Completions are deterministic echoes, tokenized by whitespace (a token = leading spaces + a word):
  - a prompt containing "ECHO:" continues with exactly the text after it;
  - any other prompt continues with " {last word}.{seed}.{choice}" followed by " x" tokens.
With `logprobs: k` every token gets the log-prob -0.5 and the top-min(k, 4) of TOP_LOGPROBS.
They honour `max_tokens` (finish "length") and `stop` like vLLM: the text is cut before the earliest
stop string, which is stripped, `finish_reason` is "stop" and `stop_reason` names it. Running out
of echo text is EOS: finish "stop", stop_reason None. `usage.completion_tokens` counts generated
tokens including the stop string's.

Failure modes for `fail(mode, times)`, consumed one per completion request, in order:
  "429"     HTTP 429 with `Retry-After: {retry_after}`
  "500"     HTTP 500
  "400"     HTTP 400 (a client error; not to be retried)
  "garbage" HTTP 200 whose body is not JSON
  "no_choices"  HTTP 200 JSON without `choices`
  "sleep"   wait `sleep_s` seconds (longer than the client timeout), then answer normally

Bookkeeping: `requests` (bodies), `headers`, `responses`, `count`, `in_flight`, `max_in_flight`; with a
`tokenizer`, `prompt_ids`: the ids the server would run for each request's prompt (tokenized as vLLM's
server does: with special tokens unless the body says `add_special_tokens: false`).
"""

from __future__ import annotations

import collections
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FILLER_TOKENS = 100  # length of a non-ECHO continuation, in tokens
TOP_LOGPROBS = (-0.5, -1.5, -2.5, -3.5)  # a position's top-k log-probs (k <= 4): DeepConf's C = -mean


def continuation(prompt: str, seed: int | None, choice: int) -> str:
    """The full text the stub would write for this prompt before max_tokens/stop apply."""
    if "ECHO:" in prompt:
        return prompt.split("ECHO:", 1)[1]
    words = prompt.split()
    last = words[-1] if words else ""
    return f" {last}.{seed}.{choice}" + " x" * (FILLER_TOKENS - 1)


def complete(text: str, max_tokens: int, stops: list[str]) -> dict:
    """One choice as vLLM would send it (text stripped of the stop string), plus its token count."""
    tokens = re.findall(r"\s*\S+|\s+$", text)
    kept = "".join(tokens[:max_tokens])
    best = None
    for s in stops:
        i = kept.find(s)
        if s and i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is not None:
        end = best[0] + len(best[1])  # tokens generated up to the end of the stop string
        n, pos = 0, 0
        while pos < end:
            pos += len(tokens[n])
            n += 1
        return {"text": kept[: best[0]], "finish_reason": "stop", "stop_reason": best[1], "n_tokens": n}
    finish = "length" if len(tokens) > max_tokens else "stop"
    return {"text": kept, "finish_reason": finish, "stop_reason": None, "n_tokens": min(len(tokens), max_tokens)}


class StubServer:
    def __init__(
        self,
        model: str = "stub-model",
        api_key: str | None = None,  # when set, requests without `Bearer {api_key}` get 401
        delay: float = 0.0,  # seconds every normal completion request takes
        sleep_s: float = 3.0,  # seconds a "sleep" failure waits
        retry_after: str = "0",  # Retry-After header of "429" failures
        name_stop: bool = True,  # send `stop_reason` (vLLM does)
        strip_stop: bool = True,  # strip the stop string from the text (vLLM does)
        max_choices: int | None = None,  # answer at most this many choices (llama.cpp: 1)
        tokenizer=None,  # a HF tokenizer: record the prompt ids the server would run
    ):
        self.model, self.api_key, self.delay, self.sleep_s = model, api_key, delay, sleep_s
        self.retry_after, self.name_stop, self.strip_stop = retry_after, name_stop, strip_stop
        self.max_choices = max_choices
        self.tokenizer = tokenizer
        self.prompt_ids: list[list[int]] = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.responses: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._failures: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def fail(self, mode: str, times: int = 1) -> None:
        assert mode in {"429", "500", "400", "garbage", "no_choices", "sleep"}, mode
        with self._lock:
            self._failures.extend([mode] * times)

    def start(self) -> "StubServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.stub = self  # type: ignore[attr-defined]
        self._httpd.handle_error = lambda request, address: None  # clients that hung up: ignore
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes "sleep" handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- behaviour -------------------------------------------------------------------------

    def _next_failure(self) -> str | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def answer(self, body: dict) -> dict:
        prompt, n = body["prompt"], int(body.get("n", 1))
        if self.tokenizer is not None:
            ids = self.tokenizer(prompt, add_special_tokens=body.get("add_special_tokens", True))["input_ids"]
            with self._lock:
                self.prompt_ids.append(list(ids))
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        choices, total = [], 0
        for j in range(min(n, self.max_choices or n)):
            c = complete(continuation(prompt, body.get("seed"), j), int(body.get("max_tokens", 16)), stops)
            n_tok = c.pop("n_tokens")
            total += n_tok
            if c["stop_reason"] is not None and not self.strip_stop:
                c["text"] += c["stop_reason"]
            if not self.name_stop:
                del c["stop_reason"]
            c["index"] = j
            c["logprobs"] = None
            if body.get("logprobs") is not None:  # as vLLM: the sampled token's, and the top-k per position
                k = min(max(int(body["logprobs"]), 1), len(TOP_LOGPROBS))
                c["logprobs"] = {"tokens": ["t"] * n_tok, "token_logprobs": [-0.5] * n_tok,
                                 "top_logprobs": [dict(zip("tuvw", TOP_LOGPROBS[:k])) for _ in range(n_tok)]}
            if body.get("return_token_ids"):
                c["token_ids"] = list(range(100, 100 + n_tok))
            choices.append(c)
        return {
            "id": f"cmpl-{len(self.requests)}",
            "object": "text_completion",
            "model": self.model,
            "choices": choices,
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": total,
                      "total_tokens": len(prompt.split()) + total},
        }


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload: bytes, ctype: str = "application/json", headers: dict | None = None) -> None:
        self._leave()  # the request stops counting as in flight before its reply can reach the client
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _leave(self) -> None:
        """Count this request out of `in_flight` once (before its reply is written: a client that
        frees its slot on the reply may send the next request before this handler's thread runs on)."""
        if getattr(self, "_counted", False):
            stub: StubServer = self.server.stub  # type: ignore[attr-defined]
            with stub._lock:
                stub.in_flight -= 1
            self._counted = False

    def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _authorized(self, stub: StubServer) -> bool:
        if stub.api_key is None or self.headers.get("Authorization") == f"Bearer {stub.api_key}":
            return True
        self._json(401, {"error": {"message": "bad api key", "type": "invalid_request_error"}})
        return False

    def do_GET(self) -> None:
        stub: StubServer = self.server.stub  # type: ignore[attr-defined]
        if self.path.rstrip("/") != "/v1/models":
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if self._authorized(stub):
            self._json(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})

    def do_POST(self) -> None:
        stub: StubServer = self.server.stub  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.rstrip("/") != "/v1/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        body = json.loads(raw)
        with stub._lock:
            stub.requests.append(body)
            stub.headers.append(dict(self.headers))
            stub.in_flight += 1
            stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
        self._counted = True
        try:
            if not self._authorized(stub):
                return
            mode = stub._next_failure()
            if mode == "429":
                return self._json(429, {"error": {"message": "rate limited"}}, {"Retry-After": stub.retry_after})
            if mode in ("500", "400"):
                return self._json(int(mode), {"error": {"message": f"scripted {mode}"}})
            if mode == "garbage":
                return self._send(200, b"<html>definitely not json</html>", "text/html")
            if mode == "no_choices":
                return self._json(200, {"object": "text_completion", "model": stub.model})
            wait = stub.sleep_s if mode == "sleep" else stub.delay
            if wait and stub._stopping.wait(wait):
                return
            answer = stub.answer(body)
            with stub._lock:
                stub.responses.append(answer)
            self._json(200, answer)
        finally:
            self._leave()  # a request that ended without a reply (the server stopping)
