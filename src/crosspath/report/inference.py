"""The inference part of a report: summary metrics, plots, influence, and every question's paths.

Per question the N paths stand side by side (columns) and the rounds go down (rows). A round's
cell holds its intermediate answer (✓/✗), its text (collapsed), the summary the path wrote, whose
summaries it received (`peers`, with the router's similarity) and who received its own. An answer
that changed in the round after the path read its peers is highlighted: green wrong -> right, red
right -> wrong, amber any other change.
"""

from __future__ import annotations

from typing import Any

from .markup import answer, cards, config_table, details, esc, figure, fmt, mark, pre


def summary_block(summary: dict) -> str:
    pk = summary.get("pass_at_k") if isinstance(summary.get("pass_at_k"), dict) else {}
    n = summary.get("paths")
    items = [("pass@1 (mean over paths)", fmt(summary.get("pass_at_1"))),
             (f"cons@{n if n is not None else 'N'} (majority vote)", fmt(summary.get("cons_at_n")))]
    items += [(f"pass@{k}", fmt(v)) for k, v in sorted(pk.items(), key=lambda kv: int(kv[0]))
              if str(k).isdigit() and str(k) != "1"]
    items += [("questions", fmt(summary.get("questions"))),
              ("tokens per question", fmt(summary.get("tokens_per_question"), 1)),
              ("wall seconds", fmt(summary.get("wall_seconds"), 1)),
              ("tokens per second", fmt(summary.get("tokens_per_second"), 1))]
    what = " · ".join(f"{k} <code>{esc(fmt(summary[k]))}</code>" for k in ("method", "task", "model", "backend", "paths")
                      if k in summary)
    return cards(items) + f'<p class="meta">{what} · {esc(fmt(summary.get("tokens")))} tokens in all</p>'


def _outcome(before: Any, after: Any) -> str:
    """CSS class of an answer change after reading peers: up, down or side."""
    if not before and after:
        return "up"
    if before and not after:
        return "down"
    return "side"


def _change(rd_before: dict, ans_after: Any, ok_after: Any) -> tuple[str, str]:
    """(CSS class, note) of the next cell when the path read comments at the end of `rd_before`;
    empty strings when it read none or its answer stayed the same."""
    if "peers" not in rd_before or ans_after == rd_before.get("answer"):
        return "", ""
    cls = _outcome(rd_before.get("correct"), ok_after)
    return f" changed {cls}", (f'<div class="change {cls}">changed after comments: {answer(rd_before.get("answer"))}'
                               f" → {answer(ans_after)}</div>")


def _senders(paths: list[dict], r: int) -> dict[int, list[int]]:
    """path index -> the paths that received its round-r summary."""
    sent: dict[int, list[int]] = {}
    for j, p in enumerate(paths):
        rounds = p.get("rounds") or []
        if r < len(rounds):
            for peer in rounds[r].get("peers") or []:
                sent.setdefault(peer.get("peer"), []).append(j)
    return sent


def _round_cell(p: dict, j: int, r: int, sent: dict[int, list[int]]) -> str:
    rounds = p.get("rounds") or []
    if r >= len(rounds):
        return f'<td class="cell empty">finished ({esc(p.get("finish") or "?")}) in round {len(rounds) - 1}</td>'
    rd = rounds[r]
    cls, change = _change(rounds[r - 1], rd.get("answer"), rd.get("correct")) if r > 0 else ("", "")
    head = (f'<div class="ans">answer {answer(rd.get("answer"))} {mark(rd.get("correct")) if "answer" in rd else ""}'
            f' <span class="tok">{esc(fmt(rd.get("tokens")))} tok</span></div>')
    body = [head, change, details("round text", pre(rd.get("text", "")), cls="text")]
    if "summary" in rd:
        body.append(f'<div class="summary"><span class="label">summary ({esc(fmt(rd.get("summary_tokens")))} tok)'
                    f'</span>{esc(rd["summary"])}</div>')
    if "peers" in rd:
        got = ", ".join(f'<span class="peer">P{esc(pe.get("peer"))}</span> <small>sim {esc(fmt(pe.get("similarity"), 2))}'
                        f"</small>" for pe in rd["peers"]) or '<span class="none">no peers left</span>'
        body.append(f'<div class="peers">received ← {got}</div>')
    if sent.get(j):
        body.append('<div class="peers sent">sent → ' + ", ".join(f'<span class="peer">P{k}</span>' for k in sent[j])
                    + "</div>")
    return f'<td class="cell{cls}">{"".join(body)}</td>'


def _final_cell(p: dict) -> str:
    rounds = p.get("rounds") or []
    cls, change = _change(rounds[-1], p.get("answer"), p.get("correct")) if rounds else ("", "")
    return (f'<td class="cell final{cls}"><div class="ans">final {answer(p.get("answer"))} {mark(p.get("correct"))}</div>{change}'
            f'<div class="meta">{esc(fmt(p.get("tokens")))} tokens · finish {esc(p.get("finish") or "—")}</div>'
            + details("full text (as the path saw it)", pre(p.get("text", "")), cls="text") + "</td>")


