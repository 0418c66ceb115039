"""GRPO with rollouts on the real vLLM engine (`--rollout-backend vllm`) on the embedded SmolLM2:
2 steps, then a resume for a third on the same (shared) engine. Marked `vllm` (`make test-vllm`);
without a working vLLM it skips with the reason (the `vllm_ok` fixture of conftest.py)."""

from __future__ import annotations

import json

import pytest


pytestmark = pytest.mark.vllm

MODEL = "smollm2-135m"


@pytest.fixture
def varied_reward(monkeypatch):
    """The stand-in reward of the trainer tests (1 for an even character count): it varies within a
    group, so every step updates and scores the engine's log-probs (SmolLM2 often gets a group all wrong)."""
    from crosspath.tasks import count_markers
    from crosspath.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "reward", lambda problem, text, marker="####", marker_rule=True: (
        float(len(text) % 2 == 0), len(text) % 2 == 0, count_markers(text, marker)))


def config(out, **kw):
    from crosspath.train import TrainConfig

    base = dict(model=MODEL, rollout_backend="vllm", rollout_max_model_len=1024, device="cpu", steps=2,
                questions_per_step=2, group_size=4, max_new_tokens=24, train_size=20, eval_size=0, eval_every=0,
                save_every=1, lr=1e-3, max_grad_norm=1.0, warmup_ratio=0.0, micro_batch_size=8, tensorboard=False,
                progress=False, threads=1, out=str(out))
    return TrainConfig(**{**base, **kw})


def test_grpo_on_vllm_rollouts_resumes(vllm_ok, varied_reward, tmp_path):
    from crosspath.train.engine_rollout import ADAPTERS
    from crosspath.train.trainer import Trainer

    out = tmp_path / "run"
    first = Trainer(config(out))
    first.fit()
    ids = [first.engine.gen.lora.lora_int_id]
    second = Trainer(config(out, steps=3, resume=True))
    assert second.step == 2 and second.engine.gen.llm is first.engine.gen.llm  # one engine in the process
    second.fit()
    ids.append(second.engine.gen.lora.lora_int_id)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert ids[1] > ids[0]  # a new LoRA id for every step's adapter
    for r in rows:
        assert r["completion_length"] > 0 and r["loss"] == r["loss"]
        # fp32 engine vs fp32 trainer, the engine using the step's adapter: close log-probs
        assert 0 <= r["sampling_logp_diff_mean"] < 0.05, r
        assert r["sampling_logp_diff_max"] >= r["sampling_logp_diff_mean"]
    assert not (out / ADAPTERS).exists() and (out / "final" / "adapter_config.json").exists()
    samples = [json.loads(line) for line in (out / "samples" / "step-3.jsonl").read_text().splitlines()]
    assert samples and all(isinstance(s.get("completion", s.get("text", "")), str) for s in samples)


def test_leap_grpo_on_vllm_rollouts(vllm_ok, varied_reward, tmp_path):
    """LeaP-GRPO on the engine: paths sent as exact token ids; the engine's log-probs of the path's own
    tokens match the trainer's."""
    from crosspath.train.trainer import Trainer

    t = Trainer(config(tmp_path / "leap", algo="leap", steps=1, questions_per_step=1, group_size=3, leap_rounds=2,
                       leap_round_tokens=16, leap_summary_tokens=8, leap_answer_tokens=8))
    row = t.fit()[-1]
    assert row["leap_path_tokens"] > 0 and "leap_read_peers" in row
    assert 0 <= row["sampling_logp_diff_mean"] < 0.05, row
