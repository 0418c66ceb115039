"""LeaP-T: the trace format and its loss mask, splicing, the resumable trace pipeline and its yield,
LeaP-T / SFT-baseline training with matched target tokens, and the format rate.

Generators are scripted (stateless, character tokenizer); training uses the tiny random Llama.
"""

from __future__ import annotations

import doctest
import importlib
import json
import re

import pytest

from crosspath.backends.base import Completion
from crosspath.distill.data import IGNORE, encode_sft, read_rows
from crosspath.distill.leap_t import LeapTConfig, format_rate, format_rate_of, leap_t_samples, train_leap_t
from crosspath.distill.leap_traces import LeapTracesConfig, build_traces, training_questions
from crosspath.distill.splice import cut_points, splice_question
from crosspath.distill.traces import leap_t_target, parse_trace
from crosspath.infer.prompts import (FINAL_ANSWER, LEAP_PREFILL, NO_COMMENTS, RECAP_TRIGGERS, RESOLVE, RESUME_ALONE,
                                     SUMMARY_OPENER, TAG_SETS, peer_block, summary_request)
from crosspath.models import render_prompt
from crosspath.tasks.problem import Problem
from test_distill import char_tokenizer

TAGS = TAG_SETS["comment"]


@pytest.mark.parametrize("name", ["traces", "splice", "leap_t", "data"])
def test_docstring_examples(name):
    assert doctest.testmod(importlib.import_module(f"crosspath.distill.{name}")).failed == 0


def trained_and_hidden(tok, target, masked):
    enc = encode_sft(tok, render_prompt(tok, "Q"), target, masked, add_eos=False)
    n_prompt = len(tok(render_prompt(tok, "Q"), add_special_tokens=False)["input_ids"])
    ids, labels = enc.input_ids[n_prompt:], enc.labels[n_prompt:]
    return (tok.decode([t for t in labels if t != IGNORE]),
            tok.decode([i for i, t in zip(ids, labels) if t == IGNORE]))


# ---- the loss mask ----------------------------------------------------------------------------------

OWN = ["I add 2 and 3.\n\nThe sum is 5.", "Peers say 6, but 2 + 3 = 5 stands.", "Done checking"]


def leap_text():
    """A LeaP path as the loop writes it: two exchanges (peers, then none), then a forced answer."""
    return (OWN[0] + summary_request(0, 1, TAGS) + "the sum is 5.</summarize>" + peer_block(["So far, 6.", "So far, 5."], TAGS)
            + OWN[1] + summary_request(1, 1, TAGS) + "I have 5.</summarize>" + peer_block([], TAGS)
            + OWN[2] + FINAL_ANSWER + "5}")


@pytest.mark.parametrize("which", ["char", "smollm2"])
def test_loss_mask_trains_own_words_never_injected_text(which, tiny):
    tok = char_tokenizer() if which == "char" else tiny[1]
    target, masked = leap_t_target(leap_text())
    trained, hidden = trained_and_hidden(tok, target, masked)
    if which == "char":  # one token per character: the trained text is exactly the path's own words + the format
        assert trained == (OWN[0] + "\n\n<summarize>\nThe sum is 5.</summarize>" + OWN[1]
                           + "\n\n<summarize>\nI have 5.</summarize>" + OWN[2] + "5}")
    for own in OWN + ["<summarize>", "</summarize>", "The sum is 5.", "I have 5.", "5}"]:
        assert own in trained
    assert trained.count("<summarize>") == 2
    for injected in ('Peer 1: "6."', 'Peer 2: "5."', "<comment>", "</comment>", RESOLVE.strip()[:30], NO_COMMENTS,
                     RESUME_ALONE.strip(), "I have to give my answer now", "**Final Answer**"):
        assert injected not in trained and injected in hidden
    for dropped in RECAP_TRIGGERS + (SUMMARY_OPENER.strip(),):  # the LeaP-T loop never shows these
        assert dropped not in target


def test_parse_trace_reads_rounds_summaries_and_peers():
    rounds = parse_trace(leap_text())
    assert [r["summary"] for r in rounds] == ["So far, the sum is 5.", "So far, I have 5.", None]
    assert [r["peers"] for r in rounds] == [["So far, 6.", "So far, 5."], [], None]
    assert [r["text"] for r in rounds] == [OWN[0], OWN[1], OWN[2] + FINAL_ANSWER + "5}"]


