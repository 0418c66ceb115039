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
    nxt = g.advance([h], SamplingParams(max_tokens=5, temperature=0, logprobs=True))[0]
    # The same token sequence, re-encoded from scratch with one forward per token, gives the same greedy tokens.
    ids = list(g._paths[h].ids)
    n_new = len(nxt.token_ids)
    seq = torch.tensor([ids[: len(ids) - (n_new - 1)]])
    with torch.no_grad():
        out = model.generate(seq, attention_mask=torch.ones_like(seq), max_new_tokens=n_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        full = model(torch.tensor([ids])).logits[0].log_softmax(-1)  # [len(ids), V]
    assert out[0, seq.shape[1]:].tolist() == nxt.token_ids
    # and the same numbers: the tiny model's greedy tokens barely depend on positions, its log-probs do
    # (cached keys and the new tokens at the wrong positions move them by ~1e-3)
    want = [full[seq.shape[1] - 1 + j, t].item() for j, t in enumerate(nxt.token_ids)]
    torch.testing.assert_close(torch.tensor(nxt.logprobs), torch.tensor(want), atol=1e-4, rtol=0)
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
    alone, solo = [], []
    for n, pr in enumerate(prompts):
        h = g.open(pr)
        if n == 0:
            g.advance([h], SamplingParams(max_tokens=9, temperature=0))
        if n == 2:
            g.advance([h], SamplingParams(max_tokens=3, temperature=0))
            g.extend(h, " More text here.")
        alone.append(g.advance([h], sp)[0])
        solo.append(h)
    # every row, cached (0), fresh (1) and cached-with-pending-text (2), continues exactly as alone
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.finish_reason for c in together] == [c.finish_reason for c in alone]
    for t, a in zip(together, alone):  # the same numbers, not only the same argmax
        torch.testing.assert_close(torch.tensor(t.logprobs), torch.tensor(a.logprobs), atol=1e-4, rtol=0)
    # and the caches the batch left behind are the ones each path left alone: the next call agrees too
    for h, h_alone in zip(hs, solo):
        a, b = g.advance([h], sp)[0], g.advance([h_alone], sp)[0]
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
        g.close(h)
        g.close(h_alone)


def _greedy_reencoded(model, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """n greedy tokens after `ids` and their log-probs, every step a fresh forward over the whole
    sequence (no cache at all)."""
    out, lps = [], []
    for _ in range(n):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids + out])).logits[0, -1], -1)  # [V]
        out.append(int(lp.argmax()))
        lps.append(float(lp[out[-1]]))
    return out, lps


def test_cache_kept_in_place_equals_reencoding(tiny):
    """LeaP's pattern of calls on one batch of sessions - rounds, a rewind, appended texts of different
    lengths, rows that finish early (and leave the batch), a path that sits out a call - continues
    every path with exactly the greedy tokens of re-encoding its whole token sequence from scratch."""
    model, tok = tiny
    g = HFGenerator(model, tok)
    prompts = _rendered(tok)
    hs = [g.open(p) for p in prompts + prompts[:1]]  # 4 paths, two with the same prompt (a shared prefill)
    sp = SamplingParams(max_tokens=12, temperature=0)
    batches = []

    def check(handles, params, eos_paths=()):
        seqs = []
        for h in handles:  # the tokens each path will read: its cache + its pending text
            p = g._paths[h]
            pending = g._pending_ids(p)[0]  # (may first drop the last cached token, to re-feed it)
            seqs.append(list(p.ids) + pending)
        firsts = [_greedy_reencoded(model, s, 1)[0][0] for s in seqs]
        g.eos_ids = {firsts[i] for i in eos_paths}  # these paths end at their first token
        assert not any(firsts[i] in g.eos_ids for i in range(len(handles)) if i not in eos_paths)
        texts = [g.text(h) for h in handles]
        outs = g.advance(handles, params.with_(logprobs=True))
        for s, c, t, h in zip(seqs, outs, texts, handles):
            ids, lps = _greedy_reencoded(model, s, len(c.token_ids))
            assert c.token_ids == ids
            torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(lps), atol=1e-4, rtol=0)
            assert g.text(h) == t + c.text
        batches.append({id(g._paths[h].batch) for h in handles})
        return outs

    first = check(hs, sp)
    assert first[0].token_ids == first[3].token_ids  # same prompt, greedy
    g.rewind(hs[1], 7)
    g.extend(hs[0], "\n\nSummary: x = 3")
    g.extend(hs[2], " and then a much longer piece of appended text, as a peer block would be")
    check(hs, sp)
    assert len(batches[1]) == 1 and batches[1] == batches[0]  # continued in place, one batch
    check(hs, sp, eos_paths=(0, 2))  # half of the rows end at once: the other two move to a smaller batch
    assert all(len(g._paths[h].ids) > 0 for h in hs)
    assert len({id(g._paths[h].batch) for h in hs}) == 2
    check([hs[3], hs[1]], sp.with_(max_tokens=5))  # in place in the smaller batch (any order)
    g.extend(hs[0], " More.")
    check(hs, sp)  # gathered from two batches into one
    assert len(batches[-1]) == 1
    check(hs[:3], sp.with_(max_tokens=4))  # hs[3] sits out this call (masked columns)
    check(hs, sp.with_(max_tokens=4))
    for h in hs:
        g.close(h)


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
        ka, kb = tiny_gen.cache_of(h), tiny_gen.cache_of(hs[i])
        assert a.ids == b.ids and ka.shape == kb.shape
        torch.testing.assert_close(ka, kb, atol=1e-5, rtol=0)
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
    assert p.cached_chars <= len(g.text(h)) and g.cache_of(h).shape[-2] == len(p.ids)
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
