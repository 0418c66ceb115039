"""Reading finished runs: the paper's influence analysis and side-by-side comparison."""

from __future__ import annotations

import json
from pathlib import Path

from .budget import budget_warning
from .aggregate import AGGREGATORS, recompute
from .runner import format_table, method_label, read_results


def influence(rows: list[dict]) -> list[dict]:
    """Per round r (a round whose paths received peers' summaries), how the answers of the paths
    that received comments changed by the end of round r+1 (LeaP paper, influence analysis).

    Each round record holds `answer` (extracted at the end of the round, before comments),
    `correct`, and `peers` when the path received summaries.
    """
    stats: dict[int, dict[str, int]] = {}
    for row in rows:
        for path in row["paths"]:
            rounds = path.get("rounds", [])
            for r, rd in enumerate(rounds):
                if "peers" not in rd:
                    continue
                s = stats.setdefault(rd["round"], {"round": rd["round"], "paths": 0, "changed": 0,
                                                   "wrong_to_right": 0, "right_to_wrong": 0,
                                                   "right_before": 0, "right_after": 0})
                before_ok = bool(rd.get("correct"))
                nxt = rounds[r + 1] if r + 1 < len(rounds) else None
                after_ans = nxt.get("answer") if nxt else path.get("answer")
                after_ok = bool(nxt.get("correct")) if nxt else bool(path.get("correct"))
                s["paths"] += 1
                s["changed"] += int(after_ans != rd.get("answer"))
                s["wrong_to_right"] += int(not before_ok and after_ok)
                s["right_to_wrong"] += int(before_ok and not after_ok)
                s["right_before"] += int(before_ok)
                s["right_after"] += int(after_ok)
    return [stats[k] for k in sorted(stats)]


def influence_table(rows: list[dict]) -> str:
    lines = ["| after round | paths with comments | answer changed | wrong->right | right->wrong | right before | right after |",
             "|---|---|---|---|---|---|---|"]
    for s in influence(rows):
        lines.append(f"| {s['round']} | {s['paths']} | {s['changed']} | {s['wrong_to_right']} | {s['right_to_wrong']} | "
                     f"{s['right_before']} | {s['right_after']} |")
    if len(lines) == 2:
        lines.append("| - | no path received comments (not a LeaP run, or every path finished in round 0) | | | | | |")
    return "\n".join(lines)


def load_summary(run_dir: str | Path) -> dict:
    p = Path(run_dir) / "summary.json"
    if not p.exists():
        raise FileNotFoundError(f"{run_dir}: no summary.json (is it a crosspath run directory?)")
    return json.loads(p.read_text())


def aggregator_table(run_dirs: list[str], sums: list[dict]) -> str:
    """Every aggregator's accuracy per run, recomputed from its results.jsonl (no generation), with
    the ecosystem keys (lighteval / lm-evaluation-harness names, standard error after +-). A run
    without recorded confidence has '-' under the confidence aggregators."""
    names = AGGREGATORS
    head = "| method | " + " | ".join(names) + " | pass@k:k=1&n=N | maj@N |"
    lines = ["Aggregators (from results.jsonl):", "", head, "|" + "---|" * (len(names) + 3)]
    for d, s in zip(run_dirs, sums):
        acc = recompute(read_results(Path(d) / "results.jsonl"))
        n = s.get("paths")
        eco = []
        for key in (f"pass@k:k=1&n={n}", f"maj@{n}"):
            v, se = s.get(key), s.get(f"{key}_stderr")
            eco.append("-" if v is None else f"{v:.3f}" + ("" if se is None else f" +- {se:.3f}"))
        cells = ["-" if acc.get(a) is None else f"{acc[a]:.3f}" for a in names]
        lines.append(f"| {method_label(s)} | " + " | ".join(cells + eco) + " |")
    return "\n".join(lines)


def compare(run_dirs: list[str]) -> str:
    """The runs side by side (each accuracy next to the tokens it cost), B - A for two runs, every
    aggregator per run (`aggregator_table`), and a warning when the per-path token budgets differ."""
    sums = [load_summary(d) for d in run_dirs]
    table = format_table(sums) + "\n\n" + aggregator_table(run_dirs, sums)
    warning = budget_warning(sums)
    if len(sums) == 2 and sums[0]["pass_at_1"] is not None:
        a, b = sums
        table += (f"\n\nB - A: pass@1 {b['pass_at_1'] - a['pass_at_1']:+.3f}, cons@N {b['cons_at_n'] - a['cons_at_n']:+.3f}, "
                  f"tokens/question x{b['tokens_per_question'] / max(a['tokens_per_question'], 1e-9):.2f}, "
                  f"wall x{b['wall_seconds'] / max(a['wall_seconds'], 1e-9):.2f}")
    return table + (f"\n\n{warning}" if warning else "")


def analyze(run_dir: str | Path) -> str:
    rows = read_results(Path(run_dir) / "results.jsonl")
    return f"{len(rows)} questions in {run_dir}\n\n" + influence_table(rows)
