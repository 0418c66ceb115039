"""Grading: answer extraction, math-verify equivalence (any thread), reasoning-gym scoring."""

import threading

import pytest

from crosspath.tasks import Problem, count_markers, extract_answer, grade, is_equivalent, load_task
from crosspath.tasks.grading import last_boxed


@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{\\frac{1}{\\sqrt{2}}} is it", "\\frac{1}{\\sqrt{2}}"),
    ("first \\boxed{1}, then \\boxed{ {a}+{b} }.", "{a}+{b}"),
    ("\\fbox{12}", "12"),
    ("done \\boxed{7} and a cut-off \\boxed{\\frac{1", "7"),
    ("3 + 4 = 7\n#### 7", "7"),
    ("#### 5\nlater #### $1,250.\nThe end 99", "1250"),
    ("#### 18 dollars", "18"),
    ("####\n3/4", "3/4"),
    ("The answer is 42.", "42"),
    ("so the answer is: -3", "-3"),
    ("Answer: 1,000", "1000"),
    ("Final Answer: The final answer is $\\frac{2}{3}$. I hope it is correct.", "\\frac{2}{3}"),
    ("The answer is 12 apples.", "12"),
    ("The answer is 7, since 3 + 4 = 7.", "7"),
    ("The answer is 6 - 5i.", "6 - 5i"),
    ("Answer: 1,-2", "1,-2"),
    ("Answer: $\\$32,\\!348$", "32348"),
    ("The answer is $5.", "5"),
    ("<answer>11</answer>", "11"),
    ("We get 3, then 5, and finally 1,000.", "1000"),
    ("3-4 gives", "4"),
    ("x = -4", "-4"),
    ("it is 2.5.", "2.5"),
    ("no numbers here", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_prefers_boxed_over_marker_and_phrase():
    text = "The answer is 3.\n#### 4\nso \\boxed{5}"
    assert extract_answer(text) == "5"
    assert extract_answer("The answer is 3.\n#### 4") == "4"


@pytest.mark.parametrize("text,expected", [
    ("I think (C) is right.", "C"),
    ("The answer is (B) 42.", "B"),
    ("Answer: D", "D"),
    ("\\boxed{\\text{A}}", "A"),
    ("The answer is 42.", "B"),  # a choice's text becomes its letter
    ("So it must be option c", "C"),
    ("(E) is out of range, (A) then", "A"),
])
def test_extract_choice_letters(text, expected):
    assert extract_answer(text, choices=["12", "42", "7", "0"]) == expected


def test_last_boxed_and_count_markers():
    assert last_boxed("\\boxed{a{b{c}}d}") == "a{b{c}}d"
    assert last_boxed("nothing") is None
    assert count_markers("#### 1") == 1
    assert count_markers("#### 1 #### 2") == 2
    assert count_markers("no marker") == 0
    assert count_markers("<a> <a>", marker="<a>") == 2


@pytest.mark.parametrize("gold,pred", [
    ("1/2", "0.5"), ("0.5", "\\frac{1}{2}"), ("\\frac{1}{2}", "1/2"), ("3", "3.0"),
    ("1000", "1,000"), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("x^2+2x+1", "(x+1)^2"), ("18", "$18"), ("\\$32,\\!348", "32348"), ("10\\%", "10"),
])
def test_equivalent(gold, pred):
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize("gold,pred", [
    ("2", "3"), ("1/2", "0.6"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("5", None), ("5", ""),
    ("\\sqrt{2}", "2"),
])
def test_not_equivalent(gold, pred):
    assert not is_equivalent(gold, pred)


def test_is_equivalent_off_the_main_thread():
    results = {}

    def work(name, gold, pred):
        results[name] = is_equivalent(gold, pred)

    threads = [threading.Thread(target=work, args=args) for args in [
        ("half", "\\frac{1}{2}", "0.5"), ("poly", "x^2+2x+1", "(x+1)^2"), ("no", "\\pi", "3")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {"half": True, "poly": True, "no": False}


def test_a_check_past_its_timeout_is_false_and_the_next_one_works():
    # sympy cannot finish this power tower: the worker is killed at the timeout
    assert not is_equivalent("1", "9^{9^{9^{9^{9}}}}", timeout=1.0)
    assert is_equivalent("\\frac{2}{4}", "0.5")


def test_grade_plain_and_multiple_choice():
    p = Problem("p", "What is 3 + 4?", "7")
    assert grade(p, "3 + 4 = 7. The answer is 7.") == ("7", True)
    assert grade(p, "The answer is 8.") == ("8", False)
    assert grade(p, "I don't know") == (None, False)
    mc = Problem("m", "Pick 42.", "42", choices=["12", "42", "7"])
    assert grade(mc, "The answer is (B).") == ("B", True)
    assert grade(mc, "The answer is (A).") == ("A", False)
    mc_letter = Problem("m2", "Pick 42.", "B", choices=["12", "42", "7"])
    assert grade(mc_letter, "It is 42.") == ("B", True)


def test_grade_reasoning_gym_uses_its_scorer():
    (p,) = load_task("rg:chain_sum", limit=1, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    gold = p.answer
    wrong = str(int(gold) + 1)
    assert grade(p, f"Adding up gives <answer>{gold}</answer>") == (gold, True)
    assert grade(p, f"The answer is {gold}.") == (gold, True)
    assert grade(p, f"The answer is {wrong}.") == (wrong, False)
    assert grade(p, "no idea") == (None, False)
