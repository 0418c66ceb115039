"""Hints for hopeless groups (Guide, arXiv 2506.13923; SEELE, arXiv 2509.06923).

When every completion of a question is wrong, its group carries no gradient. The question is then
sampled again, G more completions, with a hint in the prompt: the first steps of a reference
solution. The hinted completions join the question's group (so the failures become the negatives
of the hinted successes) and are trained as if the prompt had no hint, with Guide's importance
correction (REFERENCE.md Part II §6):

    ratio_t = pi_theta(o_t | q, o_<t) / pi_old(o_t | q, h, o_<t)    numerator without the hint (the
                                                                    loss forward reads the plain
                                                                    prompt), denominator = the
                                                                    sampling policy with it
    obj_t   = min(ratio_t A, clip(ratio_t, 1 - eps, 1 + eps_high) A)  PPO clip (eps 0.2 when --epsilon
                                                                    is unset; unhinted rows have
                                                                    ratio 1 and are unaffected)

Where the hint comes from (`hint_steps`): a worked solution in the problem (GSM8K: its lines
without the <<...>> calculator notes; MATH: its sentences up to the \\boxed one), or, for the
reasoning-gym arithmetic tasks (chain_sum, basic_arithmetic, products), the expression's own
evaluation, one operation per step, computed from the expression (`arithmetic_steps`). A hint never contains the
last step, which states the answer: a question whose solution is one step long gets no hint.

How long (`hint_count`): Guide-style, a fixed share of the available steps (--hint-fraction 0.5,
at least one); SEELE-style (--hints seele), the share that the question's accuracy-vs-hint curve
says gives the target accuracy (0.5, where the loss-descent bound a(1 - a) peaks):

    a(h)  = sigmoid(k (h - b))            k = SEELE_SLOPE fixed; b fitted per question by MAP
    b^    = argmax_b sum_obs [s log a(h) + (n - s) log(1 - a(h))] - (b - 0.5)^2 / (2 0.5^2)
    h*    = clamp(b^ + logit(target) / k, 0, 1)

SEELE fits a 3-parameter logistic (IRT) curve per instance over several rollout rounds per step;
with the few observations one question has here, only its location b is fitted (slope and floor
fixed: an assumption of this implementation), from every observation of the question so far (the
unhinted ones at h = 0, the hinted rounds at their h; kept across steps and in the checkpoint).
Guide writes its hints with a stronger model; here they are solution prefixes, as SEELE's.
"""

from __future__ import annotations

import ast
import math
import re
from fractions import Fraction

import torch

from crosspath.train import HINT_MODES  # noqa: E402,F401  (the choices live with TrainConfig)
HINT_EPSILON = 0.2  # PPO clip of the hinted rows when --epsilon is unset (Guide keeps PPO's clip)
SEELE_SLOPE = 8.0  # k of a(h) = sigmoid(k (h - b)): accuracy goes 0.12 -> 0.88 over a quarter of the hint
MEMORY = 32  # observations kept per question
RG_ARITHMETIC = ("chain_sum", "basic_arithmetic", "products")  # rg tasks whose answer is the expression's value

_OPS = {ast.Add: ("+", 1), ast.Sub: ("-", 1), ast.Mult: ("*", 2), ast.Div: ("/", 2)}


