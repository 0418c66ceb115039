"""LeaP's phases one by one, the controls (no-peers, no-summaries, the plain prompt) with exactly
the text each phase appends, and the store-id mapping the server reads."""

from types import SimpleNamespace

import pytest

from crosspath.backends.base import Completion
from crosspath.infer import leap, prompts
from crosspath.infer.paths import PathStore
from crosspath.tasks.problem import Problem

from leap_helpers import tagged_store

CFG = SimpleNamespace(paths=2, temperature=0.6, top_p=0.95, sample_top_k=0, min_p=0.0)
QUESTION = Problem("q", "What is 1 + 1?", "2")
render = lambda user, prefill="": f"<user>{user}</user>{prefill}"  # noqa: E731


class Script:
    """Stateless: each call's completions come from `reply(path, params)`, where path is the
    number after "PATH=" in the prompt. Records (max_tokens, stop, paths) of every call."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def generate(self, prompts_, params):
        paths = [int(p.split("PATH=")[1][0]) for p in prompts_]
        self.calls.append((params.max_tokens, params.stop, paths))
        return [self.reply(n, params, p) for n, p in zip(paths, prompts_)]


def test_a_path_that_finishes_early_is_not_advanced_again_in_its_round():
    """Budget groups are fixed before any path writes: path 1 (9 tokens left) stops on EOS after 3
    tokens, which leaves it the 6 tokens of path 0's group; it must not write a second time."""

    def reply(n, params, prompt):
        if "</summarize>" in params.stop:
            return Completion("ok</summarize>", [1] * (5 if n == 0 else 2), "stop", "</summarize>")
        if prompt.endswith("\\boxed{"):
            return Completion("2}", [1], "length")
        if prompt.count("word") == 1 and n == 1:  # round 1 of path 1: EOS after 3 tokens
            return Completion(" \\boxed{2}", [1] * 3, "stop")
        return Completion(" word.\n\nmore", [1] * params.max_tokens, "length")

    gen = Script(reply)
    opts = leap.LeapOptions(rounds=3, round_tokens=9, summary_tokens=5, answer_tokens=2, peers_k=1, token_budget=20)
    p0, p1 = leap.solve([QUESTION], tagged_store(gen, CFG.paths), CFG, render, seed=0, opts=opts)[0]
    assert [c[:1] + c[2:] for c in gen.calls[2:4]] == [(9, [1]), (6, [0])]  # round 1: one call per budget
    assert [rd["round"] for rd in p1.rounds] == [0, 1] and p1.finish == "eos" and p1.tokens == 9 + 2 + 3


# ---- the phases one by one, and the controls: exactly what each phase appends ------------------------
def reply(n, params, prompt):
    """Reasoning: "[rK] path n works." and half a paragraph (cut at the budget); a summary closes
    its tag; a forced answer writes `2}`."""
    if "</summarize>" in params.stop:
        return Completion(f"path {n} got 2.</summarize>", [1] * 3, "stop", "</summarize>")
    if prompt.endswith("\\boxed{"):
        return Completion("2}", [1], "length")
    return Completion(f"[r{prompt.count('[r')}] path {n} works.\n\nhalf", [1] * params.max_tokens, "length")


def run_phases(opts):
    """Run the phases by hand as `solve` does; the paths' texts after every phase, and the calls."""
    gen = Script(reply)
    store = tagged_store(gen, CFG.paths)
    state = leap.start([QUESTION], store, CFG, render, 0, opts)
    texts = {}

    def snap(name):
        texts[name] = [store.text(p.id)[len(p.trace.prompt):] for p in state.paths]

    for r in range(opts.rounds):
        leap.reason(state, store, opts, r)
        snap(f"reason {r}")
        said = leap.summarize(state, store, opts, r)
        snap(f"summarize {r}")
        leap.inject(store, leap.route(state, said, opts), opts)
        snap(f"inject {r}")
    leap.force_answers(state, store, opts)
    snap("force")
    traces = leap.final_traces(state, store, opts)[0]
    assert [t.text for t in traces] == texts["force"]
    # solve is these phases
    solved = leap.solve([QUESTION], tagged_store(Script(reply), CFG.paths), CFG, render, 0, opts)[0]
    assert [(t.text, t.tokens, t.rounds) for t in solved] == [(t.text, t.tokens, t.rounds) for t in traces]
    return texts, traces, state, gen


TAGS = prompts.TAG_SETS["comment"]
R0 = "PATH={n}[r0] path {n} works."  # round 0 without its half-written last paragraph


def _expect(n, peers):
    """Path n's text after each phase of a 2-round LeaP run whose round 0 exchange gives `peers`."""
    summary = R0.format(n=n) + prompts.summary_request(0, n, TAGS) + f"path {n} got 2.</summarize>"
    after = summary + prompts.peer_block(peers, TAGS)
    return {"reason 0": R0.format(n=n) + "\n\nhalf", "summarize 0": summary, "inject 0": after,
            "reason 1": after + f"[r1] path {n} works.\n\nhalf", "summarize 1": after + f"[r1] path {n} works.\n\nhalf",
            "force": after + f"[r1] path {n} works.\n\nhalf" + prompts.FINAL_ANSWER + "2}"}


