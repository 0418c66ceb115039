"""LeaP: Learning from Peers (arXiv 2505.07787), as named phases over a batch of questions.

    state = start(problems, store, cfg, render, seed, opts)    N paths per question, one prompt each
    for r in 0..R-1:
        reason(state, store, opts, r)                          every unfinished path writes <= T tokens
        stop_unconfident(state, opts, r)                       conf_stop: low-confidence paths stop (DeepConf)
        said = summarize(state, store, opts, r)                 who summarizes, and what
        inject(store, route(state, said, opts, sim), opts)     each of them reads k peers' summaries
    force_answers(state, store, opts)                          "... \\boxed{" and <= A tokens
    final_traces(state, store, opts)

reason     every unfinished path writes up to T tokens (stop: </think>, EOS; LeaP-T also <summarize>);
           one that stopped on </think> or EOS is finished and leaves the pool of peers; one whose
           token_budget is spent stops reasoning (it still answers)
summarize  who (`speakers`): LeaP - every unfinished path after each round but the last (or only
           the rounds in comm_rounds); LeaP-T - the paths that stopped at <summarize> themselves.
           how (`ask_summary`): LeaP drops the last (maybe half-written) paragraph and appends a
           recap trigger + "<summarize>" + opener; LeaP-T only a newline. The path then writes <= S
           tokens up to </summarize> or </think> (a </think> there is dropped; a half-written
           closing tag is completed, a missing one added); its summary is the text after the last
           <summarize>
route      per question, among the unfinished paths with a summary (their latest), each speaker
           gets k peers' summaries chosen by similarity (never its own)
inject     a <comment> block (Peer 1..k, renumbered in routing order) and a resolve sentence; a
           speaker with no peer left gets an explicit "no comments" block
force      after the last round, unfinished paths get "... \\boxed{" and <= A more tokens

DeepConf inside LeaP (off by default; needs token confidence from the backend): `conf_stop` stops
low-confidence paths at round boundaries, round 0 setting the threshold (see `stop_unconfident`), and
the `confident` router hands each path the summaries of its k most confident peers (confidence =
lowest group confidence so far) instead of choosing by similarity.

LeaP-T models (fine-tuned on the format) decide themselves when to summarize; only `speakers` and
`ask_summary` differ. As every unfinished path with a summary is in the pool, a LeaP-T path that
summarizes alone still hears its peers' latest summaries (in LeaP every such path just summarized).

Controls, at LeaP's per-path budget (`LeapOptions.control`), to tell the protocol's cost from the
exchange's value:
    no-peers      paths summarize as in LeaP, but every one receives the "no comments" block
    no-summaries  nothing is appended between rounds (no summary, no peer block); the S tokens a
                  summary would have used go to the next round (it may write T + S)
and `LeapOptions.prompt = "plain"`: the plain step-by-step prompt, no protocol announcement and no
pre-fill; the loop still asks for summaries and injects peers (the loop carries the protocol).

Multiple-choice problems (`Problem.choices`) show their options under the question, ask for a
letter in \\boxed{} (also in the forced answer), and every round's answer is read as a letter.

Every generator call carries the paths of all questions of the batch. On the hf backend each
path keeps its KV cache across rounds (see `paths.PathStore`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from ..backends.base import SamplingParams
from ..tasks.grading import extract_answer
from ..tasks.problem import Problem
from .paths import PathStore, PathTrace
from .prompts import LEAP_PREFILL, TAG_SETS, final_answer, leap_prompt, peer_block, plain_prompt, summary_request
from .aggregate import percentile, window_means
from .routing import levenshtein_matrix, route_all

THINK_END = "</think>"
PROMPTS = ("leap", "plain")
CONTROLS = ("no-peers", "no-summaries")


@dataclass
class LeapOptions:
    rounds: int = 3  # R: rounds of reasoning (communication after each but the last)
    round_tokens: int = 512  # T: new tokens per round (the paper: 2048-4096 for 7B models)
    peers_k: int = 2  # k: peers each path receives (the paper's tables: 4; its N=4 scripts: 2)
    router: str = "dispersed"  # dispersed | clustered | hybrid | random | all
    summary_tokens: int = 64  # S: summary budget (the paper: 256 at T=2048, a 1:8 ratio)
    answer_tokens: int = 64  # A: budget of the forced final answer
    comm_rounds: tuple[int, ...] | None = None  # rounds after which paths communicate (None: all; (): none)
    token_budget: int | None = None  # cap on a path's total generated tokens
    tags: str = "comment"  # comment (released code) | peer_summary (paper figures)
    leap_t: bool = False  # the model decides when to summarize (LeaP-T fine-tuned models)
    prompt: str | None = None  # leap (protocol + pre-fill) | plain (step by step); None: leap (LeaP-T: plain)
    control: str | None = None  # None (LeaP) | no-peers | no-summaries (see the module docstring)
    conf_stop: bool = False  # DeepConf inside LeaP: stop low-confidence paths at round boundaries
    conf_window: int = 128  # tokens of the sliding window of group confidence
    conf_eta: int = 90  # percent of round 0's paths above the threshold (90: DeepConf-high)

    def __post_init__(self):
        if self.prompt not in (None, *PROMPTS):
            raise ValueError(f"unknown LeaP prompt {self.prompt!r}; choose one of {PROMPTS}")
        if self.control not in (None, *CONTROLS):
            raise ValueError(f"unknown LeaP control {self.control!r}; choose one of {CONTROLS}")
        if self.leap_t and self.prompt == "leap":
            raise ValueError("LeaP-T models get the plain prompt (they have learned the protocol): drop --prompt leap")
        if self.leap_t and self.control == "no-summaries":
            raise ValueError("the no-summaries control keeps the LeaP prompt; a LeaP-T model decides itself when to "
                             "summarize (run it without --leap-t, or use --leap-control no-peers)")


# ---- the state the phases share ----------------------------------------------------------------------
@dataclass
class PathState:
    """One reasoning path, as the phases see it."""

    id: int  # its id in the PathStore: its text (and KV cache) is store.text(id)
    question: int  # index of its problem in the batch
    index: int  # its number among its question's paths (peers are named by it)
    trace: PathTrace  # what it did: rounds, tokens, how it ended (results.jsonl)
    summary: str | None = None  # its latest summary: what its peers receive
    confidence: float | None = None  # its lowest group confidence so far (when the store records confidence)
    stop: str | None = None  # the stop string its last round ended at (LeaP-T: "<summarize>")


@dataclass
class LeapState:
    """A batch of questions and their paths, between phases."""

    problems: Sequence[Problem]
    paths: list[PathState]  # question-major, path order within a question: the order of every call
    sample: dict  # sampling options of every call: temperature, top_p, sample_top_k, min_p
    seed: int  # round r's calls use seed + 10_000 r (+ 5_000 for summaries); the forced answer seed + 99_999
    rng: random.Random  # the random router's
    conf_bars: list[float] | None = None  # per question: the confidence threshold set after round 0 (conf_stop)

    def of(self, q: int) -> list[PathState]:
        """The paths of question q, in path order: `state.of(q)[n].id` is path n's store id."""
        return [p for p in self.paths if p.question == q]

    def unfinished(self) -> list[PathState]:
        return [p for p in self.paths if not p.trace.finished]


