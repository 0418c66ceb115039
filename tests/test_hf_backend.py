import pytest
import torch

from crosspath.backends.base import SamplingParams, cut_at_stop, has_sessions
from crosspath.backends.hf import HFGenerator
from crosspath.models import render_prompt

PROMPTS = ["What is 3 + 4?", "Write a long poem about the sea, the moon and the sky at night.", "Hi"]


def _rendered(tok):
    return [render_prompt(tok, q) for q in PROMPTS]


def test_batched_equals_single_and_model_generate(tiny, tiny_gen):
    model, tok = tiny
    sp = SamplingParams(max_tokens=12, temperature=0)
    prompts = _rendered(tok)
    batched = tiny_gen.generate(prompts, sp)
    for pr, comp in zip(prompts, batched):
        assert tiny_gen.generate([pr], sp)[0].token_ids == comp.token_ids
        enc = tok(pr, return_tensors="pt", add_special_tokens=False)
        ref = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        assert ref[0, enc.input_ids.shape[1]:].tolist() == comp.token_ids
        assert comp.finish_reason in ("stop", "length") and comp.num_tokens <= 12


def test_session_continuation_matches_full_forward(tiny, tiny_gen):
    model, tok = tiny
    g = tiny_gen
    h = g.open(_rendered(tok)[1])
    g.advance([h], SamplingParams(max_tokens=7, temperature=0))
    g.extend(h, "\n\nLet me check the peers.")
    cached_before = g.cached_tokens(h)
    assert cached_before > 0
    nxt = g.advance([h], SamplingParams(max_tokens=5, temperature=0))[0]
    # The same token sequence, re-encoded from scratch with one forward per token, gives the same greedy tokens.
    ids = list(g._paths[h].ids)
    n_new = len(nxt.token_ids)
    seq = torch.tensor([ids[: len(ids) - (n_new - 1)]])
    with torch.no_grad():
        out = model.generate(seq, attention_mask=torch.ones_like(seq), max_new_tokens=n_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    assert out[0, seq.shape[1]:].tolist() == nxt.token_ids
    assert g.text(h).endswith("Let me check the peers." + nxt.text)
    g.close(h)


def test_paths_of_different_lengths_continue_together(tiny, tiny_gen):
    tok = tiny[1]
    g = tiny_gen
    prompts = _rendered(tok)
    hs = [g.open(p) for p in prompts]
    g.advance(hs[:1], SamplingParams(max_tokens=9, temperature=0))  # the first grows most
    g.advance(hs[2:], SamplingParams(max_tokens=3, temperature=0))
    g.extend(hs[2], " More text here.")  # pending text behind a shorter cache: a hole in the batch
    sp = SamplingParams(max_tokens=6, temperature=0, logprobs=True)
    together = g.advance(hs, sp)
    # each path brought to the same state (same text, same cache) by the same calls, but alone
    alone = []
    for n, pr in enumerate(prompts):
        h = g.open(pr)
        if n == 0:
            g.advance([h], SamplingParams(max_tokens=9, temperature=0))
        if n == 2:
            g.advance([h], SamplingParams(max_tokens=3, temperature=0))
            g.extend(h, " More text here.")
        alone.append(g.advance([h], sp)[0])
        g.close(h)
    # every row, cached (0), fresh (1) and cached-with-pending-text (2), continues exactly as alone
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.finish_reason for c in together] == [c.finish_reason for c in alone]
    for t, a in zip(together, alone):  # the same numbers, not only the same argmax
        torch.testing.assert_close(torch.tensor(t.logprobs), torch.tensor(a.logprobs), atol=1e-4, rtol=0)


def test_stop_string_cut_exactly(tiny_gen, tiny):
    tok = tiny[1]
    sp = SamplingParams(max_tokens=30, temperature=0)
    free = tiny_gen.generate(_rendered(tok)[:1], sp)[0].text
    assert len(free) > 6
    stop = free[3:6]  # a stop string that appears mid-text, possibly spanning tokens
    hit = tiny_gen.generate(_rendered(tok)[:1], sp.with_(stop=(stop,)))[0]
    assert hit.text == free[: free.find(stop) + len(stop)]
    assert hit.stop == stop and hit.finish_reason == "stop"


