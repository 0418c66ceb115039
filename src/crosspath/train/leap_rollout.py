"""LeaP groups as GRPO rollouts: the inference loop (infer/leap.py) with masks of the path's own tokens.

The group of a question is one LeaP run of N = group_size paths with the current policy: rounds,
summaries, router, peers' blocks and forced answer are `leap.solve`, unchanged, on the hf backend
around the trainer's (LoRA-wrapped) model. Only the path store differs: `TokenPathStore` keeps, for
every path, the exact token sequence the model read and wrote, as a concatenation of segments:

    segment        tokens                                          target (loss mask)
    prompt         tokenizer(prompt) (chat template + pre-fill)    0  (prompt_ids)
    generated      Completion.token_ids, as sampled (+ EOS)        1  reasoning, summaries, answer
    injected       tokenizer(text) of the appended text            0  trigger + <summarize> opener,
                                                                      peers' block, "\\boxed{" lead-in,
                                                                      a repaired </summarize>

and `ExactHF` (an HFGenerator) feeds a path exactly those ids (it never re-tokenizes the text), so
the log-probs of the loss forward over the sequence are those of the rollout. Text that is cut
(a stop string inside the last token, a dropped half-written paragraph, a summary's </think>)
removes the tokens that end past the cut; the part of a removed token that stays in the text is
re-added as injected context. Dropped text is in no sequence: no later token was conditioned on it.

With `--rollout-backend vllm|openai` the same bookkeeping runs on an inference engine:
`EngineTokenStore` (train/engine_rollout.py) sends every path's exact ids to the engine each call.

Reward: the correctness of the path's own text (peers' blocks removed, `leap.own_text`), as
inference grades it. Advantages are then normalised within the LeaP group by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from types import SimpleNamespace

import torch

from crosspath.backends.hf import HFGenerator
from crosspath.infer import leap
from crosspath.infer.budget import leap_budget
from crosspath.infer.paths import PathStore, PathTrace
from crosspath.models import render_prompt
from crosspath.tasks import grade
from crosspath.train.distributed import all_reduce_sum
from crosspath.train.rollout import Rollout, cat_rollouts, left_pad


@dataclass
class LeapRollout(Rollout):
    """A Rollout whose completion holds generated AND injected tokens. completion_mask is 1 on every
    real token (it is also the attention mask); target_mask [N, T] is 1 only on the generated ones:
    the loss mask. logprobs are recorded on targets (0 elsewhere)."""

    target_mask: torch.Tensor | None = None

    def select(self, rows) -> "LeapRollout":
        out = Rollout.select(self, rows)
        idx = torch.arange(len(self.texts))[rows] if isinstance(rows, slice) else torch.as_tensor(rows)
        return replace(out, target_mask=self.target_mask[idx.to(self.target_mask.device)])


def loss_mask(r: Rollout) -> torch.Tensor:
    """[N, T] the tokens the loss covers: target_mask of a LeapRollout, else completion_mask."""
    target = getattr(r, "target_mask", None)
    return r.completion_mask if target is None else target[:, : r.completion_ids.shape[1]]


def cat_leap(parts: list[LeapRollout], pad_id: int) -> LeapRollout:
    """cat_rollouts, keeping target_mask (right padded with 0)."""
    base = cat_rollouts(parts, pad_id)
    t = base.completion_ids.shape[1]
    target = torch.cat([torch.nn.functional.pad(p.target_mask, (0, t - p.target_mask.shape[1])) for p in parts])
    return LeapRollout(**{f.name: getattr(base, f.name) for f in fields(Rollout)}, target_mask=target)


# ---- exact token bookkeeping -------------------------------------------------------------------------
@dataclass
class PathTokens:
    """One path's sequence: ids, the char offset in its text where each ends, target flag, log-prob."""

    ids: list[int]
    ends: list[int]
    target: list[int]
    logprobs: list[float]

    def crop(self, n_chars: int) -> None:
        keep = len(self.ids)
        while keep and self.ends[keep - 1] > n_chars:
            keep -= 1
        for name in ("ids", "ends", "target", "logprobs"):
            setattr(self, name, getattr(self, name)[:keep])


class ExactHF(HFGenerator):
    """HFGenerator whose bound paths read exactly their PathTokens (no re-tokenization of text)."""

    def _pending_ids(self, p):
        t: PathTokens | None = getattr(p, "exact", None)
        if t is None:
            return super()._pending_ids(p)
        n = 0
        while n < min(len(p.ids), len(t.ids)) and p.ids[n] == t.ids[n]:
            n += 1
        n = min(n, len(t.ids) - 1)  # re-feed at least the last token: its logits start the call
        if n < len(p.ids):  # keep only the cached prefix that is still the path's sequence
            p.keep(n)
        return t.ids[n:], t.ends[n:]


