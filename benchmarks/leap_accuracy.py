"""LeaP accuracy: independent sampling vs LeaP's routers at equal per-path token budget.

    python benchmarks/leap_accuracy.py [--questions 100] [--round-tokens 96] [--rounds 2]
                                       [--summary-tokens 24] [--answer-tokens 24] [--paths 4] [--top-k 2]
                                       [--only NAME] [--resume | --overwrite] [--table]

Task: reasoning-gym `chain_sum` with 1-digit numbers and 2-3 terms (the easy procedural task where
SmolLM2-135M's accuracy can move), the first `--questions` problems of seed `--task-seed`.
Model: `--model` (default the embedded SmolLM2-135M-Instruct), hf backend with KV reuse.

Configurations (each its own run directory `<root>/<name>`, resumable with `--resume`):

    independent    N paths, no exchange, max_tokens = R*T + (R-1)*S, then a forced answer of A for
                   paths cut there: LeaP's per-path budget R*T + (R-1)*S + A (infer/budget.py)
    dispersed      LeaP, the k least similar peers (Levenshtein ratio; the paper's best)
    clustered      LeaP, the k most similar peers
    hybrid         LeaP, k//2 least similar + the rest most similar
    semantic       LeaP, dispersed routing on MiniLM cosine similarity instead of Levenshtein

All share the sampling (temperature 0.6, top_p 0.95, no top-k / min-p, seed 0) and the batching.
`--table` prints the tables (summary + one influence table per LeaP run) from the run directories
without generating; a directory with fewer than `--questions` rows is marked partial.

Note: `independent.solve` passes `cfg.top_k` (LeaP's peer count) as the *sampling* top-k; the
independent configuration therefore sets `top_k = sample_top_k` (0 = off) so both methods sample
from the same distribution whether or not that is fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from crosspath.infer.analysis import influence_table
from crosspath.infer.runner import RunConfig, read_results, run
from crosspath.envinfo import machine
from shared import add_leap_options, finished_by_all, header, set_threads

# ---- defaults (all overridable on the command line) ------------------------------------------
MODEL = "smollm2-135m"
TASK = "rg:chain_sum"
TASK_OPTIONS = dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1)
QUESTIONS, TASK_SEED = 100, 0
PATHS, TOP_K = 4, 2  # N and k (the reference scripts use k = 2 for N = 4)
ROUNDS, ROUND_TOKENS, SUMMARY_TOKENS, ANSWER_TOKENS = 2, 96, 24, 24
TEMPERATURE, TOP_P, SEED = 0.6, 0.95, 0
BATCH_QUESTIONS = 8  # 8 questions x 4 paths = 32 rows per generator call
ROOT = "runs/bench/leap_accuracy"

CONFIGS = {  # name -> RunConfig overrides
    "independent": dict(method="independent"),
    "dispersed": dict(method="leap", router="dispersed"),
    "clustered": dict(method="leap", router="clustered"),
    "hybrid": dict(method="leap", router="hybrid"),
    "semantic": dict(method="leap", router="dispersed", similarity="semantic"),
}


def path_budget(a) -> int:
    """LeaP's per-path generation budget: R rounds of T, R-1 summaries of S, one forced answer of A."""
    return a.rounds * a.round_tokens + (a.rounds - 1) * a.summary_tokens + a.answer_tokens


def make_config(name: str, a) -> RunConfig:
    cfg = RunConfig(model=a.model, task=TASK, limit=a.questions, task_seed=a.task_seed, paths=a.paths,
                    temperature=TEMPERATURE, top_p=TOP_P, sample_top_k=0, min_p=0.0, seed=SEED,
                    batch_questions=a.batch_questions, rounds=a.rounds, round_tokens=a.round_tokens,
                    summary_tokens=a.summary_tokens, answer_tokens=a.answer_tokens, peers_k=a.top_k,
                    max_tokens=path_budget(a) - a.answer_tokens, out=str(Path(a.root) / name), resume=a.resume,
                    overwrite=a.overwrite)
    for k, v in CONFIGS[name].items():
        setattr(cfg, k, v)
    if cfg.method == "independent":
        cfg.top_k = cfg.sample_top_k  # see the module docstring
    return cfg


