"""QR-Distill's router and mutual distillation, as small modules and pure tensor functions.

Router (which student learns from which path). A frozen encoder embeds question + path once
(`e`, [B, D]); an MLP gives one logit per student; a hard Gumbel-softmax draws the assignment:

    l = MLP(e)                                   [B, S]
    p = softmax((l + g) / tau),  g ~ Gumbel(0,1) [B, S]   (soft sample)
    y = onehot(argmax p) - sg(p) + p             [B, S]   (straight-through: forward one-hot,
                                                           backward the gradient of p)

The router's signal is the students' own loss on the path, L[b, s] (every student scores every
path; detached, normalised per character so that tokenizers compare), and a balance term:

    router_loss = mean_b sum_s y[b, s] * L[b, s]  -  lambda * H(mean_b softmax(l[b]))

d router_loss / d l[b, s] = p[b, s] * (L[b, s] - sum_j p[b, j] L[b, j]) / (B * tau): the logit of a
student whose loss is below the (router-weighted) average goes up, so paths drift to the student
that fits them best. The entropy of the batch-mean probabilities is high when all students get
paths (it does not push single decisions towards uniform).

Mutual distillation. Student s's last hidden state, mean-pooled over its target tokens (h_s, [B, H_s]),
is projected into a shared space; competence weights w = softmax(c) mix an ensemble target:

    z_s = P_s h_s / |P_s h_s|                    [B, K]   (trained projection, unit norm)
    t   = sg(sum_s w_s z_s)                      [B, K]   (detached ensemble target)
    mutual_loss = sum_s mean_b |z_s - t|^2
    competence_loss = sum_s w_s * mean_b L[b, s] (w trained towards the students that fit the data)

The unit norm keeps the projections from shrinking every z_s (and the target) to zero.
"""

from __future__ import annotations

import torch
from torch import nn


class Router(nn.Module):
    """MLP over frozen text embeddings -> one logit per student."""

    def __init__(self, dim_in: int, n_students: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, n_students))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(emb)  # [B, D] -> [B, S]


def st_gumbel(logits: torch.Tensor, tau: float = 1.0,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard Gumbel-softmax with the straight-through estimator.

    logits [B, S] -> (y [B, S]: exactly one-hot in the forward pass, gradient of the soft sample;
    choice [B]: the chosen student).

    >>> y, c = st_gumbel(torch.tensor([[0.0, 50.0]], requires_grad=True))
    >>> y.tolist(), c.tolist()
    ([[0.0, 1.0]], [1])
    """
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp_(1e-10, 1 - 1e-10)
    g = -torch.log(-torch.log(u))  # [B, S] Gumbel(0, 1)
    soft = torch.softmax((logits + g.to(logits.device)) / tau, dim=-1)  # [B, S]
    choice = soft.argmax(-1)  # [B]
    hard = torch.nn.functional.one_hot(choice, logits.shape[-1]).to(soft.dtype)  # [B, S]
    return hard - soft.detach() + soft, choice


def balance_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the router's batch-mean probabilities: log S when students share the paths evenly.

    logits [B, S] -> scalar.

    >>> round(float(balance_entropy(torch.tensor([[9.0, -9.0], [-9.0, 9.0]]))), 4)  # log 2
    0.6931
    """
    mean = torch.softmax(logits, dim=-1).mean(0)  # [S]
    return -(mean * torch.log(mean.clamp(min=1e-12))).sum()


def router_loss(y: torch.Tensor, path_loss: torch.Tensor, logits: torch.Tensor,
                entropy_weight: float) -> torch.Tensor:
    """mean_b sum_s y[b,s] * sg(L[b,s]) - entropy_weight * H(mean_b p[b]).

    y [B, S] straight-through assignment; path_loss [B, S] (detached here); logits [B, S].
    """
    return (y * path_loss.detach()).sum(-1).mean() - entropy_weight * balance_entropy(logits)


class Mutual(nn.Module):
    """Trainable projections of each student's pooled hidden state + competence weights."""

    def __init__(self, hidden_sizes: list[int], dim: int = 256):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(h, dim) for h in hidden_sizes)
        self.competence = nn.Parameter(torch.zeros(len(hidden_sizes)))  # c; w = softmax(c)

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.competence, dim=0)  # [S]

    def forward(self, pooled: list[torch.Tensor]) -> torch.Tensor:
        """pooled: S tensors [B, H_s] -> z [S, B, K] (unit norm)."""
        z = [p(h.to(p.weight.dtype)) for p, h in zip(self.proj, pooled)]  # S x [B, K]
        return torch.nn.functional.normalize(torch.stack(z), dim=-1)  # [S, B, K]


def mutual_loss(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_s mean_b |z_s - sg(sum_t w_t z_t)|^2 ; z [S, B, K], w [S].

    >>> z = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two students, one path
    >>> float(mutual_loss(z, torch.tensor([1.0, 0.0])))  # target = student 0: only student 1 pays
    2.0
    """
    target = (w.detach()[:, None, None] * z.detach()).sum(0)  # [B, K]
    return ((z - target.unsqueeze(0)) ** 2).sum(-1).mean(-1).sum()


def competence_loss(w: torch.Tensor, path_loss: torch.Tensor) -> torch.Tensor:
    """sum_s w_s * sg(mean_b L[b, s]): w [S], path_loss [B, S] -> scalar."""
    return (w * path_loss.detach().mean(0)).sum()
