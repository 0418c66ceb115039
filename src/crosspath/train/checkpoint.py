"""Checkpoints: everything a trainer needs to go on exactly where it stopped, written atomically.

    save_checkpoint(run, step, model, optimizer, scheduler, state)   checkpoints/step-N/
    load_checkpoint(folder, model, optimizer, scheduler)             -> trainer_state.json
    load_latest_finite(run_dir, model, ..., probe_ids)               the newest that passes the NaN guard
    list_checkpoints(run_dir) / latest_checkpoint(run_dir)           complete ones, oldest first / newest
    save_final(out, model, tokenizer)                                <out>/final: the last adapter + tokenizer

A checkpoint folder `checkpoints/step-N/` holds

    adapter/             peft `save_pretrained` (adapter_config.json + adapter_model.safetensors)
    optimizer.pt         optimizer.state_dict()
    scheduler.pt         scheduler.state_dict()
    rng-rank<R>.pt       python / numpy / torch / cuda RNG states of every rank
    trainer_state.json   {"step": N, ...the trainer's own state, e.g. the data position}
    extra.pt             (optional) larger state of the trainer, e.g. SPO's per-question trackers

and only ever appears complete: everything is written into `checkpoints/.tmp-step-N/` and the folder
is renamed at the end (a rename is atomic on one filesystem), so a kill leaves either the whole
checkpoint or none; stale `.tmp-*` folders are removed by the next save. Weights holding a NaN or
inf are never saved (crosspath.train.guard).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .distributed import barrier
from .guard import NonFiniteError, nonfinite_output, broken_parameters
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
                    rank: int = 0, keep: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write checkpoints/step-N/ atomically (all ranks call it; rank 0 writes all but its RNG).
    `extra` (plain python values) goes to extra.pt; load_checkpoint returns it as state["extra"].

    Deletes the oldest complete checkpoints beyond `keep` (None or <= 0: keep all). Refuses
    (NonFiniteError, nothing written) when a trainable weight holds a NaN/inf or overflows when
    squared (crosspath.train.guard.broken_parameters).
    """
    bad = broken_parameters(model)
    if bad:
        raise NonFiniteError(f"not saving checkpoint step-{step}: {len(bad)} weight tensors hold NaN/inf or overflowing values "
                             f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
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
        if extra is not None:
            torch.save(extra, tmp / "extra.pt")
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
    state = json.loads((folder / STATE_FILE).read_text())
    if (folder / "extra.pt").exists():
        state["extra"] = torch.load(folder / "extra.pt")
    return state


def load_latest_finite(run_dir: str | Path, model, optimizer, scheduler, probe_ids: torch.Tensor,
                       rank: int = 0) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest checkpoint whose weights are finite and give finite logits on `probe_ids`
    ([1, L]); returns (folder, trainer_state) or None when the run has no checkpoint. A checkpoint
    that fails (written before the guard existed) is removed with a warning, and the one before it
    tried; NonFiniteError when none passes."""
    found = list_checkpoints(run_dir)
    for ckpt in reversed(found):
        state = load_checkpoint(ckpt, model, optimizer, scheduler, rank)
        if not broken_parameters(model) and not nonfinite_output(model, probe_ids):
            return ckpt, state
        warnings.warn(f"{ckpt} holds non-finite weights (or they give NaN/inf logits): removing it", stacklevel=2)
        barrier()
        if rank == 0:
            shutil.rmtree(ckpt, ignore_errors=True)
    if found:
        raise NonFiniteError(f"no checkpoint in {run_dir} holds finite weights: start again with --overwrite")
    return None


def save_final(out: Path, model, tokenizer, main: bool = True) -> None:
    """The adapter (+ tokenizer) in <out>/final, for `crosspath eval --adapter`; written into
    <out>/.tmp-final and renamed, like a checkpoint."""
    if main:
        tmp, final = Path(out) / ".tmp-final", Path(out) / "final"
        shutil.rmtree(tmp, ignore_errors=True)
        save_weights(model, tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    barrier()
