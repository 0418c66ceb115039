"""Grading: answer extraction, math-verify equivalence (any thread), reasoning-gym scoring."""

import threading
import time

import pytest

from crosspath.tasks import Problem, SameAnswer, count_markers, extract_answer, grade, is_equivalent, judge, load_task
from crosspath.tasks.grading import MAX_ANSWER_CHARS, last_boxed


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


@pytest.mark.parametrize("text,expected", [
    ("<answer>a</answer></answer>", "a"),
    ("<ANSWER>a<answer>b</Answer>", "b"),
    ("<answer>1</answer> then <answer>2</answer> and <answer>3", "2"),
])
def test_answer_tags(text, expected):
    assert extract_answer(text) == expected


N = 200_000  # characters of adversarial text; quadratic extraction took ~20 s at 56k


@pytest.mark.parametrize("text,choices,expected", [
    ("so \\boxed{7}. " + "\\boxed{" * (N // 7), None, "7"),  # a box, then nothing but unclosed boxes
    ("\\boxed{" * (N // 7) + "}" * 3, None, ""),  # the three innermost close: an empty box
    ("<answer>5</answer>" + "<answer>" * (N // 8), None, "5"),
    ("B\n" + " \n" * (N // 2) + "x", ["1", "2", "3"], "B"),
    ("answer: " * (N // 8) + "4", None, "4"),
    ("1" * N + "a 12", None, "12"),
    (" " * N + "#### 9", None, "9"),
])
def test_extraction_of_huge_adversarial_texts(text, choices, expected):
    """Every rule is one pass over the text; a hang guard (not a speed test) catches a quadratic one."""
    t0 = time.monotonic()
    assert extract_answer(text, choices) == (expected or None)
    assert time.monotonic() - t0 < 10.0


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
    assert last_boxed("\\boxed{\\boxed{1} 2}") == "1"  # the box that opens last wins
    assert last_boxed("\\boxed{a} } \\boxed {b} \\fbox{c") == "b"
    assert last_boxed("{ \\boxed{x} \\boxed{y") == "x"
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
    ("\\sqrt{2}", "2"), ("5", "5!"), ("5", "\\boxed{5!}"), ("3", "3!"),
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


def test_a_factorial_is_a_factorial():
    p = Problem("p", "How many orders of 5 books?", "120")
    assert grade(p, "There are \\boxed{5!} orders.") == ("5!", True)
    assert grade(Problem("p", "q", "5"), "There are \\boxed{5!} orders.") == ("5!", False)
    assert extract_answer("The answer is 5! Great.") == "5"  # in prose, "!" is an exclamation
    assert extract_answer("The answer is $5!$.") == "5!"


def test_judge_reports_a_timeout_as_wrong_and_the_next_check_works():
    p = Problem("p", "q", "1")
    assert judge(p, "\\boxed{9^{9^{9^{9^{9}}}}}", timeout=1.0) == ("9^{9^{9^{9^{9}}}}", False, True)
    assert judge(p, "\\boxed{\\frac{2}{2}}") == ("\\frac{2}{2}", True, False)
    assert grade(p, "\\boxed{1.0}") == ("1.0", True)


def test_an_overlong_answer_is_wrong_without_a_check():
    long = "1+" * MAX_ANSWER_CHARS + "1"
    assert judge(Problem("p", "q", "1"), f"\\boxed{{{long}}}") == (long, False, False)
    gold = "x" * (MAX_ANSWER_CHARS + 100)  # a long gold answer allows answers twice as long
    assert judge(Problem("p", "q", gold), f"\\boxed{{{gold}}}") == (gold, True, False)


def test_same_answer_compares_meaning_letters_and_rg_answers_exactly():
    same = SameAnswer()
    assert same("1/2", "0.5") and same("0.5", "\\frac{1}{2}") and same("3", "3.0")
    assert not same("1/2", "0.6") and not same("5", "5!")
    mc = SameAnswer(Problem("m", "q", "A", choices=["1/2", "0.5"]))
    assert mc("A", "A") and not mc("A", "B")
    rg = SameAnswer({"choices": None, "meta": {"rg": {"name": "string_insertion"}}})
    assert not rg("ABCDE", "EDCBA") and not rg("1/2", "0.5")  # math-verify would call both pairs equal


def test_same_answer_spends_at_most_one_timeout_per_slow_answer():
    same = SameAnswer(timeout=1.0)
    tower = "9^{9^{9^{9^{9}}}}"
    assert not same("1", tower) and same.timeouts == 1
    assert not same("2", tower) and not same(tower, "3") and same.timeouts == 1  # not compared again
    assert same(tower, tower) and same("0.5", "1/2")
