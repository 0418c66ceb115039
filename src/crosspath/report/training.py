"""The training part of a report: curves of metrics.jsonl against step, the latest numbers, the
checkpoints, the newest samples file and the config.

metrics.jsonl is read tolerantly: a line that does not parse (a run writing right now) is skipped,
any key may be missing, and every numeric key gets a panel (the known ones first).
"""

from __future__ import annotations

import re
from pathlib import Path

from .markup import cards, config_table, details, esc, figure, fmt, pre

SAMPLE_CHARS = 20_000  # of the newest samples file, shown collapsed


def _step_of(p: Path) -> int:
    m = re.search(r"(\d+)", p.name)
    return int(m.group(1)) if m else -1


def _last(metrics: list[dict], key: str):
    for m in reversed(metrics):
        if m.get(key) is not None:
            return m[key]
    return None


def summary_block(metrics: list[dict]) -> str:
    steps = [m["step"] for m in metrics if isinstance(m.get("step"), (int, float))]
    evals = [m["eval_accuracy"] for m in metrics if isinstance(m.get("eval_accuracy"), (int, float))]
    secs = [m["step_seconds"] for m in metrics if isinstance(m.get("step_seconds"), (int, float))]
    items = [("last step", fmt(max(steps) if steps else None)), ("metrics lines", fmt(len(metrics)))]
    for key in ("reward_mean", "accuracy", "kl", "loss", "completion_length", "filtered_frac", "filtered_fraction"):
        v = _last(metrics, key)
        if v is not None:
            items.append((f"last {key}", fmt(v, 4)))
    if evals:
        items += [("first eval_accuracy", fmt(evals[0], 4)), ("last eval_accuracy", fmt(evals[-1], 4)),
                  ("best eval_accuracy", fmt(max(evals), 4))]
    if secs:
        items += [("mean step seconds", fmt(sum(secs) / len(secs), 2)), ("training seconds", fmt(sum(secs), 1))]
    return cards(items)


def files_block(run_dir: Path) -> str:
    parts = []
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir():
        steps = sorted((p for p in ckpt.iterdir() if p.is_dir() and re.fullmatch(r"step-\d+", p.name)), key=_step_of)
        names = ", ".join(f"<code>{esc(p.name)}</code>" for p in steps) or '<span class="none">none yet</span>'
        parts.append(f"<p>checkpoints/: {names}</p>")
    samples = run_dir / "samples"
    if samples.is_dir():
        files = sorted((p for p in samples.rglob("*") if p.is_file()), key=lambda p: (_step_of(p), p.name))
        parts.append(f"<p>samples/: {len(files)} file{'' if len(files) == 1 else 's'}</p>")
        if files:
            text = files[-1].read_text(errors="replace")
            cut = f"\n… ({len(text) - SAMPLE_CHARS} more characters)" if len(text) > SAMPLE_CHARS else ""
            parts.append(details(f"newest samples file: {files[-1].relative_to(run_dir)}", pre(text[:SAMPLE_CHARS] + cut),
                                 cls="text"))
    return "".join(parts) or '<p class="note">no checkpoints/ or samples/ yet</p>'


def section(run_dir: Path, metrics: list[dict], config: dict | None, config_text: str | None) -> str:
    from . import plots

    curves = plots.training_curves(metrics)
    left = plots.training_keys(metrics)[plots.MAX_PANELS:]
    more = (f'<p class="note">Not plotted ({len(left)} more logged numbers): {esc(", ".join(left))}</p>'
            if left else "")
    cfg = config_table(config) if isinstance(config, dict) else (pre(config_text) if config_text else config_table(None))
    return ('<section id="training"><h2>Training</h2>' + summary_block(metrics)
            + ('<div class="figs">' + figure(curves, "training curves vs step") + "</div>" + more if curves else
               '<p class="note">metrics.jsonl holds no numeric values yet</p>')
            + '</section><section id="files"><h2>Checkpoints and samples</h2>' + files_block(run_dir)
            + '</section><section id="config"><h2>Config</h2>' + cfg + "</section>")
