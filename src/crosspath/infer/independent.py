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
from .prompts import final_answer, question_text

THINK_END = "</think>"


def question_prompt(problem: Problem, render, style: str = "plain") -> str:
    """The prompt every path of `problem` starts from (with its options for multiple choice); style:
    prompts.QUESTION_PROMPTS (plain step by step, or a training prompt: marker / think)."""
    return render(question_text(problem, style))


def solve(problems: list[Problem], store: PathStore, cfg, render, seed: int,
          answer_tokens: int = 0, style: str = "plain") -> list[list[PathTrace]]:
    """Run N independent paths for each problem (all problems' paths in one generator call) from the
    `style` prompt; paths cut at `cfg.max_tokens` get a forced answer of at most `answer_tokens` (0: none)."""
    flat = sample(store, [question_prompt(p, render, style) for p in problems], problems,
                  [cfg.paths] * len(problems), cfg, seed, answer_tokens)
    return _split(flat, [cfg.paths] * len(problems))


def _split(flat: list, sizes: list[int]) -> list[list]:
    out, k = [], 0
    for n in sizes:
        out.append(flat[k: k + n])
        k += n
    return out


def sample(store: PathStore, prompts: list[str], problems: list[Problem], counts: list[int], cfg, seed: int,
           answer_tokens: int = 0) -> list[PathTrace]:
    """`counts[j]` paths from `prompts[j]` (question `problems[j]`), in one call of at most
    `cfg.max_tokens` tokens; those cut there get the forced answer (<= `answer_tokens`). Returns the
    traces, prompt-major (with their token confidences when the store records them)."""
    traces, ids, question = [], [], []
    for prompt, p, n in zip(prompts, problems, counts):
        for _ in range(n):
            ids.append(store.add(prompt))
            traces.append(PathTrace(prompt=prompt))
            question.append(p)
    sample = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.sample_top_k, min_p=cfg.min_p)
    outs = store.advance(ids, SamplingParams(max_tokens=cfg.max_tokens, stop=tuple(cfg.stop), seed=seed, **sample))
    for t, c in zip(traces, outs):
        t.tokens, t.finished = c.num_tokens, True
        t.finish = "length" if c.finish_reason == "length" else ("stop" if c.stop else "eos")
        t.rounds = [{"text": c.text, "tokens": c.num_tokens}]
    cut = [n for n, t in enumerate(traces) if t.finish == "length"] if answer_tokens > 0 else []
    force_answers(store, [ids[n] for n in cut], [traces[n] for n in cut], [question[n] for n in cut],
                  answer_tokens, seed, sample)
    for t, i in zip(traces, ids):
        t.text = store.text(i)[len(t.prompt):]
        t.confidence = store.confidences(i)
    return traces


def force_answers(store: PathStore, ids: list[int], traces: list[PathTrace], problems: list[Problem],
                  answer_tokens: int, seed: int, sample: dict) -> None:
    """Append the final-answer lead-in (ending in \\boxed{) to each path; it writes <= answer_tokens."""
    for i, p in zip(ids, problems):
        store.extend(i, final_answer(p))
    forced = store.advance(ids, SamplingParams(max_tokens=answer_tokens, stop=(THINK_END,), seed=seed + 99_999,
                                               **sample))
    for t, c in zip(traces, forced):
        t.tokens += c.num_tokens
        t.finish = "forced"
