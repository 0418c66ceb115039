"""The KV cache of the hf backend: one preallocated block per batch of paths, used in place across calls.

A `KVBatch` holds the keys and values of the paths that are generated together (a question's N paths,
a batch of questions) in one layout that every call reads and writes in place:

    keys[l], values[l]  [rows, kv_heads, cap, head_dim]  layer l's storage, on that layer's device
    mask                [rows, cap]  1 where a column holds a real token of the row; 0 for left padding,
                        a hole (the row was fed fewer new tokens than the widest row of a call), a
                        token dropped since (cut by a stop string, `rewind`) or a call the row sat out
    width               columns written so far, the same for every row; columns [width, cap) are free

The j-th column of row r whose mask is 1 holds token j of that row's path, so a path is (batch, row)
plus its token ids. A forward appends the same q columns to every row: `_Layer.update` writes them in
place and hands the model views of the first `width` columns, with `mask[:, :width]` as the attention
mask; position ids count a row's real tokens only, so each row computes exactly what it would alone.

Example, 2 rows: row 0 cached 3 tokens, row 1 cached 2 and had 1 dropped; a call feeds row 0 one
new token and row 1 two (columns 5-6), then decodes one step (column 7):

    column   0 1 2 3 4 | 5 6 | 7
    row 0    . 1 1 1 . | . 1 | 1      (. = 0: padding, dropped token or hole)
    row 1    1 1 . . . | 1 1 | 1

What costs a copy: continuing the paths of one batch copies nothing; `gather` builds a batch from paths
that live in other batches (or left a batch) and copies their real columns once, compact and
left-padded; `select` keeps some rows (one prefill shared by several paths, or the rows still running
when most of a batch has finished); storage that is too small grows by a quarter more than the call
needs (`reserve`), so a continued path rarely reallocates.
"""

from __future__ import annotations

from functools import partial

import torch
from transformers.cache_utils import Cache, DynamicLayer


