"""Aggregators: how the N paths of one question become one answer, on any method's paths.

Every aggregator reads only a question's path records in results.jsonl (`answer`, `correct`,
`tokens`, `steps`, and `confidence` when the run recorded token confidences), so all of them are
recomputed from a finished run without generating again (`crosspath compare` does).

    majority        plain vote; equivalent spellings are one answer (tasks.metrics.votes + SameAnswer)
    conf_weighted   DeepConf: V(a) = sum of the confidence scores of the paths that answered a
    top10_conf      DeepConf-low: keep the paths whose score >= the 90th percentile, then weighted vote
    top90_conf      DeepConf-high: keep the paths whose score >= the 10th percentile, then weighted vote
    longest         complexity-based consistency (Fu et al. 2023): vote among the ceil(N/2) paths
                    with the most reasoning steps (non-empty lines), ties by more tokens, then order

pass@k (unbiased, over all N paths) is a score of the paths, not a vote: see `tasks.metrics`.

The confidence score of a path is DeepConf's lowest group confidence (`lowest_group`: the smallest
mean token confidence over a sliding window of `window` tokens; the whole path when shorter), the
score its online mode thresholds; the other scores (`mean`, `bottom10`, `tail`) are stored too
(`score=` picks one). A path whose record has `vote: false` (DeepConf online: stopped, or a warm-up
path under the threshold) does not vote in any aggregator.

Ties: the group whose first answer came first (paths in order) wins, as in `metrics.votes`.
A group is correct when any path in it was graded correct (as cons@N).

>>> P = lambda a, c, s: {"answer": a, "correct": c, "confidence": {"lowest_group": s}}
>>> paths = [P("1/2", True, 1.0), P("3", False, 0.5), P("0.5", True, 0.2), P("3", False, 0.4)]
>>> same = lambda a, b: {a, b} <= {"0.5", "1/2"}
>>> aggregate("majority", paths, same)  # 2 votes each: "1/2" came first
('1/2', True)
>>> aggregate("conf_weighted", paths, same)  # 1.2 vs 0.9
('1/2', True)
>>> aggregate("top10_conf", paths, same)  # only the most confident path is left
('1/2', True)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..tasks.metrics import votes

AGGREGATORS = ("majority", "conf_weighted", "top10_conf", "top90_conf", "longest")
CONFIDENCE_AGGREGATORS = ("conf_weighted", "top10_conf", "top90_conf")
SCORE = "lowest_group"

Equiv = Callable[[str, str], bool]


# ---- token confidence (DeepConf, arXiv 2508.15260) -----------------------------------------------------
def window_means(conf: Sequence[float], window: int) -> list[float]:
    """Group confidences: the mean over every stride-1 window of `window` tokens; one value, the mean
    of all, for a path shorter than the window (none for an empty path).

    >>> window_means([1.0, 2.0, 3.0, 6.0], 2)
    [1.5, 2.5, 4.5]
    >>> window_means([1.0, 2.0], 4)
    [1.5]
    """
    if not conf:
        return []
    if len(conf) <= window:
        return [sum(conf) / len(conf)]
    run = sum(conf[:window])
    out = [run / window]
    for t in range(window, len(conf)):
        run += conf[t] - conf[t - window]
        out.append(run / window)
    return out


def confidence_stats(conf: Sequence[float] | None, window: int, ndigits: int = 4) -> dict[str, Any] | None:
    """A path's trace scores from its token confidences: mean (C_avg), lowest_group (C_least, the
    smallest window mean), bottom10 (mean of the lowest 10% of window means, at least one) and tail
    (mean of the last `window` tokens).

    >>> confidence_stats([1.0, 2.0, 3.0, 6.0], 2)
    {'mean': 3.0, 'lowest_group': 1.5, 'bottom10': 1.5, 'tail': 4.5, 'window': 2}
    """
    if conf is None:
        return None
    if not conf:
        return {"mean": 0.0, "lowest_group": 0.0, "bottom10": 0.0, "tail": 0.0, "window": window}
    groups = sorted(window_means(conf, window))
    low = groups[: max(1, int(0.1 * len(groups)))]
    tail = conf[-window:]
    r = lambda x: round(x, ndigits)  # noqa: E731
    return {"mean": r(sum(conf) / len(conf)), "lowest_group": r(groups[0]), "bottom10": r(sum(low) / len(low)),
            "tail": r(sum(tail) / len(tail)), "window": window}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 90)
    3.7
    """
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), 10)


