"""How an answer is judged: extraction from free text, then a time-bounded equivalence check.

>>> extract_answer("so the sum is \\\\boxed{\\\\frac{1}{2}}.")
'\\\\frac{1}{2}'
>>> is_equivalent("0.5", "\\\\frac{1}{2}")
True

Extraction is linear in the text length (one pass per rule, no rescans). Equivalence uses
math-verify (gold parsed first and passed first to `verify`) with its signal-based timeouts
switched off; the check runs in an isolated worker process instead (verifier.py), killed after
`timeout` seconds. Reasoning-gym answers go to reasoning-gym's own scorer in the same kind of
worker, behind a shape check (rg_scoring.py). Model output is only ever parsed, never executed.
Equal strings and numbers skip the worker. An answer longer than MAX_ANSWER_CHARS (and than twice
the gold answer) is wrong without being read; one whose check runs out of time is wrong and
reported as such (`judge(...).timed_out`, counted as `grading_timeouts` by the runner).
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import Callable, NamedTuple

from crosspath.tasks.problem import Problem
from crosspath.tasks.rg_scoring import rg_score
from crosspath.tasks.verifier import TimedOut, WorkerPool

RG_CORRECT = 0.99  # a reasoning-gym score above this counts as correct (scores are in [0, 1])
CHECK_TIMEOUT = 5.0  # seconds one answer's check may take (math-verify or a reasoning-gym scorer)
VOTE_TIMEOUT = 2.0  # seconds one comparison of two answers may take in a majority vote
MAX_ANSWER_CHARS = 1000  # a longer answer (unless the gold is half as long) is wrong unread
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?![\w])")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_BRACE_RE = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")
_TAG_RE = re.compile(r"<(/?)answer>", re.IGNORECASE)
_LETTER_RE = r"\(?([A-Z])\)?"


# --- extraction --------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...} with balanced braces (None if there is none).

    One pass over the braces with a stack; each open brace remembers where its box content starts
    (None for a plain brace). The box that opened last among those that close wins, so a cut-off
    box at the end of a truncated output does not hide an earlier complete one.

    >>> last_boxed("a \\\\boxed{1} b \\\\boxed{\\\\frac{1}{\\\\sqrt{2}}} c \\\\boxed{cut")
    '\\\\frac{1}{\\\\sqrt{2}}'
    """
    stack: list[int | None] = []
    best: tuple[int, int] | None = None  # (content start, content end) of the winning box
    for m in _BRACE_RE.finditer(text):
        if m.group() == "}":
            start = stack.pop() if stack else None
            if start is not None and (best is None or start > best[0]):
                best = (start, m.start())
        else:
            stack.append(None if m.group() == "{" else m.end())
    return None if best is None else text[best[0]:best[1]].strip()


def count_markers(text: str, marker: str = "####") -> int:
    """How often `marker` occurs (the M3PO/HRPO reward is 0 when the answer marker repeats).

    >>> count_markers("#### 3 and again #### 4")
    2
    """
    return text.count(marker)


def extract_answer(text: str, choices: list[str] | None = None) -> str | None:
    """The final answer in a model's output, or None.

    Preference: last \\boxed{} / \\fbox{}; last <answer>...</answer>; the first line after the
    last `####`; "answer is X" / "Answer: X"; for multiple choice a choice letter; else the last
    number. With `choices`, an answer equal to a choice's text becomes its letter.

    >>> extract_answer("3 + 4 = 7\\n#### 7"), extract_answer("The answer is 1,000.")
    ('7', '1000')
    >>> extract_answer("x=2, y=41"), extract_answer("I pick (B).", choices=["12", "42"])
    ('41', 'B')
    >>> extract_answer("answer: 42", choices=["12", "42"])  # a choice's text -> its letter
    'B'
    """
    if not text:
        return None
    for rule in (last_boxed, _last_tag, _after_marker, _after_answer_is):
        found = rule(text)
        if found is not None and _clean(found):
            answer = _clean(found)
            return (_to_letter(answer, choices) or answer) if choices else answer
    if choices:
        letter = _last_choice_letter(text, len(choices))
        if letter:
            return letter
    numbers = _NUMBER_RE.findall(text)
    if not numbers:
        return None
    answer = _clean(numbers[-1])
    return (_to_letter(answer, choices) or answer) if choices else answer


def _last_tag(text: str) -> str | None:
    """Content of the last <answer>...</answer> (a close pairs with the latest open before it)."""
    last, open_end = None, None
    for m in _TAG_RE.finditer(text):
        if not m.group(1):
            open_end = m.end()
        elif open_end is not None:
            last, open_end = text[open_end:m.start()], None
    return last


def _after_marker(text: str) -> str | None:
    if "####" not in text:
        return None
    lines = [ln.strip() for ln in text.rsplit("####", 1)[1].splitlines() if ln.strip()]
    if not lines:
        return None
    return _lead_number(lines[0]) or lines[0]


