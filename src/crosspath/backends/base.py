"""The generator protocol every backend implements.

One call advances many independent text continuations:

    generate(prompts: list[str], params: SamplingParams) -> list[Completion]

Prompts are plain strings: a caller renders the chat template once (see `crosspath.models`) and
continues raw text from then on, so every backend sees the same string.

A backend that can keep state between calls (the transformers backend) also implements
`SessionGenerator`: a path is opened once, text is appended to it, and continuing it costs only
the tokens that are new since the last call (its KV cache is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence, runtime_checkable
from ..errors import CrosspathError


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off
    stop: tuple[str, ...] = ()
    seed: int | None = None  # per-request seed; request i of a call uses seed + i
    n: int = 1  # completions per prompt (returned prompt-major: p0c0, p0c1, ..., p1c0, ...)
    logprobs: bool = False  # return the log-prob of each sampled token
    top_logprobs: int = 0  # k > 0: also the log-probs of the k most likely tokens at each position (DeepConf)

    def with_(self, **kw) -> "SamplingParams":
        if "stop" in kw and kw["stop"] is not None:
            kw["stop"] = tuple(kw["stop"])
        return replace(self, **kw)


@dataclass
class Completion:
    text: str  # generated text, cut right after the stop string when one was hit
    token_ids: list[int] = field(default_factory=list)  # tokens generated (billed), incl. stop
    finish_reason: str = "length"  # "stop" (stop string or EOS) | "length"
    stop: str | None = None  # the stop string hit; None for EOS or length
    logprobs: list[float] | None = None
    top_logprobs: list[list[float]] | None = None  # per generated token, the k largest log-probs, largest first

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class Generator(Protocol):
    """Stateless: every call gets whole prompts."""

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]: ...


@runtime_checkable
class SessionGenerator(Generator, Protocol):
    """Stateful paths: `open` a prefix, `extend` it with text, `advance` several paths at once.

    `advance` appends each completion's text to its path, so after it the path's text is
    prefix + extensions + completion text (cut at the stop string). `text(handle)` returns it.
    `rewind(handle, n_chars)` drops the last characters (e.g. a half-written paragraph); the
    cached state is cut to the longest token prefix still valid.
    """

    def open(self, prefix: str) -> int: ...

    def extend(self, handle: int, text: str) -> None: ...

    def rewind(self, handle: int, n_chars: int) -> None: ...

    def advance(self, handles: Sequence[int], params: SamplingParams) -> list[Completion]: ...

    def text(self, handle: int) -> str: ...

    def close(self, handle: int) -> None: ...


class BackendError(CrosspathError, RuntimeError):
    """A backend could not produce an answer (server down, malformed reply, ...)."""


def has_sessions(gen: Generator) -> bool:
    return all(hasattr(gen, m) for m in ("open", "extend", "rewind", "advance", "text", "close"))


def cut_at_stop(text: str, stops: Sequence[str], keep_stop: bool = True) -> tuple[str, str | None]:
    """Cut `text` at the stop string that completes first. Returns (text, stop or None).

    keep_stop=True (backends: a path's text keeps its `</think>`) cuts right after it;
    keep_stop=False (the OpenAI reply of the server) cuts right before it. Empty stops are ignored.

    >>> cut_at_stop("a </think> b", ["</think>"])
    ('a </think>', '</think>')
    >>> cut_at_stop("a </think> b", ["</think>"], keep_stop=False)
    ('a ', '</think>')
    """
    best, hit = None, None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best):
            best, hit = i + len(s), s
    if best is None:
        return text, None
    return (text[:best] if keep_stop else text[: best - len(hit)]), hit
