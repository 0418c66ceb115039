"""GRPO math: group advantages, the k3 KL estimator, the policy losses and token log-probs.

Pure tensor functions, no model code. Shapes: B = completions in the batch (questions x group size,
prompt-major: rows [0, G) belong to question 0), G = group size, T = completion length. Groups of
unequal size (hinted re-samples join their question's group) pass a [B] tensor of group ids instead
of G.

    A_i      = (r_i - mean(r_group)) / (std(r) + eps)          one advantage per completion
    ratio_t  = exp(logp_t - old_logp_t)                        == 1 on-policy (old = logp.detach())
             (GSPO, importance_level="sequence": w_i = exp(mean_t(logp_t - old_logp_t)) for every t)
    obj_t    = min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)   (clip only if asked)
             (CISPO: sg(min(ratio_t, eps_high)) * A * logp_t)
             - beta * KL_k3(ref || policy)_t + entropy_coef * H_t
    loss     = - aggregate_t(obj_t)   (grpo | dr_grpo | dapo | bnpo | cispo, see `policy_loss`)

With one optimiser step per rollout batch the ratio is exactly 1 but its gradient is
d ratio / d logp = 1, so d loss / d logp_t = -A / n_tokens: a positive advantage pushes the sampled
token's log-probability up. This is the REINFORCE gradient GRPO reduces to on-policy.
"""

from __future__ import annotations

import torch

from crosspath.train import IMPORTANCE_LEVELS, LOSS_TYPES, SCALES  # noqa: F401  (the choices live with TrainConfig)

CISPO_EPSILON_HIGH = 5.0  # TRL's recommended epsilon_high for cispo (ScaleRL); used when none is given


def group_ids(n: int, group_size: int | torch.Tensor) -> torch.Tensor:
    """[n] long group index of every row: arange(n) // G for equal prompt-major groups, or the
    given ids. Example: group_ids(4, 2) -> tensor([0, 0, 1, 1])."""
    if isinstance(group_size, torch.Tensor):
        return group_size.long()
    return torch.arange(n) // group_size  # [n]