def stats(rows: list[dict]) -> dict:
    """pass@1, cons@N with standard errors over questions, tokens, and how paths ended."""
    q = len(rows)
    p1 = [r["pass_at_1"] for r in rows]
    cons = [float(r["cons_correct"]) for r in rows]
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    se = lambda xs: math.sqrt(sum((x - mean(xs)) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0  # noqa: E731
    paths = [p for r in rows for p in r["paths"]]
    finish: dict[str, int] = {}
    for p in paths:
        finish[p.get("finish") or "?"] = finish.get(p.get("finish") or "?", 0) + 1
    answered = sum(bool(p.get("answer")) for p in paths)
    wall = sum(r["wall_seconds"] for r in rows)
    tokens = sum(p["tokens"] for p in paths)
    return dict(questions=q, pass1=mean(p1), pass1_se=se(p1), cons=mean(cons), cons_se=se(cons),
                tokens_q=tokens / max(q, 1), tokens_path=tokens / max(len(paths), 1), wall=wall,
                tok_s=tokens / max(wall, 1e-9), answered=answered / max(len(paths), 1), finish=finish)


def tables(a) -> str:
    """The summary table on the questions every configuration has finished (and each one's own count)."""
    runs = {name: read_results(Path(a.root) / name / "results.jsonl") for name in CONFIGS}
    common = finished_by_all(runs)
    head = ("| configuration | questions | pass@1 (± s.e.) | cons@4 (± s.e.) | tokens/path | answered | "
            "path ends | wall s | tokens/s |")
    out = [f"On the {len(common)} questions every configuration has finished"
           f"{'' if len(common) >= a.questions else f' (PARTIAL: {a.questions} planned)'}:", "", head,
           "|---|---:|---|---|---:|---:|---|---:|---:|"]
    influence = []
    for name, all_rows in runs.items():
        rows = [r for r in all_rows if r["id"] in common]
        if not rows:
            out.append(f"| {name} | 0 | not run | | | | | | |")
            continue
        s = stats(rows)
        ends = ", ".join(f"{k} {v}" for k, v in sorted(s["finish"].items()))
        extra = f" ({len(all_rows)} done)" if len(all_rows) != len(rows) else ""
        out.append(f"| {name} | {s['questions']}{extra} | {s['pass1']:.3f} ± {s['pass1_se']:.3f} | "
                   f"{s['cons']:.3f} ± {s['cons_se']:.3f} | {s['tokens_path']:.0f} | {s['answered']:.2f} | {ends} | "
                   f"{s['wall']:.0f} | {s['tok_s']:.1f} |")
        if CONFIGS[name]["method"] == "leap":
            influence.append(f"Influence — {name} ({s['questions']} questions):\n\n{influence_table(rows)}")
    return "\n".join(out) + "\n\n" + "\n\n".join(influence)


def settings(a) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in TASK_OPTIONS.items())
    return (f"task {TASK} ({opts}, seed {a.task_seed}), {a.questions} questions; model {a.model} (hf backend, KV reuse); "
            f"N={a.paths}, k={a.top_k}; T={a.round_tokens}, R={a.rounds}, S={a.summary_tokens}, A={a.answer_tokens} "
            f"-> per-path budget {path_budget(a)} tokens (independent: max_tokens + forced answer); "
            f"temperature {TEMPERATURE}, "
            f"top_p {TOP_P}, seed {SEED}; {a.batch_questions} questions per generator call")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_leap_options(ap, model=MODEL, paths=PATHS, top_k=TOP_K, rounds=ROUNDS, round_tokens=ROUND_TOKENS,
                     summary_tokens=SUMMARY_TOKENS, answer_tokens=ANSWER_TOKENS)
    ap.add_argument("--questions", type=int, default=QUESTIONS)
    ap.add_argument("--task-seed", type=int, default=TASK_SEED)
    ap.add_argument("--batch-questions", type=int, default=BATCH_QUESTIONS)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 is faster on an oversubscribed machine)")
    ap.add_argument("--root", default=ROOT, help="folder of the run directories")
    ap.add_argument("--chunk", type=int, default=24,
                    help="run every configuration on the next CHUNK questions before going on (0: one configuration "
                         "at a time), so a stopped benchmark compares all configurations on the same questions")
    ap.add_argument("--only", action="append", choices=list(CONFIGS), help="run only this configuration (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue existing run directories")
    ap.add_argument("--overwrite", action="store_true", help="replace existing run directories")
    ap.add_argument("--table", action="store_true", help="only print the tables from existing run directories")
    a = ap.parse_args()
    set_threads(a.threads)
    print(header(settings(a)) + "\n", flush=True)
    if not a.table:
        from crosspath.backends.hf import HFGenerator
        from crosspath.tasks import load_task

        problems = load_task(TASK, limit=a.questions, seed=a.task_seed, **TASK_OPTIONS)
        gen = HFGenerator.from_name(a.model)
        names = a.only or list(CONFIGS)
        chunk = a.chunk or a.questions
        chunk = max(a.batch_questions, chunk - chunk % a.batch_questions)  # whole batches: seeds stay the same
        fresh = set()  # configurations already (re)started in this sitting
        for upto in range(chunk, a.questions + chunk, chunk):
            upto = min(upto, a.questions)
            for name in names:
                cfg = make_config(name, a)
                if name in fresh:
                    cfg.resume, cfg.overwrite = True, False
                fresh.add(name)
                t0 = time.time()
                s = run(cfg, generator=gen, problems=problems[:upto], progress=False,
                        log=lambda m: print(m, file=sys.stderr))
                print(f"[{time.strftime('%H:%M:%S')}] {name} q<{upto}: pass@1 {s['pass_at_1']:.3f} "
                      f"cons@{a.paths} {s['cons_at_n']:.3f} tokens/q {s['tokens_per_question']:.0f} "
                      f"solve-wall {s['wall_seconds']:.0f}s (this call {time.time() - t0:.0f}s)", flush=True)
                (Path(cfg.out) / "bench.json").write_text(json.dumps({"settings": settings(a), "machine": machine()}))
    print(tables(a))
    print("\nNotes: timings on a shared 2-core machine are noisy (other jobs ran beside this one); wall s sums the "
          "per-batch solve time (grading excluded) over the questions, possibly across several sittings.")


if __name__ == "__main__":
    main()