# ---- splicing ------------------------------------------------------------------------------------------

def independent_row():
    texts = ["We add 4 and 3.\n\nFirst 4 + 3 = 7.\n\nThen 7 - 2 = 5.\n\nSo the answer is \\boxed{5}.",
             "Start: 4 + 3 is 7. Next 7 - 2 is 5. Answer \\boxed{5}.",
             "4 + 3 = 7\n7 - 2 = 5\nhence the result is \\boxed{5}",
             "We add 4 and 3.\n\nFirst 4 + 3 = 8.\n\nThen 8 - 2 = 6.\n\nSo the answer is \\boxed{6}.",
             "\\boxed{5}"]  # too short to reach the first exchange
    return {"id": "q", "question": "4 + 3 - 2 =", "answer": "5", "choices": None,
            "paths": [{"text": t, "correct": "{5}" in t, "answer": "5" if "{5}" in t else "6", "tokens": len(t)}
                      for t in texts]}


def test_spliced_trace_parses_back_into_rounds_summaries_and_peers():
    tok = char_tokenizer()
    row = independent_row()
    traces = splice_question(row, tok, round_tokens=20, rounds=3, summary_tokens=40, top_k=4, router="all")
    assert [t["path"] for t in traces] == [0, 1, 2] and {t["origin"] for t in traces} == {"spliced"}
    every = _all_summaries(row, tok)
    assert every == {**every, **{(t["path"], rd["round"]): rd["summary"] for t in traces for rd in t["rounds"]}}
    for t in traces:
        src = row["paths"][t["path"]]["text"]
        rounds = parse_trace(t["text"])
        assert len(rounds) == t["exchanges"] + 1 == 3
        # the path's own words come back in order; only whitespace at the cuts differs
        assert " ".join("".join(r["text"] + " " for r in rounds).split()) == " ".join(src.split())
        for k, (rd, parsed) in enumerate(zip(t["rounds"], rounds)):
            assert parsed["summary"] == rd["summary"] and rd["summary"].startswith(SUMMARY_OPENER)
            body = rd["summary"][len(SUMMARY_OPENER):]
            before = " ".join(" ".join(r["text"] for r in rounds[:k + 1]).split()).lower()
            assert body.lower() in before  # true content: the path had written it before the cut
            peers = [p["peer"] for p in rd["peers"]]
            assert t["path"] not in peers and 3 in peers and 4 not in peers  # the wrong path is a peer, the short one ended
            assert parsed["peers"] == [every[(m, k)] for m in peers]  # the peers' own recorded summaries
        target, masked = leap_t_target(t["text"])  # trains the path's words, never the peers'
        trained, hidden = trained_and_hidden(tok, target, masked)
        assert " ".join(trained.replace("<summarize>", " ").replace("</summarize>", " ").split()).startswith(
            " ".join(rounds[0]["text"].split()))
        assert "Peer 1" in hidden and "Peer 1" not in trained and trained.count("<summarize>") == 2


def _all_summaries(row, tok):
    """Every path's recorded summaries, wrong ones included (spliced as peers only)."""
    from crosspath.distill.splice import conclusion

    out = {}
    for j, p in enumerate(row["paths"]):
        for k, c in enumerate(cut_points(p["text"], tok, 20, 3)):
            out[(j, k)] = SUMMARY_OPENER + conclusion(p["text"][:c], tok, 40)
    return out


def test_cuts_fall_on_boundaries_before_the_forced_answer():
    tok = char_tokenizer()  # one token per character
    text = "Line one is here.\n\nLine two is here too." + FINAL_ANSWER + "5}"
    # token 20 lies in "Line two": cut at the paragraph break; token 40 is the forced answer's: no second cut
    assert cut_points(text, tok, 20, 5) == [len("Line one is here.")]
    assert cut_points("One. Two three four five", tok, 10, 2) == [len("One.")]  # else a sentence end
    assert cut_points(text, tok, 12, 3) == [len("Line one is"), len("Line one is here.")]  # else a space
    assert cut_points("short", tok, 10, 3) == []  # ended before the first exchange


# ---- the trace pipeline: resumable, chunked, with its yield ----------------------------------------------

