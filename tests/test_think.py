"""--answer-format think and the format warm-up: the prompt, the marker rule, the warm-up on and off,
the thinking-phase metrics, and a run resumed with the new options (tiny random Llama)."""

import json
import re

import pytest
import torch

from crosspath.tasks import Problem, count_markers
from crosspath.train import TrainConfig
from crosspath.train import format as format_mod
from crosspath.train import trainer as trainer_mod
from crosspath.train.data import PROMPT, THINK_PROMPT, prompt_text, reward, think_correct
from crosspath.train.format import marked_thinking, rewrite
from crosspath.train.trainer import Trainer
from train_helpers import config as base_config, lora_state, metrics

SUM = Problem("p", "What is 3 + 4?", "7")


def text_reward(problem, text, marker="####", marker_rule=True, think=False):
    """A stand-in the random model can earn (even character count); takes the think option too."""
    r = float(len(text) % 2 == 0)
    return r, bool(r), count_markers(text, marker)


@pytest.fixture
def fake_reward(monkeypatch):
    """The stand-in reward, and warm-up samples that end by themselves: the random model never writes
    EOS, so for the warm-up's sampler every token is one (a sample is its first token)."""
    from crosspath.train.rollout import sample_rollouts

    monkeypatch.setattr(trainer_mod, "reward", text_reward)
    monkeypatch.setattr(format_mod, "sample_rollouts",
                        lambda model, tok, *a, **k: sample_rollouts(model, tok, *a, eos_token_ids=list(range(len(tok))),
                                                                    **k))


def config(tmp_path, name="run", **kw) -> TrainConfig:
    """train_helpers.config with the thinking format (and a 4-question warm-up pool)."""
    return base_config(tmp_path, name, **{"answer_format": "think", "format_warmup_questions": 4, **kw})


@pytest.mark.parametrize("template", [PROMPT, THINK_PROMPT])
def test_prompts_hold_no_literal_answer(template):
    question = "What is 3 + 4?"
    for fmt in ("plain", "think"):
        text = prompt_text(TrainConfig(answer_format=fmt), question)
        assert text.startswith(question)
    rest = template.format(question=question, marker="####").replace(question, "")
    assert rest.count("####") == 1
    assert not re.search(r"\d", rest), rest  # no example number anywhere, let alone after the marker
    assert "answer" in rest.split("####")[1]  # the marker is followed by words that ask for it, not by one


def test_think_reward_on_crafted_texts():
    # reasoning, then the marker and the right answer
    assert reward(SUM, "3 + 4 = 7\n#### 7", think=True) == (1.0, True, 1)
    # the right answer without the marker: right for `grade`, no reward under the thinking format
    assert reward(SUM, "3 + 4 = 7", think=True) == (0.0, True, 0)
    assert reward(SUM, "3 + 4 = 7") == (1.0, True, 0)  # (plain format: rewarded)
    # the marker twice: 0 in both formats
    assert reward(SUM, "3 + 4 = 7\n#### 7\n#### 7", think=True) == (0.0, True, 2)
    assert reward(SUM, "3 + 4 = 7\n#### 7\n#### 7")[0] == 0.0
    # no reasoning before the marker; a wrong answer after it (the right number only in the reasoning)
    assert reward(SUM, "#### 7", think=True)[0] == 0.0
    assert reward(SUM, "3 + 4 = 7\n#### 8", think=True)[0] == 0.0
    assert think_correct(SUM, "Add them: 3 + 4 = 7.\n#### The answer is 7")


def test_rewrite_adds_the_marker_line_once():
    assert rewrite("So 3 + 4 = 7.", "7") == "So 3 + 4 = 7.\n#### 7"
    assert think_correct(SUM, rewrite("So 3 + 4 = 7.", "7"))
    assert rewrite("So 3 + 4 = 7 #### 7 #### 7", "7") is None


def test_marked_thinking_counts_only_completions_with_one_marker():
    from types import SimpleNamespace

    r = SimpleNamespace(thinking_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool),
                        completion_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]))
    scored = [(1.0, True, 1), (0.0, False, 0), (0.0, False, 2)]
    assert marked_thinking(r, scored, 3) == (2.0, 4.0)
    assert marked_thinking(r, [(0.0, False, 0)] * 3, 3) == (0.0, 0.0)


def test_warmup_off_changes_nothing(tmp_path, fake_reward, monkeypatch):
    def never(*a, **k):
        raise AssertionError("the warm-up sampled")

    monkeypatch.setattr(format_mod, "collect_traces", never)
    for name, kw in (("plain", dict(answer_format="plain")), ("off", dict(format_warmup=0))):
        t = Trainer(config(tmp_path, name, **kw))
        before, rng = lora_state(t.model), torch.get_rng_state()
        assert format_mod.format_warmup(t) is None
        assert torch.equal(rng, torch.get_rng_state())
        assert all(torch.equal(v, lora_state(t.model)[k]) for k, v in before.items())
        t.fit()
        assert [r["step"] for r in metrics(tmp_path / name)] == [1, 2]  # no warm-up line


def test_warmup_leaves_the_rl_data_stream_and_seeds_alone(tmp_path, fake_reward):
    """The same questions in the same order, from the same position, with or without the warm-up."""
    for name, n in (("off", 0), ("on", 2)):
        Trainer(config(tmp_path, name, format_warmup=n, steps=2)).fit()
    for step in (1, 2):
        files = [tmp_path / name / "samples" / f"step-{step}.jsonl" for name in ("off", "on")]
        ids = [[json.loads(x)["id"] for x in f.read_text().splitlines()] for f in files]
        assert ids[0] == ids[1]
    pos = [[r["data_position"] for r in metrics(tmp_path / name) if not r.get("warmup")] for name in ("off", "on")]
    assert pos[0] == pos[1] == [2, 4]


