"""M3PO cross-path blend: each thinking rollout's next input leans towards its peers' inputs.

For the N rollouts of ONE question at one decode step l (REFERENCE.md section 2):

    S_ij = cos(p_i, p_j)            p_i = next-token distribution of rollout i (after temperature,
                                    top-k, top-p); S_ii = -inf; S_ij = -inf if i or j is not thinking
    A_ij = softmax_j(S_ij / T)      T = 0.1 ("uniform": A_ij = 1 / #thinking peers of i)
    c_i  = sum_j A_ij e_j           e_j = embedding of the token rollout j just sampled
    h_i  = (1 - lam) e_i + lam c_i  for a thinking rollout with >= 1 thinking peer, else h_i = e_i

h_i is the input of rollout i at step l + 1. Everything is detached: no gradient flows through A,
c or h; the rollout records h and the loss forward replays it (see rollout.sequence_logprobs).
At test time the policy decodes alone, greedy, without any blend.
"""

from __future__ import annotations

import torch

from crosspath.train import WEIGHTINGS  # the choices live with TrainConfig (importable without torch)

LAMBDA = 0.1  # blend weight of the peer mix (paper: 0.1 best; >= 0.5 collapses)
TEMPERATURE = 0.1  # softmax temperature on the cosine similarities (0.1 beats 0.5 and 1.0)


def _blend_batched(
    probs: torch.Tensor,  # [B, N, V]
    embeds: torch.Tensor,  # [B, N, D]
    thinking: torch.Tensor,  # [B, N] bool
    lam: float,
    temperature: float,
    weighting: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    probs, embeds = probs.detach(), embeds.detach()
    thinking = thinking.to(torch.bool)  # [B, N]
    n = probs.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=probs.device)  # [N, N]
    peer = thinking[:, :, None] & thinking[:, None, :] & ~eye  # [B, N, N] j is a thinking peer of i
    has_peer = peer.any(dim=-1)  # [B, N] (implies i is thinking)

    if weighting == "similarity":
        unit = torch.nn.functional.normalize(probs.float(), dim=-1)  # [B, N, V]
        sim = unit @ unit.transpose(1, 2)  # [B, N, N] cosine
        # finfo.min instead of -inf: a row without peers becomes uniform (not NaN) and is zeroed below
        logits = (sim / temperature).masked_fill(~peer, torch.finfo(torch.float32).min)  # [B, N, N]
        weights = torch.softmax(logits, dim=-1) * peer  # [B, N, N] masked entries are exactly 0
    else:
        weights = peer.float() / peer.sum(dim=-1, keepdim=True).clamp(min=1)  # [B, N, N]

    mix = weights @ embeds.float()  # [B, N, D] c_i
    blended = (1 - lam) * embeds.float() + lam * mix  # [B, N, D] h_i
    inputs = torch.where(has_peer[..., None], blended.to(embeds.dtype), embeds)  # [B, N, D]
    return inputs, weights


def blend(
    probs: torch.Tensor,
    embeds: torch.Tensor,
    thinking: torch.Tensor,
    lam: float = LAMBDA,
    temperature: float = TEMPERATURE,
    weighting: str = "similarity",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend the next inputs of the N rollouts of one question. Returns (inputs [N, D], A [N, N]).

    probs: [N, V] next-token distributions, embeds: [N, D] embeddings of the sampled tokens,
    thinking: [N] bool (True until the rollout's text contains the answer marker, False once it
    finished). Row i of A is all zero when i has no thinking peer; then inputs[i] == embeds[i]
    exactly, as it is for lam = 0.

    Example (N = 3, V = 2, D = 1, lam = 0.5, T = 1, rollout 2 has left the thinking phase):
        probs = [[1, 0], [1, 0], [0, 1]], embeds = [[0], [2], [4]], thinking = [T, T, F]
        A = [[0, 1, 0], [1, 0, 0], [0, 0, 0]]     (only peers 0 <-> 1 are left)
        inputs = [[0.5*0 + 0.5*2], [0.5*2 + 0.5*0], [4]] = [[1], [1], [4]]
    """
    inputs, weights = _blend_batched(
        probs[None], embeds[None], thinking[None], lam, temperature, weighting
    )
    return inputs[0], weights[0]  # [N, D], [N, N]


def blend_groups(
    probs: torch.Tensor,
    embeds: torch.Tensor,
    thinking: torch.Tensor,
    group_size: int,
    lam: float = LAMBDA,
    temperature: float = TEMPERATURE,
    weighting: str = "similarity",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`blend` for B questions at once, rows prompt-major (rows [k*N, (k+1)*N) = question k).

    probs: [B*N, V], embeds: [B*N, D], thinking: [B*N]. Returns (inputs [B*N, D], A [B, N, N]).
    Peers are only ever rollouts of the same question.

    Example (N = 2): rows 0, 1 blend with each other, rows 2, 3 with each other; a row whose
    partner stopped thinking keeps its own embedding.
    """
    n = group_size
    d = embeds.shape[-1]
    inputs, weights = _blend_batched(
        probs.reshape(-1, n, probs.shape[-1]),  # [B, N, V]
        embeds.reshape(-1, n, d),  # [B, N, D]
        thinking.reshape(-1, n),  # [B, N]
        lam,
        temperature,
        weighting,
    )
    return inputs.reshape(-1, d), weights  # [B*N, D], [B, N, N]


def make_hook(group_size: int, lam: float = LAMBDA, temperature: float = TEMPERATURE,
              weighting: str = "similarity"):
    """The rollout `input_hook` that applies `blend_groups` at every step (rollout.sample_rollouts).

    Example: sample_rollouts(model, tok, prompts, group_size=8, input_hook=make_hook(8))
    """

    def hook(step: int, probs: torch.Tensor, embeds: torch.Tensor, thinking: torch.Tensor):
        return blend_groups(probs, embeds, thinking, group_size, lam, temperature, weighting)[0]

    return hook
