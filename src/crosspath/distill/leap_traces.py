"""LeaP traces for LeaP-T, at scale: `crosspath distill leap-traces`.

    training questions   the task's training split (rg: tasks a task seed that must differ from the
                         held-out seed); any question that is also held out (same id, or same text
                         up to case and spacing) or repeats an earlier one is dropped
    in chunks of --chunk questions (whole batches), each run directory resumed where it stopped:
        OUT/leap/          `crosspath run --method leap` over the chunk (with --leap)
        OUT/independent/   N independent paths at LeaP's per-path budget (with --splice)
        OUT/traces.jsonl   rebuilt from both after every chunk:
                             origin "leap":    LeaP paths that ended correct and wrote every summary
                                               they were asked for (not empty, not cut by the budget)
                             origin "spliced": correct independent paths cut into rounds, with their
                                               own running results as summaries and real peers'
                                               summaries (splice.py)
        OUT/yield.json     questions, paths, kept, and why the others were dropped, per origin

A killed run resumes from the last finished batch when the same command is run again (the
runner refuses a run directory made with other options). LeaP-T trains on OUT/traces.jsonl:
`crosspath distill leap-t --traces OUT`.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import field, save_yaml
from ..backends import BACKENDS
from ..infer.runner import RunConfig, read_results, run
from ..models import DEFAULT_MODEL
from .data import write_rows
from .splice import splice_question
from .traces import leap_trace_rows


@dataclass
class LeapTracesConfig:
    model: str = field(DEFAULT_MODEL, "model that writes the traces (the one LeaP-T will fine-tune)")
    task: str = field("rg:chain_sum", "task of the training questions")
    task_options: dict | None = field(None, "task options as JSON, e.g. '{\"min_terms\": 2, \"max_terms\": 3, "
                                            "\"max_digits\": 1}' for rg:chain_sum (also used for the held-out set)")
    split: str = field("train", "split of the training questions, for tasks with splits")
    task_seed: int = field(0, "seed of generated training questions (rg:); must differ from --eval-task-seed")
    limit: int = field(64, "training questions (after dropping held-out and repeated ones)")
    eval_split: str = field("test", "split of the held-out questions, for tasks with splits; must differ from --split")
    eval_task_seed: int = field(1, "seed of the generated held-out questions (rg:), never trained on")
    eval_limit: int = field(200, "held-out questions to keep out of training (the first N of the held-out set)")
    out: str = field("runs/leap-traces", "output folder: leap/, independent/, traces.jsonl, yield.json")
    chunk: int = field(32, "questions per chunk (rounded to whole batches): every run covers a chunk before "
                           "the next starts, and traces.jsonl + yield.json are rewritten after each")
    leap: bool = field(True, "run LeaP and keep its correct paths that completed the protocol (origin leap)")
    splice: bool = field(False, "also run independent paths and splice the correct ones into traces (origin spliced)")
    correct_only: bool = field(True, "keep only paths whose final answer is correct (--no-correct-only also keeps "
                                     "wrong ones: format-only traces, or a smoke test with an untrained model)")
    paths: int = field(4, "N: paths per question (LeaP and independent)")
    rounds: int = field(2, "R: LeaP rounds (exchanges after each but the last; splicing cuts R-1 times)")
    round_tokens: int = field(64, "T: tokens per round (splicing cuts before token T*k)")
    summary_tokens: int = field(32, "S: summary budget (spliced summaries are cut to it too)")
    answer_tokens: int = field(32, "A: forced-answer budget")
    peers_k: int = field(2, "k: peers' summaries per path", ge=0)
    router: str = field("dispersed", "dispersed | clustered | hybrid | random | all (LeaP and splicing)",
                        choices=("dispersed", "clustered", "hybrid", "random", "all"))
    temperature: float = field(0.6, "sampling temperature")
    top_p: float = field(0.95, "nucleus sampling")
    seed: int = field(0, "sampling seed (and the splice router's)")
    batch_questions: int = field(8, "questions whose paths share one generator call")
    run_options: dict | None = field(None, "further RunConfig options of the LeaP run as JSON (e.g. '{\"tags\": "
                                           "\"peer_summary\"}')")
    backend: str = field("hf", "hf | openai | vllm", choices=BACKENDS)
    base_url: list[str] = field([], "openai backend: server URL(s)")
    served_model: str | None = field(None, "openai backend: model name on the server (default: --model)")
    concurrency: int = field(16, "openai backend: maximum requests in flight")
    dtype: str = field("float32", "hf/vllm: weights dtype")
    threads: int | None = field(None, "hf backend on CPU: torch threads")
    overwrite: bool = field(False, "delete --out first (otherwise an existing --out is resumed)")


def run_config(cfg: LeapTracesConfig, method: str) -> RunConfig:
    """The RunConfig of the LeaP or independent run under OUT (always resumed)."""
    rc = RunConfig(method=method, model=cfg.model, backend=cfg.backend, base_url=list(cfg.base_url),
                   served_model=cfg.served_model, concurrency=cfg.concurrency, dtype=cfg.dtype, threads=cfg.threads,
                   task=cfg.task, split=cfg.split, task_seed=cfg.task_seed, task_options=cfg.task_options,
                   paths=cfg.paths, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                   out=str(Path(cfg.out) / method), resume=True, batch_questions=cfg.batch_questions,
                   rounds=cfg.rounds, round_tokens=cfg.round_tokens, peers_k=cfg.peers_k, router=cfg.router,
                   summary_tokens=cfg.summary_tokens, answer_tokens=cfg.answer_tokens)
    if method == "leap":
        for k, v in (cfg.run_options or {}).items():
            if not hasattr(rc, k):
                raise ValueError(f"--run-options: RunConfig has no option {k!r}")
            setattr(rc, k, v)
    return rc


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def training_questions(cfg: LeapTracesConfig, log: Callable[[str], None] = print) -> tuple[list, dict]:
    """(training problems, counts) with every held-out question kept out; refuses a shared seed or split."""
    from ..tasks import load_task
    from ..tasks.datasets import has_splits

    opts = cfg.task_options or {}
    if has_splits(cfg.task):
        if cfg.split == cfg.eval_split:
            raise ValueError(f"--split and --eval-split are both {cfg.split!r}: traces would come from held-out "
                             "questions")
    elif cfg.task.startswith("rg:") and cfg.task_seed == cfg.eval_task_seed:
        raise ValueError(f"--task-seed and --eval-task-seed are both {cfg.task_seed}: traces would come from the "
                         "held-out questions; use another training seed")
    held = load_task(cfg.task, limit=cfg.eval_limit, seed=cfg.eval_task_seed, split=cfg.eval_split, **opts) \
        if cfg.eval_limit else []
    ids, texts = {p.id for p in held}, {_norm(p.question) for p in held}
    n, kept, counts = cfg.limit, [], {}
    while True:  # generated tasks: load more until `limit` questions survive (their order is stable)
        loaded = load_task(cfg.task, limit=n, seed=cfg.task_seed, split=cfg.split, **opts)
        kept, seen, counts = [], set(), Counter()
        for p in loaded:
            t = _norm(p.question)
            reason = "held_out" if (p.id in ids or t in texts) else "repeated" if t in seen else None
            if reason:
                counts[reason] += 1
                continue
            seen.add(t)
            kept.append(p)
        if len(kept) >= cfg.limit or len(loaded) < n or n >= 64 * max(cfg.limit, 1):
            break
        n *= 2
    kept = kept[:cfg.limit]
    if not kept:
        raise ValueError(f"no training question of {cfg.task} is left once the held-out ones are dropped")
    info = {"questions": len(kept), "held_out": len(held), "dropped_held_out": counts["held_out"],
            "dropped_repeated": counts["repeated"]}
    log(f"training questions: {len(kept)} of {cfg.task} (seed {cfg.task_seed}, split {cfg.split}); "
        f"{counts['held_out']} dropped as held out, {counts['repeated']} as repeats")
    return kept, info


def collect(cfg: LeapTracesConfig, tok, questions: dict | None = None, ids: set | None = None) -> tuple[list[dict], dict]:
    """Traces and yield report from the run directories under OUT (see the module docstring), over the
    questions in `ids` (default: every question the runs hold)."""
    out = Path(cfg.out)
    traces: list[dict] = []
    report: dict = {"questions": dict(questions or {})}
    keep = lambda rows: [r for r in rows if ids is None or r["id"] in ids]  # noqa: E731
    leap_rows = keep(read_results(out / "leap" / "results.jsonl"))
    if cfg.leap:
        why = Counter()
        for row in leap_rows:
            kept, verdicts = leap_trace_rows(row, cfg.summary_tokens, cfg.correct_only)
            traces += kept
            why.update(verdicts)
        report["leap"] = _origin_report(leap_rows, why)
    ind_rows = keep(read_results(out / "independent" / "results.jsonl"))
    if cfg.splice:
        why = Counter()
        for row in ind_rows:
            spliced = splice_question(row, tok, cfg.round_tokens, cfg.rounds, cfg.summary_tokens, cfg.peers_k,
                                      cfg.router, cfg.seed, correct_only=cfg.correct_only)
            traces += spliced
            candidates = [p for p in row["paths"] if p.get("correct") or not cfg.correct_only]
            why["kept"] += len(spliced)
            why["wrong"] += len(row["paths"]) - len(candidates)
            why["no_exchange"] += len(candidates) - len(spliced)
        report["spliced"] = _origin_report(ind_rows, why)
    report["traces"] = len(traces)
    report["questions_with_traces"] = len({t["id"] for t in traces})
    report["exchanges_per_trace"] = round(sum(t["exchanges"] for t in traces) / max(len(traces), 1), 3)
    return traces, report


def _origin_report(rows: list[dict], why: Counter) -> dict:
    paths = sum(len(r["paths"]) for r in rows)
    return {"questions": len(rows), "paths": paths, "correct": sum(p.get("correct", False) for r in rows for p in r["paths"]),
            "kept": why["kept"], "yield": round(why["kept"] / max(paths, 1), 4),
            "dropped": {k: v for k, v in sorted(why.items()) if k != "kept" and v}}


def yield_lines(report: dict) -> str:
    """The yield report as text (what `distill leap-traces` prints)."""
    q = report.get("questions", {})
    lines = [f"training questions: {q.get('questions', '?')} planned ({q.get('dropped_held_out', 0)} held-out and "
             f"{q.get('dropped_repeated', 0)} repeated ones dropped)"]
    for origin in ("leap", "spliced"):
        if origin in report:
            r = report[origin]
            dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "none"
            lines.append(f"{origin:8s} {r['questions']} questions, {r['paths']} paths, {r['correct']} correct, "
                         f"{r['kept']} kept (yield {r['yield']:.3f}); dropped: {dropped}")
    lines.append(f"traces: {report['traces']} from {report['questions_with_traces']} questions, "
                 f"{report['exchanges_per_trace']} exchanges per trace")
    return "\n".join(lines)


def build_traces(cfg: LeapTracesConfig, generator=None, problems=None, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the chunks, rewrite traces.jsonl + yield.json after each; returns the yield report."""
    if not (cfg.leap or cfg.splice):
        raise ValueError("nothing to do: give --leap, --splice or both")
    out = Path(cfg.out)
    info = {"questions": len(problems)} if problems is not None else None
    if problems is None:
        problems, info = training_questions(cfg, log)
    if generator is None:
        from ..infer.runner import make_generator

        generator = make_generator(run_config(cfg, "leap"))
    if cfg.overwrite and out.exists():  # only once the questions and the model have loaded
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    tok = getattr(generator, "tok", None) or getattr(generator, "tokenizer", None)
    if tok is None:
        from ..models import load_tokenizer

        tok = load_tokenizer(cfg.model)
    B = max(1, cfg.batch_questions)
    chunk = max(B, cfg.chunk - cfg.chunk % B)  # whole batches, so a chunked run samples what one run would
    methods = (["leap"] if cfg.leap else []) + (["independent"] if cfg.splice else [])
    report: dict = {}
    for upto in range(chunk, len(problems) + chunk, chunk):
        upto = min(upto, len(problems))
        for method in methods:
            s = run(run_config(cfg, method), generator=generator, problems=problems[:upto], progress=False, log=log)
            log(f"  {method} questions 1-{upto}: pass@1 {s['pass_at_1']:.3f}, {s['tokens_per_question']:.0f} "
                "tokens/question")
        traces, report = collect(cfg, tok, info, {p.id for p in problems[:upto]})
        write_rows(out / "traces.jsonl", traces)
        (out / "yield.json").write_text(json.dumps(report, indent=2))
        log(f"after {upto}/{len(problems)} questions: {report['traces']} traces")
    log(yield_lines(report))
    return report