@pytest.mark.parametrize("control", [None, "no-peers"])
def test_each_phase_appends_exactly_its_text(control):
    opts = leap.LeapOptions(rounds=2, round_tokens=8, summary_tokens=5, answer_tokens=4, peers_k=1, control=control)
    texts, traces, _, gen = run_phases(opts)
    for n in range(2):
        peers = [] if control == "no-peers" else [f"So far, path {1 - n} got 2."]
        want = _expect(n, peers)
        assert {k: v[n] for k, v in texts.items() if k in want} == want
        assert texts["inject 1"][n] == texts["summarize 1"][n] == texts["reason 1"][n]  # nothing after the last round
        rd = traces[n].rounds[0]
        assert rd["summary"] == f"So far, path {n} got 2." and [p["peer"] for p in rd["peers"]] == ([1 - n] if peers else [])
    assert [c[0] for c in gen.calls] == [8, 5, 8, 4]
    assert traces[0].tokens == 8 + 3 + 8 + 1


def test_no_peers_control_gives_every_path_the_no_comments_block():
    opts = leap.LeapOptions(rounds=2, round_tokens=8, summary_tokens=5, answer_tokens=4, peers_k=1, control="no-peers")
    _, traces, _, _ = run_phases(opts)
    for t in traces:
        assert prompts.NO_COMMENTS in t.text and "Peer 1" not in t.text and prompts.RESUME_ALONE in t.text


@pytest.mark.parametrize("comm_rounds", [None, (0,)])
def test_no_summaries_control_appends_nothing_between_rounds_and_gives_the_summary_tokens_to_the_next_round(
        comm_rounds):
    opts = leap.LeapOptions(rounds=3, round_tokens=8, summary_tokens=5, answer_tokens=4, comm_rounds=comm_rounds,
                            control="no-summaries")
    texts, traces, state, gen = run_phases(opts)
    for n in range(2):
        body = "".join(f"[r{r}] path {n} works.\n\nhalf" for r in range(3))
        for r in range(3):
            assert texts[f"summarize {r}"][n] == texts[f"inject {r}"][n] == texts[f"reason {r}"][n]
        assert texts["force"][n] == f"PATH={n}" + body + prompts.FINAL_ANSWER + "2}"
        assert all("summary" not in rd and "peers" not in rd for rd in traces[n].rounds)
    # round r+1 writes T + S after a round where LeaP would have summarized: the per-path budget is LeaP's
    assert [c[0] for c in gen.calls] == ([8, 13, 13, 4] if comm_rounds is None else [8, 13, 8, 4])
    assert state.paths[0].trace.tokens == sum(c[0] for c in gen.calls[:3]) + 1
    from crosspath.infer.budget import leap_budget
    from crosspath.infer.runner import RunConfig

    base = dict(method="leap", rounds=3, round_tokens=8, summary_tokens=5, answer_tokens=4,
                comm_rounds=None if comm_rounds is None else list(comm_rounds))
    assert leap_budget(RunConfig(**base, leap_control="no-summaries")) == leap_budget(RunConfig(**base)) \
        == sum(c[0] for c in gen.calls)


def test_plain_prompt_keeps_the_loop_summaries_and_peers():
    opts = leap.LeapOptions(rounds=2, round_tokens=8, summary_tokens=5, answer_tokens=4, peers_k=1, prompt="plain")
    texts, traces, _, _ = run_phases(opts)
    assert traces[0].prompt == render(prompts.plain_prompt(QUESTION))  # no protocol, no pre-fill
    assert prompts.LEAP_PEERS_NOTE not in traces[0].prompt and prompts.LEAP_PREFILL not in traces[0].prompt
    for n in range(2):
        want = _expect(n, [f"So far, path {1 - n} got 2."])
        assert {k: v[n] for k, v in texts.items() if k in want} == want
    leap_run = run_phases(leap.LeapOptions(rounds=2, round_tokens=8, summary_tokens=5, answer_tokens=4, peers_k=1))
    assert leap_run[1][0].prompt == render(prompts.leap_prompt(QUESTION), prompts.LEAP_PREFILL)
    assert leap_run[0] == texts  # only the prompt differs


def test_options_that_do_not_go_together():
    with pytest.raises(ValueError, match="plain prompt"):
        leap.LeapOptions(leap_t=True, prompt="leap")
    with pytest.raises(ValueError, match="no-summaries"):
        leap.LeapOptions(leap_t=True, control="no-summaries")
    with pytest.raises(ValueError, match="unknown LeaP control"):
        leap.LeapOptions(control="no-comments")
    assert leap.LeapOptions(leap_t=True, prompt="plain", control="no-peers").leap_t


