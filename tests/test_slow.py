"""Real-model tier: the embedded SmolLM2 end to end (run with `pytest -m slow`)."""

import json

import pytest

from crosspath.cli import main
from crosspath.infer.runner import read_results

pytestmark = pytest.mark.slow


def test_leap_end_to_end_on_smollm2_hf(tmp_path, capsys):
    out = tmp_path / "leap"
    code = main(["run", "--method", "leap", "--model", "smollm2-135m", "--task", "demo", "--limit", "2",
                 "--paths", "3", "--rounds", "2", "--round-tokens", "24", "--summary-tokens", "12",
                 "--answer-tokens", "12", "--router", "dispersed", "--peers-k", "1", "--out", str(out)])
    assert code == 0
    assert "| leap | demo | 3 | 2 |" in capsys.readouterr().out
    rows = read_results(out / "results.jsonl")
    assert len(rows) == 2
    for row in rows:
        assert len(row["paths"]) == 3
        for p in row["paths"]:
            assert p["tokens"] > 0 and p["finish"] in ("think", "eos", "budget", "forced")
            r0 = p["rounds"][0]
            if "summary" in r0:  # still reasoning after round 0: it summarized and read one peer
                assert len(r0["peers"]) <= 1 and "<summarize>" in p["text"]
    assert json.loads((out / "summary.json").read_text())["questions"] == 2
    assert main(["analyze", str(out)]) == 0


def test_independent_and_resume_on_smollm2(tmp_path):
    args = ["run", "--method", "independent", "--model", "smollm2-135m", "--task", "demo", "--paths", "2",
            "--max-tokens", "24", "--batch-questions", "1", "--out", str(tmp_path / "ind")]
    assert main(args + ["--limit", "1"]) == 0
    assert main(args + ["--limit", "2", "--resume"]) == 0
    rows = read_results(tmp_path / "ind" / "results.jsonl")
    assert [r["id"] for r in rows] == ["demo-0", "demo-1"]


def test_one_m3po_step_on_smollm2(tmp_path):
    from crosspath.train import TrainConfig
    from crosspath.train.trainer import Trainer

    cfg = TrainConfig(algo="m3po", model="smollm2-135m", steps=1, questions_per_step=1, group_size=4,
                      max_new_tokens=16, train_size=8, eval_size=4, eval_every=0, save_every=1,
                      tensorboard=False, progress=False, out=str(tmp_path / "m3po"))
    metrics = Trainer(cfg).fit()
    assert metrics and metrics[-1]["step"] == 1
    assert (tmp_path / "m3po" / "checkpoints" / "step-1").exists()
