"""Quality filter of teacher paths (QR-Distill step 2).

    (a) answer filter: drop paths whose final answer is wrong (the `correct` field of generate)
    (b) judge filter:  an LLM (any backend) reads question + path and answers VALID / INVALID with a
                       one-line reason (prompt in distill/prompts.py); INVALID paths are dropped;
                       a reply with no verdict is counted as "unparseable" and kept or dropped
                       according to --unparseable (default keep: a judge that did not answer is
                       no evidence against the path)

The judge sees only paths that passed (a). Kept rows carry `judge` (VALID/INVALID/null) and
`judge_reason`. Statistics per style and per filter are printed as a table and saved to
`<out>.stats.json`:

    {"styles": {style: {"paths", "answer_ok", "valid", "invalid", "unparseable", "kept"}}, "total": {...},
     "filters": {"answer": {"in", "out"}, "judge": {"in", "valid", "invalid", "unparseable", "out"}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends.base import SamplingParams
from ..config import DTYPES, field
from ..infer.runner import BACKENDS
from .data import read_rows, write_rows
from .prompts import JUDGE, JUDGE_PREFILL, parse_verdict

COLUMNS = ("paths", "answer_ok", "valid", "invalid", "unparseable", "kept")


@dataclass
class FilterConfig:
    input: str = field("paths.jsonl", "teacher paths from `crosspath distill generate`")
    out: str = field("filtered.jsonl", "kept paths (statistics go to <out>.stats.json)")
    judge: str | None = field(None, "judge model (name, hub id, folder; with --judge-backend openai the served name)")
    no_judge: bool = field(False, "answer filter only (ablation)")
    judge_backend: str = field("hf", "hf | openai | vllm", choices=BACKENDS)
    base_url: list[str] = field([], "openai judge: server URL(s)")
    api_key: str | None = field(None, "openai judge: API key (default: $OPENAI_API_KEY)")
    served_model: str | None = field(None, "openai judge: model name on the server (default: --judge)")
    concurrency: int = field(16, "openai judge: maximum requests in flight", ge=1)
    dtype: str = field("auto", "hf/vllm judge: weights dtype (auto: hf bfloat16 on CUDA, float32 on CPU; vllm the "
                               "engine's choice)", choices=DTYPES)
    judge_tokens: int = field(48, "judge reply budget (tokens)", ge=1)
    judge_batch: int = field(16, "paths per judge call", ge=1)
    unparseable: str = field("keep", "what to do with a judge reply that names no verdict: keep | drop",
                             choices=("keep", "drop"))
    max_path_chars: int = field(6000, "the judge reads at most this many characters of a path (its end)", ge=1)


def judge_paths(rows: list[dict], gen, render: Callable[..., str], max_tokens: int = 48, batch: int = 16,
                max_chars: int = 6000) -> list[tuple[str | None, str]]:
    """(verdict, reason) per row, greedy judge replies parsed by `parse_verdict`."""
    verdicts = []
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=("\n\n",))
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        prompts = [render(JUDGE.format(question=r["question"], path=r["text"][-max_chars:]), prefill=JUDGE_PREFILL)
                   for r in chunk]
        verdicts.extend(parse_verdict(c.text) for c in gen.generate(prompts, params))
    return verdicts


def filter_paths(cfg: FilterConfig, generator=None, log: Callable[[str], None] = print) -> dict:
    """Apply the filters, write cfg.out and <out>.stats.json; returns the statistics."""
    rows = read_rows(cfg.input)
    if not rows:
        raise ValueError(f"no paths in {cfg.input}")
    use_judge = not cfg.no_judge and (cfg.judge is not None or generator is not None)
    if not cfg.no_judge and not use_judge:
        raise ValueError("give a --judge model, or --no-judge for the answer filter alone")
    stats = {st: dict.fromkeys(COLUMNS, 0) for st in sorted({r.get("style", "") for r in rows})}
    passed = []
    for r in rows:
        stats[r.get("style", "")]["paths"] += 1
        if r.get("correct"):
            stats[r.get("style", "")]["answer_ok"] += 1
            passed.append(r)
    kept = []
    if use_judge:
        from .generate import make_backend, render_for

        gen = generator if generator is not None else make_backend(
            cfg.judge, cfg.judge_backend, cfg.base_url, cfg.api_key, cfg.served_model, cfg.concurrency, cfg.dtype)
        log(f"judging {len(passed)} paths with {cfg.judge or 'the given generator'}")
        verdicts = judge_paths(passed, gen, render_for(gen, cfg.judge or ""), cfg.judge_tokens, cfg.judge_batch,
                               cfg.max_path_chars)
        for r, (v, reason) in zip(passed, verdicts):
            s = stats[r.get("style", "")]
            s["valid" if v == "VALID" else "invalid" if v == "INVALID" else "unparseable"] += 1
            if v == "VALID" or (v is None and cfg.unparseable == "keep"):
                kept.append({**r, "judge": v, "judge_reason": reason})
    else:
        kept = [{**r, "judge": None, "judge_reason": ""} for r in passed]
    for r in kept:
        stats[r.get("style", "")]["kept"] += 1
    total = {c: sum(s[c] for s in stats.values()) for c in COLUMNS}
    result = {"styles": stats, "total": total, "judge": cfg.judge if use_judge else None,
              "unparseable_policy": cfg.unparseable,
              "filters": {"answer": {"in": total["paths"], "out": total["answer_ok"]},
                          "judge": {"in": total["answer_ok"], "valid": total["valid"], "invalid": total["invalid"],
                                    "unparseable": total["unparseable"], "out": total["kept"]} if use_judge else None}}
    write_rows(cfg.out, kept)
    Path(str(cfg.out) + ".stats.json").write_text(json.dumps(result, indent=2))
    log(format_stats(result))
    return result


def format_stats(result: dict) -> str:
    """A Markdown table: one row per style plus the total."""
    judged = result["filters"]["judge"] is not None
    cols = COLUMNS if judged else ("paths", "answer_ok", "kept")
    lines = ["| style | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for st, s in list(result["styles"].items()) + [("**total**", result["total"])]:
        lines.append(f"| {st or '-'} | " + " | ".join(str(s[c]) for c in cols) + " |")
    return "\n".join(lines)
