"""LeaP: routers on crafted summaries, injection formats, the loop on a scripted generator."""

import random
from dataclasses import dataclass

import pytest

from crosspath.backends.base import Completion, SamplingParams, cut_at_stop
from crosspath.infer import leap, prompts
from crosspath.infer.routing import levenshtein_matrix, route_all
from crosspath.tasks.problem import Problem

from leap_helpers import tagged_store

# ---- routers ----------------------------------------------------------------------------------
SUMMARIES = [
    "the answer is 12 because 5 + 7 = 12",  # 0
    "the answer is 12 because 5 + 7 = 12.",  # 1: nearest to 0
    "the answer is 13 because 6 + 7 = 13",  # 2: close to 0
    "I think we need to multiply: 35",  # 3: far from all
]


def _peers(router, k, members=None):
    sims = levenshtein_matrix(SUMMARIES)
    return {i: [j for j, _ in v] for i, v in route_all(sims, k, router, random.Random(0), members).items()}


def test_similarity_is_normalized_levenshtein():
    sims = levenshtein_matrix(["abcd", "abce", "abcd"])
    assert sims[0][2] == 1.0 and sims[0][1] == pytest.approx(0.75)
    assert sims[1][0] == sims[0][1]


def test_dispersed_gives_least_similar_never_self():
    sims = levenshtein_matrix(SUMMARIES)
    got = _peers("dispersed", 2)
    for i, peers in got.items():
        assert i not in peers
        others = sorted((sims[i][j], j) for j in range(4) if j != i)
        assert peers == [j for _, j in others[:2]]
    assert got[0][0] == 3  # the multiply summary is the farthest from 0


def test_clustered_gives_most_similar():
    got = _peers("clustered", 1)
    assert got[0] == [1] and got[1] == [0]


def test_hybrid_half_least_rest_most_no_duplicates():
    got = _peers("hybrid", 3)
    sims = levenshtein_matrix(SUMMARIES)
    for i, peers in got.items():
        assert len(peers) == len(set(peers)) == 3
        cand = [j for j in range(4) if j != i]
        least = min(cand, key=lambda j: (sims[i][j], j))
        assert peers[0] == least  # k//2 = 1 least similar first
    assert _peers("hybrid", 2)[0] == [3, 1]


def test_all_and_random_and_members():
    assert _peers("all", 1)[2] == [0, 1, 3]
    r = _peers("random", 2)
    assert all(len(v) == 2 and i not in v for i, v in r.items())
    sub = _peers("dispersed", 2, members=[0, 1])  # finished paths are not members
    assert sub == {0: [1], 1: [0]}


def test_unknown_router():
    with pytest.raises(ValueError, match="unknown router"):
        route_all([[1.0]], 1, "nearest")


# ---- formats ------------------------------------------------------------------------------------
def test_peer_block_and_no_comments():
    t = prompts.TAG_SETS["comment"]
    b = prompts.peer_block(["a", "b"], t)
    assert '<comment>\nPeer 1: "a"\nPeer 2: "b"\n</comment>' in b and b.endswith(prompts.RESOLVE)
    assert prompts.NO_COMMENTS in prompts.peer_block([], t)
    p = prompts.peer_block(["x"], prompts.TAG_SETS["peer_summary"])
    assert "<peer_summary>" in p and "</peer_summary>" in p


def test_drop_last_paragraph():
    assert leap._drop_last_paragraph("one\n\ntwo half") == len("\n\ntwo half")
    assert leap._drop_last_paragraph("no blank line") == 0


# ---- the loop on a scripted generator ------------------------------------------------------------
class Scripted:
    """A stateless generator: round calls write two paragraphs, summary calls a summary that
    depends on the path, the final call an answer. Records every call."""

    def __init__(self, finish_path=None, cut_summary=False):
        self.calls = []
        self.finish_path = finish_path  # path marker that ends with </think> in round 0
        self.cut_summary = cut_summary

    def generate(self, prompts_, params: SamplingParams):
        self.calls.append((list(prompts_), params))
        out = []
        for p in prompts_:
            pid = p.split("PATH=")[-1][:1] if "PATH=" in p else "?"
            if p.endswith(prompts.SUMMARY_OPENER):
                text = "" if self.cut_summary else f"path {pid} thinks {pid}{pid}</summarize>"
                out.append(Completion(text=text or f"path {pid} thinks", token_ids=[1] * 5,
                                      finish_reason="length" if self.cut_summary else "stop",
                                      stop=None if self.cut_summary else "</summarize>"))
            elif p.endswith("\\boxed{"):
                out.append(Completion(text=f"{pid}}}", token_ids=[1] * 2, finish_reason="length"))
            else:
                text = f"Reasoning PATH={pid}.\n\nHalf a parag"
                if self.finish_path == pid and p.count("Reasoning") == 0:
                    text, _ = cut_at_stop(f"Done PATH={pid} \\boxed{{{pid}}}</think>", ["</think>"])
                    out.append(Completion(text=text, token_ids=[1] * 4, finish_reason="stop", stop="</think>"))
                    continue
                out.append(Completion(text=text, token_ids=[1] * 8, finish_reason="length"))
        return out