# ---- the mapping the server reads ---------------------------------------------------------------------
def test_state_maps_questions_and_paths_to_store_ids_whatever_the_store_held():
    from crosspath.serve.service import Service

    gen = Script(reply)
    store = tagged_store(gen, CFG.paths)
    for _ in range(3):
        PathStore.add(store, "someone else's path ")  # ids 0..2 belong to another user of the store
    events, seen = [], []
    jobs = [SimpleNamespace(emit=lambda kind, payload, q=q: events.append((q, kind, payload))) for q in range(2)]
    on_round = lambda r, state: (seen.append([[p.id for p in state.of(q)] for q in range(2)]),  # noqa: E731
                                 Service._on_round(None, jobs, store, state, SimpleNamespace(tags="comment"), r))
    questions = [QUESTION, Problem("q2", "What is 2 + 2?", "4")]
    opts = leap.LeapOptions(rounds=2, round_tokens=8, summary_tokens=5, answer_tokens=4, peers_k=1)
    leap.solve(questions, store, CFG, render, 0, opts, on_round=on_round)
    assert seen[0] == [[3, 4], [5, 6]]
    q, kind, ev = [e for e in events if e[0] == 1][0]  # request 1, round 0
    assert kind == "round" and ev["round"] == 0 and [p["summary"] for p in ev["paths"]] == ["So far, path 0 got 2.", "So far, path 1 got 2."]


# ---- the controls from the command line, YAML, and side by side in `compare` ------------------------
class Plain:
    """Stateless `reply` for every path (as path 0), with the tokenizer the runner renders with."""

    def __init__(self):
        from crosspath.models import load_tokenizer

        self.tok, self.calls = load_tokenizer("tiny-random"), []

    def generate(self, prompts_, params):
        self.calls.append(params.max_tokens)
        return [reply(0, params, p) for p in prompts_]


def _leap_run(tmp_path, name, argv, yaml_text=None):
    from crosspath.cli import build_parser
    from crosspath.config import from_args
    from crosspath.infer.runner import RunConfig, run

    task = tmp_path / "task.jsonl"
    task.write_text('{"id": "q", "question": "What is 1 + 1?", "answer": "2"}\n')
    config = None
    if yaml_text is not None:
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml_text)
    args = build_parser().parse_args(["run", "--method", "leap", "--task", str(task), "--paths", "2", "--rounds", "2",
                                      "--round-tokens", "6", "--summary-tokens", "3", "--answer-tokens", "2",
                                      "--out", str(tmp_path / name)] + argv + (["--config", str(config)] if config else []))
    cfg = from_args(RunConfig, args, args.config)
    gen = Plain()
    run(cfg, generator=gen, progress=False)
    return cfg, gen


def test_no_communication_from_the_command_line_and_yaml(tmp_path):
    for name, argv, yaml_text in (("flag", ["--comm-rounds"], None), ("yaml", [], "comm_rounds: []\n")):
        cfg, gen = _leap_run(tmp_path, name, argv, yaml_text)
        assert cfg.comm_rounds == [] and gen.calls == [6, 6, 2]  # two rounds and the answer: no summary call
    cfg, gen = _leap_run(tmp_path, "default", [])
    assert cfg.comm_rounds is None and gen.calls == [6, 3, 6, 2]
    cfg, gen = _leap_run(tmp_path, "zero", ["--comm-rounds", "0"])
    assert cfg.comm_rounds == [0] and gen.calls == [6, 3, 6, 2]


def test_compare_names_the_controls_with_their_tokens(tmp_path):
    from crosspath.infer.analysis import compare

    runs = {"leap": [], "no-peers": ["--leap-control", "no-peers"], "no-summaries": ["--leap-control", "no-summaries"],
            "plain": ["--prompt", "plain"]}
    for name, argv in runs.items():
        _leap_run(tmp_path, name, argv)
    table = compare([str(tmp_path / name) for name in runs])
    task = str(tmp_path / "task.jsonl")
    for label in ("leap", "leap (no-peers)", "leap (no-summaries)", "leap (plain prompt)"):
        # 2 paths x (6 + 3 + 6 + 1) tokens (no-summaries: 6 + 9 + 1), per-path budget 2 x 6 + 3 + 2
        assert f"| {label} | {task} | 2 | 1 | 1.000 | 16 | 1.000 | 32 | 17 |" in table
    assert "warning" not in table  # the controls keep LeaP's per-path budget
    _leap_run(tmp_path, "alone", ["--comm-rounds"])
    table = compare([str(tmp_path / "leap"), str(tmp_path / "alone")])
    assert f"| leap (comm rounds none) | {task} | 2 | 1 | 1.000 | 13 | 1.000 | 26 | 14 |" in table


def test_leap_options_are_refused_for_other_methods(tmp_path):
    from crosspath.infer.runner import RunConfig, run

    with pytest.raises(ValueError, match="--method leap"):
        run(RunConfig(method="independent", leap_control="no-peers", out=str(tmp_path / "x"), max_tokens=4),
            generator=Plain(), progress=False)
    with pytest.raises(ValueError, match="plain prompt"):
        run(RunConfig(method="leap", leap_t=True, prompt="leap", out=str(tmp_path / "y")), generator=Plain(),
            progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before the run directory
