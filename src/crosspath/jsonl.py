"""Reading the JSONL files a run appends to (results.jsonl, metrics.jsonl, distill data), in one place.

A writer appends one line at a time, so a crash (or a reader racing the writer) can leave a *torn*
last line: without its newline, or cut mid-JSON. That line is never an error: it is skipped, and
`repair=True` (only for the process that owns the file, before appending to it) cuts it off the file.
A bad line anywhere else means the file was damaged: `ValueError("path:line: not a JSON line")`, or,
with `skip_bad=True` (read-only views such as the report), the line is skipped and listed in `bad`.
Blank lines are skipped.

    read_jsonl(path)                           -> [row, ...]
    read_numbered(path, skip_bad=True, bad=b)  -> [(line number, row), ...], b gets [(n, why), ...]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_numbered(path: str | Path, repair: bool = False, skip_bad: bool = False,
                  bad: list[tuple[int, str]] | None = None) -> list[tuple[int, Any]]:
    """[(1-based line number, parsed row)] of a JSONL file; [] when it does not exist. See the module docstring."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    rows, good = [], 0  # good: bytes of the complete prefix (what `repair` keeps)
    for n, line in enumerate(lines, 1):
        last = n == len(lines)
        if last and not line.endswith(b"\n"):  # torn: being written, or cut by a crash
            break
        if line.strip():
            try:
                rows.append((n, json.loads(line)))  # non-UTF-8 bytes: UnicodeDecodeError, a ValueError
            except ValueError:
                if last:  # a complete-looking last line that does not parse is torn too
                    break
                if not skip_bad:
                    raise ValueError(f"{path}:{n}: not a JSON line") from None
                if bad is not None:
                    bad.append((n, "not valid JSON"))
        good += len(line)
    if repair and good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def read_jsonl(path: str | Path, repair: bool = False, skip_bad: bool = False) -> list[Any]:
    """The rows of a JSONL file (see `read_numbered`)."""
    return [row for _, row in read_numbered(path, repair=repair, skip_bad=skip_bad)]

