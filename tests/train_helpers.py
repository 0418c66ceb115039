"""What the trainer tests share: a small TrainConfig on the tiny random Llama, a reward the random
model can earn, and readers of a run's LoRA weights and metrics."""

import json

from crosspath.tasks import count_markers
from crosspath.train.trainer import TrainConfig

TIMING = {"step_seconds", "rollout_seconds", "update_seconds"}  # the metrics that differ between equal runs


def text_reward(problem, text, marker="####", marker_rule=True):
    """A stand-in for `trainer.reward` the random model can earn: 1 for an even character count."""
    r = float(len(text) % 2 == 0)
    return r, bool(r), count_markers(text, marker)


def config(tmp_path, name="run", **kw) -> TrainConfig:
    """2 steps of 2 questions x 4 completions x 8 tokens, a checkpoint every step, run dir tmp_path/name."""
    base = dict(model="tiny-random", device="cpu", steps=2, questions_per_step=2, group_size=4,
                max_new_tokens=8, train_size=40, eval_size=4, eval_every=0, save_every=1,
                warmup_ratio=0.0, lr=1e-2, max_grad_norm=1.0, micro_batch_size=5, tensorboard=False,
                progress=False, out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def lora_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def untimed(rows: list[dict]) -> list[dict]:
    """Metrics rows without the TIMING fields: what a resumed run must reproduce exactly."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def kill_at_step(cfg: TrainConfig, step: int, monkeypatch) -> None:
    """Run `cfg` and stop it as a kill would (KeyboardInterrupt) when step `step` starts: the steps
    before it are logged, its checkpoints are whatever save_every left."""
    import pytest

    from crosspath.train.trainer import Trainer

    original = Trainer.train_step

    def killed(self):
        if self.step == step - 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg).fit()
    monkeypatch.setattr(Trainer, "train_step", original)


def assert_same_lora(model_a, model_b) -> dict:
    """The two models' LoRA weights agree (to 1e-6); returns the first one's."""
    import torch

    a, b = lora_state(model_a), lora_state(model_b)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    return a
