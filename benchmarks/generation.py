"""Generation speed: crosspath's `hf` backend next to plain transformers `model.generate`.

    python benchmarks/generation.py [--model smollm2-135m] [--batch-sizes 1,4,8] [--max-tokens 64]
                                    [--repeats 3] [--threads N] [--modes greedy,sampled]

Prints the machine and the command, then two Markdown tables:

1. Throughput. The same model, prompts (the model's chat template around short questions, via
   `crosspath.models.render_prompt`, left-padded when batched) and lengths, run through
   `model.generate` and through `HFGenerator.generate`, at every batch size, greedy (temperature 0)
   and sampled (temperature 0.6, top_p 0.95, no top-k; `--modes sampled-seed` adds ours with a
   per-request seed). Each cell: the median of `--repeats` timed calls, after one warm-up call of
   each side per batch size; the two sides alternate (A B, B A, ...) so drift in a shared machine's
   load falls on both. ratio = crosspath tok/s / model.generate tok/s (> 1: ours is faster). Both
   sides are timed end to end, text in and text out: tokenising the prompts, generating, decoding.

   Fair lengths: every row of both sides generates exactly `--max-tokens` tokens. EOS is switched
   off on both sides rather than masked: `model.generate` gets `eos_token_id=V` (V = the vocabulary
   size, an id no token has, so no row stops) and the HFGenerator instance gets `eos_ids = set()`.
   No logits processor is added to either side, so under greedy decoding both must write the same
   tokens; the last column counts the rows where they do (a correctness check; float summation
   order differs between batch shapes, so a rare near-tie may flip). tok/s counts the tokens
   actually returned (batch x max_tokens when all is well).

2. Session continuation (one path, greedy, EOS off). A ~`--prefix-tokens` prefix (chat template
   + a long arithmetic "reasoning" text) is opened and advanced by 1 token, which fills its KV
   cache; then ~`--append-tokens` of text is appended (`extend`) and `--continue-tokens` tokens
   are generated. Timed: that last `advance` (it prefills only the appended text) against
   `generate([full_text])` on the same text, which re-reads the whole prefix; `model.generate` on
   the same text is shown too. A second pair of columns times the same calls with max_tokens 1
   (prefill + first token), the part the kept cache speeds up; the decode steps after it cost the
   same on both sides. Median of `--repeats` after a warm-up; each session repeat opens a fresh
   path (the prefix prefill is not timed: it is paid once per path in LeaP).

3. Precision (`--dtypes float32,bfloat16`; empty skips it). For each dtype, side by side in one run:
   a fresh model in that dtype; the hf backend's greedy decode (EOS off, `--max-tokens`) at
   `--precision-batches` (1, and 16: the rows of one `crosspath demo` batch), median of `--repeats`
   after a warm-up, as tokens per wall second and per CPU second of the process (with `--threads 1`
   the CPU figure is what an idle core gives; on a shared machine the wall figure is not); the
   greedy rows identical to the first dtype's; greedy answers on the first `--demo-questions` of the
   demo task at the demo's per-path budget (256 tokens), identical texts / answers to the first
   dtype, and their accuracy; and `--train-steps` GRPO steps of `crosspath train` (the defaults: 2
   questions x 8 completions x 64 tokens, LoRA; no evaluation, no checkpoint), median step seconds.
   `--compile` adds `model.generate` at batch 1 with a static cache, eager and under torch.compile
   (first call, which compiles, timed apart).

4. llama.cpp (`--sections llamacpp`; needs llama-cpp-python, the `bench` extra, which compiles
   llama.cpp for this CPU). Single-path greedy decode, EOS off, `--llama-tokens` tokens after the
   same prompt token ids (the model's chat template around the first question, tokenised by the
   Hugging Face tokenizer on both sides), prompt prefill included on both sides, median of
   `--repeats` after a warm-up, in tokens per wall second and per CPU second of the process (the
   same `--threads` on both sides): the hf backend in each of `--dtypes` next to llama.cpp on each
   GGUF file. GGUF files: `--gguf FILE,...`, or converted here from the Hugging Face weights with
   llama.cpp's own converter: `--llama-cpp-src DIR` (a llama.cpp checkout, or the `vendor/llama.cpp`
   folder of the llama-cpp-python source archive: `pip download llama-cpp-python --no-deps
   --no-binary :all:`) and `--gguf-types` (the converter's f32, bf16, q8_0, ..., and q4_0 / q4_1 /
   q5_1 / q4_k_m, quantized from the f32 file through llama.cpp's quantize API). Each GGUF file is
   timed in a child process, so a crash inside llama.cpp (a native library) shows as that file's
   row and the others still run. The ratio column is hf tokens/s over llama.cpp's (the issue's
   target: >= 0.5); the last column counts the leading tokens equal to the hf float32 (first
   dtype) greedy output.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import torch
import transformers

from crosspath.backends.base import SamplingParams
from crosspath.backends.hf import HFGenerator
from crosspath.models import load_model, render_prompt
from crosspath.envinfo import machine

# ---- defaults (all overridable on the command line) ------------------------------------------
MODEL = "smollm2-135m"
BATCH_SIZES = "1,4,8"
MAX_TOKENS = 64
REPEATS = 3
MODES = "greedy,sampled"  # also: sampled-seed (ours with a per-request seed: one torch.Generator per row)
SAMPLED = dict(temperature=0.6, top_p=0.95)
PREFIX_TOKENS, APPEND_TOKENS, CONTINUE_TOKENS = 1000, 50, 50
TARGET_CONTINUATION, TARGET_FIRST_TOKEN = 4.0, 15.0  # issue 17: session speed-ups over re-encoding
DTYPES, PRECISION_BATCHES, DEMO_QUESTIONS, TRAIN_STEPS = "float32,bfloat16", "1,16", 12, 3

QUESTIONS = [  # different lengths, so batched prompts really are left-padded
    "What is 17 + 25?",
    "A farmer has 3 fields with 12 cows each. He sells 7 cows. How many cows are left?",
    "Explain why the sum of two odd numbers is always even.",
    "Tom reads 15 pages a day for a week, then 20 pages a day for 3 days. How many pages did he read in total?",
    "What is 9 times 8, minus 14?",
    "List the prime numbers between 10 and 30 and add them up.",
    "A train travels 60 km in 45 minutes. What is its average speed in km per hour?",
    "If x + 3 = 11, what is 2x?",
]


def revision() -> str:
    """The commit of the checkout, and whether the backend file differs from it."""
    import subprocess

    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=os.path.dirname(__file__)).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "?"
        dirty = git("status", "--porcelain", "--", "../src/crosspath/backends/hf.py")
        return head + (" (hf.py modified in the working tree)" if dirty else "")
    except OSError:
        return "?"


# ---- one timed call on each side ---------------------------------------------------------------
def run_model_generate(model, tok, prompts: list[str], max_tokens: int, sampling: dict | None, **extra):
    """-> (seconds, tokens generated, generated ids per row); `extra` goes to model.generate."""
    t0 = time.perf_counter()
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    kw = dict(do_sample=True, top_k=0, **sampling) if sampling else dict(do_sample=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_tokens, eos_token_id=model.config.vocab_size, pad_token_id=tok.pad_token_id, **kw, **extra)
    new = out[:, enc["input_ids"].shape[1]:]  # [B, max_tokens]
    tok.batch_decode(new, skip_special_tokens=True)
    return time.perf_counter() - t0, new.numel(), new.tolist()


def run_ours(gen: HFGenerator, prompts: list[str], params: SamplingParams):
    t0 = time.perf_counter()
    comps = gen.generate(prompts, params)
    return time.perf_counter() - t0, sum(c.num_tokens for c in comps), [c.token_ids for c in comps]


def bench(runs, repeats: int, warmup: bool = True) -> list[tuple[float, int, list]]:
    """Warm every run up (one untimed call), then time them in turn, order reversed every other
    repeat (A B, B A, ...). -> per run: (median seconds, tokens of the last call, its generated ids).
    """
    for run in runs if warmup else ():
        run()
    times: list[list[float]] = [[] for _ in runs]
    last: list[tuple] = [()] * len(runs)
    for r in range(repeats):
        order = range(len(runs)) if r % 2 == 0 else reversed(range(len(runs)))
        for k in order:
            s, n, ids = runs[k]()
            times[k].append(s)
            last[k] = (n, ids)
    return [(statistics.median(t), n, ids) for t, (n, ids) in zip(times, last)]


# ---- 1. throughput ------------------------------------------------------------------------------
def throughput(model, tok, gen: HFGenerator, args) -> list[str]:
    rows = ["| batch | mode | model.generate tok/s | crosspath hf tok/s | ratio | greedy rows identical |",
            "|---:|---|---:|---:|---:|---|"]
    for b in args.batch_sizes:
        prompts = [render_prompt(tok, QUESTIONS[i % len(QUESTIONS)]) for i in range(b)]
        for m, mode in enumerate(args.modes):
            sampling = None if mode == "greedy" else SAMPLED
            params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0 if sampling is None else SAMPLED["temperature"],
                                    top_p=1.0 if sampling is None else SAMPLED["top_p"],
                                    seed=0 if mode == "sampled-seed" else None)
            (sa, na, ids_a), (sb, nb, ids_b) = bench(
                [lambda: run_model_generate(model, tok, prompts, args.max_tokens, sampling),
                 lambda: run_ours(gen, prompts, params)], args.repeats, warmup=m == 0)  # once per batch size
            same = f"{sum(x == y for x, y in zip(ids_a, ids_b))}/{b}" if mode == "greedy" else "-"
            ra, rb = na / sa, nb / sb
            rows.append(f"| {b} | {mode} | {ra:.1f} | {rb:.1f} | {rb / ra:.2f} | {same} |")
            print(f"  batch {b} {mode}: generate {ra:.1f} tok/s ({na} tok), ours {rb:.1f} tok/s ({nb} tok)",
                  file=sys.stderr, flush=True)
    return rows


# ---- 2. session continuation -------------------------------------------------------------------
def long_text(tok, n_tokens: int, start: int = 0) -> str:
    """Arithmetic 'reasoning' of about n_tokens tokens (cut on a token boundary of its own encoding)."""
    lines, i = [], start
    while len(tok("".join(lines), add_special_tokens=False)["input_ids"]) < n_tokens:
        a, b = 3 * i + 7, 5 * i + 2
        lines.append(f"Step {i + 1}: we add {a} and {b}, which gives {a + b}; then we check it against the total. ")
        i += 1
    ids = tok("".join(lines), add_special_tokens=False)["input_ids"][:n_tokens]
    return tok.decode(ids)


def continuation(model, tok, gen: HFGenerator, args) -> list[str]:
    base = render_prompt(tok, "Add up the numbers step by step and report the total.")
    prefix = base + long_text(tok, args.prefix_tokens - len(tok(base, add_special_tokens=False)["input_ids"]))
    append = "\n\nHints from peers: " + long_text(tok, args.append_tokens - 5, start=500)
    greedy = SamplingParams(max_tokens=args.continue_tokens, temperature=0.0)
    state = {}

    def session(n: int):
        h = gen.open(prefix)
        gen.advance([h], greedy.with_(max_tokens=1))  # fills the prefix's KV cache (not timed)
        gen.extend(h, append)
        state["full"], state["cached"] = gen.text(h), gen.cached_tokens(h)
        t0 = time.perf_counter()
        c = gen.advance([h], greedy.with_(max_tokens=n))[0]
        s = time.perf_counter() - t0
        gen.close(h)
        return s, c.num_tokens, [c.token_ids]

    session(1)  # fills state["full"]: the text both sides continue
    full, n = state["full"], args.continue_tokens
    (s_sess, n_sess, ids_sess), (s_re, n_re, ids_re), (s_mg, n_mg, _), (f_sess, _, _), (f_re, _, _) = bench(
        [lambda: session(n), lambda: run_ours(gen, [full], greedy),
         lambda: run_model_generate(model, tok, [full], n, None),
         lambda: session(1), lambda: run_ours(gen, [full], greedy.with_(max_tokens=1))], args.repeats)
    n_full = len(tok(full, add_special_tokens=False)["input_ids"])
    return [
        f"The path holds {n_full} tokens of text when the timed call starts: {state['cached']} in the session's KV "
        f"cache, {n_full - state['cached']} new (the appended text and the 1 token written by the fill call). "
        f"Greedy outputs of session and re-encoding identical: {ids_sess == ids_re}.",
        "",
        f"| continuation | seconds, {n} tokens | speed-up | seconds, first token only | speed-up |",
        "|---|---:|---:|---:|---:|",
        f"| session: `extend` + `advance` (prefix KV kept) | {s_sess:.3f} | {s_re / s_sess:.2f}x | {f_sess:.3f} | {f_re / f_sess:.2f}x |",
        f"| re-encode: `generate([full_text])`, fresh call | {s_re:.3f} | 1.00x | {f_re:.3f} | 1.00x |",
        f"| re-encode: `model.generate(full_text)` | {s_mg:.3f} | {s_re / s_mg:.2f}x | | |",
        "",
        f"Tokens generated: session {n_sess}, re-encode {n_re}, model.generate {n_mg}. "
        "Speed-up = re-encode seconds / row seconds.",
        "",
        f"Targets: continuation {s_re / s_sess:.2f}x (>= {TARGET_CONTINUATION}x: "
        f"{'met' if s_re / s_sess >= TARGET_CONTINUATION else 'NOT met'}), first token {f_re / f_sess:.2f}x "
        f"(>= {TARGET_FIRST_TOKEN}x: {'met' if f_re / f_sess >= TARGET_FIRST_TOKEN else 'NOT met'}).",
    ]


# ---- 3. precision --------------------------------------------------------------------------------
def timed(fn, repeats: int):
    """One warm-up call, then `repeats` -> (median wall s, median CPU s of this process, last result)."""
    fn()
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def demo_greedy(model, tok, name: str, n: int, out: str) -> list[dict]:
    """Greedy answers on the first n demo questions at `crosspath demo`'s per-path budget."""
    from crosspath.infer.runner import RunConfig, run

    cfg = RunConfig(method="greedy", model=name, task="demo", limit=n, max_tokens=224, answer_tokens=32,
                    batch_questions=n, out=out, overwrite=True)
    run(cfg, generator=HFGenerator(model, tok), progress=False, log=lambda _: None)
    from crosspath.jsonl import read_jsonl

    return [r["paths"][0] for r in read_jsonl(f"{out}/results.jsonl")]


