"""The engine behind the HTTP layer: requests -> prompts -> LeaP / independent batches -> answers.

    svc = Service(ServeConfig(model="tiny-random"))         # loads the backend
    req = svc.prepare("chat", {"messages": [{"role": "user", "content": "2+3?"}]})
    job = svc.submit(req, sink=lambda kind, payload: ...)   # "round" events, then "done" or "error"

Prompts. Chat: the messages go through the model's chat template (`apply_chat_template`) with the
last user message replaced by the method's instruction around it (LeaP: the protocol announcement
and an assistant pre-fill; independent: "reason step by step ... \\boxed{}"). Completions: the prompt
is the question and is continued as raw text, exactly as given; with `crosspath.wrap` it is wrapped
in the method's instruction (as plain text, no chat template) instead. Either way LeaP appends its
summary requests and peer blocks to every path as rounds go.

Before a request joins a batch, `prepare` renders its prompt exactly as the method will and counts
its tokens: an empty prompt, one over --max-prompt-tokens, or one that with the most a path may
add would not fit the model's context is refused (400), so nothing a client sends reaches the
generator unchecked. If a batch still fails, its requests are run again one by one: only a request
that fails on its own gets an error (500, or 502 from an upstream server; the details go to the
log, not to the client).

The answer. Each path's answer is `extract_answer` of its text; the majority vote over the paths
(`votes`, answers grouped by meaning with `SameAnswer`: "1/2", "0.5" and "\\frac{1}{2}" are one
vote) gives the consensus; the reply is the text of the first path of the winning group (path 0
if no path has an answer). Usage counts every path: prompt tokens x paths, and all generated
tokens (reasoning, summaries, forced answers).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..backends.base import BackendError, Completion, SamplingParams, cut_at_stop
from ..infer import independent, leap
from ..infer.paths import PathStore, PathTrace
from ..infer.prompts import LEAP_PREFILL, TAG_SETS, leap_prompt, plain_prompt
from ..infer.routing import get_similarity
from ..infer.runner import leap_options
from ..infer.leap import own_text
from ..tasks import Problem, SameAnswer, extract_answer, votes
from .config import RequestError, ServeConfig, Settings, resolve_settings
from .scheduler import Job, Scheduler, unavailable

log = logging.getLogger("crosspath.serve")


@dataclass
class Request:
    kind: str  # "chat" | "completion"
    question: str  # what LeaP calls the question (the last user message, or the completion prompt)
    render: Callable[[str, str], str]  # (instruction text around the question, pre-fill) -> path prefix
    settings: Settings
    stream: bool = False
    prefix: str = ""  # the rendered prompt every path of this request starts from
    prompt_tokens: int = 0  # its tokens


class Aborted(Exception):
    """Every request of a batch is over (cancelled or answered elsewhere): stop generating."""


class GuardedStore(PathStore):
    """PathStore that stops a batch nobody waits for, skips empty budgets, and counts calls."""

    def __init__(self, gen, alive: Callable[[], bool], use_sessions=None):
        super().__init__(gen, use_sessions)
        self.alive, self.calls = alive, 0

    def advance(self, ids, params: SamplingParams) -> list[Completion]:
        if not self.alive():
            raise Aborted()
        if not ids:
            return []
        if params.max_tokens <= 0:  # a summary used up a path's budget: nothing left to write
            return [Completion(text="", finish_reason="length") for _ in ids]
        self.calls += 1
        return super().advance(ids, params)


def _text_of(content: Any, where: str) -> str:
    """A message's content: a string or a list of {"type": "text", "text": ...} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError(400, f"{where}: only text content is supported", param="messages", code="unsupported_content")


def votes_of(answers: list[str | None]) -> list[dict[str, Any]]:
    """[{"answer", "votes", "paths"}], most votes first (`crosspath.tasks.votes`, by meaning)."""
    return [{"answer": a, "votes": len(ix), "paths": ix} for a, ix in votes(answers, SameAnswer())]


