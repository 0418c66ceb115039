"""GRPO math on hand-made tensors: advantages, k3 KL, the four loss aggregations, gradients, clipping."""

import pytest
import torch

from crosspath.train.grpo import filter_groups, group_advantages, kl_k3, policy_loss, token_logprobs


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # 2 questions x 4
    adv = group_advantages(rewards, 4)
    std = torch.tensor([1.0, 0.0, 0.0, 0.0]).std()  # unbiased: sqrt(0.75 / 3) = 0.5
    assert std.item() == pytest.approx(0.5)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-4)
    torch.testing.assert_close(adv[:4], expected)
    assert torch.equal(adv[4:], torch.zeros(4))  # all-equal group -> exactly 0
    # [B, G] input gives the same as the flat one
    torch.testing.assert_close(group_advantages(rewards.reshape(2, 4), 4), adv)


def test_group_advantages_batch_and_none_scaling():
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0])  # 2 questions x 2
    centered = torch.tensor([0.5, -0.5, 1.0, -1.0])
    torch.testing.assert_close(group_advantages(rewards, 2, scale="none"), centered)
    torch.testing.assert_close(
        group_advantages(rewards, 2, scale="batch"), centered / (rewards.std() + 1e-4)
    )
    assert torch.equal(group_advantages(torch.tensor([1.0, 2.0]), 1), torch.zeros(2))  # G = 1
    with pytest.raises(ValueError):
        group_advantages(rewards, 2, scale="bogus")


def test_filter_groups():
    rewards = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    assert filter_groups(rewards).tolist() == [True, False, False, True]
    assert filter_groups(rewards.reshape(-1), 3).tolist() == [True, False, False, True]


def test_kl_k3_nonnegative_and_zero_when_equal():
    logp = torch.randn(4, 7) - 2
    ref = torch.randn(4, 7) - 2
    assert (kl_k3(logp, ref) >= 0).all()
    assert torch.equal(kl_k3(logp, logp), torch.zeros(4, 7))
    torch.testing.assert_close(kl_k3(torch.tensor([[0.0]]), torch.tensor([[-1.0]])),
                               torch.tensor([[torch.e ** -1]]))


# Hand-made batch: B = 2, T = 3, on-policy.
LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]])
ADV = torch.tensor([2.0, -1.0])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "loss_type, expected",
    [
        ("grpo", -(2.0 + -1.0) / 2),  # per-seq means 2 and -1, then batch mean
        ("dapo", -(3 * 2.0 - 1.0) / 4),  # 4 active tokens
        ("bnpo", -(3 * 2.0 - 1.0) / 4),
        ("dr_grpo", -(3 * 2.0 - 1.0) / (2 * 3)),  # B * max_completion_length(T)
    ],
)
def test_loss_values_by_hand(loss_type, expected):
    loss, stats = policy_loss(LOGP, None, None, ADV, MASK, loss_type=loss_type)
    assert loss.item() == pytest.approx(expected)
    assert stats["ratio"] == pytest.approx(1.0) and stats["clip_frac"] == 0.0 and stats["kl"] == 0.0


def test_dr_grpo_uses_max_completion_length():
    loss, _ = policy_loss(LOGP, None, None, ADV, MASK, loss_type="dr_grpo", max_completion_length=10)
    assert loss.item() == pytest.approx(-5.0 / 20)


