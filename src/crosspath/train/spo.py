"""SPO — Single-stream Policy Optimization (arXiv 2509.13232): a persistent value tracker per
question is the baseline, instead of the mean of a group.

    v(x)    = alpha(x) / (alpha(x) + beta(x))               tracked success probability of question x
    A_i     = r_i - v(x_i)                                  v as it was BEFORE this step's rewards
    A~_i    = (A_i - mean_batch(A)) / (std_batch(A) + 1e-8) over every completion of the step
    D(x)    = mean_t |log pi_then(y_t) - log pi_now(y_t)|   on the response stored at x's last visit
    rho(x)  = clamp(2^(-D(x) / D_half), rho_min, rho_max)   D_half 0.06, rho in [0.875, 0.96]
    alpha  <- rho alpha + sum_i r_i ;  beta <- rho beta + sum_i (1 - r_i)   (the G completions of x)

A question's first visit initialises its tracker from n0 = spo_init_samples extra samples with s
correct (the reference code's offline estimate, taken here at the first visit):
alpha = N0 (s + 0.5) / (n0 + 1), beta = N0 (n0 - s + 0.5) / (n0 + 1), N0 = 1 / (1 - rho_min) = 8;
with n0 = 0, alpha = beta = 0.5. The group size may be 1: no group statistic is used.

Sources (REFERENCE.md Part II §3): the tracker, the advantage and the defaults are those of the
verl-recipe code; D is its token-mean |log-ratio| proxy for the KL between the policy that last saw x
and the current one. Here D is measured at the next visit (before that step's update), which is the
same pair of policies the code compares right after the update. The code's prioritised prompt
sampling (weights sqrt(v(1 - v)) + 0.05) is not implemented: questions keep the trainer's order.
"""

from __future__ import annotations

import torch

D_HALF = 0.06  # divergence at which the memory halves (hard-coded in the reference code)
RHO_MIN, RHO_MAX = 0.875, 0.96  # clamp of the forgetting factor; "constant" rho uses RHO_MIN
from crosspath.train import RHO_TYPES  # noqa: E402,F401  (the choices live with TrainConfig)


def forgetting_factor(divergence: torch.Tensor, d_half: float = D_HALF, rho_min: float = RHO_MIN,
                      rho_max: float = RHO_MAX) -> torch.Tensor:
    """rho = clamp(2^(-D / d_half), rho_min, rho_max). divergence: [Q] -> [Q].

    A question the policy has not moved on (D = 0) keeps most of its history (rho_max = 0.96); a
    large shift forgets faster, down to rho_min (N_eff = 1 / (1 - 0.875) = 8 observations).

    Example:
        >>> forgetting_factor(torch.tensor([0.0, 0.006, 0.06, 1.0]))
        tensor([0.9600, 0.9330, 0.8750, 0.8750])

    (2^-0.1 = 0.933; 2^-1 = 0.5 and 2^-16.7 are clamped up to 0.875.)
    """
    return torch.clamp(torch.pow(2.0, -divergence / d_half), rho_min, rho_max)  # [Q]


def tracker_init(successes: torch.Tensor, trials: torch.Tensor, rho_min: float = RHO_MIN
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha0, beta0) from n0 = trials first samples with s = successes: N0 (s + 0.5) / (n0 + 1),
    N0 (n0 - s + 0.5) / (n0 + 1), N0 = 1 / (1 - rho_min); (0.5, 0.5) when n0 = 0. [Q] -> [Q], [Q].

    Example:
        >>> tracker_init(torch.tensor([2.0, 0.0]), torch.tensor([8.0, 0.0]))
        (tensor([2.2222, 0.5000]), tensor([5.7778, 0.5000]))

    (N0 = 8: 8 * 2.5 / 9 and 8 * 6.5 / 9; the prior mean 2.5 / 9 = 0.28 is close to 2 / 8.)
    """
    n0 = 1.0 / (1.0 - rho_min)
    alpha = n0 * (successes + 0.5) / (trials + 1)  # [Q]
    beta = n0 * (trials - successes + 0.5) / (trials + 1)  # [Q]
    none = trials == 0  # [Q]
    return torch.where(none, 0.5, alpha), torch.where(none, 0.5, beta)  # [Q], [Q]


def tracker_update(alpha: torch.Tensor, beta: torch.Tensor, successes: torch.Tensor, trials: torch.Tensor,
                   rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted Beta-Bernoulli update: alpha' = rho alpha + s, beta' = rho beta + (n - s). All [Q].

    Equivalent to an EMA of the success rate v <- v + eta (r - v) with eta = 1 / (rho N_eff + 1),
    N_eff = alpha + beta (for one observation).

    Example:
        >>> tracker_update(torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([1.0]),
        ...                torch.tensor([1.0]), torch.tensor([0.5]))
        (tensor([1.5000]), tensor([1.5000]))

    (v: 0.25 -> 0.5 = 0.25 + (1 - 0.25) / (0.5 * 4 + 1).)
    """
    return rho * alpha + successes, rho * beta + (trials - successes)  # [Q], [Q]


