"""Step-by-step sampler for GRPO/M3PO rollouts that can replace, and records, every next input.

    prompts (B questions) -> each repeated G times, prompt-major (rows [k*G, (k+1)*G) = question k)
    -> left padded, one prefill forward with inputs_embeds (once per prompt; the cache is repeated G
    times), then one token per step with a KV cache:

    step t:  logits_t  = model(input of step t - 1 | cache)[:, -1]         [N, V]   N = B*G
             probs_t   = sampling_probs(logits_t, temperature, top_k, top_p)  backends/sampling.py
             token_t   ~ probs_t                                           (argmax if temperature 0)
             e_t       = embedding(token_t)                                [N, D]
             h_t       = input_hook(t, probs_t, e_t, thinking_t) or e_t    M3PO: m3po.make_hook(G)
             h_t is fed as inputs_embeds at the next step, and recorded as Rollout.inputs_embeds[:, t]

Rollout.inputs_embeds[:, t] is therefore the input the model actually read at completion position t,
i.e. the (possibly blended) stand-in for completion token t; it conditions tokens t+1, t+2, ...
`sequence_logprobs(model, rollout, use_recorded_embeds=True)` replays exactly those inputs in one
full forward, which is the loss forward of M3PO; with a hook that returns e_t unchanged (or lam = 0)
everything is plain GRPO sampling.

thinking_t (and Rollout.thinking_mask[:, t]) is True while the completion up to and including token t
does not yet contain the answer marker (default "####") and the row has not finished; the token that
completes the marker is already not thinking, so its input is plain. The marker is found on the
decoded text of the last few tokens of each row, so it is caught however the tokenizer splits it.

The sampler runs under torch.no_grad() with the model temporarily in eval mode (no dropout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from crosspath.backends.sampling import sampling_probs
from crosspath.models import cache_kwargs, kv_cache
from crosspath.train.grpo import token_logprobs

InputHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Rollout:
    """N = B*G sampled completions, prompt-major. All tensors on the model's device.

    prompt_ids:        [N, P] long, left padded with the pad id
    prompt_mask:       [N, P] long, 1 on real prompt tokens
    completion_ids:    [N, T] long, sampled tokens, right padded with the pad id after EOS
    completion_mask:   [N, T] long, 1 up to and including EOS (all 1 for a row cut at max length)
    thinking_mask:     [N, T] bool, True at the tokens of the thinking phase: False from the token
                       that completes the answer marker on, at EOS and on padding
    logprobs:          [N, T] float32, log p(token) under the model at temperature 1, no top-k/top-p:
                       what `sequence_logprobs(..., temperature=1.0)` reproduces; 0 where mask is 0
    sampling_logprobs: [N, T] float32, log p(token) under the distribution actually sampled from
                       (temperature, top-k, top-p applied; 0 for greedy)
    inputs_embeds:     [N, T, D] or None, the input fed at completion position t (embedding of
                       token t, or the hook's replacement); recorded when a hook is given or asked for
    texts:             list of N decoded completions (special tokens skipped)
    group_size:        G
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    thinking_mask: torch.Tensor
    logprobs: torch.Tensor
    sampling_logprobs: torch.Tensor
    inputs_embeds: torch.Tensor | None
    texts: list[str]
    group_size: int

    def select(self, rows: torch.Tensor | list[int] | slice) -> Rollout:
        """The rollout restricted to some rows (e.g. a micro-batch). group_size is kept as is."""
        idx = torch.arange(len(self.texts))[rows] if isinstance(rows, slice) else torch.as_tensor(rows)
        idx = idx.to(device=self.prompt_ids.device, dtype=torch.long)  # [n]
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return replace(
            self,
            prompt_ids=pick(self.prompt_ids),
            prompt_mask=pick(self.prompt_mask),
            completion_ids=pick(self.completion_ids),
            completion_mask=pick(self.completion_mask),
            thinking_mask=pick(self.thinking_mask),
            logprobs=pick(self.logprobs),
            sampling_logprobs=pick(self.sampling_logprobs),
            inputs_embeds=pick(self.inputs_embeds),
            texts=[self.texts[i] for i in idx.tolist()],
        )


def cat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Concatenate rollouts row-wise: prompts re-padded on the left, completions on the right."""
    if len(parts) == 1:
        return parts[0]
    p, t = max(r.prompt_ids.shape[1] for r in parts), max(r.completion_ids.shape[1] for r in parts)

    def pad(x, width, value, left=False):  # [N, w, ...] -> [N, width, ...]
        if x is None:
            return None
        extra = [0, 0] * (x.dim() - 2) + ([width - x.shape[1], 0] if left else [0, width - x.shape[1]])
        return torch.nn.functional.pad(x, extra, value=value)

    cat = lambda name, width, value, left=False: (  # noqa: E731
        None if getattr(parts[0], name) is None
        else torch.cat([pad(getattr(r, name), width, value, left) for r in parts]))
    return Rollout(prompt_ids=cat("prompt_ids", p, pad_id, True), prompt_mask=cat("prompt_mask", p, 0, True),
                   completion_ids=cat("completion_ids", t, pad_id), completion_mask=cat("completion_mask", t, 0),
                   thinking_mask=cat("thinking_mask", t, False), logprobs=cat("logprobs", t, 0.0),
                   sampling_logprobs=cat("sampling_logprobs", t, 0.0), inputs_embeds=cat("inputs_embeds", t, 0.0),
                   texts=[x for r in parts for x in r.texts], group_size=parts[0].group_size)


def trim(r: Rollout) -> Rollout:
    """Drop prompt columns that are padding in every row and completion columns after every EOS."""
    p0 = int(r.prompt_mask.any(0).long().argmax())
    t = max(int(r.completion_mask.sum(1).max()), 1)
    cut = lambda x: None if x is None else x[:, :t]  # noqa: E731
    return replace(r, prompt_ids=r.prompt_ids[:, p0:], prompt_mask=r.prompt_mask[:, p0:],
                   completion_ids=cut(r.completion_ids), completion_mask=cut(r.completion_mask),
                   thinking_mask=cut(r.thinking_mask), logprobs=cut(r.logprobs),
                   sampling_logprobs=cut(r.sampling_logprobs), inputs_embeds=cut(r.inputs_embeds))


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids [N, P], mask [N, P]), left padded. Example: [[5], [6, 7]], 0 ->
    ids [[0, 5], [6, 7]], mask [[0, 1], [1, 1]]."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask  # [N, P], [N, P]


def _eos_ids(model, tokenizer, eos_token_ids: list[int] | None) -> list[int]:
    if eos_token_ids is not None:
        return list(eos_token_ids)
    ids = set()
    config = getattr(model, "generation_config", None)
    for source in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if source is not None:
            ids.update(source if isinstance(source, (list, tuple)) else [source])
    return sorted(ids)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding: mask [N, L] -> [N, L] (0, 1, ... over real tokens)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)  # [N, L]


@torch.no_grad()
def sample_rollouts(
    model,
    tokenizer,
    prompts: list[str],
    group_size: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    input_hook: InputHook | None = None,
    record_embeds: bool | None = None,
    marker: str = "####",
    eos_token_ids: list[int] | None = None,
    add_special_tokens: bool = False,
    share_prefill: bool = True,
) -> Rollout:
    """Sample `group_size` completions for each prompt, step by step. See the module docstring.

    prompts are final strings (chat template already applied, so no special tokens are added by
    default). seed makes a fresh torch.Generator on the model's device; pass `generator` to keep one
    stream across calls (it wins over seed); neither = torch's global RNG. record_embeds defaults to
    `input_hook is not None`. input_hook(step, probs [N, V], embeds [N, D], thinking [N] bool)
    returns the inputs [N, D] of the next step. share_prefill (default) runs the prompt forward once
    per prompt and repeats its KV cache and logits over the G rows of the group (TRL and
    `model.generate(num_return_sequences=G)` encode each prompt G times); off, every row is encoded.

    Example: r = sample_rollouts(model, tok, ["1+1=", "2+2="], group_size=4, max_new_tokens=32,
             seed=0, input_hook=m3po.make_hook(4))  ->  r.completion_ids: [8, <=32]
    """
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()
    eos = torch.tensor(_eos_ids(model, tokenizer, eos_token_ids), dtype=torch.long, device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(eos[0])
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    record = input_hook is not None if record_embeds is None else record_embeds

    encoded = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
    if share_prefill:  # one prefill per prompt, its cache and logits repeated G times
        first_ids, first_mask = (x.to(device) for x in left_pad(encoded, pad_id))  # [B, P], [B, P]
        prompt_ids = first_ids.repeat_interleave(group_size, 0)  # [N, P]
        prompt_mask = first_mask.repeat_interleave(group_size, 0)  # [N, P]
    else:
        rows = [ids for ids in encoded for _ in range(group_size)]  # prompt-major
        prompt_ids, prompt_mask = (x.to(device) for x in left_pad(rows, pad_id))  # [N, P], [N, P]
        first_ids, first_mask = prompt_ids, prompt_mask
    n = prompt_ids.shape[0]

    was_training = model.training
    model.eval()
    attn = prompt_mask  # [N, L] grows by one column per step
    finished = torch.zeros(n, dtype=torch.bool, device=device)  # [N]
    thinking = torch.ones(n, dtype=torch.bool, device=device)  # [N]
    tokens, masks, thinks, logps, sample_logps, recorded = [], [], [], [], [], []
    try:
        out = model(inputs_embeds=embed(first_ids), attention_mask=first_mask, position_ids=_positions(first_mask),
                    use_cache=True, logits_to_keep=1)
        cache = kv_cache(out)
        logits = out.logits[:, -1].float()  # [B or N, V]
        if share_prefill and group_size > 1:
            cache.batch_repeat_interleave(group_size)
            logits = logits.repeat_interleave(group_size, 0)  # [N, V]
        for step in range(max_new_tokens):
            probs = sampling_probs(logits, temperature, top_k, top_p)  # [N, V]
            if temperature == 0:
                token = probs.argmax(-1)  # [N]
            else:
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # [N]
            active = ~finished  # [N] this token counts
            token = torch.where(active, token, torch.full_like(token, pad_id))  # [N]
            logp = torch.log_softmax(logits, -1).gather(-1, token[:, None]).squeeze(-1)  # [N]
            sample_logp = probs.gather(-1, token[:, None]).squeeze(-1).log()  # [N]
            tokens.append(token)
            masks.append(active.long())
            logps.append(torch.where(active, logp, torch.zeros_like(logp)))
            sample_logps.append(torch.where(active, sample_logp, torch.zeros_like(sample_logp)))

            finished = finished | torch.isin(token, eos)  # [N] EOS counts, then the row stops
            thinking = thinking & ~finished & ~_marker_done(tokenizer, tokens, thinking, marker)
            thinks.append(thinking.clone())

            next_inputs = embed(token)  # [N, D]
            if input_hook is not None:
                next_inputs = input_hook(step, probs, next_inputs, thinking.clone())  # [N, D]
            if record:
                recorded.append(next_inputs)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            attn = torch.cat([attn, active.long()[:, None]], dim=1)  # [N, L + 1]
            out = model(inputs_embeds=next_inputs[:, None, :], attention_mask=attn,
                        position_ids=_positions(attn)[:, -1:], use_cache=True, **cache_kwargs(cache))
            cache = kv_cache(out)
            logits = out.logits[:, -1].float()  # [N, V]
    finally:
        model.train(was_training)

    completion_ids = torch.stack(tokens, 1)  # [N, T]
    completion_mask = torch.stack(masks, 1)  # [N, T]
    texts = tokenizer.batch_decode(
        [ids[m.bool()].tolist() for ids, m in zip(completion_ids, completion_mask)],
        skip_special_tokens=True,
    )
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        thinking_mask=torch.stack(thinks, 1),  # [N, T]
        logprobs=torch.stack(logps, 1),  # [N, T]
        sampling_logprobs=torch.stack(sample_logps, 1),  # [N, T]
        inputs_embeds=torch.stack(recorded, 1) if record else None,  # [N, T, D]
        texts=texts,
        group_size=group_size,
    )


def _marker_done(tokenizer, tokens: list[torch.Tensor], thinking: torch.Tensor, marker: str):
    """[N] bool: the rows still thinking whose last few decoded tokens contain the marker.

    Only the tail is decoded (enough tokens for the marker even if every token carried one
    character, plus slack for tokens that decode to nothing), so a step costs O(N), not O(N * T).
    """
    done = torch.zeros_like(thinking)  # [N]
    rows = thinking.nonzero().squeeze(-1).tolist()
    if not rows:
        return done
    window = torch.stack(tokens[-(len(marker) + 8):], 1)[rows].tolist()  # [n_rows, <=W]
    texts = tokenizer.batch_decode(window, skip_special_tokens=False)
    hits = [row for row, text in zip(rows, texts) if marker in text]
    done[hits] = True
    return done


def sequence_logprobs(
    model, rollout: Rollout, use_recorded_embeds: bool = True, temperature: float = 1.0,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the completion tokens in one full forward (with grad): [N, T] float32
    (with `with_entropy`, also the entropy of the next-token distribution at each position, [N, T]).

    Input = embedding(prompt tokens) followed by the completion inputs at positions 0..T-2
    (rollout.inputs_embeds when use_recorded_embeds, else embedding(completion_ids)); the logits
    at the last T positions predict completion tokens 0..T-1. With the recorded inputs this is the
    M3PO loss forward and reproduces rollout.logprobs (temperature 1); with plain ids it is what
    the same tokens would score without the blend (e.g. the reference model: call it inside
    `with model.disable_adapter():` for a peft model). Masked positions are not zeroed; multiply
    by rollout.completion_mask. Runs in the model's current mode (set eval, or LoRA dropout 0, for
    an exact match with the rollout).

    Example: lp = sequence_logprobs(model, r); (lp - r.logprobs).abs().max() < 1e-4 in fp32
    """
    embed = model.get_input_embeddings()
    t = rollout.completion_ids.shape[1]
    prompt_in = embed(rollout.prompt_ids)  # [N, P, D]
    if use_recorded_embeds:
        if rollout.inputs_embeds is None:
            raise ValueError("rollout has no recorded inputs_embeds (sample with record_embeds=True)")
        completion_in = rollout.inputs_embeds.to(prompt_in.dtype)  # [N, T, D]
    else:
        completion_in = embed(rollout.completion_ids)  # [N, T, D]
    inputs = torch.cat([prompt_in, completion_in[:, :-1]], dim=1)  # [N, P + T - 1, D]
    attn = torch.cat([rollout.prompt_mask, rollout.completion_mask[:, :-1]], dim=1)  # [N, P+T-1]
    out = model(inputs_embeds=inputs, attention_mask=attn, position_ids=_positions(attn),
                use_cache=False, logits_to_keep=t)
    return token_logprobs(out.logits, rollout.completion_ids, temperature, with_entropy)  # [N, T] (, [N, T])


def greedy_decode(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 256, **kwargs
) -> list[str]:
    """Evaluation decoding: one path per prompt, greedy, no blend. Returns the completion texts.

    Example: greedy_decode(model, tok, ["Q: 1+1?\\nA:"], max_new_tokens=16) -> [" 2 #### 2"]
    """
    rollout = sample_rollouts(model, tokenizer, prompts, group_size=1,
                              max_new_tokens=max_new_tokens, temperature=0.0, **kwargs)
    return rollout.texts
