"""LeaP-T: fine-tune a model on LeaP traces, so it summarizes and reads its peers by itself.

Data: trace files from `crosspath distill leap-traces` (traces.jsonl, origins "leap" and
"spliced"), or LeaP run directories (their correct paths that completed the protocol):

    prompt = the plain step-by-step prompt (prompts.plain_prompt) in the model's chat template:
             what `crosspath run --method leap --leap-t` sends; a LeaP-T model is not told the
             protocol, it has learned it
    target = the trace as the LeaP-T loop would show it (traces.leap_t_target): the path's own
             words, "<summarize>", its summary and "</summarize>" are targets; the peers' block with
             its resolve sentence and the forced-answer lead-in are context with labels -100 (the
             loop injects them at inference too); the recap trigger and the summary opener that the
             LeaP loop injected are dropped (the LeaP-T loop never shows them)

Why keep the peers' block at all: the peers' summaries are the context the model must learn to
USE (its next words are conditioned on them); masking keeps it from learning to WRITE them, which
is the loop's job (a model that wrote them would invent peers).

The SFT baseline (`--single-paths`) trains the same way on the correct independent paths of the
same questions (OUT/independent beside the traces), and `--match DIR` sets its steps so that it
sees as many target tokens as the LeaP-T run in DIR (data.json records them).

Training is the QR-Distill trainer with one student and no routing (plain SFT with masks, LoRA,
checkpoints, resume); the adapter lands in OUT/adapter and runs with

    crosspath run --method leap --leap-t --adapter OUT/adapter --model MODEL

`format_rate` measures what LeaP-T is for: the share of paths that open `<summarize>` themselves.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import field
from ..infer.prompts import TAG_SETS, Tags, plain_prompt
from ..models import DEFAULT_MODEL
from ..tasks.problem import Problem
from .data import Sample, read_rows
from .traces import ORIGINS, leap_t_target, leap_trace_rows


@dataclass
class LeapTConfig:
    traces: list[str] = field([], "trace files from `distill leap-traces` (traces.jsonl, or its output folder)")
    runs: list[str] = field([], "LeaP run directories (each with results.jsonl): their correct paths that "
                                "completed the protocol are traces of origin leap")
    origins: list[str] = field(list(ORIGINS), "train on traces of these origins: leap, spliced")
    single_paths: bool = field(False, "SFT baseline: train on the correct independent paths of the traces' questions "
                                      "(OUT/independent beside each trace file) instead of the traces")
    correct_only: bool = field(True, "train only on paths whose final answer is correct (traces and single paths)")
    match: str | None = field(None, "a LeaP-T training directory: take as many optimizer steps as needed to see its "
                                    "number of target tokens (its data.json)")
    model: str = field(DEFAULT_MODEL, "model to fine-tune (the one that will run LeaP-T)")
    out: str = field("runs/leap-t", "training run directory; the adapter goes to OUT/adapter")
    require_peers: bool = field(False, "keep only traces that received at least one peer's summary")
    steps: int = field(100, "optimizer steps (ignored with --match)", ge=1)
    batch_size: int = field(4, "paths per step", ge=1)
    micro_batch_size: int = field(0, "paths per forward/backward pass, gradients accumulated into one step of "
                                     "--batch-size (less memory, the same step). 0: the whole batch at once", ge=0)
    max_len: int = field(1024, "tokens per example (the end of the target is cut)", ge=1)
    lr: float = field(2e-4, "learning rate", gt=0)
    lora_r: int = field(16, "LoRA rank", ge=1)
    lora_alpha: int = field(32, "LoRA alpha", gt=0)
    seed: int = field(0, "seed", ge=0)
    save_every: int = field(50, "checkpoint every N steps", ge=1)
    resume: bool = field(False, "continue from the last checkpoint in --out")
    overwrite: bool = field(False, "replace an existing run directory")
    device: str | None = field(None, "cpu | cuda (default: cuda when available)")


def _trace_file(path: str) -> Path:
    p = Path(path)
    return p / "traces.jsonl" if p.is_dir() else p


def _user(row: dict) -> str:
    return plain_prompt(Problem(id=str(row["id"]), question=row["question"], answer=str(row.get("gold")),
                                choices=row.get("choices")))


def trace_sample(row: dict, tags: Tags = TAG_SETS["comment"]) -> Sample:
    """A trace row (or any path text in LeaP format) -> a masked LeaP-T sample."""
    target, masked = leap_t_target(row["text"], tags)
    return Sample(id=f"{row['id']}/{row.get('origin', '')}/{row.get('path', 0)}", user=_user(row), target=target,
                  masked=masked, style=row.get("origin", ""), question=row["question"])


def run_traces(run_dir: str, correct_only: bool = True) -> list[dict]:
    """Trace rows (origin leap) of a LeaP run directory's correct paths that completed the protocol."""
    from ..infer.budget import run_config

    path = Path(run_dir) / "results.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no results.jsonl (a LeaP run directory is expected)")
    budget = getattr(run_config(run_dir), "summary_tokens", None) if (Path(run_dir) / "config.yaml").exists() else None
    return [t for row in read_rows(path) if row.get("method") in (None, "leap")
            for t in leap_trace_rows(row, budget, correct_only)[0]]


