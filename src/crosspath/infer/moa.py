"""Mixture-of-Agents (arXiv 2406.04692): layers of agents, each reading all the previous layer's answers.

    layer 0:            N proposers answer the question (the plain prompt)
    layers 1..L-2:      N agents each read every answer of the layer before (`prompts.moa_prompt`)
    layer L-1:          one aggregator reads them and writes the final answer (graded)

L = `moa_layers` (default 2: proposers, then the aggregator, the paper's MoA-Lite shape; the paper's
MoA is 3). The paper mixes six different models per layer; here every agent is the run's model,
sampled independently (Self-MoA). An answer is handed on whole (its text after the prompt), cut to
its last `message_chars` characters; the reference code passes whole responses.

This is PaCoRe's loop (`pacore.rounds_of_messages`) with MoA's aggregate-and-synthesize prompt and
whole answers as messages; earlier layers are in results.jsonl with `graded: false`.
"""

from __future__ import annotations

from ..tasks.problem import Problem
from .pacore import rounds_of_messages
from .paths import PathStore, PathTrace
from .prompts import moa_prompt


def layers(cfg) -> list[int]:
    """Agents per layer: N for all but the last, 1 aggregator last.

    >>> from types import SimpleNamespace as C
    >>> layers(C(paths=4, moa_layers=3))
    [4, 4, 1]
    """
    return [cfg.paths] * (cfg.moa_layers - 1) + [1]


def answer_message(text: str, max_chars: int) -> str:
    """A whole answer, cut to its last `max_chars` characters (where its conclusion is)."""
    text = text.strip()
    return text[-max_chars:] if max_chars and len(text) > max_chars else text


def solve(problems: list[Problem], store: PathStore, cfg, render, seed: int) -> list[list[PathTrace]]:
    return rounds_of_messages(problems, store, cfg, render, seed, layers(cfg),
                              lambda t: answer_message(t.text, cfg.message_chars), moa_prompt)
