"""Our GRPO trainer next to TRL's GRPOTrainer: step time and peak memory, same job, one invocation.

    python benchmarks/grpo_vs_trl.py [--model smollm2-135m] [--questions 2] [--group-size 8]
                                     [--max-new-tokens 64] [--warmup 1] [--steps 3] [--threads N]
                                     [--sides ours,trl]

Needs TRL (the `bench` extra: pip install 'crosspath[bench]', tested with trl 1.16.0).

Both sides train the same model (crosspath.models.resolve path, fp32 on CPU), with a LoRA adapter
r 16 / alpha 32 / all-linear / dropout 0, on the same rg:chain_sum questions in the same order, with
the same prompt (crosspath's training prompt inside the model's chat template), the same reward,
group size 8, `--questions` questions per
optimizer step, completions of at most `--max-new-tokens` tokens at temperature 0.8 (top-k/top-p
off), beta 0 (no reference model), loss "grpo", group-scaled advantages, AdamW lr 5e-5
betas (0.9, 0.99) wd 0.1, cosine schedule, grad-norm clip 0.1, one update per batch, one forward
of all B x G completions (micro batch / per_device_train_batch_size = B x G), fp32, gradient
checkpointing off on both sides (TRL's default is on, and bf16 on: both are set explicitly;
`--gradient-checkpointing` turns it on for both).

The reward is a stand-in by default (1 for an even number of characters): it varies within a
group, so both sides always run a full update (crosspath skips the forward/backward of a batch
whose advantages are all 0, TRL does not; a lucky all-wrong batch would flatter ours).
`--real-reward` uses crosspath's `reward` (grade, 0 on a repeated marker) on both sides.

Each side runs in its own child process (so peak RSS is its own), one after the other: `--warmup`
untimed steps, then `--steps` timed ones. `--rounds R` repeats the pair R times in alternating
order (ours, TRL, TRL, ours, ...) so drifting load on a shared machine falls on both; the medians
are taken over every timed step of every round, the peak RSS is the largest. Step time = wall
time of one optimizer step including sampling (TRL: on_step_begin -> on_step_end of a
TrainerCallback; ours: Trainer.train_step).
Generation seconds: ours rollout_seconds; TRL the time inside GRPOTrainer._generate. Peak memory:
ru_maxrss of the child (the whole process: Python, torch, model, training), and the growth over
the RSS right after set-up; on CUDA also torch.cuda.max_memory_allocated. Both sides may stop at
EOS, so the generated tokens per step are reported with the times.

Result rows are appended to benchmarks/results/grpo_vs_trl.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from crosspath.envinfo import machine

RESULTS = Path(__file__).parent / "results" / "grpo_vs_trl.jsonl"
LR, BETAS, WD, CLIP, TEMP = 5e-5, (0.9, 0.99), 0.1, 0.1, 0.8


def rss_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cuda_peak_mib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


# ---- the two sides (each in a child process) ----------------------------------------------------


def parity_reward(problem, text, marker="####", marker_rule=True):
    r = float(len(text) % 2 == 0)
    return r, bool(r), text.count(marker)


def reward_function(args):
    from crosspath.train import trainer

    if not args.real_reward:
        trainer.reward = parity_reward
    return trainer.reward


def run_ours(args) -> dict:
    from crosspath.train.trainer import TrainConfig, Trainer

    reward_function(args)

    cfg = TrainConfig(model=args.model, algo="grpo", questions_per_step=args.questions, group_size=args.group_size,
                      max_new_tokens=args.max_new_tokens, temperature=TEMP, lr=LR, betas=list(BETAS),
                      weight_decay=WD, max_grad_norm=CLIP, beta=0.0, loss_type="grpo",
                      micro_batch_size=args.questions * args.group_size,
                      gradient_checkpointing=args.gradient_checkpointing, steps=args.warmup + args.steps,
                      eval_size=0, eval_every=0, save_every=0, progress=False, tensorboard=False, train_size=200,
                      out=tempfile.mkdtemp(prefix="ours-"))
    t = Trainer(cfg)
    base = rss_mib()
    steps = [t.train_step() for _ in range(args.warmup + args.steps)][args.warmup:]
    return {"step_seconds": [r["step_seconds"] for r in steps], "gen_seconds": [r["rollout_seconds"] for r in steps],
            "tokens": [r["completion_length"] * args.questions * args.group_size for r in steps],
            "rss_after_setup_mib": base, "peak_rss_mib": peak_mib(), "cuda_peak_mib": cuda_peak_mib()}


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from crosspath.models import load_model
    from crosspath.train.trainer import PROMPT, TrainConfig, load_splits

    reward = reward_function(args)
    cfg = TrainConfig(model=args.model, train_size=200, eval_size=0)
    train, _ = load_splits(cfg)
    model, tok = load_model(args.model, device="cuda" if torch.cuda.is_available() else "cpu")
    model.train()
    by_id = {p.id: p for p in train}
    rows = [{"prompt": [{"role": "user", "content": PROMPT.format(question=p.question, marker="####")}], "qid": p.id}
            for p in train]

    def reward_fn(completions, qid, **_):
        return [reward(by_id[q], c[0]["content"])[0] for c, q in zip(completions, qid)]

    n = args.questions * args.group_size
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-"), per_device_train_batch_size=n, gradient_accumulation_steps=1,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, temperature=TEMP, top_k=0,
        top_p=1.0, beta=0.0, loss_type="grpo", scale_rewards="group", learning_rate=LR, adam_beta1=BETAS[0],
        adam_beta2=BETAS[1], weight_decay=WD, max_grad_norm=CLIP, lr_scheduler_type="cosine",
        max_steps=args.warmup + args.steps, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), bf16=False, disable_dropout=True, seed=0,
        gradient_checkpointing=args.gradient_checkpointing,
        dataloader_num_workers=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, peft_config=lora)
    times, gen, tokens = [], [], []
    generate = trainer._generate

    def timed_generate(prompts):
        t0 = time.perf_counter()
        out = generate(prompts)
        gen.append(time.perf_counter() - t0)
        return out

    trainer._generate = timed_generate

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                tokens.append(logs["completions/mean_length"] * n)

    trainer.add_callback(Clock())
    base = rss_mib()
    trainer.train()
    w = args.warmup
    return {"step_seconds": times[w:], "gen_seconds": gen[w:], "tokens": tokens[w:],
            "rss_after_setup_mib": base, "peak_rss_mib": peak_mib(), "cuda_peak_mib": cuda_peak_mib(),
            "trl_version": __import__("trl").__version__}


# ---- the parent: run both, print the table --------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sides", default="ours,trl")
    ap.add_argument("--real-reward", action="store_true", help="grade answers instead of the parity stand-in")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="on both sides (default: off on both)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the pair of runs, alternating the order")
    ap.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side and print its JSON
    ap.add_argument("--results", default=str(RESULTS), help="results JSONL to append to (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true", help="do not append to the results JSONL")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.side:
        torch.manual_seed(0)
        result = (run_ours if args.side == "ours" else run_trl)(args)
        print("RESULT " + json.dumps(result))
        return 0

    results: dict[str, dict] = {}
    sides = args.sides.split(",")
    for rnd in range(args.rounds):
        for side in sides if rnd % 2 == 0 else sides[::-1]:
            cmd = [sys.executable, __file__, "--side", side] + [a for a in (argv or sys.argv[1:])]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if done.returncode or line is None:
                print(f"{side} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}", file=sys.stderr)
                return 1
            new = json.loads(line[7:])
            if side not in results:
                results[side] = new
                continue
            for k in ("step_seconds", "gen_seconds", "tokens"):
                results[side][k] += new[k]
            for k in ("peak_rss_mib", "rss_after_setup_mib", "cuda_peak_mib"):
                if new.get(k) is not None:
                    results[side][k] = max(results[side][k], new[k])

    print(f"# GRPO step time and memory: crosspath vs TRL GRPOTrainer\n\nMachine: {machine()}  \n"
          f"Command: `python {shlex.join(sys.argv)}`  \nSetting: {args.model}, LoRA r16 all-linear, "
          f"{args.questions} questions x {args.group_size} completions x <= {args.max_new_tokens} tokens, "
          f"T {TEMP}, beta 0, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, median of "
          f"{args.steps} steps after {args.warmup} warm-up, x {args.rounds} round(s)\n")
    print("| trainer | step s (median) | generation s | tokens/step | s per 1k tokens | peak RSS MiB | "
          "RSS growth MiB | CUDA peak MiB |\n|---|---|---|---|---|---|---|---|")
    summary = {}
    for side, r in results.items():
        med = {k: statistics.median(r[k]) if r[k] else float("nan") for k in ("step_seconds", "gen_seconds", "tokens")}
        summary[side] = med
        cuda = f"{r['cuda_peak_mib']:.0f}" if r.get("cuda_peak_mib") else "-"
        name = "crosspath" if side == "ours" else f"TRL {r.get('trl_version', '')}"
        print(f"| {name} | {med['step_seconds']:.2f} | {med['gen_seconds']:.2f} | {med['tokens']:.0f} | "
              f"{1000 * med['step_seconds'] / max(med['tokens'], 1):.2f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_rss_mib'] - r['rss_after_setup_mib']:.0f} | {cuda} |")
    if {"ours", "trl"} <= set(summary):
        ratio = summary["ours"]["step_seconds"] / summary["trl"]["step_seconds"]
        print(f"\ncrosspath / TRL step time: **{ratio:.3f}** (target <= 1)")
    if not args.no_save:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                                "command": shlex.join(sys.argv), **{k: v for k, v in vars(args).items() if k != "side"},
                                "results": results, "median": summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