@dataclass
class Cfg:
    paths: int = 3
    temperature: float = 0.6
    top_p: float = 0.95
    sample_top_k: int = 0
    min_p: float = 0.0


def _render_factory():
    counter = {"n": 0}

    def render(user, prefill=""):  # each path gets a distinct marker so the script can tell them apart
        return f"Q: {user}\nA: {prefill}"

    return render, counter


def _run(gen, opts, n_paths=3, problems=None):
    problems = problems or [Problem(id="q0", question="What is 1 + 1?", answer="2")]
    store = tagged_store(gen, n_paths)  # each path's prompt ends with its index
    render, _ = _render_factory()
    return leap.solve(problems, store, Cfg(paths=n_paths), render, seed=1, opts=opts), store


def test_leap_loop_transcript():
    gen = Scripted()
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=1, router="dispersed", summary_tokens=5, answer_tokens=4)
    traces, _ = _run(gen, opts)
    paths = traces[0]
    # calls: round 0, summaries, round 1, forced answer
    kinds = [c[1].max_tokens for c in gen.calls]
    assert kinds == [8, 5, 8, 4]
    assert gen.calls[0][1].stop == ("</think>",) and gen.calls[1][1].stop == ("</summarize>", "</think>")
    for i, t in enumerate(paths):
        # the half-written paragraph was dropped before the summary request
        r0 = t.text.split("<summarize>")[0]
        assert "Half a parag" not in r0 and r0.startswith(f"PATH={i}Reasoning PATH={i}.")  # PATH= from the test's tagging
        assert f"<summarize>\nSo far, path {i} thinks {i}{i}</summarize>" in t.text
        peers = t.rounds[0]["peers"]
        assert len(peers) == 1 and peers[0]["peer"] != i
        j = peers[0]["peer"]
        assert f'<comment>\nPeer 1: "So far, path {j} thinks {j}{j}"\n</comment>' in t.text
        assert t.rounds[0]["summary"] == f"So far, path {i} thinks {i}{i}"
        assert t.text.endswith(f"**Final Answer**\n\\boxed{{{i}}}")
        assert t.finish == "forced" and t.tokens == 8 + 5 + 8 + 2
        assert len(t.rounds) == 2 and "peers" not in t.rounds[1]  # no exchange after the last round


def test_finished_path_leaves_the_pool():
    gen = Scripted(finish_path="0")
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=2, router="all", summary_tokens=5, answer_tokens=4)
    traces, _ = _run(gen, opts)
    p0, p1, p2 = traces[0]
    assert p0.finished and p0.finish == "think" and len(p0.rounds) == 1 and "summary" not in p0.rounds[0]
    assert [x["peer"] for x in p1.rounds[0]["peers"]] == [2]
    assert [x["peer"] for x in p2.rounds[0]["peers"]] == [1]
    assert len(gen.calls[1][0]) == 2  # only the two unfinished paths summarize


def test_alone_path_gets_no_comments_block():
    gen = Scripted()
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=2, summary_tokens=5, answer_tokens=4)
    traces, _ = _run(gen, opts, n_paths=1)
    assert prompts.NO_COMMENTS in traces[0][0].text and traces[0][0].rounds[0]["peers"] == []


def test_cut_summary_is_repaired():
    gen = Scripted(cut_summary=True)
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=1, summary_tokens=5, answer_tokens=4)
    traces, _ = _run(gen, opts)
    t = traces[0][0]
    assert "So far, path 0 thinks...\n</summarize>" in t.text
    assert t.rounds[0]["summary"] == "So far, path 0 thinks..."


def test_comm_rounds_limits_exchanges():
    gen = Scripted()
    opts = leap.LeapOptions(rounds=3, round_tokens=8, peers_k=1, summary_tokens=5, answer_tokens=4, comm_rounds=(0,))
    traces, _ = _run(gen, opts)
    assert [c[1].max_tokens for c in gen.calls] == [8, 5, 8, 8, 4]
    assert "peers" in traces[0][0].rounds[0] and "peers" not in traces[0][0].rounds[1]


def test_token_budget_caps_rounds():
    gen = Scripted()
    opts = leap.LeapOptions(rounds=3, round_tokens=8, peers_k=1, summary_tokens=5, answer_tokens=4, token_budget=12)
    traces, _ = _run(gen, opts)
    # round 0: 8 tokens + summary 5 = 13 >= 12: the path stops reasoning, then is forced to answer
    assert [c[1].max_tokens for c in gen.calls] == [8, 5, 4]
    assert all(t.tokens == 8 + 5 + 2 and t.text.endswith("}") for t in traces[0])


def test_several_questions_share_calls():
    gen = Scripted()
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=1, summary_tokens=5, answer_tokens=4)
    probs = [Problem(id=f"q{i}", question=f"What is {i} + 1?", answer=str(i + 1)) for i in range(2)]
    traces, _ = _run(gen, opts, problems=probs)
    assert len(gen.calls[0][0]) == 6  # 2 questions x 3 paths in one call
    for q in range(2):  # peers are routed within the question only
        for t in traces[q]:
            assert all(0 <= p["peer"] < 3 for p in t.rounds[0]["peers"])
            assert f"What is {q} + 1?" in t.prompt


