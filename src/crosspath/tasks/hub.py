"""Hub datasets (`hf:<id>` tasks and their short names): known layouts and row readers.

Needs the Hugging Face `datasets` library (`pip install crosspath[hub]`) and the network, or a
local hub cache. `tasks.datasets` turns the rows into Problems.
"""

from __future__ import annotations

import random
from typing import Any

from crosspath.errors import CrosspathError


class TaskError(CrosspathError, ValueError):
    """A task spec, option or data row that cannot be turned into Problems."""


# Hub datasets whose layout is known: load_dataset config (or several, concatenated), fields, a
# split forced when the dataset has only one (aime_2024 ships only "train"), and a row reader
# for layouts that are not question/answer ("gpqa": Question + Correct/Incorrect Answer 1-3).
# Fields not named here are guessed (QUESTION_KEYS, ANSWER_KEYS, "id").
HF_KNOWN: dict[str, dict[str, Any]] = {
    "openai/gsm8k": {"config": "main", "question": "question", "answer": "answer"},
    "HuggingFaceH4/MATH-500": {"question": "problem", "answer": "answer", "split": "test"},
    "HuggingFaceH4/aime_2024": {"question": "problem", "answer": "answer", "id": "id",
                                "split": "train"},
    "HuggingFaceH4/aime_2025": {"question": "problem", "answer": "answer", "id": "id",
                                "split": "train"},
    "yentinglin/aime_2025": {"split": "train"},
    "opencompass/AIME2025": {"configs": ["AIME2025-I", "AIME2025-II"], "split": "test"},
    "math-ai/amc23": {"split": "test"},
    "Idavidrein/gpqa": {"config": "gpqa_diamond", "split": "train", "rows": "gpqa"},
}
ALIASES = {"aime24": "hf:HuggingFaceH4/aime_2024", "aime25": "hf:yentinglin/aime_2025",
           "amc23": "hf:math-ai/amc23", "gpqa-diamond": "hf:Idavidrein/gpqa"}


def load_rows(dataset_id: str, split: str, options: dict, seed: int = 0,
              gpqa: bool = True) -> tuple[list[dict], dict, str]:
    """(rows, known field names, split used) of a hub dataset; several configs are concatenated.
    `gpqa=False` keeps GPQA's raw columns (when the caller names its own fields)."""
    try:
        import datasets
    except ImportError as e:
        raise TaskError(f"hf:{dataset_id} needs the Hugging Face `datasets` library: "
                        "pip install crosspath[hub]") from e
    known = HF_KNOWN.get(dataset_id, {})
    kwargs = dict(options)
    configs = [kwargs.pop("name")] if "name" in kwargs else known.get("configs", [known.get("config")])
    split = known.get("split", split)
    rows: list[dict] = []
    for config in configs:
        rows += _rows(datasets, dataset_id, split, dict(kwargs, **({"name": config} if config else {})))
    if known.get("rows") == "gpqa" and gpqa:
        rows = [gpqa_row(r, seed, f"hf:{dataset_id} row {i}") for i, r in enumerate(rows)]
    return rows, {k: known[k] for k in ("question", "answer", "id") if k in known}, split


def _rows(datasets, dataset_id: str, split: str, kwargs: dict) -> list[dict]:
    """Rows of one hub config; a dataset without `split` but with a single split gives that one."""
    try:
        return [dict(r) for r in datasets.load_dataset(dataset_id, split=split, **kwargs)]
    except Exception as e:
        error = e
    if "split" in str(error).lower():  # e.g. 'Unknown split "test". Should be one of ['train'].'
        try:
            parts = datasets.load_dataset(dataset_id, **kwargs)
        except Exception:
            parts = None
        if parts is not None and len(parts) == 1:
            return [dict(r) for r in next(iter(parts.values()))]
    raise TaskError(f"cannot load hf:{dataset_id} (split {split!r}, {kwargs or 'no options'}): "
                    f"{type(error).__name__}: {error}") from error


def gpqa_row(row: dict, seed: int, where: str = "GPQA row") -> dict:
    """A GPQA row (Question, Correct Answer, Incorrect Answer 1-3, Record ID) as question, four
    shuffled choices and the letter of the correct one. The order depends only on `seed` and the
    record (its id, else its question), so it is the same on every machine and in every run.

    >>> r = gpqa_row({"Question": "Q?", "Correct Answer": "right", "Incorrect Answer 1": "w1",
    ...               "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3", "Record ID": "rec1"}, seed=0)
    >>> r["choices"][ord(r["answer"]) - ord("A")], sorted(r["choices"]), r["id"]
    ('right', ['right', 'w1', 'w2', 'w3'], 'rec1')
    """
    keys = ["Correct Answer"] + [f"Incorrect Answer {k}" for k in (1, 2, 3)]
    missing = [k for k in ["Question"] + keys if row.get(k) is None]
    if missing:
        raise TaskError(f"{where}: missing GPQA field(s) {missing} (fields present: {', '.join(map(str, row))})")
    options = [str(row[k]).strip() for k in keys]
    record = str(row.get("Record ID") or row["Question"])
    order = list(range(len(options)))
    random.Random(f"gpqa:{seed}:{record}").shuffle(order)
    meta = {k: v for k, v in row.items() if k not in keys and k not in ("Question", "Record ID")}
    return {**meta, "id": record, "question": str(row["Question"]).strip(),
            "choices": [options[j] for j in order], "answer": "ABCD"[order.index(0)]}
