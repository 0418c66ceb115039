"""LeaP traces as text: parse them into rounds, and turn them into LeaP-T training targets.

A LeaP path's text (what `crosspath run --method leap` records, and what `splice.py` builds) is

    round 0 text                      the path's own words (its last half paragraph dropped)
    \\n\\n<recap trigger>               injected by the loop (one of prompts.RECAP_TRIGGERS)
    \\n\\n<summarize>\\nSo far, ...      tag and opener injected, the summary is the path's own
    </summarize>                      written by the path (or repaired by the loop)
    \\n\\n<comment>\\nPeer 1: "..."       the peers' block and the resolve sentence (or "no comments"
    \\n</comment> + resolve            + "carry on" sentence): injected by the loop
    round 1 text ...                  the path's own words again
    [forced answer lead-in ... \\boxed{]   injected for paths still reasoning after the last round

`parse_trace` reads it back into rounds (text, summary, peers' summaries). `leap_t_target` turns
it into what a LeaP-T model must learn to write under `crosspath run --method leap --leap-t`,
where the loop injects only a newline after the `<summarize>` the model writes itself, the
peers' block and the forced-answer lead-in. The rule, piece by piece:

    target (labels = ids)   the path's own words, "\\n\\n<summarize>\\n", its summary, "</summarize>"
                            (the newline after the tag too: tokenizers merge it with the tag's ">")
    context, masked (-100)  the peers' block with its resolve sentence, the forced-answer lead-in:
                            the LeaP-T loop injects them too
    dropped from the text   the recap trigger and the summary opener "So far, " (also inside the
                            peers' summaries): the LeaP-T loop never shows them, so a masked copy
                            would be context the model never sees at inference, and it would learn
                            "open <summarize> when told to" instead of when to summarize

>>> from crosspath.infer.prompts import TAG_SETS, peer_block, summary_request
>>> t = "2 + 3 = 5." + summary_request(0, 0, TAG_SETS["comment"]) + "I have 5.</summarize>"
>>> t += peer_block(["So far, 6."], TAG_SETS["comment"]) + "Check: \\\\boxed{5}"
>>> [(r["summary"], r["peers"]) for r in parse_trace(t)]
[('So far, I have 5.', ['So far, 6.']), (None, None)]
>>> target, masked = leap_t_target(t)
>>> target[:len("2 + 3 = 5.\\n\\n<summarize>\\nI have 5.</summarize>")]
'2 + 3 = 5.\\n\\n<summarize>\\nI have 5.</summarize>'
>>> [target[s:e].strip()[:9] for s, e in masked]
['<comment>']
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

from ..infer.prompts import (FINAL_ANSWER, FINAL_ANSWER_CHOICE, NO_COMMENTS, RECAP_TRIGGERS, RESOLVE, RESUME_ALONE,
                             SUMMARY_OPENER, TAG_SETS, Tags)

ORIGINS = ("leap", "spliced")  # where a trace comes from: a LeaP run, or correct independent paths spliced
FORCED = (FINAL_ANSWER, FINAL_ANSWER_CHOICE)


@lru_cache(maxsize=None)
def exchange_pattern(tags: Tags) -> re.Pattern:
    """One exchange: [trigger] <summarize> summary </summarize> [peers' block + resolve sentence]."""
    triggers = "|".join(re.escape(t) for t in RECAP_TRIGGERS)
    tails = "|".join(re.escape(t) for t in (RESOLVE, RESUME_ALONE))
    return re.compile(
        rf"(?P<trigger>\n\n(?:{triggers}))?(?P<pre>\n\n)?{re.escape(tags.open_summary)}(?P<nl>\n)?"
        rf"(?P<opener>{re.escape(SUMMARY_OPENER)})?(?P<summary>.*?){re.escape(tags.close_summary)}"
        rf"(?P<peers>\n\n<{tags.peers}>\n(?P<body>.*?)\n</{tags.peers}>(?:{tails})?)?", re.DOTALL)


def peer_summaries(body: str) -> list[str]:
    """The summaries listed in a peers' block body ([] for the "no comments" block).

    >>> peer_summaries('Peer 1: "a, b"\\nPeer 2: "c\\nd"')
    ['a, b', 'c\\nd']
    """
    if body.strip() == NO_COMMENTS:
        return []
    return re.findall(r'Peer \d+: "(.*?)"(?=\nPeer \d+: "|\Z)', body, flags=re.DOTALL)


def parse_trace(text: str, tags: Tags = TAG_SETS["comment"]) -> list[dict]:
    """Rounds of a LeaP trace: [{"text", "summary", "peers"}], one per round.

    "text": the round's own words (triggers excluded); "summary": what the round's summary says, as
    LeaP records it (opener included, stripped), None when the round ended without one; "peers":
    the peers' summaries it then received ([] for "no comments"), None without a peers' block.
    The last round (no exchange after it) has summary None and peers None.
    """
    rounds, pos = [], 0
    for m in exchange_pattern(tags).finditer(text):
        summary = ((m["nl"] or "") + (m["opener"] or "") + m["summary"]).strip()
        peers = peer_summaries(m["body"]) if m["peers"] else None
        rounds.append({"text": text[pos:m.start()], "summary": summary, "peers": peers})
        pos = m.end()
    rounds.append({"text": text[pos:], "summary": None, "peers": None})
    return rounds


def _own(text: str, out: list[str], masked: list[tuple[int, int]], at: int) -> int:
    """Append the path's own words to `out`, masking any forced-answer lead-in; returns the new length."""
    for lead in FORCED:
        k = text.find(lead)
        if k >= 0:
            out += [text[:k], lead, text[k + len(lead):]]
            masked.append((at + k, at + k + len(lead)))
            return at + len(text)
    out.append(text)
    return at + len(text)


def _capital(s: str) -> str:
    """ "the sum ..." -> "The sum ..." (a summary without its opener "So far, ")."""
    return s[0].upper() + s[1:] if s[:1].islower() else s


def leap_t_target(text: str, tags: Tags = TAG_SETS["comment"]) -> tuple[str, list[tuple[int, int]]]:
    """(target text, masked [start, end) character spans of it) for LeaP-T training (module docstring)."""
    out: list[str] = []
    masked: list[tuple[int, int]] = []
    at = pos = 0
    for m in exchange_pattern(tags).finditer(text):
        at = _own(text[pos:m.start()], out, masked, at)
        summary = _capital(m["summary"]) if m["opener"] else m["summary"]
        piece = f"{m['pre'] or ''}{tags.open_summary}\n{summary}{tags.close_summary}"
        out.append(piece)
        at += len(piece)
        if m["peers"]:  # peers' summaries without the opener, as LeaP-T peers write them
            peers = re.sub(rf'(Peer \d+: "){re.escape(SUMMARY_OPENER)}(.)', lambda p: p[1] + p[2].upper(), m["peers"])
            out.append(peers)
            masked.append((at, at + len(peers)))
            at += len(peers)
        pos = m.end()
    _own(text[pos:], out, masked, at)
    return "".join(out), masked


def summary_body(summary: str) -> str:
    """A recorded summary without the injected opener ("So far, I have 5." -> "I have 5.")."""
    s = summary.strip()
    return s[len(SUMMARY_OPENER.strip()):].strip() if s.startswith(SUMMARY_OPENER.strip()) else s


def leap_verdict(path: dict, summary_tokens: int | None, correct_only: bool = True) -> str:
    """Why a LeaP path is not a LeaP-T trace, or "kept".

    wrong          its final answer is wrong (with correct_only)
    no_summary     it finished before the first exchange (wrote no summary)
    empty_summary  a summary says nothing beyond the injected opener
    cut_summary    a summary hit its token budget (the loop repaired its closing tag)
    """
    if correct_only and not path.get("correct"):
        return "wrong"
    summaries = [rd for rd in path.get("rounds", []) if "summary" in rd]
    if not summaries:
        return "no_summary"
    if any(not re.search(r"\w", summary_body(rd["summary"] or "")) for rd in summaries):
        return "empty_summary"
    if summary_tokens and any(rd.get("summary_tokens", 0) >= summary_tokens for rd in summaries):
        return "cut_summary"
    return "kept"


def trace_row(row: dict, j: int, origin: str, text: str, path: dict, rounds: list[dict]) -> dict[str, Any]:
    """One line of traces.jsonl: the question, the path, where it came from, its exchanges."""
    return {"id": row["id"], "question": row["question"], "gold": row.get("answer"), "choices": row.get("choices"),
            "path": j, "origin": origin, "text": text, "answer": path.get("answer"), "correct": bool(path.get("correct")),
            "tokens": path.get("tokens"), "exchanges": len(rounds), "rounds": rounds}


def leap_trace_rows(row: dict, summary_tokens: int | None, correct_only: bool = True) -> tuple[list[dict], Counter]:
    """The traces (origin leap) of one LeaP result row, and the verdict of each of its paths."""
    traces, why = [], Counter()
    for j, p in enumerate(row["paths"]):
        verdict = leap_verdict(p, summary_tokens, correct_only)
        why[verdict] += 1
        if verdict == "kept":
            rounds = [{"round": rd["round"], "summary": rd["summary"], "peers": rd.get("peers", [])}
                      for rd in p.get("rounds", []) if "summary" in rd]
            traces.append(trace_row(row, j, "leap", p["text"], p, rounds))
    return traces, why
