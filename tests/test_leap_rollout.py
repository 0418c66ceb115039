"""LeaP rollouts for GRPO (train/leap_rollout.py): the loss mask on a scripted LeaP transcript, the
log-probs the loss recomputes, resume, and the CLI. tiny-random model, tiny sizes."""

import json

import torch

from crosspath.backends.base import Completion
from crosspath.infer import leap
from crosspath.infer.prompts import TAG_SETS
from crosspath.tasks.problem import Problem
from crosspath.train import trainer as trainer_mod
from crosspath.train.leap_rollout import ExactHF, TokenPathStore, loss_mask, sample_leap, to_rollout
from crosspath.train.rollout import sequence_logprobs, trim
from crosspath.train.trainer import TrainConfig, Trainer

from train_helpers import assert_same_lora, metrics, text_reward, untimed

# what each scripted path writes, as pieces whose token boundaries are those of the pieces
REASON0 = ["Path {n}: 3 + 4 = 7.", "\n\n", "half a thought"]  # the last paragraph is dropped at the summary
SUMMARY = ["I found 7.", "</summarize>"]
REASON1 = ["Checking again, 7 it is."]
ANSWER = ["7}"]


class ScriptedHF(ExactHF):
    """Writes the scripted pieces (tokenized piece by piece) instead of sampling."""

    def _advance(self, handles, params):
        out = []
        for h in handles:
            p = self._paths[h]
            n = h  # handles are opened in path order: 0, 1, 2
            if "</summarize>" in params.stop:
                pieces, stop, reason = SUMMARY, "</summarize>", "stop"
            elif p.text.endswith("\\boxed{"):
                pieces, stop, reason = ANSWER, None, "length"
            elif "<comment>" in p.text:  # it has read its peers
                pieces, stop, reason = REASON1, None, "length"
            else:
                pieces, stop, reason = [x.format(n=n) for x in REASON0], None, "length"
            ids = [i for piece in pieces for i in self.tok(piece, add_special_tokens=False)["input_ids"]]
            text = "".join(pieces)
            p.text += text
            out.append(Completion(text=text, token_ids=ids, finish_reason=reason, stop=stop,
                                  logprobs=[-1.0] * len(ids)))
        return out


