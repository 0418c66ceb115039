"""Scores over paths and questions: pass@1, cons@N (majority vote), unbiased pass@k, and the same
scores under the lighteval / lm-evaluation-harness key names with standard errors.

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


def votes(answers: Sequence[str | None], equiv: Equiv | None = None) -> list[tuple[str, list[int]]]:
    """The majority vote, as [(answer, indices of the paths that gave it)], most votes first.

    The one vote of the project: cons@N in runs, the server's consensus and the distilled
    students' ensemble all use it. Answers are stripped; None / empty answers do not vote.
    Each answer joins the first group (in first-seen order) whose first answer is equal to it or,
    with `equiv`, equivalent to it (`crosspath.tasks.grading.SameAnswer` compares by meaning);
    the group is named by that first answer. Ties go to the group whose first answer came
    earliest (the sort is stable), so the caller decides tie-breaks by the order of `answers`.

    >>> votes(["0.5", "3", "1/2", "3", None], equiv=lambda a, b: {a, b} <= {"0.5", "1/2"})
    [('0.5', [0, 2]), ('3', [1, 3])]
    """
    groups: list[tuple[str, list[int]]] = []
    for i, answer in enumerate(answers):
        if answer is None or not str(answer).strip():
            continue  # no answer, no vote
        a = str(answer).strip()
        for rep, members in groups:
            if a == rep or (equiv is not None and equiv(rep, a)):
                members.append(i)
                break
        else:
            groups.append((a, [i]))
    return sorted(groups, key=lambda g: -len(g[1]))


def majority_vote(answers: Sequence[str | None], equiv: Equiv | None = None) -> str | None:
    """The answer with the most votes (see `votes` for grouping and ties); None if nobody answered.

    >>> majority_vote(["3", "1/2", "0.5"], equiv=lambda a, b: {a, b} <= {"0.5", "1/2"})
    '1/2'
    """
    ranked = votes(answers, equiv)
    return ranked[0][0] if ranked else None


def cons_at_n(answers: Sequence[str | None], correct: Sequence[bool],
              equiv: Equiv | None = None) -> tuple[str | None, bool]:
    """(majority answer, its correctness): correct if any path in the winning group was correct.

    >>> cons_at_n(["7", "8", "7"], [True, False, True])
    ('7', True)
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    ranked = votes(answers, equiv)
    if not ranked:
        return None, False
    answer, paths = ranked[0]
    return answer, any(bool(correct[i]) for i in paths)


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


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean, sqrt(sample variance / n) (lm-evaluation-harness `mean_stderr`);
    None for fewer than two values.

    >>> round(mean_stderr([1, 0, 1, 0]), 4)  # sqrt((1/3) / 4)
    0.2887
    """
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    return (sum((v - m) ** 2 for v in values) / (n - 1) / n) ** 0.5


def ecosystem_keys(per_question_pass1: Sequence[float], per_question_maj: Sequence[bool], n: int) -> dict[str, Any]:
    """The same scores under the names lighteval and lm-evaluation-harness tables use, each with a
    `_stderr` (standard error over questions): `pass@k:k=1&n=N` (mean correctness of N samples),
    `avg@n:n=N` (the same mean, lighteval's other name), `maj@N` (majority vote of N).

    >>> ecosystem_keys([1.0, 0.5], [True, False], 2)["maj@2"]
    0.5
    """
    q = max(len(per_question_pass1), 1)
    p1 = sum(per_question_pass1) / q
    maj = [float(bool(x)) for x in per_question_maj]
    out = {f"pass@k:k=1&n={n}": p1, f"pass@k:k=1&n={n}_stderr": mean_stderr(per_question_pass1),
           f"avg@n:n={n}": p1, f"avg@n:n={n}_stderr": mean_stderr(per_question_pass1),
           f"maj@{n}": sum(maj) / q, f"maj@{n}_stderr": mean_stderr(maj)}
    return out


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-question result rows into the numbers of summary.json.

    Each row has `pass_at_1`, `cons_correct` and `paths` (each with `correct` and `tokens`), and
    may have `grading_timeouts` (checks that ran out of time; summed), `aggregates` ({aggregator:
    {"correct"}}; their accuracies go under "aggregates") and `tokens` (all the question's generated
    tokens, when some paths are not graded, e.g. PaCoRe's earlier rounds; default: the paths' sum).
    Paths with `graded: false` count for tokens only. pass@k is reported for k = 1, 2, 4, ... up to
    the smallest graded path count of any row; the ecosystem keys (`ecosystem_keys`) at N = that count.

    >>> rows = [{"pass_at_1": 0.5, "cons_correct": True,
    ...          "paths": [{"correct": True, "tokens": 10}, {"correct": False, "tokens": 30}]}]
    >>> s = summarize(rows); s["pass_at_k"], s["tokens_per_question"], s["maj@2"]
    ({1: 0.5, 2: 1.0}, 40.0, 1.0)
    """
    q = len(rows)
    if q == 0:
        return {"questions": 0, "pass_at_1": 0.0, "cons_at_n": 0.0, "pass_at_k": {},
                "tokens": 0, "tokens_per_question": 0.0, "grading_timeouts": 0}
    counts = []
    for r in rows:
        paths = [p for p in r.get("paths") or [] if p.get("graded", True)]
        counts.append((len(paths), sum(bool(p.get("correct")) for p in paths)))
    tokens = sum(int(r["tokens"]) if "tokens" in r else sum(int(p.get("tokens", 0)) for p in r.get("paths") or [])
                 for r in rows)
    n_min = min(n for n, _ in counts)
    ks = [2**j for j in range(n_min.bit_length())] if n_min > 0 else []
    aggregates: dict[str, list[int]] = {}
    for r in rows:
        for name, got in (r.get("aggregates") or {}).items():
            aggregates.setdefault(name, []).append(int(bool(got.get("correct"))))
    return {
        "questions": q,
        "pass_at_1": sum(float(r["pass_at_1"]) for r in rows) / q,
        "cons_at_n": sum(bool(r["cons_correct"]) for r in rows) / q,
        "pass_at_k": {k: sum(pass_at_k(n, c, k) for n, c in counts) / q for k in ks},
        "aggregates": {name: sum(v) / q for name, v in aggregates.items() if len(v) == q},
        "tokens": tokens,
        "tokens_per_question": tokens / q,
        "grading_timeouts": sum(int(r.get("grading_timeouts", 0)) for r in rows),
        **ecosystem_keys([float(r["pass_at_1"]) for r in rows], [r["cons_correct"] for r in rows], n_min),
    }