def test_kl_term_value():
    ref = LOGP - 0.5  # ref - logp = -0.5 everywhere -> k3 = e^-0.5 - 0.5
    k3 = torch.exp(torch.tensor(-0.5)).item() - 0.5
    loss, stats = policy_loss(LOGP, None, ref, ADV, MASK, loss_type="grpo", beta=0.1)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2 + 0.1 * k3, rel=1e-5)
    assert stats["kl"] == pytest.approx(k3, rel=1e-5)
    loss0, stats0 = policy_loss(LOGP, None, ref, ADV, MASK, loss_type="grpo", beta=0.0)
    assert loss0.item() == pytest.approx(-0.5) and stats0["kl"] == pytest.approx(k3, rel=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_gradient_sign_follows_advantage(loss_type):
    logp = LOGP.clone().requires_grad_(True)
    loss, _ = policy_loss(logp, None, None, ADV, MASK, loss_type=loss_type)
    loss.backward()
    g = logp.grad
    assert (g[0] < 0).all()  # A > 0: descending the loss raises the chosen tokens' logp
    assert g[1, 0] > 0  # A < 0: lowers it
    assert (g[1, 1:] == 0).all()  # masked tokens get no gradient


def test_kl_gradient_pulls_towards_reference():
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-0.5, -2.0]])
    loss, _ = policy_loss(logp, None, ref, torch.zeros(1), torch.ones(1, 2), beta=1.0)
    loss.backward()
    assert logp.grad[0, 0] < 0 and logp.grad[0, 1] > 0  # up where ref is higher, down where lower


def test_clipping():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 1.1, 0.5, 0.9]])).requires_grad_(True)
    mask = torch.ones(1, 4)
    # A > 0: ratio 1.5 is clipped to 1.2 (no gradient), ratio 1.1 not; small ratios are not clipped
    loss, stats = policy_loss(logp, old, None, torch.tensor([1.0]), mask, "dapo", epsilon=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 1.1 + 0.5 + 0.9) / 4)
    assert stats["clip_frac"] == pytest.approx(0.25)
    assert stats["ratio"] == pytest.approx((1.5 + 1.1 + 0.5 + 0.9) / 4)
    loss.backward()
    assert logp.grad[0, 0] == 0 and (logp.grad[0, 1:] < 0).all()
    # A < 0: ratio 0.5 is clipped to 0.8; epsilon_high widens only the upper side
    logp2 = logp.detach().clone().requires_grad_(True)
    loss, stats = policy_loss(logp2, old, None, torch.tensor([-1.0]), mask, "dapo",
                              epsilon=0.2, epsilon_high=0.28)
    assert loss.item() == pytest.approx((1.5 + 1.1 + 0.8 + 0.9) / 4)
    assert stats["clip_frac"] == pytest.approx(0.25)
    loss.backward()
    assert logp2.grad[0, 2] == 0 and (logp2.grad[0, [0, 1, 3]] > 0).all()


def test_micro_batches_add_up_to_full_batch():
    torch.manual_seed(0)
    b, t = 6, 5
    base = torch.randn(b, t)
    adv = torch.randn(b)
    ref = torch.randn(b, t) - 1
    mask = (torch.rand(b, t) > 0.3).long()
    mask[:, 0] = 1

    def grad_of(loss_type, chunks, **norm):
        x = base.clone().requires_grad_(True)
        total = 0.0
        for rows in chunks:
            loss, _ = policy_loss(x[rows], None, ref[rows], adv[rows], mask[rows],
                                  loss_type=loss_type, beta=0.04, **norm)
            loss.backward()
            total += loss.item()
        return total, x.grad

    halves = [slice(0, 2), slice(2, 6)]
    for loss_type, norm in [("dapo", {"num_items_in_batch": mask.sum()}),
                            ("bnpo", {"num_items_in_batch": mask.sum()}),
                            ("grpo", {"num_sequences": b}),
                            ("dr_grpo", {"num_sequences": b})]:
        full_loss, full_grad = grad_of(loss_type, [slice(0, b)])
        acc_loss, acc_grad = grad_of(loss_type, halves, **norm)
        assert acc_loss == pytest.approx(full_loss, rel=1e-5), loss_type
        torch.testing.assert_close(acc_grad, full_grad)
    # without the global count, dapo micro-batches do not add up (different token counts)
    local_loss, _ = grad_of("dapo", halves)
    assert local_loss != pytest.approx(grad_of("dapo", [slice(0, b)])[0], rel=1e-3)


def test_unknown_loss_type():
    with pytest.raises(ValueError):
        policy_loss(LOGP, None, None, ADV, MASK, loss_type="ppo")


def test_token_logprobs_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 11)
    targets = torch.randint(0, 11, (3, 4))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, targets, temperature=0.7), expected)
    bf16 = token_logprobs(logits.bfloat16(), targets)
    assert bf16.dtype == torch.float32
