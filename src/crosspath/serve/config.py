"""Server options (`ServeConfig`) and the per-request settings a request may override (`Settings`).

Method and sampling options reuse `RunConfig`'s fields (same names, defaults and help), so
`crosspath serve --rounds 2` means what `crosspath run --rounds 2` means. A request body may
override a few of them inside `{"crosspath": {...}}` (see `OVERRIDES`), within the limits below;
the standard OpenAI fields max_tokens, temperature, top_p, seed and stop are honoured too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ..config import field
from ..infer.prompts import FINAL_ANSWER, RECAP_TRIGGERS, SUMMARY_OPENER, TAG_SETS, peer_block, summary_request
from ..infer.runner import RunConfig

_RUN = {f.name: f for f in dataclasses.fields(RunConfig)}


def reuse(name: str, default: Any = dataclasses.MISSING, help: str | None = None) -> Any:
    """A copy of RunConfig's field `name` (its help, choices and default unless given)."""
    f = _RUN[name]
    if default is dataclasses.MISSING:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    meta = {k: v for k, v in f.metadata.items() if k != "help"}
    return field(default, help or f.metadata["help"], **meta)


class RequestError(ValueError):
    """A request the server cannot take: answered with an OpenAI-style error JSON."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


@dataclass
class ServeConfig:
    RENAMED: ClassVar[dict[str, str]] = {"top_k": "peers_k"}  # old flag / YAML key, accepted with a warning
    MODEL_DEFAULTS: ClassVar[tuple[str, ...]] = RunConfig.MODEL_DEFAULTS  # the model's budgets, as for `run`

    # ---- model and backend ----
    model: str = reuse("model")
    served_model_name: str | None = field(None, "model name in /v1/models and in replies; a request naming "
                                                "another model gets 404 (default: --model)")
    backend: str = field("hf", "hf: transformers in this process (per-path KV cache); openai: an upstream "
                               "OpenAI-compatible server such as vLLM (--base-url); vllm: vLLM offline engine",
                         choices=("hf", "openai", "vllm"))
    adapter: str | None = reuse("adapter")
    dtype: str = reuse("dtype")
    base_url: list[str] = field([], "openai backend: upstream /v1 URL(s); several are load-balanced "
                                    "(least in-flight requests), e.g. a pool of vLLM servers")
    upstream_api_key: str | None = field(None, "openai backend: key for the upstream server (default: $OPENAI_API_KEY)")
    upstream_model: str | None = field(None, "openai backend: model name on the upstream server (default: --model)")
    concurrency: int = reuse("concurrency")
    threads: int | None = reuse("threads")
    # ---- HTTP ----
    host: str = field("127.0.0.1", "address to bind (0.0.0.0 exposes the server to the network)")
    port: int = field(8000, "TCP port", ge=0, le=65535)
    api_key: str | None = field(None, "require `Authorization: Bearer KEY` on every route but /health (default: "
                                      "$CROSSPATH_API_KEY; neither set: no authentication; an empty key is an error)")
    log_level: str = field("info", "uvicorn log level", choices=("critical", "error", "warning", "info", "debug"))
    # ---- method defaults (a request may override the ones in OVERRIDES) ----
    method: str = field("leap", "how answers are made: leap (paths exchange summaries) or independent "
                                "(self-consistency); both answer with the majority vote over --paths",
                        choices=("leap", "independent"))
    paths: int = reuse("paths")
    rounds: int = reuse("rounds")
    round_tokens: int = reuse("round_tokens")
    peers_k: int = reuse("peers_k")
    router: str = reuse("router")
    similarity: str = reuse("similarity")
    summary_tokens: int = reuse("summary_tokens")
    answer_tokens: int = reuse("answer_tokens")
    comm_rounds: list[int] | None = reuse("comm_rounds")
    tags: str = reuse("tags")
    leap_t: bool = reuse("leap_t")
    max_tokens: int | None = field(None, "per-path token budget when a request sends no max_tokens (leap: cap on "
                                         "a path's generated tokens, default none; independent: default the LeaP "
                                         "worst case rounds x round_tokens + summaries + answer)", ge=1)
    temperature: float = reuse("temperature")
    top_p: float = reuse("top_p")
    sample_top_k: int = reuse("sample_top_k")
    min_p: float = reuse("min_p")
    seed: int = field(0, "base seed of batches whose requests send no seed", ge=0)
    # ---- limits and scheduling ----
    max_paths: int = field(16, "most paths a request may ask for (400 above)", ge=1)
    max_rounds: int = field(8, "most LeaP rounds a request may ask for (400 above)", ge=1)
    max_path_tokens: int = field(4096, "largest per-path token budget a request may cause: max_tokens, or "
                                       "rounds x round_tokens + summaries + answer (400 above)", ge=1)
    max_prompt_tokens: int = field(4096, "longest prompt a request may send, in tokens of the rendered prompt (chat "
                                         "template and method instruction included; 400 above). A prompt that "
                                         "with the most a path may add would not fit the model's context is "
                                         "refused too", ge=1)
    max_body_bytes: int = field(1_000_000, "largest request body in bytes (413 above)", ge=1)
    max_batch: int = field(8, "most requests run together as one LeaP batch", ge=1)
    batch_window_ms: float = field(15.0, "how long the scheduler waits for more requests after the oldest "
                                         "pending one arrived before it starts a batch", ge=0)
    max_queue: int = field(256, "most requests waiting for a batch (429 above)", ge=1)
    workers: int = field(1, "batches run at the same time (hf: must be 1; openai: >1 keeps an upstream pool busy)",
                         ge=1)
    shutdown_timeout: float = field(30.0, "on SIGTERM: seconds to finish in-flight requests; the rest get 503", ge=0)

    @property
    def name(self) -> str:
        return self.served_model_name or self.model

    def run_config(self) -> RunConfig:
        """The RunConfig that `runner.make_generator` understands (its backend part)."""
        return RunConfig(model=self.model, adapter=self.adapter, backend=self.backend, base_url=list(self.base_url),
                         api_key=self.upstream_api_key, served_model=self.upstream_model,
                         concurrency=self.concurrency, dtype=self.dtype, seed=self.seed)


def is_loopback(host: str) -> bool:
    """True when `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def check_auth(cfg: ServeConfig) -> str | None:
    """Raise ValueError for an API key that is set but empty (`--api-key "$UNSET"` must not switch
    authentication off); return a warning when the server is reachable from the network without one."""
    if cfg.api_key is not None and not cfg.api_key.strip():
        raise ValueError("--api-key is empty (an unset variable?): give a key, or leave the option out to run "
                         "without authentication")
    if cfg.api_key is None and not is_loopback(cfg.host):
        return (f"--host {cfg.host} exposes the server to the network and no --api-key (or $CROSSPATH_API_KEY) "
                "is set: anyone who can reach it can use it")
    return None


# Keys of the request's `crosspath` object -> type; `n_paths` is an alias of `paths`.
OVERRIDES: dict[str, type] = {"method": str, "paths": int, "rounds": int, "round_tokens": int, "peers_k": int,
                              "router": str, "summary_tokens": int, "answer_tokens": int, "wrap": bool}
ROUTERS = ("dispersed", "clustered", "hybrid", "random", "all")


@dataclass(frozen=True)
class Settings:
    """Everything that shapes one request's answer; requests batch together only when equal."""

    method: str
    paths: int
    rounds: int
    round_tokens: int
    peers_k: int
    router: str
    summary_tokens: int
    answer_tokens: int
    comm_rounds: tuple[int, ...] | None
    tags: str
    leap_t: bool
    max_tokens: int | None  # per-path budget (leap: token_budget)
    temperature: float
    top_p: float
    sample_top_k: int
    min_p: float
    stop: tuple[str, ...]
    seed: int | None

    def run_config(self, base: RunConfig) -> RunConfig:
        """These settings as the typed RunConfig the inference methods read (`runner.leap_options` maps
        it to LeapOptions); backend fields come from `base`. The per-path budget is LeaP's token_budget."""
        return dataclasses.replace(
            base, method=self.method, paths=self.paths, rounds=self.rounds, round_tokens=self.round_tokens,
            peers_k=self.peers_k, router=self.router, summary_tokens=self.summary_tokens, answer_tokens=self.answer_tokens,
            comm_rounds=None if self.comm_rounds is None else list(self.comm_rounds), tags=self.tags,
            leap_t=self.leap_t, max_tokens=self.max_tokens, token_budget=self.max_tokens,
            temperature=self.temperature, top_p=self.top_p, sample_top_k=self.sample_top_k, min_p=self.min_p,
            stop=list(self.stop))

    def worst_case_tokens(self) -> int:
        """Most tokens one path can generate under these settings."""
        if self.method == "independent":
            return self.max_tokens or 0
        reasoning = self.rounds * self.round_tokens + (self.rounds - 1) * self.summary_tokens
        if self.max_tokens is not None:  # a summary may overshoot the budget by its own length
            reasoning = min(reasoning, self.max_tokens + self.summary_tokens)
        return reasoning + self.answer_tokens

    def path_growth(self, count: Callable[[str], int]) -> int:
        """Most tokens a path may add after its prompt (`count` tokenizes): what it writes, plus for
        LeaP the text put into it per communication (the summary request, k peers' summaries and
        the block around them, a repaired summary tag) and the forced-answer cue. A peer's summary
        is re-read as text, and text does not always tokenize back into as few tokens as were
        sampled (a weak model's odd token runs do not): it counts twice its budget."""
        if self.method == "independent":
            return self.max_tokens or 0
        tags = TAG_SETS[self.tags]
        last = self.rounds - 1
        comms = last if self.comm_rounds is None else len({r for r in self.comm_rounds if 0 <= r < last})
        k = self.paths - 1 if self.router == "all" else min(self.peers_k, self.paths - 1)  # peers per path
        peers = peer_block([SUMMARY_OPENER + "..."] * k, tags)  # all but the peers' own tokens
        per_comm = (max(count(summary_request(0, j, tags)) for j in range(len(RECAP_TRIGGERS)))
                    + count("...\n" + tags.close_summary) + count(peers) + 2 * k * self.summary_tokens)
        return self.worst_case_tokens() + comms * per_comm + count(FINAL_ANSWER)


def _bad(message: str, param: str, code: str = "invalid_value") -> RequestError:
    return RequestError(400, message, code=code, param=param)


def resolve_settings(cfg: ServeConfig, body: dict[str, Any], completion: bool) -> tuple[Settings, bool]:
    """The request's Settings (server defaults < `crosspath` overrides < standard fields) and whether
    a completion prompt is wrapped in the method's instruction. Raises RequestError (400)."""
    over = body.get("crosspath") or {}
    if not isinstance(over, dict):
        raise _bad("`crosspath` must be an object", "crosspath")
    over = dict(over)
    for alias, name in (("n_paths", "paths"), ("top_k", "peers_k")):  # top_k: the old name, for one release
        if alias in over:
            over.setdefault(name, over.pop(alias))
    unknown = sorted(set(over) - set(OVERRIDES))
    if unknown:
        raise _bad(f"unknown crosspath option(s) {unknown}; allowed: {sorted(OVERRIDES)} (n_paths = paths)",
                   "crosspath", "unknown_option")
    for k, v in over.items():
        want = OVERRIDES[k]
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise _bad(f"crosspath.{k} must be {want.__name__}, got {v!r}", f"crosspath.{k}")
    if "wrap" in over and not completion:
        raise _bad("crosspath.wrap applies to /v1/completions only", "crosspath.wrap")
    get = lambda k: over.get(k, getattr(cfg, k))  # noqa: E731
    method, router = get("method"), get("router")
    if method not in ("leap", "independent"):
        raise _bad(f"crosspath.method must be leap or independent, got {method!r}", "crosspath.method")
    if router not in ROUTERS:
        raise _bad(f"crosspath.router must be one of {list(ROUTERS)}, got {router!r}", "crosspath.router")
    paths, rounds = get("paths"), get("rounds")
    if not 1 <= paths <= cfg.max_paths:
        raise _bad(f"paths must be between 1 and {cfg.max_paths} (this server's --max-paths), got {paths}",
                   "crosspath.paths", "too_many_paths" if paths > cfg.max_paths else "invalid_value")
    if not 1 <= rounds <= cfg.max_rounds:
        raise _bad(f"rounds must be between 1 and {cfg.max_rounds} (--max-rounds), got {rounds}", "crosspath.rounds")
    for k in ("round_tokens", "summary_tokens", "answer_tokens", "peers_k"):
        if get(k) < (0 if k == "peers_k" else 1):
            raise _bad(f"{k} must be {'>= 0' if k == 'peers_k' else '>= 1'}, got {get(k)}", f"crosspath.{k}")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or cfg.max_tokens
    if max_tokens is not None and max_tokens > cfg.max_path_tokens:
        raise _bad(f"max_tokens is a per-path budget and must be <= {cfg.max_path_tokens} (--max-path-tokens), "
                   f"got {max_tokens}", "max_tokens", "too_many_tokens")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(s for s in stop if s)
    if len(stop) > 4:
        raise _bad(f"at most 4 stop strings, got {len(stop)}", "stop")
    s = Settings(method=method, paths=paths, rounds=rounds, round_tokens=get("round_tokens"), peers_k=get("peers_k"),
                 router=router, summary_tokens=get("summary_tokens"), answer_tokens=get("answer_tokens"),
                 comm_rounds=tuple(cfg.comm_rounds) if cfg.comm_rounds is not None else None, tags=cfg.tags,
                 leap_t=cfg.leap_t, max_tokens=max_tokens,
                 temperature=cfg.temperature if body.get("temperature") is None else float(body["temperature"]),
                 top_p=cfg.top_p if body.get("top_p") is None else float(body["top_p"]),
                 sample_top_k=cfg.sample_top_k, min_p=cfg.min_p, stop=stop, seed=body.get("seed"))
    if s.method == "independent" and s.max_tokens is None:
        lp = dataclasses.replace(s, method="leap")
        s = dataclasses.replace(s, max_tokens=lp.worst_case_tokens())
    if s.worst_case_tokens() > cfg.max_path_tokens:
        raise _bad(f"these options let a path write {s.worst_case_tokens()} tokens (rounds x round_tokens + "
                   f"summaries + answer); this server allows {cfg.max_path_tokens} (--max-path-tokens)",
                   "crosspath", "too_many_tokens")
    return s, bool(over.get("wrap", False))
