"""Checkpoints: everything a trainer needs to go on exactly where it stopped, written atomically.

    save_checkpoint(run, step, model, optimizer, scheduler, state)   checkpoints/step-N/
    load_checkpoint(folder, model, optimizer, scheduler)             -> trainer_state.json
    list_checkpoints(run_dir) / latest_checkpoint(run_dir)           complete ones, oldest first / newest

A checkpoint folder `checkpoints/step-N/` holds

    adapter/             peft `save_pretrained` (adapter_config.json + adapter_model.safetensors)
    optimizer.pt         optimizer.state_dict()
    scheduler.pt         scheduler.state_dict()
    rng-rank<R>.pt       python / numpy / torch / cuda RNG states of every rank
    trainer_state.json   {"step": N, ...the trainer's own state, e.g. the data position}

and only ever appears complete: everything is written into `checkpoints/.tmp-step-N/` and the folder
is renamed at the end (a rename is atomic on one filesystem), so a kill leaves either the whole
checkpoint or none; stale `.tmp-*` folders are removed by the next save.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .distributed import barrier
from .lora import load_weights, save_weights
from .optim import sync_scheduler_lr
from .rng import rng_state, set_rng_state
from .rundir import CHECKPOINTS, RunDir

STATE_FILE = "trainer_state.json"


def _complete(folder: Path) -> bool:
    return folder.is_dir() and (folder / STATE_FILE).exists()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.name[5:].isdigit() and _complete(p)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete `checkpoints/step-N/` of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run: RunDir, step: int, model, optimizer, scheduler, state: dict[str, Any],
                    rank: int = 0, keep: int | None = None) -> Path:
    """Write checkpoints/step-N/ atomically (all ranks call it; rank 0 writes all but its RNG).

    Deletes the oldest complete checkpoints beyond `keep` (None or <= 0: keep all).
    """
    final = run.ckpt_dir / f"step-{step}"
    tmp = run.ckpt_dir / f".tmp-step-{step}"
    if rank == 0:
        for stale in run.ckpt_dir.glob(".tmp-*") if run.ckpt_dir.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    barrier()
    if rank == 0:
        save_weights(model, tmp / "adapter")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "time": time.time(), **state}, indent=1))
        if final.exists():  # the same step saved again: swap, never leave a gap
            old = run.ckpt_dir / f".tmp-old-step-{step}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        if keep and keep > 0:
            for old in list_checkpoints(run.path)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(folder: Path, model, optimizer=None, scheduler=None, rank: int = 0) -> dict[str, Any]:
    """Restore what save_checkpoint wrote; returns trainer_state.json. A rank without its own RNG
    file (the world size changed) keeps its current RNG state."""
    folder = Path(folder)
    load_weights(model, folder / "adapter")
    device = next(model.parameters()).device
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt"))
        sync_scheduler_lr(optimizer, scheduler)
    rng = folder / f"rng-rank{rank}.pt"
    if rng.exists():
        set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((folder / STATE_FILE).read_text())