def grpo_steps(name: str, dtype: str, steps: int, out: str) -> tuple[float, float, dict]:
    """`steps` GRPO steps of `crosspath train` (its defaults) -> (median step seconds, CPU seconds per
    step of the whole fit (model load included), first step's row)."""
    from crosspath.train import TrainConfig
    from crosspath.train.trainer import Trainer

    cfg = TrainConfig(algo="grpo", model=name, dtype=dtype, steps=steps, eval_every=0, eval_size=0, save_every=0,
                      log_samples=0, out=out, overwrite=True, tensorboard=False, progress=False,
                      threads=torch.get_num_threads())
    cpu = time.process_time()
    rows = Trainer(cfg).fit()
    cpu = (time.process_time() - cpu) / steps
    return statistics.median(r["step_seconds"] for r in rows), cpu, rows[0]


def compiled_generate(model, tok, args) -> list[str]:
    """model.generate at batch 1: dynamic cache, static cache, static cache + torch.compile."""
    from transformers.generation.configuration_utils import CompileConfig

    cc = CompileConfig()
    cc._compile_all_devices = True  # transformers compiles on CUDA only unless told
    prompt = [render_prompt(tok, QUESTIONS[0])]
    rows = []
    for name, kw in [("dynamic cache", {}), ("static cache", dict(cache_implementation="static")),
                     ("static cache + torch.compile", dict(cache_implementation="static", compile_config=cc))]:
        t0 = time.perf_counter()
        ids0 = run_model_generate(model, tok, prompt, args.max_tokens, None, **kw)[2]
        first = time.perf_counter() - t0
        wall, cpu, (_, n, ids) = timed(lambda: run_model_generate(model, tok, prompt, args.max_tokens, None, **kw),
                                       args.repeats)
        rows.append(f"| {model.dtype} | {name} | {first:.1f} | {n / wall:.1f} | {n / cpu:.1f} | {ids == ids0} |")
    return rows


