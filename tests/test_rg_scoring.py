"""Reasoning-gym scoring: gold answers still score, model answers never run, slow ones time out.

GENERATORS are those the project uses or documents (chain_sum, basic_arithmetic) and every one
whose scorer `eval`s the answer or hands it to sympy.parse_expr (or evals its gold).
"""

import pytest

from crosspath.tasks import grade, judge, load_task
from crosspath.tasks.rg_scoring import _pool, safe_shape

GENERATORS = ["chain_sum", "basic_arithmetic", "string_insertion", "spiral_matrix", "binary_matrix", "n_queens",
              "countdown", "puzzle24", "polynomial_multiplication", "simple_integration",
              "intermediate_integration", "number_sorting"]
PAYLOADS = ["__import__('os').system('touch {f}')",
            "__import__('pathlib').Path('{f}').write_text('pwned')",
            "[c for c in __import__('os').popen('touch {f}')]"]


def _problems(name, n=1):
    return load_task(f"rg:{name}", limit=n, seed=1)


@pytest.mark.parametrize("name", GENERATORS)
def test_gold_answers_score_through_the_sandbox(name):
    for p in _problems(name, 3):
        assert safe_shape(p.meta["rg"], p.answer), p.answer  # the shape check refuses no gold answer
        assert grade(p, f"so \\boxed{{{p.answer}}}") == (p.answer.strip(), True)
        assert grade(p, "so \\boxed{0 1}") == ("0 1", False)


@pytest.mark.parametrize("name", GENERATORS)
def test_payloads_never_run(name, tmp_path):
    (p,) = _problems(name)
    for i, payload in enumerate(PAYLOADS):
        target = tmp_path / f"FILE{i}"
        text = f"I am sure. \\boxed{{{payload.format(f=target)}}}"
        answer, correct, timed_out = judge(p, text)
        assert answer == payload.format(f=target) and not correct and not timed_out
        assert not target.exists()


@pytest.mark.parametrize("name", ["string_insertion", "spiral_matrix", "n_queens", "countdown", "puzzle24",
                                  "polynomial_multiplication", "simple_integration"])
def test_the_sandbox_holds_without_the_shape_check(name, tmp_path):
    """The second wall alone: the payload reaches the scorer's eval / parse_expr and still does nothing."""
    (p,) = _problems(name)
    for i, payload in enumerate(PAYLOADS):
        target = tmp_path / f"FILE{i}"
        score = _pool.call({"rg": p.meta["rg"], "answer": payload.format(f=target)}, timeout=10)
        assert score is not None and score < 0.99
        assert not target.exists()


@pytest.mark.parametrize("name,answer", [
    ("countdown", "9**9**8"), ("countdown", "9 * * 9"), ("puzzle24", "3*8 + __import__('os').getpid()"),
    ("countdown", "2.real"), ("countdown", "(5)!"), ("polynomial_multiplication", "x**9**9"),
    ("polynomial_multiplication", "x**999"), ("polynomial_multiplication", "x.__class__"),
    ("polynomial_multiplication", "exec(1)"), ("simple_integration", "X**X"), ("simple_integration", "S('x')"),
    ("simple_integration", "sin.__globals__"), ("string_insertion", "['A', 'B']"), ("n_queens", "eval(1)"),
    ("spiral_matrix", "[1, 2]"),
])
def test_unsafe_shapes_are_refused(name, answer):
    (p,) = _problems(name)
    assert not safe_shape(p.meta["rg"], answer)
    assert judge(p, f"\\boxed{{{answer}}}")[1:] == (False, False)


def test_safe_shapes_of_integrals():
    rg = {"name": "simple_integration", "entry": {"answer": "-5*X**9 + 4*X**3 + C"}}
    for answer in ("4*X**3 - 5*X**9 + C", "X**(3/2)/2 + C", "exp(X) + sin(2*X)**2 - 0.5*X", "X**-1 + C"):
        assert safe_shape(rg, answer), answer
    rg = {"name": "composite", "entry": {"answer": "1", "metadata": {"source_dataset": "countdown"}}}
    assert safe_shape(rg, "3*(4+1)") and not safe_shape(rg, "9**9")


def test_a_power_tower_on_countdown_is_wrong_at_once():
    (p,) = _problems("countdown")
    assert judge(p, "\\boxed{9**9**8}") == ("9**9**8", False, False)  # refused by shape, not timed out


def test_a_slow_answer_of_a_valid_shape_times_out_and_grading_goes_on():
    (p,) = _problems("simple_integration")
    x = p.meta["rg"]["entry"]["metadata"]["variable"]
    slow = f"({x}+1)**99*({x}+2)**99*({x}+3)**99"  # sympy simplifies its derivative for minutes
    assert judge(p, f"\\boxed{{{slow}}}", timeout=1.0) == (slow, False, True)
    assert grade(p, f"\\boxed{{{p.answer}}}") == (p.answer, True)


def test_an_overlong_answer_is_wrong_unread():
    (p,) = _problems("chain_sum")
    assert judge(p, "\\boxed{" + "1" * 5000 + "}")[1:] == (False, False)
