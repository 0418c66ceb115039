"""`crosspath distill generate | filter | train | leap-t` (QR-Distill and LeaP-T; see docs/distill.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import ConfigError, add_arguments, from_args

DESCRIPTION = """Distillation from many reasoning paths.

QR-Distill, in three steps:
  crosspath distill generate --teacher MODEL --task rg:chain_sum --limit 100 --out paths.jsonl
  crosspath distill filter   --in paths.jsonl --out filtered.jsonl --judge MODEL   (or --no-judge)
  crosspath distill train    --data filtered.jsonl --students MODEL_A MODEL_B --out runs/qr \\
                             --eval-task rg:chain_sum --eval-task-seed 1
LeaP-T, from LeaP run directories:
  crosspath distill leap-t   --runs runs/leap-a runs/leap-b --model MODEL --out runs/leap-t
  crosspath run --method leap --leap-t --adapter runs/leap-t/adapter --model MODEL
"""


def add_parser(subparsers) -> None:
    from .filter import FilterConfig
    from .generate import GenerateConfig
    from .leap_t import LeapTConfig
    from . import QRConfig

    p = subparsers.add_parser("distill", help="QR-Distill (generate, filter, train) and LeaP-T",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="distill_command", required=True)

    g = sub.add_parser("generate", help="teacher paths in six styles -> JSONL (resumable)",
                       description="For each question, the teacher writes --per-style paths in each style; every "
                                   "path is graded and appended to --out as soon as it is written. Run it again "
                                   "to resume.")
    g.add_argument("--config", help="YAML file with any of the options below (flags win)")
    add_arguments(g, GenerateConfig)
    g.set_defaults(func=_cmd_generate)

    f = sub.add_parser("filter", help="drop wrong answers, then paths an LLM judge calls INVALID",
                       description="Answer filter, then an LLM judge (VALID/INVALID + reason) through any backend. "
                                   "Prints statistics per style and writes them to <out>.stats.json.")
    f.add_argument("--config", help="YAML file with options (flags win)")
    f.add_argument("--in", "--input", dest="input", metavar="PATHS", default=argparse.SUPPRESS,
                   help="teacher paths from `distill generate` (default: paths.jsonl)")
    # "--no-X" flags are the negative form of boolean options in argparse: this one is added by hand
    f.add_argument("--no-judge", dest="no_judge", action="store_true", default=argparse.SUPPRESS,
                   help="answer filter only, no LLM judge (ablation)")
    add_arguments(f, FilterConfig, skip={"input", "no_judge"})
    f.set_defaults(func=_cmd_filter)

    t = sub.add_parser("train", help="routed multi-student distillation with mutual learning (QR-Distill)",
                       description="Two or more LoRA students; a router (frozen MiniLM + MLP, straight-through "
                                   "Gumbel) assigns each path to one student; students also pull their pooled "
                                   "representations towards a competence-weighted ensemble. Ablations: "
                                   "--routing random|all, --mutual-weight 0.")
    t.add_argument("--config", help="YAML file with options (flags win)")
    add_arguments(t, QRConfig)
    t.set_defaults(func=_cmd_train)

    lt = sub.add_parser("leap-t", help="fine-tune a model on its correct LeaP traces (peer blocks masked)",
                        description="Builds SFT data from LeaP run directories (correct paths, plain prompt, the "
                                    "path's full text as target with injected peer blocks masked) and trains a "
                                    "LoRA adapter into OUT/adapter.")
    lt.add_argument("--config", help="YAML file with options (flags win)")
    add_arguments(lt, LeapTConfig)
    lt.set_defaults(func=_cmd_leap_t)


def _check_out_file(out: str) -> None:
    """--out of generate/filter names a file: not a folder, in a folder that can be created and written."""
    from ..rundir import RunDirError, check_writable

    if Path(out).is_dir():
        raise RunDirError(f"--out {out} is a folder; name a file, e.g. {Path(out) / 'paths.jsonl'}")
    check_writable(Path(out).parent, Path(out))


def _cmd_generate(args) -> int:
    from .generate import GenerateConfig, generate

    cfg = from_args(GenerateConfig, args, args.config)
    _check_out_file(cfg.out)
    res = generate(cfg)
    print(f"{res['written']} paths written ({res['correct']} correct), {res['skipped']} already there: {res['out']}")
    return 0


def _cmd_filter(args) -> int:
    from .filter import FilterConfig, filter_paths

    cfg = from_args(FilterConfig, args, args.config)
    _check_out_file(cfg.out)
    filter_paths(cfg)
    print(f"\nkept paths: {cfg.out}\nstatistics: {cfg.out}.stats.json")
    return 0


def _cmd_train(args) -> int:
    from .qr import QRConfig, train

    cfg = from_args(QRConfig, args, args.config)
    if not cfg.data:
        raise ConfigError("--data is required (filtered paths from `crosspath distill filter`)")
    res = train(cfg)
    if "routing" in res:
        print("router: mean probability per style and student")
        for style, probs in res["routing"].items():
            print(f"  {style:10s} " + "  ".join(f"s{i}={p:.3f}" for i, p in enumerate(probs)))
    print(f"run directory: {res['out']}")
    return 0


def _cmd_leap_t(args) -> int:
    from .leap_t import LeapTConfig, train_leap_t

    cfg = from_args(LeapTConfig, args, args.config)
    if not cfg.runs:
        raise ConfigError("--runs is required (LeaP run directories)")
    train_leap_t(cfg)
    return 0
