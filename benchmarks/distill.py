"""Distillation benchmark: held-out greedy accuracy of zero-shot, single-path SFT, multi-path SFT
without routing, and QR-Distill.

    python benchmarks/distill.py [--train-questions 24] [--eval-questions 40] [--per-style 1]
                                 [--gen-tokens 64] [--steps 30] [--batch-size 4] [--eval-tokens 64]
                                 [--students smollm2-135m tiny-random] [--judge smollm2-135m | --no-judge]
                                 [--only NAME ...] [--overwrite] [--table]

Task: reasoning-gym `chain_sum`, 2 terms of 1 digit. Training questions: seed 0; held-out: seed 1.
Teacher paths: SmolLM2-135M-Instruct itself, temperature 0.8, in the six QR-Distill styles; only its
correct paths survive the answer filter (then the judge, SmolLM2 again unless --no-judge). It is a
weak teacher: this measures the pipeline on what a laptop CPU can run, not the paper's setting.

Conditions (each a training run directory under --root, skipped when its eval.json exists):

    zero-shot     the base model (evaluated before training in `multi`)
    single        one student (first of --students), one kept path per question (the first in style order)
    multi         one student, every kept path, no routing (multi-path SFT)
    qr            all --students, learned router (straight-through Gumbel), mutual weight 0.1
    qr-random     (with --only) the same with random routing
    qr-nomutual   (with --only) learned routing, --mutual-weight 0

Every training condition runs the same number of steps with the same batch size and learning rate.

LeaP-T (`--only leap-t`): the correct paths of an existing LeaP run directory (`--leap-runs`, copied
into --root first, e.g. the `dispersed` run of benchmarks/leap_accuracy.py on chain_sum with 2-3
terms) train a LoRA adapter; then LeaP (plain model) and LeaP-T (`--leap-t --adapter`) run on the
same held-out questions (seed 1, same options as the source run) with the same budget. Reported:
pass@1, cons@N, and the share of LeaP-T paths that opened `<summarize>` on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASK = "rg:chain_sum"
TASK_OPTIONS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
STYLE_ORDER = ("step", "reason", "program", "facts", "backward", "tree")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs/bench/distill")
    p.add_argument("--teacher", default="smollm2-135m")
    p.add_argument("--train-questions", type=int, default=24)
    p.add_argument("--eval-questions", type=int, default=40)
    p.add_argument("--per-style", type=int, default=1)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--judge", default="smollm2-135m")
    p.add_argument("--no-judge", action="store_true")
    p.add_argument("--students", nargs="+", default=["smollm2-135m", "tiny-random"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--eval-tokens", type=int, default=64)
    p.add_argument("--only", nargs="+", default=["single", "multi", "qr"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--leap-runs", nargs="+", default=["runs/bench/leap_accuracy/dispersed"])
    p.add_argument("--leap-questions", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--table", action="store_true", help="print the table from existing results only")
    return p.parse_args(argv)


def stage_data(a, root: Path) -> Path:
    from crosspath.distill.filter import FilterConfig, filter_paths
    from crosspath.distill.generate import GenerateConfig, generate

    t0 = time.time()
    generate(GenerateConfig(teacher=a.teacher, task=TASK, task_options=TASK_OPTIONS, limit=a.train_questions,
                            task_seed=0, per_style=a.per_style, max_tokens=a.gen_tokens, batch_questions=4,
                            out=str(root / "paths.jsonl")))
    print(f"[generate] {time.time() - t0:.0f} s")
    t0 = time.time()
    filtered = root / ("filtered-nojudge.jsonl" if a.no_judge else "filtered.jsonl")
    if not filtered.exists() or a.overwrite:
        filter_paths(FilterConfig(input=str(root / "paths.jsonl"), out=str(filtered), judge=None if a.no_judge else a.judge,
                                  no_judge=a.no_judge, judge_tokens=16))
    print(f"[filter] {time.time() - t0:.0f} s")
    return filtered


def single_path(filtered: Path, out: Path) -> Path:
    from crosspath.distill.data import read_rows, write_rows

    best: dict[str, dict] = {}
    for r in read_rows(filtered):
        rank = STYLE_ORDER.index(r["style"]) if r["style"] in STYLE_ORDER else len(STYLE_ORDER)
        if r["id"] not in best or rank < best[r["id"]]["_rank"]:
            best[r["id"]] = {**r, "_rank": rank}
    write_rows(out, [{k: v for k, v in r.items() if k != "_rank"} for r in best.values()])
    return out


def condition(a, root: Path, name: str, data: Path):
    from crosspath.distill.qr import QRConfig, train

    out = root / name
    if (out / "eval" / "eval.json").exists() and not a.overwrite:
        print(f"[{name}] done already: {out}")
        return
    one = [a.students[0]]
    kw = dict(data=str(data), out=str(out), steps=a.steps, batch_size=a.batch_size, lr=a.lr, max_len=384,
              save_every=a.steps, keep=1, overwrite=True, eval_task=TASK, eval_task_options=TASK_OPTIONS,
              eval_task_seed=1, eval_limit=a.eval_questions, eval_max_tokens=a.eval_tokens)
    cfgs = {
        "single": QRConfig(students=one, routing="all", mutual_weight=0.0, **kw),
        "multi": QRConfig(students=one, routing="all", mutual_weight=0.0, eval_before=True, **kw),
        "qr": QRConfig(students=a.students, routing="learned", mutual_weight=0.1, **kw),
        "qr-random": QRConfig(students=a.students, routing="random", mutual_weight=0.1, **kw),
        "qr-nomutual": QRConfig(students=a.students, routing="learned", mutual_weight=0.0, **kw),
    }
    t0 = time.time()
    train(cfgs[name])
    (out / "wall.json").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
    print(f"[{name}] {time.time() - t0:.0f} s")


LEAP_OPTIONS = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}  # leap_accuracy.py's task
LEAP_RUN = dict(paths=4, rounds=2, round_tokens=48, summary_tokens=16, answer_tokens=16, peers_k=2,
                temperature=0.6, top_p=0.95, batch_questions=4)


def stage_leap_t(a, root: Path) -> None:
    import shutil

    from crosspath.distill.leap_t import LeapTConfig, train_leap_t
    from crosspath.infer.runner import RunConfig, run
    from crosspath.tasks import load_task

    src = root / "leap-source"
    if not src.exists():
        for i, d in enumerate(a.leap_runs):
            (src / f"run-{i}").mkdir(parents=True)
            shutil.copy(Path(d) / "results.jsonl", src / f"run-{i}" / "results.jsonl")
    runs = sorted(str(d) for d in src.iterdir())
    out = root / "leap-t"
    t0 = time.time()
    if not (out / "adapter" / "adapter_config.json").exists() or a.overwrite:
        train_leap_t(LeapTConfig(runs=runs, model=a.students[0], out=str(out), steps=a.steps, batch_size=2,
                                 max_len=512, lr=a.lr, save_every=a.steps, overwrite=True))
    print(f"[leap-t train] {time.time() - t0:.0f} s")
    problems = load_task(TASK, limit=a.leap_questions, seed=1, **LEAP_OPTIONS)
    for name, extra in (("leap-heldout", {}), ("leap-t-heldout", {"leap_t": True, "adapter": str(out / "adapter")})):
        if (root / name / "summary.json").exists() and not a.overwrite:
            continue
        t0 = time.time()
        run(RunConfig(method="leap", model=a.students[0], task=TASK, out=str(root / name), overwrite=True,
                      **LEAP_RUN, **extra), problems=problems, progress=False)
        print(f"[{name}] {time.time() - t0:.0f} s")


def leap_t_table(root: Path) -> str | None:
    from crosspath.distill.data import read_rows

    if not (root / "leap-t-heldout" / "summary.json").exists():
        return None
    lines = ["| method | questions | pass@1 | cons@4 | tokens/question | paths that wrote <summarize> |",
             "|---|---|---|---|---|---|"]
    for name, label in (("leap-heldout", "LeaP (base model)"), ("leap-t-heldout", "LeaP-T (adapter, --leap-t)")):
        s = json.loads((root / name / "summary.json").read_text())
        rows = read_rows(root / name / "results.jsonl")
        paths = [p for r in rows for p in r["paths"]]
        wrote = sum("<summarize>" in p["text"] for p in paths)
        lines.append(f"| {label} | {s['questions']} | {s['pass_at_1']:.3f} | {s['cons_at_n']:.3f} | "
                     f"{s['tokens_per_question']:.0f} | {wrote}/{len(paths)} |")
    data = json.loads((root / "leap-t" / "metrics.jsonl").read_text().splitlines()[-1])
    return "LeaP-T vs LeaP (held-out, seed 1):\n\n" + "\n".join(lines) + f"\n\n(last training line: {data})"


def table(a, root: Path) -> str:
    from crosspath.distill.data import read_rows

    lines = ["| condition | students | training paths | steps | student 0 acc | other students | ensemble | "
             "wall s |", "|---|---|---|---|---|---|---|---|"]
    multi = root / "multi"
    if (multi / "eval-before" / "eval.json").exists():
        ev = json.loads((multi / "eval-before" / "eval.json").read_text())
        lines.append(f"| zero-shot | {a.students[0]} | 0 | 0 | {ev['students'][0]['accuracy']:.3f} | | | |")
    for name in ("single", "multi", "qr", "qr-random", "qr-nomutual"):
        f = root / name / "eval" / "eval.json"
        if not f.exists():
            continue
        ev = json.loads(f.read_text())
        import yaml

        cfg = yaml.safe_load((root / name / "config.yaml").read_text())
        n = len(read_rows(cfg["data"]))
        others = ", ".join(f"{s['name']}: {s['accuracy']:.3f}" for s in ev["students"][1:])
        wall = json.loads((root / name / "wall.json").read_text())["seconds"] if (root / name / "wall.json").exists() else ""
        ens = f"{ev['ensemble']:.3f}" if "ensemble" in ev else ""
        lines.append(f"| {name} | {' + '.join(cfg['students'])} | {n} | {cfg['steps']} | "
                     f"{ev['students'][0]['accuracy']:.3f} | {others} | {ens} | {wall} |")
    out = ["\n".join(lines)]
    stats = root / ("filtered-nojudge.jsonl" if a.no_judge else "filtered.jsonl")
    if Path(str(stats) + ".stats.json").exists():
        from crosspath.distill.filter import format_stats

        out.append("Teacher paths and filters:\n\n" + format_stats(json.loads(Path(str(stats) + ".stats.json").read_text())))
    if (root / "qr" / "routing.json").exists():
        r = json.loads((root / "qr" / "routing.json").read_text())
        out.append("QR-Distill router after training (mean probability per style):\n\n| style | "
                   + " | ".join(a.students) + " |\n|---|" + "---|" * len(a.students) + "\n"
                   + "\n".join(f"| {st} | " + " | ".join(f"{p:.3f}" for p in ps) + " |" for st, ps in r.items()))
    lt = leap_t_table(root)
    if lt:
        out.append(lt)
    return "\n\n".join(out)


def main(argv=None) -> int:
    a = parse_args(argv)
    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    if not a.table:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(a.threads)
        print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
              f"torch threads {torch.get_num_threads()}; command: {' '.join(sys.argv)}")
        qr_names = [n for n in a.only if n != "leap-t"]
        filtered = stage_data(a, root) if qr_names else None
        for name in qr_names:
            data = single_path(filtered, root / "single.jsonl") if name == "single" else filtered
            condition(a, root, name, data)
        if "leap-t" in a.only:
            stage_leap_t(a, root)
    print(table(a, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
