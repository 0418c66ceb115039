"""GRPO math: group advantages, the k3 KL estimator, the policy losses and token log-probs.

Pure tensor functions, no model code. Shapes: B = completions in the batch (questions x group size,
prompt-major: rows [0, G) belong to question 0), G = group size, T = completion length.

    A_i      = (r_i - mean(r_group)) / (std(r) + eps)          one advantage per completion
    ratio_t  = exp(logp_t - old_logp_t)                        == 1 on-policy (old = logp.detach())
    obj_t    = min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)   (clip only if asked)
             - beta * KL_k3(ref || policy)_t
    loss     = - aggregate_t(obj_t)   (grpo | dr_grpo | dapo | bnpo, see `policy_loss`)

With one optimiser step per rollout batch the ratio is exactly 1 but its gradient is
d ratio / d logp = 1, so d loss / d logp_t = -A / n_tokens: a positive advantage pushes the sampled
token's log-probability up. This is the REINFORCE gradient GRPO reduces to on-policy.
"""

from __future__ import annotations

import torch

from crosspath.train import LOSS_TYPES, SCALES  # the choices live with TrainConfig (importable without torch)


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages, one per completion.

    rewards: [B*G] (prompt-major) or [B, G]. Returns [B*G] float.
    scale = "group": divide by the group's std; "batch": by the std of all rewards in the batch
    (Dr. GRPO / "batch" scaling in TRL); "none": only subtract the group mean.
    The std is torch.std's default, the unbiased (n - 1) estimate, as in the GRPO reference code
    and TRL. A group whose rewards are all equal gets advantages of exactly 0.

    Example (G = 2):
        >>> group_advantages(torch.tensor([1., 0., 1., 1.]), 2)
        tensor([ 0.7070, -0.7070,  0.0000,  0.0000])

    (group 0: mean 0.5, unbiased std 0.7071 -> +-0.5 / 0.7072; group 1 all equal -> 0.)
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    r = rewards.reshape(-1, group_size).float()  # [B, G]
    centered = r - r.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "none":
        return centered.reshape(-1)  # [B*G]
    if scale == "group":
        std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(r)  # [B, 1]
    else:
        std = r.std() if r.numel() > 1 else r.new_zeros(())  # []
    return (centered / (std + eps)).reshape(-1)  # [B*G]


