"""The `crosspath` command: one entry point, one subcommand per job.

    crosspath run      --method independent|leap|greedy ...   inference on a task, graded
    crosspath eval     greedy held-out accuracy of a model (+ optional LoRA adapter)
    crosspath analyze  RUN          LeaP influence analysis per round
    crosspath compare  RUN_A RUN_B  two runs side by side
    crosspath train    --algo grpo|m3po ...  RL training with LoRA
    crosspath distill  generate|filter|train|leap-t ...
    crosspath serve    OpenAI-compatible server answering with LeaP
    crosspath report   RUN          self-contained HTML report
    crosspath models | tasks        what is known
    crosspath recipes [NAME]        the papers' settings shipped as --config files (NAME: dry run)
    crosspath demo     the README's main job: LeaP next to independent sampling on SmolLM2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import __version__
from .config import DTYPES, ConfigError, add_arguments, from_args
from .errors import CrosspathError


def _run_parser(sub):
    from .infer.runner import RunConfig

    p = sub.add_parser("run", help="run an inference method on a task and grade it",
                       description="Run an inference method on a task; writes results.jsonl, summary.json and "
                                   "config.yaml to the run directory and prints the results table.")
    p.add_argument("--config", help="YAML file with any of the options below (flags win)")
    add_arguments(p, RunConfig)
    p.set_defaults(func=_cmd_run)
    e = sub.add_parser("eval", help="greedy accuracy of a model (optionally with a LoRA adapter): one path per question",
                       description="Greedy evaluation: one path per question, temperature 0, no exchange. With "
                                   "--run DIR (a `crosspath train` run) it scores that run's adapter on its held-out "
                                   "set with the training prompt, as `crosspath train-eval --run DIR` does.")
    e.add_argument("--config", help="YAML file with options (flags win)")
    e.add_argument("--run", help="a training run directory: evaluate its adapter (DIR/final, else the newest "
                                 "checkpoint, or --adapter) with the run's model, task, prompt and held-out set; "
                                 "only --adapter may be combined with it (more options: crosspath train-eval)")
    add_arguments(e, RunConfig, skip={"method", "paths", "temperature", "top_p", "sample_top_k", "min_p", "rounds",
                                      "round_tokens", "peers_k", "router", "similarity", "summary_tokens",
                                      "comm_rounds", "token_budget", "tags", "leap_t", "prompt", "leap_control"})
    e.set_defaults(func=_cmd_eval)


def _cmd_run(args) -> int:
    from .infer.runner import RunConfig, default_out, format_table, run

    cfg = from_args(RunConfig, args, args.config)
    if cfg.resume:  # the model's defaults as the run recorded them, not as this version has them
        saved = _saved_config(Path(cfg.out) if cfg.out else default_out(cfg))
        cfg = from_args(RunConfig, args, args.config, base={k: saved[k] for k in RunConfig.MODEL_DEFAULTS if k in saved})
    summary = run(cfg)
    print(format_table([summary]))
    print(f"\nresults: {summary['out']}/results.jsonl")
    return 0


def _saved_config(out: Path) -> dict:
    """The options a run directory recorded in config.yaml ({} when there is none or it is unreadable)."""
    import yaml

    try:
        data = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _cmd_eval(args) -> int:
    if args.run:
        from .infer.runner import RunConfig

        given = sorted(k for k in vars(args) if k in {f.name for f in dataclasses.fields(RunConfig)} - {"adapter"})
        if given or args.config:
            raise ConfigError(f"--run takes model, task and held-out set from the training run; it cannot be "
                             f"combined with {given or ['--config']} (use crosspath train-eval --run DIR ...)")
        return main(["train-eval", "--run", args.run] + (["--adapter", args.adapter] if "adapter" in args else []))
    args.method = "greedy"
    return _cmd_run(args)


def _cmd_analyze(args) -> int:
    from .infer.analysis import analyze

    print(analyze(args.run))
    return 0


def _cmd_compare(args) -> int:
    from .infer.analysis import compare

    print(compare(args.runs))
    return 0


def _cmd_models(args) -> int:
    from .models import list_models

    for name, desc, built in list_models():
        print(f"{name:16s} {'[cached] ' if built else ''}{desc}")
    print("\nAny Hugging Face id (e.g. Qwen/Qwen2.5-1.5B-Instruct) or local folder path also works.")
    return 0


def _cmd_tasks(args) -> int:
    from .tasks import list_tasks

    for name, desc in list_tasks():
        print(f"{name:24s} {desc}")
    return 0


def _cmd_recipes(args) -> int:
    from .recipes import describe

    print(describe(args.name))
    return 0


def _cmd_demo(args) -> int:
    from .infer.budget import path_budget
    from .infer.runner import RunConfig, format_table, make_generator, run

    common = dict(model=args.model, task="demo", limit=args.limit, paths=4, overwrite=True, batch_questions=4,
                  threads=args.threads, dtype=args.dtype)
    leap = RunConfig(method="leap", rounds=2, round_tokens=96, summary_tokens=32, answer_tokens=32, peers_k=2,
                     router="dispersed", out=f"{args.out}/leap", **common)
    budget = path_budget(leap)
    indep = RunConfig(method="independent", max_tokens=budget - leap.answer_tokens, answer_tokens=leap.answer_tokens,
                      out=f"{args.out}/independent", **common)
    print(f"crosspath demo: {args.model} on the shipped demo task, {args.limit} questions, N=4 paths, "
          f"equal per-path budget of {budget} tokens")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    gen = make_generator(leap)  # one model, loaded once, for both methods
    sums = [run(indep, generator=gen), run(leap, generator=gen)]
    print("\n" + format_table(sums))
    from .infer.analysis import analyze

    print("\nLeaP influence (answers of paths that read peers' summaries):\n" + analyze(f"{args.out}/leap"))
    print(f"\nrun directories: {args.out}/independent, {args.out}/leap")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crosspath", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"crosspath {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    a = sub.add_parser("analyze", help="LeaP influence analysis of a run directory")
    a.add_argument("run", help="run directory")
    a.set_defaults(func=_cmd_analyze)
    c = sub.add_parser("compare", help="put runs side by side (pass@1, cons@N, every aggregator, tokens, wall time)")
    c.add_argument("runs", nargs="+", help="run directories")
    c.set_defaults(func=_cmd_compare)
    m = sub.add_parser("models", help="list known model names")
    m.set_defaults(func=_cmd_models)
    t = sub.add_parser("tasks", help="list task forms")
    t.set_defaults(func=_cmd_tasks)
    r = sub.add_parser("recipes", help="the papers' settings shipped as config files (use: --config NAME)")
    r.add_argument("name", nargs="?", help="a recipe: print its command, a dry run (no weights) and its file")
    r.set_defaults(func=_cmd_recipes)
    d = sub.add_parser("demo", help="LeaP next to independent sampling on the embedded default (the README's main job)")
    d.add_argument("--model", default="smollm2-135m", help="model (default: smollm2-135m)")
    d.add_argument("--limit", type=int, default=12, help="questions of the demo task (default: 12)")
    d.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; on a shared machine 1 is often faster)")
    d.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights dtype (default: auto, see `crosspath run --help`: bfloat16 on CUDA and on CPUs with "
                        "bf16 instructions, else float32)")
    d.add_argument("--out", default="runs/demo", help="parent folder of the two run directories (default: runs/demo)")
    d.set_defaults(func=_cmd_demo)
    for extra in ("train", "distill", "serve", "report"):
        try:
            mod = __import__(f"crosspath.{_EXTRA[extra]}", fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub)
    return parser


_EXTRA = {"train": "train.cli", "distill": "distill.cli", "serve": "serve.cli", "report": "report.cli"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except CrosspathError as e:  # a bad option, input, model, run directory or server: the message says which
        print(f"crosspath: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileExistsError, FileNotFoundError) as e:  # raised by code that predates CrosspathError
        print(f"crosspath: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
