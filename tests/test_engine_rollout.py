"""Rollouts sampled on an inference engine (--rollout-backend vllm|openai), with a scripted engine:
the Rollout built from engine samples, the adapter handed over each step, the log-prob mismatch,
and the refusals. The real vLLM engine: tests/test_vllm_real.py (marked vllm)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from crosspath.backends import vllm as vllm_mod
from crosspath.backends.base import BackendError, Completion
from crosspath.cli import main
from crosspath.config import ConfigError
from crosspath.models import render_prompt
from crosspath.train.engine_rollout import ADAPTERS, engine_rollout
from crosspath.train.rollout import _eos_ids, sample_rollouts
from crosspath.train.trainer import PROMPT, Trainer

from test_trainer import config, fake_reward, lora_state, metrics  # noqa: F401  (fixture)


def test_engine_rollout_masks_ids_and_eos_cut(tiny):
    _, tok = tiny
    eos, pad = tok.eos_token_id, tok.pad_token_id
    hash_ids = tok("####", add_special_tokens=False)["input_ids"]
    a, b = tok(" 1 + 2", add_special_tokens=False)["input_ids"], tok(" 7", add_special_tokens=False)["input_ids"]
    comps = [Completion(text="", token_ids=a + [eos, 99], logprobs=[-0.5] * (len(a) + 2)),  # tokens after EOS: cut
             Completion(text="", token_ids=b + hash_ids + b, logprobs=[-0.25] * (2 * len(b) + len(hash_ids))),
             Completion(text="", token_ids=b, logprobs=[-1.0] * len(b))]
    r = engine_rollout(tok, [[5, 6], [7]], comps + comps[:1], group_size=2, eos_ids=[eos], pad_id=pad)
    assert r.prompt_ids.tolist() == [[5, 6], [5, 6], [pad, 7], [pad, 7]]
    assert r.prompt_mask.tolist() == [[1, 1], [1, 1], [0, 1], [0, 1]]
    width = max(len(a) + 1, 2 * len(b) + len(hash_ids))
    assert r.completion_ids.shape == (4, width)
    assert r.completion_ids[0, : len(a) + 1].tolist() == a + [eos] and 99 not in r.completion_ids[0].tolist()
    assert r.completion_mask[0].tolist() == [1] * (len(a) + 1) + [0] * (width - len(a) - 1)
    assert r.completion_ids[0, len(a) + 1:].eq(pad).all()
    assert r.completion_mask[1].sum() == 2 * len(b) + len(hash_ids)  # cut at max length: all real
    assert r.sampling_logprobs[0].tolist() == [-0.5] * (len(a) + 1) + [0.0] * (width - len(a) - 1)
    assert torch.equal(r.logprobs, r.sampling_logprobs) and r.inputs_embeds is None and r.group_size == 2
    assert r.texts[:2] == [" 1 + 2", " 7#### 7"]
    # thinking: up to the token before the one that completes the marker; never at EOS or padding
    assert r.thinking_mask[1].tolist() == [True] * (len(b) + len(hash_ids) - 1) + [False] * (width - len(b) - len(hash_ids) + 1)
    assert r.thinking_mask[0].tolist() == [True] * len(a) + [False] * (width - len(a))
    with pytest.raises(BackendError, match="no token ids"):
        engine_rollout(tok, [[5]], [Completion(text="x", token_ids=[-1], logprobs=[0.0])], 1, [eos], pad)


def test_engine_rollout_equals_the_hf_sampler(tiny):
    """The same samples, once from sample_rollouts and once as engine completions -> the same Rollout."""
    model, tok = tiny
    prompts = [render_prompt(tok, q) for q in ("What is 1 + 2?", "Add 3 and 4.")]
    ref = sample_rollouts(model, tok, prompts, group_size=3, max_new_tokens=12, temperature=0.9, seed=1)
    comps = [Completion(text=t, token_ids=ids[m.bool()].tolist(), logprobs=lp[m.bool()].tolist())
             for t, ids, m, lp in zip(ref.texts, ref.completion_ids, ref.completion_mask, ref.sampling_logprobs)]
    ids = [list(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
    r = engine_rollout(tok, ids, comps, 3, _eos_ids(model, tok, None), tok.pad_token_id)
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "thinking_mask",
                 "sampling_logprobs"):
        assert torch.equal(getattr(r, name), getattr(ref, name)), name
    assert r.texts == ref.texts


class ScriptedEngine:
    """Stands in for VLLMGenerator: samples with the trainer's own model (set `.model` after the
    Trainer is built) through the hf sampler, from the token ids it is given; records the adapters."""

    instances: list = []

    def __init__(self, model, tokenizer=None, **kw):
        self.tok, self.kw, self.model, self.offset = tokenizer, kw, None, 0.0
        self.adapters, self.calls = [], 0
        ScriptedEngine.instances.append(self)

    def set_adapter(self, folder, lora_id, name=None):
        assert (Path(folder) / "adapter_config.json").exists()
        self.adapters.append((Path(folder), lora_id, name))

    def generate_ids(self, prompt_ids, params):
        self.calls += 1
        texts = self.tok.batch_decode(prompt_ids)
        assert [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts] == prompt_ids
        r = sample_rollouts(self.model, self.tok, texts, group_size=params.n, max_new_tokens=params.max_tokens,
                            temperature=params.temperature, seed=params.seed)
        return [Completion(text=t, token_ids=ids[m.bool()].tolist(), logprobs=(lp[m.bool()] + self.offset).tolist())
                for t, ids, m, lp in zip(r.texts, r.completion_ids, r.completion_mask, r.sampling_logprobs)]


@pytest.fixture
def scripted(monkeypatch):
    ScriptedEngine.instances = []
    monkeypatch.setattr(vllm_mod, "VLLMGenerator", ScriptedEngine)
    return ScriptedEngine


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_trainer_steps_on_engine_rollouts(tmp_path, fake_reward, scripted, offset):  # noqa: F811
    cfg = config(tmp_path, rollout_backend="vllm", steps=2, micro_batch_size=3)
    t = Trainer(cfg)
    eng = scripted.instances[0]
    assert eng.kw["max_lora_rank"] == cfg.lora_r and eng.kw["logprobs_mode"] == "processed_logprobs"
    eng.model, eng.offset = t.model, offset
    before = lora_state(t.model)
    rows = t.fit()
    assert eng.calls == 2 and [a[0].name for a in eng.adapters] == ["step-1", "step-2"]
    assert len({a[1] for a in eng.adapters}) == 2 and len({a[2] for a in eng.adapters}) == 2  # a new id per step
    assert not (Path(cfg.out) / ADAPTERS).exists()  # cleaned at the end
    after = lora_state(t.model)
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)
    for row in rows:
        # the trainer's recomputed log-probs against the engine's: equal up to float error, or off by `offset`
        assert row["sampling_logp_diff_mean"] == pytest.approx(offset, abs=1e-4)
        assert row["sampling_logp_diff_max"] == pytest.approx(offset, abs=1e-4)
    assert [r["step"] for r in metrics(Path(cfg.out))] == [1, 2]


def test_hf_rollouts_log_no_mismatch(tmp_path, fake_reward):  # noqa: F811
    rows = Trainer(config(tmp_path, steps=1)).fit()
    assert "sampling_logp_diff_mean" not in rows[0]


def test_leap_on_engine_rollouts(tmp_path, monkeypatch, tiny_gen, scripted):
    """LeaP-GRPO on the engine: every path is sent as its exact ids; the step trains on them."""
    calls = []

    def leap_ids(self, prompt_ids, params):  # the hf backend continues the decoded ids (tiny model)
        calls.append([list(p) for p in prompt_ids])
        outs = tiny_gen.generate(self.tok.batch_decode(prompt_ids), params)
        return [replace(c, logprobs=c.logprobs or [0.0] * len(c.token_ids)) for c in outs]

    monkeypatch.setattr(ScriptedEngine, "generate_ids", leap_ids)
    cfg = config(tmp_path, algo="leap", rollout_backend="vllm", steps=1, group_size=2, leap_rounds=2,
                 leap_round_tokens=6, leap_summary_tokens=4, leap_answer_tokens=4)
    t = Trainer(cfg)
    rows = t.fit()
    assert calls and "leap_read_peers" in rows[0] and "sampling_logp_diff_mean" in rows[0]
    assert rows[0]["groups_trained"] == 2
    # the later calls continue paths: each sequence sent starts with an earlier one of the same path
    firsts = calls[0]
    assert any(seq[: len(f)] == f for seq in calls[-1] for f in firsts)


def test_m3po_on_an_engine_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="M3PO samples on hf only"):
        Trainer(config(tmp_path, algo="m3po", rollout_backend="vllm"))
    assert main(["train", "--algo", "m3po", "--rollout-backend", "vllm", "--model", "tiny-random",
                 "--out", str(tmp_path / "cli"), "--steps", "1"]) == 2
    assert "M3PO samples on hf only" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs --rollout-base-url"):
        Trainer(config(tmp_path, rollout_backend="openai"))


def text(j: int) -> str:
    """The scripted pool's completion j: lengths of both parities, so the stand-in reward varies."""
    return " 7" * (j + 1) + "." * (j % 2)


