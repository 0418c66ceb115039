"""Multiple choice end to end: the options reach the model, the forced answer asks for a letter,
round answers and final answers are read as letters and graded (independent and LeaP)."""

import json

import pytest

from crosspath.backends.base import Completion
from crosspath.infer import prompts
from crosspath.infer.runner import RunConfig, read_results, run
from crosspath.models import load_tokenizer


class Chooser:
    """Stateless and scripted: reasoning names option B and is cut at the budget, summaries close
    their tag, a forced answer writes `B}`. Records every prompt."""

    def __init__(self):
        self.tok = load_tokenizer("tiny-random")
        self.prompts = []

    def generate(self, prompts_, params):
        self.prompts += prompts_
        out = []
        for p in prompts_:
            if p.endswith("\\boxed{"):
                out.append(Completion(text="B}", token_ids=[1, 2], finish_reason="stop"))
            elif p.endswith(prompts.SUMMARY_OPENER):
                out.append(Completion(text="option B fits.</summarize>", token_ids=[1] * 3, finish_reason="stop",
                                      stop="</summarize>"))
            else:
                out.append(Completion(text="4 is even, so option B holds.\n\nStill check", token_ids=[1] * 6,
                                      finish_reason="length"))
        return out


@pytest.fixture
def mc_task(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(json.dumps({"id": "p1", "question": "Which number is prime?", "choices": ["4", "7", "9"],
                             "answer": "B"}) + "\n")
    return str(f)


@pytest.mark.parametrize("method", ["independent", "leap"])
def test_multiple_choice_end_to_end(tmp_path, mc_task, method):
    gen = Chooser()
    cfg = RunConfig(method=method, model="tiny-random", task=mc_task, paths=2, max_tokens=6, rounds=2, round_tokens=6,
                    summary_tokens=3, answer_tokens=2, out=str(tmp_path / method))
    s = run(cfg, generator=gen, progress=False)
    first = gen.prompts[0]
    assert "Which number is prime?\n\nA) 4\nB) 7\nC) 9" in first and "letter" in first
    assert any(prompts.FINAL_ANSWER_CHOICE in p for p in gen.prompts)  # the forced answer asks for a letter
    (row,) = read_results(tmp_path / method / "results.jsonl")
    assert row["choices"] == ["4", "7", "9"]
    for path in row["paths"]:
        assert path["answer"] == "B" and path["correct"] and path["finish"] == "forced"
        if method == "leap":  # every round's answer is read with the choices
            assert [(rd["answer"], rd["correct"]) for rd in path["rounds"]] == [("B", True), ("B", True)]
    assert s["pass_at_1"] == 1.0 and s["cons_at_n"] == 1.0
