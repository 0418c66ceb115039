"""The RL variants' math on hand-made tensors: SPO, SEED-GRPO, GRPO-lambda, hints (Guide / SEELE),
the entropy bonus, GSPO's sequence-level ratio, CISPO, uneven groups and the std filter."""

import math

import pytest
import torch

from crosspath.train.grpo import (filter_groups, group_advantages, group_mean_std, importance_ratio, policy_loss,
                                  token_logprobs)
from crosspath.train.hints import (arithmetic_steps, behaviour_logprobs, hint_count, hint_steps, hinted_question,
                                   seele_rate, solution_steps)
from crosspath.train.shaping import (answer_clusters, kimi_length_reward, length_penalty_groups,
                                     length_shaped_rewards, seed_scale, semantic_entropy)
from crosspath.train.spo import (ValueTracker, forgetting_factor, policy_divergence, spo_advantages, tracker_init,
                                 tracker_update)

# --- uneven groups, the std filter -----------------------------------------------------------------


def test_group_ids_give_the_same_advantages_and_allow_uneven_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    for scale in ("group", "batch", "none"):
        torch.testing.assert_close(group_advantages(rewards, ids, scale), group_advantages(rewards, 2, scale))
    # question 0 has 2 rows, question 1 has 4 (2 + 2 hinted), rows in any order
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    ids = torch.tensor([0, 1, 0, 1, 1, 1])
    mean, std = group_mean_std(rewards, ids)
    assert mean.tolist() == [0.0, 0.5, 0.0, 0.5, 0.5, 0.5]
    s1 = math.sqrt(4 * 0.25 / 3)  # unbiased std of [0, 0, 1, 1]
    torch.testing.assert_close(std, torch.tensor([0.0, s1, 0.0, s1, s1, s1]))
    adv = group_advantages(rewards, ids)
    std = torch.tensor([0, s1, 0, s1, s1, s1])
    torch.testing.assert_close(adv, torch.tensor([0.0, -0.5, 0.0, -0.5, 0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(group_advantages(torch.tensor([3.0]), torch.tensor([0])), torch.zeros(1))  # group of one


def test_filter_uses_a_std_threshold():
    noisy = torch.tensor([[0.5, 0.5 + 1e-7], [0.2, 0.7], [1.0, 1.0]])
    assert noisy[0, 0] != noisy[0, 1]  # an equality test would keep the first group
    assert filter_groups(noisy).tolist() == [False, True, False]
    assert filter_groups(noisy, std_eps=0.0).tolist() == [True, True, False]
    assert filter_groups(noisy, std_eps=0.4).tolist() == [False, False, False]  # std of [0.2, 0.7] = 0.354
    # uneven groups by id; a group of one never passes
    flat, ids = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 2])
    assert filter_groups(flat, ids).tolist() == [True, False, False]


# --- SPO -------------------------------------------------------------------------------------------


def test_spo_forgetting_factor_and_tracker():
    rho = forgetting_factor(torch.tensor([0.0, 0.006, 0.009, 0.06, 0.5]))  # 2^-D/0.06 within [0.875, 0.96]
    torch.testing.assert_close(rho, torch.tensor([0.96, 2 ** -0.1, 2 ** -0.15, 0.875, 0.875]))
    alpha, beta = tracker_init(torch.tensor([3.0, 0.0, 5.0]), torch.tensor([8.0, 0.0, 8.0]))
    torch.testing.assert_close(alpha, torch.tensor([8 * 3.5 / 9, 0.5, 8 * 5.5 / 9]))
    torch.testing.assert_close(beta, torch.tensor([8 * 5.5 / 9, 0.5, 8 * 3.5 / 9]))
    # one observation = an EMA step with eta = 1 / (rho N_eff + 1)
    a, b, r, rho = torch.tensor([2.0]), torch.tensor([6.0]), torch.tensor([1.0]), torch.tensor([0.9])
    a2, b2 = tracker_update(a, b, r, torch.tensor([1.0]), rho)
    v, eta = a / (a + b), 1 / (rho * (a + b) + 1)
    torch.testing.assert_close(a2 / (a2 + b2), v + eta * (r - v))
    # G observations at once: alpha gains the successes, beta the failures
    a3, b3 = tracker_update(a, b, torch.tensor([2.0]), torch.tensor([3.0]), torch.tensor([0.5]))
    assert (a3.item(), b3.item()) == (3.0, 4.0)


def test_spo_advantages_are_batch_normalised_and_groups_of_one_work():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])  # four questions, one completion each (G = 1)
    baseline = torch.tensor([0.8, 0.1, 0.6, 0.2])
    adv = spo_advantages(rewards, baseline)
    a = rewards - baseline  # [0.2, -0.1, -0.6, 0.8]
    torch.testing.assert_close(adv, (a - a.mean()) / (a.std() + 1e-8))
    assert adv.mean().abs() < 1e-6 and adv.std().item() == pytest.approx(1.0, abs=1e-5)
    assert adv[3] > adv[0] > 0 > adv[1] > adv[2]  # a surprise success beats an expected one
    assert torch.equal(spo_advantages(torch.tensor([1.0]), torch.tensor([0.3])), torch.zeros(1))
    # the global batch's statistics when the batch spans processes
    torch.testing.assert_close(spo_advantages(rewards[:2], baseline[:2], batch_mean=float(a.mean()),
                                              batch_std=float(a.std())), adv[:2])