def filter_groups(rewards: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """Balanced online difficulty filtering: keep the questions whose rewards are not all equal.

    rewards: [B, G] (or [B*G] with group_size). Returns bool [B]; a group that is all right or all
    wrong has zero advantage everywhere and only adds KL/noise to the step.

    Example:
        >>> filter_groups(torch.tensor([[1., 0.], [1., 1.], [0., 0.]]))
        tensor([ True, False, False])
    """
    r = rewards if group_size is None else rewards.reshape(-1, group_size)  # [B, G]
    return r.amax(dim=1) != r.amin(dim=1)  # [B]


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || ref): exp(ref - logp) - (ref - logp) - 1 >= 0.

    logp, ref_logp: [B, T] log-probs of the sampled tokens. Returns [B, T]; 0 where they agree.

    Example:
        >>> kl_k3(torch.tensor([[0.0]]), torch.tensor([[-1.0]]))   # e^-1 + 1 - 1
        tensor([[0.3679]])
    """
    d = ref_logp - logp  # [B, T]
    return torch.exp(d) - d - 1  # [B, T]


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "grpo",
    beta: float = 0.0,
    epsilon: float | None = None,
    epsilon_high: float | None = None,
    max_completion_length: int | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
    num_sequences: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO-family loss for one (micro-)batch. Returns (scalar loss to minimise, stats).

    logp:      [B, T] log-probs of the sampled tokens under the current policy (with grad)
    old_logp:  [B, T] or None -> logp.detach() (on-policy: ratio 1, gradient of REINFORCE)
    ref_logp:  [B, T] or None; the KL term is used when beta > 0 and ref_logp is given
    advantages:[B]    one per completion (from `group_advantages`)
    mask:      [B, T] 1 for completion tokens that count (up to and including EOS)
    epsilon / epsilon_high: PPO clip range [1 - epsilon, 1 + epsilon_high] (epsilon_high defaults
        to epsilon); None = no clipping (exact on-policy GRPO needs none).

    Aggregation of the per-token loss l_t = -obj_t:
      grpo:    mean over each sequence's active tokens, then mean over sequences
               (divide by `num_sequences` instead of B when micro-batching);
      dr_grpo: sum of all active tokens / (num_sequences or B) / max_completion_length (default T),
               a constant, so long and short answers weigh the same per token;
      dapo, bnpo: sum of all active tokens / number of active tokens. In TRL, dapo normalises by the
               active tokens of the whole global batch (all processes, all accumulation steps) and
               bnpo by those of the local batch; here both divide by `num_items_in_batch` when given
               (pass the global active-token count and micro-batches add up to exactly the
               gradient of one big batch), else by the tokens passed in.

    Stats (floats): kl (mean k3 over active tokens, 0 without ref), clip_frac (share of active
    tokens whose clipped term was the one taken), ratio (mean ratio over active tokens).

    Example (on-policy, B = 2, T = 2):
        logp = [[-1, -1], [-2, -2]], advantages = [1, -1], mask = [[1, 1], [1, 0]]
        grpo:    -(mean(1, 1) + mean(-1)) / 2         = 0
        dapo:    -(1 + 1 - 1) / 3                     = -1/3
        dr_grpo: -(1 + 1 - 1) / (2 * 2)               = -1/4
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    mask = mask.to(logp.dtype)  # [B, T]
    old = logp.detach() if old_logp is None else old_logp  # [B, T]
    adv = advantages.to(logp.dtype).unsqueeze(1)  # [B, 1]

    ratio = torch.exp(logp - old)  # [B, T]
    obj = ratio * adv  # [B, T]
    clipped_taken = torch.zeros_like(mask, dtype=torch.bool)  # [B, T]
    if epsilon is not None:
        high = epsilon if epsilon_high is None else epsilon_high
        obj_clipped = torch.clamp(ratio, 1 - epsilon, 1 + high) * adv  # [B, T]
        clipped_taken = obj_clipped < obj  # [B, T] the min picked the clipped term
        obj = torch.minimum(obj, obj_clipped)  # [B, T]
    kl = None
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)  # [B, T]
        if beta > 0:
            obj = obj - beta * kl  # [B, T]
    per_token = -obj * mask  # [B, T]

    n_seq = logp.shape[0] if num_sequences is None else num_sequences
    if loss_type == "grpo":
        per_seq = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B]
        loss = per_seq.sum() / n_seq  # []
    elif loss_type == "dr_grpo":
        length = logp.shape[1] if max_completion_length is None else max_completion_length
        loss = per_token.sum() / (n_seq * length)  # []
    else:  # dapo, bnpo
        n_tok = mask.sum().clamp(min=1.0) if num_items_in_batch is None else num_items_in_batch
        loss = per_token.sum() / n_tok  # []

    with torch.no_grad():
        n_active = mask.sum().clamp(min=1.0)  # []
        stats = {
            "kl": float((kl * mask).sum() / n_active) if kl is not None else 0.0,
            "clip_frac": float((clipped_taken.to(mask.dtype) * mask).sum() / n_active),
            "ratio": float((ratio * mask).sum() / n_active),
        }
    return loss, stats


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(logits / temperature)[target], one row at a time to bound memory.

    logits: [B, T, V] (any float dtype), targets: [B, T] int. Returns [B, T] float32.
    Only one row's [T, V] float32 copy lives at a time, instead of a full [B, T, V] log_softmax.

    Example:
        >>> token_logprobs(torch.tensor([[[0.0, 0.0]]]), torch.tensor([[1]]))   # log(1/2)
        tensor([[-0.6931]])
    """
    out = []
    for row_logits, row_targets in zip(logits, targets):  # [T, V], [T]
        row = row_logits.float() / temperature  # [T, V]
        picked = row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)  # [T]
        out.append(picked - torch.logsumexp(row, dim=-1))  # [T]
    return torch.stack(out)  # [B, T]
