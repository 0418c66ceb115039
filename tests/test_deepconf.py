"""DeepConf on a scripted generator with crafted log-probs: exact token and group confidences, the
online threshold and the exact token where a path stops; confidence from the real backends."""

from types import SimpleNamespace

import pytest

from crosspath.backends.base import BackendError, Completion, SamplingParams
from crosspath.infer import deepconf
from crosspath.infer.aggregate import confidence_stats, window_means
from crosspath.infer.paths import PathStore
from crosspath.tasks.problem import Problem

from leap_helpers import tagged_store

Q = Problem("q", "What is 1 + 1?", "2")
render = lambda user, prefill="": f"<user>{user}</user>{prefill}"  # noqa: E731

# token confidences each path writes, by position (path n = the n-th path opened)
CONF = {0: [2.0] * 4, 1: [4.0] * 4,  # warm-up: lowest group 2.0 and 4.0 -> 10th percentile 2.2
        2: [3.0, 3.0, 3.0, 3.0, 1.0, 1.0, 3.0, 3.0, 3.0],  # window (3, 1) = 2.0 < 2.2 at token 5
        3: [3.0] * 9}  # never below: runs to max_tokens


class Scripted:
    """Each token is "x"; its top-2 log-probs are -(c - 0.5), -(c + 0.5), so C = c exactly.
    Warm-up paths end on EOS after 4 tokens; the others write their whole budget."""

    top_logprobs = True

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append((params.max_tokens, params.top_logprobs))
        outs = []
        for p in prompts:
            n, done = int(p.split("PATH=")[1][0]), p.split("PATH=")[1].count("x")
            conf = CONF[n][done: done + params.max_tokens]
            tops = [[-(c - 0.5), -(c + 0.5)] for c in conf]
            reason = "stop" if n < 2 else "length"
            outs.append(Completion("x" * len(conf), [7] * len(conf), reason, top_logprobs=tops))
        return outs


CFG = SimpleNamespace(paths=4, warmup_paths=2, conf_window=2, conf_check_tokens=3, conf_eta=90, max_tokens=9,
                      answer_tokens=0, deepconf_mode="online", stop=[], temperature=0.6, top_p=0.95,
                      sample_top_k=0, min_p=0.0)


def test_token_and_group_confidence_are_the_papers():
    assert window_means([3.0, 3.0, 3.0, 3.0, 1.0, 1.0], 2) == [3.0, 3.0, 3.0, 2.0, 1.0]
    s = confidence_stats([3.0, 3.0, 3.0, 3.0, 1.0, 1.0], 2)
    assert s == {"mean": 2.3333, "lowest_group": 1.0, "bottom10": 1.0, "tail": 1.0, "window": 2}
    store = tagged_store(Scripted(), top_logprobs=2)
    i = store.add("p")
    store.advance([i], SamplingParams(max_tokens=3))
    assert store.confidences(i) == [2.0, 2.0, 2.0]  # -(1/2)(-(1.5) - 2.5)


def test_online_threshold_and_exact_stop_points():
    gen = Scripted()
    (paths,) = deepconf.solve([Q], tagged_store(gen, top_logprobs=2), CFG, render, seed=0)
    warm0, warm1, low, steady = paths
    assert warm0.extra == {"warmup": True, "conf_threshold": 2.2, "vote": False}  # 2.0 < 2.2: no vote
    assert warm1.extra["vote"] is True and warm1.tokens == 4
    assert low.finish == "confidence" and low.extra["early_stop"] == 5 and low.tokens == 6 and not low.extra["vote"]
    assert steady.finish == "length" and steady.tokens == 9 and steady.extra["vote"] is True
    # warm-up in one call of max_tokens, then chunks of 3 for both online paths, then 3 for the survivor
    assert [c[0] for c in gen.calls] == [9, 3, 3, 3] and {c[1] for c in gen.calls} == {2}


def test_a_path_shorter_than_the_window_never_stops():
    assert deepconf.first_low_window([0.0, 0.0, 0.0], window=4, threshold=10.0) is None
    assert deepconf.first_low_window([5.0, 0.0, 0.0, 0.0], window=2, threshold=1.0, start=2) == 3


def test_missing_top_logprobs_is_a_backend_error():
    class Plain:
        def generate(self, prompts, params):
            return [Completion("x", [1], "length") for _ in prompts]

    store = PathStore(Plain(), top_logprobs=5)
    with pytest.raises(BackendError, match="top log-probs"):
        store.advance([store.add("p")], SamplingParams(max_tokens=1))


def test_hf_backend_returns_top_logprobs(tiny_gen):
    (c,) = tiny_gen.generate(["Hello"], SamplingParams(max_tokens=4, top_logprobs=5, logprobs=True, seed=0))
    assert len(c.top_logprobs) == c.num_tokens and all(len(t) == 5 for t in c.top_logprobs)
    for top, lp in zip(c.top_logprobs, c.logprobs):
        assert top == sorted(top, reverse=True) and all(x <= 0 for x in top)