def _num(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _fold(node: ast.AST) -> ast.AST | Fraction:
    """The expression tree with numbers as Fractions and signs of numbers folded in."""
    if isinstance(node, ast.Expression):
        return _fold(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _fold(node.operand)
        if isinstance(inner, Fraction):
            return -inner if isinstance(node.op, ast.USub) else inner
        return ("neg", inner) if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return (type(node.op), _fold(node.left), _fold(node.right))
    raise ValueError(f"not plain arithmetic: {ast.dump(node)[:60]}")


def _render(node, parent: int = 0, right: bool = False) -> str:
    if isinstance(node, Fraction):
        return _num(node)
    if node[0] == "neg":
        return f"-({_render(node[1])})"
    symbol, prec = _OPS[node[0]]
    text = f"{_render(node[1], prec)} {symbol} {_render(node[2], prec, True)}"
    return f"({text})" if prec < parent or (right and prec == parent) else text


def _reduce_one(node):
    """(tree with its first ready operation evaluated, 'a op b = v') or (node, None) if done."""
    if isinstance(node, Fraction):
        return node, None
    if node[0] == "neg":
        inner, step = _reduce_one(node[1])
        return (-inner if isinstance(inner, Fraction) else ("neg", inner)), step
    op, left, right = node
    if isinstance(left, Fraction) and isinstance(right, Fraction):
        if op is ast.Div and right == 0:
            raise ZeroDivisionError
        value = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right,
                 ast.Div: left / right if op is ast.Div else None}[op]
        return value, f"{_render(node)} = {_num(value)}"
    if not isinstance(left, Fraction):
        left, step = _reduce_one(left)
    else:
        right, step = _reduce_one(right)
    return (op, left, right), step


def arithmetic_steps(expression: str) -> list[str]:
    """The evaluation of a + - * / expression, one operation per step, in Python's order
    (precedence, then left to right). Each step but the last says what is left. [] if the text is
    not plain arithmetic.

    Example:
        >>> arithmetic_steps("0 - 4 - 8")
        ['0 - 4 = -4, leaving -4 - 8', '-4 - 8 = -12']
        >>> arithmetic_steps("3 + 2 * -( 4 - 1 )")
        ['4 - 1 = 3, leaving 3 + 2 * -3', '2 * -3 = -6, leaving 3 + -6', '3 + -6 = -3']
    """
    try:
        node = _fold(ast.parse(expression.strip().rstrip("=").strip(), mode="eval"))
        steps = []
        while not isinstance(node, Fraction):
            node, step = _reduce_one(node)
            steps.append(step if isinstance(node, Fraction) else f"{step}, leaving {_render(node)}")
        return steps
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return []


def solution_steps(solution: str) -> list[str]:
    """A worked solution cut into steps: GSM8K's lines before `#### answer` (calculator notes
    <<...>> dropped), else sentences up to and including the first one with \\boxed{}.

    Example:
        >>> solution_steps("She sold 48/2 = <<48/2=24>>24 in May.\\nSo 48+24 = <<48+24=72>>72.\\n#### 72")
        ['She sold 48/2 = 24 in May.', 'So 48+24 = 72.']
        >>> solution_steps("We have $x=2$. Then $y=3$. So $x+y=\\\\boxed{5}$. Done.")
        ['We have $x=2$.', 'Then $y=3$.', 'So $x+y=\\\\boxed{5}$.']
    """
    if "####" in solution:
        lines = solution.split("####")[0].splitlines()
        return [re.sub(r"<<[^>]*>>", "", ln).strip() for ln in lines if ln.strip()]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z$\\])", solution.strip()) if s.strip()]
    boxed = next((i for i, s in enumerate(sentences) if "\\boxed" in s), len(sentences) - 1)
    return sentences[: boxed + 1]


def hint_steps(problem) -> list[str]:
    """The steps a hint may show for a problem (all of its solution but the last step); [] if none.

    Example:
        >>> from crosspath.tasks import Problem
        >>> hint_steps(Problem("p", "Calculate 5 - 3 - 6.", "-4", meta={"rg": {"name": "basic_arithmetic",
        ...     "entry": {"metadata": {"expression": "5 - 3 - 6"}}}}))
        ['5 - 3 = 2, leaving 2 - 6']
    """
    meta = problem.meta or {}
    rg = meta.get("rg") or {}
    expression = ((rg.get("entry") or {}).get("metadata") or {}).get("expression")
    if rg.get("name") in RG_ARITHMETIC and isinstance(expression, str):  # (countdown's expression IS its answer)
        steps = arithmetic_steps(expression)
    elif isinstance(meta.get("solution"), str):
        steps = solution_steps(meta["solution"])
    else:
        steps = []
    return steps[:-1]


def hint_count(fraction: float, available: int) -> int:
    """Steps to show for a share `fraction` of `available` steps: round, at least 1 (0 if none).

    Example: hint_count(0.5, 3) -> 2, hint_count(0.0, 3) -> 1, hint_count(0.9, 0) -> 0
    """
    return 0 if available == 0 else min(available, max(1, round(fraction * available + 1e-9)))


