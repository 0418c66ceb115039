"""A training run's folder, and the one process that writes it.

    <out>/config.yaml          the options of the run
    <out>/metrics.jsonl        one JSON object per step, flushed at once (+ tb/ tensorboard events)
    <out>/samples/step-N.jsonl some completions of step N (and eval-step-N.jsonl)
    <out>/checkpoints/step-N/  see crosspath.train.checkpoint

Only the main process writes (RunDir(main=False) makes every call a no-op), so every rank may call
the same methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..jsonl import read_jsonl

CHECKPOINTS = "checkpoints"


class RunDir:
    """One training run's folder. Only the main process writes (main=False makes every call a no-op).

    config.yaml, metrics.jsonl (one JSON object per line, flushed at once), tb/ (tensorboard event
    files when tensorboard imports), samples/step-N.jsonl, checkpoints/step-N/ (crosspath.train.checkpoint).
    """

    def __init__(self, path: str | Path, main: bool = True, tensorboard: bool = True):
        self.path = Path(path)
        self.main = main
        self.ckpt_dir = self.path / CHECKPOINTS
        self._writer = None
        if main:
            self.path.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._writer = SummaryWriter(str(self.path / "tb"))
                except Exception:  # tensorboard missing or broken: the JSONL log is enough
                    self._writer = None

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def save_config(self, cfg, **extra) -> None:
        """config.yaml: the options of `cfg`, then any `extra` keys (e.g. the trainer's `history`)."""
        if self.main:
            import yaml

            from crosspath.config import to_dict

            (self.path / "config.yaml").write_text(yaml.safe_dump({**to_dict(cfg), **extra}, sort_keys=False))

    def log(self, row: dict[str, Any]) -> None:
        """Append one metrics line (and its numeric fields to tensorboard under row["step"])."""
        if not self.main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        if self._writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._writer.add_scalar(f"train/{k}" if not k.startswith("eval") else f"eval/{k}",
                                            v, row.get("step", 0))
            self._writer.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path, skip_bad=True)  # a half-written last line is skipped

    def truncate_metrics(self, last_step: int) -> None:
        """Keep the lines of steps <= last_step (what was logged after the resumed checkpoint goes)."""
        if self.main and self.metrics_path.exists():
            rows = [r for r in self.read_metrics() if r.get("step", 0) <= last_step]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write_samples(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.main and rows:
            (self.path / "samples").mkdir(exist_ok=True)
            with open(self.path / "samples" / f"{name}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def sample_rows(step: int, problems: list, rollout, scored: list, groups, hinted, mask, limit: int) -> list[dict]:
    """samples/step-N.jsonl rows: the first `limit` completions of a step's first round, each with its
    group (the question's index in the step) and path (its index in the group) ids. mask: [N, T] the
    loss mask (a row's sum is the path's own tokens)."""
    rows, paths = [], {}
    for i, text in enumerate(rollout.texts[:limit]):
        q = int(groups[i])
        p, paths[q] = problems[q], paths.get(q, -1) + 1
        rows.append({"step": step, "group": q, "path": paths[q], "hinted": bool(hinted[i]), "id": p.id,
                     "question": p.question, "gold": p.answer, "text": text,
                     "reward": scored[i][0], "correct": scored[i][1], "markers": scored[i][2],
                     "tokens": int(mask[i].sum())})
    return rows
