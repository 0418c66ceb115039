"""`crosspath distill generate | filter | train | leap-traces | leap-t | format-rate` (QR-Distill and LeaP-T;
see docs/distill.md)."""

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
LeaP-T, from LeaP traces (resumable; training questions never held out):
  crosspath distill leap-traces --model MODEL --task rg:chain_sum --task-seed 0 --eval-task-seed 1 \
                             --limit 400 --splice --out runs/traces
  crosspath distill leap-t   --traces runs/traces --model MODEL --out runs/leap-t
  crosspath distill leap-t   --traces runs/traces --single-paths --match runs/leap-t --out runs/sft  (baseline)
  crosspath run --method leap --leap-t --adapter runs/leap-t/adapter --model MODEL --out runs/lt-eval ...
  crosspath distill format-rate runs/lt-eval          (share of paths that wrote <summarize> themselves)
"""


def add_parser(subparsers) -> None:
    from .filter import FilterConfig
    from .generate import GenerateConfig
    from .leap_t import LeapTConfig
    from .leap_traces import LeapTracesConfig
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

    lt_ = sub.add_parser("leap-traces", help="LeaP traces for LeaP-T over training questions, chunked and resumable",
                         description="Runs LeaP (--leap) and/or independent paths to splice (--splice) over training "
                                     "questions that are never held out, in resumable chunks; keeps correct paths "
                                     "that completed the protocol and spliced traces of correct independent paths; "
                                     "writes OUT/traces.jsonl and the yield report OUT/yield.json. Run it again to "
                                     "resume or to extend --limit.")
    lt_.add_argument("--config", help="YAML file with options (flags win)")
    add_arguments(lt_, LeapTracesConfig)
    lt_.set_defaults(func=_cmd_leap_traces)

    lt = sub.add_parser("leap-t", help="fine-tune a model on LeaP traces (peers' blocks masked)",
                        description="Builds SFT data from trace files (`distill leap-traces`) or LeaP run directories "
                                    "(plain prompt; the trace as the LeaP-T loop shows it, with the peers' blocks and "
                                    "injected lead-ins masked) and trains a LoRA adapter into OUT/adapter. "
                                    "--single-paths trains the SFT baseline on correct single paths instead.")
    lt.add_argument("--config", help="YAML file with options (flags win)")
    add_arguments(lt, LeapTConfig)
    lt.set_defaults(func=_cmd_leap_t)

    fr = sub.add_parser("format-rate", help="share of paths that wrote <summarize> themselves (LeaP-T runs)",
                        description="For run directories of `crosspath run --method leap --leap-t` (or independent/"
                                    "greedy runs): how many paths opened <summarize> on their own, closed it, and "
                                    "how many summaries a path wrote.")
    fr.add_argument("run_dirs", nargs="+", metavar="RUN")
    fr.set_defaults(func=_cmd_format_rate)


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
    if not (cfg.traces or cfg.runs):
        raise ConfigError("--traces (from `distill leap-traces`) or --runs (LeaP run directories) is required")
    train_leap_t(cfg)
    return 0


def _cmd_leap_traces(args) -> int:
    from .leap_traces import LeapTracesConfig, build_traces

    cfg = from_args(LeapTracesConfig, args, args.config)
    build_traces(cfg)
    print(f"traces: {cfg.out}/traces.jsonl\nyield report: {cfg.out}/yield.json")
    return 0


def _cmd_format_rate(args) -> int:
    from .leap_t import format_rate_of

    for d in args.run_dirs:
        r = format_rate_of(d)
        print(f"{d}: {r['wrote']}/{r['paths']} paths wrote <summarize> (format rate {r['format_rate']:.3f}), "
              f"{r['closed']} closed it, {r['summaries_per_path']:.2f} summaries per path")
    return 0