def test_spo_divergence_and_tracker_state():
    d = policy_divergence(torch.tensor([[-1.0, -1.0, -5.0]]), torch.tensor([[-1.2, -0.8, 0.0]]),
                          torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(d, torch.tensor([0.2]))
    t = ValueTracker()
    t.init(["a", "b"], [2.0, 0.0], [8, 0])
    assert t.values(["a", "b"]).tolist() == pytest.approx([2.5 / 9, 0.5])
    rho = t.update(["a"], [1.0], [1], torch.tensor([0.06]), step=3, stored=[([5, 6], [-0.1, -0.2])])
    assert rho.tolist() == [0.875]
    assert t.entries["a"]["alpha"] == pytest.approx(0.875 * 8 * 2.5 / 9 + 1)
    assert t.entries["a"]["tokens"] == [5, 6] and t.entries["a"]["step"] == 3
    other = ValueTracker()
    other.init(["a"], [0.0], [0])  # an older visit of "a" on another process
    merged = ValueTracker.merged([other.state_dict(), t.state_dict()])
    assert merged["entries"]["a"]["step"] == 3 and set(merged["entries"]) == {"a", "b"}
    constant = ValueTracker("constant")
    assert constant.rho(torch.tensor([0.0, 9.0])).tolist() == [0.875, 0.875]


# --- SEED-GRPO -------------------------------------------------------------------------------------


def test_semantic_entropy_by_hand():
    # clusters {0, 1} and {2}: masses e^0 + e^0 = 2 and e^log2 = 2 -> p = (1/2, 1/2), SE = log 2
    se = semantic_entropy(torch.tensor([0, 0, 1]), torch.tensor([0.0, 0.0, math.log(2)]))
    assert se.item() == pytest.approx(math.log(2))
    # masses 3 : 1 -> SE = -(3/4 log 3/4 + 1/4 log 1/4)
    se = semantic_entropy(torch.tensor([0, 0, 0, 1]), torch.zeros(4))
    assert se.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert semantic_entropy(torch.tensor([0, 1, 2, 3]), torch.zeros(4)).item() == pytest.approx(math.log(4))  # max
    assert semantic_entropy(torch.tensor([0, 0]), torch.tensor([-3.0, -1.0])).item() == 0.0


def test_answer_clusters_by_equivalence():
    same = lambda a, b: {a, b} <= {"0.5", "1/2"}  # noqa: E731
    assert answer_clusters(["1/2", "3", "0.5", None, "3", None], same) == [0, 1, 0, 2, 1, 3]
    from crosspath.tasks import SameAnswer

    assert answer_clusters(["1/2", "0.5", "2"], SameAnswer()) == [0, 0, 1]  # math-verify decides


def test_seed_scale_functions():
    se = torch.tensor([0.0, math.log(2), math.log(4)])  # G = 4: SE / log G = 0, 1/2, 1
    torch.testing.assert_close(seed_scale(se, 4, alpha=1.0), torch.tensor([1.0, 1 / 1.5, 0.5]))
    torch.testing.assert_close(seed_scale(se, 4, alpha=1.0, scaling="linear"), torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(seed_scale(se, 4, alpha=1.0, scaling="exponential"),
                               torch.exp(-torch.tensor([0.0, 0.5, 1.0])))
    # the code's default: 1 / (1 + 0.0417 SE / log G) stays within [0.96, 1]
    assert seed_scale(torch.tensor([math.log(8)]), 8).item() == pytest.approx(1 / 1.0417)
    assert seed_scale(torch.tensor([0.0]), 1).item() == 1.0  # a group of one
    # scaled advantages keep their sign and order inside a group: only the question's weight changes
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), 3, scale="none")
    scaled = adv * seed_scale(torch.tensor([0.0, math.log(3)]), 3, alpha=1.0).repeat_interleave(3)
    torch.testing.assert_close(scaled[:3], adv[:3])
    torch.testing.assert_close(scaled[3:], adv[3:] * 0.5)


