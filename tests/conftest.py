"""Shared fixtures: a tiny random Llama with SmolLM2's real tokenizer (fast tier) and SmolLM2
itself (slow tier). Both come from `crosspath.models`, built once in the crosspath cache.
Every test runs with one torch thread (`one_thread`)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models are all thread overhead, and the test machines are small and shared: one torch
    thread is many times faster than two contended ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the 2-layer random Llama."""
    import torch

    from crosspath.models import load_model

    torch.manual_seed(0)
    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def tiny_gen(tiny):
    from crosspath.backends.hf import HFGenerator

    return HFGenerator(*tiny)


@pytest.fixture(scope="session")
def smollm2():
    from crosspath.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def vllm_ok():
    """The real vLLM engine is usable (else the module's tests skip with the install hint and the import
    failure), with a small CPU KV cache; engines the module started are shut down at its end."""
    from crosspath.backends.vllm import close_engines, vllm_available

    ok, why = vllm_available()
    if not ok:
        pytest.skip(why)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    yield
    close_engines()
