"""name of a backend + its options -> a Generator. The one place that knows every backend.

    make_generator("hf", "smollm2-135m", dtype="auto")
    make_generator("openai", "Qwen/Qwen2.5-7B-Instruct", base_url=["http://gpu1:8000/v1"])
    make_generator("vllm", "Qwen/Qwen2.5-7B-Instruct", tensor_parallel_size=2)

`crosspath run` and the server call it through `infer.runner.make_generator(RunConfig)`; distill calls
it directly (it needs no inference runner to build a teacher).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

BACKENDS = ("hf", "openai", "vllm")


def make_generator(backend: str, model: str, *, adapter: str | None = None, dtype: str = "auto",
                   device_map: str | None = None, base_url: Sequence[str] = (), api_key: str | None = None,
                   served_model: str | None = None, concurrency: int = 16, max_model_len: int | None = None,
                   gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1,
                   enforce_eager: bool | None = None, cpu_kvcache_gib: int = 2, seed: int = 0):
    """The Generator of `backend` for `model`; a vLLM engine is shared by every call of this process
    with the same engine options (see RunConfig for what each option means)."""
    if backend == "hf":
        from .hf import HFGenerator

        return HFGenerator.from_name(model, dtype=dtype, adapter=adapter, device_map=device_map)
    if backend == "openai":
        from .openai import OpenAIGenerator

        if not base_url:
            raise ValueError("the openai backend needs --base-url http://host:port (one or several)")
        if adapter and (Path(adapter) / "adapter_config.json").exists():
            raise ValueError(f"--adapter {adapter!r} is a local adapter folder; the openai backend needs the name "
                             "the server serves it under (vllm serve BASE --enable-lora --lora-modules NAME=PATH, "
                             "then --adapter NAME)")
        return OpenAIGenerator(list(base_url), model=adapter or served_model or model, api_key=api_key,
                               concurrency=concurrency)
    if backend == "vllm":
        from ..models import load_tokenizer, resolve
        from .vllm import VLLMGenerator

        return VLLMGenerator(resolve(model), tokenizer=load_tokenizer(model), adapter=adapter, dtype=dtype,
                             max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                             tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
                             cpu_kvcache_gib=cpu_kvcache_gib, seed=seed, shared=True)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
