"""transformers backend: batched sampling with a KV cache kept per path between calls.

Every path is a *session*: its text, the tokens already in its KV cache and where that cache lives (a
row of a `KVBatch`, see kv.py). Appending text (`extend`) costs nothing until the next `advance`,
which encodes only the text that is new since the last call (the "pending" text), prefills it for all
paths at once, and decodes.

The caches stay where a call can use them: paths generated together share one preallocated
`KVBatch`, one row each, and a later call on the same paths (the next LeaP round, a summary, the
forced answer) writes its new columns into that batch in place; nothing is copied in or out. Only a
call whose paths live in different batches, or in a batch that is mostly idle or mostly holes, copies
their caches into a new batch (`KVBatch.gather`), compact. A row that finishes early stays in the batch
and sits out the remaining steps (its new columns are masked); once at most half of the rows still run
and enough steps are left, the running rows move to a smaller batch (`KVBatch.select`).

Paths that start from nothing with the same text (the N paths of one question, or n > 1 samples of
one prompt) share one prefill: it runs once per distinct text and its rows are copied.

The stateless `generate(prompts, params)` opens one session per request, advances, and closes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..models import cache_kwargs
from .base import Completion, SamplingParams, cut_at_stop
from .kv import KVBatch
from .sampling import candidates, sample

MIN_STEPS_TO_COMPACT = 8  # move the running rows to a smaller batch only if at least this many steps are left


@dataclass
class _Path:
    text: str  # the whole text of the path
    ids: list[int] = field(default_factory=list)  # tokens whose KV is in row `row` of `batch`
    ends: list[int] = field(default_factory=list)  # ends[j] = char offset in `text` where token j ends
    batch: KVBatch | None = None  # where its cache lives; None: nothing cached
    row: int = 0
    ephemeral: bool = False  # a stateless request: nothing is kept after its call

    @property
    def cached_chars(self) -> int:
        return self.ends[-1] if self.ends else 0

    def keep(self, n: int) -> None:
        """Keep only the first n cached tokens."""
        if n >= len(self.ids):
            return
        self.ids, self.ends = self.ids[:n], self.ends[:n]
        if not n:
            self.release()
        elif self.batch is not None:
            self.batch.keep(self.row, n)

    def crop(self, n_chars: int) -> None:
        """Keep only the cached tokens that end at or before `n_chars`."""
        keep = len(self.ids)
        while keep and self.ends[keep - 1] > n_chars:
            keep -= 1
        self.keep(keep)

    def release(self) -> None:
        """Give up its row (the cache is dropped with the batch once no path holds a row of it)."""
        if self.batch is not None:
            self.batch.owner[self.row] = None
        self.batch, self.ids, self.ends = None, [], []

    def move(self, batch: KVBatch, row: int, handle: int) -> None:
        if self.batch is not None and self.batch is not batch:
            self.batch.owner[self.row] = None
        self.batch, self.row = batch, row
        batch.owner[row] = handle


class HFGenerator:
    """Generator + session API over a transformers causal LM (see the module docstring)."""

    top_logprobs = True  # returns SamplingParams.top_logprobs (DeepConf needs them)

    def __init__(self, model, tokenizer, max_batch: int = 32):
        self.model, self.tok, self.max_batch = model, tokenizer, max_batch
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        self._paths: dict[int, _Path] = {}
        self._next = itertools.count()

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
        p = self._paths.pop(handle, None)
        if p is not None:
            p.release()

    def cache_of(self, handle: int) -> torch.Tensor | None:
        """-> [layers, 2, kv_heads, cached tokens, head_dim] a compact copy of the path's KV cache (tests, debugging)."""
        p = self._paths[handle]
        return None if p.batch is None else p.batch.tokens(p.row)

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

    def _inputs(self, pend: list[list[int]], starts: list[int], rows: list[int], R: int, P: int):
        """Path i's pending ids pend[i], right-aligned in row rows[i] of P new columns, its positions
        counting on from starts[i] -> input_ids, cols (1 = real token), position ids, each [R, P]."""
        input_ids = torch.full((R, P), self.pad_id, dtype=torch.long)  # [R, P]
        cols = torch.zeros(R, P, dtype=torch.long)  # [R, P]
        pos = torch.zeros(R, P, dtype=torch.long)  # [R, P]
        for ids, c, r in zip(pend, starts, rows):
            n = len(ids)
            input_ids[r, P - n :] = torch.tensor(ids)
            cols[r, P - n :] = 1
            pos[r, P - n :] = torch.arange(c, c + n)
        return input_ids.to(self.device), cols.to(self.device), pos.to(self.device)

    def _forward(self, batch: KVBatch, input_ids, cols, pos) -> torch.Tensor:
        """One forward of every row of `batch` over q new columns (input_ids, cols, pos [rows, q]),
        written into the batch in place -> logits of the last column [rows, V]."""
        out = self.model(input_ids=input_ids, attention_mask=batch.append(cols), position_ids=pos, use_cache=True,
                         logits_to_keep=1, **cache_kwargs(batch.cache))
        return out.logits[:, -1, :]  # [rows, V]

    def _prefill(self, handles: list[int], paths: list[_Path], pend: list[list[int]], extra: int, slack: bool):
        """Feed every path its pending ids -> (batch, rows [B]: each path's row in it, logits [B, V]).

        Paths that all continue rows of one batch, more than half of its open rows whose real tokens
        fill at least half of their columns, are fed there in place (rows not in the call sit out:
        padding, masked). Fresh paths get a new batch, one prefill per distinct text. Anything else is
        gathered into a new, compact batch (one copy of each cache). `extra` = columns the call adds.
        """
        B, P = len(paths), max(len(ids) for ids in pend)
        if not any(p.ids for p in paths):  # fresh paths: one prefill per distinct text (a question's N paths)
            slot: dict[tuple[int, ...], int] = {}
            row_slot = [slot.setdefault(tuple(ids), len(slot)) for ids in pend]  # [B] -> distinct text
            first = [row_slot.index(u) for u in range(len(slot))]  # [U] first path of each text
            batch = KVBatch(len(first), 0, self.device)
            batch.reserve(P if len(first) < B else extra, slack=slack and len(first) == B)
            logits = self._forward(batch, *self._inputs([pend[i] for i in first], [0] * len(first),
                                                        list(range(len(first))), len(first), P))  # [U, V]
            if len(first) < B:
                batch, logits = batch.select(row_slot, extra - P, slack), logits[torch.tensor(row_slot)]  # [B, ...]
            rows = list(range(B))
        else:
            b = paths[0].batch
            if (b is not None and all(p.batch is b for p in paths) and 2 * B > b.live()
                    and 2 * sum(len(p.ids) for p in paths) >= B * b.width):
                batch, rows = b, [p.row for p in paths]  # in place
                batch.reserve(extra, slack)
            else:
                batch = KVBatch.gather([(p.batch, p.row, len(p.ids)) if p.ids else None for p in paths], extra,
                                       self.device, slack)
                rows = list(range(B))
            logits = self._forward(batch, *self._inputs(pend, [len(p.ids) for p in paths], rows, batch.rows, P))
            logits = logits[torch.tensor(rows, device=logits.device)]  # [B, V]
        for p, h, r in zip(paths, handles, rows):
            p.move(batch, r, h)
        return batch, rows, logits

    @torch.no_grad()
    def _advance(self, handles: list[int], params: SamplingParams) -> list[Completion]:
        """Prefill the pending text of B paths at once (`_prefill`), then decode one token per step.

        Every step appends one column to every row of the paths' batch (kv.py): 1 for the rows still
        running, 0 for the rows that finished (they stay, masked) or sit out the call. When at most half
        of the batch's rows still run and at least MIN_STEPS_TO_COMPACT steps are left, the running
        rows move to a smaller batch (one copy); the finished ones keep their rows in the old one.
        """
        if params.max_tokens <= 0:
            return [Completion(text="", finish_reason="length") for _ in handles]
        paths = [self._paths[h] for h in handles]
        pend = [self._pending_ids(p) for p in paths]
        B = len(paths)
        # per path i (python lists, not tensors): fed[i] [c_i + p_i (+ sampled so far)] token ids whose KV
        # is or will be in its row, in order; ends[i] [c_i + p_i] char offset in the text where each ends
        fed = [list(p.ids) + ids for p, (ids, _) in zip(paths, pend)]
        ends = [list(p.ends) + e for p, (_, e) in zip(paths, pend)]
        slack = not all(p.ephemeral for p in paths)  # sessions continue: leave room for the next call
        batch, rows, logits_next = self._prefill(handles, paths, [ids for ids, _ in pend],
                                                 max(len(ids) for ids, _ in pend) + params.max_tokens, slack)

        gens = None  # [B] one torch.Generator per path (seed + index in the call) when seeded
        if params.seed is not None:
            gens = [torch.Generator(device=self.device).manual_seed(params.seed + i) for i in range(B)]
        max_stop = max((len(s) for s in params.stop), default=0)
        running = list(range(B))  # [b] paths still sampling, in the order of logits_next's rows
        gen: list[list[int]] = [[] for _ in range(B)]  # [B][steps] tokens sampled for each path
        lps: list[list[float]] = [[] for _ in range(B)]  # [B][steps] their log-probs (params.logprobs)
        tops: list[list[list[float]]] = [[] for _ in range(B)]  # [B][steps][k] per token: the k largest log-probs
        results: list[Completion | None] = [None] * B
        for step in range(params.max_tokens):
            logits = logits_next.float()  # [b, V]
            probs, cand = candidates(logits, params.temperature, params.top_k, params.top_p, params.min_p)  # [b, K]
            pick = sample(probs, None if gens is None else [gens[i] for i in running])  # [b]
            tok_l = cand.gather(-1, pick[:, None]).squeeze(-1).tolist()  # [b]
            if params.logprobs:
                lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tok_l, device=logits.device)[:, None])
                lp = lp.squeeze(-1).tolist()  # [b]
            if params.top_logprobs:  # the model's own distribution (before temperature/top-p), as vLLM returns
                top = torch.log_softmax(logits, -1).topk(params.top_logprobs, dim=-1).values.tolist()  # [b, k]
            still = []
            for j, i in enumerate(running):
                gen[i].append(tok_l[j])
                if params.logprobs:
                    lps[i].append(lp[j])
                if params.top_logprobs:
                    tops[i].append(top[j])
                finish = None
                if tok_l[j] in self.eos_ids:
                    finish = "stop"
                elif max_stop:
                    tail = self.tok.decode(gen[i][-(max_stop + 2) :], skip_special_tokens=True)
                    if any(s in tail for s in params.stop if s):
                        finish = "stop"
                if finish is None and step == params.max_tokens - 1:
                    finish = "length"
                if finish:
                    results[i] = self._finish(paths[i], gen[i], fed[i], ends[i], params, lps[i], tops[i])
                else:
                    still.append(i)
            running = still
            if not running:
                break
            left = params.max_tokens - step - 1
            if 2 * len(running) <= batch.rows and left >= MIN_STEPS_TO_COMPACT:
                batch = batch.select([rows[i] for i in running], left, slack)  # the running rows, copied
                for k, i in enumerate(running):
                    rows[i] = k
                    paths[i].move(batch, k, handles[i])
            # feed the sampled tokens of the running rows; the other rows get a masked pad column
            ids, cols, pos = self._inputs([gen[i][-1:] for i in running], [len(fed[i]) for i in running],
                                          [rows[i] for i in running], batch.rows, 1)  # [rows, 1] each
            for i in running:
                fed[i].append(gen[i][-1])
            logits_next = self._forward(batch, ids, cols, pos)  # [rows, V]
            logits_next = logits_next[torch.tensor([rows[i] for i in running], device=logits_next.device)]  # [b, V]
        return results  # type: ignore[return-value]

    def _finish(self, p: _Path, gen: list[int], fed: list[int], ends: list[int], params: SamplingParams,
                lps: list[float], tops: list[list[float]] | None = None) -> Completion:
        """Cut the completion at its stop string; keep the cache of the tokens that stay in the text.

        gen [steps] are this call's sampled tokens, fed [c + p + steps - 1] the tokens whose KV is in
        the path's row (the last sampled token was never fed), ends [c + p] their char ends before this
        call; lps/tops [steps] their log-probs and top-k log-probs when asked for. The row keeps its
        columns: the tokens past the cut only have their mask cleared (kv.py).
        """
        body = gen[:-1] if gen and gen[-1] in self.eos_ids else gen
        text = self.tok.decode(body, skip_special_tokens=True)
        text, hit = cut_at_stop(text, params.stop)
        eos = bool(gen) and gen[-1] in self.eos_ids
        reason = "stop" if (hit or eos) else "length"
        # char ends of the generated tokens (valid when per-token pieces add up to the whole text)
        pieces = [len(self.tok.decode([t], skip_special_tokens=True)) for t in body]  # [len(body)] chars
        base = len(p.text)
        if sum(pieces) == len(self.tok.decode(body, skip_special_tokens=True)):
            gen_ends = [base + e for e in itertools.accumulate(pieces)]
        else:  # a multi-byte character split across tokens: keep none of this call's tokens
            gen_ends = [10**12] * len(body)
        n_prev = len(fed) - (len(gen) - 1)  # c + p: tokens fed before this call's generated ones
        all_ends = ends[:n_prev] + gen_ends[: len(fed) - n_prev]  # [len(fed)] char end of every fed token
        new_len = base + len(text)
        keep = 0
        while keep < len(all_ends) and all_ends[keep] <= new_len:
            keep += 1
        p.ids, p.ends = list(fed), all_ends  # what the row holds now ...
        p.keep(0 if p.ephemeral else min(keep, len(fed)))  # ... cut to what stays in the text
        p.text += text
        return Completion(text=text, token_ids=list(gen), finish_reason=reason, stop=hit,
                          logprobs=list(lps) if params.logprobs else None,
                          top_logprobs=list(tops or []) if params.top_logprobs else None)