def question_block(row: dict, index: int) -> str:
    paths = row.get("paths") or []
    n_rounds = max([len(p.get("rounds") or []) for p in paths] + [0])
    heads = "".join(f'<th scope="col" class="pathhead" data-path="{j}">path P{j} {mark(p.get("correct"))}</th>'
                    for j, p in enumerate(paths))
    body = []
    if any(p.get("rounds") and "answer" in p["rounds"][0] for p in paths) or n_rounds > 1:
        for r in range(n_rounds):
            sent = _senders(paths, r)
            comm = any(r < len(p.get("rounds") or []) and "peers" in p["rounds"][r] for p in paths)
            label = f'round {r}' + ('<br><small>comments after</small>' if comm else "")
            body.append(f'<tr><th scope="row">{label}</th>'
                        + "".join(_round_cell(p, j, r, sent) for j, p in enumerate(paths)) + "</tr>")
    body.append('<tr class="finalrow"><th scope="row">final</th>' + "".join(_final_cell(p) for p in paths) + "</tr>")
    choices = row.get("choices")
    extra = f"<p>choices: {esc(fmt(choices))}</p>" if choices else ""
    return (f'<article class="question" id="q{index}" data-question="{esc(row.get("id"))}">'
            f'<h3>#{index + 1} · {esc(row.get("id"))} <span class="qmeta">pass@1 {esc(fmt(row.get("pass_at_1"), 2))} · '
            f'cons {mark(row.get("cons_correct"))}</span></h3>'
            f'<div class="qtext">{pre(row.get("question", ""))}</div>{extra}'
            f'<p class="answers">gold {answer(row.get("answer"))} · consensus {answer(row.get("cons_answer"))} '
            f'{mark(row.get("cons_correct"))} · {esc(fmt(row.get("tokens")))} tokens · '
            f'{esc(fmt(row.get("wall_seconds"), 2))} s</p>'
            + details("prompt as rendered", pre(row.get("prompt", "")), cls="text")
            + f'<div class="scroll"><table class="paths"><thead><tr><th></th>{heads}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div></article>')


def influence_table(stats: list[dict]) -> str:
    if not stats:
        return '<p class="note">No path received peers\' summaries (not a LeaP run, or every path finished in round 0).</p>'
    cols = ("round", "paths", "changed", "wrong_to_right", "right_to_wrong", "right_before", "right_after")
    names = ("after round", "paths with comments", "answer changed", "wrong → right", "right → wrong",
             "right before", "right after")
    head = "".join(f"<th>{n}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{esc(s.get(c))}</td>" for c in cols) + "</tr>" for s in stats)
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def skipped_block(skipped: list[tuple[str, str]]) -> str:
    """The lines of results.jsonl the report could not use: (file:line, what is wrong)."""
    if not skipped:
        return ""
    items = "".join(f"<li><code>{esc(where)}</code>: {esc(problem)}</li>" for where, problem in skipped)
    n = len(skipped)
    return (f'<div class="skipped"><p class="note">{n} line{"" if n == 1 else "s"} of results.jsonl skipped '
            f"(not counted anywhere on this page):</p><ul>{items}</ul></div>")


def section(rows: list[dict], summary: dict, max_questions: int, skipped: list[tuple[str, str]] = ()) -> str:
    from ..infer.analysis import influence
    from . import plots

    stats = influence(rows)
    shown = rows if max_questions <= 0 else rows[:max_questions]
    note = (f'<p class="note">Showing the first {len(shown)} of {len(rows)} questions '
            f"(--max-questions {max_questions}; 0 shows all).</p>" if len(shown) < len(rows) else "")
    index = "".join(f'<li><a href="#q{i}">{esc(r.get("id"))}</a> {mark(r.get("cons_correct"))}</li>'
                    for i, r in enumerate(shown))
    parts = ['<section id="summary"><h2>Summary</h2>' + summary_block(summary) + skipped_block(list(skipped))
             + "</section>",
             '<section id="plots"><h2>Plots</h2><div class="figs">'
             + figure(plots.accuracy_vs_tokens(rows), "accuracy vs tokens")
             + figure(plots.influence_bars(stats), "influence of peers' summaries per round") + "</div></section>"]
    if stats or summary.get("method") == "leap":
        parts.append('<section id="influence"><h2>Influence of peers\' summaries</h2>' + influence_table(stats)
                     + "</section>")
    parts += ['<section id="config"><h2>Config</h2>' + config_table(summary.get("config")) + "</section>",
              f'<section id="questions"><h2>Questions</h2>{note}'
              '<p class="tools"><button type="button" data-toggle="open">expand all texts</button> '
              '<button type="button" data-toggle="close">collapse all</button></p>'
              f'<ol class="qindex">{index}</ol>'
              + "".join(question_block(r, i) for i, r in enumerate(shown)) + "</section>"]
    return "".join(parts)