def pool_client(log: list, tok, load_status: int = 200):
    """An httpx client over a scripted pool of vLLM servers: /v1/load_lora_adapter, /v1/unload_lora_adapter
    and /v1/completions (choice j: the ids of text(j) + EOS, log-prob -1 each, with token_ids)."""
    import json as js

    import httpx

    ids = lambda j: tok(text(j), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # noqa: E731

    def handle(request: httpx.Request) -> httpx.Response:
        body = js.loads(request.content)
        log.append((request.url.host, request.url.path, body))
        if request.url.path.endswith("_lora_adapter"):
            return httpx.Response(load_status, text="" if load_status == 200 else "Not Found")
        choices = [{"index": j, "text": text(j), "token_ids": ids(j), "finish_reason": "stop",
                    "logprobs": {"token_logprobs": [-1.0] * len(ids(j))}} for j in range(body["n"])]
        return httpx.Response(200, json={"choices": choices})

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_trainer_on_a_server_pool_loads_each_steps_adapter(tmp_path, fake_reward):  # noqa: F811
    urls = ["http://pool-a:8000/v1", "http://pool-b:8000/v1"]
    cfg = config(tmp_path, rollout_backend="openai", rollout_base_url=urls, steps=2)
    t = Trainer(cfg)
    log = []
    t.engine.gen._client = pool_client(log, t.tok)
    rows = t.fit()
    loads = [(h, b["lora_name"], b["lora_path"]) for h, p, b in log if p == "/v1/load_lora_adapter"]
    unloads = [(h, b["lora_name"]) for h, p, b in log if p == "/v1/unload_lora_adapter"]
    names = sorted({n for _, n, _ in loads})
    assert len(names) == 2 and {h for h, _, _ in loads} == {"pool-a", "pool-b"} and len(loads) == 4
    assert all(Path(p).is_absolute() and Path(p).name in ("step-1", "step-2") for _, _, p in loads)
    assert sorted(unloads) == sorted((h, n) for h in ("pool-a", "pool-b") for n in names)  # both, at the end
    asked = [b for _, p, b in log if p == "/v1/completions"]
    assert {b["model"] for b in asked} == set(names) and all(b["return_token_ids"] for b in asked)
    first = t.questions(0)  # the prompts of step 1, as token ids
    ids = [t.tok(render_prompt(t.tok, PROMPT.format(question=p.question, marker="####")),
                 add_special_tokens=False)["input_ids"] for p in first]
    assert [b["prompt"] for b in asked[:2]] == ids and all(b["n"] == cfg.group_size for b in asked)
    lengths = [len(t.tok(text(j), add_special_tokens=False)["input_ids"]) + 1 for j in range(cfg.group_size)]
    assert rows[0]["completion_length"] == pytest.approx(sum(lengths) / len(lengths))
    assert all(r["sampling_logp_diff_max"] > 0 for r in rows)  # the pool's -1.0 is not the trainer's log-prob


def test_a_pool_that_cannot_load_adapters_is_a_clear_error(tmp_path, fake_reward):  # noqa: F811
    t = Trainer(config(tmp_path, rollout_backend="openai", rollout_base_url=["http://pool-a:8000/v1"], steps=1))
    t.engine.gen._client = pool_client([], t.tok, load_status=404)
    with pytest.raises(BackendError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora"):
        t.fit()


def test_vllm_rollouts_without_vllm_say_how_to_install(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    assert main(["train", "--rollout-backend", "vllm", "--model", "tiny-random", "--train-size", "8",
                 "--eval-size", "0", "--out", str(tmp_path / "run"), "--steps", "1", "--no-progress"]) == 2
    assert "--rollout-backend vllm: the vLLM backend needs a working `vllm`" in capsys.readouterr().err