def test_seed_is_per_request_and_reproducible(tiny_gen, tiny):
    prompts = _rendered(tiny[1])[:1] * 3
    sp = SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    a = tiny_gen.generate(prompts, sp)
    b = tiny_gen.generate(prompts, sp)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert len({tuple(c.token_ids) for c in a}) > 1  # seed + i differs per request
    n = tiny_gen.generate(prompts[:1], sp.with_(n=3))
    assert [c.token_ids for c in n] == [c.token_ids for c in a]


def test_shared_prompt_prefill_equals_each_path_alone(tiny_gen, tiny):
    """A question's paths open with the same prompt: one prefill serves them all, with the same
    samples and the same per-path caches as paths that each ran alone."""
    prompts = _rendered(tiny[1])
    same = [prompts[0]] * 3 + [prompts[2]]  # three copies of one prompt, one other
    sp = SamplingParams(max_tokens=8, temperature=1.0, seed=3)
    hs = [tiny_gen.open(pr) for pr in same]
    together = tiny_gen.advance(hs, sp)
    assert len({tuple(c.token_ids) for c in together[:3]}) > 1
    for i, pr in enumerate(same):
        h = tiny_gen.open(pr)
        alone = tiny_gen.advance([h], sp.with_(seed=3 + i))[0]
        assert alone.token_ids == together[i].token_ids
        a, b = tiny_gen._paths[h], tiny_gen._paths[hs[i]]
        assert a.ids == b.ids and a.kv.shape == b.kv.shape
        torch.testing.assert_close(a.kv, b.kv, atol=1e-5, rtol=0)
        tiny_gen.close(h)
    for h in hs:
        tiny_gen.close(h)


def test_rewind_crops_cache(tiny_gen, tiny):
    g = tiny_gen
    h = g.open(_rendered(tiny[1])[0])
    g.advance([h], SamplingParams(max_tokens=10, temperature=0))
    full = g.text(h)
    g.rewind(h, 5)
    assert g.text(h) == full[:-5]
    p = g._paths[h]
    assert p.cached_chars <= len(g.text(h)) and p.kv.shape[-2] == len(p.ids)
    g.advance([h], SamplingParams(max_tokens=3, temperature=0))
    g.close(h)


def test_protocol_and_cut():
    assert cut_at_stop("a b </think> c </summarize>", ["</summarize>", "</think>"]) == ("a b </think>", "</think>")
    assert cut_at_stop("abc", []) == ("abc", None)
    assert cut_at_stop("a b </think> c", ["</think>", ""], keep_stop=False) == ("a b ", "</think>")  # OpenAI: excluded
    assert cut_at_stop("abc", ["x"], keep_stop=False) == ("abc", None)


def test_has_sessions(tiny_gen):
    assert has_sessions(tiny_gen)


@pytest.mark.slow
def test_smollm2_answers_a_sum(smollm2):
    g = HFGenerator(*smollm2)
    out = g.generate([render_prompt(smollm2[1], "What is 3 + 4?")], SamplingParams(max_tokens=20, temperature=0))
    assert "7" in out[0].text


def test_dtype_auto_is_bf16_on_cuda_and_on_cpus_with_bf16(monkeypatch):
    from crosspath import models
    from crosspath.models import ModelError, resolve_dtype

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16 and resolve_dtype("auto", "cuda:1") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("float16", "cpu") == torch.float16
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu") == torch.bfloat16 and resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("auto", "mps") == torch.float32  # only CPUs are probed
    with pytest.raises(ModelError, match="unknown dtype"):
        resolve_dtype("fp33", "cpu")


def test_device_map_loads_and_sessions_still_match(tiny_gen):
    """`device_map="auto"` (one device here): the same greedy text, through the session API, as a plain load."""
    g = HFGenerator.from_name("tiny-random", dtype="float32", device_map="auto")
    assert g.dtype == "float32"
    prompts = ["Hello there", "One two three four"]
    params = SamplingParams(max_tokens=6, temperature=0)
    hs = [g.open(p) for p in prompts]
    first = g.advance(hs, params)
    g.extend(hs[0], " more")
    again = g.advance(hs, params)
    ref = [tiny_gen.open(p) for p in prompts]
    assert [c.text for c in first] == [c.text for c in tiny_gen.advance(ref, params)]
    tiny_gen.extend(ref[0], " more")
    assert [c.text for c in again] == [c.text for c in tiny_gen.advance(ref, params)]
    for h in ref:
        tiny_gen.close(h)