def precision(args) -> list[str]:
    import tempfile

    table = ["| dtype | " + " | ".join(f"batch {b} tok/s (wall / CPU)" for b in args.precision_batches)
             + " | greedy rows = first | demo greedy: texts = first, answers = first, correct"
             + f" | GRPO step s (wall median of {args.train_steps} / CPU mean) | step 1 reward, loss |",
             "|---|" + "---:|" * len(args.precision_batches) + "---|---|---:|---|"]
    compiled, ref, ref_demo = [], {}, None
    tmp = tempfile.mkdtemp(prefix="crosspath-precision-")
    for dt in args.dtypes:
        model, tok = load_model(args.model, dtype=dt)
        tok.padding_side = "left"
        gen = HFGenerator(model, tok, max_batch=max(args.precision_batches))
        gen.eos_ids = set()
        cells, same = [], []
        for b in args.precision_batches:
            prompts = [render_prompt(tok, QUESTIONS[i % len(QUESTIONS)]) for i in range(b)]
            params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
            wall, cpu, (_, n, ids) = timed(lambda: run_ours(gen, prompts, params), args.repeats)
            cells.append(f"{n / wall:.1f} / {n / cpu:.1f}")
            ref.setdefault(b, ids)
            same.append(f"{sum(x == y for x, y in zip(ids, ref[b]))}/{b}")
            print(f"  {dt} batch {b}: {n / wall:.1f} tok/s wall, {n / cpu:.1f} per CPU s", file=sys.stderr, flush=True)
        demo = demo_greedy(model, tok, args.model, args.demo_questions, f"{tmp}/demo-{dt}") if args.demo_questions else []
        ref_demo = ref_demo or demo
        texts = sum(a["text"] == b["text"] for a, b in zip(demo, ref_demo))
        answers = sum(a["answer"] == b["answer"] for a, b in zip(demo, ref_demo))
        demo_cell = f"{texts}/{len(demo)}, {answers}/{len(demo)}, {sum(p['correct'] for p in demo)}/{len(demo)}"
        step_cell, first_cell = "", ""
        if args.train_steps:
            step_s, step_cpu, first = grpo_steps(args.model, dt, args.train_steps, f"{tmp}/train-{dt}")
            step_cell, first_cell = f"{step_s:.1f} / {step_cpu:.1f}", f"{first['reward_mean']:.3f}, {first['loss']:.4f}"
        if args.compile:
            compiled += compiled_generate(model, tok, args)
        table.append(f"| {dt} | " + " | ".join(cells) + f" | {', '.join(same)} | {demo_cell} | {step_cell} | {first_cell} |")
        del model, gen
    if compiled:
        table += ["", "model.generate at batch 1, greedy, EOS off (first call compiles under torch.compile):", "",
                  "| dtype | cache | first call s | tok/s wall | tok/s CPU | output = first call |",
                  "|---|---|---:|---:|---:|---|", *compiled]
    return table


