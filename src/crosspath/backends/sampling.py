"""The next-token distribution every local sampler draws from: temperature, top-k, top-p, min-p.

One definition, used by the transformers backend (hf.py) and by the RL rollout sampler
(train/rollout.py), so a run and a training rollout sample the same distribution:

    probs   = softmax(logits / temperature)                       (temperature 0: one-hot argmax)
    top-k   keeps the tokens whose logit >= the k-th largest logit (ties at the k-th value all stay,
            as in transformers' TopKLogitsWarper and vLLM), then renormalises
    top-p   keeps the smallest prefix of the sorted top-k distribution whose mass reaches top_p
            (a token is kept when the mass of the better tokens is < top_p; the best one always stays)
    min-p   keeps the tokens with prob >= min_p * (largest prob)
    top-p and min-p are both measured on the top-k distribution; the kept set is their intersection.

`candidates` returns only the tokens that can still be drawn (cheap on a 150k vocabulary);
`sampling_probs` scatters them back to a full [B, V] distribution.
"""

from __future__ import annotations

import torch


def candidates(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               min_p: float = 0.0, head: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits [B, V] -> (probs [B, K], token ids [B, K]), K <= V; probs sum to 1 per row.

    top-p and min-p first look at the `head` most likely tokens and fall back to the whole
    vocabulary when a row's kept set does not fit there, so the result is exact.

    Example: candidates(torch.tensor([[2., 1., 1., 0.]]), top_k=2)  # the tie at the 2nd value stays
             -> probs [[e/(e+2), 1/(e+2), 1/(e+2)]], ids [[0, 1, 2]]
    """
    B, V = logits.shape
    if temperature <= 0:
        ids = logits.argmax(-1, keepdim=True)  # [B, 1]
        return torch.ones_like(ids, dtype=logits.dtype), ids
    logits = logits / temperature  # [B, V]
    ids = None  # [B, K] vocabulary ids of the columns of `logits`, None = all V in order
    if top_k and 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1] the k-th largest logit
        width = int((logits >= kth).sum(-1).max())  # >= top_k: ties at the k-th value stay
        logits, ids = torch.topk(logits, width, dim=-1)  # [B, K]
        logits = logits.masked_fill(logits < kth, float("-inf"))  # a row with fewer ties drops the rest
    probs = torch.softmax(logits, dim=-1)  # [B, K]
    if top_p >= 1.0 and not min_p:
        return probs, (ids if ids is not None else torch.arange(V, device=logits.device).expand(B, V))
    K = probs.shape[-1]
    sp, order = torch.topk(probs, min(head, K), dim=-1)  # [B, h], sorted descending
    cum = sp.cumsum(-1)  # [B, h]
    # the kept set is the intersection of the nucleus and the min-p set: exact if either fits in the head
    fits = (top_p < 1.0 and bool((cum[:, -1] >= top_p).all())) or \
        (bool(min_p) and bool((sp[:, -1] < min_p * sp[:, 0]).all()))
    if not fits and sp.shape[-1] < K:
        sp, order = probs.sort(-1, descending=True)  # [B, K]
        cum = sp.cumsum(-1)
    keep = torch.ones_like(sp, dtype=torch.bool)  # [B, h or K]
    if top_p < 1.0:
        keep &= (cum - sp) < top_p  # the smallest prefix reaching top_p
    if min_p:
        keep &= sp >= min_p * sp[:, :1]
    sp = sp.masked_fill(~keep, 0.0)
    cand = order if ids is None else ids.gather(-1, order)  # [B, h or K] vocabulary ids
    return sp / sp.sum(-1, keepdim=True), cand


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                   min_p: float = 0.0) -> torch.Tensor:
    """The full distribution actually sampled from: logits [B, V] -> probs [B, V] float32.

    Example: sampling_probs(torch.tensor([[0., 0., 9.]]), top_k=1) -> [[0, 0, 1]]
    """
    logits = logits.float()  # [B, V]
    probs, ids = candidates(logits, temperature, top_k, top_p, min_p)  # [B, K], [B, K]
    return torch.zeros_like(logits).scatter(-1, ids, probs)  # [B, V]


def sample(probs: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """One index per row of probs [B, K] -> [B]: argmax(p / E) with E ~ Exp(1) is an exact sample
    from p (the exponential race), and cheaper on a CPU than torch.multinomial. With `generators`,
    row r draws its noise from generators[r] (per-request seeds)."""
    if generators is None:
        noise = torch.empty_like(probs).exponential_()  # [B, K]
    else:
        noise = torch.stack([torch.empty_like(probs[0]).exponential_(generator=g) for g in generators])
    return (probs / noise).argmax(-1)