def group_stats(values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of each group (std 0 for a group of one).

    values: [N] float, ids: [N] long group ids 0..n-1 (any order, any sizes). Returns ([n], [n]).

    Example: values [1, 0, 5], ids [0, 0, 1] -> mean [0.5, 5], std [0.7071, 0]
    """
    ids = ids.to(values.device)
    v = values.float()  # [N]
    n = int(ids.max()) + 1 if ids.numel() else 0
    count = v.new_zeros(n).index_add_(0, ids, torch.ones_like(v))  # [n]
    mean = v.new_zeros(n).index_add_(0, ids, v) / count.clamp(min=1)  # [n]
    sq = v.new_zeros(n).index_add_(0, ids, (v - mean[ids]) ** 2)  # [n]
    std = (sq / (count - 1).clamp(min=1)).sqrt() * (count > 1)  # [n]
    return mean, std  # [n], [n]


def group_mean_std(values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`group_stats` broadcast back to the rows: ([N] mean of the row's group, [N] its std).

    Example: values [1, 0, 5], ids [0, 0, 1] -> mean [0.5, 0.5, 5], std [0.7071, 0.7071, 0]
    """
    mean, std = group_stats(values, ids)  # [n], [n]
    ids = ids.to(values.device)
    return mean[ids], std[ids]  # [N], [N]


def group_advantages(
    rewards: torch.Tensor, group_size: int | torch.Tensor, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages, one per completion.

    rewards: [B*G] (prompt-major) or [B, G]. Returns [B*G] float. group_size may instead be a [N]
    long tensor of group ids (groups of any size, in any order; see `group_mean_std`).
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
    if isinstance(group_size, torch.Tensor):
        flat = rewards.reshape(-1).float()  # [N]
        mean, std = group_mean_std(flat, group_size)  # [N], [N]
        if scale == "none":
            return flat - mean  # [N]
        if scale == "batch":
            std = flat.std() if flat.numel() > 1 else flat.new_zeros(())  # []
        return (flat - mean) / (std + eps)  # [N]
    r = rewards.reshape(-1, group_size).float()  # [B, G]
    centered = r - r.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "none":
        return centered.reshape(-1)  # [B*G]
    if scale == "group":
        std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(r)  # [B, 1]
    else:
        std = r.std() if r.numel() > 1 else r.new_zeros(())  # []
    return (centered / (std + eps)).reshape(-1)  # [B*G]


def filter_groups(rewards: torch.Tensor, group_size: int | torch.Tensor | None = None,
                  std_eps: float = 1e-6) -> torch.Tensor:
    """Balanced online difficulty filtering: keep the questions whose rewards vary.

    rewards: [B, G] (or [B*G] with group_size, an int or [B*G] group ids). Returns bool [B]: the
    group's unbiased reward std is above `std_eps`. A group that is all right or all wrong has zero
    advantage everywhere and only adds KL/noise to the step; the threshold (not an equality test)
    also drops groups of continuous rewards that differ only by floating-point noise, and a group
    of one (std 0).

    Example:
        >>> filter_groups(torch.tensor([[1., 0.], [1., 1.], [0., 0.], [0.5, 0.5 + 1e-7]]))
        tensor([ True, False, False, False])

    (the last group differs by one float32 ulp: std 8e-8, an equality test would keep it.)
    """
    if group_size is None:
        group_size = rewards.shape[1]
    flat = rewards.reshape(-1)  # [N]
    _, std = group_stats(flat, group_ids(flat.numel(), group_size))  # [B]
    return std > std_eps  # [B]


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || ref): exp(ref - logp) - (ref - logp) - 1 >= 0.

    logp, ref_logp: [B, T] log-probs of the sampled tokens. Returns [B, T]; 0 where they agree.

    Example:
        >>> kl_k3(torch.tensor([[0.0]]), torch.tensor([[-1.0]]))   # e^-1 + 1 - 1
        tensor([[0.3679]])
    """
    d = ref_logp - logp  # [B, T]
    return torch.exp(d) - d - 1  # [B, T]


def importance_ratio(logp: torch.Tensor, old: torch.Tensor, mask: torch.Tensor,
                     level: str = "token") -> torch.Tensor:
    """The importance ratio of each token, [B, T].

    token:    r_t = exp(logp_t - old_t)
    sequence: w_i = exp(sum_t m_t (logp_t - old_t) / max(sum_t m_t, 1)) = (pi(y|x) / pi_old(y|x))^(1/|y|),
              the same value at every token of completion i (GSPO; TRL importance_sampling_level=
              "sequence"); its gradient reaches every token of the completion.

    logp, old, mask: [B, T]. On-policy (old = logp.detach()) both are exactly 1.

    Example: logp - old = [[0.2, 0.0]], mask [[1, 1]] -> token [[1.2214, 1.0]], sequence [[1.1052, 1.1052]]
    """
    if level not in IMPORTANCE_LEVELS:
        raise ValueError(f"importance level must be one of {IMPORTANCE_LEVELS}, got {level!r}")
    log_ratio = logp - old  # [B, T]
    if level == "token":
        return torch.exp(log_ratio)  # [B, T]
    seq = (log_ratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1.0)  # [B, 1]
    return torch.exp(seq).expand_as(logp)  # [B, T]


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
    importance_level: str = "token",
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO-family loss for one (micro-)batch. Returns (scalar loss to minimise, stats).

    logp:      [B, T] log-probs of the sampled tokens under the current policy (with grad)
    old_logp:  [B, T] or None -> logp.detach() (on-policy: ratio 1, gradient of REINFORCE); rows
               sampled from another context (hinted re-samples) pass their behaviour log-probs
    ref_logp:  [B, T] or None; the KL term is used when beta > 0 and ref_logp is given
    advantages:[B]    one per completion (from `group_advantages`)
    mask:      [B, T] 1 for completion tokens that count (up to and including EOS)
    epsilon / epsilon_high: PPO clip range [1 - epsilon, 1 + epsilon_high] (epsilon_high defaults
        to epsilon); None = no clipping (exact on-policy GRPO needs none).
    importance_level: "token" or "sequence" (GSPO; see `importance_ratio`).
    entropy:   [B, T] or None, the policy's entropy at each position (with grad); with
               entropy_coef > 0 the objective gains + entropy_coef * H_t (an entropy bonus).

    Per-token objective: obj_t = min(r_t A, clip(r_t, 1 - eps, 1 + eps_high) A) - beta KL_t
    (+ entropy_coef H_t), except cispo: obj_t = sg(min(r_t, eps_high)) * A * logp_t - beta KL_t,
    a value clamp of the ratio from above only, with the gradient through logp, never cut off
    (TRL loss_type="cispo"; eps_high = epsilon_high, else epsilon, else CISPO_EPSILON_HIGH = 5.0,
    where TRL would fall back to epsilon = 0.2 and scale every token down).

    Aggregation of the per-token loss l_t = -obj_t:
      grpo:    mean over each sequence's active tokens, then mean over sequences
               (divide by `num_sequences` instead of B when micro-batching);
      dr_grpo: sum of all active tokens / (num_sequences or B) / max_completion_length (default T),
               a constant, so long and short answers weigh the same per token;
      dapo, bnpo, cispo: sum of all active tokens / number of active tokens. In TRL, dapo and cispo
               normalise by the active tokens of the whole global batch (all processes, all
               accumulation steps) and bnpo by those of the local batch; here all three divide by
               `num_items_in_batch` when given (pass the global active-token count and
               micro-batches add up to exactly the gradient of one big batch), else by the tokens
               passed in.

    Stats (floats): kl (mean k3 over active tokens, 0 without ref), clip_frac (share of active
    tokens whose clipped term was the one taken; cispo: ratio > eps_high and A > 0, TRL's
    cispo_clip_ratio), ratio (mean ratio over active tokens), entropy (mean over active tokens,
    0 without).

    Example (on-policy, B = 2, T = 2):
        logp = [[-1, -1], [-2, -2]], advantages = [1, -1], mask = [[1, 1], [1, 0]]
        grpo:    -(mean(1, 1) + mean(-1)) / 2         = 0
        dapo:    -(1 + 1 - 1) / 3                     = -1/3
        dr_grpo: -(1 + 1 - 1) / (2 * 2)               = -1/4
        cispo:   -(1*(-1) + 1*(-1) + (-1)*(-2)) / 3   = 0     (value of A * logp; gradient as dapo's)
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    mask = mask.to(logp.dtype)  # [B, T]
    old = logp.detach() if old_logp is None else old_logp  # [B, T]
    adv = advantages.to(logp.dtype).unsqueeze(1)  # [B, 1]

    ratio = importance_ratio(logp, old, mask, importance_level)  # [B, T]
    clipped_taken = torch.zeros_like(mask, dtype=torch.bool)  # [B, T]
    if loss_type == "cispo":
        high = next(e for e in (epsilon_high, epsilon, CISPO_EPSILON_HIGH) if e is not None)
        obj = torch.clamp(ratio, max=high).detach() * adv * logp  # [B, T]
        clipped_taken = (ratio > high) & (adv > 0)  # [B, T]
    else:
        obj = ratio * adv  # [B, T]
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
    if entropy is not None and entropy_coef > 0:
        obj = obj + entropy_coef * entropy  # [B, T]
    per_token = -obj * mask  # [B, T]

    n_seq = logp.shape[0] if num_sequences is None else num_sequences
    if loss_type == "grpo":
        per_seq = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B]
        loss = per_seq.sum() / n_seq  # []
    elif loss_type == "dr_grpo":
        length = logp.shape[1] if max_completion_length is None else max_completion_length
        loss = per_token.sum() / (n_seq * length)  # []
    else:  # dapo, bnpo, cispo
        n_tok = mask.sum().clamp(min=1.0) if num_items_in_batch is None else num_items_in_batch
        loss = per_token.sum() / n_tok  # []

    with torch.no_grad():
        n_active = mask.sum().clamp(min=1.0)  # []
        stats = {
            "kl": float((kl * mask).sum() / n_active) if kl is not None else 0.0,
            "clip_frac": float((clipped_taken.to(mask.dtype) * mask).sum() / n_active),
            "ratio": float((ratio * mask).sum() / n_active),
            "entropy": float((entropy * mask).sum() / n_active) if entropy is not None else 0.0,
        }
    return loss, stats


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits / temperature)[target], one row at a time to bound memory.

    logits: [B, T, V] (any float dtype), targets: [B, T] int. Returns [B, T] float32, and with
    `with_entropy` also the entropy -sum_v p_v log p_v of softmax(logits / temperature), [B, T].
    Only one row's [T, V] float32 copy lives at a time, instead of a full [B, T, V] log_softmax
    (with the entropy and a gradient, each row's [T, V] probabilities stay for the backward).

    Example:
        >>> token_logprobs(torch.tensor([[[0.0, 0.0]]]), torch.tensor([[1]]))   # log(1/2)
        tensor([[-0.6931]])
        >>> token_logprobs(torch.tensor([[[0.0, 0.0]]]), torch.tensor([[1]]), with_entropy=True)[1]  # log 2
        tensor([[0.6931]])
    """
    out, ents = [], []
    for row_logits, row_targets in zip(logits, targets):  # [T, V], [T]
        row = row_logits.float() / temperature  # [T, V]
        picked = row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)  # [T]
        norm = torch.logsumexp(row, dim=-1)  # [T]
        out.append(picked - norm)  # [T]
        if with_entropy:
            logp_all = row - norm.unsqueeze(-1)  # [T, V]
            ents.append(-(logp_all.exp() * logp_all).sum(-1))  # [T]
    if with_entropy:
        return torch.stack(out), torch.stack(ents)  # [B, T], [B, T]
    return torch.stack(out)  # [B, T]
