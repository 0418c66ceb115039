"""LeaP-T: fine-tune a model on its own successful LeaP traces, so it summarizes and reads peers by itself.

Data, from one or more LeaP run directories (`crosspath run --method leap`, results.jsonl):

    for every path whose final answer is correct:
        prompt = chat template of the plain prompt, STEP_BY_STEP.format(question)
                 (what `crosspath run --method leap --leap-t` sends: a LeaP-T model is not told the
                 protocol, it has learned it)
        target = the path's whole text: its reasoning, the recap sentences and `<summarize>` blocks it
                 wrote, the peer blocks it received, the forced final answer when there was one
        loss   = on the path's own tokens only. The injected peer block
                 `<comment> Peer 1: "..." ... </comment>` (or `<peer_summary>`) and the resolve
                 sentence after it (or the "no comments" sentence) are masked (labels -100).

Why keep the peer blocks in the target at all: the peers' summaries are part of the context the
model must learn to USE (its next steps are conditioned on them); masking them keeps the model
from learning to WRITE them, which at inference is the loop's job (and would make it hallucinate
peers). The recap sentence + `<summarize>` stay trained: deciding when to summarize is the skill.

Training is the QR-Distill trainer with one student and no routing (plain SFT with masks, LoRA,
checkpoints, resume); the adapter lands in OUT/adapter and runs with

    crosspath run --method leap --leap-t --adapter OUT/adapter --model MODEL
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import field
from ..infer.prompts import RESOLVE, RESUME_ALONE, STEP_BY_STEP
from ..models import DEFAULT_MODEL
from .data import Sample, read_rows

PEER_BLOCK = re.compile(r"\n*<(comment|peer_summary)>.*?</\1>", re.DOTALL)


@dataclass
class LeapTConfig:
    runs: list[str] = field([], "LeaP run directories (each with results.jsonl)")
    model: str = field(DEFAULT_MODEL, "model to fine-tune (the one that will run LeaP-T)")
    out: str = field("runs/leap-t", "training run directory; the adapter goes to OUT/adapter")
    require_peers: bool = field(False, "keep only paths that received at least one peer block")
    steps: int = field(100, "optimizer steps", ge=1)
    batch_size: int = field(4, "paths per step", ge=1)
    max_len: int = field(1024, "tokens per example (the end of the target is cut)", ge=1)
    lr: float = field(2e-4, "learning rate", gt=0)
    lora_r: int = field(16, "LoRA rank", ge=1)
    lora_alpha: int = field(32, "LoRA alpha", gt=0)
    seed: int = field(0, "seed", ge=0)
    save_every: int = field(50, "checkpoint every N steps", ge=1)
    resume: bool = field(False, "continue from the last checkpoint in --out")
    overwrite: bool = field(False, "replace an existing run directory")
    device: str | None = field(None, "cpu | cuda (default: cuda when available)")


def peer_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of injected peer blocks and the sentence that follows each.

    >>> t = 'S</summarize>\\n\\n<comment>\\nPeer 1: "a"\\n</comment>' + RESOLVE + "y"
    >>> [(t[:s], t[e:]) for s, e in peer_spans(t)]
    [('S</summarize>', 'y')]
    """
    spans = []
    for m in PEER_BLOCK.finditer(text):
        end = m.end()
        for tail in (RESOLVE, RESUME_ALONE):
            if text.startswith(tail, end):
                end += len(tail)
                break
        spans.append((m.start(), end))
    return spans


def leap_t_samples(run_dirs: list[str], require_peers: bool = False) -> tuple[list[Sample], dict]:
    """Correct LeaP paths -> masked SFT samples, and counts {"paths", "correct", "kept", "peer_blocks"}."""
    samples, stats = [], {"paths": 0, "correct": 0, "kept": 0, "peer_blocks": 0}
    for d in run_dirs:
        path = Path(d) / "results.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{d}: no results.jsonl (a LeaP run directory is expected)")
        for row in read_rows(path):
            if row.get("method") not in (None, "leap"):
                continue
            for j, p in enumerate(row["paths"]):
                stats["paths"] += 1
                if not p.get("correct"):
                    continue
                stats["correct"] += 1
                spans = peer_spans(p["text"])
                if require_peers and not spans:
                    continue
                stats["kept"] += 1
                stats["peer_blocks"] += len(spans)
                samples.append(Sample(id=f"{row['id']}/{j}", user=STEP_BY_STEP.format(question=row["question"]),
                                      target=p["text"], masked=spans, question=row["question"]))
    return samples, stats


def train_leap_t(cfg: LeapTConfig, log: Callable[[str], None] = print) -> dict:
    from .qr import QRConfig, train

    samples, stats = leap_t_samples(cfg.runs, cfg.require_peers)
    log(f"LeaP-T data: {stats['paths']} paths, {stats['correct']} correct, {stats['kept']} kept, "
        f"{stats['peer_blocks']} peer blocks masked")
    if not samples:
        raise ValueError("no correct LeaP paths in " + ", ".join(cfg.runs))
    qr = QRConfig(data=",".join(cfg.runs), students=[cfg.model], out=cfg.out, steps=cfg.steps,
                  batch_size=cfg.batch_size, max_len=cfg.max_len, lr=cfg.lr, lora_r=cfg.lora_r,
                  lora_alpha=cfg.lora_alpha, routing="all", mutual_weight=0.0, seed=cfg.seed,
                  save_every=cfg.save_every, resume=cfg.resume, overwrite=cfg.overwrite, device=cfg.device)
    result = train(qr, samples=samples, log=log)
    result.update(data=stats, adapter=str(Path(cfg.out) / "adapter"))
    log(f"adapter: {result['adapter']}\nrun it: crosspath run --method leap --leap-t --adapter {result['adapter']} "
        f"--model {cfg.model}")
    return result
