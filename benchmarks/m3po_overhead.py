"""M3PO overhead: the step time of an M3PO training step over a GRPO step on the same batch.

    python benchmarks/m3po_overhead.py [--model smollm2-135m] [--questions 2] [--group-size 8]
                                       [--max-new-tokens 64] [--warmup 1] [--repeats 3] [--threads N]

Two trainers (crosspath.train.trainer.Trainer, LoRA r16 all-linear, beta 0) on the same model, the
same B questions of rg:chain_sum and the same sampling seed every repeat (data position and step
are reset before each step, so both sides draw the same questions and random stream; their texts
differ once the blend changes a token). Steps alternate G M M G ... after `--warmup` untimed steps
each. Reported: the median step / rollout / update seconds, the generated tokens per step and the
ratio M3PO / GRPO (target <= 1.15). The reward is a stand-in (1 for an even number of characters)
so that every group has non-zero advantages and every step runs its update (the trainer skips the
forward/backward when all advantages are 0); `--real-reward` uses the grader. Because the two
sides may write completions of different lengths, seconds per generated token are shown as well;
`--no-eos` makes every completion `--max-new-tokens` long so the step times compare like for like.

The result row is appended to benchmarks/results/m3po_overhead.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from crosspath.train import trainer as trainer_mod
from crosspath.train.trainer import TrainConfig, Trainer
from crosspath.envinfo import machine

RESULTS = Path(__file__).parent / "results" / "m3po_overhead.jsonl"


def parity_reward(problem, text, marker="####", marker_rule=True):
    """Timing stand-in for trainer.reward: varies within a group, so the update always runs."""
    r = float(len(text) % 2 == 0)
    return r, bool(r), text.count(marker)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=2, help="B, questions per step")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--real-reward", action="store_true", help="grade answers instead of the parity stand-in")
    ap.add_argument("--no-eos", action="store_true", help="never stop at EOS: every completion is full length")
    ap.add_argument("--results", default=str(RESULTS), help="results JSONL to append to (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true", help="do not append to the results JSONL")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.real_reward:
        trainer_mod.reward = parity_reward
    if args.no_eos:  # an EOS id no token has: rows run to max_new_tokens
        real = trainer_mod.sample_rollouts
        trainer_mod.sample_rollouts = lambda *a, **k: real(*a, eos_token_ids=[-1], **k)

    tmp = tempfile.mkdtemp(prefix="m3po-overhead-")
    base = dict(model=args.model, questions_per_step=args.questions, group_size=args.group_size,
                max_new_tokens=args.max_new_tokens, eval_size=0, eval_every=0, save_every=0,
                steps=10_000, progress=False, tensorboard=False, train_size=200)
    sides = {algo: Trainer(TrainConfig(algo=algo, out=f"{tmp}/{algo}", **base)) for algo in ("grpo", "m3po")}
    times: dict[str, list[dict]] = {a: [] for a in sides}
    for r in range(args.warmup + args.repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for algo in order:
            t = sides[algo]
            t.step, t.position = 0, 0  # the same questions and sampling seed every time
            row = t.train_step()
            if r >= args.warmup:
                times[algo].append({"step": row["step_seconds"], "rollout": row["rollout_seconds"],
                                    "update": row["update_seconds"],
                                    "tokens": row["completion_length"] * args.questions * args.group_size})
    med = {a: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for a, rows in times.items()}
    ratio = med["m3po"]["step"] / med["grpo"]["step"]
    per_tok = {a: m["step"] / max(m["tokens"], 1) for a, m in med.items()}

    print(f"# M3PO overhead\n\nMachine: {machine()}  \nCommand: `python {shlex.join(sys.argv)}`  \n"
          f"Setting: {args.model}, {args.questions} questions x {args.group_size} completions x "
          f"<= {args.max_new_tokens} tokens, LoRA r16 all-linear, beta 0, median of {args.repeats} after "
          f"{args.warmup} warm-up{' , EOS off' if args.no_eos else ''}\n")
    print("| algo | step s | rollout s | update s | tokens/step | s per 1k tokens |\n|---|---|---|---|---|---|")
    for a, m in med.items():
        print(f"| {a} | {m['step']:.2f} | {m['rollout']:.2f} | {m['update']:.2f} | {m['tokens']:.0f} | "
              f"{1000 * per_tok[a]:.2f} |")
    print(f"\nM3PO / GRPO step time: **{ratio:.3f}** (target <= 1.15); "
          f"per generated token: {per_tok['m3po'] / per_tok['grpo']:.3f}")
    if not args.no_save:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                                "command": shlex.join(sys.argv),
                                **{k: v for k, v in vars(args).items() if k not in ("results", "no_save")}, "median": med,
                                "ratio": ratio, "ratio_per_token": per_tok["m3po"] / per_tok["grpo"]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
