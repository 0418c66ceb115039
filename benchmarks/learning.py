"""Does training lift held-out accuracy? GRPO vs M3PO (and the RL variants), one algorithm, variant
and seed per invocation.

    python benchmarks/learning.py --algo grpo|m3po --seed S [--variant NAME] [--steps 60]
                                  [--model smollm2-135m] [--eval-every 20] [--threads N]
                                  [--root runs/bench/learning]
    python benchmarks/learning.py --sweep --seed S [--steps 30]   # thinking phase: GRPO + M3PO lambda x T
    python benchmarks/learning.py --table          # aggregate everything recorded so far
    python benchmarks/learning.py --variants       # list the variants and the options they set

Task: rg:chain_sum with 2-3 terms of 1 digit; held-out set: 200 questions generated with seed 1234
(the same for every run; removed from the training set), scored by greedy decoding (one path, no
blend) with the training prompt. Training: crosspath's Trainer with its defaults for this setting
(2 questions x 8 completions x 64 tokens per step, T 0.8, LoRA r16/alpha 32 all-linear, AdamW
lr 5e-5, cosine with 10% warmup, clip 0.1, beta 0; M3PO lambda 0.1, T 0.1, similarity weights).
Evaluation at step 0, every `--eval-every` steps and at the end gives the accuracy curve.

--variant adds the options of one RL variant (VARIANTS below: SPO, SEED-GRPO, GRPO-lambda, Guide and
SEELE hints, 1-shot RLVR, GSPO, CISPO) to the same task, steps and held-out set; `--table` then
lists them next to GRPO of the same seed (accuracy, steps without gradient, step time, exact McNemar
test on the held-out questions).

--sweep runs the variant `think` (the thinking-phase prompt and reward, --answer-format think, with
its format warm-up, 128 tokens): GRPO (lambda 0), then M3PO for lambda in {0.05, 0.1, 0.3} x T in
{0.1, 0.5}, one after the other, each recorded as it ends (--algo m3po --variant think
--m3po-lambda L --m3po-temperature T runs one of them alone); `--table` lists them in their own
section: accuracy of the base model / after the warm-up / after RL, the think-rule accuracy, the
sampled completions' format rate and thinking share (first and last 5 steps), step time.

Each invocation appends one row (algo, variant, seed, steps, accuracy before/after, the curve, the
ids of the questions right before and after, wall time, machine, command) to
benchmarks/results/learning.jsonl, so the comparison builds up over several sittings; `--table`
also compares GRPO and M3PO of the same seed question by question (exact McNemar test); a killed invocation resumes from its last checkpoint when started again with the same
arguments (its run directory is <root>/<algo>[-<variant>][-l<lambda>-t<T>]-s<seed>-k<steps>).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from crosspath.envinfo import machine
from shared import mcnemar_p

RESULTS = Path(__file__).parent / "results" / "learning.jsonl"

# name -> (TrainConfig options on top of the recorded GRPO rows' settings, why these values)
VARIANTS: dict[str, tuple[dict, str]] = {
    "none": ({}, "the recorded GRPO / M3PO rows"),
    "spo": ({"baseline": "spo", "group_size": 1, "questions_per_step": 8, "train_size": 60},
            "SPO: one completion per question, 8 questions per step, a 60-question pool (45 after the held-out "
            "ones go) so every question comes back ~10 times and its tracker matters; 480 completions + 45 x 8 "
            "first-visit samples, vs GRPO's 960"),
    "seed-grpo": ({"seed_grpo": True}, "SEED-GRPO: semantic-entropy scale, its code's f and alpha"),
    "grpo-lambda": ({"length_penalty": "grpo-lambda"}, "GRPO-lambda: length penalty in the top half of groups"),
    "guide": ({"hints": "guide"}, "Guide: all-wrong groups re-sampled with half of the evaluation steps"),
    "seele": ({"hints": "seele", "hint_rounds": 2}, "SEELE: hint length fitted per question, 2 hinted rounds"),
    "one-shot": ({"train_size": 1, "entropy_coef": 0.001},
                 "1-shot RLVR: the first training question, repeated, entropy bonus 0.001"),
    "gspo": ({"importance_level": "sequence", "num_iterations": 2, "epsilon": 3e-4, "epsilon_high": 4e-4},
             "GSPO: sequence ratio; it differs from GRPO only off-policy, hence 2 updates per batch (TRL's clip)"),
    "grpo-2iter": ({"num_iterations": 2, "epsilon": 0.2},
                   "GSPO's control: token ratio, 2 updates per batch, PPO clip 0.2"),
    "cispo": ({"loss_type": "cispo", "epsilon_high": 5.0, "scale_rewards": "batch"}, "CISPO: TRL's recipe"),
    "think": ({"answer_format": "think", "max_new_tokens": 128},
              "thinking phase: reasoning, then #### and the answer, rewarded only after one marker with reasoning "
              "before it; the format warm-up (20 SFT steps on the model's own correct traces) first; 128 tokens"),
}
# --sweep: M3PO's lambda x T with the thinking phase (variant think), next to GRPO (lambda 0) of the same seed
SWEEP_LAMBDAS, SWEEP_TEMPERATURES = (0.05, 0.1, 0.3), (0.1, 0.5)


def label(r: dict) -> str:
    """grpo, m3po, or grpo+spo etc. for a variant row (rows recorded before variants existed: none);
    with M3PO's lambda and T when they were set (--m3po-lambda, --m3po-temperature, --sweep)."""
    variant = r.get("variant", "none")
    name = r["algo"] if variant == "none" else f"{r['algo']}+{variant}"
    return name + (f" λ{r['m3po_lambda']:g} T{r['m3po_temperature']:g}" if r.get("m3po_lambda") is not None else "")