# ---- text helpers ------------------------------------------------------------------------------------
def _drop_last_paragraph(text: str) -> int:
    """How many trailing chars to drop: the last paragraph after a blank line (0 if none).

    >>> _drop_last_paragraph("a\\n\\nb c")
    5
    """
    k = text.rfind("\n\n")
    return len(text) - k if k > 0 else 0


def own_text(text: str, tags) -> str:
    r"""The path's own words: injected peer blocks removed, so answer extraction never reads a
    peer's number (or a "Peer 2:" label) as the path's answer.

    >>> own_text('x = 3\n\n<comment>\nPeer 1: "x = 5"\n</comment> go on', TAG_SETS["comment"])
    'x = 3\n\n go on'
    """
    return re.sub(rf"<{tags.peers}>.*?</{tags.peers}>", "", text, flags=re.DOTALL)


def _summary_of(text: str, open_tag: str, close_tag: str) -> str:
    s = text[text.rfind(open_tag) + len(open_tag):] if open_tag in text else text
    return s.replace(close_tag, "").replace(THINK_END, "").strip()


def repair_close_tag(text: str, close_tag: str, cut: bool) -> str:
    """What to append so that a summary ends with exactly one closing tag.

    A half-written tag is completed; otherwise the tag is added on a new line, after "..." when the
    summary was cut by its token budget.

    >>> repair_close_tag("x = 3 </summ", "</summarize>", cut=True)
    'arize>'
    >>> repair_close_tag("x = 3", "</summarize>", cut=True)
    '...\\n</summarize>'
    >>> repair_close_tag("x = 3</summarize>", "</summarize>", cut=False)
    ''
    """
    for k in range(len(close_tag), 1, -1):  # the longest tag prefix the text ends with (at least "</")
        if text.endswith(close_tag[:k]):
            return close_tag[k:]
    return ("..." if cut else "") + "\n" + close_tag


