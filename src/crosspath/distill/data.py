"""Supervised examples for distillation: JSONL rows -> token ids + labels, per student tokenizer.

A training sample is tokenizer-free text (`Sample`): the user prompt, the target text the student
must learn to write, and character spans of the target that carry no loss (LeaP-T masks its
injected peer blocks). Each student encodes it with its OWN tokenizer and chat template:

    prompt  = render_prompt(tok, user)            -> labels -100 (no loss)
    target  = completion text + EOS               -> labels = the ids, except tokens that overlap a
                                                     masked character span (-100)

The target is tokenized in one piece, and a token is masked when its character span (the fast
tokenizer's offsets) overlaps a masked span, so masking never depends on how a tokenizer splits.

>>> s = Sample(id="q", user="What is 2+3?", target="2+3=5. <comment>hi</comment> So 5.", masked=[(6, 28)])
>>> s.trained_chars
12
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..jsonl import read_jsonl as read_rows  # noqa: F401  (distill's name for it)

IGNORE = -100


@dataclass
class Sample:
    id: str  # question id (several samples may share one)
    user: str  # the user turn; each student renders its own chat template around it
    target: str  # what the student learns to write
    masked: list[tuple[int, int]] = field(default_factory=list)  # [start, end) char spans of target, no loss
    style: str = ""  # teacher style (QR-Distill) or "" (LeaP-T)
    question: str = ""  # the question alone (the router reads question + target)

    @property
    def trained_chars(self) -> int:
        return len(self.target) - sum(e - s for s, e in self.masked)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss
    chars: int  # characters of the target that carry loss (the router's per-character normaliser)


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    tmp.replace(path)


def encode_sft(tok, prompt: str, target: str, masked: Sequence[tuple[int, int]] = (), max_len: int | None = None,
               add_eos: bool = True) -> Encoded | None:
    """prompt (already rendered) + target -> ids and labels; None when nothing trainable is left.

    Tokens of the prompt get IGNORE; target tokens keep their id unless their character span
    overlaps one of `masked`. The EOS token closes the target and is trained (the student learns
    to stop). `max_len` cuts the end of the target, never the prompt.
    """
    if not getattr(tok, "is_fast", False):
        raise ValueError("distillation needs a fast tokenizer (character offsets for label masking)")
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    enc = tok(target, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = list(p_ids), [IGNORE] * len(p_ids)
    for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        hidden = any(a < e and s < max(b, a + 1) for s, e in masked)  # overlap of [a, b) and [s, e)
        ids.append(t)
        labels.append(IGNORE if hidden else t)
    if add_eos and tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
        labels.append(tok.eos_token_id)
    if max_len is not None:
        ids, labels = ids[:max_len], labels[:max_len]
    if all(lb == IGNORE for lb in labels):
        return None
    return Encoded(ids, labels, max(1, len(target) - sum(e - s for s, e in masked)))


def collate(batch: Sequence[Encoded], pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels [B, T]; chars [B]."""
    import torch

    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)  # [B, T]
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(batch), T), dtype=torch.long)  # [B, T]
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    chars = torch.tensor([float(e.chars) for e in batch])  # [B]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "chars": chars}


def sequence_nll(logits, labels):
    """Per-sequence summed NLL of the labelled tokens and their count.

    logits [B, T, V] predict the next token; labels [B, T] (IGNORE = no loss).
    Returns (nll_sum [B], n_tokens [B]).

    >>> import torch
    >>> lg = torch.zeros(1, 3, 4)  # uniform over 4 tokens: every labelled token costs log 4
    >>> s, n = sequence_nll(lg, torch.tensor([[IGNORE, 1, 2]]))
    >>> round(float(s[0]), 4), int(n[0])
    (2.7726, 2)
    """
    import torch.nn.functional as F

    B, T, V = logits.shape
    target = labels[:, 1:]  # [B, T-1]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), target.reshape(-1), ignore_index=IGNORE,
                         reduction="none").view(B, T - 1)  # [B, T-1]
    keep = (target != IGNORE).float()  # [B, T-1]
    return (ce * keep).sum(1), keep.sum(1)


def target_nll(hidden, head, labels):
    """`sequence_nll` from the last hidden state, the output head applied at the labelled positions only.

    hidden [B, T, H] (after the final norm), head: the model's output layer (H -> V), labels [B, T].
    Equal to sequence_nll(head(hidden), labels) without the [B, T, V] logits, which dominate the
    training memory of a small model with a large vocabulary (SmolLM2-135M: V = 49152, 800 MB per
    copy at 8 x 512 tokens, and cross-entropy keeps several copies for the backward pass).
    Returns (nll_sum [B], n_tokens [B]).

    >>> import torch
    >>> head = torch.nn.Linear(2, 4, bias=False); _ = torch.nn.init.zeros_(head.weight)  # uniform logits
    >>> s, n = target_nll(torch.ones(1, 3, 2), head, torch.tensor([[IGNORE, 1, 2]]))
    >>> round(float(s[0]), 4), int(n[0])
    (2.7726, 2)
    """
    import torch
    import torch.nn.functional as F

    target = labels[:, 1:]  # [B, T-1]
    keep = target != IGNORE  # [B, T-1]
    ce = F.cross_entropy(head(hidden[:, :-1][keep]).float(), target[keep], reduction="none")  # [N]
    rows = keep.nonzero()[:, 0]  # [N] the sequence of each target token
    nll = torch.zeros(labels.shape[0], dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)  # [B]
    return nll, keep.sum(1).to(ce.dtype)


def plain_output_head(model):
    """The model's output layer when its logits are just head(last hidden state) and its forward takes
    `logits_to_keep` (then `target_nll` may replace the full logits); None otherwise (soft-capped or
    scaled logits, e.g. Gemma 2, Granite, Cohere: use `sequence_nll` on the model's own logits)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logits_scaling",
                                                                   "logit_scale", "output_multiplier_scale")):
        return None
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return None
    return base.get_output_embeddings()


def pooled_hidden(hidden, labels):
    """Mean of the last hidden state over the target tokens that carry loss (sequence pooling).

    hidden [B, T, H], labels [B, T] -> [B, H]. Pooling over the sequence is what makes students
    with different tokenizers comparable: their token positions do not line up, their sequences do.
    """
    keep = (labels != IGNORE).unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # [B, H]
