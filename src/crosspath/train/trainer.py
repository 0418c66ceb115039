"""The GRPO / M3PO training loop: LoRA, rewards, advantages, the update, evaluation, checkpoints.

One step (docs/training.md has the math and every logged metric):

    questions  B per step (each rank its B/W share), from a seeded per-epoch shuffle of the train set
    rollouts   G completions per question, sampled step by step (rollout.sample_rollouts) or on an engine
               (engine_rollout.py); M3PO: input_hook = m3po.make_hook(G, lambda, T) blends peers' embeddings while thinking
    rewards    1 if `grade` finds the answer correct, 0 if not or if the marker `####` repeats
               (--answer-format think: a right answer after one marker, reasoning before it; format.py)
    hints      (optional) re-sample the all-wrong questions with a hint (variants.py, hints.py)
    filter     (optional) drop groups whose reward std is <= filter_std_eps, draw more questions to refill
    advantages group_advantages(rewards, G, scale_rewards), or SPO's tracker; SEED-GRPO, GRPO-lambda
               (variants.py)
    update     (update.backward_pass) micro-batches of `micro_batch_size` completions; GRPO scores plain ids, M3PO replays
               the recorded (blended) inputs; reference = the model with the adapter disabled
               (skipped when beta = 0); each micro-batch loss is divided by the global batch's
               counts, so the summed gradient (over micro-batches and ranks) is the full-batch one
    optimizer  all-reduce grads, clip, AdamW step, cosine schedule step (num_iterations times);
               NaN guard: a NaN/inf loss or grad norm stops before the step, weights that are not
               finite (or give NaN/inf logits on a probe prompt) stop after it; nothing is saved
    log        metrics.jsonl, samples/step-N.jsonl; every eval_every steps greedy held-out accuracy
    save       checkpoints/step-N/ every save_every steps and at the end; the adapter in final/

Test time: `greedy_decode` (one path, no blend) with the same prompt: `crosspath train-eval`.
"""

from __future__ import annotations

import shlex
import time
import warnings
from pathlib import Path

import torch

from crosspath.config import to_dict
from crosspath.models import load_model, render_prompt
from crosspath.rundir import claim_run_dir, default_run_dir
from crosspath.tasks.datasets import has_splits
from crosspath.train import TrainConfig  # TrainConfig lives in __init__: a light import for the CLI
from crosspath.train.checkpoint import load_latest_finite, save_checkpoint, save_final
from crosspath.train.data import PROMPT, evaluate, load_splits, prompt_text, reward, reward_options  # noqa: F401
from crosspath.train.engine_rollout import ENGINE_OPTIONS, RolloutEngine, mismatch_metrics
from crosspath.train.distributed import (all_gather_objects, all_reduce_grads, all_reduce_sum, barrier,
                                         broadcast_params, init_distributed)
from crosspath.train.format import marked_thinking, warm_up
from crosspath.train.guard import check_finite, check_weights
from crosspath.train.lora import (check_adapter, enable_activation_checkpointing, load_trainable_adapter, setup_lora,
                                  trainable_parameters)
from crosspath.train.optim import clip_gradients, make_optimizer, make_scheduler, set_peak_lr
from crosspath.train.rng import set_seed
from crosspath.train.rundir import CHECKPOINTS, RunDir, sample_rows
from crosspath.train.grpo import filter_groups, group_advantages, group_stats
from crosspath.train.hints import HINT_EPSILON
from crosspath.train.leap_rollout import exchange_metrics, loss_mask, sample_leap
from crosspath.train.m3po import make_hook
from crosspath.train.rollout import Rollout, sample_rollouts
from crosspath.train.update import backward_pass
from crosspath.train.variants import KeptRows, Variants, check as check_variants

RESUME_FREE = {"steps", "resume", "overwrite", "out", "eval_every", "save_every", "keep_checkpoints",
               "log_samples", "progress", "tensorboard", "device", "eval_batch_size", "threads",
               "format_warmup_cache"} | ENGINE_OPTIONS
