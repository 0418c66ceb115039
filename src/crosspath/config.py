"""Config dataclasses <-> command-line flags <-> YAML, and the checks every option goes through.

Each config is a dataclass whose fields carry their help text in `metadata["help"]` and, where it
applies, their allowed values: `choices=(...)` and bounds `ge=`, `gt=`, `le=`, `lt=` (for a list
option: bounds of each element). The CLI turns every field into a `--flag` (underscores become
dashes; dict fields take a JSON object), a YAML file given with `--config` sets defaults, and flags
given on the command line win over both (`--config` takes a file path or the name of a recipe
shipped in crosspath/configs/; `crosspath recipes` lists them). `from_args` and `check` test every value against the
field's type, choices and bounds before any work starts, so a flag and a YAML key are checked alike:

>>> from dataclasses import dataclass
>>> @dataclass
... class C:
...     paths: int = field(4, "reasoning paths", ge=1)
...     top_p: float = field(0.95, "nucleus sampling", gt=0, le=1)
>>> check(C(paths=0, top_p=1.5))
Traceback (most recent call last):
...
crosspath.config.ConfigError: invalid options:
  --paths 0: must be >= 1
  --top-p 1.5: must be > 0 and <= 1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import operator
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml

from .errors import CrosspathError

DTYPES = ("auto", "float32", "bfloat16", "float16")  # weights dtypes every local backend understands
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


class ConfigError(CrosspathError, ValueError):
    """An option with a wrong type or value, or a config file that cannot be read."""


def field(default: Any, help: str, **kw) -> Any:
    """A dataclass field with help text and optional checks: choices=(...), ge=, gt=, le=, lt=."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _describe(tp) -> tuple[bool, Any, Any]:
    """(optional, base, element) of an annotation: int | None -> (True, int, None);
    list[str] -> (False, list, str); dict | None -> (True, dict, None)."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if args else str
    origin = typing.get_origin(tp)
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return optional, list, args[0] if args else str
    if origin is dict:
        return optional, dict, None
    return optional, tp, None


def _base_type(tp):
    """int | None -> (int, None); tuple[int, ...] | None -> (list, int)."""
    return _describe(tp)[1:]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def bounds_text(meta: dict) -> str:
    """'>= 1', '> 0 and <= 1', '' (no bounds)."""
    return " and ".join(f"{sym} {meta[k]}" for k, sym in BOUNDS.items() if k in meta)


def json_dict(text: str) -> dict:
    """argparse type for options given as a JSON object, e.g. --task-options '{"max_terms": 3}'."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"max_terms\": 3}'")
    return value


# --- renamed options -----------------------------------------------------------------------------------
# A config class may declare `RENAMED: ClassVar[dict[str, str]] = {"old_name": "new_name"}`: the old flag
# and YAML key still work for one release, with a warning; a run's saved config.yaml with the old key is
# read silently, and `config_hash` hashes the old name, so the hashes of existing runs stay the same.


class DeprecatedOption(FutureWarning):
    """An option given under its old name (see RENAMED)."""


def renamed(cls) -> dict[str, str]:
    """{old name: new name} of a config class (empty for most)."""
    return dict(getattr(cls, "RENAMED", {}))


def upgrade_keys(cls, values: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """`values` with old option names mapped to the new ones; with `where` (a YAML file) each old
    name warns. Both names at once is a ConfigError."""
    out = dict(values)
    for old, new in renamed(cls).items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"{where or 'config'}: `{old}` is the old name of `{new}`; give only `{new}`")
        out[new] = out.pop(old)
        if where:
            warnings.warn(f"{where}: `{old}` is deprecated, use `{new}`", DeprecatedOption, stacklevel=3)
    return out


class _DeprecatedFlag(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated, use {flag(self.dest)}", DeprecatedOption, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser, cls, skip: set[str] = frozenset()) -> None:
    hints = typing.get_type_hints(cls)
    for old, new in renamed(cls).items():
        if new not in skip:  # a scalar option
            parser.add_argument(flag(old), dest=new, type=_base_type(hints[new])[0], action=_DeprecatedFlag,
                                default=argparse.SUPPRESS, metavar=new.upper(), help=f"deprecated alias of {flag(new)}")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, inner = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        notes = ([f"default: {default}"] if default not in (None, [], ()) else []) + (
            [model_notes(f.name)] if f.name in getattr(cls, "MODEL_DEFAULTS", ()) else []) + (
            [bounds_text(f.metadata)] if bounds_text(f.metadata) else [])
        help_ = f.metadata.get("help", "") + (f" ({'; '.join(notes)})" if notes else "")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if tp is bool:
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif tp is dict:
            parser.add_argument(flag(f.name), type=json_dict, metavar="JSON", **kw)
        elif tp is list:
            parser.add_argument(flag(f.name), nargs=f.metadata.get("nargs", "+"), type=inner, metavar=f.name.upper(), **kw)
        else:
            parser.add_argument(flag(f.name), type=tp, metavar=f.name.upper(), **kw)


def model_notes(name: str) -> str:
    """'with smollm2-135m or tiny-random: 96' for an option some known models set (see models.py)."""
    from .models import MODELS

    by_value: dict[Any, list[str]] = {}
    for m, spec in MODELS.items():
        if name in spec.defaults:
            by_value.setdefault(spec.defaults[name], []).append(m)
    return "; ".join(f"with {' or '.join(ms)}: {v}" for v, ms in by_value.items())


# --- checks ------------------------------------------------------------------------------------------

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               dict: "a mapping (JSON object)", list: "a list"}


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _type_ok(value: Any, tp) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, dict):
        return isinstance(value, tp)
    return True