class _Layer(DynamicLayer):
    """One layer of a KVBatch as transformers sees it: `update` writes the new columns in place."""

    def __init__(self, cap: list[int]):
        super().__init__()
        self.cap = cap  # [1] the batch's column capacity, shared (a list: no reference back to the batch)
        self.n = 0  # columns written in this layer (= batch.width between forwards)
        self.k: torch.Tensor | None = None  # [rows, kv_heads, cap, head_dim]
        self.v: torch.Tensor | None = None  # [rows, kv_heads, cap, head_dim]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads, _, dim = key_states.shape  # [rows, kv_heads, q, head_dim]
        self.allocate(rows, heads, dim, key_states.dtype, key_states.device)

    def allocate(self, rows: int, heads: int, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.k = torch.zeros(rows, heads, self.cap[0], dim, dtype=dtype, device=device)  # [rows, kv_heads, cap, hd]
        self.v = torch.zeros_like(self.k)  # [rows, kv_heads, cap, head_dim]
        self.device, self.is_initialized = device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """key_states, value_states [rows, kv_heads, q, head_dim] -> all keys, values [rows, kv_heads, n + q, hd]."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[-2]  # new columns
        self.k[:, :, self.n : self.n + q] = key_states
        self.v[:, :, self.n : self.n + q] = value_states
        self.n += q
        self.keys, self.values = self.k[:, :, : self.n], self.v[:, :, : self.n]  # views, no copy
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def resize(self, cap: int) -> None:
        """Move the written columns into storage of `cap` columns."""
        if self.k is None:
            return
        k = self.k.new_zeros(*self.k.shape[:2], cap, self.k.shape[-1])  # [rows, kv_heads, cap, head_dim]
        v = torch.zeros_like(k)
        k[:, :, : self.n], v[:, :, : self.n] = self.k[:, :, : self.n], self.v[:, :, : self.n]
        self.k, self.v = k, v
        self.keys, self.values = self.k[:, :, : self.n], self.v[:, :, : self.n]


class KVBatch:
    """Keys, values and mask of `rows` paths (see the module docstring); `cache` is what the model reads."""

    def __init__(self, rows: int, cap: int, device: torch.device):
        self.rows, self.width, self._cap = rows, 0, [cap]
        self.mask = torch.zeros(rows, cap, dtype=torch.long, device=device)  # [rows, cap]
        self.cache = Cache(layer_class_to_replicate=partial(_Layer, self._cap))  # no cycle: freed with the batch
        self.owner: list[int | None] = [None] * rows  # [rows] handle of the path in each row; None: free

    @property
    def cap(self) -> int:
        return self._cap[0]

    @property
    def layers(self) -> list[_Layer]:
        return self.cache.layers

    def live(self) -> int:
        """Rows that hold an open path."""
        return sum(o is not None for o in self.owner)

    def reserve(self, extra: int, slack: bool = True) -> None:
        """Make room for `extra` more columns (and a quarter more with `slack`)."""
        need = self.width + extra
        if need <= self.cap:
            return
        cap = need + (need // 4 if slack else 0)
        for layer in self.layers:
            layer.resize(cap)
        mask = self.mask.new_zeros(self.rows, cap)  # [rows, cap]
        mask[:, : self.width] = self.mask[:, : self.width]
        self.mask, self._cap[0] = mask, cap

    def append(self, cols: torch.Tensor) -> torch.Tensor:
        """Mark the next q columns (cols [rows, q], 1 = real) before a forward writes them.
        -> the attention mask of that forward, mask[:, :width + q] [rows, width + q] (a view)."""
        q = cols.shape[1]
        self.mask[:, self.width : self.width + q] = cols
        self.width += q
        return self.mask[:, : self.width]

    def real_columns(self, row: int) -> torch.Tensor:
        """-> [n] the columns of row `row` that hold its tokens, in token order."""
        return self.mask[row, : self.width].nonzero().squeeze(-1)

    def keep(self, row: int, n: int) -> None:
        """Keep only the first n real tokens of `row` (the others become holes)."""
        self.mask[row, self.real_columns(row)[n:]] = 0

    def tokens(self, row: int) -> torch.Tensor:
        """-> [layers, 2, kv_heads, n, head_dim] the row's keys and values, compact (a copy: tests, debugging)."""
        cols = self.real_columns(row)
        return torch.stack([torch.stack([lay.k[row][:, cols.to(lay.k.device)], lay.v[row][:, cols.to(lay.v.device)]])
                            for lay in self.layers])

    def select(self, rows: list[int], extra: int, slack: bool = True) -> "KVBatch":
        """A new batch whose row i is a copy of row rows[i] (all written columns, holes kept), with
        room for `extra` more columns."""
        need = self.width + extra
        new = KVBatch(len(rows), need + (need // 4 if slack else 0), self.mask.device)
        idx = torch.tensor(rows)  # [rows'] CPU indices select on any device
        for lay in self.layers:
            nl = _Layer(new._cap)
            nl.allocate(len(rows), lay.k.shape[1], lay.k.shape[-1], lay.k.dtype, lay.k.device)
            nl.k[:, :, : self.width] = lay.k[idx.to(lay.k.device), :, : self.width]  # [rows', kv_heads, width, hd]
            nl.v[:, :, : self.width] = lay.v[idx.to(lay.v.device), :, : self.width]
            nl.n = self.width
            new.layers.append(nl)
        new.mask[:, : self.width] = self.mask[idx.to(self.mask.device), : self.width]  # [rows', width]
        new.width = self.width
        return new

    @classmethod
    def gather(cls, sources: list[tuple["KVBatch", int, int] | None], extra: int, device: torch.device,
               slack: bool = True) -> "KVBatch":
        """A new batch of len(sources) rows: row i holds the first n tokens of row r of batch b for
        sources[i] = (b, r, n), right-aligned behind left padding (None: an empty row); room for
        `extra` more columns. Copies each source row's real columns once."""
        C = max((s[2] for s in sources if s), default=0)  # widest source
        cap = C + extra + ((C + extra) // 4 if slack else 0)
        new = cls(len(sources), cap, device)
        new.width = C
        ref = next((s[0] for s in sources if s and s[2]), None)
        if ref is None:
            return new
        for lay in ref.layers:
            nl = _Layer(new._cap)
            nl.allocate(len(sources), lay.k.shape[1], lay.k.shape[-1], lay.k.dtype, lay.k.device)
            nl.n = C
            new.layers.append(nl)
        for i, s in enumerate(sources):
            if not s or not s[2]:
                continue
            b, r, n = s
            cols = b.real_columns(r)[:n]  # [n]
            new.mask[i, C - n : C] = 1
            for src, dst in zip(b.layers, new.layers):
                c = cols.to(src.k.device)  # [n] on the layer's device
                dst.k[i, :, C - n : C] = src.k[r][:, c]
                dst.v[i, :, C - n : C] = src.v[r][:, c]
        return new
