"""Independent sampling: N paths per question, no exchange (the self-consistency baseline).

Every path gets the same prompt and the same sampling; the runner grades each path and takes the
majority vote (cons@N). Give it the same per-path token budget as the method it is compared with.
"""

from __future__ import annotations

from ..backends.base import SamplingParams
from ..tasks.problem import Problem
from .paths import PathStore, PathTrace
from .prompts import STEP_BY_STEP


def question_prompt(problem: Problem, render) -> str:
    """The prompt every path of `problem` starts from."""
    return render(STEP_BY_STEP.format(question=problem.question))


def solve(problems: list[Problem], store: PathStore, cfg, render, seed: int) -> list[list[PathTrace]]:
    """Run N independent paths for each problem (all problems' paths in one generator call)."""
    traces, ids = [], []
    for p in problems:
        prompt = question_prompt(p, render)
        row = []
        for _ in range(cfg.paths):
            ids.append(store.add(prompt))
            row.append(PathTrace(prompt=prompt))
        traces.append(row)
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            top_k=cfg.sample_top_k, min_p=cfg.min_p, stop=tuple(cfg.stop), seed=seed)
    outs = store.advance(ids, params)
    flat = [t for row in traces for t in row]
    for t, c in zip(flat, outs):
        t.text, t.tokens, t.finished = c.text, c.num_tokens, True
        t.finish = "length" if c.finish_reason == "length" else ("stop" if c.stop else "eos")
        t.rounds = [{"text": c.text, "tokens": c.num_tokens}]
    return traces