def test_warmup_trains_the_adapter_on_rewritten_traces(tmp_path, fake_reward):
    t = Trainer(config(tmp_path, format_warmup=3, format_warmup_lr=1e-2))
    before = lora_state(t.model)
    stats = format_mod.format_warmup(t)
    assert stats["warmup"] and stats["warmup_samples"] == 4 * 4 and stats["warmup_traces"] > 0
    assert stats["warmup_steps"] == 3
    changed = [k for k, v in lora_state(t.model).items() if not torch.equal(v, before[k])]
    assert changed and all("lora_" in k for k in changed)
    assert not t.optimizer.state  # the RL optimizer took no step
    traces = [json.loads(x) for x in (tmp_path / "run" / "samples" / "warmup.jsonl").read_text().splitlines()]
    assert traces and all(x["text"].count("####") == 1 for x in traces)


def test_sft_lowers_the_loss_of_its_traces(tmp_path):
    t = Trainer(config(tmp_path, format_warmup_lr=1e-2))
    p = t.train_set[0]
    losses = format_mod.sft(t, [(p, f"Adding the terms gives {p.answer}.\n#### {p.answer}")], steps=10)
    assert len(losses) == 10 and min(losses[-3:]) < losses[0] - 0.3, losses


def test_think_run_then_resume_with_more_steps(tmp_path, fake_reward, monkeypatch, capsys):
    from crosspath.cli import main

    out = tmp_path / "cli-think"
    args = ["train", "--model", "tiny-random", "--device", "cpu", "--algo", "m3po", "--answer-format", "think",
            "--format-warmup", "2", "--format-warmup-questions", "2", "--group-size", "4", "--max-new-tokens", "8",
            "--train-size", "20", "--eval-size", "2", "--eval-every", "1", "--save-every", "1", "--lr", "1e-2",
            "--no-tensorboard", "--no-progress", "--out", str(out)]
    assert main(args + ["--steps", "2"]) == 0
    rows = metrics(out)
    assert [(r["step"], bool(r.get("warmup"))) for r in rows] == [(0, False), (0, True), (1, False), (2, False)]
    assert "eval_think_accuracy" in rows[1] and (out / "samples" / "eval-warmup.jsonl").exists()
    for r in rows[2:]:
        assert {"format_rate", "thinking_share", "thinking_share_marked", "eval_think_accuracy"} <= set(r)
        assert 0 <= r["thinking_share"] <= 1

    monkeypatch.setattr(format_mod, "collect_traces", lambda *a: pytest.fail("a resumed run warmed up again"))
    assert main(["train", "--out", str(out), "--steps", "3", "--resume"]) == 0
    rows = metrics(out)
    assert [r["step"] for r in rows] == [0, 0, 1, 2, 3] and sum(bool(r.get("warmup")) for r in rows) == 1
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["answer_format"], saved["format_warmup"], saved["steps"]) == ("think", 2, 3)


def test_warmup_with_leap_and_grpo_starts_from_the_same_adapter(tmp_path, fake_reward):
    """The warm-up is the same whatever the algorithm: same seed, same warmed-up adapter."""
    adapters = []
    for algo in ("grpo", "m3po", "leap"):
        t = Trainer(config(tmp_path, algo, algo=algo, format_warmup=2, leap_round_tokens=4, leap_summary_tokens=4,
                           leap_answer_tokens=4))
        format_mod.format_warmup(t)
        adapters.append(lora_state(t.model))
    for other in adapters[1:]:
        assert all(torch.equal(v, other[k]) for k, v in adapters[0].items())


def test_a_cached_warm_up_gives_the_run_a_fresh_warm_up_gives(tmp_path, fake_reward, monkeypatch):
    """--format-warmup-cache: the second run (another algorithm, M3PO's options, another folder) loads
    the first run's warm-up, evaluation and RNG state and then trains exactly as if it had warmed up."""
    from train_helpers import untimed

    cache = tmp_path / "cache"
    opts = dict(format_warmup=2, steps=2, eval_every=2, format_warmup_cache=str(cache))
    Trainer(config(tmp_path, "first", algo="m3po", m3po_lambda=0.3, **opts)).fit()
    assert len(list(cache.iterdir())) == 1
    fresh = Trainer(config(tmp_path, "fresh", **{**opts, "format_warmup_cache": None}))
    fresh.fit()
    collect = format_mod.collect_traces
    monkeypatch.setattr(format_mod, "collect_traces", lambda *a: pytest.fail("a cached warm-up was run again"))
    cached = Trainer(config(tmp_path, "cached", **opts))
    cached.fit()
    assert all(torch.equal(v, lora_state(cached.model)[k]) for k, v in lora_state(fresh.model).items())
    rows = {name: untimed(metrics(tmp_path / name)) for name in ("fresh", "cached")}
    warm = [r for r in rows["cached"] if r.get("warmup")][0]
    assert warm.pop("warmup_cached") == str(next(cache.iterdir()))
    for a, b in zip(rows["fresh"], rows["cached"]):
        a.pop("warmup_seconds", None), b.pop("warmup_seconds", None)
        assert a == b
    for name in ("warmup", "eval-warmup"):
        files = [tmp_path / run / "samples" / f"{name}.jsonl" for run in ("fresh", "cached")]
        assert files[0].read_text() == files[1].read_text()
    monkeypatch.setattr(format_mod, "collect_traces", collect)
    Trainer(config(tmp_path, "other", **{**opts, "format_warmup_lr": 5e-4, "steps": 1})).fit()  # another warm-up
    assert len(list(cache.iterdir())) == 2
