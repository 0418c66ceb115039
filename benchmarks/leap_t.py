"""LeaP-T at small scale: does fine-tuning on LeaP traces teach a small model to learn from peers?

    python benchmarks/leap_t.py [--seed 0 1] [--train-questions 400] [--eval-questions 200] [--steps 150]
                                [--control "NAME=JSON" ...] [--overwrite] [--table]
                                [--stages traces train eval] [--rows ROW ...] [--results benchmarks/results/leap_t.md]

Task: reasoning-gym `chain_sum`, 1-digit numbers, 2-3 terms. Model: SmolLM2-135M-Instruct (`--model`).
Held-out: the first --eval-questions of task seed 1000 (EVAL_TASK_SEED), the same for every seed
of the pipeline. Training: task seed = --seed (refused if 1000); any training question whose text
is held out is dropped (1-digit sums repeat a lot).

Pipeline of one seed, every stage a run directory under ROOT/seed-S that is reused on rerun:

    traces/   `distill leap-traces --splice`: LeaP and N independent paths on the training questions;
              traces = correct LeaP paths that completed the protocol (origin leap) + correct
              independent paths spliced into rounds (origin spliced); yield.json says what was kept
    leap-t/   LeaP-T: LoRA SFT on every trace (peers' blocks masked, see distill/traces.py)
    sft/      baseline: LoRA SFT on the correct single independent paths of the same questions, for
              as many target tokens as leap-t saw (`--single-paths --match leap-t`)
    eval/     the rows below on the held-out questions, in chunks (every row covers a chunk before
              the next chunk starts), N paths, the same per-path budget R*T + (R-1)*S + A

Rows: base/independent, base+SFT/independent, base/LeaP, the controls (HOOK below: filled from
CONTROL_OVERRIDES or --control), LeaP-T/independent, LeaP-T/LeaP (`--leap-t`), LeaP-T/control (a) (the
trained model in the LeaP-T loop, every path given "no comments": do peers matter, or the loop?). The table gives
pass@1, cons@N, generated tokens per question, the per-path budget, how many paths were still
reasoning at the first exchange, the format rate (paths that opened <summarize> themselves), the
influence analysis of every LeaP row, and an exact McNemar test (per question, cons@N) and sign
test (per question, pass@1) of LeaP-T/LeaP against base+SFT/independent. `--table` prints it from
the recorded results without generating.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from crosspath.infer.analysis import influence, influence_table  # noqa: E402
from crosspath.infer.runner import RunConfig, read_results, run  # noqa: E402
from shared import add_leap_options, finished_by_all, header, mcnemar_p, set_threads  # noqa: E402

# ---- defaults (all overridable on the command line) ------------------------------------------
MODEL = "smollm2-135m"
TASK = "rg:chain_sum"
TASK_OPTIONS = dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1)
EVAL_TASK_SEED = 1000  # held-out questions: never a training seed
TRAIN_QUESTIONS, EVAL_QUESTIONS = 400, 200
PATHS, TOP_K = 4, 2
ROUNDS, ROUND_TOKENS, SUMMARY_TOKENS, ANSWER_TOKENS = 3, 32, 24, 16  # T: most paths still reason at token 32
TEMPERATURE, TOP_P = 0.6, 0.95
STEPS, BATCH_SIZE, LR, MAX_LEN = 150, 8, 2e-4, 512
MICRO_BATCH_SIZE = 4  # two micro-batches per step: two training stages fit beside each other in 23 GiB
BATCH_QUESTIONS, CHUNK = 8, 40
ROOT = "runs/bench/leap_t"

# ---- HOOK: the LeaP controls --------------------------------------------------------------------
# row name -> RunConfig overrides on top of the base/LeaP row. None: not wired yet; the row is skipped
# and the table says so. Fill in the option names once the controls exist in RunConfig (or give
# --control "NAME=JSON" on the command line, which wins). Note: {"comm_rounds": []} already gives
# LeaP with no exchange from Python (no summaries, and so a smaller per-path budget).
CONTROL_OVERRIDES: dict[str, dict | None] = {
    "control (a) no peers": dict(leap_control="no-peers"),  # paths summarize, every path gets "no comments"
    "control (b) no summaries": dict(leap_control="no-summaries"),  # LeaP prompt and rounds, no summaries at all
    "LeaP --prompt plain (c)": dict(prompt="plain"),  # plain prompt; the loop still triggers summaries, injects peers
}

# row name -> (model: base | sft | leap-t, RunConfig overrides)
ROWS: dict[str, tuple[str, dict | None]] = {
    "base/independent": ("base", dict(method="independent")),
    "base+SFT/independent": ("sft", dict(method="independent")),
    "base/LeaP": ("base", dict(method="leap")),
    **{f"base/{name}": ("base", None if o is None else dict(method="leap", **o)) for name, o in CONTROL_OVERRIDES.items()},
    "LeaP-T/independent": ("leap-t", dict(method="independent")),
    "LeaP-T/LeaP (--leap-t)": ("leap-t", dict(method="leap", leap_t=True)),
    # the trained model's summaries closed and continued by the loop, but "no comments" for every path: peers or loop?
    "LeaP-T/control (a) no peers": ("leap-t", dict(method="leap", leap_t=True, leap_control="no-peers")),
}
PAIR = ("LeaP-T/LeaP (--leap-t)", "base+SFT/independent")  # the paired test of the issue
# what the base rows separate: the exchange's value (real peers vs none) and the protocol's cost
CONTROL_PAIRS = (("base/LeaP", "base/control (a) no peers"), ("base/LeaP", "base/control (b) no summaries"),
                 ("base/LeaP", "base/independent"), ("base/LeaP --prompt plain (c)", "base/independent"),
                 # and what training changed: the exchange within LeaP-T, LeaP-T's exchange against the base model's
                 ("LeaP-T/LeaP (--leap-t)", "LeaP-T/independent"), ("LeaP-T/LeaP (--leap-t)", "LeaP-T/control (a) no peers"),
                 ("LeaP-T/LeaP (--leap-t)", "base/LeaP"))


def slug(name: str) -> str:
    return re.sub("-+", "-", "".join(c if c.isalnum() else "-" for c in name.lower())).strip("-")


def seed_root(a, seed: int) -> Path:
    return Path(a.root) / f"seed-{seed}"


def traces_config(a, seed: int):
    from crosspath.distill.leap_traces import LeapTracesConfig

    return LeapTracesConfig(model=a.model, task=TASK, task_options=TASK_OPTIONS, task_seed=seed,
                            eval_task_seed=EVAL_TASK_SEED, eval_limit=a.eval_questions, limit=a.train_questions,
                            out=str(seed_root(a, seed) / "traces"), chunk=a.chunk, leap=True, splice=True,
                            correct_only=not a.keep_wrong, paths=a.paths, rounds=a.rounds, round_tokens=a.round_tokens,
                            summary_tokens=a.summary_tokens, answer_tokens=a.answer_tokens, peers_k=a.top_k,
                            temperature=TEMPERATURE, top_p=TOP_P, seed=seed, batch_questions=a.batch_questions)


def stage_train(a, seed: int, name: str, **kw) -> None:
    from crosspath.distill.leap_t import LeapTConfig, train_leap_t

    out = seed_root(a, seed) / name
    if (out / "data.json").exists():
        print(f"[{name}] done already: {out}")
        return
    t0 = time.time()
    train_leap_t(LeapTConfig(traces=[str(seed_root(a, seed) / "traces")], model=a.model, out=str(out), steps=a.steps,
                             batch_size=a.batch_size, micro_batch_size=a.micro_batch_size, max_len=a.max_len, lr=a.lr,
                             seed=seed, save_every=25,
                             correct_only=not a.keep_wrong, resume=(out / "config.yaml").exists(), **kw))
    print(f"[{name}] {time.time() - t0:.0f} s")


def row_config(a, seed: int, name: str) -> RunConfig | None:
    model, over = ROWS[name]
    if over is None:
        return None
    cfg = RunConfig(model=a.model, task=TASK, task_options=TASK_OPTIONS, task_seed=EVAL_TASK_SEED,
                    limit=a.eval_questions, paths=a.paths, temperature=TEMPERATURE, top_p=TOP_P, seed=seed,
                    batch_questions=a.batch_questions, rounds=a.rounds, round_tokens=a.round_tokens,
                    summary_tokens=a.summary_tokens, answer_tokens=a.answer_tokens, peers_k=a.top_k,
                    out=str(seed_root(a, seed) / "eval" / slug(name)), resume=True)
    if model != "base":
        cfg.adapter = str(seed_root(a, seed) / model / "adapter")
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def stage_eval(a, seed: int, base_gen, rows: list[str] | None = None) -> None:
    """Evaluate ``rows`` (default: all) chunk by chunk. A row whose adapter is not trained yet is skipped
    with a message, so base rows can run in another process while traces and training are under way."""
    from crosspath.backends.hf import HFGenerator
    from crosspath.tasks import load_task

    problems = load_task(TASK, limit=a.eval_questions, seed=EVAL_TASK_SEED, **TASK_OPTIONS)
    gens: dict[str | None, object] = {None: base_gen}
    chunk = max(a.batch_questions, a.chunk - a.chunk % a.batch_questions)  # whole batches: seeds stay the same
    for upto in range(chunk, len(problems) + chunk, chunk):
        upto = min(upto, len(problems))
        for name in rows or ROWS:
            cfg = row_config(a, seed, name)
            if cfg is None:
                continue
            if cfg.adapter and not (Path(cfg.adapter).parent / "data.json").exists():
                if upto == chunk:
                    print(f"[eval] seed {seed} {name}: skipped, {cfg.adapter} is not trained yet (stage train)",
                          flush=True)
                continue
            if cfg.adapter not in gens:
                gens[cfg.adapter] = HFGenerator.from_name(a.model, adapter=cfg.adapter)
            t0 = time.time()
            s = run(cfg, generator=gens[cfg.adapter], problems=problems[:upto], progress=False,
                    log=lambda m: print(m, file=sys.stderr))
            print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {name} q<{upto}: pass@1 {s['pass_at_1']:.3f} "
                  f"cons@{a.paths} {s['cons_at_n']:.3f} tokens/q {s['tokens_per_question']:.0f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        snapshot(a)


def snapshot(a) -> None:
    """Rewrite --results (default benchmarks/results/leap_t.md, committed) with the tables of every seed
    under --root, so the figures outlive the run directories. Atomic: processes that share a root
    (--rows) each write the whole file from what is on disk."""
    if not getattr(a, "results", None):
        return
    seeds = sorted(int(d.name.split("-", 1)[1]) for d in Path(a.root).glob("seed-*") if d.name[5:].isdigit())
    tables = "\n\n".join([table(a, seed) for seed in seeds] + ([across_seeds(a, seeds)] if len(seeds) > 1 else []))
    text = f"{header(settings(a))}\nwritten: {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n{tables}\n"
    path = Path(a.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def row_stats(rows: list[dict], a, leap: bool) -> dict:
    """pass@1, cons@N, tokens/question; "reached": LeaP rows: share of paths that received peers' summaries
    at least once; independent rows: share still writing at token T (they would have reached exchange 1)."""
    from crosspath.distill.leap_t import format_rate

    paths = [p for r in rows for p in r["paths"]]
    reached = (sum(any("peers" in rd for rd in p.get("rounds", [])) for p in paths) if leap
               else sum(p["tokens"] > a.round_tokens for p in paths))
    n = max(len(rows), 1)
    return {"questions": len(rows), "pass1": sum(r["pass_at_1"] for r in rows) / n,
            "cons": sum(bool(r["cons_correct"]) for r in rows) / n, "tokens": sum(r["tokens"] for r in rows) / n,
            "reached": reached / max(len(paths), 1), "format": format_rate(rows)["format_rate"]}


def table(a, seed: int) -> str:
    from crosspath.infer.budget import path_budget, run_config

    root = seed_root(a, seed)
    runs, common = seed_runs(a, seed)
    out = [f"### seed {seed}", ""]
    for name, f in (("traces", root / "traces" / "yield.json"), ("leap-t", root / "leap-t" / "data.json"),
                    ("sft", root / "sft" / "data.json")):
        if f.exists():
            d = json.loads(f.read_text())
            if name == "traces":
                from crosspath.distill.leap_traces import yield_lines

                out += ["Traces (training questions, task seed %d):" % seed, "", "```", yield_lines(d), "```", ""]
            else:
                out.append(f"- {name}: {d['samples']} examples {d['origins']} from {d['questions']} questions, "
                           f"{d['steps']} steps x {d['batch_size']}, {d['target_tokens_seen']} target tokens seen")
    out += ["", f"On the {len(common)} held-out questions every row has finished"
            f"{'' if len(common) >= a.eval_questions else f' (PARTIAL: {a.eval_questions} planned)'}:", "",
            "| model | inference | questions | pass@1 | cons@%d | tokens/question | budget/path | got peers (LeaP) / "
            "> T tokens (indep.) | wrote <summarize> |" % a.paths, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    influences = []
    for name, rows in runs.items():
        model, inference = name.split("/", 1)
        if rows is None:
            out.append(f"| {model} | {inference} | not wired: fill CONTROL_OVERRIDES or pass --control | | | | | | |")
            continue
        rows = [r for r in rows if r["id"] in common]
        if not rows:
            out.append(f"| {model} | {inference} | 0 | not run | | | | | |")
            continue
        leap = ROWS[name][1]["method"] == "leap"
        s = row_stats(rows, a, leap)
        budget = path_budget(run_config(row_config(a, seed, name).out))
        injected = leap and not ROWS[name][1].get("leap_t")
        fmt = "(loop writes it)" if injected else f"{s['format']:.3f}"
        out.append(f"| {model} | {inference} | {s['questions']} | {s['pass1']:.3f} | {s['cons']:.3f} | "
                   f"{s['tokens']:.0f} | {budget} | {s['reached']:.2f} | {fmt} |")
        if leap:
            inf = influence(rows)
            w2r, r2w = sum(x["wrong_to_right"] for x in inf), sum(x["right_to_wrong"] for x in inf)
            influences.append(f"Influence — {name}: wrong->right {w2r}, right->wrong {r2w}\n\n{influence_table(rows)}")
    out += ["", "\n\n".join(influences), "", paired(runs, common)]
    out += [x for pair in CONTROL_PAIRS if runs.get(pair[0]) and runs.get(pair[1]) for x in ("", paired(runs, common, pair))]
    return "\n".join(out)


def paired(runs: dict, common: set, pair: tuple[str, str] = PAIR) -> str:
    a_name, b_name = pair
    if not runs.get(a_name) or not runs.get(b_name):
        return f"Paired test {a_name} vs {b_name}: not run yet."
    c = pair_counts(runs, common, pair)
    return (f"Paired, {a_name} (A) vs {b_name} (B), {c['n']} questions:\n"
            f"- cons@N per question: both right {c['both']}, only A {c['only_a']}, only B {c['only_b']}, "
            f"both wrong {c['neither']}; exact McNemar p = {mcnemar_p(c['only_a'], c['only_b']):.4f}\n"
            f"- pass@1 per question: A higher on {c['up']}, B higher on {c['down']}, equal on "
            f"{c['n'] - c['up'] - c['down']}; exact sign test p = {mcnemar_p(c['up'], c['down']):.4f}")


def pair_counts(runs: dict, common: set, pair: tuple[str, str]) -> dict:
    """Per question on ``common``: cons@N concordance (both / only_a / only_b / neither) and pass@1 up / down."""
    a = {r["id"]: r for r in runs[pair[0]] if r["id"] in common}
    b = {r["id"]: r for r in runs[pair[1]] if r["id"] in common}
    cons = [(bool(a[q]["cons_correct"]), bool(b[q]["cons_correct"])) for q in a]
    return {"n": len(a), "both": sum(x and y for x, y in cons), "only_a": sum(x and not y for x, y in cons),
            "only_b": sum(y and not x for x, y in cons), "neither": sum(not x and not y for x, y in cons),
            "up": sum(a[q]["pass_at_1"] > b[q]["pass_at_1"] for q in a),
            "down": sum(a[q]["pass_at_1"] < b[q]["pass_at_1"] for q in a)}


def seed_runs(a, seed: int) -> tuple[dict, set]:
    """Every row's recorded results of one seed (None: row not wired) and the questions all run rows finished."""
    runs = {}
    for name in ROWS:
        cfg = row_config(a, seed, name)
        runs[name] = read_results(Path(cfg.out) / "results.jsonl") if cfg else None
    return runs, finished_by_all(runs)


