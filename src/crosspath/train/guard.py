"""The NaN guard: a trainer stops at the first non-finite number, and never saves one.

"Finite" here means what training needs: no NaN/inf, no weight too large to square in its dtype,
and finite logits on a probe prompt.

    NonFiniteError                a FloatingPointError whose message names the step, the batch, the
                                  last checkpoint that is really finite, and how to go on from it
    check_finite(values, ...)     before the update: raise it when a loss / gradient norm is NaN/inf
    broken_parameters(model)      after the update (and before every save): the names of the
                                  trainable weights that hold a NaN/inf, or values too large to
                                  square in their dtype (> 1.8e19 in float32)
    nonfinite_output(model, ids)  after the update: does a forward on a probe prompt give NaN/inf
                                  logits? (finite weights of 1e15 are useless all the same)
    check_weights(model, ids, ...)  both, raising NonFiniteError (nothing of the step is saved)

A checkpoint is only written from weights that passed these checks, and a resume skips (and removes)
any checkpoint that does not pass them, so "the last finite checkpoint" is one that resumes.
"""

from __future__ import annotations

import math

import torch

GENERIC_RESUME = "resume from it with --resume, e.g. with a lower --lr or --max-grad-norm"


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or weight became NaN/inf; nothing of that step was saved."""


def advice(last_checkpoint, resume: str = GENERIC_RESUME, restart: str = "") -> str:
    """Where to go on from: the last finite checkpoint and how to resume it, or that there is none."""
    if last_checkpoint:
        return f"last finite checkpoint: {last_checkpoint}; {resume}"
    return "no checkpoint saved yet" + (f"; {restart}" if restart else "")


def check_finite(values: dict[str, float], step: int, batch: list[str], last_checkpoint,
                 resume: str = GENERIC_RESUME, restart: str = "",
                 consequence: str = "the update was not applied") -> None:
    """Raise NonFiniteError when any value is NaN/inf, naming the step, batch and checkpoint.

    Example: check_finite({"loss": float("nan")}, 7, ["q-1", "q-2"], Path("run/checkpoints/step-5"))
    -> NonFiniteError: non-finite loss=nan at step 7 (batch: q-1, q-2); the update was not applied;
       last finite checkpoint: run/checkpoints/step-5; resume from it with --resume, e.g. with a ...
    """
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if not bad:
        return
    what = ", ".join(f"{k}={v}" for k, v in bad.items())
    raise NonFiniteError(f"non-finite {what} at step {step} (batch: {_ids(batch)}); {consequence}; "
                         f"{advice(last_checkpoint, resume, restart)}")


def broken_parameters(model_or_params) -> list[str]:
    """Names of the trainable parameters holding a NaN or inf, or a value too large to be squared in
    their dtype (|w| > sqrt(max), 1.8e19 in float32): no trained weight gets there, and the next
    product of two such weights is inf (a list of tensors: their indices)."""
    if isinstance(model_or_params, torch.nn.Module):
        named = [(n, p) for n, p in model_or_params.named_parameters() if p.requires_grad]
    else:
        named = [(str(i), p) for i, p in enumerate(model_or_params)]
    bad = []
    with torch.no_grad():
        for n, p in named:
            limit = torch.finfo(p.dtype).max ** 0.5 if p.dtype.is_floating_point else math.inf
            if p.numel() and not bool((p.abs() <= limit).all()):  # False for NaN too
                bad.append(n)
    return bad


def nonfinite_output(model, input_ids: torch.Tensor) -> bool:
    """True when a forward of `input_ids` ([1, L]) gives a NaN/inf logit (eval mode, no gradient,
    no RNG drawn; the model's train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids, use_cache=False).logits  # [1, L, V]
    finally:
        model.train(was_training)
    return not bool(torch.isfinite(logits).all())


def _ids(batch: list[str]) -> str:
    return ", ".join(batch) if batch else "(empty)"


def check_weights(model, probe_ids: torch.Tensor, step: int, batch: list[str], last_checkpoint,
                  resume: str = GENERIC_RESUME, restart: str = "") -> None:
    """After an optimizer step: every trainable weight finite, and finite logits on `probe_ids`
    ([1, L]); else NonFiniteError naming the step, batch and last finite checkpoint."""
    names = broken_parameters(model)
    if not names and not nonfinite_output(model, probe_ids):
        return
    what = (f"made {len(names)} weight tensors non-finite or overflowing ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            if names else "made the model's output non-finite (NaN/inf logits on a probe prompt)")
    raise NonFiniteError(f"the update at step {step} (batch: {_ids(batch)}) {what}; "
                         f"nothing of step {step} was saved; {advice(last_checkpoint, resume, restart)}")
