"""Teacher paths: for every question, K samples in each of six reasoning styles (QR-Distill step 1).

    for each batch of questions:
        prompts = teacher chat template around STYLES[style].format(question)   (distill/prompts.py)
        one generator call for every (question, style, sample) not yet in the output
        grade each path (answer extracted from the last \\boxed{}) and append a JSONL row at once:
            {"id", "question", "gold", "style", "sample", "text", "answer", "correct", "tokens", "finish"}

Resumable: rows already in the output file are skipped by (id, style, sample), and a half-written
last line (a killed run) is cut off before appending. Batches are cut from the whole question list
and seeded by their index (request i of a call uses seed + i), so a resumed run samples what an
uninterrupted one would, except inside a batch that was killed half-way through its writing.
Any backend works (hf, openai-compatible servers, vllm) through `crosspath.infer.runner.make_generator`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends.base import SamplingParams
from ..config import DTYPES, field
from ..infer.runner import BACKENDS
from ..models import DEFAULT_MODEL
from ..tasks import grade, load_task
from .prompts import STYLE_NAMES, STYLES


@dataclass
class GenerateConfig:
    teacher: str = field(DEFAULT_MODEL, "teacher model (name, hub id or folder; with --backend openai the served name)")
    task: str = field("rg:chain_sum", "task whose questions the teacher solves (see `crosspath tasks`)")
    split: str = field("train", "dataset split (use training questions; evaluate on another split/seed)")
    limit: int | None = field(None, "number of questions (the first N)", ge=1)
    task_seed: int = field(0, "seed of generated tasks (reasoning-gym)", ge=0)
    task_options: dict | None = field(None, "task options as JSON, e.g. '{\"min_terms\": 2, \"max_terms\": 3, "
                                            "\"max_digits\": 1}' for rg:chain_sum")
    out: str = field("paths.jsonl", "output JSONL (appended to; resumable)")
    styles: list[str] = field(list(STYLE_NAMES), "teacher styles: " + ", ".join(STYLE_NAMES))
    per_style: int = field(1, "K: paths per question and style", ge=1)
    temperature: float = field(0.8, "sampling temperature", ge=0)
    top_p: float = field(0.95, "nucleus sampling", gt=0, le=1)
    max_tokens: int = field(512, "new tokens per path", ge=1)
    seed: int = field(0, "sampling seed", ge=0)
    batch_questions: int = field(4, "questions whose paths share one generator call", ge=1)
    backend: str = field("hf", "hf | openai | vllm", choices=BACKENDS)
    base_url: list[str] = field([], "openai backend: server URL(s)")
    api_key: str | None = field(None, "openai backend: API key (default: $OPENAI_API_KEY)")
    served_model: str | None = field(None, "openai backend: model name on the server (default: --teacher)")
    concurrency: int = field(16, "openai backend: maximum requests in flight", ge=1)
    dtype: str = field("auto", "hf/vllm: weights dtype (auto: hf bfloat16 on CUDA, float32 on CPU; vllm the engine's "
                               "choice)", choices=DTYPES)


def make_backend(model: str, backend: str = "hf", base_url=(), api_key=None, served_model=None, concurrency=16,
                 dtype="auto"):
    """A Generator for `model` through crosspath's runner (one place that knows the backends)."""
    from ..infer.runner import RunConfig, make_generator

    return make_generator(RunConfig(model=model, backend=backend, base_url=list(base_url), api_key=api_key,
                                    served_model=served_model, concurrency=concurrency, dtype=dtype))


def render_for(gen, model: str) -> Callable[[str], str]:
    """user text -> the model's own chat template (tokenizer from the generator, else loaded locally)."""
    from ..models import load_tokenizer, render_prompt

    tok = getattr(gen, "tok", None) or getattr(gen, "tokenizer", None) or load_tokenizer(model)
    return lambda user, prefill="": render_prompt(tok, user, prefill=prefill)


def generate(cfg: GenerateConfig, generator=None, problems=None, log: Callable[[str], None] = print) -> dict:
    """Write teacher paths to cfg.out; returns {"written", "skipped", "correct", "out"}."""
    from .data import read_rows

    unknown = [s for s in cfg.styles if s not in STYLES]
    if unknown:
        raise ValueError(f"unknown styles {unknown}; choose from {', '.join(STYLE_NAMES)}")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["id"], r["style"], r["sample"]) for r in read_rows(out, repair=True)}  # cuts a half-written line
    problems = problems if problems is not None else load_task(cfg.task, limit=cfg.limit, seed=cfg.task_seed,
                                                               split=cfg.split, **(cfg.task_options or {}))
    todo = [(qi, p, st, k) for qi, p in enumerate(problems) for st in cfg.styles for k in range(cfg.per_style)
            if (p.id, st, k) not in done]
    log(f"teacher paths: {len(problems)} questions x {len(cfg.styles)} styles x {cfg.per_style}: "
        f"{len(todo)} to write, {len(done)} already in {out}")
    if not todo:
        return {"written": 0, "skipped": len(done), "correct": 0, "out": str(out)}
    gen = generator if generator is not None else make_backend(
        cfg.teacher, cfg.backend, cfg.base_url, cfg.api_key, cfg.served_model, cfg.concurrency, cfg.dtype)
    render = render_for(gen, cfg.teacher)
    written = correct = 0
    B = max(1, cfg.batch_questions)
    with open(out, "a") as f:
        for b in range(0, len(problems), B):  # batches cut from the whole question list, seeded by index
            items = [t for t in todo if b <= t[0] < b + B]
            if not items:
                continue
            params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                    seed=(cfg.seed + 1_000_003 * (b // B)) % 2**31)
            outs = gen.generate([render(STYLES[st].format(question=p.question)) for _, p, st, _ in items], params)
            for (qi, p, st, k), c in zip(items, outs):
                answer, ok = grade(p, c.text)
                row = {"id": p.id, "question": p.question, "gold": p.answer, "style": st, "sample": k,
                       "text": c.text, "answer": answer, "correct": ok, "tokens": c.num_tokens,
                       "finish": c.finish_reason, "teacher": cfg.teacher}
                f.write(json.dumps(row) + "\n")
                f.flush()
                written += 1
                correct += ok
            log(f"  questions {b + 1}-{min(b + B, len(problems))}/{len(problems)}: {written} paths written, "
                f"{correct} correct")
    return {"written": written, "skipped": len(done), "correct": correct, "out": str(out)}
