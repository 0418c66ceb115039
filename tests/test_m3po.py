"""M3PO blend against the formula computed by hand on small tensors."""

import math

import torch

from crosspath.train.m3po import blend, blend_groups, make_hook

PROBS = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])  # [3, 3]
EMBEDS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])  # [3, 2]


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_blend_equals_formula_by_hand():
    lam, temp = 0.3, 0.5
    thinking = torch.tensor([True, True, True])
    inputs, weights = blend(PROBS, EMBEDS, thinking, lam=lam, temperature=temp)
    p, e = PROBS.tolist(), EMBEDS.tolist()
    for i in range(3):
        peers = [j for j in range(3) if j != i]
        scores = [math.exp(_cos(p[i], p[j]) / temp) for j in peers]
        a = {j: s / sum(scores) for j, s in zip(peers, scores)}
        c = [sum(a[j] * e[j][d] for j in peers) for d in range(2)]
        h = [(1 - lam) * e[i][d] + lam * c[d] for d in range(2)]
        torch.testing.assert_close(inputs[i], torch.tensor(h))
        assert weights[i, i] == 0
        for j in peers:
            assert abs(weights[i, j].item() - a[j]) < 1e-6
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))


def test_exited_peer_gets_zero_weight_and_keeps_its_embedding():
    thinking = torch.tensor([True, True, False])
    inputs, weights = blend(PROBS, EMBEDS, thinking, lam=0.5)
    assert weights[0, 2] == 0 and weights[1, 2] == 0
    assert torch.equal(weights[2], torch.zeros(3))  # the exited rollout blends with nobody
    assert torch.equal(inputs[2], EMBEDS[2])  # and its input is plain
    # with one peer left, all the weight goes to it
    torch.testing.assert_close(weights[0], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(inputs[0], 0.5 * EMBEDS[0] + 0.5 * EMBEDS[1])


def test_no_thinking_peer_keeps_own_embedding_without_nan():
    for thinking in ([True, False, False], [False, False, False]):
        inputs, weights = blend(PROBS, EMBEDS, torch.tensor(thinking), lam=0.5)
        assert torch.equal(inputs, EMBEDS)
        assert torch.equal(weights, torch.zeros(3, 3))
        assert not weights.isnan().any() and not inputs.isnan().any()
    inputs, weights = blend(PROBS[:1], EMBEDS[:1], torch.tensor([True]))  # N = 1
    assert torch.equal(inputs, EMBEDS[:1]) and torch.equal(weights, torch.zeros(1, 1))


def test_lambda_zero_returns_embeds_exactly():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(5, 17), -1)
    embeds = torch.randn(5, 8)
    inputs, _ = blend(probs, embeds, torch.ones(5, dtype=torch.bool), lam=0.0)
    assert torch.equal(inputs, embeds)


def test_uniform_weighting_is_peer_mean():
    thinking = torch.tensor([True, True, True])
    inputs, weights = blend(PROBS, EMBEDS, thinking, lam=1.0, weighting="uniform")
    torch.testing.assert_close(inputs[0], (EMBEDS[1] + EMBEDS[2]) / 2)
    torch.testing.assert_close(weights, (1 - torch.eye(3)) / 2)


def test_low_temperature_concentrates_on_most_similar_peer():
    inputs, weights = blend(PROBS, EMBEDS, torch.ones(3, dtype=torch.bool), temperature=0.01)
    assert weights[0].argmax() == 1 and weights[0, 1] > 0.99  # rollout 1 is closest to rollout 0


def test_blend_is_detached():
    probs = PROBS.clone().requires_grad_(True)
    embeds = EMBEDS.clone().requires_grad_(True)
    inputs, weights = blend(probs, embeds, torch.ones(3, dtype=torch.bool))
    assert not inputs.requires_grad and not weights.requires_grad


def test_peaked_distributions_no_nan():
    probs = torch.zeros(4, 50)
    probs[torch.arange(4), torch.tensor([0, 0, 3, 7])] = 1.0  # one-hot (greedy-like)
    inputs, weights = blend(probs, torch.randn(4, 6), torch.ones(4, dtype=torch.bool), temperature=0.1)
    assert not inputs.isnan().any() and not weights.isnan().any()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))


def test_batched_equals_per_group_loop():
    torch.manual_seed(1)
    b, n, v, d = 3, 4, 13, 6
    probs = torch.softmax(torch.randn(b * n, v), -1)
    embeds = torch.randn(b * n, d)
    thinking = torch.rand(b * n) > 0.3
    thinking[4:8] = torch.tensor([True, False, False, False])  # one group with a lone thinker
    for weighting in ("similarity", "uniform"):
        inputs, weights = blend_groups(probs, embeds, thinking, n, lam=0.2, weighting=weighting)
        assert inputs.shape == (b * n, d) and weights.shape == (b, n, n)
        for k in range(b):
            rows = slice(k * n, (k + 1) * n)
            x, w = blend(probs[rows], embeds[rows], thinking[rows], lam=0.2, weighting=weighting)
            torch.testing.assert_close(inputs[rows], x)
            torch.testing.assert_close(weights[k], w)
    hook = make_hook(n, lam=0.2)
    torch.testing.assert_close(hook(0, probs, embeds, thinking),
                               blend_groups(probs, embeds, thinking, n, lam=0.2)[0])


def test_bfloat16_embeds_keep_dtype():
    inputs, _ = blend(PROBS, EMBEDS.bfloat16(), torch.tensor([True, True, False]))
    assert inputs.dtype == torch.bfloat16 and torch.equal(inputs[2], EMBEDS[2].bfloat16())