class TokenPathStore(PathStore):
    """A PathStore (sessions on an ExactHF) that records every path's segments (module docstring)."""

    def __init__(self, gen: ExactHF):
        super().__init__(gen, use_sessions=True)
        self.tok, self.tokens, self.prompt_len = gen.tok, [], []
        self.eos_ids, self.pad_id, self.device = gen.eos_ids, gen.pad_id, next(gen.model.parameters()).device
        self.engine = False  # True in EngineTokenStore: logprobs are the engine's sampling log-probs

    def add(self, prompt: str) -> int:
        i = super().add(prompt)
        t = PathTokens([], [], [], [])
        self._inject(t, 0, prompt)
        self.tokens.append(t)
        self.prompt_len.append(len(t.ids))
        self.gen._paths[self._handles[i]].exact = t
        return i

    def extend(self, i: int, text: str) -> None:
        self._inject(self.tokens[i], len(self.text(i)), text)
        super().extend(i, text)

    def rewind(self, i: int, n_chars: int) -> None:
        if n_chars <= 0:
            return
        t, new_len = self.tokens[i], len(self.text(i)) - n_chars
        super().rewind(i, n_chars)
        t.crop(new_len)
        start = t.ends[-1] if t.ends else 0
        self._inject(t, start, self.text(i)[start:new_len])

    def advance(self, ids, params):
        base = {i: len(self.text(i)) for i in ids}
        outs = super().advance(ids, params.with_(logprobs=True))
        for i, c in zip(ids, outs):
            self._generated(self.tokens[i], base[i], c)
        return outs

    def _inject(self, t: PathTokens, start: int, text: str) -> None:
        if not text:
            return
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        t.ids += enc["input_ids"]
        t.ends += [start + e for _, e in enc["offset_mapping"]]
        t.target += [0] * len(enc["input_ids"])
        t.logprobs += [0.0] * len(enc["input_ids"])

    def _generated(self, t: PathTokens, base: int, c) -> None:
        """Append a completion: its tokens up to the cut of c.text as targets, the rest of c.text
        (a token split by the cut) as context, and a final EOS as a target."""
        eos = bool(c.token_ids) and c.token_ids[-1] in self.eos_ids
        body = c.token_ids[:-1] if eos else c.token_ids
        ends = self._ends(body)
        keep = len(body)
        while keep and (ends[keep - 1] > len(c.text) or
                        self.tok.decode(body[:keep], skip_special_tokens=True) != c.text[: ends[keep - 1]]):
            keep -= 1
        t.ids += body[:keep]
        t.ends += [base + e for e in ends[:keep]]
        t.target += [1] * keep
        t.logprobs += list((c.logprobs or [0.0] * keep)[:keep])
        done = ends[keep - 1] if keep else 0
        self._inject(t, base + done, c.text[done:])
        if eos and done == len(c.text):
            t.ids.append(c.token_ids[-1])
            t.ends.append(base + len(c.text))
            t.target.append(1)
            t.logprobs.append(c.logprobs[-1])

    def _ends(self, body: list[int]) -> list[int]:
        """Char end of each token in the decoded text (by prefixes when single pieces do not add up)."""
        pieces = [len(self.tok.decode([x], skip_special_tokens=True)) for x in body]
        ends, total = [], 0
        for n in pieces:
            total += n
            ends.append(total)
        if body and total != len(self.tok.decode(body, skip_special_tokens=True)):
            ends = [len(self.tok.decode(body[: j + 1], skip_special_tokens=True)) for j in range(len(body))]
        return ends


# ---- the rollout -------------------------------------------------------------------------------------
def leap_options(cfg) -> leap.LeapOptions:
    """The LeaP options of a TrainConfig."""
    return leap.LeapOptions(rounds=cfg.leap_rounds, round_tokens=cfg.leap_round_tokens, peers_k=cfg.leap_peers_k,
                            router=cfg.leap_router, summary_tokens=cfg.leap_summary_tokens,
                            answer_tokens=cfg.leap_answer_tokens)


def path_budget(cfg) -> int:
    """Most tokens one LeaP path generates under a TrainConfig (infer/budget.py)."""
    o = leap_options(cfg)
    return leap_budget(SimpleNamespace(rounds=o.rounds, round_tokens=o.round_tokens, summary_tokens=o.summary_tokens,
                                       answer_tokens=o.answer_tokens))


