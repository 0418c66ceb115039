"""Small HTML pieces shared by the report's sections.

Every piece of text that comes from a run (model output, questions, answers, config values, file
names) goes through `esc` before it reaches the page: model output must never become markup.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable

SECRET_WORDS = ("api_key", "apikey", "token_secret", "password", "secret", "hf_token", "authorization")


def esc(x: Any) -> str:
    """Text -> HTML-safe text (quotes too, so it is safe inside attribute values as well).

    >>> esc('<script>alert("x")</script>')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
    """
    return html.escape("" if x is None else str(x), quote=True)


def fmt(x: Any, digits: int = 3) -> str:
    """A number or value as short plain text (not escaped)."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.{digits}f}" if x == 0 or 1e-3 <= abs(x) < 1e6 else f"{x:.3g}"
    if isinstance(x, (list, dict)) or x == "":
        return json.dumps(x, ensure_ascii=False)
    return str(x)


def mark(ok: Any) -> str:
    """✓ / ✗ for a correctness flag; a grey dot when there is none."""
    if ok is None:
        return '<span class="mark na" title="not graded">·</span>'
    if ok:
        return '<span class="mark ok" title="correct">✓</span>'
    return '<span class="mark bad" title="wrong">✗</span>'


def answer(a: Any) -> str:
    """An extracted answer as inline code; a dash when there is none."""
    return '<span class="none">none</span>' if a is None or a == "" else f"<code>{esc(a)}</code>"


def redact(cfg: Any) -> Any:
    """A config with secret-looking values replaced (a report is meant to be shared)."""
    if isinstance(cfg, dict):
        return {k: ("***" if v and any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [redact(v) for v in cfg]
    return cfg


def strip_machine_paths(value: Any, run_dir: Path) -> Any:
    """`value` (a config, a summary) with the absolute paths of the machine it was made on made
    local (a report is shared): the run directory and what is in it by the directory's name, any
    other absolute path by its last part.

    >>> strip_machine_paths({"out": "/home/ann/runs/leap", "model": "/opt/m/tiny", "task": "gsm8k"},
    ...                     Path("/home/ann/runs/leap"))
    {'out': 'leap', 'model': '…/tiny', 'task': 'gsm8k'}
    """
    if isinstance(value, dict):
        return {k: strip_machine_paths(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_machine_paths(v, run_dir) for v in value]
    if not isinstance(value, str) or "\n" in value or len(value) > 4096:
        return value
    win = PureWindowsPath(value)
    if value.startswith("/"):
        path = PurePosixPath(os.path.normpath(value))
    elif win.drive and win.is_absolute():
        return f"…\\{win.name}"
    else:
        return value
    for root in {PurePosixPath(run_dir.absolute()), PurePosixPath(run_dir.resolve())}:
        if path == root or root in path.parents:
            return str(PurePosixPath(run_dir.name) / path.relative_to(root))
    return f"…/{path.name}"


def cards(items: Iterable[tuple[str, str]]) -> str:
    """A row of headline numbers: (label, value) pairs, both plain text (escaped here)."""
    body = "".join(f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
                   for k, v in items)
    return f'<div class="cards">{body}</div>'


def config_table(cfg: dict | None) -> str:
    if not cfg:
        return '<p class="note">no config recorded</p>'
    items = "".join(f"<div><dt>{esc(k)}</dt><dd><code>{esc(fmt(v))}</code></dd></div>" for k, v in redact(cfg).items())
    return f'<dl class="cfg">{items}</dl>'


def figure(uri: str | None, caption: str) -> str:
    if not uri:
        return ""
    return (f'<figure><img src="{esc(uri)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def details(label: str, body_html: str, cls: str = "", open_: bool = False) -> str:
    """A collapsible block; `label` is escaped, `body_html` is HTML already."""
    return (f'<details class="{cls}"{" open" if open_ else ""}><summary>{esc(label)}</summary>'
            f"{body_html}</details>")


def pre(text: Any) -> str:
    return f"<pre>{esc(text)}</pre>"
