"""`crosspath train` (GRPO / M3PO with LoRA) and `crosspath train-eval` (greedy held-out accuracy
with the training prompt), added to the main parser by crosspath.cli.

    crosspath train --algo m3po --model smollm2-135m --task rg:chain_sum --steps 20 --out runs/m3po
    crosspath train --out runs/m3po --steps 40 --resume          # continue / extend the same run
    torchrun --nproc-per-node 2 -m crosspath.cli train ...        # distributed (docs/training.md)
    crosspath train-eval --run runs/m3po                          # its final adapter, held-out set
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from crosspath.config import add_arguments, from_args, read_yaml


def _add_config_flags(p: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    from crosspath.train import TrainConfig

    p.add_argument("--config", help="YAML file with any of the options below (flags win)")
    add_arguments(p, TrainConfig, skip=set(skip))


def _config(args, base: dict | None = None):
    """TrainConfig from defaults < base (a run's config.yaml) < --config YAML < flags, every value checked."""
    from crosspath.train import TrainConfig

    return from_args(TrainConfig, args, getattr(args, "config", None), base=base)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="RL training with LoRA: GRPO, M3PO (cross-path blend of thinking inputs), or LeaP-GRPO "
                      "(the group is one LeaP run)",
        description="GRPO / M3PO / LeaP-GRPO training with a LoRA adapter. Writes config.yaml, metrics.jsonl, samples/, "
                    "tb/, checkpoints/step-N/ and final/ (the adapter) to --out. --resume continues from the "
                    "last complete checkpoint with the options in --out/config.yaml; a larger --steps extends the "
                    "run, and --lr / --max-grad-norm may change (after a NaN; recorded in config.yaml history). "
                    "docs/training.md has the math.")
    _add_config_flags(p)
    p.set_defaults(func=_cmd_train)

    e = subparsers.add_parser(
        "train-eval", help="greedy held-out accuracy of a trained adapter with the training prompt (####)",
        description="Greedy evaluation, one path per question, no blend, with the training prompt. --run DIR "
                    "takes model, task and held-out set from DIR/config.yaml and the adapter from DIR/final "
                    "(else the newest checkpoint); flags override. Prints a Markdown table.")
    e.add_argument("--run", help="training run directory")
    e.add_argument("--adapter", help="LoRA adapter folder (default with --run: DIR/final or the newest checkpoint)")
    e.add_argument("--no-adapter", action="store_true", help="evaluate the base model")
    e.add_argument("--results", help="write one JSON line per question here "
                                     "(default with --run: DIR/eval-<name>.jsonl)")
    _add_config_flags(e, skip={"resume", "overwrite", "out", "progress", "tensorboard"})
    e.set_defaults(func=_cmd_train_eval)


def _cmd_train(args) -> int:
    from crosspath.train.guard import NonFiniteError
    from crosspath.train.trainer import Trainer, default_out

    cfg = _config(args)
    saved = Path(cfg.out or default_out(cfg)) / "config.yaml"
    if cfg.resume and saved.exists():  # --resume continues the run's own options; flags change what they name
        cfg = _config(args, read_yaml(saved))
    try:
        trainer = Trainer(cfg)
        rows = trainer.fit()
    except NonFiniteError as e:
        print(f"crosspath train: {e}", file=sys.stderr)
        return 3
    if trainer.dist.main:
        last = next((r for r in reversed(rows) if "eval_accuracy" in r), None)
        print(f"\nrun: {trainer.out}  (adapter: {trainer.out / 'final'})")
        if last is not None:
            print(f"held-out greedy accuracy at step {last['step']}: {last['eval_accuracy']:.3f}")
    return 0


def _resolve_adapter(args) -> str | None:
    if args.no_adapter:
        return None
    if args.adapter or not args.run:
        return args.adapter
    from crosspath.train.checkpoint import latest_checkpoint

    run = Path(args.run)
    if (run / "final").is_dir():
        return str(run / "final")
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"{run} has neither final/ nor a complete checkpoint")
    return str(ckpt / "adapter")


def _cmd_train_eval(args) -> int:
    from crosspath.models import load_model
    from crosspath.train.trainer import evaluate, load_splits

    base = None
    if args.run:
        saved = Path(args.run) / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"{saved} not found (is {args.run} a training run?)")
        base = read_yaml(saved)
    cfg = _config(args, base)
    adapter = _resolve_adapter(args)
    model, tok = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, adapter=adapter)
    _, problems = load_splits(dataclasses.replace(cfg, train_size=0)) if cfg.eval_size else ([], [])
    if not problems:
        raise ValueError("nothing to evaluate: --eval-size is 0")
    sums, rows = evaluate(model, tok, problems, cfg)
    name = Path(adapter).name if adapter else "base"
    if adapter and name == "adapter":  # checkpoints/step-N/adapter -> step-N
        name = Path(adapter).parent.name
    out = args.results or (str(Path(args.run) / f"eval-{name}.jsonl") if args.run else None)
    if out:
        Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("| model | adapter | task | questions | greedy accuracy | format rate |\n|---|---|---|---|---|---|")
    print(f"| {cfg.model} | {adapter or '-'} | {cfg.task} | {sums['n']} | {sums['correct'] / sums['n']:.3f} | "
          f"{sums['format'] / sums['n']:.3f} |")
    if out:
        print(f"\nper question: {out}")
    return 0
