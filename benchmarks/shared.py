"""What the LeaP benchmark scripts share: the LeaP shape options (each script passes its defaults),
the header every output starts with, the questions every configuration has finished, and the
exact McNemar test of paired comparisons."""

from __future__ import annotations

import math
import shlex
import sys

from crosspath.envinfo import machine


def add_leap_options(ap, *, model: str, paths: int, top_k: int, rounds: int, round_tokens: int,
                     summary_tokens: int, answer_tokens: int) -> None:
    """--model, --paths (N), --top-k (k peers), --rounds (R), --round-tokens (T), --summary-tokens (S),
    --answer-tokens (A), with the script's defaults."""
    ap.add_argument("--model", default=model)
    ap.add_argument("--paths", type=int, default=paths)
    ap.add_argument("--top-k", type=int, default=top_k)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--round-tokens", type=int, default=round_tokens)
    ap.add_argument("--summary-tokens", type=int, default=summary_tokens)
    ap.add_argument("--answer-tokens", type=int, default=answer_tokens)


def set_threads(n: int) -> None:
    """torch threads for the run (0: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


def header(settings: str) -> str:
    """The lines an output starts with: the exact command, the machine and the settings."""
    return f"command: python {shlex.join(sys.argv)}\nmachine: {machine()}\nsettings: {settings}"


def finished_by_all(runs: dict[str, list[dict] | None]) -> set[str]:
    """Ids of the questions every configuration that has run (non-empty results) has finished."""
    done = [{r["id"] for r in rows} for rows in runs.values() if rows]
    return set.intersection(*done) if done else set()


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar (sign) test on the discordant counts.

    >>> mcnemar_p(0, 0), round(mcnemar_p(8, 1), 4)
    (1.0, 0.0391)
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
