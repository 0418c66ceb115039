"""The thinking phase: the format warm-up before RL, and what the step logs about the phase.

`--answer-format think` (data.THINK_PROMPT, data.think_correct) asks for reasoning, then a last line
with the marker and the answer, and rewards only a correct answer after a single marker with
reasoning before it. M3PO blends exactly there: the tokens before the marker. SmolLM2-135M writes
the marker in 4-8% of its samples and is right in 10-20%, so a group of 8 rarely holds a rewarded
completion. The format warm-up (`--format-warmup N` SFT steps; default 20 with `--answer-format
think`, else 0) runs once, before step 1 of a fresh run:

    1. traces   G samples of each of the first `format_warmup_questions` training questions of a
                seeded shuffle, with the training prompt (plain sampling: no blend, no peers)
    2. keep     the samples `reward` finds correct that ended by themselves (EOS before the length
                limit) and hold no marker, or one marker with `think_correct`
    3. rewrite  a kept sample without the marker becomes  <its text>\\n#### <its extracted answer>
    4. SFT      N steps of 8 traces (a seeded shuffle, cycled): token-mean cross-entropy on the
                completion + EOS (the prompt masked), its own AdamW (lr `format_warmup_lr`, no weight
                decay), gradient-norm clip 1.0

Only the adapter changes: the RL optimizer, schedule, data stream and sampling seeds are those of a
run without warm-up, so `--format-warmup 0` changes nothing, and with the same seed GRPO, M3PO and
LeaP-GRPO all start RL from the same adapter. A resumed run never warms up again (its checkpoint
holds the warmed-up adapter). Since the warm-up does not depend on the RL options, runs that differ
only in those (GRPO and M3PO's lambda/T sweep, say) can share one: `--format-warmup-cache DIR` keeps
each warm-up (adapter, RNG state, metrics line, samples, and the held-out evaluation after it) under
a hash of the other options, and a later run with the same ones loads it and goes on exactly as if
it had warmed up itself (tested); its warm-up line then says `warmup_cached: DIR/<hash>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from crosspath.config import to_dict
from crosspath.models import render_prompt
from crosspath.tasks import count_markers, grade
from crosspath.train.data import prompt_text, think_correct
from crosspath.train.distributed import broadcast_params
from crosspath.train.leap_rollout import loss_mask
from crosspath.train.optim import clip_gradients
from crosspath.train.rng import rng_state, set_rng_state
from crosspath.train.rollout import sample_rollouts

WARMUP_BATCH = 8  # traces per SFT step
WARMUP_CHUNK = 4  # questions per sampling call
WARMUP_SEED = 7_777  # offset of the warm-up's shuffles and sampling seeds (RL steps use 0, 1, ...)


def rewrite(text: str, answer: str | None, marker: str = "####") -> str | None:
    """A correct sample as reasoning + marker + answer, or None if it cannot be one.

    >>> rewrite("3 + 4 = 7. The answer is 7.", "7")
    '3 + 4 = 7. The answer is 7.\\n#### 7'
    >>> rewrite("3 + 4 = 7\\n#### 7", "7"), rewrite("#### 7 #### 7", "7"), rewrite("no answer", None)
    ('3 + 4 = 7\\n#### 7', None, None)
    """
    n = count_markers(text, marker)
    if n > 1 or answer is None or not text.strip():
        return None
    return text.strip() if n == 1 else f"{text.rstrip()}\n{marker} {answer}"


def collect_traces(trainer) -> tuple[list[tuple], dict]:
    """([(problem, rewritten completion)], stats of the samples) for the warm-up (steps 1-3 above)."""
    from crosspath.train import trainer as T  # the loop's reward (tests replace it)

    cfg, tok = trainer.cfg, trainer.tok
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + WARMUP_SEED)
    order = torch.randperm(len(trainer.train_set), generator=gen).tolist()[:cfg.format_warmup_questions]
    problems = [trainer.train_set[i] for i in order]
    traces, seen, sums = [], set(), {"samples": 0, "format": 0, "correct": 0}
    for k in range(0, len(problems), WARMUP_CHUNK):
        chunk = problems[k:k + WARMUP_CHUNK]
        seed = (cfg.seed * 1_000_003 + WARMUP_SEED * 101 + k) % 2**62
        r = sample_rollouts(trainer.model, tok, [render_prompt(tok, prompt_text(cfg, p.question)) for p in chunk],
                            group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_k=cfg.sample_top_k, top_p=cfg.top_p, seed=seed, marker=cfg.marker)
        ended = (r.completion_mask.sum(1) < cfg.max_new_tokens).tolist()  # [N] stopped at EOS
        for i, text in enumerate(r.texts):
            p = chunk[i // cfg.group_size]
            _, correct, n = T.reward(p, text, cfg.marker, cfg.marker_rule)
            sums["samples"] += 1
            sums["format"] += n == 1
            sums["correct"] += bool(correct)
            if not (correct and ended[i]) or (n == 1 and not think_correct(p, text, cfg.marker)):
                continue
            trace = rewrite(text, grade(p, text)[0] or p.answer, cfg.marker)
            if trace is not None and (p.id, trace) not in seen:
                seen.add((p.id, trace))
                traces.append((p, trace))
    n = max(sums["samples"], 1)
    return traces, {"warmup_questions": len(problems), "warmup_samples": sums["samples"],
                    "warmup_sample_format_rate": sums["format"] / n, "warmup_sample_accuracy": sums["correct"] / n}


def collate(batch: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, ...]:
    """(prompt ids, completion ids) pairs -> (ids [B, L], attention mask [B, L], labels [B, L]), right
    padded; labels are the completion ids and -100 on the prompt and the padding.

    >>> collate([([1, 2], [3, 4]), ([5], [6])], pad=0)
    (tensor([[1, 2, 3, 4],
            [5, 6, 0, 0]]), tensor([[1, 1, 1, 1],
            [1, 1, 0, 0]]), tensor([[-100, -100,    3,    4],
            [-100,    6, -100, -100]]))
    """
    width = max(len(a) + len(b) for a, b in batch)
    fill = [width - len(a) - len(b) for a, b in batch]
    ids = torch.tensor([a + b + [pad] * f for (a, b), f in zip(batch, fill)])  # [B, L]
    mask = torch.tensor([[1] * (len(a) + len(b)) + [0] * f for (a, b), f in zip(batch, fill)])  # [B, L]
    labels = torch.tensor([[-100] * len(a) + b + [-100] * f for (a, b), f in zip(batch, fill)])  # [B, L]
    return ids, mask, labels


def sft(trainer, traces: list[tuple], steps: int) -> list[float]:
    """`steps` SFT updates of the adapter on the traces (step 4 above). Returns the losses."""
    cfg, tok, model = trainer.cfg, trainer.tok, trainer.model
    device = next(model.parameters()).device
    eos, pad = tok.eos_token_id, trainer.pad_id
    seqs = []
    for p, completion in traces:
        prompt = tok(render_prompt(tok, prompt_text(cfg, p.question)), add_special_tokens=False)["input_ids"]
        seqs.append((prompt, tok(completion, add_special_tokens=False)["input_ids"] + [eos]))
    optimizer = torch.optim.AdamW(trainer.params, lr=cfg.format_warmup_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + WARMUP_SEED + 1)
    order, losses = [], []
    model.train()
    for _ in range(steps):
        while len(order) < WARMUP_BATCH:
            order += torch.randperm(len(seqs), generator=gen).tolist()
        batch, order = [seqs[i] for i in order[:WARMUP_BATCH]], order[WARMUP_BATCH:]
        ids, mask, labels = (x.to(device) for x in collate(batch, pad))
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]  # [B, L-1, V]
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        clip_gradients(trainer.params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    broadcast_params(trainer.params)  # every rank ran the same steps; rank 0's weights are the truth
    return losses


def format_warmup(trainer) -> dict | None:
    """Run the warm-up when the config asks for it (None when off). Returns the metrics of its line
    in metrics.jsonl (step 0, `warmup: true`); the rewritten traces go to samples/warmup.jsonl."""
    steps = trainer.cfg.resolved_format_warmup()
    if steps == 0:
        return None
    t0 = time.time()
    traces, stats = collect_traces(trainer)
    if not traces and trainer.dist.main:
        print(f"format warm-up: no correct sample among {stats['warmup_samples']}; RL starts without it")
    losses = sft(trainer, traces, steps) if traces else []
    trainer.run.write_samples("warmup", [{"id": p.id, "question": p.question, "gold": p.answer, "text": text}
                                         for p, text in traces])
    return {"warmup": True, **stats, "warmup_traces": len(traces), "warmup_steps": len(losses),
            "warmup_loss_first": losses[0] if losses else None, "warmup_loss_last": losses[-1] if losses else None,
            "warmup_seconds": round(time.time() - t0, 3)}


# options that act only after the warm-up (RL, logging, the run folder): runs that differ only in
# these share a warm-up; every other option is part of its cache key
WARMUP_FREE = {"algo", "steps", "questions_per_step", "lr", "betas", "weight_decay", "warmup_ratio", "max_grad_norm",
               "optim", "beta", "loss_type", "scale_rewards", "importance_level", "epsilon", "epsilon_high",
               "entropy_coef", "baseline", "spo_rho", "spo_init_samples", "seed_grpo", "seed_alpha", "seed_scaling",
               "length_penalty", "length_penalty_top", "length_penalty_min_ratio", "hints", "hint_fraction",
               "hint_target", "hint_rounds", "num_iterations", "filter_groups", "filter_std_eps", "max_filter_rounds",
               "m3po_lambda", "m3po_temperature", "m3po_weighting", "m3po_ref_replay", "rollout_backend",
               "rollout_base_url", "rollout_gpu_memory_utilization", "rollout_max_model_len", "leap_rounds",
               "leap_round_tokens", "leap_summary_tokens", "leap_answer_tokens", "leap_peers_k", "leap_router",
               "eval_every", "save_every", "keep_checkpoints", "log_samples", "out", "resume", "overwrite",
               "tensorboard", "progress", "format_warmup_cache", "history"}


def warmup_key(cfg) -> tuple[str, dict]:
    """(cache folder name, the options it stands for): a hash of every option not in WARMUP_FREE."""

    opts = {k: v for k, v in sorted(to_dict(cfg).items()) if k not in WARMUP_FREE}
    blob = json.dumps(opts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16], opts


def warm_up(trainer) -> dict | None:
    """The warm-up and the held-out evaluation of the warmed-up adapter (its metrics line), or None
    when off. With --format-warmup-cache a warm-up done before with the same options is loaded
    (adapter, RNG state, line, samples) instead of being run again, so the run goes on exactly as
    if it had warmed up itself; a new one is added to the cache."""
    cfg = trainer.cfg
    if cfg.resolved_format_warmup() == 0:
        return None
    folder = None
    if cfg.format_warmup_cache and not trainer.dist.active:
        folder = Path(cfg.format_warmup_cache) / warmup_key(cfg)[0]
    if folder is not None and (folder / "meta.json").exists():
        return _load_warmup(trainer, folder)
    row = format_warmup(trainer)
    if cfg.eval_every and trainer.eval_set:
        row.update(trainer.evaluate("eval-warmup"))
    if folder is not None:
        _save_warmup(trainer, folder, row)
    return row


def _save_warmup(trainer, folder: Path, row: dict) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "samples").mkdir(parents=True)
    torch.save({n: p.detach().cpu() for n, p in trainer.model.named_parameters() if p.requires_grad},
               tmp / "adapter.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    for name in ("warmup", "eval-warmup"):
        src = trainer.run.path / "samples" / f"{name}.jsonl"
        if src.exists():
            shutil.copy(src, tmp / "samples" / src.name)
    (tmp / "meta.json").write_text(json.dumps({"row": row, "options": warmup_key(trainer.cfg)[1]}, indent=1,
                                              default=str))
    try:
        tmp.rename(folder)  # complete or absent; a run that got there first wins
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_warmup(trainer, folder: Path) -> dict:
    weights = torch.load(folder / "adapter.pt", map_location="cpu")
    params = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        raise ValueError(f"{folder}: the cached warm-up holds other trainable weights than this model's")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n])
    set_rng_state(torch.load(folder / "rng.pt", weights_only=False))
    (trainer.run.path / "samples").mkdir(parents=True, exist_ok=True)
    for src in (folder / "samples").glob("*.jsonl"):
        shutil.copy(src, trainer.run.path / "samples" / src.name)
    row = {**json.loads((folder / "meta.json").read_text())["row"], "warmup_cached": str(folder)}
    if trainer.cfg.eval_every and trainer.eval_set and "eval_accuracy" not in row:  # cached by a run without
        row.update(trainer.evaluate("eval-warmup"))
    return row


def marked_thinking(rollout, scored: list, n: int) -> tuple[float, float]:
    """(thinking tokens, tokens) of the first n completions that wrote exactly one marker: their ratio
    is `thinking_share_marked`, the share of a formatted completion spent reasoning (`thinking_share`
    also counts the completions without a marker, which think throughout)."""
    rows = torch.tensor([s[2] == 1 for s in scored[:n]], dtype=torch.bool)  # [n]
    if not bool(rows.any()):
        return 0.0, 0.0
    think = rollout.thinking_mask[:n][rows.to(rollout.thinking_mask.device)]  # [m, T]
    tokens = loss_mask(rollout)[:n][rows.to(rollout.thinking_mask.device)]  # [m, T]
    return float(think.sum()), float(tokens.sum())
