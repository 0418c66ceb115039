"""What every trainer shares (GRPO/M3PO here, the distillation trainers too).

    setup_lora(model, r, alpha, dropout, targets)   peft LoRA on a loaded model; base weights frozen
    make_optimizer / make_scheduler / clip_gradients AdamW (8-bit when asked and installed),
                                                    linear warmup + cosine decay, grad-norm clipping
    RunDir(path)                                    config.yaml, metrics.jsonl (+ tensorboard),
                                                    samples/step-N.jsonl, checkpoints/step-N/
    save_checkpoint / load_checkpoint               adapter + optimizer + scheduler + RNG + state,
    latest_checkpoint(run_dir)                      written atomically (tmp dir, then rename)
    check_finite(...)                               the NaN/inf guard: NonFiniteError naming the
                                                    step, the batch and the last good checkpoint
    init_distributed / all_reduce_sum / all_reduce_grads / broadcast_params   torch.distributed

A checkpoint folder `checkpoints/step-N/` holds

    adapter/             peft `save_pretrained` (adapter_config.json + adapter_model.safetensors)
    optimizer.pt         optimizer.state_dict()
    scheduler.pt         scheduler.state_dict()
    rng-rank<R>.pt       python / numpy / torch / cuda RNG states of every rank
    trainer_state.json   {"step": N, ...the trainer's own state, e.g. the data position}

and only ever appears complete: everything is written into `checkpoints/.tmp-step-N/` and the folder
is renamed at the end (a rename is atomic on one filesystem), so a kill leaves either the whole
checkpoint or none; stale `.tmp-*` folders are removed by the next save.

Distributed: processes started by `torchrun` find RANK / WORLD_SIZE / LOCAL_RANK in the environment;
`init_distributed` joins the group (nccl on GPU, gloo on CPU). Trainers keep the LoRA weights equal on
every rank by starting from rank 0's (`broadcast_params`) and summing the gradients of losses that
are already divided by the global batch size (`all_reduce_grads`), so W ranks x B/W questions give
the gradient of 1 rank x B questions. Only rank 0 writes the run directory (each rank its RNG file).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


# --- model, optimiser, schedule -----------------------------------------------------------------


def setup_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0,
               target_modules: list[str] | str = "all-linear"):
    """Wrap a transformers model in a peft LoRA adapter; only the LoRA weights train.

    target_modules: "all-linear" (every linear layer but the output head, as in QLoRA/TRL) or
    module names such as ["q_proj", "v_proj"]. lora_B starts at zero, so the wrapped model
    computes exactly what the base model does until the first update.
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(target_modules, (list, tuple)) and list(target_modules) == ["all-linear"]:
        target_modules = "all-linear"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params, lr: float, betas=(0.9, 0.99), weight_decay: float = 0.1,
                   eight_bit: bool = False) -> torch.optim.Optimizer:
    """AdamW; bitsandbytes' 8-bit AdamW when `eight_bit` and bitsandbytes imports (else a warning
    and the plain one: 8-bit states only pay off on GPU for large adapters)."""
    params = list(params)
    if eight_bit:
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        except ImportError:
            warnings.warn("optim adamw_8bit needs bitsandbytes (pip install bitsandbytes); "
                          "using torch AdamW", stacklevel=2)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def make_scheduler(optimizer, total_steps: int, warmup_ratio: float = 0.1):
    """Linear warmup over ceil(warmup_ratio * total_steps) steps, then cosine decay to 0."""
    from transformers import get_cosine_schedule_with_warmup

    warmup = math.ceil(warmup_ratio * total_steps)
    return get_cosine_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


def sync_scheduler_lr(optimizer, scheduler) -> None:
    """Put the learning rate of the scheduler's current step into the optimizer (after a resume
    whose total steps changed, the restored optimizer still holds the old schedule's value)."""
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)


def clip_gradients(params, max_norm: float) -> float:
    """Clip the global gradient norm to max_norm (<= 0: no clipping); returns the norm before."""
    limit = max_norm if max_norm and max_norm > 0 else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(list(params), limit))


# --- distributed ----------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, else gloo).

    Device: `device` if given, else cuda:<LOCAL_RANK> when CUDA is available, else cpu.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local, device)


def _dist_on() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few floats over all ranks (identity in one process). float64, exact for counts."""
    if not _dist_on():
        return [float(v) for v in values]
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_grads(params) -> None:
    """Sum the gradients of `params` over all ranks in one flat buffer (missing grads count as 0)."""
    if not _dist_on():
        return
    import torch.distributed as dist

    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numel]
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def broadcast_params(params, src: int = 0) -> None:
    """Copy rank `src`'s values of `params` to every rank."""
    if not _dist_on():
        return
    import torch.distributed as dist

    for p in params:
        dist.broadcast(p.data, src)


def barrier() -> None:
    if _dist_on():
        import torch.distributed as dist

        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] (a one-element list in one process)."""
    if not _dist_on():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# --- RNG ------------------------------------------------------------------------------------------


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- NaN guard -------------------------------------------------------------------------------------


class NonFiniteError(FloatingPointError):
    """A loss or gradient norm became NaN/inf; the update was not applied."""


def check_finite(values: dict[str, float], step: int, batch: list[str], last_checkpoint) -> None:
    """Raise NonFiniteError when any value is NaN/inf, naming the step, batch and checkpoint.

    Example: check_finite({"loss": float("nan")}, 7, ["q-1", "q-2"], Path("run/checkpoints/step-5"))
    -> NonFiniteError: non-finite loss=nan at step 7 (batch: q-1, q-2); the update was not applied;
       last good checkpoint: run/checkpoints/step-5 (resume from it with --resume ...)
    """
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if not bad:
        return
    what = ", ".join(f"{k}={v}" for k, v in bad.items())
    ids = ", ".join(batch) if batch else "(empty)"
    where = (f"last good checkpoint: {last_checkpoint} (resume from it with --resume, e.g. with a "
             "lower --lr or --max-grad-norm)") if last_checkpoint else "no checkpoint saved yet"
    raise NonFiniteError(f"non-finite {what} at step {step} (batch: {ids}); the update was not "
                         f"applied; {where}")


# --- run directory -----------------------------------------------------------------------------------


class RunDir:
    """One training run's folder. Only the main process writes (main=False makes every call a no-op).

    config.yaml, metrics.jsonl (one JSON object per line, flushed at once), tb/ (tensorboard event
    files when tensorboard imports), samples/step-N.jsonl, checkpoints/step-N/ (see the module doc).
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

    def save_config(self, cfg) -> None:
        if self.main:
            from crosspath.config import save_yaml

            save_yaml(cfg, self.path / "config.yaml")

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
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break  # a half-written last line
        return rows

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


def save_weights(model, folder: Path) -> None:
    """A peft model saves its adapter only; a plain model its full weights."""
    model.save_pretrained(folder, safe_serialization=True)


def load_weights(model, folder: Path) -> None:
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    else:
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)


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
