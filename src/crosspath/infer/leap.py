"""LeaP: Learning from Peers (arXiv 2505.07787), one loop over a batch of questions.

Per question, N paths reason in rounds of at most T new tokens:

    for round r in 0..R-1:
        every unfinished path writes up to T tokens (stop: </think>, EOS; LeaP-T also <summarize>)
        a path that stopped on </think> or EOS is finished and leaves the pool of peers
        if r < R-1 and round r communicates:
            each unfinished path drops its last (maybe half-written) paragraph, gets a recap
            trigger + "<summarize>" + opener, and writes <= S tokens up to </summarize> or </think>
            (a </think> there is dropped; a half-written closing tag is completed, a missing one
            added); its summary is the text after the last <summarize>
            router: per question, each path gets k peers' summaries (never its own)
            a <comment> block (Peer 1..k, renumbered in routing order) and a resolve sentence
            are appended; a path with no peer left gets an explicit "no comments" block
    unfinished paths are forced to answer: "... \\boxed{" and <= A more tokens

LeaP-T models (fine-tuned on the format) decide themselves when to summarize: `<summarize>` is a
stop string; paths that stopped on it write their summary and receive their peers' latest
summaries right away (from every unfinished peer that has summarized, in this round or before,
so a path that summarizes alone still hears from its peers); the others simply go on.

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
from .routing import levenshtein_matrix, route_all

THINK_END = "</think>"


@dataclass
class LeapOptions:
    rounds: int = 3  # R: rounds of reasoning (communication after each but the last)
    round_tokens: int = 512  # T: new tokens per round (the paper: 2048-4096 for 7B models)
    top_k: int = 2  # k: peers each path receives (the paper's tables: 4; its N=4 scripts: 2)
    router: str = "dispersed"  # dispersed | clustered | hybrid | random | all
    summary_tokens: int = 64  # S: summary budget (the paper: 256 at T=2048, a 1:8 ratio)
    answer_tokens: int = 64  # A: budget of the forced final answer
    comm_rounds: tuple[int, ...] | None = None  # rounds after which paths communicate (None: all)
    token_budget: int | None = None  # cap on a path's total generated tokens
    tags: str = "comment"  # comment (released code) | peer_summary (paper figures)
    leap_t: bool = False  # the model decides when to summarize (LeaP-T fine-tuned models)


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


def question_prompt(problem: Problem, opts: LeapOptions, render: Callable[..., str]) -> str:
    """The prompt every path of `problem` starts from (LeaP-T models: the plain one)."""
    if opts.leap_t:
        return render(plain_prompt(problem))
    return render(leap_prompt(problem), prefill=LEAP_PREFILL)


def solve(problems: Sequence[Problem], store: PathStore, cfg, render: Callable[..., str], seed: int,
          opts: LeapOptions, similarity: Callable[[Sequence[str]], list[list[float]]] = levenshtein_matrix,
          on_round: Callable[[int, int], None] | None = None) -> list[list[PathTrace]]:
    tags = TAG_SETS[opts.tags]
    N = cfg.paths
    round_stops = (THINK_END, tags.open_summary) if opts.leap_t else (THINK_END,)
    traces: list[list[PathTrace]] = []
    ids: list[list[int]] = []
    for p in problems:
        prompt = question_prompt(p, opts, render)
        traces.append([PathTrace(prompt=prompt) for _ in range(N)])
        ids.append([store.add(prompt) for _ in range(N)])
    ids_flat = [i for row in ids for i in row]
    sid = {i: (q, j) for q, row in enumerate(ids) for j, i in enumerate(row)}  # store id -> (question, path)
    tr = lambda i: traces[sid[i][0]][sid[i][1]]  # noqa: E731
    rng = random.Random(seed)
    latest: dict[int, str] = {}  # store id -> its latest summary (LeaP-T peers)
    sample = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.sample_top_k, min_p=cfg.min_p)

    def left(i: int) -> int:
        return opts.round_tokens if opts.token_budget is None else min(opts.round_tokens, opts.token_budget - tr(i).tokens)

    for r in range(opts.rounds):
        for i in ids_flat:
            if not tr(i).finished and left(i) <= 0:  # a summary may have used the rest of the budget
                tr(i).finished, tr(i).finish = True, "budget"
        active = [i for i in ids_flat if not tr(i).finished]
        if not active:
            break
        # 1. a round of reasoning, grouped by remaining budget so each call has one max_tokens
        wants_summary: list[int] = []
        offset = 0  # distinct per-request seeds across the calls of one round
        for budget in sorted({left(i) for i in active}, reverse=True):
            group = [i for i in active if left(i) == budget]
            call_seed = seed + 10_000 * r + offset
            offset += len(group)
            outs = store.advance(group, SamplingParams(max_tokens=budget, stop=round_stops, seed=call_seed, **sample))
            for i, c in zip(group, outs):
                t = tr(i)
                t.tokens += c.num_tokens
                t.rounds.append({"round": r, "text": c.text, "tokens": c.num_tokens})
                if c.stop == THINK_END or (c.finish_reason == "stop" and c.stop is None):
                    t.finished, t.finish = True, ("think" if c.stop == THINK_END else "eos")
                elif opts.token_budget is not None and t.tokens >= opts.token_budget:
                    t.finished, t.finish = True, "budget"
                elif c.stop == tags.open_summary:
                    wants_summary.append(i)
        for i in active:
            t = tr(i)
            choices = problems[sid[i][0]].choices
            t.rounds[-1]["answer"] = extract_answer(own_text(store.text(i)[len(t.prompt):], tags), choices)
        # 2. summaries
        last = r == opts.rounds - 1
        communicates = not last and (opts.comm_rounds is None or r in opts.comm_rounds)
        if opts.leap_t:
            summarizers = [i for i in wants_summary if not last]
            if summarizers:
                for i in summarizers:
                    store.extend(i, "\n")
        else:
            summarizers = [i for i in active if not tr(i).finished] if communicates else []
            for i in summarizers:
                store.rewind(i, _drop_last_paragraph(tr(i).rounds[-1]["text"]))
                store.extend(i, summary_request(r, sid[i][1], tags))
        if summarizers:
            outs = store.advance(summarizers, SamplingParams(max_tokens=opts.summary_tokens,
                                                             stop=(tags.close_summary, THINK_END),
                                                             seed=seed + 10_000 * r + 5_000, **sample))
            for i, c in zip(summarizers, outs):
                tr(i).tokens += c.num_tokens
                if c.stop == THINK_END:  # the model tried to end its thinking inside the summary
                    store.rewind(i, len(THINK_END))
                if c.stop != tags.close_summary:  # repair a cut-off, half-written or missing closing tag
                    store.extend(i, repair_close_tag(store.text(i), tags.close_summary, c.finish_reason == "length"))
                latest[i] = _summary_of(store.text(i), tags.open_summary, tags.close_summary)
                tr(i).rounds[-1].update(summary=latest[i], summary_tokens=c.num_tokens)
            # 3. routing per question, then 4. injection of the peers' summaries
            for q, row in enumerate(ids):
                receivers = [i for i in row if i in summarizers]
                if not receivers:
                    continue
                # the pool of peers: unfinished paths with a summary (LeaP-T: their latest one)
                pool = [i for i in row if i in latest and not tr(i).finished] if opts.leap_t else receivers
                members = sorted(set(pool) | set(receivers))
                sims = similarity([latest[i] for i in members])
                local = {i: n for n, i in enumerate(members)}
                chosen = route_all(sims, opts.top_k, opts.router, rng, members=[local[i] for i in receivers],
                                   pool=range(len(members)))
                for i in receivers:
                    peers = [(members[j], s) for j, s in chosen[local[i]]]
                    store.extend(i, peer_block([latest[j] for j, _ in peers], tags))
                    tr(i).rounds[-1]["peers"] = [{"peer": sid[j][1], "similarity": round(s, 4)} for j, s in peers]
        if on_round:
            on_round(r, len(active))
    # 5. forced final answer for paths still reasoning
    unfinished = [i for i in ids_flat if tr(i).finish in ("", "budget")]  # budget-capped paths answer too
    for i in unfinished:
        store.extend(i, final_answer(problems[sid[i][0]]))
    outs = store.advance(unfinished, SamplingParams(max_tokens=opts.answer_tokens, stop=(THINK_END,),
                                                    seed=seed + 99_999, **sample))
    for i, c in zip(unfinished, outs):
        tr(i).tokens += c.num_tokens
        tr(i).finished, tr(i).finish = True, "forced"
    for row in ids:
        for i in row:
            tr(i).text = store.text(i)[len(tr(i).prompt):]
            tr(i).own_text = own_text(tr(i).text, tags)
    return traces
