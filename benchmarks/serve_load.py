"""Load test of `crosspath serve`: many concurrent OpenAI-client requests against one server.

    python benchmarks/serve_load.py [--model tiny-random] [--requests 32] [--concurrency 32]
                                    [--method leap] [--paths 4] [--rounds 2] [--round-tokens 32]
                                    [--sample-top-k 40] [--max-batch 8] [--batch-window-ms 15]
                                    [--threads 1] [--stream]

Starts the server in this process (uvicorn on a background thread, 127.0.0.1, a free port) over
the hf backend, sends one warm-up request, then fires `--requests` chat completions from
`--concurrency` client threads (the real `openai` client, one shared instance) at once, each a
different small arithmetic question. Prints the machine and the command, then a Markdown table:
errors (must be 0: the script exits 1 otherwise), latency p50/p90/p99 (seconds, first request
sent to last byte received), throughput in requests/s and tokens/s (completion tokens of every
path, and prompt + completion as billed in `usage`), and how the scheduler batched the requests.

With the default `tiny-random` model (2 random layers) the numbers measure the server: HTTP,
scheduling, batching and the LeaP loop, not a model's speed. Sampling uses top-k 40 (the LeaP
reference setting) by default: a random model's next-token distribution is flat, so top-p alone
makes the hf backend sort the whole 49k vocabulary at every step, and that sort (an artefact of
the random model) would then be most of what is measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import torch

from crosspath.serve.app import ServerThread
from crosspath.serve.config import ServeConfig
from crosspath.serve.service import Service

# ---- defaults (all overridable on the command line) ------------------------------------------
MODEL = "tiny-random"
REQUESTS, CONCURRENCY = 32, 32
METHOD, PATHS, ROUNDS, ROUND_TOKENS, SUMMARY_TOKENS, ANSWER_TOKENS = "leap", 4, 2, 32, 8, 8
TEMPERATURE, TOP_P, SAMPLE_TOP_K = 0.6, 0.95, 40
MAX_BATCH, WINDOW_MS, THREADS = 8, 15.0, 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--requests", type=int, default=REQUESTS)
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY, help="client threads (bounded)")
    ap.add_argument("--method", default=METHOD, choices=("leap", "independent"))
    ap.add_argument("--paths", type=int, default=PATHS)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--round-tokens", type=int, default=ROUND_TOKENS)
    ap.add_argument("--summary-tokens", type=int, default=SUMMARY_TOKENS)
    ap.add_argument("--answer-tokens", type=int, default=ANSWER_TOKENS)
    ap.add_argument("--temperature", type=float, default=TEMPERATURE)
    ap.add_argument("--top-p", type=float, default=TOP_P)
    ap.add_argument("--sample-top-k", type=int, default=SAMPLE_TOP_K, help="0: off")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH)
    ap.add_argument("--batch-window-ms", type=float, default=WINDOW_MS)
    ap.add_argument("--threads", type=int, default=THREADS, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--stream", action="store_true", help="stream every answer (server-sent events)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = ServeConfig(model=args.model, port=0, method=args.method, paths=args.paths, rounds=args.rounds,
                      round_tokens=args.round_tokens, summary_tokens=args.summary_tokens,
                      answer_tokens=args.answer_tokens, temperature=args.temperature, top_p=args.top_p,
                      sample_top_k=args.sample_top_k, max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
                      max_queue=max(256, args.requests), log_level="warning")
    t0 = time.time()
    service = Service(cfg)
    load_s = time.time() - t0
    with ServerThread(service) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="-", max_retries=0, timeout=600)

        def ask(i: int) -> tuple[float, int, int, str | None]:
            msgs = [{"role": "user", "content": f"What is {i % 9 + 1} + {i // 9 + 2}?"}]
            t = time.perf_counter()
            try:
                if args.stream:
                    chunks = list(client.chat.completions.create(model=cfg.name, messages=msgs, stream=True,
                                                                 stream_options={"include_usage": True}))
                    usage = chunks[-1].usage
                else:
                    usage = client.chat.completions.create(model=cfg.name, messages=msgs).usage
                return time.perf_counter() - t, usage.completion_tokens, usage.total_tokens, None
            except Exception as e:  # counted, reported
                return time.perf_counter() - t, 0, 0, f"{type(e).__name__}: {e}"

        ask(10_000)  # warm-up (not timed)
        batches_before = len(service.scheduler.batch_sizes)
        t_start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(ask, range(args.requests)))
        wall = time.perf_counter() - t_start
        sizes = service.scheduler.batch_sizes[batches_before:]

    lat = sorted(r[0] for r in results)
    errors = [r[3] for r in results if r[3]]
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
    completion = sum(r[1] for r in results)
    total = sum(r[2] for r in results)

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"server: {args.model} on the hf backend, {args.method}, N={args.paths} paths"
          + (f", {args.rounds} rounds x {args.round_tokens} tokens, summaries {args.summary_tokens}, answer "
             f"{args.answer_tokens}" if args.method == "leap" else "")
          + f"; temperature {args.temperature:g}, top-p {args.top_p:g}, top-k {args.sample_top_k}"
          + f"; --max-batch {args.max_batch}, --batch-window-ms {args.batch_window_ms:g}; model load {load_s:.1f} s"
          + ("; streamed" if args.stream else ""))
    print()
    print("| requests | concurrency | errors | p50 s | p90 s | p99 s | wall s | req/s | completion tok/s | "
          "total tok/s | batches | mean batch |")
    print("|" + "---|" * 12)
    print(f"| {args.requests} | {args.concurrency} | {len(errors)} | {q[49]:.2f} | {q[89]:.2f} | {q[98]:.2f} | "
          f"{wall:.2f} | {args.requests / wall:.2f} | {completion / wall:.0f} | {total / wall:.0f} | {len(sizes)} | "
          f"{statistics.mean(sizes) if sizes else 0:.1f} |")
    print()
    print(f"batch sizes (requests per LeaP batch, in order): {sizes}")
    print(f"zero-error check: {'PASS' if not errors else 'FAIL'} ({len(errors)} of {args.requests} failed)")
    for e in errors[:5]:
        print("  error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
