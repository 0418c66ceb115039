"""Config dataclasses <-> command-line flags <-> YAML.

Each config is a dataclass whose fields carry their help text in `metadata["help"]`; the CLI
turns every field into a `--flag` (underscores become dashes; dict fields take a JSON object), a
YAML file given with `--config` sets defaults, and flags given on the command line win over both.
`--config` takes a file path or the name of a recipe shipped in crosspath/configs/
(`crosspath recipes` lists them).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import yaml


def field(default: Any, help: str, **kw) -> Any:
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _base_type(tp):
    """int | None -> int; tuple[int, ...] | None -> (list, int)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else [tp]
    tp = args[0] if args else str
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return list, inner
    return tp, None


def json_dict(text: str) -> dict:
    """argparse type for options given as a JSON object, e.g. --task-options '{"max_terms": 3}'."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"max_terms\": 3}'")
    return value


def add_arguments(parser: argparse.ArgumentParser, cls, skip: set[str] = frozenset()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, inner = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f.metadata.get("help", "") + (f" (default: {default})" if default not in (None, [], ()) else "")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif tp is dict or typing.get_origin(tp) is dict:
            parser.add_argument(flag, type=json_dict, metavar="JSON", **kw)
        elif tp is list:
            parser.add_argument(flag, nargs=f.metadata.get("nargs", "+"), type=inner, metavar=f.name.upper(), **kw)
        else:
            parser.add_argument(flag, type=tp, metavar=f.name.upper(), **kw)


def from_args(cls, args: argparse.Namespace, yaml_path: str | None = None):
    """Defaults < YAML file < flags given on the command line."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if yaml_path:
        loaded = yaml.safe_load(config_file(yaml_path).read_text()) or {}
        unknown = set(loaded) - names
        if unknown:
            raise ValueError(f"{yaml_path}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k in names})
    return cls(**values)


def config_file(name: str) -> Path:
    """A --config value as a file: an existing path, else a recipe shipped in crosspath/configs/
    (by name, with or without .yaml)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = Path(__file__).parent / "configs"
    for candidate in (shipped / name, shipped / f"{name}.yaml"):
        if candidate.is_file() and candidate.parent == shipped:
            return candidate
    names = sorted(p.stem for p in shipped.glob("*.yaml"))
    raise FileNotFoundError(f"config {name!r} is neither a file nor a shipped recipe; recipes: {', '.join(names)} "
                            "(`crosspath recipes` describes them)")


SECRETS = ("api_key",)


def to_dict(cfg) -> dict[str, Any]:
    """The config as plain data; secrets (API keys) are never written out."""
    d = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return {k: ("***" if k in SECRETS and v else v) for k, v in d.items()}


def save_yaml(cfg, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_hash(cfg, ignore: set[str] = frozenset()) -> str:
    d = {k: v for k, v in to_dict(cfg).items() if k not in ignore}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
