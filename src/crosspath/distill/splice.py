"""Spliced LeaP traces: correct independent paths cut into rounds, with true summaries and peers.

A small base model rarely completes the LeaP protocol (it does not summarize when asked, or loses
its way after the peers' block), so its LeaP runs yield few traces. Splicing builds traces in the
exact LeaP format from what it does well, solving alone, so LeaP-T sees the format with true content:

    for every question, all N independent paths (correct or not), same prompt and budget as LeaP:
        cut each path at the round boundaries: before its token T*k (k = 1..R-1), at the last
            paragraph break in that round, else the last line break, else the last sentence end,
            else the last space; a path shorter than T*k tokens has ended before exchange k, and
            a forced-answer lead-in is never cut into
        summary of a path at a cut = its own running result: the last (at most two) sentences
            before the cut that state a result (a digit or "="), else its last sentence, cut to
            S tokens, written as LeaP writes one: recap trigger + "<summarize>\\nSo far, " +
            that text + "\\n</summarize>" (prompts.summary_request: the same trigger LeaP would use)
        peers at exchange k: the paths of the question that reached it (the pool); each gets k
            peers chosen by LeaP's router (dispersed by default, Levenshtein ratio of the summaries)
            and the peers' block LeaP injects (prompts.peer_block; "no comments" when alone)
    every correct path becomes one trace, origin "spliced"; its words after each peers' block are
    the ones it wrote alone (it did not read its peers: the limit of splicing, see docs/distill.md)

The summaries are true (the path did reach that result, in those words) and the peers' summaries
are real paths' running results on the same question, right or wrong, as LeaP would show them.
"""

from __future__ import annotations

import random
import re
from ..infer.prompts import SUMMARY_OPENER, TAG_SETS, Tags, peer_block, summary_request
from ..infer.routing import levenshtein_matrix, route_all
from .traces import FORCED, trace_row

SENTENCE_END = re.compile(r"[.!?](?=\s)")
RESULT = re.compile(r"[\d=]")


def boundary(text: str, lo: int, hi: int) -> int | None:
    """Where to cut text[lo:hi]: after its last paragraph, else line, else sentence, else word (None: nowhere).

    >>> t = "a = 1.\\n\\nb = 2. c d"
    >>> t[:boundary(t, 0, len(t))], t[:boundary(t, 8, len(t))], t[:boundary(t, 8, 12)]
    ('a = 1.', 'a = 1.\\n\\nb = 2.', 'a = 1.\\n\\nb =')
    """
    lo += len(text[lo:hi]) - len(text[lo:hi].lstrip())  # the whitespace the previous cut left
    window = text[lo:hi]
    for found in (window.rfind("\n\n"), window.rfind("\n")):
        if found > 0:
            return lo + found
    ends = [m.end() for m in SENTENCE_END.finditer(window)]
    if ends:
        return lo + ends[-1]
    space = window.rfind(" ")
    return lo + space if space > 0 else None


def cut_points(text: str, tok, round_tokens: int, rounds: int) -> list[int]:
    """Character positions of the path's cuts, one per exchange it reaches (at most rounds - 1)."""
    own_end = min([k for k in (text.find(lead) for lead in FORCED) if k >= 0] or [len(text)])
    offsets = tok(text[:own_end], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cuts, prev = [], 0
    for k in range(1, rounds):
        if len(offsets) <= k * round_tokens:
            break  # the path had finished before token T*k: it never reaches exchange k
        c = boundary(text, prev, offsets[k * round_tokens][0])
        if c is None or not text[prev:c].strip() or not text[c:own_end].strip():
            break
        cuts.append(c)
        prev = c
    return cuts


def conclusion(head: str, tok, max_tokens: int) -> str:
    """The path's running result before a cut (see the module docstring), first letter lowered.

    >>> from types import SimpleNamespace as NS
    >>> tok = lambda s, **kw: {"input_ids": s.split()}  # a word-level stand-in
    >>> conclusion("Let us add. First 2 + 3 = 5.\\nThen 5 + 1 = 6. Now", tok, 20)
    'first 2 + 3 = 5. Then 5 + 1 = 6.'
    """
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", head) if s.strip()]
    if parts and not SENTENCE_END.search(parts[-1] + " ") and len(parts) > 1:
        parts = parts[:-1]  # a half-written last sentence is not a conclusion yet
    results = [s for s in parts if RESULT.search(s)] or parts[-1:]
    text = " ".join(results[-2:])
    if len(tok(text, add_special_tokens=False)["input_ids"]) > max_tokens:
        text = results[-1]
    words = text.split(" ")
    while len(words) > 1 and len(tok(" ".join(words), add_special_tokens=False)["input_ids"]) > max_tokens:
        words = words[:-1]
    text = " ".join(words) + ("..." if len(words) < len(text.split(" ")) else "")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def splice_question(row: dict, tok, round_tokens: int, rounds: int, summary_tokens: int, top_k: int = 2,
                    router: str = "dispersed", seed: int = 0, tags: Tags = TAG_SETS["comment"],
                    correct_only: bool = True) -> list[dict]:
    """One independent result row (N paths) -> spliced trace rows of its correct paths (all paths without
    correct_only) that reach an exchange."""
    paths = row["paths"]
    cuts = [cut_points(p["text"], tok, round_tokens, rounds) for p in paths]
    summaries = [[conclusion(p["text"][:c], tok, summary_tokens) for c in cs] for p, cs in zip(paths, cuts)]
    recorded = [[(SUMMARY_OPENER + s).strip() for s in ss] for ss in summaries]  # as LeaP records it
    peers: list[list[list[tuple[int, float]]]] = [[] for _ in paths]  # [path][exchange] -> (peer, similarity)
    for k in range(rounds - 1):
        pool = [j for j, cs in enumerate(cuts) if len(cs) > k]
        if not pool:
            break
        sims = levenshtein_matrix([recorded[j][k] for j in pool])
        chosen = route_all(sims, top_k, router, random.Random(f"{seed}/{row['id']}/{k}"))
        for n, j in enumerate(pool):
            peers[j].append([(pool[m], s) for m, s in chosen[n]])
    traces = []
    for j, (p, cs) in enumerate(zip(paths, cuts)):
        if (correct_only and not p.get("correct")) or not cs:
            continue
        text, rounds_rec = p["text"][:cs[0]].rstrip(), []
        for k, c in enumerate(cs):
            got = [recorded[m][k] for m, _ in peers[j][k]]
            text += (summary_request(k, j, tags) + summaries[j][k] + "\n" + tags.close_summary
                     + peer_block(got, tags))
            end = cs[k + 1] if k + 1 < len(cs) else len(p["text"])
            seg = p["text"][c:end].lstrip()
            text += seg.rstrip() if k + 1 < len(cs) else seg
            rounds_rec.append({"round": k, "summary": recorded[j][k],
                               "peers": [{"peer": m, "similarity": round(s, 4)} for m, s in peers[j][k]]})
        traces.append(trace_row(row, j, "spliced", text, p, rounds_rec))
    return traces