def _after_answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    lines = [ln.strip() for ln in rest.splitlines()] or [""]
    line = lines[0] or next((ln for ln in lines if ln), "")
    math = re.match(r"\$(?:\\.|[^$\\])*\$", line)  # "$\frac{1}{2}$. I hope it is correct."
    if math:
        return math.group(0)
    line = re.split(r"[.!](?:\s|$)", line, maxsplit=1)[0]  # in prose "5!" is an exclamation
    return _lead_number(line) or line


def _lead_number(line: str) -> str | None:
    """The number a line starts with when only words follow it: "18 dollars" -> "18".

    "6 - 5i", "70 \\sqrt{2}" or "1,-2" are answers in their own right and give None.
    """
    m = re.match(rf"\s*(?:\\?\$\s*)?({_NUMBER})(.*)$", line, re.DOTALL)
    if m and (not m.group(2).strip() or re.match(r"(?:\s+|[,;]\s+)[A-Za-z]{2}", m.group(2))):
        return m.group(1)
    return None


def _clean(answer: str) -> str:
    """Strip math delimiters, currency signs, trailing punctuation and thousands commas.

    A trailing "!" stays: in an extracted answer it is a factorial (`\\boxed{5!}` is 120, not 5).
    """
    s = answer.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left): len(s) - len(right)].strip()
    s = s.rstrip(".,;:").strip()
    s = re.sub(r"^(?:\\\$|\$)\s*(?=-?\d)", "", s)  # $18 -> 18
    s = s.replace("\\!", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


def _to_letter(answer: str, choices: list[str] | None) -> str | None:
    """A choice letter for `answer` ("B", "(B)", "\\text{B}", "B) 42" or a choice's text)."""
    if not choices:
        return None
    s = re.sub(r"^\\(?:text|textbf|mathrm)\{(.*)\}$", r"\1", answer.strip()).strip()
    m = re.fullmatch(rf"{_LETTER_RE}(?:[.:)]\s*.*)?", s, re.DOTALL) or re.fullmatch(
        rf"{_LETTER_RE}\s+.*", s, re.DOTALL)
    if m and LETTERS.index(m.group(1)) < len(choices):
        return m.group(1)
    norm = _norm_text(s)
    for i, choice in enumerate(choices):
        if _norm_text(choice) == norm:
            return LETTERS[i]
    return None


def _last_choice_letter(text: str, n: int) -> str | None:
    valid = LETTERS[:n]
    patterns = [rf"\(([{valid}])\)", rf"\b(?:option|choice)\s*\(?([{valid}])\b",
                rf"(?m)^[^\S\n]*([{valid}])[).:]?[^\S\n]*$"]
    hits = [(m.start(), m.group(1)) for p in patterns for m in re.finditer(p, text, re.IGNORECASE)]
    hits = [(pos, letter.upper()) for pos, letter in hits if letter.upper() in valid]
    return max(hits)[1] if hits else None


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", _clean(str(s))).lower()


# --- equivalence -------------------------------------------------------------------------------


def is_equivalent(gold: str, pred: str | None, timeout: float = CHECK_TIMEOUT) -> bool:
    """True when `pred` means the same as `gold` (math-verify, bounded by `timeout` seconds).

    >>> is_equivalent("3", "3.0"), is_equivalent("1/2", "0.5"), is_equivalent("2", "3")
    (True, True, False)
    """
    try:
        return check_equivalent(gold, pred, timeout)
    except TimedOut:
        return False


def check_equivalent(gold: str, pred: str | None, timeout: float = CHECK_TIMEOUT) -> bool:
    """`is_equivalent`, but a check that runs past `timeout` raises TimedOut instead of being False."""
    if pred is None:
        return False
    g, p = _norm_answer(str(gold)), _norm_answer(str(pred))
    if not g or not p:
        return False
    if g == p:
        return True
    fg, fp = _fraction(g), _fraction(p)
    if fg is not None and fp is not None:
        if fg == fp:
            return True
        if fg.denominator == 1 and fp.denominator == 1 and "." not in g + p:
            return False  # two different integers: nothing for math-verify to add
    return bool(_verifier.call({"gold": _wrap(g), "pred": _wrap(p)}, timeout))


def _norm_answer(s: str) -> str:
    s = _clean(s)
    return s.replace("\\$", "").strip()


def _fraction(s: str) -> Fraction | None:
    if not re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _wrap(s: str) -> str:
    """A bare answer goes in $...$ so math-verify reads it as LaTeX."""
    if re.search(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox", s):
        return s
    return f"${s}$"


def verify_request(req: dict) -> Callable[[], bool]:
    """Worker handler (verifier.py): the check is math-verify on the request's gold and answer."""
    return lambda: _verify_now(req["gold"], req["pred"])


def warm_verifier() -> None:
    """Worker start: import math-verify and run it once (its parsers load lazily)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _verify_now("$\\frac{1}{2}$", "$0.5$")
    _verify_now("$\\left( 3, \\frac{\\pi}{2} \\right)$", "$x^2+\\sqrt{2}$")


def _verify_now(gold: str, pred: str) -> bool:
    """math-verify with its signal-based timeouts disabled (runs in the worker's sandboxed child)."""
    from math_verify import parse, verify

    g, p = parse(gold, parsing_timeout=None), parse(pred, parsing_timeout=None)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


_verifier = WorkerPool("crosspath.tasks.grading:verify_request", warm="crosspath.tasks.grading:warm_verifier")


class SameAnswer:
    """`equiv(a, b)` for the majority vote over one question's answers (metrics.votes).

    Free-form answers are compared by meaning: `check_equivalent`, bounded by VOTE_TIMEOUT
    seconds. Choice letters and reasoning-gym answers are compared exactly: a letter is its own
    meaning, and many reasoning-gym answers are not math at all (math-verify would read the board
    "ABCDE" as the product A*B*C*D*E, equal to "EDCBA"). An answer longer than MAX_ANSWER_CHARS,
    or one whose comparison once ran out of time, is compared exactly from then on, so a question
    costs at most one timeout per distinct slow answer; `timeouts` counts them.
    `problem` is a Problem or a result row (a dict with its fields).

    >>> same = SameAnswer(); same("1/2", "0.5"), same("3", "4"), same.timeouts
    (True, False, 0)
    >>> SameAnswer({"choices": ["1/2", "0.5"]})("A", "B")
    False
    """

    def __init__(self, problem: Problem | dict | None = None, timeout: float | None = None) -> None:
        field = (problem.get if isinstance(problem, dict) else lambda k: getattr(problem, k, None))
        self.exact = problem is not None and (bool(field("choices")) or "rg" in (field("meta") or {}))
        self.timeout = VOTE_TIMEOUT if timeout is None else timeout
        self.timeouts, self.slow = 0, set()

    def __call__(self, a: str, b: str) -> bool:
        if a == b:
            return True
        if self.exact or {a, b} & self.slow or max(len(a), len(b)) > MAX_ANSWER_CHARS:
            return False
        try:
            return check_equivalent(a, b, self.timeout)
        except TimedOut:
            self.timeouts += 1
            self.slow.update((a, b))
            return False


# --- grading -----------------------------------------------------------------------------------


class Verdict(NamedTuple):
    answer: str | None  # the extracted answer
    correct: bool
    timed_out: bool = False  # its check ran out of time (and it is graded wrong)


def judge(problem: Problem, text: str, timeout: float | None = None) -> Verdict:
    """The extracted answer of one model output, whether it is correct, and whether its check timed out.

    Reasoning-gym problems (meta["rg"]) are scored by reasoning-gym's own `score_answer`
    (rg_scoring.py); multiple choice compares letters; everything else goes through
    `check_equivalent`. Each check is bounded by `timeout` (default CHECK_TIMEOUT) seconds.

    >>> judge(Problem("p", "What is 3 + 4?", "7"), "so \\\\boxed{7}")
    Verdict(answer='7', correct=True, timed_out=False)
    >>> judge(Problem("p", "What is 5!?", "120"), "so \\\\boxed{5}")
    Verdict(answer='5', correct=False, timed_out=False)
    """
    timeout = CHECK_TIMEOUT if timeout is None else timeout
    answer = extract_answer(text, problem.choices)
    if answer is None or len(answer) > max(MAX_ANSWER_CHARS, 2 * len(problem.answer)):
        return Verdict(answer, False)
    try:
        return Verdict(answer, _correct(problem, answer, timeout))
    except TimedOut:
        return Verdict(answer, False, True)


def grade(problem: Problem, text: str) -> tuple[str | None, bool]:
    """(extracted answer, correct) for one model output: `judge` without the timeout flag.

    >>> grade(Problem("p", "What is 3 + 4?", "7"), "3 + 4 = 7. The answer is 7.")
    ('7', True)
    """
    answer, correct, _ = judge(problem, text)
    return answer, correct


def _correct(problem: Problem, answer: str, timeout: float) -> bool:
    if "rg" in problem.meta:
        return rg_score(problem.meta["rg"], answer, timeout) > RG_CORRECT
    if problem.choices:
        gold = _to_letter(_clean(problem.answer), problem.choices)
        if gold is None:
            return check_equivalent(problem.answer, answer, timeout)
        if re.fullmatch(r"[A-Z]", answer):
            return answer == gold
        return check_equivalent(problem.choices[LETTERS.index(gold)], answer, timeout)
    return check_equivalent(problem.answer, answer, timeout)
