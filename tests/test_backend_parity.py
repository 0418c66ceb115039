"""The same prompt reaches every backend as the same token ids, and adapters work on every backend
or are refused. hf runs the tiny model, vllm a fake engine (tests/fake_vllm.py), openai the stub
server (tests/openai_stub.py)."""

from __future__ import annotations

import copy

import fake_vllm
import pytest
from openai_stub import StubServer

import crosspath.backends.vllm as vb
from crosspath.backends import SamplingParams
from crosspath.backends.hf import HFGenerator
from crosspath.backends.openai import OpenAIGenerator
from crosspath.backends.vllm import VLLMGenerator
from crosspath.infer.runner import RunConfig, make_generator
from crosspath.models import load_tokenizer, render_prompt

GREEDY = SamplingParams(max_tokens=1, temperature=0.0)


def bos_tokenizer():
    """SmolLM2's tokenizer made to behave like Llama-3's / R1-Distill-Qwen's: it adds BOS to every
    encoding, and its chat template writes BOS itself."""
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(load_tokenizer("tiny-random"))
    tok.bos_token = "<|endoftext|>"
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B",
        special_tokens=[("<|endoftext|>", tok.convert_tokens_to_ids("<|endoftext|>"))])
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                         "<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    return tok


def test_same_prompt_same_ids_on_every_backend(tiny, monkeypatch):
    model, _ = tiny
    tok = bos_tokenizer()
    bos = tok.bos_token_id
    prompt = render_prompt(tok, "What is 2+3?")
    want = tok(prompt, add_special_tokens=False)["input_ids"]
    assert want[0] == bos and want[1] != bos  # the template's BOS, once
    assert tok(prompt)["input_ids"][:2] == [bos, bos]  # what an engine adding special tokens again would run

    seen: list[list[int]] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"][0].tolist()), with_kwargs=True)
    try:
        HFGenerator(model, tok).generate([prompt], GREEDY)
    finally:
        hook.remove()

    calls: dict = {}
    fake_vllm.install(monkeypatch, calls, tokenizer=tok)
    monkeypatch.setattr(vb, "_ENGINES", {})
    VLLMGenerator("m", tokenizer=tok).generate([prompt], GREEDY)

    with StubServer(tokenizer=tok) as srv:
        OpenAIGenerator(srv.url, model=srv.model, backoff_base=0.0, timeout=5.0).generate([prompt], GREEDY)
    assert seen[0] == calls["prompt_ids"][0] == srv.prompt_ids[0] == want


def test_openai_adapter_is_the_served_name():
    with StubServer() as srv:
        gen = make_generator(RunConfig(backend="openai", base_url=[srv.url], served_model="base-model",
                                       adapter="my-lora"))
        gen.generate(["x"], GREEDY)
        gen.close()
    assert srv.requests[0]["model"] == "my-lora"


def test_openai_refuses_a_local_adapter_folder(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="lora-modules NAME=PATH"):
        make_generator(RunConfig(backend="openai", base_url=["http://127.0.0.1:9"], adapter=str(tmp_path)))


def test_openai_can_leave_add_special_tokens_out():
    with StubServer() as srv:
        OpenAIGenerator(srv.url, model=srv.model, add_special_tokens=None, backoff_base=0.0).generate(["x"], GREEDY)
    assert "add_special_tokens" not in srv.requests[0]
