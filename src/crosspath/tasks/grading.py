"""How an answer is judged: extraction from free text, then a time-bounded equivalence check.

>>> extract_answer("so the sum is \\\\boxed{\\\\frac{1}{2}}.")
'\\\\frac{1}{2}'
>>> is_equivalent("0.5", "\\\\frac{1}{2}")
True

Equivalence uses math-verify (gold parsed first and passed first to `verify`). math-verify bounds
its own time with SIGALRM, which only works in the main thread, so its timeouts are switched off
and the check runs in a small worker process instead (started once, ~2 s, reused); a check that
runs past `timeout` kills the worker and counts as not equivalent. This works from any thread, and
model output is only ever parsed, never executed. Equal strings and integers skip the worker.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from typing import Any

from crosspath.tasks.problem import Problem

RG_CORRECT = 0.99  # a reasoning-gym score above this counts as correct (scores are in [0, 1])
MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))  # verifier processes alive at most
WORKER_START_TIMEOUT = 120.0  # seconds for the worker to import math-verify (not the check budget)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?![\w])")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_LETTER_RE = r"\(?([A-Z])\)?"


# --- extraction --------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...} with balanced braces (None if there is none).

    >>> last_boxed("a \\\\boxed{1} b \\\\boxed{\\\\frac{1}{\\\\sqrt{2}}} c")
    '\\\\frac{1}{\\\\sqrt{2}}'
    """
    for m in reversed(list(_BOX_RE.finditer(text))):
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None  # none, or only unclosed ones (a truncated output)


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
    tags = _TAG_RE.findall(text)
    return tags[-1] if tags else None


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
    line = re.split(r"\.(?:\s|$)", line, maxsplit=1)[0]
    return _lead_number(line) or line


def _lead_number(line: str) -> str | None:
    """The number a line starts with when only words follow it: "18 dollars" -> "18".

    "6 - 5i", "70 \\sqrt{2}" or "1,-2" are answers in their own right and give None.
    """
    m = re.match(rf"\s*\\?\$?\s*({_NUMBER})(.*)$", line, re.DOTALL)
    if m and (not m.group(2).strip() or re.match(r"(?:\s+|[,;]\s+)[A-Za-z]{2}", m.group(2))):
        return m.group(1)
    return None


def _clean(answer: str) -> str:
    """Strip math delimiters, currency signs, trailing punctuation and thousands commas."""
    s = answer.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left): len(s) - len(right)].strip()
    s = s.rstrip(".,;:!").strip()
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
                rf"(?m)^\s*([{valid}])[).:]?\s*$"]
    hits = [(m.start(), m.group(1)) for p in patterns for m in re.finditer(p, text, re.IGNORECASE)]
    hits = [(pos, letter.upper()) for pos, letter in hits if letter.upper() in valid]
    return max(hits)[1] if hits else None


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", _clean(str(s))).lower()


# --- equivalence -------------------------------------------------------------------------------


def is_equivalent(gold: str, pred: str | None, timeout: float = 5.0) -> bool:
    """True when `pred` means the same as `gold` (math-verify, bounded by `timeout` seconds).

    >>> is_equivalent("3", "3.0"), is_equivalent("1/2", "0.5"), is_equivalent("2", "3")
    (True, True, False)
    """
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
    return _pool.check(_wrap(g), _wrap(p), timeout)


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


def _verify_now(gold: str, pred: str) -> bool:
    """math-verify with its signal-based timeouts disabled (runs in the worker process)."""
    from math_verify import verify

    g, p = _parse(gold), _parse(pred)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    from math_verify import parse

    return parse(text, parsing_timeout=None)