class ScriptedModel:
    """Stateless generator. The path at position i % 4 == 3 of a call writes a wrong sum; question 0's
    path 2 ends before the first exchange; one summary of question 1 runs out of budget."""

    def __init__(self, die_after=None):
        self.tok = char_tokenizer()
        self.calls = 0
        self.die_after = die_after

    def generate(self, prompts, params):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return [self._one(p, i, params) for i, p in enumerate(prompts)]

    def _one(self, p, i, params):
        a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", p).groups())
        sums = re.findall(r"The sum is (-?\d+)\.", p)
        value = a + b + (i % 4 == 3)
        if p.endswith(SUMMARY_OPENER):
            if a == 1 and i % 4 == 1:
                return Completion(text=f"I have {sums[-1]}", token_ids=[1] * params.max_tokens, finish_reason="length")
            return Completion(text=f"I have {sums[-1]}.</summarize>", token_ids=[1] * 4, finish_reason="stop",
                              stop="</summarize>")
        if p.endswith("\\boxed{"):
            return Completion(text=f"{sums[-1]}}}", token_ids=[1] * 2, finish_reason="stop")
        if "</comment>" in p:  # LeaP round 1, after the peers' block
            return Completion(text=f"So the answer is \\boxed{{{sums[-1]}}}.", token_ids=[1] * 6, finish_reason="stop")
        if a == 0 and i % 4 == 2:  # ends at once (LeaP: before the first exchange; independent: too short to splice)
            return Completion(text=f"\\boxed{{{a + b}}}", token_ids=[1] * 3, finish_reason="stop")
        if LEAP_PREFILL in p:  # LeaP round 0
            return Completion(text=f"I add {a} and {b}.\n\nThe sum is {value}.\n\nStill chec",
                              token_ids=[1] * params.max_tokens, finish_reason="length")
        return Completion(text=f"I add {a} and {b}.\n\nThe sum is {value}.\n\nSo the answer is \\boxed{{{value}}}.",
                          token_ids=[1] * 20, finish_reason="stop")


PROBLEMS = [Problem(id=f"q{i}", question=f"What is {i} + {i + 1}?", answer=str(2 * i + 1)) for i in range(6)]


def _cfg(out, **kw):
    return LeapTracesConfig(out=str(out), splice=True, chunk=2, batch_questions=2, paths=4, rounds=3, round_tokens=20,
                            summary_tokens=8, answer_tokens=4, **kw)


def test_leap_traces_resume_after_a_kill_and_report_the_yield(tmp_path, capsys):
    # uninterrupted
    full = build_traces(_cfg(tmp_path / "full"), generator=ScriptedModel(), problems=PROBLEMS, log=print)
    # killed during the second chunk's LeaP run, with a half-written line left behind, then resumed
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        build_traces(_cfg(part), generator=ScriptedModel(die_after=4), problems=PROBLEMS, log=lambda s: None)
    assert len(read_rows(part / "leap" / "results.jsonl")) == 2 and len(read_rows(part / "traces.jsonl")) > 0
    with open(part / "leap" / "results.jsonl", "a") as f:
        f.write('{"id": "q2", "paths": [')
    gen = ScriptedModel()
    resumed = build_traces(_cfg(part), generator=gen, problems=PROBLEMS, log=lambda s: None)
    assert gen.calls == 2 * 3 + 2 * 1  # only chunks 2 and 3 ran (3 LeaP calls + 1 independent call per batch)
    assert read_rows(part / "traces.jsonl") == read_rows(tmp_path / "full" / "traces.jsonl")
    assert resumed == full == json.loads((part / "yield.json").read_text())
    # the yield: 6 questions x 4 paths per origin; path 3 of each question is wrong
    assert full["leap"] == {"questions": 6, "paths": 24, "correct": 18, "kept": 16, "yield": round(16 / 24, 4),
                            "dropped": {"cut_summary": 1, "no_summary": 1, "wrong": 6}}
    assert full["spliced"] == {"questions": 6, "paths": 24, "correct": 18, "kept": 17, "yield": round(17 / 24, 4),
                               "dropped": {"no_exchange": 1, "wrong": 6}}
    assert full["traces"] == 33 and full["questions_with_traces"] == 6
    rows = read_rows(tmp_path / "full" / "traces.jsonl")
    assert {r["origin"] for r in rows} == {"leap", "spliced"} and all(r["correct"] for r in rows)
    for r in rows:  # both origins parse back into rounds with a summary at every exchange
        assert [x["summary"] for x in parse_trace(r["text"])[:-1]] == [rd["summary"] for rd in r["rounds"]]
    out = capsys.readouterr().out
    assert "leap     6 questions, 24 paths, 18 correct, 16 kept" in out and "no_exchange 1" in out


