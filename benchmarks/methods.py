"""The field's parallel-reasoning methods side by side, on the same questions, at matched tokens.

    python benchmarks/methods.py [--model smollm2-135m] [--task rg:chain_sum] [--backend hf|vllm|openai]
                                 [--questions 100] [--paths 8] [--max-tokens 200] [--answer-tokens 24]
                                 [--only NAME] [--resume | --overwrite] [--table] [--plot curve.png]

Every configuration may generate at most N x P tokens per question, P = max_tokens + answer_tokens
(the per-path budget; a path cut at max_tokens writes a forced answer of at most answer_tokens):

    independent      N paths; token confidence recorded, so every aggregator applies to the same paths:
                     majority (self-consistency), conf_weighted, top10_conf (DeepConf-low offline),
                     top90_conf (DeepConf-high offline), longest (complexity-based consistency)
    leap             N paths, dispersed router, R rounds of T = (P - A - (R-1) S) / R: LeaP's per-path
                     budget is P
    leap-conf        LeaP + DeepConf: the confident router, and low-confidence paths stop at round
                     boundaries (round 0 sets the threshold, eta 90)
    pacore           rounds of N/2 and N/2 paths (the second reads the first's messages), same P
    deepconf-high    online, eta 90: N/2 warm-up paths set the threshold, the other N/2 may stop early
    deepconf-low     online, eta 10
    moa              N-1 proposers and one aggregator (2 layers), same P

DeepConf offline is the independent run's top10_conf / top90_conf rows (same paths, same seeds: its
generation is independent sampling with confidence recorded). Columns: pass@1 (mean over the graded
paths), the method's aggregated accuracy (its own aggregator), generated tokens per question (all
rounds), wall seconds (solve time summed over questions), tokens/s. Each run is its own resumable
directory under --root; `--table` prints from them without generating.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from crosspath.infer.aggregate import AGGREGATORS
from crosspath.infer.runner import RunConfig, make_generator, read_results, run
from crosspath.envinfo import machine
from crosspath.tasks.metrics import mean_stderr
from shared import finished_by_all, mcnemar_p

TASK_OPTIONS = dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1)  # rg:chain_sum, 1-digit sums


def configs(a) -> dict[str, dict]:
    N, half = a.paths, max(1, a.paths // 2)
    T = (a.max_tokens - (a.rounds - 1) * a.summary_tokens) // a.rounds
    return {
        "independent": dict(method="independent", confidence=True),
        "leap": dict(method="leap", router="dispersed", rounds=a.rounds, round_tokens=T, peers_k=min(2, N - 1),
                     summary_tokens=a.summary_tokens, max_tokens=None),
        "leap-conf": dict(method="leap", router="confident", leap_conf_stop=True, rounds=a.rounds, round_tokens=T,
                          peers_k=min(2, N - 1), summary_tokens=a.summary_tokens, max_tokens=None),
        "pacore": dict(method="pacore", paths_per_round=[half, N - half]),
        "deepconf-high": dict(method="deepconf", deepconf_mode="online", conf_eta=90, warmup_paths=half),
        "deepconf-low": dict(method="deepconf", deepconf_mode="online", conf_eta=10, warmup_paths=half),
        "moa": dict(method="moa", paths=N - 1, moa_layers=2),
    }


def make_config(name: str, a) -> RunConfig:
    cfg = RunConfig(model=a.model, task=a.task, task_options=TASK_OPTIONS if a.task == "rg:chain_sum" else None,
                    limit=a.questions, paths=a.paths, max_tokens=a.max_tokens, answer_tokens=a.answer_tokens,
                    temperature=0.6, top_p=0.95, seed=0, batch_questions=a.batch_questions, backend=a.backend,
                    base_url=a.base_url, conf_window=a.conf_window, out=str(Path(a.root) / name),
                    resume=a.resume, overwrite=a.overwrite, threads=a.threads or None)
    for k, v in configs(a)[name].items():
        setattr(cfg, k, v)
    return cfg


def table(a) -> tuple[str, list[dict]]:
    """The table on the questions every configuration has finished, and its points for the plot."""
    runs = {name: read_results(Path(a.root) / name / "results.jsonl") for name in configs(a)}
    common = finished_by_all(runs)
    lines = [f"On the {len(common)} questions every configuration finished "
             f"(per-question budget {a.paths} x {a.max_tokens + a.answer_tokens} tokens):", "",
             "| method | aggregator | pass@1 (± s.e.) | aggregated (± s.e.) | tokens/question | wall s | tokens/s |",
             "|---|---|---|---|---:|---:|---:|"]
    points = []
    for name, rows in runs.items():
        rows = [r for r in rows if r["id"] in common]
        if not rows:
            lines.append(f"| {name} | | not run | | | | |")
            continue
        p1 = [r["pass_at_1"] for r in rows]
        tokens = sum(r["tokens"] for r in rows)
        wall = sum(r["wall_seconds"] for r in rows)
        aggs = ["conf_weighted"] if name.startswith("deepconf") or name == "leap-conf" else (AGGREGATORS if name == "independent" else ["majority"])
        for agg in aggs:
            acc = [float(r["aggregates"][agg]["correct"]) for r in rows if agg in r.get("aggregates", {})]
            if len(acc) != len(rows):
                continue
            label = {"top10_conf": "deepconf-low offline", "top90_conf": "deepconf-high offline"}.get(agg, name)
            m, se = sum(acc) / len(acc), mean_stderr(acc) or 0.0
            lines.append(f"| {label} | {agg} | {sum(p1) / len(p1):.3f} ± {mean_stderr(p1) or 0:.3f} | {m:.3f} ± {se:.3f} "
                         f"| {tokens / len(rows):.0f} | {wall:.0f} | {tokens / max(wall, 1e-9):.1f} |")
            points.append({"label": f"{label} ({agg})", "tokens": tokens / len(rows), "accuracy": m})
        if name == "pacore":  # accuracy of each round's majority: the rounds curve
            for k in sorted({p["round"] for r in rows for p in r["paths"]}):
                acc = [_majority_correct([p for p in r["paths"] if p["round"] == k], r) for r in rows]
                toks = sum(p["tokens"] for r in rows for p in r["paths"] if p["round"] <= k) / len(rows)
                points.append({"label": f"pacore round {k}", "tokens": toks, "accuracy": sum(acc) / len(acc)})
    base = {r["id"]: bool(r["aggregates"]["majority"]["correct"]) for r in runs["independent"] if r["id"] in common}
    paired = []
    for name, rows in runs.items():
        agg = "conf_weighted" if name.startswith("deepconf") or name == "leap-conf" else "majority"
        got = {r["id"]: bool(r["aggregates"][agg]["correct"]) for r in rows
               if r["id"] in base and agg in r.get("aggregates", {})}
        if name != "independent" and len(got) == len(base) and base:
            wins, losses = sum(got[i] and not base[i] for i in base), sum(base[i] and not got[i] for i in base)
            paired.append(f"{name} {wins} / {losses} (p = {mcnemar_p(wins, losses):.3f})")
    if paired:
        lines += ["", "Paired per question against independent + majority (exact McNemar on the aggregated "
                      "answer, wins / losses): " + ", ".join(paired)]
    return "\n".join(lines), points


def _majority_correct(paths: list[dict], row: dict) -> float:
    from crosspath.infer.aggregate import aggregate
    from crosspath.tasks import SameAnswer

    got = aggregate("majority", [{**p, "graded": True} for p in paths], SameAnswer(row))
    return float(bool(got and got[1]))


def plot(points: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    spots: dict[tuple, list[str]] = {}  # points at the same place get one label, their names stacked
    for p in points:
        spots.setdefault((round(p["tokens"], 1), round(p["accuracy"], 4)), []).append(p["label"])
    for (x, y), names in spots.items():
        ax.scatter(x, y)
        ax.annotate("\n".join(names), (x, y), textcoords="offset points", xytext=(4, 2), fontsize=7, va="center")
    ax.set_xlabel("generated tokens per question")
    ax.set_ylabel("aggregated accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="rg:chain_sum")
    ap.add_argument("--backend", default="hf", choices=("hf", "vllm", "openai"))
    ap.add_argument("--base-url", action="append", default=[], help="openai backend: server URL (repeatable)")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--paths", type=int, default=8, help="N: paths per question (every method spends N x P)")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--answer-tokens", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2, help="LeaP rounds")
    ap.add_argument("--summary-tokens", type=int, default=24, help="LeaP summary budget")
    ap.add_argument("--conf-window", type=int, default=64, help="DeepConf window (paper 2048, for 32k-token traces)")
    ap.add_argument("--batch-questions", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--root", default="runs/bench/methods")
    ap.add_argument("--only", action="append", help="run only this configuration (repeatable)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the table from existing runs, generate nothing")
    ap.add_argument("--plot", help="write the accuracy-vs-tokens points (PaCoRe rounds, DeepConf thresholds) as PNG")
    a = ap.parse_args()
    print(f"command: python {shlex.join(sys.argv)}\nmachine: {machine()}\n", flush=True)
    if not a.table:
        gen = None
        for name in a.only or list(configs(a)):
            cfg = make_config(name, a)
            gen = gen or make_generator(cfg)
            s = run(cfg, generator=gen, progress=False, log=lambda m: print(m, file=sys.stderr))
            print(f"{name}: pass@1 {s['pass_at_1']:.3f} {s['aggregated']['aggregator']} {s['aggregated']['accuracy']} "
                  f"tokens/q {s['tokens_per_question']:.0f} wall {s['wall_seconds']:.0f}s", flush=True)
    text, points = table(a)
    print(text)
    if a.plot:
        plot(points, a.plot)
        Path(a.plot).with_suffix(".json").write_text(json.dumps(points, indent=1))


if __name__ == "__main__":
    main()
