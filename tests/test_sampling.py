"""The one next-token distribution (backends/sampling.py) on crafted logits, and both samplers use it."""

import math

import torch

from crosspath.backends import hf
from crosspath.backends.sampling import candidates, sampling_probs
from crosspath.train import rollout


def probs(*p):
    return torch.log(torch.tensor([list(p)]))


def test_filters_on_hand_computed_values():
    logits = probs(0.5, 0.3, 0.15, 0.05)
    torch.testing.assert_close(sampling_probs(logits), torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(sampling_probs(logits, top_k=2), torch.tensor([[0.625, 0.375, 0, 0]]))
    torch.testing.assert_close(sampling_probs(logits, top_p=0.7), torch.tensor([[0.625, 0.375, 0, 0]]))
    torch.testing.assert_close(sampling_probs(logits, top_p=0.4), torch.tensor([[1.0, 0, 0, 0]]))
    torch.testing.assert_close(sampling_probs(logits, temperature=0.0), torch.tensor([[1.0, 0, 0, 0]]))


def test_top_k_keeps_every_tie_at_the_kth_value():
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])  # row 0: a tie at the 2nd value
    got = sampling_probs(logits, top_k=2)
    e = math.e
    torch.testing.assert_close(got[0], torch.tensor([e, 1, 1, 0]) / (e + 2))
    torch.testing.assert_close(got[1], torch.tensor([e, 1, 0, 0]) / (e + 1))  # no tie: exactly k


def test_min_p_threshold_is_inclusive_and_relative_to_the_best():
    logits = probs(0.5, 0.3, 0.125, 0.075)
    # min_p 0.25 keeps p >= 0.125: the token exactly at the threshold stays, 0.075 goes
    torch.testing.assert_close(sampling_probs(logits, min_p=0.25), torch.tensor([[0.5, 0.3, 0.125, 0]]) / 0.925)
    # measured on the top-k distribution: top_k=2 -> (0.625, 0.375); min_p 0.7 keeps >= 0.4375
    torch.testing.assert_close(sampling_probs(logits, top_k=2, min_p=0.7), torch.tensor([[1.0, 0, 0, 0]]))
    # top-p and min-p together keep their intersection
    torch.testing.assert_close(sampling_probs(logits, top_p=0.9, min_p=0.1), torch.tensor([[0.5, 0.3, 0.125, 0]]) / 0.925)


def test_min_p_beyond_the_head_is_exact():
    logits = torch.zeros(1, 1000)  # flat: every token passes min_p, more than the 512-token head
    p, ids = candidates(logits, min_p=0.5, head=8)
    assert (p > 0).sum() == 1000 and sorted(ids[0].tolist()) == list(range(1000))


def test_both_samplers_draw_from_this_distribution():
    assert hf.candidates is candidates
    assert rollout.sampling_probs is sampling_probs