# ---- the phases --------------------------------------------------------------------------------------
def question_prompt(problem: Problem, opts: LeapOptions, render: Callable[..., str]) -> str:
    """The prompt every path of `problem` starts from: the LeaP prompt with its pre-fill, or the
    plain step-by-step one (`opts.prompt == "plain"`, and LeaP-T models)."""
    if opts.leap_t or opts.prompt == "plain":
        return render(plain_prompt(problem))
    return render(leap_prompt(problem), prefill=LEAP_PREFILL)


def start(problems: Sequence[Problem], store: PathStore, cfg, render: Callable[..., str], seed: int,
          opts: LeapOptions) -> LeapState:
    """Open `cfg.paths` paths per problem in `store`, all from the question's prompt (rendered once
    per problem, in order); `cfg` also gives the sampling options of every call."""
    paths = []
    for q, problem in enumerate(problems):
        prompt = question_prompt(problem, opts, render)
        paths += [PathState(store.add(prompt), q, n, PathTrace(prompt=prompt)) for n in range(cfg.paths)]
    sample = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.sample_top_k, min_p=cfg.min_p)
    return LeapState(problems, paths, sample, seed, random.Random(seed))


def communicates(opts: LeapOptions, r: int) -> bool:
    """Whether LeaP paths summarize and read peers after round r (never after the last round)."""
    return 0 <= r < opts.rounds - 1 and (opts.comm_rounds is None or r in opts.comm_rounds)


def round_budget(p: PathState, opts: LeapOptions, r: int) -> int:
    """Most tokens path p may write in round r: T, capped by what is left of its token_budget
    (control no-summaries: T + S after a round where LeaP would have summarized)."""
    T = opts.round_tokens + (opts.summary_tokens if opts.control == "no-summaries" and communicates(opts, r - 1) else 0)
    return T if opts.token_budget is None else min(T, opts.token_budget - p.trace.tokens)


def reason(state: LeapState, store: PathStore, opts: LeapOptions, r: int) -> list[PathState]:
    """Round r: every unfinished path writes up to `round_budget` tokens, one call per distinct
    budget (largest first, per-request seeds distinct across the calls). A path that stops on
    </think> or EOS is finished; one that reaches token_budget stops reasoning ("budget"). The
    round's record gets the answer read at its end. Returns the paths that reasoned (none: all done)."""
    for p in state.unfinished():
        if round_budget(p, opts, r) <= 0:  # a summary may have used the rest of the budget
            p.trace.finished, p.trace.finish = True, "budget"
    active = state.unfinished()
    budgets = {p.id: round_budget(p, opts, r) for p in active}  # fixed before any path writes
    stops = (THINK_END, TAG_SETS[opts.tags].open_summary) if opts.leap_t else (THINK_END,)
    offset = 0
    for budget in sorted(set(budgets.values()), reverse=True):
        batch = [p for p in active if budgets[p.id] == budget]
        params = SamplingParams(max_tokens=budget, stop=stops, seed=state.seed + 10_000 * r + offset, **state.sample)
        offset += len(batch)
        for p, c in zip(batch, store.advance([p.id for p in batch], params)):
            t, p.stop = p.trace, c.stop
            t.tokens += c.num_tokens
            t.rounds.append({"round": r, "text": c.text, "tokens": c.num_tokens})
            if c.stop == THINK_END or (c.finish_reason == "stop" and c.stop is None):
                t.finished, t.finish = True, ("think" if c.stop == THINK_END else "eos")
            elif opts.token_budget is not None and t.tokens >= opts.token_budget:
                t.finished, t.finish = True, "budget"
    tags = TAG_SETS[opts.tags]
    for p in active:
        text = own_text(store.text(p.id)[len(p.trace.prompt):], tags)
        p.trace.rounds[-1]["answer"] = extract_answer(text, state.problems[p.question].choices)
        conf = store.confidences(p.id)
        if conf is not None:
            p.confidence = min(window_means(conf, opts.conf_window), default=0.0)
            p.trace.rounds[-1]["confidence"] = round(p.confidence, 4)
    return active