# ---- 4. llama.cpp ---------------------------------------------------------------------------------
QUANTIZED = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q4_k_m": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_* ids


def gguf_files(args, tmp: str) -> list[str]:
    """The GGUF files to time: --gguf as given, else converted from the model's weights (see the docstring)."""
    import subprocess
    from pathlib import Path

    from crosspath.models import resolve

    if args.gguf:
        return args.gguf
    if not args.llama_cpp_src:
        sys.exit("the llamacpp section needs --gguf FILE,... or --llama-cpp-src DIR (see --help)")
    script = Path(args.llama_cpp_src) / "convert_hf_to_gguf.py"
    if not script.is_file():
        sys.exit(f"{script} not found: --llama-cpp-src must be a llama.cpp source folder")
    out, f32 = [], None
    for t in args.gguf_types:
        dest = f"{tmp}/model-{t}.gguf"
        if t in QUANTIZED:  # from the f32 file, with the library's quantizer
            import llama_cpp

            if f32 is None:
                f32 = f"{tmp}/model-f32.gguf"
                if not Path(f32).exists():
                    subprocess.run([sys.executable, str(script), resolve(args.model), "--outtype", "f32",
                                    "--outfile", f32], check=True, capture_output=True)
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = QUANTIZED[t]
            if llama_cpp.llama_model_quantize(f32.encode(), dest.encode(), params) != 0:
                sys.exit(f"llama.cpp could not quantize {f32} to {t}")
        else:
            subprocess.run([sys.executable, str(script), resolve(args.model), "--outtype", t, "--outfile", dest],
                           check=True, capture_output=True)
            f32 = dest if t == "f32" else f32
        out.append(dest)
    return out