def runs(mask: list[int]) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of 1s."""
    out, start = [], None
    for j, m in enumerate(mask + [0]):
        if m and start is None:
            start = j
        elif not m and start is not None:
            out.append((start, j))
            start = None
    return out


def test_loss_mask_on_a_scripted_leap_transcript(tiny):
    model, tok = tiny
    problems = [Problem("q0", "What is 3 + 4?", "7")]
    store = TokenPathStore(ScriptedHF(model, tok))
    render = lambda user, prefill="": f"{user}\n{prefill}"  # noqa: E731
    sampling = type("S", (), dict(paths=3, temperature=1.0, top_p=1.0, sample_top_k=0, min_p=0.0))
    opts = leap.LeapOptions(rounds=2, round_tokens=16, summary_tokens=8, answer_tokens=4, peers_k=2)
    traces = leap.solve(problems, store, sampling, render, 0, opts)[0]
    r = to_rollout(store, [t.own_text for t in traces], 3)
    for n, t in enumerate(store.tokens):
        prompt_len = store.prompt_len[n]
        # the sequence is the text: no drift between what the model read and what the phases wrote
        assert tok.decode(t.ids, skip_special_tokens=False) == store.text(n)
        assert sum(t.target[:prompt_len]) == 0
        target = loss_mask(r)[n].tolist()
        comp = r.completion_ids[n].tolist()
        spans = [tok.decode(comp[a:b]) for a, b in runs(target)]
        # generated spans are targets, whole and in order; the dropped paragraph is nowhere
        assert spans == [f"Path {n}: 3 + 4 = 7.", "I found 7.</summarize>", "Checking again, 7 it is.", "7}"]
        # everything else after the prompt is injected: trigger + opener, peers' block, answer lead-in
        injected = tok.decode([c for c, m, real in zip(comp, target, r.completion_mask[n].tolist())
                               if real and not m])
        assert "<summarize>" in injected and "<comment>" in injected and 'Peer 1: "' in injected
        assert injected.rstrip().endswith("\\boxed{") and "half a thought" not in store.text(n)
        assert "I found 7." in injected  # peers' summaries: context, never targets
        assert r.logprobs[n][r.target_mask[n].bool()].eq(-1.0).all()
        assert r.logprobs[n][~r.target_mask[n].bool()].eq(0.0).all()
        assert traces[n].own_text.count("<comment>") == 0 and TAG_SETS["comment"].peers == "comment"
    store.close()


def leap_config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(algo="leap", model="tiny-random", device="cpu", steps=2, questions_per_step=2, group_size=3,
                train_size=20, eval_size=0, eval_every=0, save_every=1, warmup_ratio=0.0, lr=1e-2,
                max_grad_norm=1.0, micro_batch_size=4, tensorboard=False, progress=False, leap_rounds=2,
                leap_round_tokens=10, leap_summary_tokens=5, leap_answer_tokens=3, out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def test_loss_forward_reproduces_the_rollout_log_probs(tmp_path):
    t = Trainer(leap_config(tmp_path, temperature=1.0, top_p=0.9))
    r, traces, stats = sample_leap(t.model, t.tok, t.train_set[:2], t.cfg, seed=11)
    assert stats["paths"] == 6 and stats["read_peers"] == 6  # everyone reasons 10 tokens, then reads 2 peers
    mask = loss_mask(r).bool()
    # the generated tokens are targets: as many as the paths wrote, minus the dropped half paragraphs
    assert 0 < int(mask.sum()) <= sum(tr.tokens for per_q in traces for tr in per_q)
    t.model.eval()
    with torch.no_grad():
        lp = sequence_logprobs(t.model, trim(r.select(list(range(6)))), use_recorded_embeds=False)
    torch.testing.assert_close(lp[loss_mask(trim(r.select(list(range(6))))).bool()], r.logprobs[mask],
                               atol=1e-4, rtol=0)


def test_leap_training_logs_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "reward", text_reward)
    straight = Trainer(leap_config(tmp_path, "straight"))
    straight.fit()
    first = Trainer(leap_config(tmp_path, "split", steps=1))
    first.fit()
    resumed = Trainer(leap_config(tmp_path, "split", steps=2, resume=True))
    assert resumed.step == 1
    resumed.fit()
    a = assert_same_lora(straight.model, resumed.model)
    assert any(float(v.abs().sum()) > 0 for k, v in a.items() if "lora_B" in k)  # it did learn something
    rows = metrics(tmp_path / "straight")
    assert untimed(rows) == untimed(metrics(tmp_path / "split"))
    for key in ("leap_read_peers", "leap_changed", "leap_wrong_to_right", "leap_right_to_wrong",
                "leap_summary_tokens", "leap_path_tokens", "reward_mean"):
        assert key in rows[-1]
    assert rows[-1]["leap_read_peers"] == 1.0 and 0 < rows[-1]["leap_summary_tokens"] <= 5


def test_cli_train_leap_then_resume(tmp_path):
    from crosspath.cli import main

    out = tmp_path / "cli-leap"
    args = ["train", "--algo", "leap", "--model", "tiny-random", "--device", "cpu", "--group-size", "2",
            "--questions-per-step", "1", "--leap-round-tokens", "6", "--leap-summary-tokens", "3",
            "--leap-answer-tokens", "2", "--train-size", "8", "--eval-size", "2", "--eval-every", "0",
            "--no-tensorboard", "--no-progress", "--out", str(out)]
    assert main(args + ["--steps", "2"]) == 0
    assert main(["train", "--out", str(out), "--steps", "3", "--resume", "--no-progress"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("leap_read_peers" in r for r in rows)
    assert (out / "final").is_dir()


def test_exchange_stats_count_answer_changes_after_the_first_peers_block():
    from crosspath.infer.paths import PathTrace
    from crosspath.train.leap_rollout import exchange_stats

    p = Problem("q", "What is 3 + 4?", "7")
    peers = [{"peer": 1, "similarity": 0.5}]

    def trace(before, final, read=True):
        rounds = [{"round": 0, "answer": before, "summary_tokens": 4, **({"peers": peers} if read else {})},
                  {"round": 1, "answer": final}]
        return PathTrace(prompt="", text=f"\\boxed{{{final}}}", own_text=f"\\boxed{{{final}}}", tokens=10,
                         rounds=rounds)

    s = exchange_stats([p], [[trace("5", "7"), trace("7", "5"), trace("7", "7"), trace(None, "7"),
                              trace("5", "7", read=False)]])
    assert (s["paths"], s["read_peers"], s["changed"]) == (5, 4, 3)
    assert (s["wrong_to_right"], s["right_to_wrong"]) == (2, 1)
    assert (s["summaries"], s["summary_tokens"], s["path_tokens"]) == (5, 20, 50)
