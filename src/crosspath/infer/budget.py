"""Per-path token budgets: what makes runs of different methods comparable.

A path's budget is the most tokens it can generate (reasoning, summaries and forced answer):

    leap         rounds * round_tokens + summaries * summary_tokens + answer_tokens
                 summaries = rounds - 1 (one after every round but the last; with comm_rounds only
                 those rounds; LeaP-T at most one per round but the last); with token_budget the
                 reasoning and summaries stop at token_budget, which a summary may pass by at most
                 summary_tokens. The controls (--leap-control) and --prompt plain keep this budget:
                 no-summaries gives a summary's tokens to the next round instead
    independent  max_tokens + answer_tokens (a path cut at max_tokens is forced to answer)
    greedy       as independent, one path

Rules the runner applies before a run starts (`resolve`):

    max_tokens unset   independent/greedy get the budget LeaP has with the same options:
                       max_tokens = leap budget - answer_tokens
    --match RUN        independent/greedy take the per-path budget and answer_tokens of the run in
                       directory RUN (any method): max_tokens = its budget - its answer_tokens

>>> from types import SimpleNamespace as C
>>> leap = C(method="leap", rounds=3, round_tokens=512, summary_tokens=64, answer_tokens=64,
...          comm_rounds=None, token_budget=None, leap_t=False)
>>> path_budget(leap)  # 3*512 + 2*64 + 64
1728
>>> path_budget(C(method="independent", max_tokens=1664, answer_tokens=64))
1728
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml


def leap_budget(cfg) -> int:
    """Most tokens one LeaP path can generate under `cfg` (a RunConfig or any object with its fields)."""
    rounds = cfg.rounds
    comm = getattr(cfg, "comm_rounds", None)
    if getattr(cfg, "leap_t", False) or comm is None:
        summaries = max(rounds - 1, 0)
    else:
        summaries = len({r for r in comm if 0 <= r < rounds - 1})
    reasoning = rounds * cfg.round_tokens + summaries * cfg.summary_tokens
    budget = getattr(cfg, "token_budget", None)
    if budget is not None:
        past = summaries and getattr(cfg, "leap_control", None) != "no-summaries"  # a summary may pass the cap
        reasoning = min(reasoning, budget + (cfg.summary_tokens if past else 0))
    return reasoning + cfg.answer_tokens


def path_budget(cfg) -> int:
    """Most tokens one path of this run can generate (see the module docstring)."""
    if cfg.method == "leap":
        return leap_budget(cfg)
    max_tokens = cfg.max_tokens if cfg.max_tokens is not None else leap_budget(cfg) - cfg.answer_tokens
    return max_tokens + cfg.answer_tokens


def run_config(run_dir: str | Path) -> Any:
    """The options of a finished (or running) run directory, from its config.yaml or summary.json."""
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists():
        data = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    elif (run_dir / "summary.json").exists():
        data = json.loads((run_dir / "summary.json").read_text()).get("config", {})
    else:
        raise FileNotFoundError(f"{run_dir}: no config.yaml or summary.json (is it a crosspath run directory?)")
    missing = {"method", "answer_tokens"} - set(data)
    if missing:
        raise ValueError(f"{run_dir}: its configuration lacks {sorted(missing)}")
    return SimpleNamespace(**data)


def resolve(cfg, log=print) -> None:
    """Fill in independent/greedy `max_tokens` (in place): from --match RUN, else LeaP's budget."""
    match = getattr(cfg, "match", None)
    if cfg.method == "leap":
        if match:
            raise ValueError("--match gives independent or greedy runs the budget of another run; a leap run's "
                             "budget comes from --rounds, --round-tokens, --summary-tokens and --answer-tokens")
        return
    if match:
        if cfg.max_tokens is not None:
            raise ValueError("--match sets max_tokens from the other run; do not give --max-tokens too")
        other = run_config(match)
        budget = path_budget(other)
        cfg.answer_tokens = other.answer_tokens
        cfg.max_tokens = budget - cfg.answer_tokens
        log(f"--match {match}: per-path budget {budget} tokens ({other.method}) -> max_tokens {cfg.max_tokens} "
            f"+ answer_tokens {cfg.answer_tokens}")
    elif cfg.max_tokens is None:
        cfg.max_tokens = leap_budget(cfg) - cfg.answer_tokens
    if cfg.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {cfg.max_tokens}")


def budget_warning(summaries: list[dict]) -> str | None:
    """A warning line when the runs' per-path budgets differ (None when they agree)."""
    budgets = []
    for s in summaries:
        b = s.get("path_budget")
        if b is None and s.get("config"):
            try:
                b = path_budget(SimpleNamespace(**s["config"]))
            except (AttributeError, TypeError):
                b = None
        budgets.append(b)
    known = {b for b in budgets if b is not None}
    if len(known) <= 1:
        return None
    listed = ", ".join(f"{s.get('method', '?')} {b if b is not None else '?'}" for s, b in zip(summaries, budgets))
    return (f"warning: the per-path token budgets differ ({listed}): accuracies are not at equal budget; "
            "rerun the baseline with `crosspath run --method independent --match RUN`")
