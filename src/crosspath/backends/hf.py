"""transformers backend: batched sampling with a KV cache kept per path between calls.

Every path is a *session*: its text, the tokens already in its KV cache and that cache. Appending
text (`extend`) costs nothing until the next `advance`, which encodes only the text that is new
since the last call (the "pending" text), prefills it for all paths at once, and decodes.

Batching paths of different lengths: each path's cache is kept compact (no padding). A call
lines the caches up on the right with left padding, then feeds every path's pending tokens
right-aligned behind them; the gap between a short cache and its pending tokens is masked out
(a "hole"). Position ids count real tokens only, so each row computes exactly what it would alone.
When a row finishes it is copied out of the batch (padding and holes dropped) and removed.

Paths that start from nothing with the same text (the N paths of one question, or n > 1 samples of
one prompt) share one prefill: it runs once per distinct text and its cache is repeated.

The stateless `generate(prompts, params)` opens one session per request, advances, and closes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .base import Completion, SamplingParams, cut_at_stop


@dataclass
class _Path:
    text: str  # the whole text of the path
    ids: list[int] = field(default_factory=list)  # tokens whose KV is in `kv`
    ends: list[int] = field(default_factory=list)  # ends[j] = char offset in `text` where token j ends
    kv: torch.Tensor | None = None  # [layers, 2, kv_heads, len(ids), head_dim]
    ephemeral: bool = False  # a stateless request: its cache is not copied out of the batch

    @property
    def cached_chars(self) -> int:
        return self.ends[-1] if self.ends else 0

    def crop(self, n_chars: int) -> None:
        """Keep only the cached tokens that end at or before `n_chars`."""
        keep = len(self.ids)
        while keep and self.ends[keep - 1] > n_chars:
            keep -= 1
        self.ids, self.ends = self.ids[:keep], self.ends[:keep]
        self.kv = self.kv[..., :keep, :] if (self.kv is not None and keep) else None


def candidates(logits: torch.Tensor, p: SamplingParams, head: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature, top-k, top-p and min-p on raw logits [B, V] -> (probs [B, K], token ids [B, K]).

    Only the tokens that can still be drawn are returned (K <= V), so sampling costs O(K). top-p
    and min-p first look at the `head` most likely tokens and fall back to the whole vocabulary
    when a row's nucleus does not fit there, so the result is exact.
    """
    B, V = logits.shape
    if p.temperature <= 0:
        ids = logits.argmax(-1, keepdim=True)  # [B, 1]
        return torch.ones_like(ids, dtype=logits.dtype), ids
    logits = logits / p.temperature  # [B, V]
    if p.top_k and 0 < p.top_k < V:
        logits, ids = torch.topk(logits, p.top_k, dim=-1)  # [B, k]
    else:
        ids = None
    probs = torch.softmax(logits, dim=-1)  # [B, K]
    if p.top_p >= 1.0 and not p.min_p:
        return probs, (ids if ids is not None else torch.arange(V, device=logits.device).expand(B, V))
    K = probs.shape[-1]
    sp, order = torch.topk(probs, min(head, K), dim=-1)  # [B, h], sorted descending
    cum = sp.cumsum(-1)
    # the kept set is the intersection of the nucleus and the min-p set: exact if either fits in the head
    fits = (p.top_p < 1.0 and bool((cum[:, -1] >= p.top_p).all())) or \
        (bool(p.min_p) and bool((sp[:, -1] < p.min_p * sp[:, 0]).all()))
    if not fits and sp.shape[-1] < K:
        sp, order = probs.sort(-1, descending=True)  # [B, K]
        cum = sp.cumsum(-1)
    keep = torch.ones_like(sp, dtype=torch.bool)
    if p.top_p < 1.0:
        keep &= (cum - sp) < p.top_p  # the smallest prefix reaching top_p
    if p.min_p:
        keep &= sp >= p.min_p * sp[:, :1]
    sp = sp.masked_fill(~keep, 0.0)
    cand = order if ids is None else ids.gather(-1, order)
    return sp / sp.sum(-1, keepdim=True), cand


def process_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """The full processed distribution [B, V] (see `candidates`)."""
    probs, ids = candidates(logits, p)
    return torch.zeros_like(logits).scatter(-1, ids, probs)


