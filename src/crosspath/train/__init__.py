"""RL training: GRPO, M3PO and LeaP-GRPO with LoRA.

    grpo.py         group advantages, k3 KL, the policy losses (GSPO, CISPO) (pure tensor functions)
    m3po.py         the cross-path blend of thinking inputs (pure tensor function)
    spo.py          SPO: the per-question value tracker and batch-normalised advantages
    shaping.py      SEED-GRPO's semantic-entropy scale, GRPO-lambda's length penalty
    hints.py        hints for hopeless groups (Guide, SEELE): solution steps, hint length
    variants.py     what those options add to a step, and their state across steps
    rollout.py      step-by-step sampler that can blend inputs and records them; greedy decoding
    data.py         the training prompts (plain, think), the splits, the reward, the greedy evaluation
    format.py       --answer-format think: the format warm-up (SFT on own traces + marker), its metrics
    leap_rollout.py LeaP groups as rollouts: the inference loop, with masks of the path's own tokens
    engine_rollout.py  rollouts sampled on vLLM or a server pool (--rollout-backend), the adapter handed over
    trainer.py      the loop (Trainer.fit); `crosspath train` / `train-eval` in cli.py

What every trainer shares (distillation too):

    lora.py         LoRA set-up; saving / loading the adapter weights
    optim.py        AdamW, linear warmup + cosine schedule, gradient clipping
    rundir.py       the run directory: config.yaml, metrics.jsonl (+ tensorboard), samples/
    checkpoint.py   checkpoints/step-N/, written atomically; resume
    guard.py        the NaN guard: NonFiniteError naming the step, batch and last good checkpoint
    rng.py          seeding; RNG states saved in checkpoints
    distributed.py  torchrun: process group, gradient / number all-reduce, weight broadcast

TrainConfig, the trainer's options with their defaults and help, is defined here: importing it
must not import torch, because `crosspath --help` builds the train flags from it.

>>> from crosspath.train import TrainConfig
>>> from crosspath.train.trainer import Trainer                       # torch, transformers, peft
>>> rows = Trainer(TrainConfig(algo="m3po", steps=20, out="runs/m3po")).fit()  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from crosspath.config import DTYPES, field
from crosspath.models import DEFAULT_MODEL

# the one list of each (the math modules import them; here they stay importable without torch)
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo")  # grpo.policy_loss
SCALES = ("group", "batch", "none")  # grpo.group_advantages
IMPORTANCE_LEVELS = ("token", "sequence")  # grpo: per-token or per-sequence (GSPO) ratio
WEIGHTINGS = ("similarity", "uniform")  # m3po
RHO_TYPES = ("kl", "constant")  # spo
SEED_SCALINGS = ("reciprocal", "linear", "exponential")  # shaping (SEED-GRPO)
HINT_MODES = ("off", "guide", "seele")  # hints
ANSWER_FORMATS = ("plain", "think")  # data: training prompt and reward
ROLLOUT_BACKENDS = ("hf", "vllm", "openai")  # engine_rollout
TASK_DEFAULTS = {"rg:chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}}


@dataclass
class TrainConfig:
    RENAMED: ClassVar[dict[str, str]] = {"top_k": "sample_top_k"}  # old flag / YAML key, accepted with a warning

    algo: str = field("grpo", "grpo, m3po (GRPO + cross-path blend of thinking inputs), or leap (GRPO whose group "
                              "is one LeaP run: paths summarize and read peers)", choices=("grpo", "m3po", "leap"))
    model: str = field(DEFAULT_MODEL, "model name (see `crosspath models`), Hugging Face id or local path")
    dtype: str = field("float32", "weights dtype: float32, bfloat16 (GPU), float16", choices=DTYPES)
    device: str | None = field(None, "cpu, cuda, cuda:1 (default: cuda:<LOCAL_RANK> if available, else cpu)")
    threads: int | None = field(None, "on CPU: torch threads per process (default: torch's choice; on a shared or "
                                      "small machine 1-2 is often much faster)", ge=1)
    task: str = field("rg:chain_sum", "task spec (see `crosspath tasks`)")
    task_options: dict | None = field(None, "task options as a JSON object, e.g. '{\"min_terms\": 2, \"max_terms\": 3}' "
                                            "(default for rg:chain_sum: 2-3 terms of 1 digit)")
    split: str = field("train", "dataset split of the training questions, for tasks with splits (gsm8k, math, hf:...)")
    eval_split: str = field("test", "dataset split of the held-out questions, for tasks with splits; must differ "
                                    "from --split")
    task_seed: int = field(0, "seed of the generated training set", ge=0)
    train_size: int = field(2000, "training questions (any that is also held out, by id or text, is dropped); "
                                  "1 = 1-shot RLVR: one example, repeated", ge=1)
    train_ids: list[str] | None = field(None, "train only on these question ids, picked from the first --train-size "
                                              "(1-shot RLVR: the example with the highest historical variance)")
    eval_size: int = field(200, "held-out questions for the greedy evaluation", ge=0)
    eval_seed: int = field(1234, "seed of the generated held-out set (differs from task_seed)", ge=0)
    steps: int = field(100, "optimizer steps in total (a resumed run with a larger value extends it)", ge=1)
    questions_per_step: int = field(2, "B: questions per step, over all ranks (a multiple of the world size)", ge=1)
    group_size: int = field(8, "G: completions per question (1 only with --baseline spo)", ge=1)
    max_new_tokens: int = field(64, "completion length (paper: 1024)", ge=1)
    temperature: float = field(0.8, "sampling temperature, also applied to the loss log-probs (HRPO: 0.5)", gt=0)
    sample_top_k: int = field(0, "sampling top-k (0 = off; was --top-k)", ge=0)
    top_p: float = field(1.0, "sampling top-p (1 = off)", gt=0, le=1)
    lr: float = field(5e-5, "peak learning rate (paper: 5e-6 with LoRA r 32)", gt=0)
    betas: list[float] = field([0.9, 0.99], "AdamW betas", ge=0, lt=1)
    weight_decay: float = field(0.1, "AdamW weight decay", ge=0)
    warmup_ratio: float = field(0.1, "share of the steps with linear warmup, then cosine decay", ge=0, le=1)
    max_grad_norm: float = field(0.1, "gradient-norm clip (paper 0.1; <= 0: off)")
    optim: str = field("adamw", "adamw, or adamw_8bit (bitsandbytes)", choices=("adamw", "adamw_8bit"))
    beta: float = field(0.0, "KL coefficient to the base model (paper 0.005; 0 skips the reference forward)", ge=0)
    loss_type: str = field("grpo", "loss aggregation, or cispo (clamped, detached ratio times log-prob)",
                           choices=LOSS_TYPES)
    scale_rewards: str = field("group", "advantage scaling by the std of the group, the batch, or none", choices=SCALES)
    importance_level: str = field("token", "importance ratio per token, or per sequence (GSPO: the geometric mean "
                                           "over the completion; differs from token only off-policy)",
                                  choices=IMPORTANCE_LEVELS)
    epsilon: float | None = field(None, "PPO clip range (None: no clipping, exact for num_iterations 1)", gt=0)
    epsilon_high: float | None = field(None, "upper clip range (default: epsilon; cispo: the ratio's cap, "
                                             "default 5.0)", gt=0)
    entropy_coef: float = field(0.0, "entropy bonus: + coef x the policy's token entropy (1-shot RLVR: 0.001)", ge=0)
    baseline: str = field("group", "advantage baseline: the group's mean, or spo (a persistent per-question value "
                                   "tracker; advantages normalised over the batch; --group-size 1 allowed)",
                          choices=("group", "spo"))
    spo_rho: str = field("kl", "SPO: the tracker's forgetting factor from the policy's drift on the question (kl), "
                               "or constant 0.875", choices=RHO_TYPES)
    spo_init_samples: int = field(8, "SPO: samples of a question at its first visit that set its prior "
                                     "(0: alpha = beta = 0.5)", ge=0)
    seed_grpo: bool = field(False, "SEED-GRPO: scale each question's advantages down as the semantic entropy of "
                                   "its group's answers rises")
    seed_alpha: float = field(0.0417, "SEED-GRPO: alpha of f(alpha SE / log G) (its code: 0.0417; paper text: 0.02)",
                              ge=0)
    seed_scaling: str = field("reciprocal", "SEED-GRPO: f, 1/(1+x) (its code), 1-x or exp(-x)",
                              choices=SEED_SCALINGS)
    length_penalty: str = field("off", "Kimi-1.5 length reward: grpo-lambda (only in the groups that are mostly "
                                       "right), always (every group), off", choices=("off", "grpo-lambda", "always"))
    length_penalty_top: float = field(0.5, "GRPO-lambda: share of the batch's groups, highest correctness first, "
                                           "that get the length penalty", gt=0, le=1)
    length_penalty_min_ratio: float = field(0.0, "GRPO-lambda: ... and only if their correctness ratio is above "
                                                 "this", ge=0, lt=1)
    hints: str = field("off", "questions whose completions all got reward 0 are sampled again with the first steps "
                              "of a solution as a hint, trained without it: guide (fixed hint length), seele "
                              "(hint length fitted per question to --hint-target accuracy)", choices=HINT_MODES)
    hint_fraction: float = field(0.5, "guide: share of the solution's steps (all but the last) in the hint", ge=0, le=1)
    hint_target: float = field(0.5, "seele: the accuracy the hint length aims at", gt=0, lt=1)
    hint_rounds: int = field(1, "hinted re-sampling rounds per step for questions still without a reward", ge=1)
    num_iterations: int = field(1, "updates per rollout batch (> 1 reuses it: set --epsilon)", ge=1)
    marker: str = field("####", "answer marker; the thinking phase ends where it appears")
    marker_rule: bool = field(True, "reward 0 when the marker appears more than once (HRPO/M3PO)")
    answer_format: str = field("plain", "training prompt and reward: plain (asks for reasoning then the marker, grades "
                                        "the answer wherever it is) or think (reasoning, then a last line with the "
                                        "marker and the answer; reward only for a correct answer after a single "
                                        "marker with reasoning before it: the thinking phase M3PO blends)",
                               choices=ANSWER_FORMATS)
    format_warmup: int | None = field(None, "format warm-up before RL: SFT steps (8 traces each) on the model's own "
                                            "correct samples, rewritten as reasoning + marker + answer (default: 20 "
                                            "with --answer-format think, else 0 = off)", ge=0)
    format_warmup_questions: int = field(32, "format warm-up: training questions sampled G times each for traces",
                                         ge=1)
    format_warmup_lr: float = field(1e-4, "format warm-up: AdamW learning rate (its own optimizer)", gt=0)
    format_warmup_cache: str | None = field(None, "format warm-up: a folder of warmed-up adapters to share between "
                                                  "runs: a run whose warm-up options (everything but the RL ones: "
                                                  "algo, M3PO's lambda/T, steps, lr, ...) are there loads the adapter, "
                                                  "the RNG state and the held-out evaluation after it instead of "
                                                  "warming up again; otherwise it adds its own (one process only)")
    filter_groups: bool = field(False, "drop all-equal-reward groups and sample more questions to refill")
    filter_std_eps: float = field(1e-6, "filter_groups: a group counts as all-equal when its reward std is <= this",
                                  ge=0)
    max_filter_rounds: int = field(4, "filter_groups: extra sampling rounds per step at most", ge=0)
    micro_batch_size: int = field(16, "completions per forward/backward; their gradients accumulate", ge=1)
    gradient_checkpointing: bool = field(False, "recompute activations in the backward (saves memory)")
    init_adapter: str | None = field(None, "start from this trained LoRA adapter folder (adapter_config.json), e.g. "
                                          "the OUT/adapter of `crosspath distill leap-t` or a run's final/; its rank "
                                          "and alpha must equal --lora-r / --lora-alpha, its target modules are "
                                          "used; the KL reference stays the base model")
    lora_r: int = field(16, "LoRA rank (paper: 32)", ge=1)
    lora_alpha: int = field(32, "LoRA alpha (paper: 64)", gt=0)
    lora_dropout: float = field(0.0, "LoRA dropout", ge=0, lt=1)
    target_modules: list[str] = field(["all-linear"], "LoRA target modules, or all-linear")
    m3po_lambda: float = field(0.1, "M3PO: weight of the peer mix in the thinking inputs (0 = GRPO)", ge=0, le=1)
    m3po_temperature: float = field(0.1, "M3PO: softmax temperature on the cosine similarities", gt=0)
    m3po_weighting: str = field("similarity", "M3PO: peer weights", choices=WEIGHTINGS)
    m3po_ref_replay: bool = field(True, "M3PO: the reference model reads the same blended inputs as the policy, "
                                        "so the KL measures only the adapter's drift (off: plain token ids)")
    rollout_backend: str = field("hf", "what samples the rollouts: hf (the trainer's model, step by step), vllm "
                                       "(an engine in this process, handed the adapter each step) or openai (a "
                                       "server pool that loads adapters at run time, --rollout-base-url); the loss "
                                       "is always on the trainer's model. m3po: hf only", choices=ROLLOUT_BACKENDS)
    rollout_base_url: list[str] | None = field(None, "openai rollouts: the servers' URLs (vLLM serve --enable-lora, "
                                                     "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, reading --out)")
    rollout_gpu_memory_utilization: float = field(0.3, "vllm rollouts on a GPU: the engine's share of its memory "
                                                       "(the trainer keeps the rest)", gt=0, le=1)
    rollout_max_model_len: int | None = field(None, "vllm rollouts: the engine's context length (default: the "
                                                    "model's)", ge=1)
    leap_rounds: int = field(2, "LeaP: rounds per rollout; paths summarize and read peers after each but the last",
                             ge=1)
    leap_round_tokens: int = field(32, "LeaP: T, new tokens per round (default: below the ~40-100 tokens SmolLM2 "
                                       "takes to answer a 2-3 term sum, so most paths still reason at the exchange; "
                                       "check leap_read_peers)",
                                   ge=1)
    leap_summary_tokens: int = field(24, "LeaP: S, summary budget per path and round", ge=1)
    leap_answer_tokens: int = field(16, "LeaP: A, budget of the forced final answer", ge=1)
    leap_peers_k: int = field(2, "LeaP: k, peers' summaries each path reads", ge=0)
    leap_router: str = field("dispersed", "LeaP: router", choices=("dispersed", "clustered", "hybrid", "random", "all"))
    eval_every: int = field(20, "greedy held-out evaluation every N steps, at the start and at the end (0 = off)", ge=0)
    eval_batch_size: int = field(32, "questions per greedy evaluation batch", ge=1)
    save_every: int = field(20, "checkpoint every N steps (and at the end)", ge=0)
    keep_checkpoints: int = field(3, "keep the last K checkpoints (0 = all)", ge=0)
    log_samples: int = field(8, "completions per step written to samples/step-N.jsonl", ge=0)
    seed: int = field(0, "seed of LoRA init, data order and sampling", ge=0)
    out: str | None = field(None, "run directory (default: runs/train-<algo>-<task>-<model>)")
    resume: bool = field(False, "continue from the last complete checkpoint in --out")
    overwrite: bool = field(False, "replace an existing run directory")
    tensorboard: bool = field(True, "also write tensorboard logs to <out>/tb")
    progress: bool = field(True, "show a progress bar")

    def resolved_format_warmup(self) -> int:
        return (20 if self.answer_format == "think" else 0) if self.format_warmup is None else self.format_warmup

    def resolved_task_options(self) -> dict:
        return dict(TASK_DEFAULTS.get(self.task, {}) if self.task_options is None else self.task_options)


def __getattr__(name):
    if name in ("Trainer", "train"):
        from crosspath.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'crosspath.train' has no attribute {name!r}")