# --- GRPO-lambda -----------------------------------------------------------------------------------


def test_kimi_length_reward():
    lengths, correct = torch.tensor([4, 8, 12, 6]), torch.tensor([True, True, True, False])
    torch.testing.assert_close(kimi_length_reward(lengths, correct), torch.tensor([0.5, 0.0, -0.5, 0.0]))
    assert torch.equal(kimi_length_reward(torch.tensor([5, 5]), torch.tensor([True, False])), torch.zeros(2))


def test_length_penalty_only_in_mostly_right_groups():
    ratio = torch.tensor([0.5, 1.0, 0.0, 0.75, 0.25])
    assert length_penalty_groups(ratio, top_frac=0.4).tolist() == [False, True, False, True, False]
    assert length_penalty_groups(ratio, top_frac=1.0).tolist() == [True, True, False, True, True]  # never ratio 0
    assert length_penalty_groups(ratio, top_frac=1.0, min_ratio=0.5).tolist() == [False, True, False, True, False]
    assert length_penalty_groups(torch.tensor([0.5, 0.5, 0.5]), top_frac=0.5).tolist() == [True, True, False]  # ties
    # group 0 is mostly right: shorter correct answers earn more; group 1 keeps 0/1 rewards
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    lengths = torch.tensor([10, 30, 20, 10, 40, 25])
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    shaped = length_shaped_rewards(rewards, rewards.bool(), lengths, ids, torch.tensor([True, False]))
    torch.testing.assert_close(shaped, torch.tensor([1.5, 0.5, 0.0, 1.0, 0.0, 0.0]))
    adv = group_advantages(shaped, ids)
    assert adv[0] > adv[1] > adv[2]


# --- hints (Guide / SEELE) -------------------------------------------------------------------------


def test_arithmetic_steps_follow_precedence_and_never_eval():
    assert arithmetic_steps("0 - 4 - 8") == ["0 - 4 = -4, leaving -4 - 8", "-4 - 8 = -12"]
    assert arithmetic_steps("6 - 2 * 3 + 8 / 4") == [
        "2 * 3 = 6, leaving 6 - 6 + 8 / 4", "6 - 6 = 0, leaving 0 + 8 / 4", "8 / 4 = 2, leaving 0 + 2", "0 + 2 = 2"]
    assert arithmetic_steps("7 / 2 =")[-1] == "7 / 2 = 7/2"
    assert arithmetic_steps("2 - (3 - 4)") == ["3 - 4 = -1, leaving 2 - -1", "2 - -1 = 3"]
    for bad in ("__import__('os').system('true')", "2 ** 100", "1 / 0", "x + 1", ""):
        assert arithmetic_steps(bad) == []


