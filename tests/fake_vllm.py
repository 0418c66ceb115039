"""A stand-in `vllm` package for backend tests: what crosspath's vLLM backend touches, recorded.

    calls = {}
    install(monkeypatch, calls, tokenizer=tok, cpu=True)   # sys.modules["vllm"] & co. are fakes now
    gen = VLLMGenerator("m", tokenizer=tok)

Behaviour, as the real engine (vLLM 0.32):
  - `LLM(**kw)` records kw in calls["llm"] (a list: one entry per engine started); its
    `llm_engine.model_config.dtype` is bfloat16 for dtype "auto", else the dtype given;
  - `generate(prompts, params, use_tqdm, lora_request)` takes text prompts (tokenized by the
    engine's tokenizer WITH special tokens, as vLLM does) or `{"prompt_token_ids": [...]}`, records
    the ids it would run in calls["prompt_ids"], the params in calls["params"] and the adapter in
    calls["lora"]; each sample is `f"{i}-{j}</s>"` with token ids [7, 8], out of index order;
  - `llm_engine.engine_core.shutdown()` appends to calls["shutdown"];
  - `vllm.platforms.current_platform.is_cpu()` answers `cpu`.
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace


def install(monkeypatch, calls: dict, tokenizer=None, cpu: bool = False, broken: str | None = None) -> types.ModuleType:
    """Put the fake package in sys.modules; with `broken`, `from vllm import LLM` raises it (a bad install)."""
    mod = types.ModuleType("vllm")
    calls.setdefault("llm", [])
    calls.setdefault("shutdown", [])

    class FakeSamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class FakeLLM:
        def __init__(self, **kw):
            import torch

            calls["llm"].append(kw)
            dtype = torch.bfloat16 if kw.get("dtype", "auto") == "auto" else getattr(torch, kw["dtype"])
            self.tok = tokenizer
            core = SimpleNamespace(shutdown=lambda timeout=None: calls["shutdown"].append(kw["model"]))
            self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(dtype=dtype), engine_core=core)

        def get_tokenizer(self):
            return self.tok

        def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
            calls["prompt_ids"] = [p["prompt_token_ids"] if isinstance(p, dict) else self.tok(p)["input_ids"]
                                   for p in prompts]
            calls["params"] = [sp.kw for sp in sampling_params]
            calls["lora"] = lora_request
            results = []
            for i, sp in enumerate(sampling_params):
                outs = []
                for j in reversed(range(sp.kw["n"])):  # out of order: the backend sorts by index
                    ids = [7, 8]
                    outs.append(SimpleNamespace(
                        index=j, text=f"{i}-{j}</s>", token_ids=ids, finish_reason="stop", stop_reason="</s>",
                        logprobs=[{t: SimpleNamespace(logprob=-0.25 * t)} for t in ids] if sp.kw["logprobs"] == 0 else None,
                    ))
                results.append(SimpleNamespace(outputs=outs))
            return results

    if broken:
        def __getattr__(name):
            raise RuntimeError(broken)

        mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    else:
        mod.LLM, mod.SamplingParams = FakeLLM, FakeSamplingParams
    mod.__version__ = "0.0-fake"

    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_cpu=lambda: cpu)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")

    class LoRARequest(SimpleNamespace):
        def __init__(self, lora_name, lora_int_id, lora_path):
            super().__init__(lora_name=lora_name, lora_int_id=lora_int_id, lora_path=lora_path)

    request.LoRARequest = LoRARequest
    for name, m in {"vllm": mod, "vllm.platforms": platforms, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, m)
    return mod
