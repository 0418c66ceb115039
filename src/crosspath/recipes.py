"""Paper recipes: the papers' settings as YAML files shipped in crosspath/configs/.

    crosspath recipes              list them: name, command, what the paper reports
    crosspath recipes NAME         the exact command, a dry run (options parsed and checked; task,
                                   method, generator and budget resolved; no weights loaded) and the file
    crosspath run --config NAME    use one: every --config takes a recipe name or a file path

Each file starts with three comment lines, read here and shown by `crosspath recipes`:

    # <what it runs>
    # command: crosspath <subcommand> --config <name>
    # paper: <the number the paper reports>
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path

from .config import from_args

RECIPES_DIR = Path(__file__).parent / "configs"
# subcommand -> (module, config class)
COMMANDS = {
    "run": ("crosspath.infer.runner", "RunConfig"),
    "train": ("crosspath.train", "TrainConfig"),
    "distill generate": ("crosspath.distill.generate", "GenerateConfig"),
    "distill filter": ("crosspath.distill.filter", "FilterConfig"),
    "distill train": ("crosspath.distill", "QRConfig"),
    "distill leap-t": ("crosspath.distill.leap_t", "LeapTConfig"),
}
GENERATORS = {"hf": "crosspath.backends.hf.HFGenerator", "openai": "crosspath.backends.openai.OpenAIGenerator",
              "vllm": "crosspath.backends.vllm.VLLMGenerator"}


@dataclass
class Recipe:
    name: str
    path: Path
    title: str
    command: str  # the full command line, e.g. "crosspath run --config NAME"
    subcommand: str  # a key of COMMANDS
    paper: str


def list_recipes() -> list[Recipe]:
    return [read_recipe(p) for p in sorted(RECIPES_DIR.glob("*.yaml"))]


def read_recipe(path: Path) -> Recipe:
    head = [line[1:].strip() for line in path.read_text().splitlines()[:3] if line.startswith("#")]
    if len(head) < 3 or not head[1].startswith("command: crosspath ") or not head[2].startswith("paper:"):
        raise ValueError(f"{path.name}: the first three lines must be '# title', '# command: crosspath ...', "
                         "'# paper: ...'")
    command = head[1].removeprefix("command:").strip()
    sub = command.removeprefix("crosspath ").split(" --config")[0].strip()
    if sub not in COMMANDS:
        raise ValueError(f"{path.name}: unknown command {sub!r}; known: {sorted(COMMANDS)}")
    return Recipe(path.stem, path, head[0], command, sub, head[2].removeprefix("paper:").strip())


def find(name: str) -> Recipe:
    for r in list_recipes():
        if name in (r.name, r.path.name):
            return r
    raise FileNotFoundError(f"no recipe {name!r}; recipes: {', '.join(r.name for r in list_recipes())}")


def load(recipe: Recipe):
    """The recipe's config object, parsed exactly as `--config NAME` parses it (unknown keys fail)."""
    module, cls = COMMANDS[recipe.subcommand]
    return from_args(getattr(importlib.import_module(module), cls), argparse.Namespace(), str(recipe.path))


def dry_run(name: str) -> tuple[Recipe, object, list[tuple[str, str]]]:
    """(recipe, config, resolved facts): the run built as far as it goes without a model."""
    from .models import MODELS, resolve
    from .tasks.datasets import describe_task, has_splits

    recipe = find(name)
    cfg = load(recipe)
    _check_choices(cfg)
    facts: list[tuple[str, str]] = []

    def model(role: str, name: str) -> None:  # a known name, a hub id or a folder; never loads weights
        facts.append((role, name if name in MODELS or "/" in name else resolve(name)))

    def task(role: str, spec: str) -> None:
        facts.append((role, describe_task(spec)))

    if recipe.subcommand == "run":
        from .infer import budget
        from .infer.runner import _method

        c = copy.deepcopy(cfg)
        budget.resolve(c, log=lambda _: None)
        _method(c)
        model("model", c.model)
        task("task", c.task)
        facts += [("method", c.method), ("generator", GENERATORS[c.backend]),
                  ("per-path token budget", str(budget.path_budget(c)))]
    elif recipe.subcommand == "train":
        if has_splits(cfg.task) and cfg.split == cfg.eval_split:
            raise ValueError(f"{recipe.name}: split and eval_split are both {cfg.split!r}")
        model("model", cfg.model)
        task("task", cfg.task)
        facts += [("algorithm", cfg.algo), ("splits", f"train on {cfg.split!r}, hold out {cfg.eval_split!r}"
                                            if has_splits(cfg.task) else "one list (no splits)")]
    elif recipe.subcommand == "distill generate":
        model("teacher", cfg.teacher)
        task("task", cfg.task)
        facts.append(("generator", GENERATORS[cfg.backend]))
    elif recipe.subcommand == "distill filter":
        model("judge", cfg.judge)
        facts.append(("generator", GENERATORS[cfg.judge_backend]))
    elif recipe.subcommand == "distill train":
        for i, s in enumerate(cfg.students):
            model(f"student {i}", s)
        if cfg.encoder:
            model("router encoder", cfg.encoder)
        if cfg.eval_task:
            task("held-out task", cfg.eval_task)
    return recipe, cfg, facts


def _check_choices(cfg) -> None:
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) is not None and getattr(cfg, f.name) not in choices:  # None: unset
            raise ValueError(f"{f.name} = {getattr(cfg, f.name)!r}; choose one of {list(choices)}")


def describe(name: str | None = None) -> str:
    """Text of `crosspath recipes [NAME]`."""
    if name is None:
        lines = []
        for r in list_recipes():
            lines += [f"{r.name}", f"    {r.title}", f"    {r.command}", f"    paper: {r.paper}", ""]
        return "\n".join(lines) + "`crosspath recipes NAME` checks one without a model and prints its file."
    recipe, _, facts = dry_run(name)
    width = max(len(k) for k, _ in facts)
    return "\n".join([recipe.title, f"command: {recipe.command}", f"paper:   {recipe.paper}", "",
                      "dry run (no weights loaded):"] + [f"  {k:{width}s}  {v}" for k, v in facts]
                     + ["", f"file {recipe.path.name}:", recipe.path.read_text()])
