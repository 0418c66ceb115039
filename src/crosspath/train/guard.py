"""The NaN guard: a trainer stops at the first non-finite number instead of training on garbage.

    NonFiniteError              a FloatingPointError whose message names the step, the batch and
                                the last good checkpoint, and how to go on from it
    check_finite(values, ...)   raise it when a loss / gradient norm is NaN or inf (before the update)
"""

from __future__ import annotations

import math


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
