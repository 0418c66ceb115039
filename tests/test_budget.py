"""Fair baselines: independent sampling's forced answer, LeaP's per-path budget as its default,
`--match RUN`, and `compare` putting tokens next to accuracies and warning on unequal budgets."""

from dataclasses import dataclass, field

import pytest

from crosspath.backends.base import Completion
from crosspath.infer import budget, independent, prompts
from crosspath.infer.analysis import compare
from crosspath.infer.paths import PathStore
from crosspath.infer.runner import RunConfig, run
from crosspath.tasks.problem import Problem


class Cut:
    """Stateless: the first call writes `text` (path 0 is cut at the budget, path 1 stops on EOS);
    a call after the final-answer lead-in writes `7}`."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts_, params):
        self.calls.append((list(prompts_), params))
        if prompts_[0].endswith("\\boxed{"):
            return [Completion(text="7}", token_ids=[1, 2], finish_reason="stop") for _ in prompts_]
        return [Completion(text="I think", token_ids=[1] * params.max_tokens, finish_reason="length") if n % 2 == 0
                else Completion(text="so \\boxed{7}", token_ids=[1] * 3, finish_reason="stop")
                for n in range(len(prompts_))]


@dataclass
class Cfg:
    paths: int = 2
    max_tokens: int = 5
    temperature: float = 0.6
    top_p: float = 0.95
    sample_top_k: int = 0
    min_p: float = 0.0
    stop: list = field(default_factory=list)


def test_independent_paths_cut_at_the_budget_are_forced_to_answer():
    gen = Cut()
    problems = [Problem("q", "What is 3 + 4?", "7")]
    (cut, done), = independent.solve(problems, PathStore(gen), Cfg(), lambda u, prefill="": u, seed=0, answer_tokens=4)
    assert [c[1].max_tokens for c in gen.calls] == [5, 4] and len(gen.calls[1][0]) == 1  # only the cut path
    assert cut.text == "I think" + prompts.FINAL_ANSWER + "7}" and cut.finish == "forced" and cut.tokens == 5 + 2
    assert done.text == "so \\boxed{7}" and done.finish == "eos" and done.tokens == 3
    # multiple choice: the forced answer asks for a letter
    gen = Cut()
    mc = [Problem("m", "Which is 7?", "B", choices=["6", "7"])]
    (cut, _), = independent.solve(mc, PathStore(gen), Cfg(), lambda u, prefill="": u, seed=0, answer_tokens=4)
    assert cut.text.startswith("I think" + prompts.FINAL_ANSWER_CHOICE)
    # answer_tokens=0 (the server's independent mode): no forced answer
    gen = Cut()
    (cut, _), = independent.solve(problems, PathStore(gen), Cfg(), lambda u, prefill="": u, seed=0)
    assert len(gen.calls) == 1 and cut.finish == "length"


def test_default_budget_equals_leaps_and_the_rule_is_documented():
    leap, indep = RunConfig(method="leap"), RunConfig(method="independent")
    assert indep.max_tokens is None
    budget.resolve(indep)
    assert indep.max_tokens == 3 * 512 + 2 * 64 == 1664
    assert budget.path_budget(indep) == budget.path_budget(leap) == 1664 + 64
    assert budget.leap_budget(RunConfig(method="leap", rounds=3, comm_rounds=[0])) == 3 * 512 + 64 + 64
    assert budget.leap_budget(RunConfig(method="leap", rounds=3, token_budget=600)) == 600 + 64 + 64
    with pytest.raises(ValueError, match="--match"):
        budget.resolve(RunConfig(method="leap", match="runs/x"))


def test_match_takes_the_leap_runs_budget_and_compare_shows_it(tmp_path, tiny_gen):
    common = dict(model="tiny-random", task="demo", limit=1, paths=2, batch_questions=1)
    leap = run(RunConfig(method="leap", rounds=2, round_tokens=4, summary_tokens=2, answer_tokens=3,
                         out=str(tmp_path / "leap"), **common), generator=tiny_gen, progress=False)
    assert leap["path_budget"] == 2 * 4 + 2 + 3
    logs = []
    ind = run(RunConfig(method="independent", match=str(tmp_path / "leap"), out=str(tmp_path / "ind"), **common),
              generator=tiny_gen, progress=False, log=logs.append)
    assert ind["config"]["max_tokens"] == 10 and ind["config"]["answer_tokens"] == 3 and ind["path_budget"] == 13
    assert "per-path budget 13" in logs[0]
    out = compare([str(tmp_path / "leap"), str(tmp_path / "ind")])
    assert "| pass@1 | tokens/path | cons@N | tokens/question | budget/path |" in out
    assert "| 13 |" in out and "warning" not in out
    run(RunConfig(method="independent", max_tokens=4, out=str(tmp_path / "short"), **common), generator=tiny_gen,
        progress=False)
    out = compare([str(tmp_path / "leap"), str(tmp_path / "short")])
    assert "warning: the per-path token budgets differ (leap 13, independent 68)" in out
    with pytest.raises(ValueError, match="do not give --max-tokens"):
        run(RunConfig(method="independent", match=str(tmp_path / "leap"), max_tokens=5, out=str(tmp_path / "x"),
                      **common), generator=tiny_gen, progress=False)
