"""Collaborative RL: base / GRPO / M3PO / LeaP-GRPO adapters, each evaluated alone and with LeaP.

    python benchmarks/collab_rl.py [--model smollm2-135m] [--steps 60] [--eval-questions 200] [--seeds 0 1 2]
                                   [--root runs/bench/collab_rl] [--threads N]
    python benchmarks/collab_rl.py --table                    # the table of the recorded results
    python benchmarks/collab_rl.py --record [options as run]  # record what is under --root (runs of an older version)

Training (crosspath's Trainer, one run per algorithm and seed): the same task (rg:chain_sum, 2-3
terms of 1 digit), the same training questions in the same order (B questions per step), the same
steps, N = group size paths per question, and the same per-path token budget: GRPO and M3PO get
max_new_tokens = the LeaP path budget (rounds*T + (rounds-1)*S + A), so every algorithm may
generate the same tokens per step; what they did generate is reported (train tok/step). The
held-out questions (seed 1234) are removed from training. GRPO and M3PO train with the thinking
phase by default (`--answer-format think`: reasoning, then a `####` line; the trainer's format
warm-up of 20 SFT steps on the model's own correct traces runs first, outside the RL steps), M3PO
with `--m3po-lambda` / `--m3po-temperature` (default lambda 0.3, T 0.1: the best of `benchmarks/learning.py --sweep`);
LeaP-GRPO trains under LeaP's own prompt.

Evaluation (crosspath.infer.runner.run with the adapter, hf backend): every adapter (and the base
model) answers the same held-out questions twice, with N = 4 independent paths and with LeaP
(N = 4, the training LeaP options), at equal per-path budget: the independent run takes the LeaP
run's budget (`match`); independent paths of GRPO / M3PO are asked with the prompt they were
trained on (`crosspath run --prompt think|marker`), those of the base model and LeaP-GRPO with the
plain step-by-step one. Reported: pass@1 (mean over paths), cons@4 (majority) and generated tokens
per question (mean and, over several seeds, the seeds' standard deviation); the share of LeaP paths
that read peers (in LeaP-GRPO training, and in each LeaP evaluation); then an exact McNemar test on
cons@4 correctness, question by question, between LeaP-GRPO evaluated with LeaP and GRPO evaluated
with independent paths, per seed and pooled over seeds.

Recorded: every finished evaluation becomes a line of benchmarks/results/collab_rl.jsonl (`--results`;
per question pass@1, cons@4 and tokens, plus the training figures), replaced when it is evaluated again
with the same setting; `--table` prints one table per setting from that file alone.

Resumable: every training run and every evaluation is a directory under --root
(train-<algo>-s<seed>/, eval-<adapter>-s<seed>-<method>/; the base model: eval-base-s<seed>-<method>/,
sampled with that seed); a finished one is reused (refused when it was trained with other options:
one --root per setting), a killed one resumes (the
trainer from its last checkpoint, the runner from its last finished question).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from shared import mcnemar_p

RESULTS = Path(__file__).parent / "results" / "collab_rl.jsonl"
ALGOS = ("grpo", "m3po", "leap")
# options a finished training run must share with this invocation to be reused
REUSE_KEYS = ("model", "task", "steps", "group_size", "questions_per_step", "max_new_tokens", "answer_format",
              "m3po_lambda", "m3po_temperature", "leap_rounds", "leap_round_tokens", "leap_summary_tokens",
              "leap_answer_tokens", "leap_peers_k", "train_size")
ADAPTERS = ("base",) + ALGOS
METHODS = ("independent", "leap")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def train_config(args, algo: str, seed: int):
    from crosspath.train import TrainConfig
    from crosspath.train.checkpoint import latest_checkpoint
    from crosspath.train.leap_rollout import path_budget

    out = Path(args.root) / f"train-{algo}-s{seed}"
    common = dict(model=args.model, task=args.task, seed=seed, steps=args.steps, device=args.device,
                  questions_per_step=args.questions_per_step, group_size=args.group_size,
                  eval_size=args.eval_questions, eval_seed=args.eval_seed, eval_every=0, save_every=args.save_every,
                  train_size=args.train_size, leap_rounds=args.rounds, leap_round_tokens=args.round_tokens,
                  leap_summary_tokens=args.summary_tokens, leap_answer_tokens=args.answer_tokens,
                  leap_peers_k=args.top_k, threads=args.threads, progress=not args.quiet, tensorboard=False,
                  out=str(out))
    solo = {} if algo == "leap" else {"answer_format": args.answer_format,  # LeaP-GRPO asks with LeaP's prompt
                                      "format_warmup_cache": str(Path(args.root) / "warmup-cache")}
    if algo == "m3po":
        solo.update(m3po_lambda=args.m3po_lambda, m3po_temperature=args.m3po_temperature)
    cfg = TrainConfig(algo=algo, **common, **solo)
    cfg.max_new_tokens = path_budget(cfg)  # equal per-path budget for every algorithm
    cfg.resume, cfg.overwrite = latest_checkpoint(out) is not None, True  # a run killed before its first checkpoint restarts
    return cfg


def train(args, algo: str, seed: int) -> Path:
    """The adapter of train-<algo>-s<seed>, trained (or resumed) to --steps; reused when it is there."""
    from crosspath.train.trainer import Trainer

    cfg = train_config(args, algo, seed)
    out = Path(cfg.out)
    rows = _lines(out / "metrics.jsonl")
    if (out / "final").is_dir() and rows and rows[-1].get("step") == args.steps:
        import yaml

        from crosspath.config import to_dict

        saved, wanted = yaml.safe_load((out / "config.yaml").read_text()), to_dict(cfg)
        other = {k: (saved.get(k), v) for k, v in wanted.items() if k in REUSE_KEYS and saved.get(k) != v}
        if other:
            changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in other.items())
            sys.exit(f"collab_rl: {out} was trained with other options ({changes}): give another --root for this "
                     "setting")
        return out / "final"
    Trainer(cfg).fit()
    return out / "final"


def held_out(args):
    from crosspath.train.trainer import load_splits

    cfg = train_config(args, "grpo", 0)
    cfg.train_size = 1
    return load_splits(cfg, log=lambda *_: None)[1]


def eval_prompt(args, adapter_name: str, method: str) -> str | None:
    """The question prompt of an evaluation: LeaP's own for LeaP; for independent paths the prompt the
    adapter was trained on (GRPO / M3PO: the --answer-format prompt, marker or think), plain step by
    step for the base model and LeaP-GRPO (whose paths learned under LeaP's prompt)."""
    if method == "leap" or adapter_name in ("base", "leap"):
        return None
    return "think" if args.answer_format == "think" else "marker"


def evaluate(args, adapter_name: str, seed: int, adapter: Path | None, method: str, problems) -> Path:
    from crosspath.infer.runner import RunConfig, run
    from crosspath.train import TrainConfig

    out = Path(args.root) / f"eval-{adapter_name}-s{seed}-{method}"
    if len(_lines(out / "results.jsonl")) >= len(problems) and (out / "summary.json").exists():
        return out
    leap_out = Path(args.root) / f"eval-{adapter_name}-s{seed}-leap"
    cfg = RunConfig(method=method, model=args.model, adapter=str(adapter) if adapter else None, task=args.task,
                    task_seed=args.eval_seed, task_options=TrainConfig(task=args.task).resolved_task_options(),
                    paths=4, rounds=args.rounds, round_tokens=args.round_tokens, summary_tokens=args.summary_tokens,
                    answer_tokens=args.answer_tokens, peers_k=args.top_k, seed=seed, threads=args.threads,
                    batch_questions=args.batch_questions, out=str(out), prompt=eval_prompt(args, adapter_name, method),
                    match=str(leap_out) if method == "independent" else None,
                    resume=(out / "results.jsonl").exists())
    run(cfg, problems=problems, progress=not args.quiet, log=lambda *_: None)
    return out


def _read_peers(rows: list[dict]) -> float | None:
    """Share of LeaP evaluation paths that received at least one peer's summary."""
    paths = [p for r in rows for p in r["paths"]]
    read = [any(rd.get("peers") for rd in p.get("rounds", [])) for p in paths]
    return sum(read) / len(read) if read else None


def _influence(rows: list[dict]) -> dict:
    """Paths that received comments, and how many of them went wrong->right / right->wrong by the end
    of the next round, summed over rounds (crosspath.infer.analysis.influence)."""
    from crosspath.infer.analysis import influence

    per_round = influence(rows)
    return {k: sum(r[k] for r in per_round) for k in ("paths", "changed", "wrong_to_right", "right_to_wrong")}


def setting(args) -> dict:
    """The options that make two records comparable (one table per setting)."""
    return {k: getattr(args, k) for k in SETTING_KEYS}


SETTING_KEYS = ("model", "task", "steps", "questions_per_step", "group_size", "train_size", "eval_questions",
                "eval_seed", "rounds", "round_tokens", "summary_tokens", "answer_tokens", "top_k", "answer_format",
                "m3po_lambda", "m3po_temperature")


def summarize(args, name: str, seed: int, method: str) -> dict | None:
    """One results line for a finished evaluation under --root: per question pass@1, cons@4 and tokens,
    the LeaP paths' read-peers share, and the adapter's training figures (None while unfinished)."""
    from crosspath.envinfo import machine

    root = Path(args.root)
    out = root / f"eval-{name}-s{seed}-{method}"
    rows = _lines(out / "results.jsonl")
    if not rows or not (out / "summary.json").exists():
        return None
    rec = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
           "command": "python " + shlex.join(sys.argv), "setting": setting(args), "adapter": name, "method": method,
           "seed": seed, "read_peers": _read_peers(rows) if method == "leap" else None,
           "influence": _influence(rows) if method == "leap" else None,
           "questions": [{"id": r["id"], "pass_at_1": r["pass_at_1"], "cons_correct": bool(r["cons_correct"]),
                          "tokens": r["tokens"]} for r in rows],
           "train_tokens_per_step": None, "train_read_peers": None}
    run = root / f"train-{name}-s{seed}"
    steps = [m for m in _lines(run / "metrics.jsonl") if "completion_length" in m]
    if steps:
        import yaml

        tc = yaml.safe_load((run / "config.yaml").read_text())
        rec["train_tokens_per_step"] = round(statistics.mean(m["completion_length"] for m in steps)
                                             * tc["group_size"] * tc["questions_per_step"], 1)
        if name == "leap":
            rec["train_read_peers"] = statistics.mean(m["leap_read_peers"] for m in steps)
        rec["train_reward"] = [statistics.mean(m["reward_mean"] for m in part) for part in (steps[:10], steps[-10:])]
        rec["train_signal"] = statistics.mean(m.get("adv_nonzero_frac") or 0.0 for m in steps)
    return rec