def _serve() -> None:
    """Worker loop: one JSON request per stdin line, one JSON reply per line on the real stdout."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed by the libraries goes to stderr, not into the protocol
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (import before saying ready: the import is the slow part)

    reply.write("ready\n")
    reply.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            ok = _verify_now(req["gold"], req["pred"])
        except Exception:  # an unparsable answer is simply not equivalent
            ok = False
        reply.write(json.dumps({"ok": ok}) + "\n")
        reply.flush()


class _Worker:
    """One verifier subprocess (a plain `python -c`, so no fork of a threaded parent)."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from crosspath.tasks.grading import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        if self._read_line(WORKER_START_TIMEOUT) != "ready":
            self.kill()
            raise RuntimeError("the math-verify worker did not start; try: "
                               f"{sys.executable} -c 'import math_verify'")

    def check(self, gold: str, pred: str, timeout: float) -> bool | None:
        """The verdict, or None when the worker ran past `timeout` or died."""
        data = memoryview((json.dumps({"gold": gold, "pred": pred}) + "\n").encode())
        try:
            while data:
                data = data[os.write(self.proc.stdin.fileno(), data):]
        except OSError:  # the worker died
            return None
        line = self._read_line(timeout)
        return None if line is None else bool(json.loads(line)["ok"])

    def _read_line(self, timeout: float) -> str | None:
        fd, buf, deadline = self.proc.stdout.fileno(), b"", time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk
        return buf.decode().strip()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class _Pool:
    """Up to MAX_WORKERS workers shared by all threads; a thread waits for a free one."""

    def __init__(self) -> None:
        self.idle: list[_Worker] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_WORKERS)

    def check(self, gold: str, pred: str, timeout: float) -> bool:
        with self.slots:  # the wait for a slot is not part of `timeout`
            return self._check(gold, pred, timeout)

    def _check(self, gold: str, pred: str, timeout: float) -> bool:
        for _ in range(2):  # a second try only when the worker had died before this call
            with self.lock:
                worker = self.idle.pop() if self.idle else None
            worker = worker or _Worker()
            verdict = worker.check(gold, pred, timeout)
            if verdict is not None:
                with self.lock:
                    self.idle.append(worker)
                return verdict
            died = worker.proc.poll() is not None
            worker.kill()  # too slow (maybe stuck in sympy) or dead: it goes either way
            if not died:
                return False
        return False

    def close(self) -> None:
        with self.lock:
            workers, self.idle = self.idle, []
        for w in workers:
            w.kill()


_pool = _Pool()
atexit.register(_pool.close)


# --- grading -----------------------------------------------------------------------------------


def grade(problem: Problem, text: str) -> tuple[str | None, bool]:
    """(extracted answer, correct) for one model output.

    Reasoning-gym problems (meta["rg"]) are scored by reasoning-gym's own `score_answer`;
    multiple choice compares letters; everything else goes through `is_equivalent`.

    >>> grade(Problem("p", "What is 3 + 4?", "7"), "3 + 4 = 7. The answer is 7.")
    ('7', True)
    """
    answer = extract_answer(text, problem.choices)
    if answer is None:
        return None, False
    if "rg" in problem.meta:
        return answer, _rg_score(problem.meta["rg"], answer) > RG_CORRECT
    if problem.choices:
        gold = _to_letter(_clean(problem.answer), problem.choices)
        if gold is None:
            return answer, is_equivalent(problem.answer, answer)
        if re.fullmatch(r"[A-Z]", answer):
            return answer, answer == gold
        return answer, is_equivalent(problem.choices[LETTERS.index(gold)], answer)
    return answer, is_equivalent(problem.answer, answer)


def _rg_score(rg: dict, answer: str) -> float:
    """reasoning-gym's score for `answer`, on the entry re-created from name + config + index."""
    dataset = _rg_dataset(rg["name"], json.dumps(rg.get("config", {}), sort_keys=True))
    entry = rg["entry"]
    if "index" in rg:
        fresh = dataset[rg["index"]]
        if fresh.get("question") == entry.get("question"):
            entry = fresh  # the original objects (tuples, sets) some scorers rely on
    try:
        return float(dataset.score_answer(answer, entry))
    except Exception:  # a scorer that chokes on a malformed answer: wrong, not a crash
        return 0.0


@functools.lru_cache(maxsize=64)
def _rg_dataset(name: str, config_json: str) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(name, **json.loads(config_json))
