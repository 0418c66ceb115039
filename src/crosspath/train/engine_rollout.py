"""Rollouts on an inference engine: `crosspath train --rollout-backend vllm|openai` (GRPO, its variants, LeaP).

The engine samples the completions; the trainer keeps its own model for the loss, as with hf rollouts:

    publish   once per step, before the first sample: the trainer's adapter -> <out>/rollout-adapter/step-N
              vllm:   VLLMGenerator.set_adapter(folder, id), a NEW LoRARequest id per step (vLLM caches
                      adapters by id); the engine starts with LoRA on and max_lora_rank = --lora-r
              openai: OpenAIGenerator.load_adapter(name, folder) on every server of the pool (vLLM's
                      /v1/load_lora_adapter), then the previous step's adapter is unloaded
    sample    GRPO: the prompt ids (the trainer's tokenizer, as sample_rollouts encodes them) go to the
              engine as token ids, n = G per prompt, seed per prompt; each completion comes back as the
              engine's token ids and its sampling log-probs (temperature, top-k, top-p applied:
              vLLM's logprobs_mode="processed_logprobs", TRL's choice)
              LeaP: leap.solve on an EngineTokenStore, which sends every path's exact token sequence
              (train/leap_rollout.py) to the engine, never re-tokenized text
    Rollout   engine_rollout(): the structure sample_rollouts builds, from the engine's ids
              (completion cut after the first EOS, mask 1 up to and including it)
    loss      the trainer recomputes the log-probs on its own model (update.backward_pass); the
              mismatch with the engine's sampling log-probs on the loss tokens is logged per step as
              sampling_logp_diff_mean / sampling_logp_diff_max (TRL's sampling_logp_difference)

Rollout.logprobs of an engine rollout holds the engine's processed log-probs too (the engine returns one
kind): SEED-GRPO's confidence and SPO's drift read them. M3PO stays on hf (its blend acts at every
generation step). Evaluation (greedy) and SPO's first-visit samples stay on the trainer's model.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import torch

from crosspath.backends.base import BackendError, Completion, SamplingParams
from crosspath.infer.paths import PathStore
from crosspath.train import ROLLOUT_BACKENDS
from crosspath.train.distributed import all_reduce_sum
from crosspath.train.leap_rollout import PathTokens, TokenPathStore
from crosspath.train.lora import save_weights
from crosspath.train.rollout import Rollout, _eos_ids, _marker_done, left_pad

ENGINE_OPTIONS = {"rollout_backend", "rollout_base_url", "rollout_gpu_memory_utilization", "rollout_max_model_len"}
ADAPTERS = "rollout-adapter"  # <out>/rollout-adapter/step-N: the adapter the engine samples with
_LORA_IDS = itertools.count(1)  # vLLM LoRA ids, unique in this process (a shared engine caches by id)


def engine_rollout(tokenizer, prompt_ids: list[list[int]], completions: list[Completion], group_size: int,
                   eos_ids: list[int], pad_id: int, marker: str = "####", device="cpu") -> Rollout:
    """A Rollout from engine samples: B prompts (token ids) x G completions each, prompt-major.

    completion_ids are the engine's token ids, cut after the first EOS; completion_mask is 1 up to and
    including it (all 1 for a row cut at max length); sampling_logprobs (and logprobs) the engine's.
    thinking_mask as sample_rollouts finds it. Example: prompts [[5], [6, 7]], G = 1, completions
    ids [8, EOS, 9] and [10] -> completion_ids [[8, EOS], [10, pad]], completion_mask [[1, 1], [1, 0]].
    """
    rows = [ids for ids in prompt_ids for _ in range(group_size)]  # prompt-major, as sample_rollouts
    if len(rows) != len(completions):
        raise BackendError(f"the engine returned {len(completions)} completions for {len(prompt_ids)} prompts "
                           f"x {group_size}")
    eos = set(eos_ids)
    ids, lps = [], []
    for c in completions:
        if any(t < 0 for t in c.token_ids) or c.logprobs is None or len(c.logprobs) != len(c.token_ids):
            raise BackendError("the engine returned no token ids or no log-probs for every generated token; "
                               "engine rollouts need both (an OpenAI-compatible server: vLLM with return_token_ids)")
        end = next((j + 1 for j, t in enumerate(c.token_ids) if t in eos), len(c.token_ids))
        ids.append(list(c.token_ids[:end]))
        lps.append([float(x) for x in c.logprobs[:end]])
    width = max(max(len(r) for r in ids), 1)
    right = lambda rs, value: [r + [value] * (width - len(r)) for r in rs]  # noqa: E731
    prompt, prompt_mask = left_pad(rows, pad_id)  # [N, P], [N, P]
    completion = torch.tensor(right(ids, pad_id), dtype=torch.long)  # [N, T]
    mask = torch.tensor(right([[1] * len(r) for r in ids], 0), dtype=torch.long)  # [N, T]
    logp = torch.tensor(right(lps, 0.0), dtype=torch.float32)  # [N, T]
    thinking = thinking_mask(tokenizer, completion, mask, eos_ids, marker)  # [N, T]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    to = lambda x: x.to(device)  # noqa: E731
    return Rollout(prompt_ids=to(prompt), prompt_mask=to(prompt_mask), completion_ids=to(completion),
                   completion_mask=to(mask), thinking_mask=to(thinking), logprobs=to(logp),
                   sampling_logprobs=to(logp.clone()), inputs_embeds=None, texts=texts, group_size=group_size)


def thinking_mask(tokenizer, completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_ids: list[int],
                  marker: str) -> torch.Tensor:
    """[N, T] bool, as sample_rollouts records it step by step: True while the row has not finished
    (EOS or its end) and the last few decoded tokens up to t have not completed the marker."""
    n, t_max = completion_ids.shape
    eos = torch.tensor(eos_ids, dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.bool)  # [N]
    thinking = torch.ones(n, dtype=torch.bool)  # [N]
    cols, out = [], []
    for t in range(t_max):
        token = completion_ids[:, t]  # [N]
        cols.append(token)
        finished = finished | ~completion_mask[:, t].bool() | torch.isin(token, eos)
        thinking = thinking & ~finished & ~_marker_done(tokenizer, cols, thinking, marker)
        out.append(thinking.clone())
    return torch.stack(out, 1) if out else torch.zeros(n, 0, dtype=torch.bool)  # [N, T]


class EngineTokenStore(TokenPathStore):
    """TokenPathStore on an engine: stateless calls, each path sent as its exact token ids."""

    def __init__(self, engine: "RolloutEngine"):
        PathStore.__init__(self, engine.gen, use_sessions=False)
        self.tok, self.tokens, self.prompt_len = engine.tok, [], []
        self.eos_ids, self.pad_id, self.device, self.engine = engine.eos, engine.pad_id, engine.device, True
        self._run = engine.generate

    def add(self, prompt: str) -> int:
        i = PathStore.add(self, prompt)
        t = PathTokens([], [], [], [])
        self._inject(t, 0, prompt)
        self.tokens.append(t)
        self.prompt_len.append(len(t.ids))
        return i

    def advance(self, ids, params):
        if not ids:
            return []
        base = {i: len(self.text(i)) for i in ids}
        outs = self._run([self.tokens[i].ids for i in ids], params.with_(logprobs=True))
        for i, c in zip(ids, outs):
            if any(t < 0 for t in c.token_ids) or c.logprobs is None:
                raise BackendError("the engine returned no token ids or log-probs; LeaP rollouts need both")
            self._texts[i] += c.text
            self._generated(self.tokens[i], base[i], c)
        return outs


class RolloutEngine:
    """The engine of a Trainer's rollouts (vllm: one in this process; openai: a server pool)."""

    def __init__(self, trainer):
        cfg = self.cfg = trainer.cfg
        self.model, self.tok, self.device = trainer.model, trainer.tok, trainer.dist.device
        self.eos = _eos_ids(trainer.model, trainer.tok, None)
        self.pad_id = trainer.pad_id
        self.folder = trainer.out / ADAPTERS
        self.rank, self.main = trainer.dist.rank, trainer.dist.main
        self.published: tuple[int, Path, str] | None = None  # (step, folder, name)
        if cfg.rollout_backend == "vllm":
            if trainer.dist.world_size > 1:
                raise ValueError("--rollout-backend vllm runs one engine in the training process; with several "
                                 "ranks use --rollout-backend openai with a server pool (--rollout-base-url)")
            from crosspath.backends.vllm import VLLMGenerator
            from crosspath.models import resolve

            try:
                self.gen = VLLMGenerator(resolve(cfg.model), tokenizer=self.tok, dtype=cfg.dtype, seed=cfg.seed,
                                         max_model_len=cfg.rollout_max_model_len, shared=True,
                                         gpu_memory_utilization=cfg.rollout_gpu_memory_utilization,
                                         max_lora_rank=cfg.lora_r, logprobs_mode="processed_logprobs")
            except ImportError as e:  # the install hint, as a user error (exit 2), not a traceback
                raise BackendError(f"--rollout-backend vllm: {e}") from e
        elif cfg.rollout_backend == "openai":
            from crosspath.backends.openai import OpenAIGenerator

            self.gen = OpenAIGenerator(list(cfg.rollout_base_url or ()), model=cfg.model, request_token_ids=True)
        else:
            raise ValueError(f"unknown rollout backend {cfg.rollout_backend!r}; choose one of {ROLLOUT_BACKENDS}")

    def publish(self, step: int) -> None:
        """Hand the trainer's current adapter to the engine (once per step)."""
        if self.published is not None and self.published[0] == step:
            return
        lora_id = next(_LORA_IDS)
        folder = self.folder / (f"step-{step}" + (f"-rank-{self.rank}" if not self.main else ""))
        shutil.rmtree(folder, ignore_errors=True)
        save_weights(self.model, folder)
        name = f"crosspath-{os.getpid()}-{lora_id}-step-{step}"
        if self.cfg.rollout_backend == "vllm":
            self.gen.set_adapter(str(folder), lora_id, name)
        else:
            self.gen.load_adapter(name, str(folder.resolve()))
        self._drop()
        self.published = (step, folder, name)

    def _drop(self) -> None:
        """Forget the adapter published before (its folder; on a server pool, the loaded adapter)."""
        if self.published is None:
            return
        _, folder, name = self.published
        if self.cfg.rollout_backend == "openai":
            self.gen.unload_adapter(name)
        shutil.rmtree(folder, ignore_errors=True)

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        if self.cfg.rollout_backend == "vllm":
            return self.gen.generate_ids(prompt_ids, params)
        return self.gen.generate(prompt_ids, params)  # /v1/completions takes token-id prompts as well

    def sample(self, prompts: list[str], step: int, seed: int) -> Rollout:
        """G completions per prompt on the engine, with this step's adapter."""
        cfg = self.cfg
        self.publish(step)
        ids = [list(x) for x in self.tok(prompts, add_special_tokens=False)["input_ids"]]
        params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                top_k=cfg.sample_top_k, seed=seed % 2**31, n=cfg.group_size, logprobs=True)
        return engine_rollout(self.tok, ids, self.generate(ids, params), cfg.group_size, self.eos, self.pad_id,
                              cfg.marker, self.device)

    def leap_store(self, step: int) -> EngineTokenStore:
        self.publish(step)
        return EngineTokenStore(self)

    def close(self) -> None:
        """Drop the last adapter; a vLLM engine stays (shared in this process, shut down at exit)."""
        self._drop()
        self.published = None
        if self.cfg.rollout_backend == "openai":
            self.gen.close()
        if self.main:
            shutil.rmtree(self.folder, ignore_errors=True)


def mismatch_metrics(sums: list[float]) -> dict[str, float]:
    """sampling_logp_diff_mean / _max over all ranks from [sum |diff|, max |diff|, tokens] (update.py);
    None when no token was scored (an update skipped: every advantage 0)."""
    total, count = all_reduce_sum([sums[0], sums[2]])
    top = all_reduce_sum([sums[1]], op="max")[0]
    return {"sampling_logp_diff_mean": total / count if count else None, "sampling_logp_diff_max": top if count else None}