def record_key(r: dict) -> tuple:
    """What makes a recorded run the same run (rows recorded before variants / lambda-T: their defaults)."""
    return (r["model"], r["algo"], r.get("variant", "none"), r["seed"], r["steps"], r["eval_size"],
            r.get("m3po_lambda"), r.get("m3po_temperature"))


def step_seconds(r: dict) -> float:
    return r.get("step_seconds", r["train_seconds"] / max(r["steps"], 1))


def table(path: Path = RESULTS) -> str:
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    if not rows:
        return f"no results in {path} yet"
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], label(r), r["steps"], r["eval_size"]), []).append(r)

    def fmt(xs):
        spread = f" ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else ""
        return f"{100 * statistics.mean(xs):.1f}{spread}"

    out = ["| model | algo | steps | held-out | seeds | accuracy before % | accuracy after % | gain (points) | "
           "h per run |", "|---|---|---|---|---|---|---|---|---|"]
    for (model, algo, steps, n), rs in sorted(groups.items()):
        before, after = [r["before"] for r in rs], [r["after"] for r in rs]
        gain = [a - b for a, b in zip(after, before)]
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
        hours = statistics.mean(r["wall_seconds"] for r in rs) / 3600
        out.append(f"| {model} | {algo} | {steps} | {n} | {seeds} | {fmt(before)} | {fmt(after)} | {fmt(gain)} | "
                   f"{hours:.2f} |")
    out.append("\nAccuracies: mean ± standard deviation over the seeds; hours: mean wall time of a run.")
    paired = _paired(rows)
    if paired:
        out.append("\nItem by item, same held-out questions, final adapters of the same seed:\n")
        out += ["| model | steps | seed | both right | only grpo | only m3po | both wrong | exact McNemar p |",
                "|---|---|---|---|---|---|---|---|"] + paired
    variants = _variants(rows)
    if variants:
        out.append("\nVariants next to GRPO of the same seed (steps without gradient: every advantage 0; s per step: "
                   "mean step time; McNemar: exact test of the final adapters on the same held-out questions):\n")
        out += ["| model | steps | seed | variant | accuracy before / after % | GRPO after % | "
                "only grpo / only variant | McNemar p | steps without gradient % (grpo) | s per step (grpo) |",
                "|---|---|---|---|---|---|---|---|---|---|"] + variants
    behaviour = _behaviour(rows)
    if behaviour:
        out.append("\nBehaviour (steps without gradient: every advantage 0, or for runs logged before "
                   "adv_nonzero_frac every group's rewards equal; greedy held-out answers):\n")
        out += ["| algo | seed | steps without gradient % | marker format rate % before / after | "
                "answer chars before / after |", "|---|---|---|---|---|"] + behaviour
    think = _think(rows)
    if think:
        out.append("\nThinking phase (variant think; GRPO = lambda 0; held-out greedy accuracy of the base model, "
                   "after the format warm-up, after RL; think-rule: answer after a single marker with reasoning "
                   "before it; format rate, thinking share of the completions with the marker and completion "
                   "tokens: sampled completions, mean of the first / last 5 steps; the last column: held-out questions "
                   "only GRPO (think) / only this M3PO gets right after RL, same seed, exact McNemar):\n")
        out += ["| algo | λ | T | seed | steps | accuracy base / warm-up / after % | think-rule after % | "
                "warm-up traces | format rate % first / last | thinking share % first / last | tokens first / last | "
                "s per step | only GRPO / only M3PO (McNemar) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + think
    pooled = _think_pooled(rows)
    if pooled:
        out.append("\nM3PO (think) against GRPO (think) over several seeds (held-out greedy accuracy after RL, mean "
                   "over the seeds; M3PO - GRPO: mean ± standard deviation of the per-seed differences; discordant "
                   "questions summed over the seeds, exact McNemar on the sums, which treats the seeds as independent):\n")
        out += ["| model | steps | setting | seeds | GRPO after % | M3PO after % | M3PO - GRPO (points) | "
                "only GRPO / only M3PO | McNemar p |", "|---|---|---|---|---|---|---|---|---|"] + pooled
    out.append("\nCurves (eval accuracy % by step):")
    for r in rows:
        curve = " ".join(f"{s}:{100 * a:.1f}" for s, a in r["curve"])
        out.append(f"- {label(r)} seed {r['seed']} ({r['model']}, {r['steps']} steps): {curve}")
    return "\n".join(out)


def _correct_ids(run: Path, step: int) -> list[str]:
    """Ids of the held-out questions answered correctly at `step` (the trainer's eval samples)."""
    path = run / "samples" / f"eval-step-{step}.jsonl"
    return sorted(r["id"] for r in map(json.loads, path.read_text().splitlines()) if r["correct"])


def _paired(rows: list[dict]) -> list[str]:
    """GRPO vs M3PO on the same questions, per seed (and pooled over seeds): agreement counts and an
    exact McNemar test. The pooled test treats the seeds' disagreements as independent, which they are
    not quite (every seed uses the same held-out questions)."""
    by = {(r["model"], r["steps"], r["eval_size"], r["seed"], label(r)): r for r in rows if "after_correct" in r}
    out, pooled = [], {}
    for (model, steps, n, seed, algo), g in sorted(by.items()):
        m = by.get((model, steps, n, seed, "m3po"))
        if algo != "grpo" or m is None:
            continue
        a, b = set(g["after_correct"]), set(m["after_correct"])
        counts = [len(a & b), len(a - b), len(b - a), n - len(a | b)]
        tot = pooled.setdefault((model, steps), [0, 0, 0, 0])
        pooled[(model, steps)] = [x + y for x, y in zip(tot, counts)]
        out.append(f"| {model} | {steps} | {seed} | " + " | ".join(map(str, counts)) +
                   f" | {mcnemar_p(counts[1], counts[2]):.3f} |")
    for (model, steps), c in pooled.items():
        out.append(f"| {model} | {steps} | all | " + " | ".join(map(str, c)) + f" | {mcnemar_p(c[1], c[2]):.3f} |")
    return out


def _variants(rows: list[dict]) -> list[str]:
    """One line per variant row: its accuracy, GRPO's (same model, steps, held-out set, seed), the
    discordant questions and their exact McNemar test, steps without gradient and step time of both."""
    by = {(r["model"], r["steps"], r["eval_size"], r["seed"], label(r)): r for r in rows}
    out = []
    for (model, steps, n, seed, name), r in sorted(by.items()):
        base = by.get((model, steps, n, seed, r["algo"]))
        if r.get("variant", "none") == "none" or base is None:
            continue
        a, b = set(base.get("after_correct", [])), set(r.get("after_correct", []))
        ng = lambda x: f"{100 * x['stats']['no_gradient_steps']:.0f}" if "stats" in x else "-"  # noqa: E731
        out.append(f"| {model} | {steps} | {seed} | {name} | {100 * r['before']:.1f} / {100 * r['after']:.1f} | "
                   f"{100 * base['after']:.1f} | {len(a - b)} / {len(b - a)} | "
                   f"{mcnemar_p(len(a - b), len(b - a)):.3f} | "
                   f"{ng(r)} ({ng(base)}) | {step_seconds(r):.1f} ({step_seconds(base):.1f}) |")
    return out


def _run_stats(run: Path, metrics: list[dict]) -> dict:
    """What the runs did besides accuracy: share of steps without gradient (every advantage 0; runs
    logged before `adv_nonzero_frac` existed: every group's rewards equal), marker format rate and
    mean completion length (characters) of the greedy held-out answers before and after training."""
    steps = [r for r in metrics if "reward_std" in r]
    evals = [r for r in metrics if "eval_accuracy" in r]

    def chars(step):
        texts = [r["text"] for r in map(json.loads, (run / "samples" / f"eval-step-{step}.jsonl").read_text().splitlines())]
        return round(statistics.mean(len(t) for t in texts), 1)

    no_gradient = [r["adv_nonzero_frac"] == 0 if "adv_nonzero_frac" in r else r["reward_std"] == 0 for r in steps]
    return {"no_gradient_steps": round(statistics.mean(no_gradient), 3),
            "format_before": evals[0]["eval_format_rate"], "format_after": evals[-1]["eval_format_rate"],
            "chars_before": chars(evals[0]["step"]), "chars_after": chars(evals[-1]["step"])}


def _think_stats(rows: list[dict]) -> dict:
    """The thinking-phase figures of one run from its metrics lines: the warm-up line (held-out accuracy
    and format rate after it, traces), the sampled completions' format rate, thinking share (of the
    completions with the marker) and length over the first and last 5 steps, the final think-rule accuracy."""
    warm = next((r for r in rows if r.get("warmup")), {})
    steps = [r for r in rows if "reward_mean" in r]
    evals = [r for r in rows if "eval_accuracy" in r and not r.get("warmup")]

    def mean(part, key):
        xs = [r[key] for r in part if r.get(key) is not None]
        return round(statistics.mean(xs), 4) if xs else None

    first, last = steps[:5], steps[-5:]
    return {"warmup_accuracy": warm.get("eval_accuracy"), "warmup_format_rate": warm.get("eval_format_rate"),
            "warmup_traces": warm.get("warmup_traces"), "think_accuracy_after": evals[-1].get("eval_think_accuracy"),
            **{f"{k}_{name}": mean(part, k) for name, part in (("first", first), ("last", last))
               for k in ("format_rate", "thinking_share_marked", "completion_length", "reward_mean")}}


def _think_grpo(rows: list[dict]) -> dict[tuple, dict]:
    """GRPO (think) runs by (model, steps, held-out size, seed): the M3PO (think) runs' control."""
    return {(r["model"], r["steps"], r["eval_size"], r["seed"]): r for r in rows
            if r.get("variant") == "think" and r["algo"] == "grpo"}


def _think(rows: list[dict]) -> list[str]:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    num = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
    out = []
    grpo = _think_grpo(rows)

    def versus(r):  # M3PO against GRPO (think) of the same seed, question by question
        g = grpo.get((r["model"], r["steps"], r["eval_size"], r["seed"]))
        if r["algo"] == "grpo" or g is None:
            return "-"
        a, b = set(g["after_correct"]), set(r["after_correct"])
        return f"{len(a - b)} / {len(b - a)} (p {mcnemar_p(len(a - b), len(b - a)):.2f})"

    for r in sorted((r for r in rows if r.get("variant") == "think"),
                    key=lambda r: (r["model"], r["steps"], r["seed"], r["algo"], r.get("m3po_lambda") or 0,
                                   r.get("m3po_temperature") or 0)):
        t, lam, temp = r["think"], r.get("m3po_lambda"), r.get("m3po_temperature")
        out.append(f"| {r['algo']} | {'0' if r['algo'] == 'grpo' else f'{lam:g}'} | "
                   f"{'-' if r['algo'] == 'grpo' else f'{temp:g}'} | {r['seed']} | {r['steps']} | "
                   f"{pct(r['before'])} / {pct(t['warmup_accuracy'])} / {pct(r['after'])} | "
                   f"{pct(t['think_accuracy_after'])} | {num(t['warmup_traces'])} | "
                   f"{pct(t['format_rate_first'])} / {pct(t['format_rate_last'])} | "
                   f"{pct(t['thinking_share_marked_first'])} / {pct(t['thinking_share_marked_last'])} | "
                   f"{num(t['completion_length_first'])} / {num(t['completion_length_last'])} | "
                   f"{step_seconds(r):.1f} | {versus(r)} |")
    return out


def _think_pooled(rows: list[dict]) -> list[str]:
    """Per M3PO (think) setting run with several seeds: the discordant held-out questions against GRPO
    (think) of the same seed, summed over the seeds, and the exact McNemar test of the sums."""
    grpo = _think_grpo(rows)
    pooled: dict[tuple, list] = {}
    for r in rows:
        g = grpo.get((r["model"], r["steps"], r["eval_size"], r["seed"]))
        if r.get("variant") != "think" or r["algo"] == "grpo" or g is None:
            continue
        a, b = set(g["after_correct"]), set(r["after_correct"])
        key = (r["model"], r["steps"], r["eval_size"], r.get("m3po_lambda"), r.get("m3po_temperature"))
        pooled.setdefault(key, []).append((r["seed"], len(a - b), len(b - a), g["after"], r["after"]))
    out = []
    for (model, steps, n, lam, temp), xs in sorted(pooled.items(), key=lambda kv: str(kv[0])):
        if len(xs) < 2:
            continue
        only_g, only_m = sum(x[1] for x in xs), sum(x[2] for x in xs)
        gains = [x[4] - x[3] for x in xs]
        out.append(f"| {model} | {steps} | λ{lam:g} T{temp:g} | {','.join(str(x[0]) for x in sorted(xs))} | "
                   f"{100 * statistics.mean(x[3] for x in xs):.1f} | {100 * statistics.mean(x[4] for x in xs):.1f} | "
                   f"{100 * statistics.mean(gains):+.1f} ± {100 * statistics.stdev(gains):.1f} | "
                   f"{only_g} / {only_m} | {mcnemar_p(only_g, only_m):.2f} |")
    return out


def _behaviour(rows: list[dict]) -> list[str]:
    return [f"| {label(r)} | {r['seed']} | {100 * r['stats']['no_gradient_steps']:.0f} | "
            f"{100 * r['stats']['format_before']:.1f} / {100 * r['stats']['format_after']:.1f} | "
            f"{r['stats']['chars_before']:.0f} / {r['stats']['chars_after']:.0f} |"
            for r in sorted(rows, key=lambda r: (label(r), r["seed"])) if "stats" in r]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algo", choices=("grpo", "m3po"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", default="none", choices=sorted(VARIANTS),
                    help="RL variant options on top of --algo (--variants lists them)")
    ap.add_argument("--variants", action="store_true", help="list the variants and exit")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--eval-size", type=int, default=200, help="held-out questions (200 for the recorded figures)")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--save-every", type=int, default=None,
                    help="checkpoint every N steps, so a killed run resumes from there (default: --eval-every)")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="completion length (default: 64; variant think: 128)")
    ap.add_argument("--m3po-lambda", type=float, default=None, help="M3PO's lambda (default: the trainer's 0.1; "
                                                                       "recorded, and in the run directory's name)")
    ap.add_argument("--m3po-temperature", type=float, default=None, help="M3PO's T (default: the trainer's 0.1)")
    ap.add_argument("--sweep", action="store_true",
                    help="variant think: GRPO, then M3PO for every lambda in %s x T in %s, one after the other "
                         "(recorded ones are skipped, a killed one resumes)" % (SWEEP_LAMBDAS, SWEEP_TEMPERATURES))
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--root", default="runs/bench/learning", help="parent of the run directories")
    ap.add_argument("--table", action="store_true", help="print the aggregate table of the results JSONL and exit")
    ap.add_argument("--results", default=str(RESULTS), help="results JSONL to append to (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true", help="do not append to the results JSONL")
    ap.add_argument("--force", action="store_true", help="run even if this model/algo/seed/steps is recorded")
    args = ap.parse_args(argv)
    if args.table:
        print(table(Path(args.results)))
        return 0
    if args.variants:
        for name, (options, why) in VARIANTS.items():
            print(f"{name}: {options or '-'}\n    {why}")
        return 0
    if args.sweep:
        args.variant = "think"
        jobs = [("grpo", None, None)] + [("m3po", lam, t) for lam in SWEEP_LAMBDAS for t in SWEEP_TEMPERATURES]
    elif args.algo:
        jobs = [(args.algo, args.m3po_lambda, args.m3po_temperature)]
    else:
        ap.error("--algo is required (or --sweep, --table)")
    if any(lam is not None or t is not None for a, lam, t in jobs if a != "m3po"):
        ap.error("--m3po-lambda / --m3po-temperature need --algo m3po")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    for algo, lam, temp in jobs:  # one after the other; each is recorded as soon as it ends
        run_one(args, algo, lam, temp)
    return 0