class AsksToSummarize(Scripted):
    """LeaP-T on a script: in round r (the ROUND words its text holds) path i writes <summarize> when
    (i, r) is in `asks`, and reasons to its budget otherwise; its summary is "mine i.r"."""

    def __init__(self, asks):
        super().__init__()
        self.asks = asks

    def generate(self, prompts_, params):
        self.calls.append((list(prompts_), params))
        out = []
        for p in prompts_:
            pid, r = p.split("PATH=")[-1][:1], p.count("ROUND")
            if "</summarize>" in params.stop:
                out.append(Completion(text=f"mine {pid}.{r - 1}</summarize>", token_ids=[1] * 3,
                                      finish_reason="stop", stop="</summarize>"))
            elif p.endswith("\\boxed{"):
                out.append(Completion(text="1}", token_ids=[1], finish_reason="length"))
            elif (int(pid), r) in self.asks:
                out.append(Completion(text="ROUND work <summarize>", token_ids=[1] * 4, finish_reason="stop",
                                      stop="<summarize>"))
            else:
                out.append(Completion(text="ROUND more work", token_ids=[1] * 8, finish_reason="length"))
        return out


def test_leap_t_mode_summarizes_when_the_model_asks():
    gen = AsksToSummarize({(0, 0), (1, 0)})
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=2, summary_tokens=5, answer_tokens=4, leap_t=True)
    traces, _ = _run(gen, opts)
    assert "<summarize>" in gen.calls[0][1].stop
    p0, p1, p2 = traces[0]
    assert [x["peer"] for x in p0.rounds[0]["peers"]] == [1] and "peers" not in p2.rounds[0]
    assert 'Peer 1: "mine 1.0"' in p0.text


# ---- summary details from the reference: </think> in a summary, half-written tags, lone LeaP-T summarizers
class SummaryEnds(Scripted):
    """Summaries end as the test says: at </think> (a stop) or cut in the middle of the closing tag."""

    def __init__(self, ending):
        super().__init__()
        self.ending = ending

    def generate(self, prompts_, params):
        if not prompts_[0].endswith(prompts.SUMMARY_OPENER):
            return super().generate(prompts_, params)
        self.calls.append((list(prompts_), params))
        out = []
        for p in prompts_:
            pid = p.split("PATH=")[-1][:1]
            if self.ending == "think":
                out.append(Completion(text=f"path {pid} thinks {pid}{pid}</think>", token_ids=[1] * 5,
                                      finish_reason="stop", stop="</think>"))
            else:
                out.append(Completion(text=f"path {pid} thinks {pid}{pid} </summ", token_ids=[1] * 5,
                                      finish_reason="length"))
        return out


def test_summary_stopping_at_think_end_drops_it_and_closes_the_tag():
    gen = SummaryEnds("think")
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=1, summary_tokens=5, answer_tokens=4)
    traces, _ = _run(gen, opts)
    assert "</think>" in gen.calls[1][1].stop
    for i, t in enumerate(traces[0]):
        assert "</think>" not in t.text and t.finish == "forced"  # the path goes on reasoning
        assert f"<summarize>\nSo far, path {i} thinks {i}{i}\n</summarize>" in t.text
        assert t.rounds[0]["summary"] == f"So far, path {i} thinks {i}{i}"
        j = t.rounds[0]["peers"][0]["peer"]
        assert f'Peer 1: "So far, path {j} thinks {j}{j}"' in t.text


def test_half_written_closing_tag_is_completed_not_doubled():
    gen = SummaryEnds("half")
    opts = leap.LeapOptions(rounds=2, round_tokens=8, peers_k=1, summary_tokens=5, answer_tokens=4)
    traces, _ = _run(gen, opts)
    for i, t in enumerate(traces[0]):
        assert f"thinks {i}{i} </summarize>" in t.text and t.text.count("</summ") == 1
        assert t.rounds[0]["summary"] == f"So far, path {i} thinks {i}{i}"


def test_leap_t_lone_summarizer_hears_its_peers_latest_summaries():
    gen = AsksToSummarize({(1, 0), (2, 0), (0, 1)})  # round 0: paths 1 and 2 ask to summarize; round 1: path 0 alone
    opts = leap.LeapOptions(rounds=3, round_tokens=8, peers_k=2, summary_tokens=5, answer_tokens=4, leap_t=True)
    traces, _ = _run(gen, opts)
    p0, p1, p2 = traces[0]
    assert [x["peer"] for x in p1.rounds[0]["peers"]] == [2] and [x["peer"] for x in p2.rounds[0]["peers"]] == [1]
    assert "peers" not in p0.rounds[0]
    # round 1: path 0 summarized alone and still receives the round-0 summaries of paths 1 and 2
    assert sorted(x["peer"] for x in p0.rounds[1]["peers"]) == [1, 2]
    assert 'Peer 1: "mine ' in p0.text and "mine 1.0" in p0.text and "mine 2.0" in p0.text
    assert prompts.NO_COMMENTS not in p0.text