def test_hint_steps_of_the_tasks():
    from crosspath.tasks import Problem, load_task

    chain = load_task("rg:chain_sum", limit=3, seed=0, min_terms=3, max_terms=3, min_digits=1, max_digits=1)
    for p in chain:
        steps = hint_steps(p)
        assert len(steps) == 1 and p.answer not in steps[0].split("leaving")[1]  # the answer is never shown
    basic = load_task("rg:basic_arithmetic", limit=5, seed=0)
    expr = basic[1].meta["rg"]["entry"]["metadata"]["expression"]
    assert arithmetic_steps(expr)[-1].endswith(f"= {basic[1].answer}")  # our evaluation reaches the gold
    gsm = Problem("g", "q", "72", meta={"solution": "A = <<1+1=2>>2.\nB = <<2*36=72>>72.\n#### 72"})
    assert hint_steps(gsm) == ["A = 2."] and solution_steps(gsm.meta["solution"]) == ["A = 2.", "B = 72."]
    assert hint_steps(Problem("d", "What is 8 + 3?", "11")) == []  # nothing to show
    countdown = load_task("rg:countdown", limit=1, seed=0)[0]  # its "expression" is the answer itself
    assert hint_steps(countdown) == []


def test_hint_length_and_text():
    assert [hint_count(f, 4) for f in (0.0, 0.25, 0.5, 1.0)] == [1, 1, 2, 4]
    assert hint_count(0.5, 0) == 0
    text = hinted_question("Q?", ["s1", "s2"])
    assert text.startswith("Q?\n\n") and text.endswith("s1\ns2")


def test_seele_rate_moves_towards_the_target_accuracy():
    empty = torch.tensor([])
    assert seele_rate(empty, empty, empty) == 0.5  # the prior's centre
    # solved 8/8 at h = 0.25: a shorter hint suffices; failed 0/8 at h = 0.5: a longer one is needed
    easy = seele_rate(torch.tensor([0.25]), torch.tensor([8.0]), torch.tensor([8.0]))
    hard = seele_rate(torch.tensor([0.5]), torch.tensor([8.0]), torch.tensor([0.0]))
    assert easy < 0.25 and hard > 0.5
    # 4/8 right at h = 0.4 is the target: stay near 0.4; a higher target asks for more hint
    mid = seele_rate(torch.tensor([0.4, 0.4]), torch.tensor([8.0, 8.0]), torch.tensor([4.0, 4.0]))
    assert abs(mid - 0.4) < 0.05
    assert seele_rate(torch.tensor([0.4]), torch.tensor([8.0]), torch.tensor([4.0]), target=0.8) > mid


def test_guide_importance_correction():
    """Hinted rows: ratio = pi(o | q) / pi_old(o | q, hint), clipped as PPO; plain rows: ratio 1."""
    logp = torch.log(torch.tensor([[0.1, 0.5], [0.4, 0.4]])).requires_grad_(True)  # without the hint
    sampled = torch.log(torch.tensor([[0.5, 0.25], [0.9, 0.9]]))  # with the hint, as sampled
    hinted = torch.tensor([True, False])
    old = behaviour_logprobs(logp.detach(), sampled, hinted)
    assert torch.equal(old[0], sampled[0]) and torch.equal(old[1], logp.detach()[1])
    adv, mask = torch.tensor([1.0, 1.0]), torch.ones(2, 2)
    loss, stats = policy_loss(logp, old, None, adv, mask, "dapo", epsilon=0.2)
    # row 0: ratios 0.2 (below 1 - eps: not clipped, weight 0.2) and 2.0 (clipped to 1.2: no gradient)
    assert loss.item() == pytest.approx(-(0.2 + 1.2 + 1.0 + 1.0) / 4)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.2 / 4, 0.0], [-0.25, -0.25]]))
    assert stats["clip_frac"] == pytest.approx(0.25)


# --- entropy bonus, GSPO, CISPO --------------------------------------------------------------------


def test_token_entropy_and_bonus():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    logp, ent = token_logprobs(logits, targets, temperature=0.7, with_entropy=True)
    expected = torch.distributions.Categorical(logits=logits / 0.7).entropy()
    torch.testing.assert_close(ent, expected)
    torch.testing.assert_close(logp, token_logprobs(logits, targets, temperature=0.7))
    # the bonus subtracts coef * mean entropy from the loss, and its gradient raises the entropy
    x = logits.clone().requires_grad_(True)
    lp, h = token_logprobs(x, targets, with_entropy=True)
    mask = torch.ones(2, 3)
    base, _ = policy_loss(lp, None, None, torch.zeros(2), mask, "dapo")
    loss, stats = policy_loss(lp, None, None, torch.zeros(2), mask, "dapo", entropy=h, entropy_coef=0.1)
    assert loss.item() == pytest.approx(base.item() - 0.1 * h.mean().item(), abs=1e-6)
    assert stats["entropy"] == pytest.approx(h.mean().item())
    loss.backward()
    stepped = token_logprobs(x.detach() - 1.0 * x.grad, targets, with_entropy=True)[1]
    assert stepped.mean() > h.mean()


LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])
ADV = torch.tensor([2.0, -1.0])


def test_sequence_ratio_matches_trl_definition():
    old = LOGP - torch.tensor([[0.3, 0.0, -0.3], [0.1, 5.0, 5.0]])  # masked tokens' ratios must not count
    w = importance_ratio(LOGP, old, MASK.float(), "sequence")
    torch.testing.assert_close(w[0], torch.full((3,), math.exp(0.0)))
    torch.testing.assert_close(w[1], torch.full((3,), math.exp(0.1)))
    torch.testing.assert_close(importance_ratio(LOGP, old, MASK.float(), "token"), torch.exp(LOGP - old))
    with pytest.raises(ValueError):
        importance_ratio(LOGP, old, MASK.float(), "word")


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_sequence_level_equals_token_level_on_policy(loss_type):
    grads = {}
    for level in ("token", "sequence"):
        x = LOGP.clone().requires_grad_(True)
        loss, _ = policy_loss(x, None, None, ADV, MASK, loss_type, importance_level=level)
        loss.backward()
        grads[level] = (loss.item(), x.grad)
    assert grads["token"][0] == pytest.approx(grads["sequence"][0])
    torch.testing.assert_close(grads["token"][1], grads["sequence"][1])


def test_sequence_level_clips_whole_sequences():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-0.5, 0.1], [0.0, 0.0]])  # row 0: w = exp(mean(0.5, -0.1)) = exp(0.2) = 1.2214
    loss, stats = policy_loss(x, old, None, torch.tensor([1.0, 1.0]), torch.ones(2, 2), "grpo", epsilon=0.2,
                              importance_level="sequence")
    assert loss.item() == pytest.approx(-(1.2 + 1.0) / 2)  # row 0 clipped at 1 + eps as a whole
    assert stats["clip_frac"] == pytest.approx(0.5)
    loss.backward()
    assert torch.equal(x.grad[0], torch.zeros(2))  # no gradient to any of its tokens
    torch.testing.assert_close(x.grad[1], torch.full((2,), -0.25))  # -A * w / |y| / B


def test_cispo_loss_value_and_gradient():
    old = LOGP.detach() - torch.tensor([[0.0, 2.0, -0.5], [0.0, 0.0, 0.0]])  # ratios e^0, e^2, e^-0.5
    x = LOGP.clone().requires_grad_(True)
    loss, stats = policy_loss(x, old, None, ADV, MASK, "cispo", epsilon_high=5.0)
    r = torch.exp(LOGP - old).clamp(max=5.0)
    expected = -(r * ADV[:, None] * LOGP * MASK).sum() / MASK.sum()
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    # d loss / d logp_t = -min(r_t, eps_high) * A / n_tokens: the ratio is a detached weight, never a cut
    torch.testing.assert_close(x.grad, -(r * ADV[:, None] * MASK) / MASK.sum())
    assert stats["clip_frac"] == pytest.approx(1 / 4)  # e^2 = 7.39 > 5 with A > 0
    # no eps given: 5.0 (TRL's recommended value; TRL itself would fall back to epsilon = 0.2)
    default, _ = policy_loss(LOGP, old, None, ADV, MASK, "cispo")
    assert default.item() == pytest.approx(loss.item())
    # on-policy the gradient is that of dapo
    x1, x2 = LOGP.clone().requires_grad_(True), LOGP.clone().requires_grad_(True)
    policy_loss(x1, None, None, ADV, MASK, "cispo")[0].backward()
    policy_loss(x2, None, None, ADV, MASK, "dapo")[0].backward()
    torch.testing.assert_close(x1.grad, x2.grad)
