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
from pathlib import Path
from typing import Any, Callable

from .. import backends
from ..config import ConfigError, check, config_hash, save_yaml, to_dict
from ..jsonl import read_jsonl as read_results  # noqa: F401  (the runner's name for it)
from ..rundir import RunDirError, claim_run_dir, default_run_dir
from ..tasks import SameAnswer, TaskError, judge, load_task
from ..tasks.metrics import cons_at_n, pass_at_1, summarize
from . import budget
from .aggregate import all_aggregates, confidence_stats, reasoning_steps
from .leap import PROMPTS, LeapOptions
from .paths import PathStore
from .prompts import QUESTION_PROMPTS
from .run_config import METHODS, RUN_KEYS_IGNORED, RunConfig  # noqa: F401  (RunConfig is imported from here too)

def default_out(cfg: RunConfig) -> Path:
    return default_run_dir(cfg.method, cfg.task, cfg.model)


def make_generator(cfg: RunConfig):
    """The backend of `cfg` (backends.factory.make_generator with the run's options)."""
    return backends.make_generator(
        cfg.backend, cfg.model, adapter=cfg.adapter, dtype=cfg.dtype, device_map=cfg.device_map,
        base_url=cfg.base_url, api_key=cfg.api_key, served_model=cfg.served_model, concurrency=cfg.concurrency,
        max_model_len=cfg.max_model_len, gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size, enforce_eager=cfg.enforce_eager,
        cpu_kvcache_gib=cfg.cpu_kvcache_gib, seed=cfg.seed)


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
    grading this question (each graded wrong) and the answer comparisons of its vote that did.
    Scores (pass@1, cons@N, aggregators) are over the graded paths; paths with `vote: false` (DeepConf
    online) do not vote; `tokens` counts every path's."""
    paths, timeouts = [], 0
    for t in traces:
        own = t.own_text if t.own_text is not None else t.text
        answer, correct, timed_out = judge(problem, own)
        timeouts += timed_out
        if cfg.method == "leap":
            timeouts += _grade_rounds(problem, t.rounds)
        rec = {"text": t.text, "answer": answer, "correct": correct, "tokens": t.tokens,
               "finish": t.finish, "rounds": t.rounds, "steps": reasoning_steps(own)}
        if t.confidence is not None:
            rec["confidence"] = confidence_stats(t.confidence, cfg.conf_window)
        if not t.graded:
            rec["graded"] = False
        paths.append({**rec, **t.extra})
    graded = [p for p in paths if p.get("graded", True)]
    voters = [p for p in graded if p.get("vote", True)]
    same = SameAnswer(problem)
    cons_answer, cons_correct = cons_at_n([p["answer"] for p in voters], [p["correct"] for p in voters], equiv=same)
    return {**problem.to_dict(), "method": cfg.method, "config": chash, "prompt": traces[0].prompt,
            "paths": paths, "cons_answer": cons_answer, "cons_correct": cons_correct,
            "pass_at_1": pass_at_1([p["correct"] for p in graded]), "aggregates": all_aggregates(graded, same),
            "tokens": sum(p["tokens"] for p in paths),
            "grading_timeouts": timeouts + same.timeouts, "wall_seconds": round(wall, 3)}


def headline(cfg: RunConfig) -> str:
    """The aggregator whose answer is the method's own: DeepConf offline votes among the top-eta% most
    confident paths, online weights the paths that did not stop; the others take the majority."""
    if cfg.method == "deepconf":
        return f"top{cfg.conf_eta}_conf" if cfg.deepconf_mode == "offline" else "conf_weighted"
    return "majority"


def records_confidence(cfg: RunConfig) -> bool:
    return (cfg.confidence or cfg.method == "deepconf"
            or (cfg.method == "leap" and (cfg.leap_conf_stop or cfg.router == "confident")))