def spo_advantages(rewards: torch.Tensor, baseline: torch.Tensor, eps: float = 1e-8,
                   batch_mean: float | None = None, batch_std: float | None = None) -> torch.Tensor:
    """A~ = ((r - v) - mean(r - v)) / (std(r - v) + eps), normalised over the whole batch.

    rewards, baseline: [N] (baseline = the tracker value of each row's question, before this
    step). std is torch's unbiased one (as the reference code); a batch of one has A~ = 0.
    batch_mean / batch_std: the statistics of the global batch when it spans several processes.

    Example:
        >>> spo_advantages(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.5, 0.5, 0.9]))
        tensor([ 0.9272, -1.0596,  0.1325])

    (A = [0.5, -0.5, 0.1], mean 0.0333, unbiased std 0.5033.)
    """
    a = rewards.float() - baseline.float()  # [N]
    mean = a.mean() if batch_mean is None else torch.tensor(batch_mean)  # []
    if batch_std is None:
        batch_std = float(a.std()) if a.numel() > 1 else 0.0
    if a.numel() == 1 and batch_mean is None:
        return torch.zeros_like(a)  # [1]
    return (a - mean) / (batch_std + eps)  # [N]


def policy_divergence(logp_then: torch.Tensor, logp_now: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """D = masked token mean of |logp_then - logp_now|, per response. All [Q, T] -> [Q].

    Example:
        >>> policy_divergence(torch.tensor([[-1.0, -2.0, 0.0]]), torch.tensor([[-1.1, -1.8, -9.0]]),
        ...                   torch.tensor([[1, 1, 0]]))
        tensor([0.1500])
    """
    m = mask.float()  # [Q, T]
    return ((logp_then - logp_now).abs() * m).sum(1) / m.sum(1).clamp(min=1.0)  # [Q]


class ValueTracker:
    """The per-question trackers of a run: id -> {alpha, beta, step, tokens, logps}.

    tokens / logps: one completion of the question's last visit and its log-probs (temperature 1)
    under the policy that sampled it, for the next visit's D. The whole state goes into the
    checkpoint (`state_dict`), so a resumed run continues with the same baselines.
    """

    def __init__(self, rho_type: str = "kl", d_half: float = D_HALF, rho_min: float = RHO_MIN,
                 rho_max: float = RHO_MAX):
        if rho_type not in RHO_TYPES:
            raise ValueError(f"rho type must be one of {RHO_TYPES}, got {rho_type!r}")
        self.rho_type, self.d_half, self.rho_min, self.rho_max = rho_type, d_half, rho_min, rho_max
        self.entries: dict[str, dict] = {}

    def __contains__(self, qid: str) -> bool:
        return qid in self.entries

    def values(self, ids: list[str]) -> torch.Tensor:
        """[Q] tracked success probability alpha / (alpha + beta) of each question."""
        return torch.tensor([self.entries[i]["alpha"] / (self.entries[i]["alpha"] + self.entries[i]["beta"])
                             for i in ids])

    def init(self, ids: list[str], successes: list[float], trials: list[int]) -> None:
        alpha, beta = tracker_init(torch.tensor(successes, dtype=torch.float64),
                                   torch.tensor(trials, dtype=torch.float64), self.rho_min)
        for i, a, b in zip(ids, alpha.tolist(), beta.tolist()):
            self.entries[i] = {"alpha": a, "beta": b, "step": 0, "tokens": [], "logps": []}

    def rho(self, divergence: torch.Tensor) -> torch.Tensor:
        if self.rho_type == "constant":
            return torch.full_like(divergence, self.rho_min)
        return forgetting_factor(divergence, self.d_half, self.rho_min, self.rho_max)

    def update(self, ids: list[str], successes: list[float], trials: list[int], divergence: torch.Tensor,
               step: int, stored: list[tuple[list[int], list[float]]]) -> torch.Tensor:
        """Discount by rho(D) and add this step's observations; store each question's new response.
        Returns rho, [Q]."""
        rho = self.rho(divergence.double())  # [Q]
        alpha = torch.tensor([self.entries[i]["alpha"] for i in ids], dtype=torch.float64)
        beta = torch.tensor([self.entries[i]["beta"] for i in ids], dtype=torch.float64)
        alpha, beta = tracker_update(alpha, beta, torch.tensor(successes, dtype=torch.float64),
                                     torch.tensor(trials, dtype=torch.float64), rho)
        for i, a, b, (tokens, logps) in zip(ids, alpha.tolist(), beta.tolist(), stored):
            self.entries[i] = {"alpha": a, "beta": b, "step": step, "tokens": tokens, "logps": logps}
        return rho

    def state_dict(self) -> dict:
        return {"entries": self.entries}

    def load_state_dict(self, state: dict) -> None:
        self.entries = dict(state.get("entries", {}))

    @staticmethod
    def merged(states: list[dict]) -> dict:
        """One state from every process's: per question, the entry of its latest visit."""
        out: dict[str, dict] = {}
        for state in states:
            for qid, entry in state.get("entries", {}).items():
                if qid not in out or entry["step"] > out[qid]["step"]:
                    out[qid] = entry
        return {"entries": out}
