"""`crosspath report RUN_DIR`: write one self-contained HTML report of a run directory."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Write one self-contained HTML file about a run directory. It works offline: CSS, a few lines of
JS and the plots (base64 PNG) are inline, and the page loads nothing from the network.

Inference run (results.jsonl, summary.json, config.yaml from `crosspath run`):
  summary metrics (pass@1, cons@N, pass@k, tokens/question, wall, tokens/s), the config,
  plots of accuracy vs tokens and of the per-round influence of peers' summaries, and per question
  the N paths side by side by round: round text, summary, whose summaries each path received
  (with similarity), intermediate answers with ✓/✗, answer changes after comments highlighted,
  and the final answer of each path.

Training run (metrics.jsonl, config.yaml, checkpoints/):
  reward, accuracy, KL, loss, completion length, eval accuracy (and any other logged number)
  against step, the latest values, the checkpoints, the newest samples file and the config.

The directory is only read, so a run that is still writing can be reported on. A line of
results.jsonl the report cannot use (not JSON, a field of the wrong type) is skipped with a warning
naming file:line and the field, and listed on the page. The page names the run directory by its
name only: it holds no absolute path of the machine it was made on.
"""

EPILOG = """\
examples:
  crosspath report runs/demo/leap                        -> runs/demo/leap/report.html
  crosspath report runs/grpo-chain_sum -o grpo.html
  crosspath report runs/big-run --max-questions 0        every question (a large file)
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="self-contained HTML report of an inference or training run directory",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (inference: results.jsonl; training: metrics.jsonl)")
    p.add_argument("-o", "--output", metavar="FILE", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--max-questions", type=int, default=50, metavar="N",
                   help="questions shown in full in the per-question section; the page notes the cap "
                        "(default: 50; 0 = all). Metrics and plots always cover every question.")
    p.add_argument("--title", help="page title (default: crosspath report: <run directory name>)")
    p.set_defaults(func=_cmd_report)
    return p


def _cmd_report(args) -> int:
    from .page import build_report

    def warn(message: str) -> None:  # a results line the report skipped: file:line, field
        print(f"crosspath report: warning: {message}", file=sys.stderr)

    out = build_report(args.run_dir, args.output, max_questions=args.max_questions, title=args.title, warn=warn)
    print(f"report: {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