# ---- the aggregators -------------------------------------------------------------------------------------
def _voters(paths: Sequence[dict]) -> list[dict]:
    return [p for p in paths if p.get("vote", True)]


def _score(p: dict, score: str) -> float | None:
    c = p.get("confidence")
    return None if not c else c.get(score)


def weighted_vote(paths: Sequence[dict], weights: Sequence[float], equiv: Equiv | None) -> tuple[str | None, bool]:
    """The answer whose paths' weights sum highest (groups and ties as `metrics.votes`)."""
    groups = votes([p.get("answer") for p in paths], equiv)
    if not groups:
        return None, False
    best = max(groups, key=lambda g: sum(weights[i] for i in g[1]))  # max keeps the first of equal sums
    return best[0], any(bool(paths[i].get("correct")) for i in best[1])


def aggregate(name: str, paths: Sequence[dict], equiv: Equiv | None = None, score: str = SCORE,
              ) -> tuple[str | None, bool] | None:
    """(answer, correct) of aggregator `name` over one question's path records; None when it cannot
    apply (a confidence aggregator on paths without recorded confidence)."""
    paths = _voters(paths)
    if name == "majority":
        return weighted_vote(paths, [1.0] * len(paths), equiv)
    if name == "longest":
        k = math.ceil(len(paths) / 2)
        order = sorted(range(len(paths)), key=lambda i: (-int(paths[i].get("steps", 0)),
                                                          -int(paths[i].get("tokens", 0)), i))
        kept = [paths[i] for i in sorted(order[:k])]
        return weighted_vote(kept, [1.0] * len(kept), equiv)
    if name in CONFIDENCE_AGGREGATORS:
        scores = [_score(p, score) for p in paths]
        if not paths or any(s is None for s in scores):
            return None
        if name != "conf_weighted":
            eta = 10 if name == "top10_conf" else 90  # percent of the paths kept
            bar = percentile(scores, 100 - eta)
            kept = [i for i, s in enumerate(scores) if s >= bar]
            paths, scores = [paths[i] for i in kept], [scores[i] for i in kept]
        return weighted_vote(paths, scores, equiv)
    raise ValueError(f"unknown aggregator {name!r}; choose one of {AGGREGATORS}")


def all_aggregates(paths: Sequence[dict], equiv: Equiv | None = None) -> dict[str, dict[str, Any]]:
    """{aggregator: {"answer", "correct"}} for every aggregator that applies to these paths."""
    out = {}
    for name in AGGREGATORS:
        got = aggregate(name, paths, equiv)
        if got is not None:
            out[name] = {"answer": got[0], "correct": bool(got[1])}
    return out


def reasoning_steps(text: str) -> int:
    """Complexity of a chain: its non-empty lines (Fu et al. write one reasoning step per line).

    >>> reasoning_steps("a\\n\\nb\\n  \\nc")
    3
    """
    return sum(1 for line in text.splitlines() if line.strip())


def recompute(rows: Sequence[dict]) -> dict[str, float]:
    """Every aggregator's accuracy over finished result rows (graded paths only), from results.jsonl
    alone; an aggregator that does not apply to some row is left out."""
    from ..tasks import SameAnswer

    totals: dict[str, list[int]] = {}
    for row in rows:
        paths = [p for p in row.get("paths", []) if p.get("graded", True)]
        for name, got in all_aggregates(paths, SameAnswer(row)).items():
            totals.setdefault(name, []).append(int(got["correct"]))
    return {name: sum(v) / len(v) for name, v in totals.items() if len(v) == len(rows)}
