"""Shaping by group: SEED-GRPO scales a question's advantages by the semantic entropy of its answers;
GRPO-lambda adds a length penalty to the rewards of the groups that are already mostly right.

SEED-GRPO (arXiv 2505.12346; REFERENCE.md Part II §4):

    clusters C_1..C_K  the group's completions, grouped by equivalent final answer (no answer: alone)
    l_i                mean token log-prob of completion i under the sampling policy (temperature 1)
    log p(C_k)         logsumexp_{i in C_k} l_i - logsumexp_i l_i          (normalised over the group)
    SE(q)              -sum_k p(C_k) log p(C_k)                             in [0, log G]
    A^_i               A_i * f(alpha * SE(q) / SE_max),  SE_max = log G

The paper names f only as "linear, exponential or focal"; its code multiplies by 1 / (1 + alpha' SE)
with alpha' = 0.0417 / log G, which is f(x) = 1 / (1 + x) with alpha = 0.0417 (the default here;
the paper's text gives alpha = 0.02). At G = 8 that scale stays within [0.96, 1].

GRPO-lambda (arXiv 2505.18086; REFERENCE.md Part II §5), per group g of G completions:

    c_g                share of correct completions
    penalised          g is among the ceil(lambda * B) groups of the batch with the highest c_g
                       (ties by batch order) and c_g > min_ratio; the other groups keep 0/1 rewards
    r_i               += len_i  (Kimi 1.5): 0.5 - (L_i - L_min) / (L_max - L_min) if i is correct,
                       min(0, that) if not; 0 when every length is equal
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from crosspath.tasks.metrics import votes

from crosspath.train import SEED_SCALINGS  # noqa: E402,F401  (the choices live with TrainConfig)
SEED_ALPHA = 0.0417  # SEED-GRPO's code (alpha / log G per unit of entropy); the paper's text says 0.02


def answer_clusters(answers: Sequence[str | None], equiv: Callable[[str, str], bool] | None = None) -> list[int]:
    """Cluster index of each answer: equivalent answers share one (crosspath.tasks.votes with
    `equiv`, e.g. SameAnswer(problem)); a missing answer is a cluster of its own.

    Example:
        >>> answer_clusters(["3", "4", None, "3", None])
        [0, 1, 2, 0, 3]
    """
    out: list[int | None] = [None] * len(answers)
    groups = sorted(votes(answers, equiv), key=lambda g: g[1][0])  # in order of first appearance
    for k, (_, members) in enumerate(groups):
        for i in members:
            out[i] = k
    k = len(groups)
    for i, c in enumerate(out):
        if c is None:
            out[i], k = k, k + 1
    return out  # type: ignore[return-value]


def semantic_entropy(clusters: torch.Tensor, seq_logp: torch.Tensor) -> torch.Tensor:
    """SE = -sum_k p_k log p_k over the clusters of one group, p_k = the cluster's share of the
    group's (length-normalised) likelihood mass.

    clusters: [G] long cluster index per completion; seq_logp: [G] mean token log-prob per completion.
    Returns a scalar in [0, log K].

    Example:
        >>> semantic_entropy(torch.tensor([0, 0, 1, 1]), torch.zeros(4))    # two even clusters: log 2
        tensor(0.6931)
        >>> semantic_entropy(torch.tensor([0, 0, 0, 0]), torch.tensor([-1., -2., -3., -4.]))
        tensor(0.)
    """
    k = int(clusters.max()) + 1
    l = seq_logp.double()  # [G]
    per_cluster = torch.stack([torch.logsumexp(l[clusters == c], 0) for c in range(k)])  # [K]
    log_p = per_cluster - torch.logsumexp(l, 0)  # [K]
    return (-(log_p.exp() * log_p).sum()).clamp(min=0.0).float() + 0.0  # [] (+ 0.0: no -0.0)


def seed_scale(entropy: torch.Tensor, group_size: torch.Tensor | int, alpha: float = SEED_ALPHA,
               scaling: str = "reciprocal") -> torch.Tensor:
    """Advantage multiplier f(alpha * SE / log G) per group. entropy: [B]; group_size: [B] or int.

    reciprocal: 1 / (1 + x) (SEED-GRPO's code); linear: max(0, 1 - x); exponential: exp(-x).
    A group of one has SE_max = 0 and scale 1.

    Example:
        >>> seed_scale(torch.tensor([0.0, math.log(2), math.log(8)]), 8, alpha=1.0)
        tensor([1.0000, 0.7500, 0.5000])

    (x = SE / log 8 = 0, 1/3, 1.)
    """
    if scaling not in SEED_SCALINGS:
        raise ValueError(f"scaling must be one of {SEED_SCALINGS}, got {scaling!r}")
    g = torch.as_tensor(group_size, dtype=torch.float32).expand_as(entropy)  # [B]
    se_max = torch.log(g.clamp(min=1.0))  # [B]
    x = torch.where(se_max > 0, alpha * entropy / se_max.clamp(min=1e-12), torch.zeros_like(entropy))  # [B]
    if scaling == "reciprocal":
        return 1.0 / (1.0 + x)  # [B]
    if scaling == "linear":
        return (1.0 - x).clamp(min=0.0)  # [B]
    return torch.exp(-x)  # [B]


def kimi_length_reward(lengths: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Kimi 1.5's length reward within one group: lam_i = 0.5 - (L_i - L_min) / (L_max - L_min);
    lam_i if completion i is correct, min(0, lam_i) if not; all 0 when every length is equal.

    lengths: [G] tokens; correct: [G] bool. Returns [G] float.

    Example:
        >>> kimi_length_reward(torch.tensor([10, 20, 30, 20]), torch.tensor([True, True, False, False]))
        tensor([ 0.5000,  0.0000, -0.5000,  0.0000])
    """
    length = lengths.float()  # [G]
    span = length.max() - length.min()  # []
    if span == 0:
        return torch.zeros_like(length)  # [G]
    lam = 0.5 - (length - length.min()) / span  # [G]
    return torch.where(correct.bool(), lam, lam.clamp(max=0.0))  # [G]


def length_penalty_groups(correct_ratio: torch.Tensor, top_frac: float = 0.5, min_ratio: float = 0.0) -> torch.Tensor:
    """GRPO-lambda's choice of the groups that get the length penalty: bool [B].

    correct_ratio: [B] share of correct completions per group. Selected: the ceil(top_frac * B)
    groups with the highest ratio (a stable sort: ties go to the earlier group), of which only those
    with ratio > min_ratio (by default: at least one completion right).

    Example:
        >>> length_penalty_groups(torch.tensor([0.25, 1.0, 0.0, 0.75]), top_frac=0.5)
        tensor([False,  True, False,  True])
        >>> length_penalty_groups(torch.tensor([0.0, 0.0]), top_frac=1.0)   # nobody right: no penalty
        tensor([False, False])
    """
    b = correct_ratio.numel()
    k = min(b, math.ceil(top_frac * b - 1e-9))
    order = torch.sort(-correct_ratio.float(), stable=True).indices[:k]  # [k]
    chosen = torch.zeros(b, dtype=torch.bool)  # [B]
    chosen[order] = True
    return chosen & (correct_ratio.float() > min_ratio)  # [B]


def length_shaped_rewards(rewards: torch.Tensor, correct: torch.Tensor, lengths: torch.Tensor,
                          ids: torch.Tensor, penalised: torch.Tensor) -> torch.Tensor:
    """rewards + kimi_length_reward within each penalised group; other groups unchanged.

    rewards, correct, lengths, ids: [N] (ids = group index of each row); penalised: [B] bool.

    Example: rewards [1, 1, 0, 1], lengths [10, 30, 5, 9], groups [0, 0, 1, 1], penalised [True, False]
        -> [1.5, 0.5, 0, 1]   (group 1 keeps its 0/1 rewards)
    """
    out = rewards.float().clone()  # [N]
    for g in penalised.nonzero().flatten().tolist():
        rows = (ids == g).nonzero().flatten()  # [G_g]
        out[rows] += kimi_length_reward(lengths[rows], correct[rows])
    return out  # [N]