def across_seeds(a, seeds: list[int]) -> str:
    """Mean ± sd over seeds of every row (each seed on the questions all its rows finished), the format rate,
    influence summed over seeds, and the paired tests pooled over seeds (discordant counts added)."""
    stats: dict[str, list[dict]] = {}
    counts: dict[tuple, dict] = {}
    for seed in seeds:
        runs, common = seed_runs(a, seed)
        for name, rows in runs.items():
            rows = [r for r in rows or [] if r["id"] in common]
            if not rows:
                continue
            leap = ROWS[name][1]["method"] == "leap"
            s = row_stats(rows, a, leap)
            inf = influence(rows) if leap else []
            s.update(w2r=sum(x["wrong_to_right"] for x in inf), r2w=sum(x["right_to_wrong"] for x in inf))
            stats.setdefault(name, []).append(s)
        for pair in (PAIR, *CONTROL_PAIRS):
            if runs.get(pair[0]) and runs.get(pair[1]):
                c = pair_counts(runs, common, pair)
                total = counts.setdefault(pair, dict.fromkeys(c, 0) | {"seeds": 0})
                total.update({k: total[k] + v for k, v in c.items()}, seeds=total["seeds"] + 1)

    def ms(xs: list[float], f: str = ".3f") -> str:  # one seed: no spread to state
        m = sum(xs) / len(xs)
        if len(xs) == 1:
            return f"{m:{f}}"
        return f"{m:{f}} ± {math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)):{f}}"

    out = [f"### across seeds {', '.join(map(str, seeds))} (mean ± sd over seeds)", "",
           "| model | inference | seeds | questions | pass@1 | cons@%d | tokens/question | wrote <summarize> | "
           "wrong->right / right->wrong |" % a.paths, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, ss in stats.items():
        model, inference = name.split("/", 1)
        injected = ROWS[name][1]["method"] == "leap" and not ROWS[name][1].get("leap_t")
        fmt = "(loop writes it)" if injected else ms([s["format"] for s in ss])
        infl = f"{sum(s['w2r'] for s in ss)} / {sum(s['r2w'] for s in ss)}" if ROWS[name][1]["method"] == "leap" else "-"
        out.append(f"| {model} | {inference} | {len(ss)} | {sum(s['questions'] for s in ss)} | "
                   f"{ms([s['pass1'] for s in ss])} | {ms([s['cons'] for s in ss])} | "
                   f"{ms([s['tokens'] for s in ss], '.0f')} | {fmt} | {infl} |")
    out += ["", "Paired per question, pooled over seeds (A vs B; exact tests on the summed discordant counts):", "",
            "| A | B | seeds | questions | pass@1: A higher / B higher | sign test p | cons@N: only A / only B | "
            "McNemar p |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (a_name, b_name), c in counts.items():
        out.append(f"| {a_name} | {b_name} | {c['seeds']} | {c['n']} | {c['up']} / {c['down']} | "
                   f"{mcnemar_p(c['up'], c['down']):.4f} | {c['only_a']} / {c['only_b']} | "
                   f"{mcnemar_p(c['only_a'], c['only_b']):.4f} |")
    return "\n".join(out)


def settings(a) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in TASK_OPTIONS.items())
    budget = a.rounds * a.round_tokens + (a.rounds - 1) * a.summary_tokens + a.answer_tokens
    return (f"task {TASK} ({opts}); held-out: {a.eval_questions} questions of task seed {EVAL_TASK_SEED}; training: "
            f"{a.train_questions} questions of task seed = pipeline seed; model {a.model}; N={a.paths}, k={a.top_k}, "
            f"R={a.rounds}, T={a.round_tokens}, S={a.summary_tokens}, A={a.answer_tokens} -> per-path budget {budget} "
            f"tokens for every row; temperature {TEMPERATURE}, top_p {TOP_P}; training {a.steps} steps x {a.batch_size}, "
            f"lr {a.lr}, max_len {a.max_len}, LoRA r16{'; WRONG PATHS KEPT (smoke test)' if a.keep_wrong else ''}")


STAGES = ("traces", "train", "eval")


def pick_rows(ap, names: list[str] | None) -> list[str] | None:
    """--rows: row names or their slugs (base-independent, base-leap, leap-t-leap-leap-t, ...)."""
    if not names:
        return None
    by_slug = {slug(n): n for n in ROWS}
    out = []
    for n in names:
        if n not in ROWS and slug(n) not in by_slug:
            ap.error(f"--rows: unknown row {n!r}; rows: {', '.join(by_slug)}")
        out.append(n if n in ROWS else by_slug[slug(n)])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="pipeline seeds (training task seed, sampling, LoRA)")
    add_leap_options(ap, model=MODEL, paths=PATHS, top_k=TOP_K, rounds=ROUNDS, round_tokens=ROUND_TOKENS,
                     summary_tokens=SUMMARY_TOKENS, answer_tokens=ANSWER_TOKENS)
    ap.add_argument("--train-questions", type=int, default=TRAIN_QUESTIONS)
    ap.add_argument("--eval-questions", type=int, default=EVAL_QUESTIONS)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--micro-batch-size", type=int, default=MICRO_BATCH_SIZE,
                    help="paths per forward/backward pass of the training stages (the same step; activation "
                         "memory scales with the pass)")
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--max-len", type=int, default=MAX_LEN)
    ap.add_argument("--batch-questions", type=int, default=BATCH_QUESTIONS)
    ap.add_argument("--chunk", type=int, default=CHUNK, help="questions per chunk (traces and evaluation)")
    ap.add_argument("--control", action="append", default=[], metavar="NAME=JSON",
                    help=f"RunConfig overrides of a control row, e.g. 'control (a) no peers={{\"...\": ...}}'; "
                         f"names: {', '.join(CONTROL_OVERRIDES)}")
    ap.add_argument("--keep-wrong", action="store_true", help="keep wrong paths as traces (smoke tests with untrained models)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--root", default=ROOT)
    ap.add_argument("--overwrite", action="store_true", help="delete the seeds' folders first")
    ap.add_argument("--table", action="store_true", help="print the tables from recorded results (no generation) and rewrite --results")
    ap.add_argument("--results", default="benchmarks/results/leap_t.md",
                    help="the tables of every seed under --root, rewritten after each evaluation chunk and by "
                         "--table (commit it); '' for none")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                    help="run only these stages (default: all, in order; train finishes the traces first); e.g. "
                         "one process --stages traces train and another --stages eval --rows base-independent "
                         "base-leap on a second core")
    ap.add_argument("--rows", nargs="+", metavar="ROW",
                    help="evaluate only these rows (names or slugs: " + ", ".join(slug(n) for n in ROWS) + "); "
                         "processes with disjoint --rows can share a seed")
    a = ap.parse_args(argv)
    for c in a.control:
        name, _, js = c.partition("=")
        if name not in CONTROL_OVERRIDES:
            ap.error(f"--control: unknown row {name!r}; rows: {', '.join(CONTROL_OVERRIDES)}")
        ROWS[f"base/{name}"] = ("base", dict(method="leap", **json.loads(js)))
    rows = pick_rows(ap, a.rows)
    if EVAL_TASK_SEED in a.seed:
        ap.error(f"--seed {EVAL_TASK_SEED} is the held-out task seed")
    set_threads(a.threads)
    print(header(settings(a)) + "\n", flush=True)
    base_gen = None
    for seed in a.seed:
        if a.table:
            continue
        if a.overwrite and seed_root(a, seed).exists():
            import shutil

            shutil.rmtree(seed_root(a, seed))
        from crosspath.backends.hf import HFGenerator
        from crosspath.distill.leap_traces import build_traces

        base_gen = base_gen or HFGenerator.from_name(a.model)
        if "traces" in a.stages or "train" in a.stages:  # resumes; nothing to do once every chunk is there
            t0 = time.time()
            build_traces(traces_config(a, seed), generator=base_gen)
            print(f"[traces] seed {seed}: {time.time() - t0:.0f} s", flush=True)
        if "train" in a.stages:
            stage_train(a, seed, "leap-t")
            stage_train(a, seed, "sft", single_paths=True, match=str(seed_root(a, seed) / "leap-t"))
        if "eval" in a.stages:
            stage_eval(a, seed, base_gen, rows)
    print("\n\n".join([table(a, seed) for seed in a.seed] + ([across_seeds(a, a.seed)] if len(a.seed) > 1 else [])))
    snapshot(a)


if __name__ == "__main__":
    main()