def sample(probs: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """One index per row of probs [B, K] -> [B]: argmax(p / E) with E ~ Exp(1) is an exact sample
    from p (the exponential race), and cheaper on a CPU than torch.multinomial. With `generators`,
    row r draws its noise from generators[r] (per-request seeds)."""
    if generators is None:
        noise = torch.empty_like(probs).exponential_()  # [B, K]
    else:
        noise = torch.stack([torch.empty_like(probs[0]).exponential_(generator=g) for g in generators])
    return (probs / noise).argmax(-1)


class HFGenerator:
    """Generator + session API over a transformers causal LM (see the module docstring)."""

    def __init__(self, model, tokenizer, max_batch: int = 32):
        self.model, self.tok, self.max_batch = model, tokenizer, max_batch
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        self._paths: dict[int, _Path] = {}
        self._next = itertools.count()
        self._kv_devices: list[torch.device] | None = None  # device of each layer's cache (one unless a device_map)

    @property
    def dtype(self) -> str:
        """The dtype the weights really have, e.g. 'float32'."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    @classmethod
    def from_name(cls, name: str, dtype: str = "auto", device: str | None = None, adapter: str | None = None,
                  device_map: str | None = None, **kw):
        """`dtype="auto"`: bfloat16 on CUDA, float32 on CPU; `device_map="auto"` for a model larger than one GPU."""
        from ..models import load_model

        model, tok = load_model(name, dtype=dtype, device=device, adapter=adapter, device_map=device_map)
        return cls(model, tok, **kw)

    # ---- session API -------------------------------------------------------------------------
    def open(self, prefix: str) -> int:
        h = next(self._next)
        self._paths[h] = _Path(text=prefix)
        return h

    def extend(self, handle: int, text: str) -> None:
        self._paths[handle].text += text

    def rewind(self, handle: int, n_chars: int) -> None:
        p = self._paths[handle]
        if n_chars > 0:
            p.text = p.text[:-n_chars]
            p.crop(len(p.text))

    def text(self, handle: int) -> str:
        return self._paths[handle].text

    def cached_tokens(self, handle: int) -> int:
        return len(self._paths[handle].ids)

    def close(self, handle: int) -> None:
        self._paths.pop(handle, None)

    def advance(self, handles: Sequence[int], params: SamplingParams) -> list[Completion]:
        if params.n != 1:
            raise ValueError("advance() continues each path once; use generate() for n > 1")
        out: list[Completion] = []
        for start in range(0, len(handles), self.max_batch):
            chunk = list(handles[start : start + self.max_batch])
            seed = None if params.seed is None else params.seed + start
            out.extend(self._advance(chunk, params.with_(seed=seed)))
        return out

    # ---- stateless API -----------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        handles = [self.open(pr) for pr in prompts for _ in range(params.n)]
        for h in handles:
            self._paths[h].ephemeral = True  # closed right after: keep no cache
        try:
            return self.advance(handles, params.with_(n=1))
        finally:
            for h in handles:
                self.close(h)

    # ---- the work ----------------------------------------------------------------------------
    def _pending_ids(self, p: _Path) -> tuple[list[int], list[int]]:
        """Encode the text not yet in the cache -> (ids, char ends)."""
        if p.cached_chars == len(p.text) and p.ids:
            p.crop(p.ends[-2] if len(p.ends) > 1 else 0)  # re-feed the last token to get its logits
        start = p.cached_chars
        enc = self.tok(p.text[start:], add_special_tokens=False, return_offsets_mapping=True)
        ids, ends = list(enc["input_ids"]), [start + e for _, e in enc["offset_mapping"]]
        if not ids:
            raise ValueError("cannot continue an empty path: open it with a non-empty prompt")
        return ids, ends

    @torch.no_grad()
    def _advance(self, handles: list[int], params: SamplingParams) -> list[Completion]:
        if params.max_tokens <= 0:
            return [Completion(text="", finish_reason="length") for _ in handles]
        paths = [self._paths[h] for h in handles]
        pend = [self._pending_ids(p) for p in paths]
        B, dev = len(paths), self.device
        C = max(len(p.ids) for p in paths)
        P = max(len(ids) for ids, _ in pend)
        input_ids = torch.full((B, P), self.pad_id, dtype=torch.long, device=dev)  # [B, P]
        mask = torch.zeros(B, C + P, dtype=torch.long, device=dev)  # [B, C+P]
        pos = torch.zeros(B, P, dtype=torch.long, device=dev)  # [B, P]
        cache = None
        if C:
            ref = next(p.kv for p in paths if p.kv is not None)
            L, _, H, _, D = ref.shape
            kv = ref.new_zeros(L, 2, B, H, C, D)  # [layers, 2, B, heads, C, head_dim]
        for i, (p, (ids, _)) in enumerate(zip(paths, pend)):
            c = len(p.ids)
            if c:
                kv[:, :, i, :, C - c :] = p.kv
                mask[i, C - c : C] = 1
            input_ids[i, P - len(ids) :] = torch.tensor(ids, device=dev)
            mask[i, C + P - len(ids) :] = 1
            pos[i, P - len(ids) :] = torch.arange(c, c + len(ids), device=dev)
        if C:
            from transformers import DynamicCache

            devs = self._kv_devices or [dev] * kv.shape[0]  # each layer's device (several with a device_map)
            cache = DynamicCache(ddp_cache_data=[(kv[l, 0].to(devs[l]), kv[l, 1].to(devs[l])) for l in range(kv.shape[0])])
        fed = [list(p.ids) + ids for p, (ids, _) in zip(paths, pend)]  # tokens whose KV is/will be cached
        ends = [list(p.ends) + e for p, (_, e) in zip(paths, pend)]

        gens = None
        if params.seed is not None:
            gens = [torch.Generator(device=dev).manual_seed(params.seed + i) for i in range(B)]
        max_stop = max((len(s) for s in params.stop), default=0)
        rows = list(range(B))  # batch row -> index into `paths`
        gen: list[list[int]] = [[] for _ in range(B)]
        lps: list[list[float]] = [[] for _ in range(B)]
        results: list[Completion | None] = [None] * B
        next_pos = pos[:, -1] + 1  # [B]
        # paths that start from nothing with the same text (a question's N paths) share one prefill
        slot: dict[tuple[int, ...], int] = {}
        row_slot = [slot.setdefault(tuple(ids), len(slot)) for ids, _ in pend]  # [B] -> distinct text
        if not C and len(slot) < B:
            uniq = torch.tensor([row_slot.index(u) for u in range(len(slot))], device=dev)  # [U] first rows
            out = self.model(input_ids=input_ids[uniq], attention_mask=mask[uniq], position_ids=pos[uniq],
                             use_cache=True, logits_to_keep=1)
            expand = torch.tensor(row_slot)  # [B]; CPU indices select on any device
            out.past_key_values.batch_select_indices(expand)  # [U, ...] -> [B, ...]
            logits_next = out.logits[expand, -1, :]  # [B, V]
        else:
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
            logits_next = out.logits[:, -1, :]
        cache = out.past_key_values
        for step in range(params.max_tokens):
            logits = logits_next.float()  # [b, V]
            probs, cand = candidates(logits, params)  # [b, K], [b, K]
            pick = sample(probs, None if gens is None else [gens[i] for i in rows])  # [b]
            tok = cand.gather(-1, pick[:, None]).squeeze(-1)  # [b]
            if params.logprobs:
                lp = torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1).tolist()
            tok_l = tok.tolist()
            done_rows = []
            for r, i in enumerate(rows):
                gen[i].append(tok_l[r])
                if params.logprobs:
                    lps[i].append(lp[r])
                finish = None
                if tok_l[r] in self.eos_ids:
                    finish = "stop"
                elif max_stop:
                    tail = self.tok.decode(gen[i][-(max_stop + 2) :], skip_special_tokens=True)
                    if any(s in tail for s in params.stop if s):
                        finish = "stop"
                if finish is None and step == params.max_tokens - 1:
                    finish = "length"
                if finish:
                    done_rows.append(r)
                    results[i] = self._finish(paths[i], gen[i], fed[i], ends[i], cache, mask, r, params, lps[i])
            if done_rows:
                keep = [r for r in range(len(rows)) if r not in done_rows]
                if not keep:
                    break
                idx = torch.tensor(keep)  # CPU indices select on any device (layers spread by a device_map)
                cache.batch_select_indices(idx)
                mask, tok, next_pos = mask[idx], tok[idx], next_pos[idx]
                rows = [rows[r] for r in keep]
            # feed the sampled tokens of the rows still running
            for r, i in enumerate(rows):
                fed[i].append(gen[i][-1])
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                             past_key_values=cache, use_cache=True)
            cache, logits_next = out.past_key_values, out.logits[:, -1, :]
            next_pos = next_pos + 1
        return results  # type: ignore[return-value]

    def _finish(self, p: _Path, gen: list[int], fed: list[int], ends: list[int], cache, mask, row: int,
                params: SamplingParams, lps: list[float]) -> Completion:
        """Cut the completion at its stop string; keep the cache of the tokens that stay in the text."""
        body = gen[:-1] if gen and gen[-1] in self.eos_ids else gen
        text = self.tok.decode(body, skip_special_tokens=True)
        text, hit = cut_at_stop(text, params.stop)
        eos = bool(gen) and gen[-1] in self.eos_ids
        reason = "stop" if (hit or eos) else "length"
        # char ends of the generated tokens (valid when per-token pieces add up to the whole text)
        pieces = [len(self.tok.decode([t], skip_special_tokens=True)) for t in body]
        base = len(p.text)
        if sum(pieces) == len(self.tok.decode(body, skip_special_tokens=True)):
            gen_ends = [base + e for e in itertools.accumulate(pieces)]
        else:  # a multi-byte character split across tokens: keep none of this call's tokens
            gen_ends = [10**12] * len(body)
        n_prev = len(fed) - (len(gen) - 1)  # tokens fed before this call's generated ones
        all_ends = ends[:n_prev] + gen_ends[: len(fed) - n_prev]
        new_len = base + len(text)
        keep = 0
        while keep < len(all_ends) and all_ends[keep] <= new_len:
            keep += 1
        keep = 0 if p.ephemeral else min(keep, len(fed))
        valid = mask[row, : cache.layers[0].keys.shape[-2]].nonzero().squeeze(-1)[:keep].cpu()  # [keep]
        if keep:
            self._kv_devices = [lay.keys.device for lay in cache.layers]
            p.kv = torch.stack([torch.stack([lay.keys[row][:, valid].to(self.device), lay.values[row][:, valid].to(self.device)])
                                for lay in cache.layers])
        else:
            p.kv = None
        p.ids, p.ends = fed[:keep], all_ends[:keep]
        p.text += text
        return Completion(text=text, token_ids=list(gen), finish_reason=reason, stop=hit,
                          logprobs=list(lps) if params.logprobs else None)