def run_one(args, algo: str, lam: float | None, temp: float | None) -> None:
    """Train (or resume) one run, then append its row to the results; skipped when already recorded."""
    from crosspath.train.checkpoint import latest_checkpoint
    from crosspath.train.trainer import TrainConfig, Trainer

    if algo == "m3po" and (lam is not None or temp is not None):  # record both once either is set
        d = TrainConfig()
        lam, temp = d.m3po_lambda if lam is None else lam, d.m3po_temperature if temp is None else temp
    key = (args.model, algo, args.variant, args.seed, args.steps, args.eval_size, lam, temp)
    done = [json.loads(ln) for ln in Path(args.results).read_text().splitlines() if ln.strip()] \
        if Path(args.results).exists() else []
    if not args.force and any(record_key(r) == key for r in done):
        print(f"{key} is already recorded in {args.results} (--force runs it again)\n\n" + table(Path(args.results)))
        return
    tag = algo if args.variant == "none" else f"{algo}-{args.variant}"
    tag += "" if lam is None else f"-l{lam:g}-t{temp:g}"
    out = Path(args.root) / f"{tag}-s{args.seed}-k{args.steps}"
    options = {"max_new_tokens": 64, **VARIANTS[args.variant][0],
               **({} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}),
               **({} if lam is None else {"m3po_lambda": lam, "m3po_temperature": temp}),
               "format_warmup_cache": str(Path(args.root) / "warmup-cache")}  # GRPO and every M3PO share theirs
    cfg = TrainConfig(algo=algo, model=args.model, seed=args.seed, steps=args.steps, eval_size=args.eval_size,
                      eval_seed=1234, eval_every=args.eval_every, save_every=args.save_every or max(args.eval_every, 1),
                      out=str(out),
                      resume=latest_checkpoint(out) is not None, overwrite=True, threads=args.threads,
                      progress=not args.quiet, **options)
    t0 = time.time()
    trainer = Trainer(cfg)
    trainer.fit()
    if not trainer.dist.main:
        return
    rows = trainer.run.read_metrics()
    curve = [(r["step"], r["eval_accuracy"]) for r in rows if "eval_accuracy" in r]  # a warm-up adds a 2nd step 0
    train_secs = sum(r.get("step_seconds", 0.0) for r in rows)
    result = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "command": shlex.join(sys.argv),
              "model": args.model, "algo": algo, "variant": args.variant, "seed": args.seed, "steps": args.steps,
              **({} if lam is None else {"m3po_lambda": lam, "m3po_temperature": temp}),
              "max_new_tokens": cfg.max_new_tokens, "eval_size": args.eval_size, "before": curve[0][1],
              "after": curve[-1][1], "curve": curve,
              "train_seconds": round(train_secs, 1), "wall_seconds": round(time.time() - t0, 1),
              "step_seconds": round(statistics.mean(r["step_seconds"] for r in rows if "step_seconds" in r), 2),
              "mean_reward": statistics.mean(r["reward_mean"] for r in rows if "reward_mean" in r),
              "run": str(out), "before_correct": _correct_ids(out, curve[0][0]),
              "after_correct": _correct_ids(out, curve[-1][0]), "stats": _run_stats(out, rows),
              **({"think": _think_stats(rows)} if cfg.answer_format == "think" else {})}
    print(f"\n# Learning: {tag} seed {args.seed}\n\nMachine: {machine()}  \n"
          f"Command: `python {shlex.join(sys.argv)}`\n")
    print("| step | held-out greedy accuracy % |\n|---|---|")
    warm = any(r.get("warmup") for r in rows)
    for i, (s, a) in enumerate(curve):
        print(f"| {s}{' (after the format warm-up)' if warm and i == 1 else ''} | {100 * a:.1f} |")
    if not args.no_save:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"\nappended to {args.results}; aggregate: python benchmarks/learning.py --table")


if __name__ == "__main__":
    sys.exit(main())