def stop_unconfident(state: LeapState, opts: LeapOptions, r: int) -> list[PathState]:
    """DeepConf inside LeaP (`opts.conf_stop`), after round r's reasoning: round 0 is the warm-up,
    its paths' lowest group confidences set each question's threshold (their (100 - eta)-th
    percentile); then, after every round but the last, an unfinished path whose lowest group
    confidence so far is below it stops (finish "confidence", no vote) and leaves the pool of peers.
    A question's most confident unfinished path never stops. Returns the stopped paths."""
    if not opts.conf_stop or r >= opts.rounds - 1:
        return []
    if state.conf_bars is None:
        state.conf_bars = [percentile([p.confidence or 0.0 for p in state.of(q)], 100 - opts.conf_eta)
                           for q in range(len(state.problems))]
    stopped = []
    for q in range(len(state.problems)):
        alive = [p for p in state.of(q) if not p.trace.finished]
        keep = max(alive, key=lambda p: p.confidence or 0.0, default=None)
        for p in alive:
            if p is not keep and (p.confidence or 0.0) < state.conf_bars[q]:
                p.trace.finished, p.trace.finish = True, "confidence"
                p.trace.extra.update(vote=False, conf_threshold=round(state.conf_bars[q], 4), early_stop=p.trace.tokens)
                stopped.append(p)
    return stopped


def speakers(state: LeapState, opts: LeapOptions, r: int) -> list[PathState]:
    """Who summarizes after round r. LeaP: every unfinished path, after a round that communicates;
    LeaP-T: the unfinished paths that stopped at <summarize> (not after the last round); the
    no-summaries control: nobody."""
    if opts.leap_t:
        open_tag = TAG_SETS[opts.tags].open_summary
        return [p for p in state.unfinished() if p.stop == open_tag] if r < opts.rounds - 1 else []
    if opts.control == "no-summaries" or not communicates(opts, r):
        return []
    return state.unfinished()


def ask_summary(p: PathState, store: PathStore, opts: LeapOptions, r: int) -> None:
    """Hand path p over to its summary. LeaP: drop its last (maybe half-written) paragraph, append a
    recap trigger, <summarize> and the opener. LeaP-T: it wrote <summarize> itself; a newline follows."""
    if opts.leap_t:
        store.extend(p.id, "\n")
        return
    store.rewind(p.id, _drop_last_paragraph(p.trace.rounds[-1]["text"]))
    store.extend(p.id, summary_request(r, p.index, TAG_SETS[opts.tags]))


def summarize(state: LeapState, store: PathStore, opts: LeapOptions, r: int) -> list[PathState]:
    """The summary phase after round r: each of the `speakers` is asked (`ask_summary`) and writes
    at most S tokens up to </summarize> or </think>, in one call. A </think> there is dropped (the
    path goes on reasoning); a cut-off, half-written or missing closing tag is repaired. The summary
    (text after the last <summarize>) becomes the path's latest. Returns the paths that summarized."""
    said = speakers(state, opts, r)
    if not said:
        return []
    tags = TAG_SETS[opts.tags]
    for p in said:
        ask_summary(p, store, opts, r)
    params = SamplingParams(max_tokens=opts.summary_tokens, stop=(tags.close_summary, THINK_END),
                            seed=state.seed + 10_000 * r + 5_000, **state.sample)
    for p, c in zip(said, store.advance([p.id for p in said], params)):
        p.trace.tokens += c.num_tokens
        if c.stop == THINK_END:  # the model tried to end its thinking inside the summary
            store.rewind(p.id, len(THINK_END))
        if c.stop != tags.close_summary:
            store.extend(p.id, repair_close_tag(store.text(p.id), tags.close_summary, c.finish_reason == "length"))
        p.summary = _summary_of(store.text(p.id), tags.open_summary, tags.close_summary)
        p.trace.rounds[-1].update(summary=p.summary, summary_tokens=c.num_tokens)
    return said


