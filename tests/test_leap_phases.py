"""LeaP's phases one by one, the controls (no-peers, no-summaries, the plain prompt) with exactly
the text each phase appends, and the store-id mapping the server reads."""

from types import SimpleNamespace

import pytest

from crosspath.backends.base import Completion
from crosspath.infer import leap, prompts
from crosspath.infer.paths import PathStore
from crosspath.tasks.problem import Problem

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


def _store(gen):
    """A PathStore whose n-th path of each question carries "PATH=n" after its prompt."""
    store, add, count = PathStore(gen), PathStore.add, [0]

    def tagged(prompt):
        count[0] += 1
        return add(store, prompt + f"PATH={(count[0] - 1) % CFG.paths}")

    store.add = tagged
    return store


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
    opts = leap.LeapOptions(rounds=3, round_tokens=9, summary_tokens=5, answer_tokens=2, top_k=1, token_budget=20)
    p0, p1 = leap.solve([QUESTION], _store(gen), CFG, render, seed=0, opts=opts)[0]
    assert [c[:1] + c[2:] for c in gen.calls[2:4]] == [(9, [1]), (6, [0])]  # round 1: one call per budget
    assert [rd["round"] for rd in p1.rounds] == [0, 1] and p1.finish == "eos" and p1.tokens == 9 + 2 + 3
