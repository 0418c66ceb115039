"""The optimizer side of a trainer: AdamW, the learning-rate schedule, gradient clipping.

    make_optimizer(params, lr, ...)        AdamW (bitsandbytes' 8-bit AdamW when asked and installed)
    make_scheduler(optimizer, total, w)    linear warmup over ceil(w * total) steps, then cosine to 0
    sync_scheduler_lr(optimizer, sched)    the optimizer's lr after a resume whose schedule changed
    set_peak_lr(optimizer, sched, lr)      ... or whose peak learning rate changed (--lr on --resume)
    clip_gradients(params, max_norm)       global grad-norm clipping; returns the norm before
"""

from __future__ import annotations

import math
import warnings

import torch


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


def set_peak_lr(optimizer, scheduler, lr: float) -> None:
    """A new peak learning rate for every group, at the schedule's current point (a resume with
    another --lr: the restored scheduler would otherwise go on from the saved peak)."""
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    sync_scheduler_lr(optimizer, scheduler)


def clip_gradients(params, max_norm: float) -> float:
    """Clip the global gradient norm to max_norm (<= 0: no clipping); returns the norm before."""
    limit = max_norm if max_norm and max_norm > 0 else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(list(params), limit))