def _value_problem(value: Any, tp, meta: dict) -> str | None:
    """Why a scalar value is not allowed (None when it is)."""
    if not _type_ok(value, tp):
        got = "null" if value is None else f"{type(value).__name__} {_show(value)}"
        return f"expected {_TYPE_NAMES.get(tp, getattr(tp, '__name__', str(tp)))}, got {got}"
    if tp is float and not math.isfinite(value):
        return "must be a finite number"
    if "choices" in meta and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}"
    ok = tp not in (int, float) or all(getattr(operator, k)(value, meta[k]) for k in BOUNDS if k in meta)
    return None if ok else f"must be {bounds_text(meta)}"


def invalid_options(cls, values: dict[str, Any], origin: dict[str, str] | None = None) -> list[str]:
    """One line per value of `values` that its field of `cls` does not allow: wrong type (a string
    for a list option included), not among its choices, out of its bounds. `origin` names where a
    value was set (a YAML file) for the message."""
    hints, fields = typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    out = []
    for name, value in values.items():
        if name not in fields:
            continue
        optional, tp, inner = _describe(hints[name])
        meta = fields[name].metadata
        if value is None and optional:
            continue
        if tp is list:
            if not isinstance(value, (list, tuple)):
                why = f"expected a list, got {'null' if value is None else type(value).__name__ + ' ' + _show(value)}"
            else:
                why = next((f"element {_show(v)}: {p}" for v in value if (p := _value_problem(v, inner, meta))), None)
        else:
            why = _value_problem(value, tp, meta)
        if why:
            where = f" (in {origin[name]})" if origin and name in origin else ""
            out.append(f"{flag(name)} {_show(value)}{where}: {why}")
    return out


def _raise(found: list[str]) -> None:
    if len(found) == 1:
        raise ConfigError(f"invalid option {found[0]}")
    if found:
        raise ConfigError("invalid options:\n" + "\n".join("  " + p for p in found))


def check(cfg) -> None:
    """Raise ConfigError naming every option of `cfg` whose value is not allowed."""
    _raise(invalid_options(type(cfg), {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}))


def build(cls, values: dict[str, Any], origin: dict[str, str] | None = None):
    """`cls(**values)` after checking every value (ConfigError names option, value and origin)."""
    _raise(invalid_options(cls, values, origin))
    return cls(**values)


# --- YAML ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `lr: 5e-5` (no dot) as a string; this loader reads it as the number it is."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_yaml(path: str | Path, cls=None) -> dict[str, Any]:
    """A YAML mapping from a file; errors name the file (and line). With `cls`, keys that are not
    fields of `cls` are an error too."""
    path = config_file(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        loaded = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        raise ConfigError(f"{where}: YAML syntax error: {what}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got a {type(loaded).__name__}")
    if cls is not None:
        loaded = upgrade_keys(cls, loaded, where=str(path))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(map(str, loaded)) - names
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    return loaded


def from_args(cls, args: argparse.Namespace, yaml_path: str | None = None, base: dict | None = None):
    """Defaults < the model's defaults (`apply_model_defaults`) < `base` (e.g. a run's saved
    config.yaml) < YAML file < flags given on the command line; every value is checked (see
    `invalid_options`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {k: v for k, v in upgrade_keys(cls, base or {}).items() if k in names}
    origin: dict[str, str] = {}
    if yaml_path:
        loaded = read_yaml(yaml_path, cls)
        values.update(loaded)
        origin.update({k: str(yaml_path) for k in loaded})
    flags = {k: v for k, v in vars(args).items() if k in names}
    values.update(flags)
    for k in flags:
        origin.pop(k, None)
    apply_model_defaults(cls, values, origin)
    return build(cls, values, origin)


def apply_model_defaults(cls, values: dict[str, Any], origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Fill in (in place) the options of `cls.MODEL_DEFAULTS` that `values` lacks with the defaults of
    the chosen model (`models.model_defaults`; e.g. the small embedded model's LeaP budgets). An option
    the user set, by flag, YAML file or saved config, is never changed."""
    from .models import model_defaults

    keys = getattr(cls, "MODEL_DEFAULTS", ())
    if not keys:
        return values
    model = values.get("model", next((f.default for f in dataclasses.fields(cls) if f.name == "model"), None))
    for k, v in model_defaults(str(model)).items():
        if k in keys and k not in values:
            values[k] = v
            if origin is not None:
                origin[k] = f"the defaults of model {model}"
    return values


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
    raise ConfigError(f"config file not found: {name!r} is neither a file nor a shipped recipe; recipes: {', '.join(names)} "
                            "(`crosspath recipes` describes them)")



SECRETS = ("api_key",)


def to_dict(cfg) -> dict[str, Any]:
    """The config as plain data; secrets (API keys) are never written out."""
    d = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return {k: ("***" if k in SECRETS and v else v) for k, v in d.items()}


def save_yaml(cfg, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_hash(cfg, ignore: set[str] = frozenset()) -> str:
    """A short hash of the options (renamed ones under their old name: hashes of existing runs stay)."""
    old = {new: o for o, new in renamed(type(cfg)).items()}
    d = {old.get(k, k): v for k, v in to_dict(cfg).items() if k not in ignore}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
