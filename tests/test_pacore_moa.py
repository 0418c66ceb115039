"""PaCoRe message extraction and prompt assembly, the rounds loop on a scripted generator (what each
round reads), MoA's layers; and the aggregators on crafted answers (equivalent spellings, ties)."""

from types import SimpleNamespace

from crosspath.backends.base import Completion
from crosspath.infer import moa, pacore, prompts
from crosspath.infer.aggregate import aggregate, all_aggregates
from crosspath.infer.paths import PathStore
from crosspath.tasks import SameAnswer
from crosspath.tasks.problem import Problem

Q = Problem("q", "What is 1 + 1?", "2")
render = lambda user, prefill="": f"<user>{user}</user>{prefill}"  # noqa: E731


def test_message_is_the_text_after_the_last_think_end_or_the_final_answer_line():
    assert pacore.message("<think>a</think>b</think> So \\boxed{2}.", 100) == "So \\boxed{2}."
    assert pacore.message("1 + 1 = 2\nThus \\boxed{2}\nI am sure.", 100) == "Thus \\boxed{2}"
    assert pacore.message("no answer here\nlast line\n", 100) == "last line"
    assert pacore.message("<think>x</think>" + "y" * 50 + "END", 10) == "yyyyyyyEND"  # its end is kept
    assert pacore.message("", 10) == ""


def test_pacore_prompt_holds_question_messages_and_answer_format():
    text = prompts.pacore_prompt(Q, ["A is \\boxed{2}", "B is \\boxed{3}"])
    assert text.index("What is 1 + 1?") < text.index("Attempt 1:\nA is \\boxed{2}") < text.index("Attempt 2:\nB")
    assert text.endswith("put your final answer within \\boxed{}.")
    assert prompts.pacore_prompt(Q, []) == prompts.plain_prompt(Q)  # no messages: the plain prompt
    mc = prompts.pacore_prompt(Problem("m", "Pick", "A", choices=["1", "2"]), ["\\boxed{A}"])
    assert "A) 1\nB) 2" in mc and "letter" in mc
    assert "Answer 1:\nfoo" in prompts.moa_prompt(Q, ["foo"])


class Script:
    """Round 0 paths answer 2, 3, 2 (path n = the n-th opened); later rounds answer 2 and record their prompt."""

    def __init__(self):
        self.count, self.seen = 0, []

    def generate(self, prompts_, params):
        outs = []
        for p in prompts_:
            if "Attempt" in p or "Answer 1" in p:
                self.seen.append(p)
                outs.append(Completion("checked.\n\\boxed{2}", [1] * 4, "stop"))
            else:
                ans = [2, 3, 2][self.count % 3]
                self.count += 1
                outs.append(Completion(f"<think>work {self.count}</think>It is \\boxed{{{ans}}}.", [1] * 5, "stop"))
        return outs


CFG = SimpleNamespace(paths=3, paths_per_round=[3, 2], max_tokens=8, answer_tokens=0, stop=[], message_chars=100,
                      moa_layers=2, temperature=0.6, top_p=0.95, sample_top_k=0, min_p=0.0)


def test_pacore_round_two_reads_every_message_of_round_one():
    gen = Script()
    (paths,) = pacore.solve([Q], PathStore(gen), CFG, render, seed=0)
    assert [(t.extra["round"], t.graded) for t in paths] == [(0, False)] * 3 + [(1, True)] * 2
    assert len(gen.seen) == 2 and gen.seen[0] == gen.seen[1]  # both round-1 paths read the same prompt
    body = gen.seen[0]
    assert sorted(m for m in ("It is \\boxed{2}.", "It is \\boxed{3}.") for _ in range(body.count(m))) == \
        ["It is \\boxed{2}.", "It is \\boxed{2}.", "It is \\boxed{3}."]  # messages only, reasoning left out
    assert "work" not in body and body.count("Attempt ") == 3


def test_moa_aggregator_reads_whole_answers():
    gen = Script()
    (paths,) = moa.solve([Q], PathStore(gen), CFG, render, seed=0)
    assert [t.graded for t in paths] == [False] * 3 + [True] and len(gen.seen) == 1
    assert "<think>work 1</think>It is \\boxed{2}." in gen.seen[0]


def P(answer, correct=False, conf=None, steps=0, tokens=0, **kw):
    return {"answer": answer, "correct": correct, "steps": steps, "tokens": tokens,
            **({"confidence": {"lowest_group": conf}} if conf is not None else {}), **kw}


def test_equivalent_spellings_are_one_vote_and_ties_go_to_the_first_seen():
    same = SameAnswer()
    paths = [P("3"), P("1/2", True), P("0.5", True), P("\\frac{1}{2}", True), P("3")]
    assert aggregate("majority", paths, same) == ("1/2", True)  # three spellings, one answer: 3 votes to 2
    paths = [P("1/2", True), P("3"), P("0.5", True), P("3")]
    assert aggregate("majority", paths, same) == ("1/2", True)  # 2-2 tie: the first-seen group
    assert aggregate("majority", paths[1:], same) == ("3", False)


def test_confidence_aggregators_and_longest_chains():
    paths = [P("7", False, conf=1.0, steps=2), P("7", False, conf=1.0, steps=3),
             P("8", True, conf=3.0, steps=9), P("9", False, conf=0.5, steps=8)]
    assert aggregate("majority", paths) == ("7", False)
    assert aggregate("conf_weighted", paths) == ("8", True)  # 3.0 > 2.0
    assert aggregate("top10_conf", paths) == ("8", True)
    assert aggregate("top90_conf", paths) == ("8", True)  # the 0.5 path is filtered out; 3.0 > 2.0
    assert aggregate("longest", paths) == ("8", True)  # the 2 longest (9, 8 steps): 1-1 tie, "8" first
    stopped = [P("7", conf=9.0, vote=False), P("8", True, conf=1.0)]
    assert aggregate("conf_weighted", stopped) == ("8", True)  # a path with vote: false does not vote
    assert "conf_weighted" not in all_aggregates([P("7")])  # no confidence recorded: not applicable
