"""What the trainer asks and how it judges: the training prompt, the train / held-out split, the
reward and the greedy held-out evaluation. `crosspath.train.trainer` re-exports all of them.
"""

from __future__ import annotations

from crosspath.infer.prompts import MARKER_PROMPT as PROMPT, THINK_PROMPT  # noqa: F401  (one place for prompts)
from crosspath.models import render_prompt
from crosspath.tasks import count_markers, grade, load_task
from crosspath.tasks.datasets import has_splits
from crosspath.train import TrainConfig
from crosspath.train.rollout import greedy_decode


def prompt_text(cfg: TrainConfig, question: str) -> str:
    """The training prompt of `question` (before the chat template) for cfg.answer_format."""
    return (THINK_PROMPT if cfg.answer_format == "think" else PROMPT).format(question=question, marker=cfg.marker)


def load_splits(cfg: TrainConfig, log=print):
    """(train, eval) problems. Tasks with splits (gsm8k, math, hf:...) train on `split` and hold out
    `eval_split`, which must differ; tasks without (rg:, demo, files) take both from one list (rg:
    with different seeds). Either way a training question that is also held out (same id, or the
    same text up to case and spacing) is dropped, so training never sees a held-out question."""
    opts = cfg.resolved_task_options()
    if has_splits(cfg.task) and cfg.split == cfg.eval_split:
        raise ValueError(f"--split and --eval-split are both {cfg.split!r}: {cfg.task} would be trained on its "
                         "held-out questions; use e.g. --split train --eval-split test")
    evals = (load_task(cfg.task, limit=cfg.eval_size, seed=cfg.eval_seed, split=cfg.eval_split, **opts)
             if cfg.eval_size else [])
    ids, texts = {p.id for p in evals}, {_norm(p.question) for p in evals}
    loaded = load_task(cfg.task, limit=cfg.train_size, seed=cfg.task_seed, split=cfg.split, **opts)
    train = [p for p in loaded if p.id not in ids and _norm(p.question) not in texts]
    if evals and has_splits(cfg.task) and len(train) < len(loaded):
        log(f"{len(loaded) - len(train)} training questions of {cfg.task} split {cfg.split!r} are also in "
            f"split {cfg.eval_split!r} (same id or text): dropped from training")
    if cfg.train_ids:  # 1-shot RLVR: the chosen examples only
        missing = sorted(set(cfg.train_ids) - {p.id for p in train})
        if missing:
            raise ValueError(f"--train-ids {missing} are not among the first {cfg.train_size} training questions of "
                             f"{cfg.task} (or are held out)")
        train = [p for p in train if p.id in set(cfg.train_ids)]
    return train, evals


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def reward(problem, text: str, marker: str = "####", marker_rule: bool = True,
           think: bool = False) -> tuple[float, bool, int]:
    """(reward, correct, marker count): correctness from `grade` (the answer wherever it is), reward 0
    when the marker repeats. think (--answer-format think): reward 1 only for `think_correct`.

    >>> from crosspath.tasks import Problem
    >>> p = Problem("p", "What is 3 + 4?", "7")
    >>> reward(p, "3 + 4 = 7"), reward(p, "3 + 4 = 7", think=True)
    ((1.0, True, 0), (0.0, True, 0))
    """
    correct = grade(problem, text)[1]
    n = count_markers(text, marker)
    if think:
        return float(think_correct(problem, text, marker)), correct, n
    return float(correct and not (marker_rule and n > 1)), correct, n


def reward_options(cfg: TrainConfig) -> dict:
    """The keyword options of `reward` for this run: think=True under --answer-format think, except for
    LeaP-GRPO (its paths answer in \\boxed{} under the LeaP prompt). Only passed when set, so a test's
    stand-in reward(problem, text, marker, marker_rule) still fits."""
    return {"think": True} if cfg.answer_format == "think" and cfg.algo != "leap" else {}


def think_correct(problem, text: str, marker: str = "####") -> bool:
    """The thinking-phase rule: exactly one marker, some reasoning (a letter or digit) before it, and
    the answer after it correct (graded on the marker and what follows only, so a right number in the
    reasoning does not count).

    >>> from crosspath.tasks import Problem
    >>> p = Problem("p", "What is 3 + 4?", "7")
    >>> [think_correct(p, t) for t in ("3 + 4 = 7\\n#### 7", "#### 7", "7", "3 + 4 = 7 #### 7 #### 7", "7 #### 8")]
    [True, False, False, False, False]
    """
    if count_markers(text, marker) != 1:
        return False
    before, after = text.split(marker, 1)
    return any(c.isalnum() for c in before) and grade(problem, "#### " + after)[1]


def evaluate(model, tokenizer, problems, cfg: TrainConfig) -> tuple[dict, list[dict]]:
    """Greedy, one path, no blend, training prompt. Returns (sums, rows) for this process's problems;
    `think` counts the answers the thinking-phase rule accepts (`think_correct`)."""
    rows = []
    for i in range(0, len(problems), cfg.eval_batch_size):
        batch = problems[i: i + cfg.eval_batch_size]
        prompts = [render_prompt(tokenizer, prompt_text(cfg, p.question)) for p in batch]
        for p, text in zip(batch, greedy_decode(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens,
                                                marker=cfg.marker)):
            answer, correct = grade(p, text)
            rows.append({"id": p.id, "gold": p.answer, "answer": answer, "correct": correct,
                         "markers": count_markers(text, cfg.marker), "text": text,
                         "think_correct": think_correct(p, text, cfg.marker)})
    sums = {"correct": sum(r["correct"] for r in rows), "format": sum(r["markers"] == 1 for r in rows),
            "think": sum(r["think_correct"] for r in rows), "n": len(rows)}
    return sums, rows