def test_openai_top_logprobs_are_requested_and_parsed():
    from crosspath.backends.openai import OpenAIGenerator

    gen = OpenAIGenerator("http://localhost:1", model="m")
    params = SamplingParams(max_tokens=2, top_logprobs=3)
    assert gen._body("hi", params, 1, 0)["logprobs"] == 3
    choice = {"text": "ab", "finish_reason": "length",
              "logprobs": {"token_logprobs": [-0.1, -0.2], "top_logprobs": [{"a": -0.1, "b": -2.0, "c": -3.0},
                                                                            {"b": -0.2, "a": -1.0, "d": -4.0}]}}
    assert gen._completion(choice, 2, params).top_logprobs == [[-0.1, -2.0, -3.0], [-0.2, -1.0, -4.0]]
    with pytest.raises(BackendError, match="no top-3 log-probs"):
        gen._completion({"text": "ab", "finish_reason": "length", "logprobs": None}, 2, params)


# ---- DeepConf inside LeaP -----------------------------------------------------------------------------
def leap_reply(n, params, prompt):
    """Path n writes tokens of confidence n + 1 everywhere (reasoning, summaries, forced answers)."""
    c = float(n + 1)
    if "</summarize>" in params.stop:
        return Completion(f"path {n} got 2.</summarize>", [1] * 2, "stop", "</summarize>", top_logprobs=[[-c]] * 2)
    if prompt.endswith("\\boxed{"):
        return Completion("2}", [1], "length", top_logprobs=[[-c]])
    k = params.max_tokens
    return Completion(f"path {n} works.\n\nhalf", [1] * k, "length", top_logprobs=[[-c]] * k)


class LeapScript:
    top_logprobs = True

    def __init__(self):
        self.calls = []

    def generate(self, prompts_, params):
        paths = [int(p.split("PATH=")[1][0]) for p in prompts_]
        self.calls.append((params.max_tokens, paths))
        return [leap_reply(n, params, p) for n, p in zip(paths, prompts_)]


def test_leap_conf_stop_and_confident_router():
    from crosspath.infer import leap

    cfg = SimpleNamespace(paths=3, temperature=0.6, top_p=0.95, sample_top_k=0, min_p=0.0)
    opts = leap.LeapOptions(rounds=3, round_tokens=4, summary_tokens=2, answer_tokens=1, peers_k=1,
                            router="confident", conf_stop=True, conf_window=2, conf_eta=90)
    gen = LeapScript()
    p0, p1, p2 = leap.solve([Q], tagged_store(gen, 3, top_logprobs=1), cfg, render, seed=0, opts=opts)[0]
    # round 0: confidences 1, 2, 3 -> threshold = 10th percentile = 1.2: path 0 stops, and leaves the pool
    assert p0.finish == "confidence" and p0.extra == {"vote": False, "conf_threshold": 1.2, "early_stop": 4}
    assert p0.tokens == 4 and len(p0.rounds) == 1 and "summary" not in p0.rounds[0]
    assert [c[1] for c in gen.calls] == [[0, 1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]]
    # the confident router: each of the two left gets the other (path 0 is gone)
    assert p1.rounds[0]["peers"] == [{"peer": 2, "similarity": 3.0}]
    assert p2.rounds[0]["peers"] == [{"peer": 1, "similarity": 2.0}]
    assert p1.rounds[0]["confidence"] == 2.0 and p2.finish == "forced"


def test_leap_conf_options_need_a_logprob_backend_and_method_leap(tmp_path, tiny_gen):
    from crosspath.config import ConfigError
    from crosspath.infer.runner import RunConfig, read_results, run

    base = dict(model="tiny-random", task="demo", limit=1, paths=3, rounds=2, round_tokens=4, summary_tokens=2,
                answer_tokens=2, peers_k=1, out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="options of --method leap"):
        run(RunConfig(**{**base, "method": "independent", "leap_conf_stop": True}), generator=tiny_gen, progress=False)
    s = run(RunConfig(**{**base, "method": "leap", "leap_conf_stop": True, "router": "confident", "conf_window": 2}),
            generator=tiny_gen, progress=False)
    (row,) = read_results(tmp_path / "r" / "results.jsonl")
    assert all("confidence" in p for p in row["paths"]) and "conf_weighted" in s["aggregates"]


def test_vllm_top_logprobs_are_requested_and_parsed():
    from crosspath.backends.vllm import to_completion, to_vllm_params

    assert to_vllm_params(SamplingParams(top_logprobs=20))["logprobs"] == 20
    assert to_vllm_params(SamplingParams(logprobs=True))["logprobs"] == 0
    lp = lambda x: SimpleNamespace(logprob=x)  # noqa: E731
    out = SimpleNamespace(text="x", token_ids=[7], finish_reason="length", stop_reason=None,
                          logprobs=[{7: lp(-3.0), 3: lp(-0.1), 9: lp(-0.5)}])  # the sampled token comes on top
    c = to_completion(out, (), top_k=2)
    assert c.top_logprobs == [[-0.1, -0.5]] and c.logprobs == [-3.0]