def sample_leap(model, tokenizer, problems, cfg, seed: int, max_batch: int = 64, store: TokenPathStore | None = None):
    """One LeaP run of cfg.group_size paths per problem with `model` (eval mode while sampling), or on
    `store` (an inference engine's: train/engine_rollout.py). Returns (LeapRollout prompt-major with
    texts = own texts, traces per problem, stats sums)."""
    store = store or TokenPathStore(ExactHF(model, tokenizer, max_batch=max_batch))
    sampling = SimpleNamespace(paths=cfg.group_size, temperature=cfg.temperature, top_p=cfg.top_p,
                               sample_top_k=cfg.sample_top_k, min_p=0.0)
    render = lambda user, prefill="": render_prompt(tokenizer, user, prefill=prefill)  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        traces = leap.solve(problems, store, sampling, render, seed % 2**31, leap_options(cfg))
    finally:
        model.train(was_training)
    flat = [t for per_q in traces for t in per_q]  # store ids are question-major, path order: 0..N-1
    rollout = to_rollout(store, [tr.own_text for tr in flat], cfg.group_size)
    store.close()
    return rollout, traces, exchange_stats(problems, traces)


def to_rollout(store: TokenPathStore, texts: list[str], group_size: int) -> LeapRollout:
    """The store's sequences as a LeapRollout: prompt left padded, the rest right padded."""
    device, pad, toks = store.device, store.pad_id, store.tokens
    prompt_ids, prompt_mask = left_pad([t.ids[:n] for t, n in zip(toks, store.prompt_len)], pad)
    rest = [t.ids[n:] for t, n in zip(toks, store.prompt_len)]
    width = max(max(len(r) for r in rest), 1)
    right = lambda rows, value: torch.tensor([r + [value] * (width - len(r)) for r in rows])  # noqa: E731
    completion_ids = right(rest, pad)  # [N, T]
    completion_mask = right([[1] * len(r) for r in rest], 0)  # [N, T]
    target = right([t.target[n:] for t, n in zip(toks, store.prompt_len)], 0)  # [N, T]
    logprobs = right([t.logprobs[n:] for t, n in zip(toks, store.prompt_len)], 0.0).float()  # [N, T]
    return LeapRollout(prompt_ids=prompt_ids.to(device), prompt_mask=prompt_mask.to(device),
                       completion_ids=completion_ids.to(device), completion_mask=completion_mask.to(device),
                       thinking_mask=torch.zeros_like(completion_mask, dtype=torch.bool).to(device),
                       logprobs=logprobs.to(device), sampling_logprobs=(logprobs if store.engine else  # engine's, processed
                                                                        torch.zeros_like(logprobs)).to(device),
                       inputs_embeds=None, texts=list(texts), group_size=group_size,
                       target_mask=target.to(device))


# ---- what the exchange did -----------------------------------------------------------------------------
STATS = ("paths", "read_peers", "changed", "wrong_to_right", "right_to_wrong", "summaries", "summary_tokens",
         "path_tokens")


def _correct(problem, answer: str | None) -> bool:
    return bool(answer) and grade(problem, f"\\boxed{{{answer}}}")[1]


def exchange_stats(problems, traces: list[list[PathTrace]]) -> dict[str, float]:
    """Sums over paths: how many read peers (a peers' block with at least one peer), and of those how
    many ended with another answer than the one they held right before their first peers' block
    (changed), going wrong -> right or right -> wrong; summaries written and their tokens; tokens."""
    s = dict.fromkeys(STATS, 0.0)
    for problem, per_q in zip(problems, traces):
        for t in per_q:
            s["paths"] += 1
            s["path_tokens"] += t.tokens
            for rd in t.rounds:
                if "summary_tokens" in rd:
                    s["summaries"] += 1
                    s["summary_tokens"] += rd["summary_tokens"]
            first = next((rd for rd in t.rounds if rd.get("peers")), None)
            if first is None:
                continue
            s["read_peers"] += 1
            before = first.get("answer")
            after, right_after = grade(problem, t.own_text if t.own_text is not None else t.text)
            right_before = _correct(problem, before)
            s["changed"] += float((before or "").strip() != (after or "").strip())
            s["wrong_to_right"] += float(right_after and not right_before)
            s["right_to_wrong"] += float(right_before and not right_after)
    return s


def exchange_metrics(sums: dict[str, float]) -> dict[str, float]:
    """The logged leap_* metrics of one step from summed stats (all ranks)."""
    s = dict(zip(STATS, all_reduce_sum([sums.get(k, 0.0) for k in STATS])))
    paths, readers = max(s["paths"], 1.0), max(s["read_peers"], 1.0)
    return {"leap_read_peers": s["read_peers"] / paths, "leap_changed": s["changed"] / readers,
            "leap_wrong_to_right": s["wrong_to_right"] / readers, "leap_right_to_wrong": s["right_to_wrong"] / readers,
            "leap_summary_tokens": s["summary_tokens"] / max(s["summaries"], 1.0),
            "leap_path_tokens": s["path_tokens"] / paths}