def test_training_questions_never_held_out():
    opts = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    with pytest.raises(ValueError, match="held-out"):
        training_questions(LeapTracesConfig(task="rg:chain_sum", task_seed=3, eval_task_seed=3), log=lambda s: None)
    with pytest.raises(ValueError, match="held-out"):
        training_questions(LeapTracesConfig(task="gsm8k", split="test", eval_split="test"), log=lambda s: None)
    cfg = LeapTracesConfig(task="rg:chain_sum", task_options=opts, task_seed=0, eval_task_seed=1, limit=40, eval_limit=60)
    train, info = training_questions(cfg, log=lambda s: None)
    from crosspath.tasks import load_task

    held = {p.question for p in load_task("rg:chain_sum", limit=60, seed=1, **opts)}
    assert len(train) == 40 and not held & {p.question for p in train} and info["dropped_held_out"] > 0
    assert len({p.question for p in train}) == 40  # repeats dropped too


# ---- LeaP-T training, the SFT baseline at equal target tokens, the format rate --------------------------

def test_leap_t_and_sft_baseline_train_on_equal_target_tokens(tmp_path):
    traces = tmp_path / "traces"
    build_traces(_cfg(traces), generator=ScriptedModel(), problems=PROBLEMS, log=lambda s: None)
    samples, stats = leap_t_samples(LeapTConfig(traces=[str(traces)], origins=["spliced"]))
    assert stats["origins"] == {"spliced": 17} and all(s.masked for s in samples)
    common = dict(traces=[str(traces)], model="tiny-random", batch_size=2, lora_r=4, max_len=256, device="cpu")
    lt = train_leap_t(LeapTConfig(out=str(tmp_path / "lt"), steps=3, **common), log=lambda s: None)
    assert (tmp_path / "lt" / "adapter" / "adapter_config.json").exists()
    assert lt["data"]["origins"] == {"leap": 16, "spliced": 17} and lt["data"]["steps"] == 3
    sft = train_leap_t(LeapTConfig(out=str(tmp_path / "sft"), single_paths=True, match=str(tmp_path / "lt"), **common),
                       log=lambda s: None)
    d = sft["data"]
    assert d["origins"] == {"single": 18} and d["questions"] == 6  # every correct independent path of those questions
    goal = lt["data"]["target_tokens_seen"]
    from crosspath.distill.leap_t import target_tokens, tokens_seen
    from crosspath.models import load_tokenizer

    s_samples, _ = leap_t_samples(LeapTConfig(traces=[str(traces)], single_paths=True))
    counts = target_tokens(s_samples, load_tokenizer("tiny-random"), 256)
    assert d["target_tokens_seen"] >= goal > tokens_seen(counts, d["steps"] - 1, 2, 0)
    assert json.loads((tmp_path / "sft" / "data.json").read_text())["match"] == str(tmp_path / "lt")


def test_format_rate_counts_own_summarize_only(tmp_path):
    rows = [{"paths": [{"text": "x <summarize>\na</summarize>" + peer_block(["p <summarize> q"], TAGS) + " y"},
                       {"text": "no tag at all"},
                       {"text": "x <summarize>\nnever closed"},
                       {"text": peer_block(["<summarize> only a peer's"], TAGS)}]}]
    r = format_rate(rows)
    assert (r["paths"], r["wrote"], r["closed"], r["format_rate"]) == (4, 2, 1, 0.5)
    run = tmp_path / "leap"
    run.mkdir()
    (run / "config.yaml").write_text("method: leap\nleap_t: false\nanswer_tokens: 4\n")
    (run / "results.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="without --leap-t"):
        format_rate_of(run)
    (run / "config.yaml").write_text("method: leap\nleap_t: true\nanswer_tokens: 4\n")
    assert format_rate_of(run)["wrote"] == 2


def test_cli_has_leap_t_commands(capsys):
    from crosspath.cli import build_parser

    parser = build_parser()
    for cmd in ("leap-traces", "leap-t", "format-rate"):
        with pytest.raises(SystemExit):
            parser.parse_args(["distill", cmd, "--help"])
    out = capsys.readouterr().out
    assert "--splice" in out and "--eval-task-seed" in out and "--single-paths" in out and "--match" in out
