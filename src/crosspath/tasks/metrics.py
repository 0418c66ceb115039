"""Scores over paths and questions: pass@1, cons@N (majority vote), unbiased pass@k.

>>> pass_at_1([True, False, False, True])
0.5
>>> majority_vote(["3", " 4", "4 ", None, "3"])  # 2 votes each: the first seen wins
'3'
>>> round(pass_at_k(n=4, c=1, k=2), 4)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
0.5
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

Equiv = Callable[[str, str], bool]


def pass_at_1(correct: Sequence[bool]) -> float:
    """Mean correctness over the paths of one question (0.0 for no paths)."""
    return sum(map(bool, correct)) / len(correct) if correct else 0.0


def _vote_groups(answers: Sequence[str | None], equiv: Equiv | None) -> list[list[int]]:
    """Indices of answers grouped by (normalised, or `equiv`-merged) answer, in first-seen order."""
    groups: list[list[int]] = []
    reps: list[str] = []
    for i, answer in enumerate(answers):
        if answer is None or not str(answer).strip():
            continue  # no answer, no vote
        a = str(answer).strip()
        for g, rep in enumerate(reps):
            if a == rep or (equiv is not None and equiv(rep, a)):
                groups[g].append(i)
                break
        else:
            reps.append(a)
            groups.append([i])
    return groups


def _winner(groups: list[list[int]]) -> list[int] | None:
    # Most votes; on a tie the group whose first answer came earliest (groups are in that order).
    return max(groups, key=len) if groups else None


def majority_vote(answers: Sequence[str | None], equiv: Equiv | None = None) -> str | None:
    """The most frequent answer (stripped); ties go to the earliest first occurrence.

    None / empty answers do not vote. `equiv(a, b)` merges equivalent answers into the group of
    the first one seen (e.g. `crosspath.tasks.is_equivalent`), whose text is returned.

    >>> majority_vote(["0.5", "1/2", "3"], equiv=lambda a, b: {a, b} <= {"0.5", "1/2"})
    '0.5'
    """
    winner = _winner(_vote_groups(answers, equiv))
    return None if winner is None else str(answers[winner[0]]).strip()


def cons_at_n(answers: Sequence[str | None], correct: Sequence[bool],
              equiv: Equiv | None = None) -> tuple[str | None, bool]:
    """(majority answer, its correctness): correct if any path in the winning group was correct.

    >>> cons_at_n(["7", "8", "7"], [True, False, True])
    ('7', True)
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    winner = _winner(_vote_groups(answers, equiv))
    if winner is None:
        return None, False
    return str(answers[winner[0]]).strip(), any(bool(correct[i]) for i in winner)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms huge binomials.

    >>> pass_at_k(5, 0, 2), pass_at_k(5, 4, 2), round(pass_at_k(5, 2, 2), 4)  # 1 - 3/10
    (0.0, 1.0, 0.7)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-question result rows into the numbers of summary.json.

    Each row has `pass_at_1`, `cons_correct` and `paths` (each with `correct` and `tokens`).
    pass@k is reported for k = 1, 2, 4, ... up to the smallest path count of any row.

    >>> rows = [{"pass_at_1": 0.5, "cons_correct": True,
    ...          "paths": [{"correct": True, "tokens": 10}, {"correct": False, "tokens": 30}]}]
    >>> s = summarize(rows); s["pass_at_k"], s["tokens_per_question"]
    ({1: 0.5, 2: 1.0}, 40.0)
    """
    q = len(rows)
    if q == 0:
        return {"questions": 0, "pass_at_1": 0.0, "cons_at_n": 0.0, "pass_at_k": {},
                "tokens": 0, "tokens_per_question": 0.0}
    counts = []
    for r in rows:
        paths = r.get("paths") or []
        counts.append((len(paths), sum(bool(p.get("correct")) for p in paths)))
    tokens = sum(int(p.get("tokens", 0)) for r in rows for p in r.get("paths") or [])
    n_min = min(n for n, _ in counts)
    ks = [2**j for j in range(n_min.bit_length())] if n_min > 0 else []
    return {
        "questions": q,
        "pass_at_1": sum(float(r["pass_at_1"]) for r in rows) / q,
        "cons_at_n": sum(bool(r["cons_correct"]) for r in rows) / q,
        "pass_at_k": {k: sum(pass_at_k(n, c, k) for n, c in counts) / q for k in ks},
        "tokens": tokens,
        "tokens_per_question": tokens / q,
    }