Routed = list[tuple[PathState, list[tuple[PathState, float]]]]  # (receiver, [(peer, similarity), ...])


def route(state: LeapState, receivers: list[PathState], opts: LeapOptions,
          similarity: Callable[[Sequence[str]], list[list[float]]] = levenshtein_matrix) -> Routed:
    """Each receiver's peers, question by question: among the question's unfinished paths with a
    summary (their latest), the router picks k by the similarity of the summaries, never the
    receiver itself. The no-peers control: nobody, for everyone."""
    if opts.control == "no-peers":
        return [(p, []) for p in receivers]
    routed: Routed = []
    for q in range(len(state.problems)):
        mine = [p for p in receivers if p.question == q]
        if not mine:
            continue
        pool = [p for p in state.of(q) if p.summary is not None and not p.trace.finished]
        if opts.router == "confident":  # the k most confident peers (ties: path order)
            ranked = sorted(pool, key=lambda p: (-(p.confidence or 0.0), p.index))
            routed += [(p, [(o, o.confidence or 0.0) for o in ranked if o is not p][: opts.peers_k]) for p in mine]
            continue
        local = {p.id: j for j, p in enumerate(pool)}
        chosen = route_all(similarity([p.summary for p in pool]), opts.peers_k, opts.router, state.rng,
                           members=[local[p.id] for p in mine], pool=range(len(pool)))
        routed += [(p, [(pool[j], s) for j, s in chosen[local[p.id]]]) for p in mine]
    return routed


def inject(store: PathStore, routed: Routed, opts: LeapOptions) -> None:
    """Right after each receiver's summary: its peers' block (Peer 1..k in routing order, then the
    resolve sentence; no peer: the "no comments" block). The round's record names the peers
    (path index and similarity)."""
    tags = TAG_SETS[opts.tags]
    for p, peers in routed:
        store.extend(p.id, peer_block([peer.summary for peer, _ in peers], tags))
        p.trace.rounds[-1]["peers"] = [{"peer": peer.index, "similarity": round(s, 4)} for peer, s in peers]


def force_answers(state: LeapState, store: PathStore, opts: LeapOptions) -> None:
    """After the last round, every path still reasoning (or stopped by its token_budget) gets the
    final-answer lead-in ending in \\boxed{ and writes at most A more tokens."""
    late = [p for p in state.paths if p.trace.finish in ("", "budget")]
    for p in late:
        store.extend(p.id, final_answer(state.problems[p.question]))
    params = SamplingParams(max_tokens=opts.answer_tokens, stop=(THINK_END,), seed=state.seed + 99_999, **state.sample)
    for p, c in zip(late, store.advance([p.id for p in late], params)):
        p.trace.tokens += c.num_tokens
        p.trace.finished, p.trace.finish = True, "forced"


def final_traces(state: LeapState, store: PathStore, opts: LeapOptions) -> list[list[PathTrace]]:
    """Per question, its paths' traces with their whole text and own text (peer blocks removed)."""
    tags = TAG_SETS[opts.tags]
    for p in state.paths:
        p.trace.text = store.text(p.id)[len(p.trace.prompt):]
        p.trace.own_text = own_text(p.trace.text, tags)
        p.trace.confidence = store.confidences(p.id)
    return [[p.trace for p in state.of(q)] for q in range(len(state.problems))]


# ---- the loop ----------------------------------------------------------------------------------------
def solve(problems: Sequence[Problem], store: PathStore, cfg, render: Callable[..., str], seed: int,
          opts: LeapOptions, similarity: Callable[[Sequence[str]], list[list[float]]] = levenshtein_matrix,
          on_round: Callable[[int, LeapState], None] | None = None) -> list[list[PathTrace]]:
    """LeaP over a batch of questions: the phases above, round after round. `on_round(r, state)`
    runs after each round's exchange (the server streams every path's progress from it)."""
    state = start(problems, store, cfg, render, seed, opts)
    for r in range(opts.rounds):
        if not reason(state, store, opts, r):
            break  # every path has finished
        stop_unconfident(state, opts, r)
        said = summarize(state, store, opts, r)
        inject(store, route(state, said, opts, similarity), opts)
        if on_round:
            on_round(r, state)
    force_answers(state, store, opts)
    return final_traces(state, store, opts)
