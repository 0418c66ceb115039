"""HTML run reports: `crosspath report RUN_DIR` -> one self-contained, offline HTML file.

    page.py       reads a run directory, picks its sections, wraps them in the page (CSS, JS, CSP)
    inference.py  summary metrics, influence, per-question paths side by side by round
    training.py   metrics.jsonl curves vs step, checkpoints, samples, config
    plots.py      matplotlib (Agg) figures as base64 PNG
    rows.py       results.jsonl line by line, type-checked: a bad line is skipped and reported
    markup.py     escaping, secrets and machine paths out of configs, small shared pieces
"""

from .page import build_report, render

__all__ = ["build_report", "render"]