RESUME_TUNABLE = ("lr", "max_grad_norm")  # may change on --resume (after a NaN); kept in config.yaml `history`


def default_out(cfg: TrainConfig) -> Path:
    return default_run_dir(f"train-{cfg.algo}", cfg.task, cfg.model)


class Trainer:
    """Holds the model, optimizer, data stream and run directory; `fit()` runs the loop."""

    def __init__(self, cfg: TrainConfig, model=None, tokenizer=None):
        if cfg.questions_per_step < 1:
            raise ValueError("questions_per_step must be >= 1")
        check_variants(cfg)
        if cfg.init_adapter:
            check_adapter(cfg.init_adapter, cfg.lora_r, cfg.lora_alpha)  # before the run directory is touched
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist = init_distributed(cfg.device)
        if cfg.questions_per_step % self.dist.world_size:
            raise ValueError(f"questions_per_step {cfg.questions_per_step} is not a multiple of "
                             f"the world size {self.dist.world_size}")
        self.local_b = cfg.questions_per_step // self.dist.world_size
        self.out = Path(cfg.out) if cfg.out else default_out(cfg)
        self._prepare_out()
        if model is None:
            model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=self.dist.device)
        self.tok = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        set_seed(cfg.seed)
        self.model = (load_trainable_adapter(model, cfg.init_adapter, cfg.lora_r, cfg.lora_alpha) if cfg.init_adapter
                      else setup_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules))
        if cfg.gradient_checkpointing:
            enable_activation_checkpointing(self.model)
        self.params = trainable_parameters(self.model)
        broadcast_params(self.params)
        self.optimizer = make_optimizer(self.params, cfg.lr, cfg.betas, cfg.weight_decay,
                                        eight_bit=cfg.optim == "adamw_8bit")
        self.scheduler = make_scheduler(self.optimizer, cfg.steps * cfg.num_iterations, cfg.warmup_ratio)
        self.train_set, self.eval_set = load_splits(cfg)
        if not self.train_set:
            raise ValueError(f"no training questions for {cfg.task} (train_size {cfg.train_size})")
        self.hook = (make_hook(cfg.group_size, cfg.m3po_lambda, cfg.m3po_temperature, cfg.m3po_weighting)
                     if cfg.algo == "m3po" else None)
        self.variants = Variants(self)
        self._claim.clear()
        barrier()
        self.run = RunDir(self.out, main=self.dist.main, tensorboard=cfg.tensorboard)
        self.step, self.position, self.last_checkpoint, self._perm = 0, 0, None, (-1, None)
        self._probe = None
        found = (load_latest_finite(self.out, self.model, self.optimizer, self.scheduler, self.probe_ids(),
                                    self.dist.rank) if cfg.resume else None)
        if found is not None:
            self.last_checkpoint, state = found
            self.step, self.position = state["step"], state["data_position"]
            self.variants.load_state_dict((state.get("extra") or {}).get("variants"))
            if "lr" in self._changed:
                set_peak_lr(self.optimizer, self.scheduler, cfg.lr)
            self.run.truncate_metrics(self.step)
        elif self.dist.main and self.run.metrics_path.exists():
            self.run.metrics_path.unlink()  # --resume without a checkpoint: start over
        if self._changed:
            self._history.append({"step": self.step, **{k: list(v) for k, v in self._changed.items()}})
        self.run.save_config(cfg, **({"history": self._history} if self._history else {}))
        self.engine = RolloutEngine(self) if cfg.rollout_backend != "hf" else None

    def _prepare_out(self) -> None:
        """Check and lock the run directory (crosspath.rundir): a resume with other options (but lr /
        max_grad_norm, kept in config.yaml `history`) is refused by name; --overwrite clears the old run
        only once the model and the task have loaded (`self._claim.clear()` in __init__)."""
        cfg = self.cfg
        free = RESUME_FREE | set(RESUME_TUNABLE) | {"history"} | (set() if has_splits(cfg.task) else {"split", "eval_split"})
        self._claim = claim_run_dir(self.out, to_dict(cfg), markers=("metrics.jsonl", CHECKPOINTS), renamed=cfg.RENAMED,
                                    resume=cfg.resume, overwrite=cfg.overwrite, ignore=free,
                                    clear=("metrics.jsonl", CHECKPOINTS, "samples", "tb", "final"),
                                    main=self.dist.main, what="training run")
        self._changed, self._history = {}, []
        saved = self.out / "config.yaml"
        if cfg.resume and saved.exists():
            import yaml

            old, new = yaml.safe_load(saved.read_text()), to_dict(cfg)
            self._changed = {k: (old[k], new[k]) for k in RESUME_TUNABLE if k in old and old[k] != new[k]}
            self._history = list(old.get("history") or [])

    # --- the NaN guard --------------------------------------------------------------------------

    def probe_ids(self) -> torch.Tensor:
        """[1, L] token ids of the first training question's prompt (L <= 64): the guard's probe input."""
        if self._probe is None:
            text = render_prompt(self.tok, prompt_text(self.cfg, self.train_set[0].question))
            ids = self.tok(text, add_special_tokens=False)["input_ids"][:64]
            self._probe = torch.tensor([ids], device=self.dist.device)
        return self._probe

    def _advice(self) -> tuple[str, str]:
        """(how to resume from the last finite checkpoint, how to start again): the commands to run."""
        lr = min(self.cfg.lr / 10, TrainConfig.lr)
        out = shlex.quote(str(self.out))
        return (f"resume from it with a lower learning rate (--lr was {self.cfg.lr:g}) or gradient clip "
                f"(--max-grad-norm was {self.cfg.max_grad_norm:g}): crosspath train --out {out} --resume --lr {lr:g}",
                f"start again with a lower learning rate (--lr was {self.cfg.lr:g}): add --overwrite --lr {lr:g}")

    # --- data and rollouts ---------------------------------------------------------------------

    def questions(self, position: int) -> list:
        """This rank's share of the B questions at global data `position` (a seeded shuffle per epoch)."""
        n, out = len(self.train_set), []
        start = position + self.dist.rank * self.local_b
        for k in range(start, start + self.local_b):
            epoch, i = divmod(k, n)
            if self._perm[0] != epoch:
                gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
                self._perm = (epoch, torch.randperm(n, generator=gen).tolist())
            out.append(self.train_set[self._perm[1][i]])
        return out

    def sample(self, problems, step: int, attempt: int = 0) -> Rollout:
        cfg = self.cfg
        prompts = [render_prompt(self.tok, prompt_text(cfg, p.question)) for p in problems]
        seed = (cfg.seed * 1_000_003 + step * 10_007 + attempt * 101 + self.dist.rank) % 2**62
        try:
            if cfg.algo == "leap":  # the group is one LeaP run (leap_rollout.py); stats go to the step's row
                rollout, _, stats = sample_leap(self.model, self.tok, problems, cfg, seed,
                                                store=self.engine and self.engine.leap_store(step))
                self._leap_sums = {k: self._leap_sums.get(k, 0.0) + v for k, v in stats.items()}
                return rollout
            if self.engine is not None:
                return self.engine.sample(prompts, step, seed)
            return sample_rollouts(self.model, self.tok, prompts, group_size=cfg.group_size,
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                   top_k=cfg.sample_top_k, top_p=cfg.top_p, seed=seed, input_hook=self.hook,
                                   marker=cfg.marker)
        except RuntimeError as e:  # multinomial on NaN probabilities: the weights already broke
            if "probability tensor" not in str(e):
                raise
            check_finite({"sampling probabilities": float("nan")}, step, [p.id for p in problems],
                         self.last_checkpoint, *self._advice(), consequence="the weights give NaN when sampling")
            raise

    # --- the update ---------------------------------------------------------------------------

    def update(self, rollout: Rollout | None, advantages: torch.Tensor | None, ids: list[str] = (),
               step: int | None = None, hinted: torch.Tensor | None = None) -> dict:
        """num_iterations optimizer steps on one rollout batch (this rank's rows). Returns stats.
        hinted: [N] bool, rows sampled with a hint: their ratio's denominator is the sampling policy.

        Every micro-batch loss is divided by the GLOBAL sequence / token counts, and the gradients
        are summed over ranks, so any split of the rows over micro-batches and ranks gives the
        gradient of the whole batch in one piece. A rank may pass rollout=None (no rows).
        """
        cfg, model = self.cfg, self.model
        step = self.step + 1 if step is None else step
        rows = 0 if rollout is None else len(rollout.texts)
        tokens = 0 if rollout is None else int(loss_mask(rollout).sum())
        n_seq, n_tok = all_reduce_sum([rows, tokens])
        order = list(range(rows))
        if cfg.beta <= 0 and cfg.entropy_coef <= 0 and advantages is not None:
            # without a KL or entropy term a row whose advantage is 0 adds exactly 0 to the loss and its
            # gradient (the counts above, which normalise the loss, still include it): no forward for it
            order = (advantages != 0).nonzero().flatten().tolist()
        chunks = [order[i:i + cfg.micro_batch_size] for i in range(0, len(order), cfg.micro_batch_size)]
        eps = HINT_EPSILON if cfg.epsilon is None and cfg.hints != "off" else cfg.epsilon
        refs, olds, diffs = [None] * len(chunks), [None] * len(chunks), None if self.engine is None else [0.0] * 3
        total = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0, "entropy": 0.0,
                 "lr": self.optimizer.param_groups[0]["lr"]}
        model.train()
        for it in range(cfg.num_iterations):
            sums = backward_pass(model, cfg, rollout, chunks, advantages, refs=refs, olds=olds, first=it == 0,
                                 n_tok=n_tok, n_seq=n_seq, eps=eps, hinted=hinted, mismatch=diffs)
            for p in self.params:  # a zero gradient still takes AdamW's momentum and decay step
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            all_reduce_grads(self.params)
            loss_g, kl_g, clip_g, ent_g = all_reduce_sum(sums)
            grad_norm = clip_gradients(self.params, cfg.max_grad_norm)
            check_finite({"loss": loss_g, "grad_norm": grad_norm}, step, list(ids), self.last_checkpoint,
                         *self._advice())
            self.optimizer.step()
            check_weights(self.model, self.probe_ids(), step, list(ids), self.last_checkpoint, *self._advice())
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            per_token = max(n_tok, 1.0)
            for k, v in zip(("loss", "kl", "clip_frac", "grad_norm", "entropy"),
                            (loss_g, kl_g / per_token, clip_g / per_token, grad_norm, ent_g / per_token)):
                total[k] += v / cfg.num_iterations
        total.update(mismatch_metrics(diffs) if diffs is not None else {})
        if cfg.beta <= 0:
            total["kl"] = None
        if eps is None and cfg.loss_type != "cispo":
            del total["clip_frac"]
        if cfg.entropy_coef <= 0:
            del total["entropy"]
        return total

    def advantages(self, rewards: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """group_advantages (groups: [N] group ids, default G rows each); with scale_rewards=batch over
        several ranks the std is the global one."""
        cfg = self.cfg
        groups = cfg.group_size if groups is None else groups
        if cfg.scale_rewards != "batch" or not self.dist.active:
            return group_advantages(rewards, groups, cfg.scale_rewards)
        centered = group_advantages(rewards, groups, "none")
        s, s2, n = all_reduce_sum([float(rewards.sum()), float((rewards ** 2).sum()), rewards.numel()])
        std = max((s2 - s * s / n) / max(n - 1, 1), 0.0) ** 0.5
        return centered / (std + 1e-4)

    # --- one step, evaluation, the loop --------------------------------------------------------

    def train_step(self) -> dict:
        cfg, g, step, t0 = self.cfg, self.cfg.group_size, self.step + 1, time.time()
        kept = KeptRows()
        self._leap_sums = {}
        seen = {"reward": 0.0, "correct": 0.0, "format": 0.0, "tokens": 0.0, "truncated": 0.0, "thinking": 0.0,
                "marked_thinking": 0.0, "marked_tokens": 0.0, "group_std": 0.0, "groups": 0.0, "dropped": 0.0,
                **({"hinted_groups": 0.0, "hinted_solved": 0.0} if cfg.hints != "off" else {})}
        for attempt in range(1 + (cfg.max_filter_rounds if cfg.filter_groups else 0)):
            problems = self.questions(self.position)
            self.position += cfg.questions_per_step
            r = self.sample(problems, step, attempt)
            scored = [reward(problems[i // g], t, cfg.marker, cfg.marker_rule and cfg.algo != "leap",
                             **reward_options(cfg)) for i, t in enumerate(r.texts)]
            n0 = len(r.texts)  # the first G per question; hinted re-samples follow them
            groups, hinted = torch.arange(len(problems)).repeat_interleave(g), torch.zeros(n0, dtype=torch.bool)
            if cfg.hints != "off":
                r, scored, groups, hinted, hint_stats = self.variants.add_hints(problems, r, scored, step, attempt)
                for k, v in hint_stats.items():
                    seen[k] += v
            rewards = torch.tensor([s[0] for s in scored])  # [N]
            lengths = loss_mask(r).sum(1)  # [N] generated tokens
            keep = (filter_groups(rewards, groups, cfg.filter_std_eps) if cfg.filter_groups
                    else torch.ones(len(problems), dtype=torch.bool))
            room = self.local_b - len(kept.problems)
            take = [i for i in range(len(problems)) if keep[i]][:room]
            for k, v in (("reward", rewards[:n0].sum()), ("correct", sum(s[1] for s in scored[:n0])),
                         ("format", sum(s[2] == 1 for s in scored[:n0])), ("tokens", lengths[:n0].sum()),
                         ("truncated", (lengths[:n0] >= cfg.max_new_tokens).sum()),
                         ("thinking", r.thinking_mask[:n0].sum()), ("groups", len(problems)),
                         *zip(("marked_thinking", "marked_tokens"), marked_thinking(r, scored, n0)),
                         ("group_std", group_stats(rewards[:n0], groups[:n0])[1].sum()),
                         ("dropped", int((~keep).sum()))):
                seen[k] += float(v)
            kept.add(take, problems, r, rewards, scored, groups, hinted)
            if attempt == 0:
                first = (problems, r, scored, groups, hinted)
            short = all_reduce_sum([self.local_b - len(kept.problems)], op="max")[0]
            if not cfg.filter_groups or short == 0:
                break
        t_roll = time.time()
        rollout, rewards, correct, groups, hinted = kept.cat(self.pad_id)
        adv, variant_stats = self.variants.advantages(rollout, rewards, correct, groups, hinted, kept.problems, step)
        n_groups = all_reduce_sum([len(kept.problems)])[0]
        ids = [p.id for p in kept.problems]
        if n_groups > 0:
            stats = self.update(rollout, None if rollout is None else adv.to(rollout.completion_ids.device), ids, step,
                                hinted=hinted)
        else:  # every group filtered out on every rank: nothing to learn from, skip the update
            stats = {"loss": 0.0, "kl": None, "grad_norm": 0.0, "lr": self.optimizer.param_groups[0]["lr"]}
        self.step = step
        sums = all_reduce_sum(list(seen.values()))
        s = dict(zip(seen, sums))
        n = max(s["groups"] * g, 1.0)
        nonzero, rows_total, *pairs = all_reduce_sum([float((adv != 0).sum()), float(adv.numel()),
                                                      *(x for pair in variant_stats.values() for x in pair)])
        row = {"step": step, "epoch": round(self.position / len(self.train_set), 4), "data_position": self.position,
               "reward_mean": s["reward"] / n, "reward_std": s["group_std"] / max(s["groups"], 1.0),
               "accuracy": s["correct"] / n, "format_rate": s["format"] / n,
               "completion_length": s["tokens"] / n, "truncated_rate": s["truncated"] / n,
               "thinking_share": s["thinking"] / max(s["tokens"], 1.0),
               "thinking_share_marked": s["marked_thinking"] / s["marked_tokens"] if s["marked_tokens"] else None,
               "groups_trained": int(n_groups), "filtered_frac": s["dropped"] / max(s["groups"], 1.0),
               "adv_nonzero_frac": nonzero / max(rows_total, 1.0),
               **{k: pairs[2 * i] / max(pairs[2 * i + 1], 1.0) for i, k in enumerate(variant_stats)},
               **({"hinted_groups": int(s["hinted_groups"]),
                   "hinted_solved_frac": s["hinted_solved"] / max(s["hinted_groups"], 1.0)}
                  if cfg.hints != "off" else {}),
               **stats, "skipped": n_groups == 0,
               "rollout_seconds": round(t_roll - t0, 3), "update_seconds": round(time.time() - t_roll, 3)}
        if cfg.algo == "leap":
            row.update(exchange_metrics(self._leap_sums))
        row["step_seconds"] = round(time.time() - t0, 3)
        problems, r, scored, groups, hinted = first
        self.run.write_samples(f"step-{step}", sample_rows(step, problems, r, scored, groups, hinted,
                                                            loss_mask(r), self.cfg.log_samples))
        return row

    def evaluate(self, name: str | None = None) -> dict:
        shard = self.eval_set[self.dist.rank:: self.dist.world_size]
        sums, rows = evaluate(self.model, self.tok, shard, self.cfg)
        for k, row in enumerate(rows):  # one greedy path per held-out question
            row.update(group=self.dist.rank + k * self.dist.world_size, path=0)
        c, f, k, n = all_reduce_sum([sums["correct"], sums["format"], sums["think"], sums["n"]])
        all_rows = [x for part in all_gather_objects(rows) for x in part]
        self.run.write_samples(name or f"eval-step-{self.step}", all_rows)
        return {"eval_accuracy": c / max(n, 1.0), "eval_format_rate": f / max(n, 1.0), "eval_questions": int(n),
                **({"eval_think_accuracy": k / max(n, 1.0)} if self.cfg.answer_format == "think" else {})}

    def save(self) -> Path:
        state = {"data_position": self.position, "world_size": self.dist.world_size, "config": to_dict(self.cfg)}
        variants = self.variants.state_dict()
        self.last_checkpoint = save_checkpoint(self.run, self.step, self.model, self.optimizer,
                                               self.scheduler, state, self.dist.rank, self.cfg.keep_checkpoints,
                                               extra={"variants": variants} if variants else None)
        return self.last_checkpoint

    def fit(self) -> list[dict]:
        """Run until cfg.steps; returns the metrics rows of this call."""
        cfg, rows = self.cfg, []
        bar = None
        if cfg.progress and self.dist.main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=cfg.algo, unit="step")
        if self.step == 0 and cfg.eval_every and self.eval_set:
            row = {"step": 0, **self.evaluate()}
            self.run.log(row)
            rows.append(row)
        warm = warm_up(self) if self.step == 0 else None  # the warmed-up adapter is evaluated too
        if warm is not None:
            rows.append({"step": 0, **warm})
            self.run.log(rows[-1])
        while self.step < cfg.steps:
            row = self.train_step()
            last = self.step == cfg.steps
            if cfg.eval_every and self.eval_set and (self.step % cfg.eval_every == 0 or last):
                row.update(self.evaluate())
            self.run.log(row)
            rows.append(row)
            message = self.variants.watch(row)
            if message and self.dist.main:
                warnings.warn(message, stacklevel=2)
            if (cfg.save_every and self.step % cfg.save_every == 0) or last:
                self.save()
            if bar:
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward_mean']:.3f}", acc=f"{row['accuracy']:.3f}",
                                **({"eval": f"{row['eval_accuracy']:.3f}"} if "eval_accuracy" in row else {}))
        if bar:
            bar.close()
        save_final(self.out, self.model, self.tok, self.dist.main)
        self.engine and self.engine.close()
        self.run.close()
        self._claim.release()
        return rows


def train(cfg: TrainConfig, **kwargs) -> list[dict]:
    """Build a Trainer and run it. kwargs (model=, tokenizer=) pass a preloaded base model."""
    return Trainer(cfg, **kwargs).fit()
