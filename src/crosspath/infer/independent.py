"""Independent sampling: N paths per question, no exchange (the self-consistency baseline).

Every path gets the same prompt and the same sampling; the runner grades each path and takes the
majority vote (cons@N). As in LeaP (and the reference's baseline), a path cut by its token budget
before it finished is forced to answer: the final-answer lead-in ending in \\boxed{ is appended and
it writes at most `answer_tokens` more. Its per-path budget is then max_tokens + answer_tokens;
`infer/budget.py` gives it the same budget as the LeaP run it is compared with.
"""

from __future__ import annotations

from ..backends.base import SamplingParams
from ..tasks.problem import Problem
from .paths import PathStore, PathTrace
from .prompts import final_answer, plain_prompt

THINK_END = "</think>"


def question_prompt(problem: Problem, render) -> str:
    """The prompt every path of `problem` starts from (with its options for multiple choice)."""
    return render(plain_prompt(problem))


def solve(problems: list[Problem], store: PathStore, cfg, render, seed: int,
          answer_tokens: int = 0) -> list[list[PathTrace]]:
    """Run N independent paths for each problem (all problems' paths in one generator call); paths cut
    at `cfg.max_tokens` get a forced answer of at most `answer_tokens` (0: none)."""
    traces, ids = [], []
    for p in problems:
        prompt = question_prompt(p, render)
        row = []
        for _ in range(cfg.paths):
            ids.append(store.add(prompt))
            row.append(PathTrace(prompt=prompt))
        traces.append(row)
    sample = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.sample_top_k, min_p=cfg.min_p)
    outs = store.advance(ids, SamplingParams(max_tokens=cfg.max_tokens, stop=tuple(cfg.stop), seed=seed, **sample))
    flat = [t for row in traces for t in row]
    question = [p for p in problems for _ in range(cfg.paths)]
    for t, c in zip(flat, outs):
        t.tokens, t.finished = c.num_tokens, True
        t.finish = "length" if c.finish_reason == "length" else ("stop" if c.stop else "eos")
        t.rounds = [{"text": c.text, "tokens": c.num_tokens}]
    cut = [n for n, t in enumerate(flat) if t.finish == "length"] if answer_tokens > 0 else []
    for n in cut:
        store.extend(ids[n], final_answer(question[n]))
    forced = store.advance([ids[n] for n in cut], SamplingParams(max_tokens=answer_tokens, stop=(THINK_END,),
                                                                  seed=seed + 99_999, **sample))
    for n, c in zip(cut, forced):
        flat[n].tokens += c.num_tokens
        flat[n].finish = "forced"
    for t, i in zip(flat, ids):
        t.text = store.text(i)[len(t.prompt):]
    return traces