def leap_t_samples(cfg: LeapTConfig) -> tuple[list[Sample], dict]:
    """The training samples of `cfg` and counts {"traces", "origins", "questions", "masked_spans"}."""
    unknown = set(cfg.origins) - set(ORIGINS)
    if unknown:
        raise ValueError(f"unknown origins {sorted(unknown)}; choose from {', '.join(ORIGINS)}")
    rows = [r for f in cfg.traces for r in read_rows(_trace_file(f))]
    rows += [r for d in cfg.runs for r in run_traces(d, cfg.correct_only)]
    rows = [r for r in rows if r.get("origin", "leap") in cfg.origins and (r.get("correct") or not cfg.correct_only)]
    if cfg.require_peers:
        rows = [r for r in rows if any(rd.get("peers") for rd in r.get("rounds", []))]
    if cfg.single_paths:
        rows = single_paths(cfg.traces, {r["id"] for r in rows}, cfg.correct_only)
    samples = [trace_sample(r) for r in rows]
    stats = {"traces": len(rows), "origins": dict(Counter(r.get("origin", "leap") for r in rows)),
             "questions": len({r["id"] for r in rows}), "masked_spans": sum(len(s.masked) for s in samples)}
    return samples, stats


def single_paths(trace_files: list[str], questions: set, correct_only: bool = True) -> list[dict]:
    """Correct (all, without correct_only) independent paths of these questions, from OUT/independent
    beside each trace file."""
    from ..infer.runner import read_results

    rows = []
    for f in trace_files:
        ind = _trace_file(f).parent / "independent" / "results.jsonl"
        if not ind.exists():
            raise FileNotFoundError(f"{ind}: --single-paths needs the independent run of `distill leap-traces --splice`")
        for row in read_results(ind):
            if row["id"] in questions:
                rows += [{"id": row["id"], "question": row["question"], "gold": row.get("answer"),
                          "choices": row.get("choices"), "path": j, "origin": "single", "text": p["text"],
                          "correct": bool(p.get("correct"))}
                         for j, p in enumerate(row["paths"]) if p.get("correct") or not correct_only]
    return rows


def target_tokens(samples: list[Sample], tok, max_len: int) -> list[int | None]:
    """Labelled (trained) tokens of each sample as the trainer encodes it (None: nothing left to train)."""
    from ..models import render_prompt
    from .data import IGNORE, encode_sft

    counts = []
    for s in samples:
        e = encode_sft(tok, render_prompt(tok, s.user), s.target, s.masked, max_len)
        counts.append(None if e is None else sum(lb != IGNORE for lb in e.labels))
    return counts


def tokens_seen(counts: list[int], steps: int, batch_size: int, seed: int) -> int:
    """Target tokens the trainer's batches cover in `steps` steps (its seeded epochs, qr.batch_indices)."""
    from .qr import batch_indices

    return sum(counts[i] for step in range(steps) for i in batch_indices(step, len(counts), batch_size, seed))


def steps_to_match(counts: list[int], goal: int, batch_size: int, seed: int) -> int:
    """The fewest steps whose batches cover at least `goal` target tokens."""
    from .qr import batch_indices

    seen, step = 0, 0
    while seen < goal:
        seen += sum(counts[i] for i in batch_indices(step, len(counts), batch_size, seed))
        step += 1
    return max(step, 1)


