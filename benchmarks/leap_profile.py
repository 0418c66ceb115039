"""Where LeaP's time goes on the hf backend, next to independent sampling of the same tokens.

    python benchmarks/leap_profile.py [--paths 4] [--rounds 3] [--round-tokens 64] [--summary-tokens 16]
                                      [--answer-tokens 16] [--threads 1]

The settings of `leap_overhead.py` (one rg:chain_sum question, EOS off, temperature 0.6, top_p 0.95,
seed 0); LeaP with KV reuse runs once, then independent sampling with the same generated tokens.
Each is timed with hooks, not a sampling profiler:

    forward, prefill   model forwards that read more than one new token per row (the text that is new
                       since the last call: prompt, summary request, peer block, answer lead-in)
    forward, decode    model forwards of one new token per row
    outside forwards   the rest of the generator calls: tokenizing, the KV cache copied into and out of
                       the batch (or kept in place), sampling, stop strings, decoding
    outside calls      the method's own work (routing, prompts, grading) between generator calls

Prefill and decode rows say how many token positions the forwards computed (rows x new columns,
padding and holes included) and how many of them were real tokens, and the mean context width the
decode steps attended over (columns of the KV cache, padding and holes included).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict

import torch

from crosspath.backends.base import SamplingParams
from crosspath.backends.hf import HFGenerator
from crosspath.envinfo import machine
from crosspath.infer.runner import RunConfig, run

MODEL, TASK, TASK_OPTIONS = "smollm2-135m", "rg:chain_sum", dict(min_terms=3, max_terms=5, min_digits=1, max_digits=2)


class Hooks:
    """Times every model forward (prefill or decode) and every generator call of one HFGenerator."""

    def __init__(self, gen: HFGenerator):
        self.gen, self.t = gen, defaultdict(float)
        self.n = defaultdict(int)
        forward, advance = gen.model.forward, gen.advance

        def timed_forward(*a, **kw):
            ids, mask = kw["input_ids"], kw["attention_mask"]  # [b, q], [b, width]
            kind = "decode" if ids.shape[1] == 1 else "prefill"
            t0 = time.perf_counter()
            out = forward(*a, **kw)
            self.t[kind] += time.perf_counter() - t0
            self.n[kind + " forwards"] += 1
            self.n[kind + " positions"] += ids.numel()
            self.n[kind + " real"] += int(mask[:, -ids.shape[1]:].sum())
            self.n[kind + " width"] += mask.shape[1]
            return out

        def timed_advance(handles, params):
            t0 = time.perf_counter()
            out = advance(handles, params)
            self.t["calls"] += time.perf_counter() - t0
            self.n["calls"] += 1
            self.n["call rows"] += len(handles)
            return out

        gen.model.forward, gen.advance = timed_forward, timed_advance

    def reset(self):
        self.t.clear()
        self.n.clear()


def config(a, method: str, **kw) -> RunConfig:
    cfg = RunConfig(model=MODEL, task=TASK, limit=1, paths=a.paths, temperature=0.6, top_p=0.95, sample_top_k=0,
                    min_p=0.0, seed=0, batch_questions=1, rounds=a.rounds, round_tokens=a.round_tokens,
                    summary_tokens=a.summary_tokens, answer_tokens=a.answer_tokens, peers_k=2, method=method,
                    out=a.root + "/" + method, overwrite=True)
    for k, v in kw.items():
        setattr(cfg, k, v)
    if method == "independent":
        cfg.top_k = cfg.sample_top_k
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round-tokens", type=int, default=64)
    ap.add_argument("--summary-tokens", type=int, default=16)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", default="runs/bench/leap_profile")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from crosspath.tasks import load_task

    print(f"command: python {shlex.join(sys.argv)}")
    print(f"machine: {machine()}")
    problems = load_task(TASK, limit=1, seed=0, **TASK_OPTIONS)
    gen = HFGenerator.from_name(MODEL)
    gen.eos_ids = set()
    gen.generate(["warm-up"], SamplingParams(max_tokens=4))
    hooks = Hooks(gen)
    rows = {}
    leap = None
    for name in ("leap-kv", "independent", "leap-kv", "independent"):
        hooks.reset()
        kw = dict(kv_reuse=True) if name == "leap-kv" else dict(max_tokens=leap, answer_tokens=0)
        t0, c0 = time.perf_counter(), time.process_time()
        s = run(config(a, "leap" if name == "leap-kv" else "independent", **kw), generator=gen, problems=problems,
                progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        leap = leap or round(s["tokens"] / a.paths)
        t, n = dict(hooks.t), dict(hooks.n)
        rows[name] = (s["tokens"], wall, cpu, t, n)  # the second (warm) run of each is kept
    print("\n| | leap-kv | independent |\n|---|---:|---:|")
    lk, ind = rows["leap-kv"], rows["independent"]

    def line(label, f):
        print(f"| {label} | {f(lk)} | {f(ind)} |")

    line("generated tokens", lambda r: r[0])
    line("wall s / CPU s", lambda r: f"{r[1]:.1f} / {r[2]:.1f}")
    line("generator calls (rows)", lambda r: f"{r[4].get('calls', 0)} ({r[4].get('call rows', 0)})")
    for kind in ("prefill", "decode"):
        line(f"forward, {kind}: s", lambda r, k=kind: f"{r[3].get(k, 0):.2f}")
        line(f"forward, {kind}: forwards", lambda r, k=kind: r[4].get(f"{k} forwards", 0))
        line(f"forward, {kind}: positions computed (real tokens)",
             lambda r, k=kind: f"{r[4].get(f'{k} positions', 0)} ({r[4].get(f'{k} real', 0)})")
    line("decode: mean context width (columns)",
         lambda r: f"{r[4].get('decode width', 0) / max(r[4].get('decode forwards', 1), 1):.0f}")
    line("outside forwards (in generator calls): s",
         lambda r: f"{r[3].get('calls', 0) - r[3].get('prefill', 0) - r[3].get('decode', 0):.2f}")
    line("outside calls (method's own work): s", lambda r: f"{r[1] - r[3].get('calls', 0):.2f}")
    line("s per 1k generated tokens (wall)", lambda r: f"{1000 * r[1] / r[0]:.1f}")
    print(f"\nLeaP / independent per generated token: wall {lk[1] / lk[0] / (ind[1] / ind[0]):.2f}, "
          f"CPU {lk[2] / lk[0] / (ind[2] / ind[0]):.2f}")


if __name__ == "__main__":
    main()
