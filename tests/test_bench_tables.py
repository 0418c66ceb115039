"""The benchmark tables built from recorded results: learning.py's pooled M3PO-vs-GRPO test over seeds,
collab_rl.py's records of finished evaluations and its paired table."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import collab_rl  # noqa: E402
import learning  # noqa: E402
from shared import mcnemar_p  # noqa: E402


def _row(algo, seed, correct, lam=None):
    return {"model": "m", "steps": 30, "eval_size": 10, "seed": seed, "algo": algo, "variant": "think",
            "m3po_lambda": lam, "m3po_temperature": None if lam is None else 0.1,
            "after": len(correct) / 10, "after_correct": sorted(correct)}


def test_discordant_questions_are_summed_over_seeds_per_setting():
    rows = [_row("grpo", 0, {"a", "b", "c"}), _row("m3po", 0, {"a", "d", "e"}, 0.3),   # 2 / 2
            _row("grpo", 1, {"a", "b"}), _row("m3po", 1, {"a", "b", "c", "d"}, 0.3),   # 0 / 2
            _row("m3po", 0, {"a"}, 0.1)]                                               # one seed: no line
    (line,) = learning._think_pooled(rows)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:4] == ["λ0.3 T0.1", "0,1"]
    assert cells[4:6] == ["25.0", "35.0"]               # GRPO 0.3, 0.2; M3PO 0.3, 0.4
    assert cells[6] == "+10.0 ± 14.1"                    # per-seed differences 0 and +20 points
    assert cells[7] == "2 / 4" and cells[8] == f"{mcnemar_p(2, 4):.2f}"


def _eval_dir(root, name, seed, method, cons, read=False, finished=True):
    out = root / f"eval-{name}-s{seed}-{method}"
    out.mkdir(parents=True)
    rows = [{"id": f"q{i}", "pass_at_1": 0.5 * c, "cons_correct": c, "tokens": 100 + i,
             "paths": [{"rounds": [{"round": 0, "answer": "7", "correct": False, **({"peers": ["x"]} if read else {})},
                                   {"round": 1, "answer": "8", "correct": bool(c)}]}]} for i, c in enumerate(cons)]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (out / "summary.json").write_text("{}")


def test_collab_rl_records_finished_evaluations_and_pairs_them(tmp_path):
    root = tmp_path / "root"
    args = SimpleNamespace(root=str(root), seeds=[0], **{k: 1 for k in collab_rl.SETTING_KEYS})
    _eval_dir(root, "leap", 0, "leap", [1, 1, 0, 1], read=True)
    _eval_dir(root, "grpo", 0, "independent", [1, 0, 0, 0])
    _eval_dir(root, "grpo", 0, "leap", [1, 1, 1, 1], finished=False)  # still running: not recorded
    train = root / "train-leap-s0"
    train.mkdir()
    (train / "config.yaml").write_text("group_size: 4\nquestions_per_step: 2\n")
    (train / "metrics.jsonl").write_text("".join(json.dumps({"completion_length": 10, "leap_read_peers": 0.5,
                                                             "reward_mean": i / 10, "adv_nonzero_frac": 0.5}) + "\n"
                                                 for i in range(11)))  # 11 steps: first 10 mean 0.45, last 10 0.55
    _eval_dir(root, "base", 0, "leap", [0, 1, 0, 0])
    results = tmp_path / "collab_rl.jsonl"
    assert collab_rl.record(args, results) == 3
    assert collab_rl.record(args, results) == 3 and len(results.read_text().splitlines()) == 3  # replaced, not added
    recs = [json.loads(x) for x in results.read_text().splitlines()]
    leap = next(r for r in recs if r["adapter"] == "leap")
    assert leap["read_peers"] == 1.0 and leap["train_tokens_per_step"] == 80 and leap["train_read_peers"] == 0.5
    text = collab_rl.table(recs)
    assert "| leap | leap | 0 | 4 | 37.5 | 75.0 | 102 | 100.0 | 3 / 0 | 80 | 50.0 |" in text
    assert "| grpo | independent | 0 | 4 | 12.5 | 25.0 | 102 | - | - | - | - |" in text
    assert "| grpo | leap |" not in text
    assert f"| 0 | 4 | 1 | 2 | 0 | 1 | {mcnemar_p(2, 0):.3f} |" in text  # both / only LeaP-GRPO / only GRPO / neither
    # per seed: LeaP-GRPO+LeaP pass@1 (0.5, 0.5, 0, 0.5) against base+LeaP (0, 0.5, 0, 0): 2 higher, 0 lower
    assert "Per seed, pass@1 %: leap+leap (A) vs base+leap (B)" in text
    assert f"| 0 | 37.5 | 12.5 | 2 / 0 | {mcnemar_p(2, 0):.3f} |" in text
    assert "m3po+independent (A)" not in text  # no M3PO record: no section
    assert "| leap | 0 | 45.0 | 55.0 | 50 |" in text


def test_leap_t_rows_by_name_or_slug_and_untrained_adapters_skipped(tmp_path, capsys):
    import argparse

    import leap_t
    import pytest

    ap = argparse.ArgumentParser()
    assert leap_t.pick_rows(ap, None) is None
    assert leap_t.pick_rows(ap, ["base/LeaP", "leap-t-leap-leap-t"]) == ["base/LeaP", "LeaP-T/LeaP (--leap-t)"]
    assert len({leap_t.slug(n) for n in leap_t.ROWS}) == len(leap_t.ROWS)  # slugs name the rows one to one
    with pytest.raises(SystemExit) as e:
        leap_t.pick_rows(ap, ["base-leap", "no-such-row"])
    assert e.value.code == 2 and "no-such-row" in capsys.readouterr().err
    # the LeaP-T rows wait for their adapter (no data.json yet): skipped, nothing generated, no directory made
    a = SimpleNamespace(root=str(tmp_path), model="tiny-random", eval_questions=2, paths=2, batch_questions=2, chunk=2,
                        rounds=2, round_tokens=8, summary_tokens=4, answer_tokens=4, top_k=1)
    leap_t.stage_eval(a, 0, base_gen=None, rows=["LeaP-T/independent", "LeaP-T/LeaP (--leap-t)"])
    out = capsys.readouterr().out
    assert out.count("not trained yet") == 2
    assert not (tmp_path / "seed-0" / "eval").exists()

    # the committed snapshot: every seed under the root, rows not run yet said so
    (tmp_path / "seed-0").mkdir()
    a.__dict__.update(results=str(tmp_path / "res" / "leap_t.md"), train_questions=4, steps=1, batch_size=1, lr=1e-4,
                      max_len=64, keep_wrong=False)
    leap_t.snapshot(a)
    text = (tmp_path / "res" / "leap_t.md").read_text()
    assert "### seed 0" in text and "| base | independent | 0 | not run" in text
    assert [p.name for p in (tmp_path / "res").iterdir()] == ["leap_t.md"]  # no temporary file left


def test_leap_t_across_seeds_means_and_pooled_paired_tests(monkeypatch):
    import leap_t
    from shared import mcnemar_p

    def row(q, p1, cons, tokens=100, text="x", rounds=None):
        return {"id": q, "pass_at_1": p1, "cons_correct": cons, "tokens": tokens,
                "paths": [{"text": text, "tokens": tokens // 2, "rounds": rounds or []}] * 2}

    peers = [{"round": 0, "answer": "1", "correct": False, "peers": ["s"]}, {"round": 1, "answer": "2", "correct": True}]
    sft, lt = "base+SFT/independent", "LeaP-T/LeaP (--leap-t)"
    by_seed = {  # seed 0: LeaP-T higher on q1 and q2; seed 1: higher on q1, lower on q2; q3 of seed 1 unfinished
        0: {sft: [row("q1", 0.0, False), row("q2", 0.5, False)],
            lt: [row("q1", 1.0, True, 60, "<summarize>a</summarize>", peers), row("q2", 1.0, True, 60, "no tag")]},
        1: {sft: [row("q1", 0.0, False), row("q2", 1.0, True), row("q3", 1.0, True)],
            lt: [row("q1", 0.5, True, 80, "<summarize>a</summarize>", peers), row("q2", 0.5, True, 80, "<summarize>")]},
    }
    monkeypatch.setattr(leap_t, "seed_runs", lambda a, seed: (by_seed[seed], {"q1", "q2"}))
    a = SimpleNamespace(paths=2, round_tokens=32)
    text = leap_t.across_seeds(a, [0, 1])
    # SFT pass@1 per seed 0.25 and 0.5: mean 0.375, sd 0.177; LeaP-T/LeaP 1.0 and 0.5; format 0.5 and 1.0
    assert "| base+SFT | independent | 2 | 4 | 0.375 ± 0.177 | 0.250 ± 0.354 | 100 ± 0 | 0.000 ± 0.000 | - |" in text
    assert "| LeaP-T | LeaP (--leap-t) | 2 | 4 | 0.750 ± 0.354 | 1.000 ± 0.000 | 70 ± 14 | 0.750 ± 0.354 | 4 / 0 |" in text
    # pooled over seeds: pass@1 higher on 3, lower on 1; cons@N only LeaP-T on 3, only SFT on 0
    assert f"| {lt} | {sft} | 2 | 4 | 3 / 1 | {mcnemar_p(3, 1):.4f} | 3 / 0 | {mcnemar_p(3, 0):.4f} |" in text
    # one seed: the value without a spread
    assert "| LeaP-T | LeaP (--leap-t) | 1 | 2 | 1.000 | 1.000 | 60 | 0.500 | 2 / 0 |" in leap_t.across_seeds(a, [0])
