"""results.jsonl as the report reads it: every line parsed and type-checked on its own, so one bad
line never takes the page down.

    read_results(path) -> (rows, [(line number, what is wrong), ...])

A line that is not a JSON object, or whose fields the report computes with have the wrong type
(`paths` not a list of objects, `tokens` not a number, `correct` not true/false, ...), is skipped
and described, e.g. (7, "field 'paths[0].tokens' should be a number, got str \"many\""); the page
and the warning name it as results.jsonl:7. A last line without its newline that does not parse
is a run writing right now: it is skipped without a word. Fields the report only shows (texts,
answers, ids) may hold anything.

>>> print(check_row({"paths": [{"tokens": 3, "rounds": [{"tokens": "many"}]}]}))
field 'paths[0].rounds[0].tokens' should be a number, got str "many"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..jsonl import read_numbered


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flag(v: Any) -> bool:  # null: not graded
    return v is None or isinstance(v, bool) or (_number(v) and v in (0, 1))


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list(v: Any) -> bool:
    return isinstance(v, list)


NUMBER, FLAG, LIST, INTEGER = ("a number", _number), ("true, false or null", _flag), ("a list", _list), \
    ("an integer", _integer)
# field -> (what it should be, test, required); a field that is not required may be missing
ROW = {"paths": (*LIST, True), "tokens": (*NUMBER, False), "wall_seconds": (*NUMBER, False),
       "pass_at_1": (*NUMBER, False), "cons_correct": (*FLAG, False)}
PATH = {"rounds": (*LIST, False), "tokens": (*NUMBER, False), "correct": (*FLAG, False)}
ROUND = {"tokens": (*NUMBER, False), "summary_tokens": (*NUMBER, False), "correct": (*FLAG, False),
         "peers": (*LIST, False)}
COMMENTED = {"round": (*INTEGER, True)}  # a round with peers: the influence table is keyed on it
PEER = {"peer": (*INTEGER, True), "similarity": (*NUMBER, False)}


def _got(v: Any) -> str:
    if v is None:
        return "null"
    text = json.dumps(v, ensure_ascii=False, default=str)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check(obj: Any, spec: dict, where: str) -> str | None:
    if not isinstance(obj, dict):
        return f"field '{where}' should be an object, got {_got(obj)}"
    for key, (what, ok, required) in spec.items():
        name = f"{where}.{key}" if where else key
        if key not in obj:
            if required:
                return f"field '{name}' is missing"
        elif not ok(obj[key]):
            return f"field '{name}' should be {what}, got {_got(obj[key])}"
    return None


def check_row(row: Any) -> str | None:
    """None when the report can use `row`, else what is wrong with it (the first problem)."""
    if not isinstance(row, dict):
        return f"the line is not a JSON object but {type(row).__name__}"
    problem = _check(row, ROW, "")
    for i, path in enumerate(row["paths"] if problem is None else []):
        problem = _check(path, PATH, f"paths[{i}]")
        for j, rd in enumerate(path.get("rounds") or [] if problem is None else []):
            where = f"paths[{i}].rounds[{j}]"
            problem = _check(rd, ROUND, where) or (_check(rd, COMMENTED, where) if "peers" in rd else None)
            for k, peer in enumerate(rd.get("peers") or [] if problem is None else []):
                problem = problem or _check(peer, PEER, f"{where}.peers[{k}]")
            if problem:
                break
        if problem:
            break
    return problem


def read_results(path: Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """(usable rows, [(line number, what is wrong)] for every skipped line). The file is only read."""
    rows, skipped = [], []
    for n, row in read_numbered(path, skip_bad=True, bad=skipped):
        problem = check_row(row)
        if problem:
            skipped.append((n, problem))
        else:
            rows.append(row)
    return rows, sorted(skipped)


class SkippedLineWarning(UserWarning):
    """A line of a run's results.jsonl that the report skipped (the message names file:line and field)."""
