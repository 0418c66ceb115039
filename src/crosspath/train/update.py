"""One pass of the policy-gradient loss over a rollout batch's micro-batches (gradients accumulate).

The trainer's `update` runs `backward_pass` num_iterations times per step, then all-reduces the
gradients, clips and steps the optimizer. Per micro-batch c (rows `chunks[c]` of the rollout: the
trainer leaves out the rows whose advantage is 0 when there is no KL or entropy term, as they add
exactly 0 to the loss and its gradient):

    ref_c   log-probs of the reference (the model with its adapter disabled), once per step, beta > 0
    logp_c  log-probs of the current policy on the sampled tokens          [rows_c, T_c]
    old_c   log-probs at the first iteration (num_iterations > 1), or the sampling policy's for rows
            sampled with a hint (Guide: pi(o | q) / pi_old(o | q, hint))
    loss_c  policy_loss(logp_c, old_c, ref_c, A[rows_c], mask_c), divided by the GLOBAL token and
            sequence counts, so the summed gradient over micro-batches and ranks is the full batch's
    mask_c  loss_mask: completion tokens, and for LeaP rollouts only the path's generated tokens
    diff_c  (engine rollouts, first iteration) |logp_c - the engine's sampling log-probs| on mask_c,
            unhinted rows: summed into `mismatch` [sum, max, tokens] (engine_rollout.mismatch_metrics)
"""

from __future__ import annotations

import torch

from crosspath.train.grpo import policy_loss
from crosspath.train.hints import behaviour_logprobs
from crosspath.train.leap_rollout import loss_mask, path_budget
from crosspath.train.rollout import Rollout, sequence_logprobs, trim


def backward_pass(model, cfg, rollout: Rollout, chunks: list[list[int]], advantages: torch.Tensor, *, refs: list,
                  olds: list, first: bool, n_tok: float, n_seq: int, eps: float | None,
                  hinted: torch.Tensor | None = None, mismatch: list[float] | None = None) -> list[float]:
    """loss.backward() on every micro-batch; fills refs (reference log-probs) and, on the first of
    several iterations, olds (detached log-probs) in place. Returns this rank's sums
    [loss, kl * tokens, clip_frac * tokens, entropy * tokens]."""
    replay = cfg.algo == "m3po"  # M3PO scores the recorded (blended) inputs, GRPO the plain ids
    budget = path_budget(cfg) if cfg.algo == "leap" else cfg.max_new_tokens
    sums = [0.0, 0.0, 0.0, 0.0]
    for c, rows_c in enumerate(chunks):
        mb = trim(rollout.select(rows_c))
        if cfg.beta > 0 and refs[c] is None:
            with torch.no_grad(), model.disable_adapter():
                refs[c] = sequence_logprobs(model, mb, use_recorded_embeds=replay and cfg.m3po_ref_replay,
                                            temperature=cfg.temperature)
        if cfg.entropy_coef > 0:
            logp, ent = sequence_logprobs(model, mb, use_recorded_embeds=replay, temperature=cfg.temperature,
                                          with_entropy=True)
        else:
            logp, ent = sequence_logprobs(model, mb, use_recorded_embeds=replay, temperature=cfg.temperature), None
        old = olds[c]
        if hinted is not None and bool(hinted[rows_c].any()):
            old = behaviour_logprobs(logp.detach() if old is None else old, mb.sampling_logprobs, hinted[rows_c])
        mask = loss_mask(mb)
        if mismatch is not None and first:
            keep = mask.bool() & (True if hinted is None else ~hinted[rows_c].to(mask.device)[:, None])  # [n, T]
            diff = (logp.detach() - mb.sampling_logprobs).abs()[keep]  # [tokens]
            if diff.numel():
                mismatch[:] = [mismatch[0] + float(diff.sum()), max(mismatch[1], float(diff.max())),
                               mismatch[2] + diff.numel()]
        loss, st = policy_loss(logp, old, refs[c], advantages[rows_c], mask, cfg.loss_type, cfg.beta, eps,
                               cfg.epsilon_high, max_completion_length=budget, num_items_in_batch=max(n_tok, 1.0),
                               num_sequences=max(int(n_seq), 1), importance_level=cfg.importance_level,
                               entropy=ent, entropy_coef=cfg.entropy_coef)
        loss.backward()
        if cfg.num_iterations > 1 and first:
            olds[c] = (logp if old is None else old).detach()
        active = float(mask.sum())
        sums = [sums[0] + loss.item(), sums[1] + st["kl"] * active, sums[2] + st["clip_frac"] * active,
                sums[3] + st["entropy"] * active]
    return sums