def gguf_child(path: str, prompt_ids: list[int], n: int, threads: int, repeats: int) -> dict:
    """Time llama.cpp on one GGUF file in a child process (this script with --gguf-child), so that a
    crash inside llama.cpp (a native library) costs only its own row. -> {"wall", "cpu", "k", "ids"}
    (medians of the timed calls) or {"error": why}."""
    import json
    import subprocess

    job = json.dumps({"path": path, "prompt_ids": prompt_ids, "n": n, "threads": threads, "repeats": repeats})
    proc = subprocess.run([sys.executable, __file__, "--gguf-child"], input=job, capture_output=True, text=True)
    if proc.returncode != 0:
        sig = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        return {"error": f"llama.cpp failed on this file ({sig})"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gguf_child_main() -> None:
    """--gguf-child: read the job (JSON) on stdin, print the timing (JSON) on stdout."""
    import json

    from llama_cpp import Llama

    job = json.loads(sys.stdin.read())
    n, prompt_ids = job["n"], job["prompt_ids"]
    llm = Llama(model_path=job["path"], n_ctx=len(prompt_ids) + n + 8, n_threads=job["threads"],
                n_threads_batch=job["threads"], verbose=False)

    def decode():
        llm.reset()  # no prefix reuse between repeats: every call reads the prompt, as the hf side does
        out = []
        for t in llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            out.append(t)
            if len(out) == n:
                break
        return out

    wall, cpu, ids = timed(decode, job["repeats"])
    print(json.dumps({"wall": wall, "cpu": cpu, "k": len(ids), "ids": ids}))


def llamacpp(args) -> list[str]:
    """hf backend (each dtype) and llama.cpp (each GGUF file): single-path greedy decode tokens/s."""
    import shutil
    import tempfile
    from pathlib import Path

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed: pip install 'crosspath[bench]' (it compiles llama.cpp)")
    if not args.dtypes:
        sys.exit("the llamacpp section needs at least one --dtypes entry (the hf side it compares with)")
    n, threads = args.llama_tokens, torch.get_num_threads()
    table = ["| engine | weights | tok/s wall | tok/s per CPU s | hf / this (wall): hf "
             f"{args.dtypes[0]}, fastest hf | leading tokens = hf {args.dtypes[0]} (of {n}) |", "|---|---|---:|---:|---|---|"]
    rows, ref = [], None  # (engine, weights, wall tok/s, cpu tok/s, ids)
    for dt in args.dtypes:
        model, tok = load_model(args.model, dtype=dt)
        gen = HFGenerator(model, tok, max_batch=1)
        gen.eos_ids = set()
        prompt = render_prompt(tok, QUESTIONS[0])
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        params = SamplingParams(max_tokens=n, temperature=0.0)
        wall, cpu, (_, k, ids) = timed(lambda: run_ours(gen, [prompt], params), args.repeats)
        ref = ref or ids[0]
        rows.append(("transformers (crosspath hf backend)", dt, k / wall, k / cpu, ids[0]))
        print(f"  hf {dt}: {k / wall:.1f} tok/s wall", file=sys.stderr, flush=True)
        del model, gen
    tmp = tempfile.mkdtemp(prefix="crosspath-gguf-")
    for path in gguf_files(args, tmp):
        res = gguf_child(path, prompt_ids, n, threads, args.repeats)
        if "error" in res:  # a crash of llama.cpp on one file is reported, the others still run
            rows.append(("llama.cpp (llama-cpp-python)", Path(path).stem, None, None, res["error"]))
            print(f"  llama.cpp {Path(path).name}: {res['error']}", file=sys.stderr, flush=True)
            continue
        rows.append(("llama.cpp (llama-cpp-python)", Path(path).stem, res["k"] / res["wall"], res["k"] / res["cpu"],
                     res["ids"]))
        print(f"  llama.cpp {Path(path).name}: {res['k'] / res['wall']:.1f} tok/s wall", file=sys.stderr, flush=True)
    if not args.gguf:
        shutil.rmtree(tmp, ignore_errors=True)  # the converted files (about 1 GB)
    hf_first = rows[0][2]
    hf_best = max(r[2] for r in rows if r[0].startswith("trans"))
    for engine, weights, w, c, ids in rows:
        if w is None:
            table.append(f"| {engine} | {weights} | - | - | - | {ids} |")
            continue
        same = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
        ratio = f"{hf_first / w:.2f}, {hf_best / w:.2f}" if engine.startswith("llama") else ""
        table.append(f"| {engine} | {weights} | {w:.1f} | {c:.1f} | {ratio} | {same} |")
    return table


def main(argv=None) -> None:
    if "--gguf-child" in (sys.argv[1:] if argv is None else argv):
        return gguf_child_main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL, help="a crosspath model name, HF id or local folder")
    ap.add_argument("--batch-sizes", default=BATCH_SIZES, help="comma-separated batch sizes")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens generated per row")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="timed calls per cell (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    ap.add_argument("--modes", default=MODES, help="comma-separated: greedy, sampled, sampled-seed")
    ap.add_argument("--prefix-tokens", type=int, default=PREFIX_TOKENS, help="continuation: prefix length")
    ap.add_argument("--append-tokens", type=int, default=APPEND_TOKENS, help="continuation: appended text length")
    ap.add_argument("--continue-tokens", type=int, default=CONTINUE_TOKENS, help="continuation: tokens generated")
    ap.add_argument("--dtypes", default=DTYPES, help="precision: comma-separated dtypes, the first is the reference "
                                                     "(empty: skip the section)")
    ap.add_argument("--precision-batches", default=PRECISION_BATCHES, help="precision: batch sizes of the decode")
    ap.add_argument("--demo-questions", type=int, default=DEMO_QUESTIONS, help="precision: greedy demo questions (0: skip)")
    ap.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="precision: GRPO steps timed (0: skip)")
    ap.add_argument("--compile", action="store_true", help="precision: also model.generate with a static cache and "
                                                           "torch.compile (compiling takes minutes on a small CPU)")
    ap.add_argument("--sections", default="throughput,continuation,precision",
                    help="comma-separated sections to run: throughput, continuation, precision, llamacpp")
    ap.add_argument("--llama-tokens", type=int, default=128, help="llamacpp: greedy tokens per call")
    ap.add_argument("--gguf", default="", help="llamacpp: comma-separated GGUF files of the same model")
    ap.add_argument("--llama-cpp-src", default="", help="llamacpp: llama.cpp source folder whose "
                                                        "convert_hf_to_gguf.py converts the model (when no --gguf)")
    ap.add_argument("--gguf-types", default="f32,bf16,q8_0,q4_1", help="llamacpp: GGUF types to convert to")
    args = ap.parse_args(argv)
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.precision_batches = [int(b) for b in args.precision_batches.split(",") if b]
    args.sections = set(args.sections.split(","))
    args.gguf = [g for g in args.gguf.split(",") if g]
    args.gguf_types = [t for t in args.gguf_types.split(",") if t]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.modes = [m for m in args.modes.split(",") if m]
    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    print("# Generation benchmark: crosspath hf backend vs transformers model.generate\n")
    print(f"Command: `python {shlex.join(sys.argv)}`  ")
    print(f"Machine: {machine()}; load average at start: {os.getloadavg()[0]:.2f}  ")
    print(f"crosspath revision: {revision()}  ")
    if args.sections & {"throughput", "continuation"}:
        model, tok = load_model(args.model, dtype="float32")
        tok.padding_side = "left"
        gen = HFGenerator(model, tok, max_batch=max(args.batch_sizes))
        gen.eos_ids = set()  # EOS off: every row writes exactly max_tokens (see the docstring)
        print(f"Model: {args.model} on {gen.device}, {model.dtype}; max_tokens {args.max_tokens}; "
              f"median of {args.repeats} after a warm-up; sampled = temperature {SAMPLED['temperature']}, top_p {SAMPLED['top_p']}\n")
    if "throughput" in args.sections:
        print("## Throughput (tokens/s, higher is better; ratio = crosspath / model.generate)\n")
        print("\n".join(throughput(model, tok, gen, args)) + "\n", flush=True)
    if "continuation" in args.sections:
        print("## Session continuation (one path, greedy)\n")
        print("\n".join(continuation(model, tok, gen, args)) + "\n")
    if "precision" in args.sections and args.dtypes:
        print(f"## Precision: {' vs '.join(args.dtypes)} (hf backend greedy decode, EOS off, {args.max_tokens} tokens; "
              f"demo greedy answers; GRPO steps)\n")
        print("\n".join(precision(args)) + "\n", flush=True)
    if "llamacpp" in args.sections:
        print(f"## llama.cpp: single-path greedy decode, {args.llama_tokens} tokens, EOS off, prompt prefill "
              f"included, {torch.get_num_threads()} thread(s) on both sides\n")
        print("\n".join(llamacpp(args)) + "\n", flush=True)
    print(f"Total wall time: {time.perf_counter() - t_start:.0f} s; load average at end: {os.getloadavg()[0]:.2f} "
          f"(other processes on this machine take CPU from the benchmark when it is above 0)")


if __name__ == "__main__":
    main()
