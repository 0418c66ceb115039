"""Reasoning-gym answers, scored so that nothing the model wrote can run.

    rg_score(problem.meta["rg"], "7", timeout=5.0)  # reasoning-gym's own score, in [0, 1]

reasoning-gym's `score_answer` is the judge of `rg:` tasks, but several scorers `eval` the answer
(string_insertion, spiral_matrix, binary_matrix, n_queens) or hand it to `sympy.parse_expr`, which
evaluates Python too (countdown, puzzle24, polynomial_multiplication, simple_integration,
intermediate_integration). Two walls stand between an answer and those calls:

1. Shape, checked here in the calling process (`safe_shape`). For those generators an answer must
   have the shape a fully correct answer can have, or it scores 0 without reaching the scorer:
   the plain text forms (letters; digits; `_`/`Q` boards) for the `eval` scorers, whose `eval`
   only ever grants partial credit; arithmetic over digits, or over the gold answer's names and
   a few math functions, for the `parse_expr` scorers, with `**` only before a small constant
   exponent (no `9**9**8`). None of these shapes can call anything.
2. Isolation, for every generator (verifier.py): the scorer runs in a sandboxed, disposable child
   of a worker process and is killed after `timeout` seconds (`TimedOut`).

>>> safe_shape({"name": "countdown", "entry": {"answer": "6*(98 - 54)"}}, "98 - 54 + 6")
True
>>> safe_shape({"name": "countdown", "entry": {"answer": "6*(98 - 54)"}}, "__import__('os')")
False
>>> safe_shape({"name": "polynomial_multiplication", "entry": {"answer": "x**2 + 1"}}, "x**9**9")
False
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable

from crosspath.tasks.verifier import WorkerPool

# sympy names an integral may use besides the gold answer's own (all pure math functions).
MATH_NAMES = frozenset("sin cos tan cot sec csc asin acos atan acot sinh cosh tanh exp log ln sqrt "
                       "pi E Abs".split())
_PLAIN = {  # eval scorers: the plain form a correct answer has (their eval path gives < 1 point)
    "string_insertion": re.compile(r"[A-Za-z]+"),
    "spiral_matrix": re.compile(r"[-\d\s]+"),
    "binary_matrix": re.compile(r"[-\d\s]+"),
    "n_queens": re.compile(r"[_Q\s]+"),
}
_ARITHMETIC = ("countdown", "puzzle24")  # parse_expr over + - * / ( ) and integers
_SYMBOLIC = ("polynomial_multiplication", "simple_integration", "intermediate_integration")
_EXPRESSION_CHARS = re.compile(r"[A-Za-z0-9\s+\-*/().]*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_POWER = re.compile(r"\*\*(?:\(-?\d{1,2}(?:[./]\d{1,2})?\)|-?\d{1,2}(?:\.\d{1,2})?)(?![\d.]|\*\*)")


def safe_shape(rg: dict, answer: str) -> bool:
    """False when `answer` must not reach this generator's scorer (see the module docstring)."""
    name = rg["name"]
    entry = rg.get("entry") or {}
    if name == "composite":  # a mix of generators: the entry names its own
        name = (entry.get("metadata") or {}).get("source_dataset", name)
    if name in _PLAIN:
        return _PLAIN[name].fullmatch(answer) is not None
    if name in _ARITHMETIC:
        return _expression_shape(answer, names=frozenset(), power=False)
    if name in _SYMBOLIC:
        gold = str(entry.get("answer") or "")
        return _expression_shape(answer, names=frozenset(_NAME.findall(gold)) | MATH_NAMES | {"C"}, power=True)
    return True  # the scorer only compares strings or numbers; the sandbox still holds it


def _expression_shape(answer: str, names: frozenset[str], power: bool) -> bool:
    """Arithmetic over numbers and `names` (calls only of those names), `**` only with a small exponent.

    >>> _expression_shape("2*sin(x)**2 + x**(3/2)", frozenset({"sin", "x"}), power=True)
    True
    >>> [_expression_shape(a, frozenset({"x"}), power=True) for a in ("x.y", "x**x", "x**2**3", "x**999")]
    [False, False, False, False]
    """
    if not _EXPRESSION_CHARS.fullmatch(answer):
        return False  # no quotes, underscores, brackets, commas, `^`, `!`, ...
    if any(n not in names for n in _NAME.findall(answer)):
        return False
    if re.search(r"(?<!\d)\.|\.(?!\d)", answer):
        return False  # a dot only inside a number: no attribute access
    compact = re.sub(r"\s+", "", answer)
    stars = compact.count("**")
    return stars == 0 if not power else stars == len(_POWER.findall(compact))


def rg_score(rg: dict, answer: str, timeout: float) -> float:
    """reasoning-gym's score for `answer` (0.0 for a refused shape); TimedOut past `timeout` s."""
    if not safe_shape(rg, answer):
        return 0.0
    score = _pool.call({"rg": rg, "answer": answer}, timeout)
    return float(score) if isinstance(score, (int, float)) else 0.0


# --- in the worker process ----------------------------------------------------------------------


def score_request(req: dict) -> Callable[[], float]:
    """Worker handler: builds the entry from trusted fields; the returned check reads the answer."""
    rg, answer = req["rg"], req["answer"]
    dataset = _rg_dataset(rg["name"], json.dumps(rg.get("config", {}), sort_keys=True))
    entry = rg["entry"]
    if "index" in rg:
        fresh = dataset[rg["index"]]
        if fresh.get("question") == entry.get("question"):
            entry = fresh  # the original objects (tuples, sets) some scorers rely on
    return lambda: _score(dataset, entry, answer)


def _score(dataset: Any, entry: dict, answer: str) -> float:
    try:
        return float(dataset.score_answer(answer, entry))
    except Exception:  # a scorer that chokes on a malformed answer: wrong, not a crash
        return 0.0


@functools.lru_cache(maxsize=64)
def _rg_dataset(name: str, config_json: str) -> Any:
    """The dataset, its scorer run once on its own first gold answer, so any module the scorer
    imports lazily is loaded here and not in the sandbox (which may not be able to read it)."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(name, **json.loads(config_json))
    if len(dataset):
        _score(dataset, dataset[0], dataset[0].get("answer"))
    return dataset


def warm() -> None:
    """Worker start: the slow import."""
    import reasoning_gym  # noqa: F401


_pool = WorkerPool("crosspath.tasks.rg_scoring:score_request", warm="crosspath.tasks.rg_scoring:warm")
