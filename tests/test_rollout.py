"""The step-by-step sampler on a tiny random Llama and a char-level tokenizer (no network)."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from crosspath.models import peft_without_deprecation_warning
from crosspath.train.m3po import make_hook
from crosspath.train.rollout import (
    greedy_decode,
    left_pad,
    sample_rollouts,
    sampling_probs,
    sequence_logprobs,
)

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 +=?.:#\n") + ["##"]  # "##": a multi-char token
PROMPTS = ["q: 1+2=?\na:", "hi"]  # different lengths -> left padding


@pytest.fixture(scope="module")
def tok():
    vocab = {"<pad>": 0, "<eos>": 1}
    for c in CHARS:
        vocab[c] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def tiny_model(vocab_size, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(len(tok))


def plain_sampling_loop(model, prompt_ids, steps, seed, eos, pad, **sampling):
    """Reference: full forward on input ids every step, no cache, no embeds, no padding."""
    gen = torch.Generator().manual_seed(seed)
    ids = prompt_ids  # [G, P]
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    out, logps = [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids).logits[:, -1]  # [G, V]
            tok = torch.multinomial(sampling_probs(logits, **sampling), 1, generator=gen)[:, 0]
            tok = torch.where(done, torch.full_like(tok, pad), tok)
            out.append(tok)
            logps.append(torch.log_softmax(logits, -1).gather(-1, tok[:, None])[:, 0])
            done |= tok == eos
            if done.all():
                break
            ids = torch.cat([ids, tok[:, None]], 1)
    return torch.stack(out, 1), torch.stack(logps, 1)


def test_no_hook_identity_hook_and_lambda_zero_equal_plain_sampling(model, tok):
    sampling = dict(temperature=0.9, top_k=30, top_p=0.95)
    kw = dict(group_size=4, max_new_tokens=20, seed=7, **sampling)
    plain = sample_rollouts(model, tok, PROMPTS[:1], **kw)
    ident = sample_rollouts(model, tok, PROMPTS[:1], input_hook=lambda s, p, e, t: e, **kw)
    lam0 = sample_rollouts(model, tok, PROMPTS[:1], input_hook=make_hook(4, lam=0.0), **kw)
    for other in (ident, lam0):
        assert torch.equal(other.completion_ids, plain.completion_ids)
        assert torch.equal(other.logprobs, plain.logprobs)
    assert plain.inputs_embeds is None and ident.inputs_embeds is not None

    prompt = torch.tensor(tok(PROMPTS[0], add_special_tokens=False)["input_ids"]).repeat(4, 1)
    ref_ids, ref_logps = plain_sampling_loop(model, prompt, 20, 7, eos=1, pad=0, **sampling)
    assert torch.equal(plain.completion_ids, ref_ids)
    m = plain.completion_mask.bool()
    torch.testing.assert_close(plain.logprobs[m], ref_logps[m], atol=1e-5, rtol=0)
    # completion mask: 1 up to and including EOS, pad after
    for row, mask in zip(plain.completion_ids.tolist(), plain.completion_mask.tolist()):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)
        assert all(t == 0 for t in row[n:]) and (n == len(row) or row[n - 1] == 1)


def test_sampling_logprobs_are_those_of_the_processed_distribution(model, tok):
    r = sample_rollouts(model, tok, PROMPTS, group_size=2, max_new_tokens=8, seed=1,
                        temperature=0.7, top_k=5)
    m = r.completion_mask.bool()
    assert (r.sampling_logprobs[m] > r.logprobs[m]).float().mean() > 0.5  # sharper distribution
    assert torch.isfinite(r.sampling_logprobs).all()


def test_replay_reproduces_blended_rollout_logprobs(model, tok):
    g = 3
    r = sample_rollouts(model, tok, PROMPTS, group_size=g, max_new_tokens=16, seed=3,
                        input_hook=make_hook(g, lam=0.5, temperature=0.5))
    n, t = r.completion_ids.shape
    assert r.inputs_embeds.shape == (n, t, 64) and r.prompt_ids.shape[0] == n == 2 * g
    m = r.completion_mask.bool()
    replay = sequence_logprobs(model, r, use_recorded_embeds=True)
    torch.testing.assert_close(replay[m], r.logprobs[m], atol=1e-4, rtol=0)
    plain = sequence_logprobs(model, r, use_recorded_embeds=False)
    assert (plain - r.logprobs)[m].abs().max() > 1e-3  # the blend changed the context
    # the first token has no blended input before it: same under both
    torch.testing.assert_close(plain[:, 0], replay[:, 0], atol=1e-5, rtol=0)
    # the recorded inputs differ from the plain embeddings exactly where the row was thinking
    emb = model.get_input_embeddings()(r.completion_ids)
    changed = (r.inputs_embeds - emb).abs().amax(-1) > 0  # [N, T]
    assert changed.any() and not (changed & ~r.thinking_mask).any()
    # the loss forward carries gradient
    replay.sum().backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_unblended_rollout_replays_from_ids(model, tok):
    r = sample_rollouts(model, tok, PROMPTS, group_size=2, max_new_tokens=12, seed=5)
    m = r.completion_mask.bool()
    with torch.no_grad():
        lp = sequence_logprobs(model, r, use_recorded_embeds=False)
    torch.testing.assert_close(lp[m], r.logprobs[m], atol=1e-4, rtol=0)
    sub = r.select([1, 3])
    assert sub.completion_ids.shape[0] == 2 and sub.texts == [r.texts[1], r.texts[3]]
    with pytest.raises(ValueError):
        sequence_logprobs(model, r, use_recorded_embeds=True)


def test_shared_prefill_equals_encoding_every_row(model, tok):
    kw = dict(group_size=3, max_new_tokens=16, seed=11, temperature=0.9, input_hook=make_hook(3, lam=0.5))
    shared = sample_rollouts(model, tok, PROMPTS, **kw)
    every = sample_rollouts(model, tok, PROMPTS, share_prefill=False, **kw)
    assert torch.equal(shared.prompt_ids, every.prompt_ids) and torch.equal(shared.prompt_mask, every.prompt_mask)
    assert torch.equal(shared.completion_ids, every.completion_ids) and shared.texts == every.texts
    torch.testing.assert_close(shared.logprobs, every.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared.inputs_embeds, every.inputs_embeds, atol=1e-5, rtol=0)
    assert len(set(shared.texts[:3])) > 1  # the group's rows share the prompt's cache, not their samples


def test_left_padded_batch_matches_single_rows(model, tok):
    batch = sample_rollouts(model, tok, PROMPTS, max_new_tokens=12, temperature=0.0)
    assert batch.prompt_mask[1].tolist()[:-2] == [0] * (batch.prompt_mask.shape[1] - 2)
    for i, prompt in enumerate(PROMPTS):
        single = sample_rollouts(model, tok, [prompt], max_new_tokens=12, temperature=0.0)
        t = single.completion_ids.shape[1]
        assert torch.equal(batch.completion_ids[i, :t], single.completion_ids[0])
        assert batch.texts[i] == single.texts[0]
        m = single.completion_mask[0].bool()
        torch.testing.assert_close(batch.logprobs[i, :t][m], single.logprobs[0][m], atol=1e-4, rtol=0)


def test_greedy_decode_matches_hf_generate(model, tok):
    texts = greedy_decode(model, tok, PROMPTS, max_new_tokens=10)
    for prompt, text in zip(PROMPTS, texts):
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=10, pad_token_id=0, eos_token_id=1)
        assert text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_thinking_mask_flips_after_marker(tok):
    """A model whose next token is '#', '##' or 'a' regardless of context, never EOS."""
    model = tiny_model(len(tok), seed=1)
    model.model.norm.weight.data.zero_()  # hidden state 0 -> logits = lm_head bias only
    bias = torch.full((len(tok),), -30.0)
    for piece in ("#", "##", "a"):
        bias[tok.convert_tokens_to_ids(piece)] = 0.0
    model.lm_head = torch.nn.Linear(64, len(tok), bias=True)
    model.lm_head.weight.data.zero_()
    model.lm_head.bias.data.copy_(bias)

    seen = []

    def hook(step, probs, embeds, thinking):
        seen.append(thinking)
        return make_hook(8, lam=0.5)(step, probs, embeds, thinking)

    r = sample_rollouts(model, tok, ["x"], group_size=8, max_new_tokens=12, seed=0, input_hook=hook)
    assert torch.equal(torch.stack(seen, 1), r.thinking_mask)
    flipped = 0
    for ids, thinking in zip(r.completion_ids.tolist(), r.thinking_mask.tolist()):
        pieces = tok.convert_ids_to_tokens(ids)
        expected = ["####" not in "".join(pieces[: t + 1]) for t in range(len(ids))]
        assert thinking == expected
        flipped += not expected[-1]
    assert 0 < flipped < 8  # some rows reached the marker, some did not
    emb = model.get_input_embeddings()(r.completion_ids)
    plain = ~r.thinking_mask
    assert torch.equal(r.inputs_embeds[plain], emb[plain])  # after the marker inputs are plain


def test_peft_wrapped_model(tok):
    peft = pytest.importorskip("peft")
    base = tiny_model(len(tok), seed=2)
    with peft_without_deprecation_warning():  # peft's own read of a deprecated transformers attribute
        model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                          target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # make the adapter matter
    r = sample_rollouts(model, tok, PROMPTS, group_size=2, max_new_tokens=8, seed=4,
                        input_hook=make_hook(2, lam=0.3))
    m = r.completion_mask.bool()
    lp = sequence_logprobs(model, r)
    torch.testing.assert_close(lp[m], r.logprobs[m], atol=1e-4, rtol=0)
    with torch.no_grad(), model.disable_adapter():
        ref = sequence_logprobs(model, r)
    assert (ref - lp)[m].abs().max() > 1e-3


def test_sampling_probs_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    torch.testing.assert_close(sampling_probs(logits), torch.tensor([[0.5, 0.3, 0.2]]))
    torch.testing.assert_close(sampling_probs(logits, top_k=2), torch.tensor([[0.625, 0.375, 0.0]]))
    torch.testing.assert_close(sampling_probs(logits, top_p=0.6), torch.tensor([[0.625, 0.375, 0.0]]))
    torch.testing.assert_close(sampling_probs(logits, top_p=0.4), torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(sampling_probs(logits, temperature=0.0), torch.tensor([[1.0, 0.0, 0.0]]))
    ids, mask = left_pad([[5], [6, 7]], 0)
    assert ids.tolist() == [[0, 5], [6, 7]] and mask.tolist() == [[0, 1], [1, 1]]
