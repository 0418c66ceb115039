"""Grading as runs see it: a scripted generator through `crosspath.infer.runner.run`, the server's
vote and the students' ensemble. No model: every path writes what the script says."""

import json
from types import SimpleNamespace

import pytest

from crosspath.backends.base import Completion
from crosspath.distill.evaluate import ensemble_accuracy
from crosspath.infer.runner import RunConfig, read_results, run
from crosspath.serve.service import votes_of
from crosspath.tasks import Problem, grading, load_task


class Scripted:
    """Path i of every question writes texts[i % len(texts)]."""

    tok = SimpleNamespace(chat_template=None)  # prompts are the plain question

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompts, params):
        n = len(self.texts)
        return [Completion(text=self.texts[i % n], token_ids=[1, 2, 3], finish_reason="stop")
                for i in range(len(prompts))]


def _run(tmp_path, texts, problems=None, **kw):
    cfg = RunConfig(method="independent", model="tiny-random", paths=len(texts), max_tokens=8, batch_questions=4,
                    out=str(tmp_path / "run"), **kw)
    summary = run(cfg, generator=Scripted(texts), problems=problems, progress=False)
    return summary, read_results(tmp_path / "run" / "results.jsonl")


@pytest.mark.parametrize("task", ["rg:string_insertion", "rg:countdown", "rg:chain_sum"])
def test_a_path_that_writes_code_runs_nothing_end_to_end(tmp_path, task):
    target = tmp_path / "FILE"
    texts = [f"Easy. \\boxed{{__import__('os').system('touch {target}')}}",
             f"<answer>__import__('pathlib').Path('{target}').write_text('x')</answer>"]
    summary, rows = _run(tmp_path, texts, task=task, limit=2)
    assert not target.exists()
    assert summary["questions"] == 2 and summary["pass_at_1"] == 0.0 and summary["grading_timeouts"] == 0
    assert all(p["answer"].startswith("__import__") and not p["correct"] for r in rows for p in r["paths"])


def test_cons_at_n_votes_on_meaning(tmp_path):
    problems = [Problem("half", "What is 1/2?", "1/2"), Problem("three", "What is 1 + 2?", "3")]
    texts = ["\\boxed{3}", "\\boxed{0.5}", "\\boxed{3}", "\\boxed{\\frac{1}{2}}", "\\boxed{1/2}"]
    summary, rows = _run(tmp_path, texts, problems=problems)
    half, three = rows
    # 0.5, \frac{1}{2} and 1/2 are one vote of 3 against 2 for "3"; spelled apart, "3" would win
    assert (half["cons_answer"], half["cons_correct"], half["pass_at_1"]) == ("0.5", True, 0.6)
    assert (three["cons_answer"], three["cons_correct"], three["pass_at_1"]) == ("0.5", False, 0.4)
    assert summary["cons_at_n"] == 0.5 and summary["grading_timeouts"] == 0


def test_multiple_choice_and_rg_answers_vote_by_spelling(tmp_path):
    (rg,) = load_task("rg:chain_sum", limit=1, seed=1)
    mc = Problem("mc", "Which is half?", "A", choices=["1/2", "3"])
    texts = ["\\boxed{A}", "\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{B}", "\\boxed{B}"]
    _, (row_mc, row_rg) = _run(tmp_path, texts, problems=[mc, rg])
    assert [p["answer"] for p in row_mc["paths"]] == ["A", "A", "0.5", "B", "B"]  # "1/2" is choice A's text
    assert (row_mc["cons_answer"], row_mc["cons_correct"]) == ("A", True)  # A 2, B 2: A came first
    # B 2, "1/2" 1, "0.5" 1: by meaning "1/2" would have tied B with 2 and won as the earlier one
    assert (row_rg["cons_answer"], row_rg["cons_correct"]) == ("B", False)


def test_grading_timeouts_are_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "CHECK_TIMEOUT", 1.0)
    monkeypatch.setattr(grading, "VOTE_TIMEOUT", 1.0)
    problems = [Problem("slow", "What is 1?", "1"), Problem("fine", "What is 3?", "3")]
    texts = ["\\boxed{9^{9^{9^{9^{9}}}}}", "\\boxed{3}"]
    summary, (slow, fine) = _run(tmp_path, texts, problems=problems)
    # "slow": the tower's grading timed out (wrong), and so did comparing it with "3" for the vote
    assert [p["correct"] for p in slow["paths"]] == [False, False] and slow["grading_timeouts"] == 2
    assert [p["correct"] for p in fine["paths"]] == [False, True] and fine["grading_timeouts"] == 2
    assert summary["grading_timeouts"] == 4 and summary["pass_at_1"] == 0.25
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["grading_timeouts"] == 4


def test_the_server_counts_equivalent_answers_as_one_vote():
    assert votes_of(["3", "0.5", None, "\\frac{1}{2}", "3", "1/2"]) == [
        {"answer": "0.5", "votes": 3, "paths": [1, 3, 5]}, {"answer": "3", "votes": 2, "paths": [0, 4]}]


def test_the_students_ensemble_votes_on_meaning():
    def row(answer, correct):
        return {"q": {"answer": "1/2", "paths": [{"answer": answer, "correct": correct}]}}

    students = [row("3", False), row("0.5", True), row("\\frac{1}{2}", True)]
    assert ensemble_accuracy(students, [0.9, 0.5, 0.1]) == 1.0  # 2 votes for one half beat the best student's 3
