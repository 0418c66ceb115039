"""Path state for inference methods, over either kind of backend.

`PathStore` gives a method one interface whatever the backend: `add(prompt)`, `extend`,
`rewind`, `advance(ids, params)` (continues the paths and appends what they wrote) and `text`.
On a `SessionGenerator` (hf) it uses the session API, so each path's KV cache is reused across
rounds and a summary or a comment block costs only its own tokens. On a stateless generator
(vLLM, OpenAI-compatible servers) it resends each path's whole text, and the server's prefix
cache does the reuse (it must be on: vLLM `enable_prefix_caching=True`, SGLang's radix cache).

With `top_logprobs=k` every call asks for the k largest log-probs of each position, and the store
keeps each path's token confidences (DeepConf: C_i = -mean of those k log-probs) in generation
order, over all its calls (`confidences(i)`); tokens later rewound stay counted, as they were generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..backends.base import BackendError, Completion, Generator, SamplingParams, has_sessions


@dataclass
class PathTrace:
    """What one path did, for results.jsonl."""

    prompt: str
    text: str = ""  # everything the path wrote after its prompt (incl. summaries and peer blocks)
    tokens: int = 0  # generated tokens (reasoning + summaries + forced answer)
    finished: bool = False
    finish: str = ""  # "think" (</think>), "eos", "length", "budget", "forced"
    rounds: list[dict[str, Any]] = field(default_factory=list)
    own_text: str | None = None  # the text to grade when it differs from `text` (LeaP: peer blocks removed)
    confidence: list[float] | None = None  # token confidences of everything it generated (DeepConf), if recorded
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific fields of its results.jsonl record
    graded: bool = True  # False: an intermediate path (PaCoRe's earlier rounds, MoA's proposers), not scored


class PathStore:
    def __init__(self, gen: Generator, use_sessions: bool | None = None, top_logprobs: int = 0):
        self.gen = gen
        self.top_logprobs = top_logprobs
        self._conf: list[list[float]] = []  # per path: token confidences (when top_logprobs > 0)
        self.sessions = has_sessions(gen) if use_sessions is None else use_sessions
        self._texts: list[str] = []  # stateless: whole text per path
        self._handles: list[int] = []

    def add(self, prompt: str) -> int:
        if self.sessions:
            self._handles.append(self.gen.open(prompt))  # type: ignore[attr-defined]
        self._texts.append(prompt)
        self._conf.append([])
        return len(self._texts) - 1

    def confidences(self, i: int) -> list[float] | None:
        """Path i's token confidences so far (None when the store does not record them)."""
        return list(self._conf[i]) if self.top_logprobs else None

    def text(self, i: int) -> str:
        return self._texts[i]

    def extend(self, i: int, text: str) -> None:
        self._texts[i] += text
        if self.sessions:
            self.gen.extend(self._handles[i], text)  # type: ignore[attr-defined]

    def rewind(self, i: int, n_chars: int) -> None:
        if n_chars <= 0:
            return
        self._texts[i] = self._texts[i][:-n_chars]
        if self.sessions:
            self.gen.rewind(self._handles[i], n_chars)  # type: ignore[attr-defined]

    def advance(self, ids: Sequence[int], params: SamplingParams) -> list[Completion]:
        if not ids:
            return []
        if self.top_logprobs:
            params = params.with_(top_logprobs=self.top_logprobs)
        if self.sessions:
            outs = self.gen.advance([self._handles[i] for i in ids], params)  # type: ignore[attr-defined]
        else:
            outs = self.gen.generate([self._texts[i] for i in ids], params)
        for i, c in zip(ids, outs):
            self._texts[i] += c.text
            if self.top_logprobs:
                if c.top_logprobs is None or (c.num_tokens and not c.top_logprobs):
                    raise BackendError("the backend returned no top log-probs for every generated token; "
                                       "token confidence (DeepConf) needs them")
                self._conf[i] += [-sum(top) / len(top) for top in c.top_logprobs if top]  # C_i = -mean top-k log-probs
        return outs

    def close(self) -> None:
        if self.sessions:
            for h in self._handles:
                self.gen.close(h)  # type: ignore[attr-defined]
        self._handles, self._texts, self._conf = [], [], []
