"""The unit of work every method shares: one question with its gold answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Problem:
    id: str
    question: str
    answer: str  # gold answer, as a string
    source: str = ""  # e.g. "gsm8k", "math500", "rg:chain_sum", "file:path.jsonl"
    choices: list[str] | None = None  # multiple choice options, in order (A, B, C, ...)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