def hinted_question(question: str, steps: list[str]) -> str:
    """The question with a hint: the first steps of a solution, which the model is asked to use
    while writing its whole solution (the policy is trained for the question without them).

    Example:
        >>> print(hinted_question("What is 1 + 2 + 3?", ["1 + 2 = 3, leaving 3 + 3"]))
        What is 1 + 2 + 3?
        <BLANKLINE>
        Hint, the first steps of a solution:
        1 + 2 = 3, leaving 3 + 3
    """
    return question + "\n\nHint, the first steps of a solution:\n" + "\n".join(steps)


def seele_rate(rates: torch.Tensor, trials: torch.Tensor, successes: torch.Tensor, target: float = 0.5,
               slope: float = SEELE_SLOPE, prior_mean: float = 0.5, prior_sd: float = 0.5) -> float:
    """SEELE's hint share for one question: fit the location b of a(h) = sigmoid(slope (h - b)) to its
    observations by MAP (grid over [-1, 2]), then solve a(h) = target. rates, trials, successes: [n]
    (n may be 0: the prior alone). Returns h in [0, 1].

    Example:
        >>> seele_rate(torch.tensor([]), torch.tensor([]), torch.tensor([]))          # prior: b = 0.5
        0.5
        >>> round(seele_rate(torch.tensor([0.0, 0.5]), torch.tensor([8., 8.]), torch.tensor([0., 0.])), 3)
        0.945

    (nothing right without a hint nor with half of it: more than half is needed.)
    """
    b = torch.linspace(-1.0, 2.0, 601, dtype=torch.float64)  # [K]
    h = rates.double().reshape(1, -1)  # [1, n]
    p = torch.sigmoid(slope * (h - b[:, None])).clamp(1e-9, 1 - 1e-9)  # [K, n]
    s, n = successes.double().reshape(1, -1), trials.double().reshape(1, -1)  # [1, n]
    log_post = (s * p.log() + (n - s) * (1 - p).log()).sum(1) - 0.5 * ((b - prior_mean) / prior_sd) ** 2  # [K]
    b_hat = float(b[int(log_post.argmax())])
    return min(1.0, max(0.0, round(b_hat + math.log(target / (1 - target)) / slope, 6)))


def behaviour_logprobs(on_policy: torch.Tensor, sampled: torch.Tensor, hinted: torch.Tensor) -> torch.Tensor:
    """The importance-ratio denominator of each row: the sampling log-probs (with the hint) for
    hinted rows, the on-policy (or first-pass) log-probs for the rest.

    on_policy, sampled: [B, T]; hinted: [B] bool. Returns [B, T].

    Example: on_policy [[-1, -1]], sampled [[-3, -2]], hinted [True] -> [[-3, -2]]
    """
    return torch.where(hinted.to(on_policy.device)[:, None], sampled.to(on_policy.dtype), on_policy)  # [B, T]


class HintMemory:
    """SEELE's observations per question: id -> [[hint share, trials, successes], ...] (newest last,
    at most MEMORY). Saved in the checkpoint."""

    def __init__(self):
        self.obs: dict[str, list[list[float]]] = {}

    def add(self, qid: str, rate: float, trials: int, successes: float) -> None:
        self.obs.setdefault(qid, []).append([float(rate), float(trials), float(successes)])
        del self.obs[qid][:-MEMORY]

    def rate(self, qid: str, target: float = 0.5, extra: list[list[float]] = ()) -> float:
        rows = self.obs.get(qid, []) + list(extra)
        t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)  # [n, 3]
        return seele_rate(t[:, 0], t[:, 1], t[:, 2], target)

    def state_dict(self) -> dict:
        return {"obs": self.obs}

    def load_state_dict(self, state: dict) -> None:
        self.obs = {k: [list(o) for o in v] for k, v in state.get("obs", {}).items()}

    @staticmethod
    def merged(states: list[dict]) -> dict:
        """Every process's observations of a question, in process order (questions rarely meet
        on two processes in one run)."""
        out: dict[str, list] = {}
        for state in states:
            for qid, rows in state.get("obs", {}).items():
                out[qid] = (out.get(qid, []) + rows)[-MEMORY:]
        return {"obs": out}
