"""The RL variants in the trainer, on the tiny random Llama: every option trains 2 steps and resumes to
a 3rd from the CLI; SPO's trackers survive a resume exactly; hinted rows train on the plain prompt
with their sampling log-probs as the ratio's denominator; rollout records carry group and path ids."""

import json
from dataclasses import replace

import pytest
import torch

from crosspath.train import trainer as trainer_mod
from crosspath.train import update as update_mod
from crosspath.train.trainer import TrainConfig, Trainer

import train_helpers
from train_helpers import assert_same_lora, kill_at_step, metrics, text_reward, untimed

VARIANTS = {
    "spo": ["--baseline", "spo", "--group-size", "1", "--spo-init-samples", "2"],
    "seed-grpo": ["--seed-grpo"],
    "grpo-lambda": ["--length-penalty", "grpo-lambda"],
    "guide": ["--hints", "guide"],
    "seele": ["--hints", "seele", "--hint-rounds", "2"],
    "one-shot": ["--train-size", "1", "--entropy-coef", "0.001"],
    "gspo": ["--importance-level", "sequence", "--num-iterations", "2", "--epsilon", "3e-4", "--epsilon-high", "4e-4"],
    "cispo": ["--loss-type", "cispo", "--epsilon-high", "5.0", "--scale-rewards", "batch"],
    "filter-std": ["--filter-groups", "--filter-std-eps", "1e-3", "--max-filter-rounds", "1"],
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_two_steps_and_resumes(tmp_path, name):
    from crosspath.cli import main

    out = tmp_path / name
    base = ["train", "--model", "tiny-random", "--device", "cpu", "--questions-per-step", "1", "--group-size", "2",
            "--max-new-tokens", "8", "--train-size", "20", "--eval-size", "2", "--eval-every", "2", "--save-every", "1",
            "--no-tensorboard", "--no-progress", "--out", str(out)]
    assert main(base + VARIANTS[name] + ["--steps", "2"]) == 0
    assert main(["train", "--out", str(out), "--steps", "3", "--resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert (out / "checkpoints" / "step-3").is_dir() and (out / "final").is_dir()
    if name == "spo":
        assert (out / "checkpoints" / "step-3" / "extra.pt").exists() and "spo_baseline" in rows[-1]
    if name in ("guide", "seele"):  # the random model never solves a sum: every group is hopeless
        assert rows[-1]["hinted_groups"] >= 1
    sample = json.loads((out / "samples" / "step-3.jsonl").read_text().splitlines()[0])
    assert {"group", "path", "hinted"} <= set(sample)


def config(tmp_path, name="run", **kw) -> TrainConfig:
    return train_helpers.config(tmp_path, name, **{"eval_size": 0, **kw})


def test_spo_resume_equals_uninterrupted(tmp_path, monkeypatch):
    """G = 1, 3 training questions: every question comes back, so D, rho and the stored responses
    all matter; the run killed after step 3 and resumed from step 2 ends with the same weights,
    metrics and trackers."""
    monkeypatch.setattr(trainer_mod, "reward", text_reward)
    common = dict(baseline="spo", group_size=1, questions_per_step=2, train_size=3, spo_init_samples=2,
                  steps=4, save_every=2)
    straight = Trainer(config(tmp_path, "straight", **common))
    straight.fit()
    entries = straight.variants.tracker.entries
    assert len(entries) == 3 and all(e["step"] > 0 and e["tokens"] for e in entries.values())
    rows = metrics(tmp_path / "straight")
    assert any(r["adv_nonzero_frac"] > 0 for r in rows) and any(r["grad_norm"] > 0 for r in rows)

    cfg = config(tmp_path, "killed", **common)
    kill_at_step(cfg, 4, monkeypatch)
    resumed = Trainer(replace(cfg, resume=True))
    assert resumed.step == 2 and len(resumed.variants.tracker.entries) == 3
    resumed.fit()
    assert_same_lora(straight.model, resumed.model)
    assert untimed(metrics(tmp_path / "straight")) == untimed(metrics(tmp_path / "killed"))
    assert resumed.variants.tracker.entries == entries


def test_hinted_rows_train_without_the_hint(tmp_path, monkeypatch):
    """Unhinted completions all score 0, hinted ones by text length: every group is re-sampled with a
    hint; the update sees the hinted rows with the plain prompt and their sampling log-probs as
    the ratio's denominator (clipped at 0.2), the plain rows on-policy."""
    asked = []
    real_sample = Trainer.sample

    def sample(self, problems, step, attempt=0):
        asked.append([p.question for p in problems])
        return real_sample(self, problems, step, attempt)

    def reward(problem, text, marker="####", marker_rule=True):
        return text_reward(problem, text) if "Hint" in asked[-1][0] else (0.0, False, 0)

    seen = {}
    real_loss = update_mod.policy_loss

    def spy_loss(logp, old, ref, adv, mask, *args, **kwargs):
        seen.setdefault("calls", []).append((logp.detach(), old, adv, args[2]))
        return real_loss(logp, old, ref, adv, mask, *args, **kwargs)

    real_update = Trainer.update

    def spy_update(self, rollout, advantages, ids=(), step=None, hinted=None):
        seen["rollout"], seen["hinted"] = rollout, hinted
        return real_update(self, rollout, advantages, ids, step, hinted)

    monkeypatch.setattr(Trainer, "sample", sample)
    monkeypatch.setattr(trainer_mod, "reward", reward)
    monkeypatch.setattr(update_mod, "policy_loss", spy_loss)
    monkeypatch.setattr(Trainer, "update", spy_update)
    t = Trainer(config(tmp_path, hints="guide", steps=1, micro_batch_size=16, log_samples=16,
                       task_options={"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}))
    row = t.fit()[-1]
    assert row["hinted_groups"] == 2 and len(asked) == 2
    assert all("Hint, the first steps of a solution" in q for q in asked[1])
    assert "leaving" in asked[1][0] and "Hint" not in asked[0][0]
    r, hinted = seen["rollout"], seen["hinted"]
    assert hinted.tolist() == [False] * 8 + [True] * 8
    for q in range(2):  # plain rows 4q..4q+3 and hinted rows 8+4q.. of one question share the plain prompt
        torch.testing.assert_close(r.prompt_ids[8 + 4 * q:12 + 4 * q], r.prompt_ids[4 * q:4 * q + 4])
    logp, old, adv, eps = seen["calls"][0]
    assert eps == 0.2
    mask = r.completion_mask[:, : logp.shape[1]].bool()
    torch.testing.assert_close(old[:8][mask[:8]], logp[:8][mask[:8]])  # on-policy rows
    torch.testing.assert_close(old[8:][mask[8:]], r.sampling_logprobs[8:, : logp.shape[1]][mask[8:]])
    assert not torch.allclose(old[8:][mask[8:]], logp[8:][mask[8:]], atol=1e-3)  # the hint changed the context
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples" / "step-1.jsonl").read_text().splitlines()]
    assert [(s["group"], s["path"], s["hinted"]) for s in samples] == (
        [(q, j, False) for q in range(2) for j in range(4)] + [(q, 4 + j, True) for q in range(2) for j in range(4)])


def test_options_that_cannot_work_are_refused(tmp_path):
    from crosspath.config import ConfigError

    with pytest.raises(ConfigError, match="--group-size 1: must be >= 2 without --baseline spo"):
        Trainer(config(tmp_path, group_size=1))
    with pytest.raises(ConfigError, match="--scale-rewards batch: has no effect with --baseline spo"):
        Trainer(config(tmp_path, baseline="spo", scale_rewards="batch"))
    with pytest.raises(ConfigError, match="would drop every group of one"):
        Trainer(config(tmp_path, baseline="spo", group_size=1, filter_groups=True))
    assert not (tmp_path / "run").exists()  # refused before the run directory was claimed


def test_one_shot_example_by_id_and_its_variance_ranking(tmp_path, monkeypatch):
    from crosspath.train.variants import historical_variance

    monkeypatch.setattr(trainer_mod, "reward", text_reward)
    pool = Trainer(config(tmp_path, "pool", train_size=3, steps=3, log_samples=8, save_every=0))
    pool.fit()
    ranked = historical_variance(tmp_path / "pool")
    assert {qid for qid, _, _ in ranked} == {p.id for p in pool.train_set}
    assert all(visits == 2 for _, _, visits in ranked)  # 3 steps x 2 questions over 3 questions
    assert [v for _, v, _ in ranked] == sorted((v for _, v, _ in ranked), reverse=True)
    best = ranked[0][0]
    one = Trainer(config(tmp_path, "one", train_size=3, train_ids=[best], steps=1))
    assert [p.id for p in one.train_set] == [best] and {p.id for p in one.questions(0)} == {best}
    with pytest.raises(ValueError, match="not among the first 3"):
        Trainer(config(tmp_path, "bad", train_size=3, train_ids=["nope"]))


def test_config_choices_match_the_math_modules():
    from crosspath import train
    from crosspath.train import grpo, hints, shaping, spo

    assert train.IMPORTANCE_LEVELS == grpo.IMPORTANCE_LEVELS and train.RHO_TYPES == spo.RHO_TYPES
    assert train.SEED_SCALINGS == shaping.SEED_SCALINGS and train.HINT_MODES == hints.HINT_MODES
    assert TrainConfig.seed_alpha == shaping.SEED_ALPHA


def test_an_entropy_bonus_alone_is_warned_about_once():
    from types import SimpleNamespace

    from crosspath.train.variants import ENTROPY_ONLY_STEPS, Variants

    def run(coef, fracs):
        v = Variants(SimpleNamespace(cfg=TrainConfig(entropy_coef=coef)))
        return [v.watch({"step": i + 1, "adv_nonzero_frac": f, "accuracy": 0.0}) for i, f in enumerate(fracs)]

    n = ENTROPY_ONLY_STEPS
    said = run(0.001, [0.0] * (2 * n))
    assert [i for i, m in enumerate(said) if m] == [n - 1]  # once, at the n-th flat step in a row
    assert f"steps 1-{n}" in said[n - 1] and "--entropy-coef 0.001" in said[n - 1]
    assert not any(run(0.001, ([0.0] * (n - 1) + [0.5]) * 3))  # a step with a gradient resets the count
    assert not any(run(0.0, [0.0] * (2 * n)))  # without the bonus a flat step does not move the weights