def train_leap_t(cfg: LeapTConfig, log: Callable[[str], None] = print) -> dict:
    from ..models import load_tokenizer
    from .qr import QRConfig, train

    samples, stats = leap_t_samples(cfg)
    what = "single paths" if cfg.single_paths else "traces"
    log(f"LeaP-T data: {stats['traces']} {what} {stats['origins']} from {stats['questions']} questions, "
        f"{stats['masked_spans']} masked spans")
    counts = target_tokens(samples, load_tokenizer(cfg.model), cfg.max_len)
    samples = [s for s, c in zip(samples, counts) if c is not None]
    counts = [c for c in counts if c is not None]
    if not samples:
        raise ValueError(f"no {what} to train on in " + ", ".join(cfg.traces + cfg.runs))
    steps = cfg.steps
    if cfg.match:
        goal = json.loads((Path(cfg.match) / "data.json").read_text())["target_tokens_seen"]
        steps = steps_to_match(counts, goal, cfg.batch_size, cfg.seed)
        log(f"--match {cfg.match}: {goal} target tokens -> {steps} steps of {cfg.batch_size}")
    data = {**stats, "samples": len(samples), "target_tokens": sum(counts), "steps": steps,
            "batch_size": cfg.batch_size, "target_tokens_seen": tokens_seen(counts, steps, cfg.batch_size, cfg.seed),
            "single_paths": cfg.single_paths, "match": cfg.match}
    qr = QRConfig(data=",".join(cfg.traces + cfg.runs), students=[cfg.model], out=cfg.out, steps=steps,
                  batch_size=cfg.batch_size, micro_batch_size=cfg.micro_batch_size, max_len=cfg.max_len, lr=cfg.lr, lora_r=cfg.lora_r,
                  lora_alpha=cfg.lora_alpha, routing="all", mutual_weight=0.0, seed=cfg.seed,
                  save_every=cfg.save_every, resume=cfg.resume, overwrite=cfg.overwrite, device=cfg.device)
    result = train(qr, samples=samples, log=log)
    (Path(cfg.out) / "data.json").write_text(json.dumps(data, indent=2))
    result.update(data=data, adapter=str(Path(cfg.out) / "adapter"))
    log(f"trained on {data['target_tokens_seen']} target tokens in {steps} steps; adapter: {result['adapter']}\n"
        f"run it: crosspath run --method leap --leap-t --adapter {result['adapter']} --model {cfg.model}")
    return result


def format_rate(rows: list[dict], tags: Tags = TAG_SETS["comment"]) -> dict:
    """How often paths open `<summarize>` themselves: {"paths", "wrote", "closed", "format_rate", "summaries_per_path"}.

    Meaningful where the loop never writes the tag for the model: LeaP-T runs (`--leap-t`) and
    independent or greedy runs; a plain LeaP run injects `<summarize>` itself (`format_rate_of`
    refuses it). Peers' blocks are removed first, so a peer's words never count.

    >>> rows = [{"paths": [{"text": "a <summarize>\\nx</summarize> b"}, {"text": "no tag"}]}]
    >>> format_rate(rows)["format_rate"]
    0.5
    """
    peers = re.compile(rf"<{tags.peers}>.*?</{tags.peers}>", re.DOTALL)
    paths = wrote = closed = summaries = 0
    for row in rows:
        for p in row["paths"]:
            own = peers.sub("", p["text"])
            n = own.count(tags.open_summary)
            paths += 1
            wrote += n > 0
            closed += n > 0 and own.count(tags.close_summary) >= n
            summaries += n
    return {"paths": paths, "wrote": wrote, "closed": closed, "format_rate": wrote / paths if paths else 0.0,
            "summaries_per_path": summaries / paths if paths else 0.0}


def format_rate_of(run_dir: str | Path) -> dict:
    """`format_rate` of a run directory (refused for a LeaP run without --leap-t: there the loop writes the tag)."""
    from ..infer.budget import run_config
    from ..infer.runner import read_results

    cfg = run_config(run_dir)
    if cfg.method == "leap" and not getattr(cfg, "leap_t", False):
        raise ValueError(f"{run_dir}: a LeaP run without --leap-t, where the loop writes <summarize> for the model")
    return format_rate(read_results(Path(run_dir) / "results.jsonl"), TAG_SETS[getattr(cfg, "tags", "comment")])
