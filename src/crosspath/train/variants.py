"""What the RL variants add to a training step, in the order the step runs them.

    sample      G completions per question (the trainer)
    hints       --hints guide|seele: questions whose completions all got reward 0 are sampled again
                with the first steps of a solution in the prompt (hints.py); the hinted completions
                join the question's group, keep the plain prompt for the loss, and carry their
                sampling log-probs as the importance-ratio denominator
    filter      --filter-groups: groups whose reward std is <= --filter-std-eps are dropped
    rewards     --length-penalty grpo-lambda|always: Kimi-1.5 length reward added in the groups that
                are mostly right (shaping.py)
    advantages  --baseline group: the group's mean (and std, --scale-rewards) (grpo.py);
                --baseline spo: the question's persistent value tracker, normalised over the batch
                (spo.py); --seed-grpo: times f(alpha SE / log G) of the group's semantic entropy
    loss        --importance-level, --loss-type cispo, --entropy-coef: grpo.policy_loss

`Variants` holds the state that lives across steps (SPO trackers, SEELE's observations); it goes
into the checkpoint's extra.pt and comes back on resume. The math is in grpo.py, spo.py, shaping.py
and hints.py; this module only feeds it the step's rows. Every row of a step has a group id (its
question's index in the step) and a hinted flag; samples/step-N.jsonl records group and path ids.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from crosspath.config import ConfigError
from crosspath.models import render_prompt
from crosspath.tasks import SameAnswer, extract_answer
from crosspath.train.data import prompt_text, reward_options
from crosspath.train.distributed import all_gather_objects, all_reduce_sum
from crosspath.train.grpo import group_stats
from crosspath.train.hints import HintMemory, hint_count, hint_steps, hinted_question
from crosspath.train.rollout import Rollout, cat_rollouts, left_pad, sample_rollouts, sequence_logprobs
from crosspath.train.shaping import (answer_clusters, length_penalty_groups, length_shaped_rewards, seed_scale,
                                     semantic_entropy)
from crosspath.train.spo import ValueTracker, spo_advantages, policy_divergence

ENTROPY_ONLY_STEPS = 10  # steps in a row with every advantage 0 before an entropy-bonus run is warned about

HINT_ATTEMPT = 1000  # sampling-seed offset of the hinted rounds (the refill rounds use 0, 1, ...)
SPO_INIT_ATTEMPT = 2000  # ... and of SPO's first-visit samples


def check(cfg) -> None:
    """Refuse option combinations that cannot do what they say, with the other option checks
    (ConfigError, before the run directory is claimed or any model loads)."""
    clashes = []
    if cfg.group_size < 2 and cfg.baseline != "spo":
        clashes.append(f"--group-size {cfg.group_size}: must be >= 2 without --baseline spo (a group of one has no "
                       "group baseline)")
    if cfg.baseline == "spo" and cfg.scale_rewards != "group":
        clashes.append(f"--scale-rewards {cfg.scale_rewards}: has no effect with --baseline spo (SPO normalises "
                       "over the batch)")
    if cfg.algo == "m3po" and cfg.rollout_backend != "hf":
        clashes.append(f"--rollout-backend {cfg.rollout_backend}: M3PO samples on hf only (its blend of peers' "
                       "embeddings acts at every generation step, which an inference engine cannot do)")
    if cfg.rollout_backend == "openai" and not cfg.rollout_base_url:
        clashes.append("--rollout-backend openai: needs --rollout-base-url http://host:port/v1 (one or several)")
    if cfg.group_size < 2 and cfg.filter_groups:
        clashes.append("--filter-groups: would drop every group of one (their reward std is 0)")
    if len(clashes) == 1:
        raise ConfigError(f"invalid option {clashes[0]}")
    if clashes:
        raise ConfigError("invalid options:\n" + "\n".join("  " + c for c in clashes))


class KeptRows:
    """The rows a step trains on, gathered over its refill rounds: rollouts, rewards, correctness,
    group ids (renumbered 0.. over the step's kept questions), hinted flags and the questions."""

    def __init__(self):
        self.parts, self.rewards, self.correct, self.groups, self.hinted, self.problems = [], [], [], [], [], []

    def add(self, take: list[int], problems: list, r: Rollout, rewards: torch.Tensor, scored: list,
            groups: torch.Tensor, hinted: torch.Tensor) -> None:
        """Keep the rows of the questions `take` (indices into `problems`; groups: [N] their rows)."""
        where = {q: len(self.problems) + k for k, q in enumerate(take)}  # question -> group id in the step
        rows = [i for i, q in enumerate(groups.tolist()) if q in where]
        if rows:
            self.parts.append(r.select(rows))
            self.rewards.append(rewards[rows])
            self.correct.append(torch.tensor([bool(scored[i][1]) for i in rows]))
            self.groups.append(torch.tensor([where[int(groups[i])] for i in rows]))
            self.hinted.append(hinted[rows])
        self.problems += [problems[q] for q in take]

    def cat(self, pad_id: int):
        """(rollout or None, rewards [N], correct [N], groups [N], hinted [N])."""
        cat = lambda xs, dtype: torch.cat(xs) if xs else torch.zeros(0, dtype=dtype)  # noqa: E731
        from .leap_rollout import LeapRollout, cat_leap  # LeaP groups keep their loss mask

        join = cat_leap if self.parts and isinstance(self.parts[0], LeapRollout) else cat_rollouts
        return (join(self.parts, pad_id) if self.parts else None, cat(self.rewards, torch.float),
                cat(self.correct, torch.bool), cat(self.groups, torch.long), cat(self.hinted, torch.bool))


class Variants:
    """The variants' part of the step, bound to a Trainer (its model, tokenizer, sampler, config)."""

    def __init__(self, trainer):
        self.t, cfg = trainer, trainer.cfg
        self.cfg = cfg
        self.tracker = ValueTracker(cfg.spo_rho) if cfg.baseline == "spo" else None
        self.memory = HintMemory() if cfg.hints == "seele" else None
        self.flat_steps = 0  # steps in a row whose advantages were all 0 (watch)

    def watch(self, row: dict) -> str | None:
        """The warning for a run whose only update is its entropy bonus, once, or None.

        With --entropy-coef > 0 a step whose advantages are all 0 (every completion of every group
        got the same reward: a 1-shot example never solved, or always solved) still moves the
        weights, by the bonus alone, which makes the text more random. After ENTROPY_ONLY_STEPS
        such steps in a row the run is told so (the 1-shot benchmark row lost 13 points this way).

        Example: entropy_coef 0.001 and adv_nonzero_frac 0 at steps 1..10 -> the warning at step 10
        """
        if self.cfg.entropy_coef <= 0 or row.get("skipped"):
            return None
        self.flat_steps = self.flat_steps + 1 if row.get("adv_nonzero_frac", 1.0) == 0 else 0
        if self.flat_steps != ENTROPY_ONLY_STEPS:
            return None
        return (f"steps {row['step'] - ENTROPY_ONLY_STEPS + 1}-{row['step']}: every completion of every group got "
                f"the same reward (training accuracy {row.get('accuracy', 0):.2f}), so the only update was the "
                f"entropy bonus (--entropy-coef {self.cfg.entropy_coef:g}), which makes the model's text more "
                f"random; train on a question the model sometimes solves (docs/training.md, 1-shot RLVR: "
                f"historical_variance) or set --entropy-coef 0")

    # --- hints --------------------------------------------------------------------------------

    def add_hints(self, problems: list, r: Rollout, scored: list, step: int, attempt: int):
        """Re-sample the questions whose completions all got reward 0, with a hint, up to
        --hint-rounds times. Returns (rollout, scored, groups [N], hinted [N] bool, stats)."""
        from crosspath.train import trainer as T  # the loop's reward (tests replace it)

        cfg, g, b = self.cfg, self.cfg.group_size, len(problems)
        groups, hinted = torch.arange(b).repeat_interleave(g), torch.zeros(b * g, dtype=torch.bool)
        best = [max(s[0] for s in scored[q * g:(q + 1) * g]) for q in range(b)]
        steps = [hint_steps(p) for p in problems]
        if self.memory is not None:
            for q, p in enumerate(problems):
                if steps[q]:
                    self.memory.add(p.id, 0.0, g, sum(s[0] > 0 for s in scored[q * g:(q + 1) * g]))
        parts, scored, stats = [r], list(scored), {"hinted_groups": 0.0, "hinted_solved": 0.0}
        for k in range(cfg.hint_rounds):
            todo = [q for q in range(b) if best[q] <= 0 and steps[q]]
            if not todo:
                break
            shares = [cfg.hint_fraction if self.memory is None else self.memory.rate(problems[q].id, cfg.hint_target)
                      for q in todo]
            counts = [hint_count(share, len(steps[q])) for share, q in zip(shares, todo)]
            asked = [replace(problems[q], question=hinted_question(problems[q].question, steps[q][:c]))
                     for q, c in zip(todo, counts)]
            h = self.t.sample(asked, step, HINT_ATTEMPT + attempt * cfg.hint_rounds + k)
            new = [T.reward(problems[todo[i // g]], text, cfg.marker, cfg.marker_rule, **reward_options(cfg))
                   for i, text in enumerate(h.texts)]
            rows = [q * g + j for q in todo for j in range(g)]  # the same questions' plain prompts
            parts.append(replace(h, prompt_ids=r.prompt_ids[rows], prompt_mask=r.prompt_mask[rows]))
            scored += new
            groups = torch.cat([groups, torch.tensor(todo).repeat_interleave(g)])
            hinted = torch.cat([hinted, torch.ones(len(rows), dtype=torch.bool)])
            for i, (q, c) in enumerate(zip(todo, counts)):
                wins = sum(s[0] > 0 for s in new[i * g:(i + 1) * g])
                best[q] = max(best[q], max(s[0] for s in new[i * g:(i + 1) * g]))
                stats["hinted_groups"] += 1
                stats["hinted_solved"] += float(wins > 0)
                if self.memory is not None:
                    self.memory.add(problems[q].id, c / len(steps[q]), g, wins)
        return cat_rollouts(parts, self.t.pad_id), scored, groups, hinted, stats

    # --- rewards and advantages -----------------------------------------------------------------

    def advantages(self, rollout: Rollout | None, rewards: torch.Tensor, correct: torch.Tensor,
                   groups: torch.Tensor, hinted: torch.Tensor, problems: list, step: int):
        """Advantages [N] of this process's rows, and the step's variant statistics as (sum, count)
        pairs (the caller sums them over the processes and logs sum / count): length_penalized_frac
        (share of groups), spo_baseline (mean tracker value of the rows), seed_scale (mean multiplier
        of the groups). Every process calls it, with or without rows."""
        cfg, stats, n_groups = self.cfg, {}, len(problems)
        if cfg.length_penalty != "off":
            rewards, penalised = self._length_penalty(rollout, rewards, correct, groups, hinted)
            stats["length_penalized_frac"] = (penalised, n_groups)
        if self.tracker is not None:
            adv, baseline = self._spo(rollout, rewards, groups, hinted, problems, step)
            stats["spo_baseline"] = (float(baseline.sum()), len(baseline))
        else:
            adv = self.t.advantages(rewards, groups)
        if cfg.seed_grpo:
            scale = self._seed_scales(rollout, groups, hinted, problems) if n_groups else torch.ones(0)  # [B]
            adv = adv * scale[groups] if n_groups else adv
            stats["seed_scale"] = (float(scale.sum()), n_groups)
        return adv, stats

    def _length_penalty(self, rollout, rewards, correct, groups, hinted):
        """GRPO-lambda: the Kimi length reward in the chosen groups (chosen over every process's
        groups). Returns (rewards [N], number of this process's penalised groups)."""
        plain = ~hinted
        ratio = group_stats(correct.float()[plain], groups[plain])[0] if plain.any() else torch.zeros(0)  # [B]
        parts = all_gather_objects(ratio.tolist())
        offset = sum(len(x) for x in parts[: self.t.dist.rank])
        everyone = torch.tensor([x for part in parts for x in part])  # [B over all processes]
        if self.cfg.length_penalty == "always":
            chosen = torch.ones(len(everyone), dtype=torch.bool)
        else:
            chosen = length_penalty_groups(everyone, self.cfg.length_penalty_top, self.cfg.length_penalty_min_ratio)
        mine = chosen[offset: offset + len(ratio)]  # [B]
        if rollout is None or not mine.any():
            return rewards, float(mine.sum())
        lengths = rollout.completion_mask.sum(1).cpu()  # [N]
        return length_shaped_rewards(rewards, correct, lengths, groups, mine), float(mine.sum())

    def _seed_scales(self, rollout, groups, hinted, problems) -> torch.Tensor:
        """SEED-GRPO's multiplier of each group, from its unhinted completions: [B]."""
        mask = rollout.completion_mask.float().cpu()  # [N, T]
        mean_logp = (rollout.logprobs.float().cpu() * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [N]
        entropies, sizes = [], []
        for q, p in enumerate(problems):
            rows = ((groups == q) & ~hinted).nonzero().flatten()
            answers = [extract_answer(rollout.texts[i], p.choices) for i in rows.tolist()]
            clusters = torch.tensor(answer_clusters(answers, SameAnswer(p)))
            entropies.append(semantic_entropy(clusters, mean_logp[rows]))
            sizes.append(len(rows))
        return seed_scale(torch.stack(entropies), torch.tensor(sizes), self.cfg.seed_alpha, self.cfg.seed_scaling)

    def _spo(self, rollout, rewards, groups, hinted, problems, step):
        """SPO advantages; then the trackers of this step's questions take its rewards."""
        ids = list(dict.fromkeys(p.id for p in problems))  # unique, in order (a question may repeat)
        first = {}
        for q, p in enumerate(problems):
            first.setdefault(p.id, q)
        new = [i for i in ids if i not in self.tracker]
        if new:
            self._spo_init([problems[first[i]] for i in new], step)
        value = self.tracker.values(ids) if ids else torch.zeros(0)  # [Q] before this step
        per_group = torch.tensor([value[ids.index(p.id)] for p in problems]) if problems else torch.zeros(0)
        baseline = per_group[groups] if len(groups) else torch.zeros(0)  # [N]
        a = rewards.float() - baseline
        s, s2, n = all_reduce_sum([float(a.sum()), float((a * a).sum()), float(a.numel())])
        mean = s / max(n, 1.0)
        std = max((s2 - s * s / max(n, 1.0)) / max(n - 1, 1.0), 0.0) ** 0.5 if n > 1 else 0.0
        adv = spo_advantages(rewards, baseline, batch_mean=mean, batch_std=std) if n > 1 else torch.zeros_like(a)
        if ids:
            self._spo_observe(ids, problems, rollout, rewards, groups, hinted, step)
        return adv, baseline

    def _spo_observe(self, ids, problems, rollout, rewards, groups, hinted, step):
        qid = [problems[q].id for q in groups.tolist()]  # [N] question id of every row
        plain = [i for i in range(len(qid)) if not hinted[i]]
        successes = [sum(float(rewards[i].clamp(0, 1)) for i in plain if qid[i] == x) for x in ids]
        trials = [sum(qid[i] == x for i in plain) for x in ids]
        rows = [next(i for i in plain if qid[i] == x) for x in ids]
        mask = rollout.completion_mask.bool()
        stored = [(rollout.completion_ids[i][mask[i]].tolist(), rollout.logprobs[i][mask[i]].tolist()) for i in rows]
        divergence = self._divergence(ids, {p.id: p for p in problems})
        self.tracker.update(ids, successes, trials, divergence, step, stored)

    def _prompts(self, problems) -> list[str]:
        return [render_prompt(self.t.tok, prompt_text(self.cfg, p.question)) for p in problems]

    def _spo_init(self, problems, step) -> None:
        """First visit: n0 = --spo-init-samples plain samples per question give its prior."""
        from crosspath.train import trainer as T

        cfg, n0 = self.cfg, self.cfg.spo_init_samples
        successes = [0.0] * len(problems)
        if n0 > 0:
            seed = (cfg.seed * 1_000_003 + step * 10_007 + SPO_INIT_ATTEMPT * 101 + self.t.dist.rank) % 2**62
            r = sample_rollouts(self.t.model, self.t.tok, self._prompts(problems), group_size=n0,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.sample_top_k,
                                top_p=cfg.top_p, seed=seed, marker=cfg.marker)
            for i, text in enumerate(r.texts):
                successes[i // n0] += float(T.reward(problems[i // n0], text, cfg.marker, cfg.marker_rule,
                                                     **reward_options(cfg))[0] > 0)
        self.tracker.init([p.id for p in problems], successes, [n0] * len(problems))

    @torch.no_grad()
    def _divergence(self, ids, by_id) -> torch.Tensor:
        """D of each question: its stored response re-scored by the current policy. [Q]"""
        out = torch.zeros(len(ids), dtype=torch.float64)
        seen = [k for k, i in enumerate(ids) if self.tracker.entries[i]["tokens"]]
        if not seen or self.tracker.rho_type != "kl":
            return out
        tok, pad = self.t.tok, self.t.pad_id
        device = next(self.t.model.parameters()).device
        encoded = tok(self._prompts([by_id[ids[k]] for k in seen]), add_special_tokens=False)["input_ids"]
        prompt_ids, prompt_mask = left_pad(encoded, pad)
        tokens = [self.tracker.entries[ids[k]]["tokens"] for k in seen]
        then = [self.tracker.entries[ids[k]]["logps"] for k in seen]
        width = max(len(t) for t in tokens)
        ids_t = torch.tensor([t + [pad] * (width - len(t)) for t in tokens])
        mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in tokens])
        then_t = torch.tensor([x + [0.0] * (width - len(x)) for x in then])
        n = len(seen)
        r = Rollout(prompt_ids.to(device), prompt_mask.to(device), ids_t.to(device), mask.to(device),
                    torch.zeros(n, width, dtype=torch.bool), torch.zeros(n, width), torch.zeros(n, width),
                    None, [""] * n, 1)
        was_training = self.t.model.training
        self.t.model.eval()
        try:
            now = sequence_logprobs(self.t.model, r, use_recorded_embeds=False, temperature=1.0).cpu()
        finally:
            self.t.model.train(was_training)
        out[seen] = policy_divergence(then_t, now, mask).double()
        return out

    # --- checkpoint -----------------------------------------------------------------------------

    def state_dict(self) -> dict | None:
        """The cross-step state of every process, merged (all processes call it)."""
        if self.tracker is None and self.memory is None:
            return None
        parts = all_gather_objects({"spo": self.tracker.state_dict() if self.tracker else None,
                                    "seele": self.memory.state_dict() if self.memory else None})
        return {"spo": ValueTracker.merged([p["spo"] for p in parts]) if self.tracker else None,
                "seele": HintMemory.merged([p["seele"] for p in parts]) if self.memory else None}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        if self.tracker is not None and state.get("spo"):
            self.tracker.load_state_dict(state["spo"])
        if self.memory is not None and state.get("seele"):
            self.memory.load_state_dict(state["seele"])


def historical_variance(run_dir: str | Path) -> list[tuple[str, float, int]]:
    """1-shot RLVR's example choice: (question id, variance of its per-visit training accuracy,
    visits), highest variance first, from a run's samples/step-N.jsonl (unhinted rows only).

    The run must log every completion (--log-samples >= questions-per-step x group-size) and see
    each question several times (a small --train-size, several epochs). The paper ranks the
    examples of the pool by the variance of their accuracy over the epochs of such a run.

    Example: a question right 0/2, then 2/2 of its completions: accuracies [0, 1] -> variance 0.25
    """
    visits: dict[tuple, list[float]] = {}
    for path in sorted(Path(run_dir, "samples").glob("step-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if not row.get("hinted"):
                visits.setdefault((row["id"], row["step"], row.get("round", 0), row.get("group", 0)), []).append(
                    float(row["correct"]))
    per_question: dict[str, list[float]] = {}
    for (qid, *_), marks in visits.items():
        per_question.setdefault(qid, []).append(sum(marks) / len(marks))
    out = [(qid, float(torch.tensor(a, dtype=torch.float64).var(unbiased=False)), len(a))
           for qid, a in per_question.items()]
    return sorted(out, key=lambda x: (-x[1], x[0]))
