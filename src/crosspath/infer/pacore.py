"""PaCoRe: Parallel Coordinated Reasoning (arXiv 2601.05593), as rounds of message passing.

    round 0:  K_0 paths from the question (the plain prompt)
    round r:  K_r paths from the question + the messages of round r-1's paths (`prompts.pacore_prompt`)
    graded:   the last round's paths (pass@1, majority and every aggregator over them)

K = `paths_per_round` (e.g. 8 4). The paper's configurations list the proposer rounds and append a
final round of 1 ([32, 4] -> 32, 4, 1); here the list is every round, final one included, so
`--paths-per-round 8 4 1` is the paper's shape and `8 4` votes over the 4 of the last round.

message   the compact conclusion of a path (`message`): the text after its last </think>; for a
          model without thinking tags, its final answer line (the last line holding \\boxed, else its
          last non-empty line); cut to its last `message_chars` characters. Empty messages are
          dropped; the round's messages come in a fixed shuffled order (seeded), as the reference
          shuffles them against ordering bias.

Every path is sampled as in independent sampling (max_tokens, then a forced answer when cut), so a
question's tokens are sum_r K_r * path budget at most. Earlier rounds' paths are in results.jsonl
with `graded: false` and their `round`; their tokens count in the question's tokens.

`rounds_of_messages` is the loop; Mixture-of-Agents (moa.py) runs it with its own prompt and message.
"""

from __future__ import annotations

import random
from typing import Callable

from ..tasks.problem import Problem
from .independent import THINK_END, _split, question_prompt, sample
from .paths import PathStore, PathTrace
from .prompts import pacore_prompt


def final_answer_line(text: str) -> str:
    r"""The last line that holds \boxed, else the last non-empty line ("" for none).

    >>> final_answer_line("x = 2\n\\boxed{2}\nDone.")
    '\\boxed{2}'
    >>> final_answer_line("a\nb\n\n")
    'b'
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    boxed = [ln for ln in lines if "\\boxed" in ln]
    return (boxed or lines or [""])[-1]


def message(text: str, max_chars: int) -> str:
    r"""A path's message: the text after its last </think>, or its final answer line when it has no
    thinking tag; at most its last `max_chars` characters.

    >>> message("<think>long work</think>The answer is \\boxed{4}.", 100)
    'The answer is \\boxed{4}.'
    >>> message("step 1\nstep 2\n\\boxed{7}", 100), message("abcdef", 3)
    ('\\boxed{7}', 'def')
    """
    if THINK_END in text:
        m = text[text.rfind(THINK_END) + len(THINK_END):].strip()
    else:
        m = final_answer_line(text)
    return m[-max_chars:] if max_chars and len(m) > max_chars else m


def rounds_of_messages(problems: list[Problem], store: PathStore, cfg, render, seed: int, sizes: list[int],
                       message_of: Callable[[PathTrace], str],
                       prompt_of: Callable[[Problem, list[str]], str]) -> list[list[PathTrace]]:
    """Round r samples sizes[r] paths per question from `prompt_of(problem, messages of round r-1)`
    (round 0: the plain question prompt). Returns per question every path of every round, the last
    round's graded and the others marked `graded: false`; each path records its `round`."""
    out: list[list[PathTrace]] = [[] for _ in problems]
    messages: list[list[str]] = [[] for _ in problems]
    for r, k in enumerate(sizes):
        prompts = [question_prompt(p, render) if r == 0 else render(prompt_of(p, m))
                   for p, m in zip(problems, messages)]
        traces = _split(sample(store, prompts, problems, [k] * len(problems), cfg, seed + 1_000 * r,
                               cfg.answer_tokens), [k] * len(problems))
        rng = random.Random(seed + r)
        for q, round_traces in enumerate(traces):
            for t in round_traces:
                t.extra["round"] = r
                t.graded = r == len(sizes) - 1
            out[q] += round_traces
            said = [m for m in map(message_of, round_traces) if m]
            rng.shuffle(said)
            messages[q] = said
    return out


def solve(problems: list[Problem], store: PathStore, cfg, render, seed: int) -> list[list[PathTrace]]:
    """PaCoRe over a batch of questions: rounds of `cfg.paths_per_round` paths, messages between them."""
    return rounds_of_messages(problems, store, cfg, render, seed, rounds(cfg),
                              lambda t: message(t.text, cfg.message_chars), pacore_prompt)


def rounds(cfg) -> list[int]:
    """Paths per round: --paths-per-round, else the paper's shape at N = --paths: [N, 1]."""
    return list(cfg.paths_per_round) if cfg.paths_per_round else [cfg.paths, 1]