def run(cfg: RunConfig, generator=None, problems=None, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) one method on one task; returns the summary dict.

    Everything that can be wrong is found before the first question runs: options (ranges,
    types), the run directory (writable, not in use, same options on --resume), the task, the
    model and every question's prompt length. Only then does --overwrite delete the old results.
    """
    check(cfg)
    if cfg.method == "leap":
        if cfg.prompt not in (None, *PROMPTS):
            raise ConfigError(f"--prompt {cfg.prompt} is a prompt of independent sampling; LeaP's are {PROMPTS}")
        leap_options(cfg)  # options that do not go together are refused before anything runs
    elif cfg.leap_control:
        raise ConfigError(f"--leap-control is an option of --method leap, not {cfg.method}")
    elif cfg.prompt and (cfg.method not in ("independent", "greedy") or cfg.prompt not in QUESTION_PROMPTS):
        raise ConfigError(f"--prompt {cfg.prompt} goes with --method leap ({', '.join(PROMPTS)}) or independent / "
                          f"greedy ({', '.join(QUESTION_PROMPTS)}), not {cfg.method}")
    if (cfg.leap_conf_stop or cfg.router == "confident") and cfg.method != "leap":
        raise ConfigError(f"--leap-conf-stop and --router confident are options of --method leap, not {cfg.method}")
    if cfg.paths_per_round and cfg.method != "pacore":
        raise ConfigError(f"--paths-per-round is an option of --method pacore, not {cfg.method}")
    if cfg.method == "deepconf" and cfg.deepconf_mode == "online" and cfg.warmup_paths >= cfg.paths:
        raise ConfigError(f"DeepConf online needs more --paths ({cfg.paths}) than --warmup-paths "
                          f"({cfg.warmup_paths}): the paths after the warm-up are the ones it can stop")
    if cfg.method == "greedy":
        cfg.paths, cfg.temperature = 1, 0.0
    budget.resolve(cfg, log)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    results = out / "results.jsonl"
    chash = config_hash(cfg, RUN_KEYS_IGNORED)
    claim = claim_run_dir(out, to_dict(cfg), markers=("results.jsonl",), renamed=RunConfig.RENAMED, resume=cfg.resume, overwrite=cfg.overwrite,
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
    if records_confidence(cfg) and not getattr(gen, "top_logprobs", False):
        raise ConfigError(f"the {cfg.backend if generator is None else type(gen).__name__} backend does not return "
                          "top-k token log-probs, which token confidence needs (--method deepconf, --confidence); "
                          "use the hf, vllm or openai backend")
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
            store = PathStore(gen, use_sessions=None if cfg.kv_reuse else False,
                              top_logprobs=cfg.conf_top_k if records_confidence(cfg) else 0)
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
                bar.set_postfix(pass1=f"{sum(r['pass_at_1'] for r in rows) / max(len(rows), 1):.3f}",  # mean over questions
                                tok_s=f"{new_tokens / max(time.time() - t_run, 1e-9):.0f}")
    if bar:
        bar.close()
    summary = summarize(rows)
    wall = sum(r["wall_seconds"] for r in rows)
    name = headline(cfg)
    summary["aggregated"] = {"aggregator": name, "accuracy": summary.get("aggregates", {}).get(name)}
    summary.update(method=cfg.method, task=cfg.task, model=cfg.model, backend=cfg.backend,
                   paths=min((sum(p.get("graded", True) for p in r["paths"]) for r in rows), default=cfg.paths),
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

        style = cfg.prompt or "plain"
        return (lambda probs, store, c, render, seed: indep_solve(probs, store, c, render, seed, c.answer_tokens,
                                                                  style),
                lambda p, render: question_prompt(p, render, style))
    if cfg.method == "leap":
        from .leap import question_prompt as leap_prompt, solve as leap_solve
        from .routing import get_similarity

        opts = leap_options(cfg)
        sim = get_similarity(cfg.similarity)
        return (lambda probs, store, c, render, seed: leap_solve(probs, store, c, render, seed, opts, sim),
                lambda p, render: leap_prompt(p, opts, render))
    if cfg.method in ("deepconf", "pacore", "moa"):
        import importlib

        from .independent import question_prompt

        module = importlib.import_module(f".{cfg.method}", __package__)
        return module.solve, question_prompt  # every path of their first round starts from the plain prompt
    raise ValueError(f"unknown method {cfg.method!r}; choose one of {METHODS}")


def leap_options(cfg: RunConfig) -> LeapOptions:
    """The LeaP options of a run (ValueError when they do not go together, e.g. --leap-t --prompt leap)."""
    return LeapOptions(rounds=cfg.rounds, round_tokens=cfg.round_tokens, peers_k=cfg.peers_k, router=cfg.router,
                       summary_tokens=cfg.summary_tokens, answer_tokens=cfg.answer_tokens,
                       comm_rounds=tuple(cfg.comm_rounds) if cfg.comm_rounds is not None else None,
                       token_budget=cfg.token_budget, tags=cfg.tags, leap_t=cfg.leap_t, prompt=cfg.prompt,
                       control=cfg.leap_control, conf_stop=cfg.leap_conf_stop, conf_window=cfg.conf_window,
                       conf_eta=cfg.conf_eta)


def method_label(summary: dict) -> str:
    """The method column of a run: its method, and for LeaP what sets the run apart from LeaP itself.

    >>> method_label({"method": "leap", "config": {"leap_control": "no-peers", "prompt": "plain"}})
    'leap (no-peers, plain prompt)'
    >>> method_label({"method": "leap", "config": {"leap_t": True, "comm_rounds": []}})
    'leap-t (comm rounds none)'
    >>> method_label({"method": "independent", "config": {"prompt": "think"}})
    'independent (think prompt)'
    """
    c = summary.get("config") or {}
    if summary["method"] == "deepconf":
        return f"deepconf ({c.get('deepconf_mode', 'online')}, eta {c.get('conf_eta', 90)})"
    if summary["method"] == "pacore":
        return "pacore (" + "-".join(map(str, c.get("paths_per_round") or [c.get("paths", "N"), 1])) + ")"
    if summary["method"] == "moa":
        return f"moa ({c.get('moa_layers', 2)} layers)"
    if summary["method"] != "leap":
        style = c.get("prompt")
        return summary["method"] + (f" ({style} prompt)" if style and style != "plain" else "")
    marks = [c["leap_control"]] if c.get("leap_control") else []
    if c.get("prompt") == "plain" and not c.get("leap_t"):
        marks.append("plain prompt")
    if c.get("leap_conf_stop"):
        marks.append(f"conf-stop eta {c.get('conf_eta', 90)}")
    if c.get("router") == "confident":
        marks.append("confident router")
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