def instruction(s: Settings, question: str) -> tuple[str, str]:
    """(user text, assistant pre-fill) the method renders for `question` (as leap.solve and
    independent.solve do), so a prompt can be measured before its batch runs."""
    problem = Problem(id="request", question=question, answer="")
    if s.method == "leap" and not s.leap_t:
        return leap_prompt(problem), LEAP_PREFILL
    return plain_prompt(problem), ""


def context_length(gen, tok) -> int | None:
    """The model's context in tokens: the hf model's max_position_embeddings, the vLLM engine's
    max_model_len, else the tokenizer's model_max_length when it is a real number; None if unknown."""
    sizes = [getattr(getattr(getattr(gen, "model", None), "config", None), "max_position_embeddings", None)]
    try:
        sizes.append(gen.llm.llm_engine.model_config.max_model_len)
    except AttributeError:
        pass
    sizes.append(getattr(tok, "model_max_length", None))
    sizes = [n for n in sizes if isinstance(n, int) and 0 < n < 10**8]  # tokenizers say 1e30 when unknown
    return min(sizes) if sizes else None


class Service:
    def __init__(self, cfg: ServeConfig, generator=None, tokenizer=None):
        from ..infer.runner import make_generator

        if cfg.backend in ("hf", "vllm") and cfg.workers != 1:
            raise ValueError(f"--workers must be 1 with the {cfg.backend} backend (one model in this process)")
        self.cfg = cfg
        self.run_cfg = cfg.run_config()  # the backend part of every request's RunConfig
        self.gen = generator if generator is not None else make_generator(self.run_cfg)
        tok = tokenizer or getattr(self.gen, "tok", None) or getattr(self.gen, "tokenizer", None)
        if tok is None:
            from ..models import load_tokenizer

            tok = load_tokenizer(cfg.model)
        self.tok = tok
        self.context = context_length(self.gen, tok)
        self.similarity = get_similarity(cfg.similarity)
        self.generator_calls = 0
        self.requests_done = 0
        self.tokens = 0  # completion tokens over all answered requests
        self._batch_no = 0
        self._lock = threading.Lock()
        self.scheduler = Scheduler(self._run_batch, max_batch=cfg.max_batch, window=cfg.batch_window_ms / 1000,
                                   max_queue=cfg.max_queue, workers=cfg.workers)

    # ---- requests --------------------------------------------------------------------------
    def prepare(self, kind: str, body: dict[str, Any]) -> Request:
        """Check a parsed body (see protocol.py) and build its Request. Raises RequestError."""
        settings, wrap = resolve_settings(self.cfg, body, completion=kind == "completion")
        if (body.get("n") or 1) != 1:
            raise RequestError(400, "n must be 1: one consensus answer per request; crosspath.paths sets the "
                                    "number of reasoning paths", param="n", code="unsupported_value")
        if kind == "chat":
            msgs = [{"role": m["role"], "content": _text_of(m.get("content"), f"messages[{i}]")}
                    for i, m in enumerate(body["messages"])]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
            if last is None or last != len(msgs) - 1:
                raise RequestError(400, "the last message must come from the user", param="messages")
            question = msgs[last]["content"]
            req = Request(kind, question, lambda user, prefill: self._chat(msgs[:-1], user, prefill), settings,
                          bool(body.get("stream")))
            return self._measure(req, "messages")
        prompt = body["prompt"]
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise RequestError(400, "prompt must be one string (a list of one string is accepted)",
                                   param="prompt", code="unsupported_value")
            prompt = prompt[0]
        if not prompt:
            raise RequestError(400, "prompt is empty: there is nothing to continue", param="prompt",
                               code="empty_prompt")
        raw = (lambda user, prefill: user + "\n\n" + prefill) if wrap else (lambda user, prefill: prompt)
        return self._measure(Request(kind, prompt, raw, settings, bool(body.get("stream"))), "prompt")

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def _measure(self, req: Request, param: str) -> Request:
        """Render the request's prompt as its method will and refuse it (400) when it has no token,
        is over --max-prompt-tokens, or cannot fit the model's context with what a path may add."""
        from jinja2 import TemplateError

        try:
            req.prefix = req.render(*instruction(req.settings, req.question))
        except TemplateError as e:  # the template's own message (raise_exception), meant for the client
            raise RequestError(400, f"messages: the model's chat template refused them: {e}", param="messages",
                               code="invalid_messages") from None
        n = req.prompt_tokens = self.count(req.prefix)
        if n == 0:
            raise RequestError(400, f"{param}: the prompt has no tokens", param=param, code="empty_prompt")
        limit = self.cfg.max_prompt_tokens
        if n > limit:
            raise RequestError(400, f"{param}: the prompt is {n} tokens (chat template and method instruction "
                                    f"included); this server allows {limit} (--max-prompt-tokens)",
                               param=param, code="context_length_exceeded")
        if self.context is not None:
            grow = req.settings.path_growth(self.count)
            if n + grow > self.context:
                raise RequestError(400, f"{param}: the prompt is {n} tokens and with these options a path may add "
                                        f"up to {grow} more, over the model's context of {self.context} tokens; "
                                        "send a shorter prompt or lower max_tokens or crosspath rounds, "
                                        "round_tokens, summary_tokens, peers_k", param=param,
                                   code="context_length_exceeded")
        return req

    def _chat(self, history: list[dict], user: str, prefill: str) -> str:
        messages = history + [{"role": "user", "content": user}]
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a base model without a template
            text = "".join(m["content"] + "\n\n" for m in messages)
        return text + prefill

    def submit(self, req: Request, sink: Callable[[str, Any], None]) -> Job:
        s = req.settings
        key = (s, object()) if s.seed is not None else s  # a seeded request runs alone: reproducible
        job = Job(key=key, payload=req, sink=sink)
        self.scheduler.submit(job)
        return job

    def cancel(self, job: Job) -> None:
        self.scheduler.cancel(job)

    # ---- batches ---------------------------------------------------------------------------
    def _run_batch(self, jobs: list[Job]) -> None:
        """Run the jobs as one batch. If it fails, run each unanswered job alone: a request that
        breaks generation fails only itself."""
        if self._attempt(jobs) or len(jobs) == 1:
            return
        alone = [j for j in jobs if not j.over and not j.cancelled]
        log.warning("a batch of %d requests failed: running %d of them one by one", len(jobs), len(alone))
        for j in alone:
            self._attempt([j], retry=True)

    def _attempt(self, jobs: list[Job], retry: bool = False) -> bool:
        """False when generation failed; then a lone job has been answered with the error."""
        try:
            self._solve(jobs, retry)
        except Aborted:
            for j in jobs:
                j.emit("error", unavailable("the request was cancelled"))
        except Exception as e:
            log.exception("generation failed for a batch of %d request(s) (jobs %s)", len(jobs), [j.id for j in jobs])
            if len(jobs) == 1:
                upstream = isinstance(e, BackendError) or self.cfg.backend == "openai"
                jobs[0].emit("error", RequestError(502 if upstream else 500, "generation failed for this request "
                                                   "(the details are in the server log)", type="server_error",
                                                   code="backend_error"))
            return False
        return True

    def _solve(self, jobs: list[Job], retry: bool) -> None:
        """One call of the method over the jobs' requests; emits "start", "round"s and "done"."""
        reqs: list[Request] = [j.payload for j in jobs]
        s = reqs[0].settings
        with self._lock:
            self._batch_no += 1
            batch_no = self._batch_no
        seed = s.seed if s.seed is not None else (self.cfg.seed + 1_000_003 * batch_no) % 2**31
        info = {"id": batch_no, "requests": len(jobs), **({"retry": True} if retry else {})}
        for j in jobs:
            j.emit("start", info)
        prefixes: list[str] = []

        def render(user: str, prefill: str = "") -> str:  # solve renders the problems in order
            r = reqs[len(prefixes)]
            assert r.question in user, "render was called out of problem order"
            assert r.render(user, prefill) == r.prefix, "the method rendered another prompt than prepare measured"
            prefixes.append(r.prefix)
            return r.prefix

        store = GuardedStore(self.gen, lambda: any(not j.over and not j.cancelled for j in jobs))
        cfg = s.run_config(self.run_cfg)  # typed: the same RunConfig -> LeapOptions mapping as `crosspath run`
        problems = [Problem(id=str(j.id), question=r.question, answer="", source="serve") for j, r in zip(jobs, reqs)]
        try:  # errors reach _attempt
            if s.method == "leap":
                opts = leap_options(cfg)
                on_round = lambda r, state: self._on_round(jobs, store, state, s, r)  # noqa: E731
                traces = leap.solve(problems, store, cfg, render, seed, opts, self.similarity, on_round=on_round)
            else:
                traces = independent.solve(problems, store, cfg, render, seed)
        finally:
            with self._lock:
                self.generator_calls += store.calls
            store.close()
        for j, r, tr in zip(jobs, reqs, traces):
            ans = self.answer(r, tr, info)
            with self._lock:
                self.requests_done += 1
                self.tokens += ans["usage"]["completion_tokens"]
            j.emit("done", ans)

    def _on_round(self, jobs: list[Job], store: PathStore, state: leap.LeapState, s: Settings, r: int) -> None:
        """A "round" event per request: every path's latest summary and current answer."""
        tags = TAG_SETS[s.tags]
        for q, j in enumerate(jobs):
            paths = []
            for p in state.of(q):  # the paths of request q, with their store ids
                text = store.text(p.id)[len(p.trace.prompt):]
                k = text.rfind(tags.open_summary)
                summary = text[k + len(tags.open_summary):].split(tags.close_summary)[0].strip() if k >= 0 else None
                paths.append({"index": p.index, "summary": summary, "answer": extract_answer(own_text(text, tags))})
            j.emit("round", {"round": r, "paths": paths})

    def answer(self, req: Request, traces: list[PathTrace], batch: dict) -> dict[str, Any]:
        """The consensus reply, its usage and the `crosspath` field for one request."""
        s = req.settings
        answers = [extract_answer(t.own_text if t.own_text is not None else t.text) for t in traces]
        ranked = votes_of(answers)
        consensus, pick = (ranked[0]["answer"], ranked[0]["paths"][0]) if ranked else (None, 0)
        text, stopped = cut_at_stop(traces[pick].text, s.stop, keep_stop=False)
        finish = "stop" if stopped or traces[pick].finish not in ("length", "budget") else "length"
        prompt_tokens = req.prompt_tokens * len(traces)
        completion_tokens = sum(t.tokens for t in traces)
        paths = []
        for n, (t, a) in enumerate(zip(traces, answers)):
            rounds = [{k: v for k, v in rd.items() if k != "text"} for rd in t.rounds] if s.method == "leap" else []
            paths.append({"index": n, "answer": a, "tokens": t.tokens, "finish": t.finish, "rounds": rounds})
        extra = {"method": s.method, "answer": consensus, "consensus_path": pick, "votes": ranked,
                 "paths": paths, "batch": batch,
                 "config": {"paths": s.paths, "max_tokens": s.max_tokens, "temperature": s.temperature,
                            "top_p": s.top_p, "seed": s.seed,
                            **({"rounds": s.rounds, "round_tokens": s.round_tokens, "peers_k": s.peers_k,
                                "top_k": s.peers_k,  # the old name of peers_k, for one release
                                "router": s.router, "summary_tokens": s.summary_tokens,
                                "answer_tokens": s.answer_tokens} if s.method == "leap" else {})}}
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        return {"text": text, "finish_reason": finish, "usage": usage, "crosspath": extra}

    # ---- state and shutdown ----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {**self.scheduler.counts(), "accepting": self.scheduler.accepting,
                "batch_sizes": self.scheduler.batch_sizes[-100:], "generator_calls": self.generator_calls,
                "requests_done": self.requests_done, "completion_tokens": self.tokens}

    def shutdown(self, timeout: float | None = None) -> None:
        """Refuse new requests, let in-flight ones finish for `timeout` s, cancel the rest (503), stop."""
        self.scheduler.drain()
        if not self.scheduler.wait_idle(self.cfg.shutdown_timeout if timeout is None else timeout):
            n = self.scheduler.cancel_all()
            log.warning("shutdown: cancelled %d request(s) still waiting after the grace period", n)
        self.scheduler.close()