def record(args, path: Path) -> int:
    """Write every finished evaluation under --root (of --seeds) into the results JSONL, replacing the
    line of the same setting, adapter, method and seed. Returns how many lines were written."""
    import fcntl

    key = lambda r: (json.dumps(r["setting"], sort_keys=True), r["adapter"], r["method"], r["seed"])  # noqa: E731
    new = [r for seed in args.seeds for name in ADAPTERS for method in METHODS
           if (r := summarize(args, name, seed, method)) is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # two invocations (e.g. --only base leap / grpo m3po) may record
        fcntl.flock(lock, fcntl.LOCK_EX)
        recs = {key(r): r for r in _lines(path)}
        recs.update((key(r), r) for r in new)
        tmp = path.with_suffix(".part")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in recs.values()))
        tmp.replace(path)
    return len(new)


def _fmt(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not xs:
        return "-"
    spread = f" ± {scale * statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else ""
    return f"{scale * statistics.mean(xs):.{digits}f}{spread}"


def table(records: list[dict]) -> str:
    """One table per setting of the recorded evaluations (see `summarize`)."""
    if not records:
        return "no recorded evaluations yet"
    by_setting: dict[str, list[dict]] = {}
    for r in records:
        by_setting.setdefault(json.dumps(r["setting"], sort_keys=True), []).append(r)
    return "\n\n".join((f"Setting: `{s}`\n\n" if len(by_setting) > 1 else "") + _table(rs)
                        for s, rs in by_setting.items())


def _flips(recs: list[dict]) -> str:
    """wrong->right / right->wrong after comments, summed over the seeds ('-' for independent rows)."""
    inf = [r["influence"] for r in recs if r.get("influence")]
    return f"{sum(i['wrong_to_right'] for i in inf)} / {sum(i['right_to_wrong'] for i in inf)}" if inf else "-"


SIGN_PAIRS = ((("m3po", "independent"), ("grpo", "independent")), (("leap", "leap"), ("base", "leap")))


def _per_seed(at: dict, seeds: list[int]) -> list[str]:
    """Per seed: pass@1 of two rows and the questions where A's pass@1 is higher / lower than B's (exact
    sign test), for SIGN_PAIRS; then the training reward of each trained adapter (first / last 10 steps)."""
    out = []
    for a_key, b_key in SIGN_PAIRS:
        rows, pooled = [], [0, 0]
        for seed in seeds:
            a, b = at.get((*a_key, seed)), at.get((*b_key, seed))
            if not (a and b):
                continue
            pa, pb = ({q["id"]: q["pass_at_1"] for q in r["questions"]} for r in (a, b))
            ids = sorted(set(pa) & set(pb))
            hi, lo = sum(pa[i] > pb[i] for i in ids), sum(pa[i] < pb[i] for i in ids)
            pooled = [pooled[0] + hi, pooled[1] + lo]
            rows.append(f"| {seed} | {100 * statistics.mean(pa[i] for i in ids):.1f} | "
                        f"{100 * statistics.mean(pb[i] for i in ids):.1f} | {hi} / {lo} | {mcnemar_p(hi, lo):.3f} |")
        if rows:
            if len(rows) > 1:
                rows.append(f"| pooled | | | {pooled[0]} / {pooled[1]} | {mcnemar_p(*pooled):.3f} |")
            an, bn = "+".join(a_key), "+".join(b_key)
            out += ["", f"Per seed, pass@1 %: {an} (A) vs {bn} (B)", "",
                    "| seed | A | B | questions A higher / lower | exact sign test p |", "|---|---|---|---|---|"] + rows
    train = [f"| {name} | {seed} | {100 * r['train_reward'][0]:.1f} | {100 * r['train_reward'][1]:.1f} | "
             f"{100 * r['train_signal']:.0f} |"
             for name in ALGOS for seed in seeds
             if (r := at.get((name, "independent", seed)) or at.get((name, "leap", seed))) and r.get("train_reward")]
    if train:
        out += ["", "Training (metrics.jsonl): reward % (mean of the first / last 10 steps) and the share of groups "
                "with a non-zero advantage, over all steps", "",
                "| algo | seed | reward first 10 | reward last 10 | groups with signal % |", "|---|---|---|---|---|"] + train
    return out


def _table(records: list[dict]) -> str:
    out = ["| adapter | eval | seeds | questions | pass@1 % | cons@4 % | tokens / question | read peers % | "
           "wrong->right / right->wrong | train tok / step | train read peers % |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    at = {(r["adapter"], r["method"], r["seed"]): r for r in records}
    all_seeds = sorted({r["seed"] for r in records})
    for name in ADAPTERS:
        for method in METHODS:
            recs = [at[(name, method, s)] for s in all_seeds if (name, method, s) in at]
            if not recs:
                continue
            qs = [r["questions"] for r in recs]
            col = lambda f: [f(r) for r in recs if f(r) is not None]  # noqa: E731
            out.append(f"| {name} | {method} | {','.join(str(r['seed']) for r in recs)} | "
                       f"{'/'.join(map(str, sorted({len(q) for q in qs})))} | "
                       f"{_fmt([statistics.mean(x['pass_at_1'] for x in q) for q in qs])} | "
                       f"{_fmt([statistics.mean(x['cons_correct'] for x in q) for q in qs])} | "
                       f"{_fmt([statistics.mean(x['tokens'] for x in q) for q in qs], 1, 0)} | "
                       f"{_fmt(col(lambda r: r['read_peers']))} | {_flips(recs)} | "
                       f"{_fmt(col(lambda r: r['train_tokens_per_step']), 1, 0)} | "
                       f"{_fmt(col(lambda r: r['train_read_peers']))} |")
    paired, pooled = [], [0, 0, 0, 0]
    for seed in all_seeds:
        a, b = at.get(("leap", "leap", seed)), at.get(("grpo", "independent", seed))
        if not (a and b):
            continue
        ca = {q["id"]: q["cons_correct"] for q in a["questions"]}
        cb = {q["id"]: q["cons_correct"] for q in b["questions"]}
        ids = sorted(set(ca) & set(cb))
        c = [sum(ca[i] and cb[i] for i in ids), sum(ca[i] and not cb[i] for i in ids),
             sum(cb[i] and not ca[i] for i in ids), sum(not ca[i] and not cb[i] for i in ids)]
        pooled = [x + y for x, y in zip(pooled, c)]
        paired.append(f"| {seed} | {len(ids)} | " + " | ".join(map(str, c)) + f" | {mcnemar_p(c[1], c[2]):.3f} |")
    if paired:
        if len(paired) > 1:
            paired.append(f"| all | {sum(pooled)} | " + " | ".join(map(str, pooled)) +
                          f" | {mcnemar_p(pooled[1], pooled[2]):.3f} |")
        out += ["", "Paired on the same questions (cons@4 correct): LeaP-GRPO + LeaP vs GRPO + independent", "",
                "| seed | questions | both right | only LeaP-GRPO+LeaP | only GRPO+independent | both wrong | "
                "exact McNemar p |", "|---|---|---|---|---|---|---|"] + paired
        if len(paired) > 1:
            out.append("\nThe pooled test treats the seeds' disagreements as independent, which they are not quite "
                       "(every seed answers the same questions).")
    out += _per_seed(at, all_seeds)
    out.append("\nMean ± standard deviation over seeds. train tok / step: generated tokens per training step "
               "(B questions x N paths), mean over steps; tokens / question: generated by the 4 evaluation paths; "
               "read peers: share of LeaP paths that received at least one peer's summary; wrong->right / right->wrong: "
               "LeaP paths whose answer turned right / wrong by the end of the round after they received comments, "
               "summed over rounds and seeds.")
    return "\n".join(out)


def main(argv=None) -> int:
    from crosspath.train import TrainConfig

    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="rg:chain_sum")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training/sampling seeds (3 for the figures; default 0; --record: every seed under --root)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--questions-per-step", type=int, default=d.questions_per_step)
    ap.add_argument("--group-size", type=int, default=4, help="N paths per question in training (default 4)")
    ap.add_argument("--train-size", type=int, default=d.train_size)
    ap.add_argument("--eval-questions", type=int, default=200, help="held-out questions (>= 200 for the figures)")
    ap.add_argument("--eval-seed", type=int, default=1234)
    ap.add_argument("--rounds", type=int, default=d.leap_rounds)
    ap.add_argument("--round-tokens", type=int, default=d.leap_round_tokens)
    ap.add_argument("--summary-tokens", type=int, default=d.leap_summary_tokens)
    ap.add_argument("--answer-tokens", type=int, default=d.leap_answer_tokens)
    ap.add_argument("--top-k", type=int, default=d.leap_peers_k)
    ap.add_argument("--answer-format", default="think", choices=("plain", "think"),
                    help="GRPO and M3PO: the training prompt and reward (think: reasoning, then a #### line, with "
                         "the format warm-up first; M3PO blends while thinking) and their independent evaluation's "
                         "prompt (default think)")
    ap.add_argument("--m3po-lambda", type=float, default=0.3,
                    help="M3PO's lambda (default: 0.3, the best of benchmarks/learning.py --sweep; the trainer's "
                         "default is 0.1)")
    ap.add_argument("--m3po-temperature", type=float, default=d.m3po_temperature, help="M3PO's T")
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--batch-questions", type=int, default=8, help="evaluation questions per generator call")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--root", default="runs/bench/collab_rl", help="parent of the run directories")
    ap.add_argument("--only", nargs="*", choices=ADAPTERS, help="train/evaluate only these adapters")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--results", default=str(RESULTS),
                    help="results JSONL: every finished evaluation is recorded there (default: %(default)s)")
    ap.add_argument("--record", action="store_true",
                    help="record the finished evaluations under --root (every seed there; give the options they "
                         "ran with) into --results, print the table and exit")
    ap.add_argument("--table", action="store_true", help="print the table of the recorded results and exit")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(_lines(results)))
        return 0
    if args.seeds is None:
        found = {int(d.name.rsplit("-s", 1)[1].split("-")[0]) for d in Path(args.root).glob("eval-*-s*-*")}
        args.seeds = sorted(found) if args.record and found else [0]
    if not args.record:
        problems = held_out(args)
        for seed in args.seeds:  # seed by seed: a stopped run has whole seeds to show
            for name in args.only or ADAPTERS:
                adapter = None if name == "base" else train(args, name, seed)
                for method in ("leap", "independent"):  # independent matches the LeaP run's budget
                    evaluate(args, name, seed, adapter, method, problems)
                    record(args, results)
    n = record(args, results)
    from crosspath.envinfo import machine

    print(f"# Collaborative RL\n\nMachine: {machine()}  \nCommand: `python {shlex.join(sys.argv)}`\n")
    print(f"{n} finished evaluations under {args.root} recorded in {results}\n")
    print(table(_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
