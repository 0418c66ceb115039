"""Any OpenAI-compatible `/v1/completions` server (vLLM, SGLang, llama.cpp server) as a Generator.

Prompts are sent as raw text continuations exactly as given (the caller rendered the chat
template), with `add_special_tokens: false`: the rendered template already holds BOS where the
model wants one (Llama-3, R1-Distill-Qwen), and a server that adds its own would read `<bos><bos>`
(vLLM and SGLang honour the field; pass `add_special_tokens=None` to leave it out for a server
that rejects unknown fields). The server then tokenizes exactly as the hf backend does.

Adapters: a LoRA adapter is served under a name of its own (`vllm serve BASE --enable-lora
--lora-modules NAME=PATH`); requests ask for it by sending that name as `model`. A trainer hands a
new adapter to every server of the pool at run time with `load_adapter(name, folder)` (vLLM's
`/v1/load_lora_adapter`, on when the server runs with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; the folder
must be readable by the server), then asks for it by name; `unload_adapter(name)` frees it.

One HTTP request per prompt (it carries `n` and that prompt's seed, `seed + i`), run
concurrently from a private thread pool over one `httpx.Client`; several base URLs are load
balanced by least-in-flight with round-robin tie-breaks, which is how a run scales past one
machine. 429, 5xx, connection errors and timeouts are retried with exponential backoff + jitter
(a `Retry-After` header wins); anything else that is wrong raises `BackendError`.

Stop strings: vLLM strips the stop string from the text and names it in `stop_reason` (SGLang:
`matched_stop`, llama.cpp: `stopping_word`). Our Completion text ENDS WITH the stop string (as in the hf backend), so it is
re-appended. Servers that name no stop string: the text is checked for one (some keep it).

Token ids, per choice, best source first:
  1. `token_ids` in the choice (vLLM with `return_token_ids`, see `request_token_ids`);
  2. the `tokenizer` given to the constructor, run on the returned text (real ids, re-tokenized);
  3. the count of sampled logprobs, or `usage.completion_tokens` (split over the request's
     choices in proportion to their text length when n > 1), as a list of -1 placeholders:
     `num_tokens` is right, the ids are unknown.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx

from .base import BackendError, Completion, SamplingParams, cut_at_stop

RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
BACKOFF_MAX = 60.0  # seconds; cap on one backoff sleep (Retry-After included)
BODY_QUOTE = 300  # characters of a bad body quoted in errors


def _root(url: str) -> str:
    """'http://h:8000/v1/' -> 'http://h:8000' (users give either form)."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _quote(body: str | bytes) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return repr(body[:BODY_QUOTE]) + ("..." if len(body) > BODY_QUOTE else "")


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent/bad."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def list_models(base_url: str, api_key: str | None = None, timeout: float = 30.0) -> list[str]:
    """Model ids served at `base_url` (GET /v1/models)."""
    url = _root(base_url) + "/v1/models"
    key = api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise BackendError(f"GET {url} failed: {type(e).__name__}: {e}") from e
    if r.status_code != 200:
        raise BackendError(f"GET {url} answered HTTP {r.status_code}: {_quote(r.text)}")
    try:
        return [m["id"] for m in r.json()["data"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BackendError(f"GET {url}: malformed model list: {_quote(r.text)}") from e


class OpenAIGenerator:
    """`Generator` over one or more OpenAI-compatible completion servers.

    >>> gen = OpenAIGenerator("http://localhost:8000/v1", model="Qwen/Qwen3-1.7B")  # doctest: +SKIP
    >>> gen.generate(["2+2="], SamplingParams(max_tokens=8, stop=("\\n",)))  # doctest: +SKIP
    """

    top_logprobs = True  # returns SamplingParams.top_logprobs (refuses a server that sends none)

    def __init__(
        self,
        base_urls: str | Sequence[str],
        model: str,
        api_key: str | None = None,
        concurrency: int = 16,  # max requests in flight over all servers and all callers
        timeout: float = 600.0,  # seconds per request
        max_retries: int = 5,  # retries after the first try (429, 5xx, connection errors, timeouts)
        tokenizer: Any = None,  # HF tokenizer, used for token ids when the server sends none
        backoff_base: float = 1.0,  # seconds; try k sleeps base * 2**k * jitter(0.5..1.5)
        split_n: bool = False,  # send n requests of n=1 (servers without n>1, e.g. llama.cpp)
        request_token_ids: bool = False,  # ask vLLM for per-choice ids (`return_token_ids`)
        extra_body: dict | None = None,  # more fields for every request (e.g. repetition_penalty)
        add_special_tokens: bool | None = False,  # sent as is; None: field left out (see the module docstring)
    ):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("OpenAIGenerator needs at least one base URL")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.urls = [_root(u) + "/v1/completions" for u in urls]
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.tokenizer = tokenizer
        self.backoff_base = backoff_base
        self.split_n = split_n
        self.request_token_ids = request_token_ids
        self.extra_body = dict(extra_body or {})
        self.add_special_tokens = add_special_tokens
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._slots = threading.BoundedSemaphore(concurrency)  # in-flight requests, all callers
        self._lock = threading.Lock()
        self._in_flight = [0] * len(self.urls)
        self._turn = itertools.count()

    # -- public ----------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """One Completion per (prompt, sample), prompt-major: p0c0, p0c1, ..., p1c0, ..."""
        prompts = list(prompts)
        if not prompts:
            return []
        if params.n < 1:
            raise ValueError(f"n must be >= 1, got {params.n}")
        # request r covers prompt r // per_prompt; each carries `per_req` choices
        per_prompt, per_req = (params.n, 1) if self.split_n else (1, params.n)
        bodies = [
            self._body(prompts[r // per_prompt], params, per_req, r)
            for r in range(len(prompts) * per_prompt)
        ]
        workers = min(self.concurrency, len(bodies))
        if workers == 1:
            answers = [self._request(b) for b in bodies]
        else:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="crosspath-openai")
            try:
                answers = list(pool.map(self._request, bodies))
            finally:  # on the first failure (or Ctrl-C) requests not yet started are dropped
                pool.shutdown(wait=True, cancel_futures=True)
        out: list[Completion] = []
        for body, (url, data) in zip(bodies, answers):
            out.extend(self._parse(url, data, body, params))
        return out

    def close(self) -> None:
        self._client.close()

    def load_adapter(self, name: str, folder: str) -> None:
        """Load the peft adapter `folder` on every server as `name` and ask for it from now on."""
        for url in self.urls:
            self._lora_call(url.removesuffix("/completions") + "/load_lora_adapter",
                            {"lora_name": name, "lora_path": folder})
        self.model = name

    def unload_adapter(self, name: str) -> None:
        for url in self.urls:
            self._lora_call(url.removesuffix("/completions") + "/unload_lora_adapter", {"lora_name": name})

    def _lora_call(self, url: str, body: dict) -> None:
        try:
            r = self._client.post(url, json=body)
        except httpx.HTTPError as e:
            raise BackendError(f"POST {url} failed: {type(e).__name__}: {e}; is the server running?") from e
        if r.status_code != 200:
            raise BackendError(
                f"POST {url} answered HTTP {r.status_code}: {_quote(r.text)}. Rollouts on a server pool load each "
                "step's adapter at run time: start every server as `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm "
                "serve BASE --enable-lora --max-lora-rank R`, with the run directory readable by it")

    def __enter__(self) -> "OpenAIGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- request ---------------------------------------------------------------------------

    def _body(self, prompt: str, params: SamplingParams, n: int, index: int) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": n,
            "stream": False,
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.min_p > 0:
            body["min_p"] = params.min_p
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed + index
        if params.logprobs or params.top_logprobs:
            # the sampled token's log-prob and the k most likely tokens' (1 at least; 0 means none on llama.cpp)
            body["logprobs"] = max(1, params.top_logprobs)
        if self.request_token_ids:
            body["return_token_ids"] = True
        if self.add_special_tokens is not None:
            body["add_special_tokens"] = self.add_special_tokens
        body.update(self.extra_body)
        return body

    def _pick(self) -> int:
        """Least in-flight server; ties go round-robin."""
        with self._lock:
            turn = next(self._turn)
            k = len(self.urls)
            i = min(range(k), key=lambda j: (self._in_flight[j], (j - turn) % k))
            self._in_flight[i] += 1
            return i

    def _request(self, body: dict) -> tuple[str, dict]:
        """POST with retries. Returns (url, parsed JSON)."""
        last, hint, url = "no attempt", "", self.urls[0]
        for attempt in range(self.max_retries + 1):
            wait = None
            with self._slots:
                i = self._pick()
                url = self.urls[i]
                try:
                    r = self._client.post(url, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    last, r = f"{type(e).__name__}: {e}", None
                    hint = "; is the server running, and is --base-url right?"
                finally:
                    with self._lock:
                        self._in_flight[i] -= 1
            if r is not None:
                if r.status_code == 200:
                    try:
                        return url, r.json()
                    except ValueError:
                        raise BackendError(f"POST {url}: answer is not JSON: {_quote(r.content)} (is --base-url "
                                           "an OpenAI-compatible server's /v1?)") from None
                last, hint = f"HTTP {r.status_code}: {_quote(r.text)}", ""
                if r.status_code not in RETRY_STATUS:
                    raise BackendError(f"POST {url} failed (not retried): HTTP {r.status_code}: {_quote(r.text)}")
                wait = _retry_after(r.headers)
            if attempt < self.max_retries:
                if wait is None:
                    wait = self.backoff_base * 2**attempt * random.uniform(0.5, 1.5)
                time.sleep(min(wait, BACKOFF_MAX))
        raise BackendError(f"POST {url}: no answer after {self.max_retries + 1} tries; last: {last}{hint}")

    # -- answer ----------------------------------------------------------------------------

    def _parse(self, url: str, data: Any, body: dict, params: SamplingParams) -> list[Completion]:
        def bad(why: str) -> BackendError:
            return BackendError(f"POST {url}: malformed answer ({why}): {_quote(json.dumps(data))}")

        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list):
            raise bad("no 'choices' list")
        if len(choices) != body["n"]:
            hint = "; try split_n=True" if body["n"] > 1 and len(choices) == 1 else ""
            raise bad(f"{len(choices)} choices for n={body['n']}{hint}")
        if any(not isinstance(c, dict) or not isinstance(c.get("text"), str) for c in choices):
            raise bad("a choice has no 'text'")
        choices = sorted(choices, key=lambda c: c["index"] if isinstance(c.get("index"), int) else 0)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        counts = _split(usage.get("completion_tokens"), [c["text"] for c in choices])
        return [self._completion(c, count, params) for c, count in zip(choices, counts)]

    def _completion(self, choice: dict, count: int | None, params: SamplingParams) -> Completion:
        text = choice["text"]
        reason = choice.get("finish_reason")
        named = (choice.get(k) for k in ("stop_reason", "matched_stop", "stopping_word"))  # vLLM, SGLang, llama.cpp
        stop = next((s for s in named if isinstance(s, str) and s and s in params.stop), None)
        if stop is not None and not text.endswith(stop):
            text += stop  # the server stripped it; our contract keeps it
        cut, hit = cut_at_stop(text, params.stop)  # servers that kept it, or an earlier stop
        if hit is not None:
            text, stop = cut, hit
        finish = "stop" if stop is not None or (reason is not None and reason != "length") else "length"

        logprobs = None
        lp = choice.get("logprobs")
        if params.logprobs and isinstance(lp, dict) and isinstance(lp.get("token_logprobs"), list):
            logprobs = [float(x) if x is not None else 0.0 for x in lp["token_logprobs"]]
        top = None
        if params.top_logprobs:  # [{token: logprob, ...} per position]; a server that sends none is refused
            rows = lp.get("top_logprobs") if isinstance(lp, dict) else None
            if not isinstance(rows, list) or not all(isinstance(r, dict) and r for r in rows):
                raise BackendError(f"the server returned no top-{params.top_logprobs} log-probs (the `logprobs` "
                                   "field of /v1/completions); DeepConf's token confidence needs them")
            top = [sorted(map(float, r.values()), reverse=True)[: params.top_logprobs] for r in rows]

        ids = choice.get("token_ids")
        if isinstance(ids, list) and all(isinstance(t, int) for t in ids):
            token_ids = list(ids)
        elif self.tokenizer is not None:
            token_ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        elif logprobs is not None:
            token_ids = [-1] * len(logprobs)
        else:
            token_ids = [-1] * (count or 0)
        return Completion(text=text, token_ids=token_ids, finish_reason=finish, stop=stop, logprobs=logprobs,
                          top_logprobs=top)


def _split(total: Any, texts: list[str]) -> list[int | None]:
    """Share a request's `usage.completion_tokens` among its choices by text length (sum kept).

    >>> _split(10, ["aaa", "a"])
    [7, 3]
    """
    if not isinstance(total, int) or total < 0:
        return [None] * len(texts)
    if len(texts) == 1:
        return [total]
    weights = [len(t) + 1 for t in texts]  # +1: an empty text still cost a token (EOS)
    shares = [total * w // sum(weights) for w in weights]
    order = sorted(range(len(texts)), key=lambda i: -(total * weights[i] % sum(weights)))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares
