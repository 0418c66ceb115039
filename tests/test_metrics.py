"""Metrics: pass@1, majority vote with its tie-break, cons@N, unbiased pass@k, summaries."""

from math import comb

import pytest

from crosspath.tasks.metrics import cons_at_n, majority_vote, pass_at_1, pass_at_k, summarize, votes


def test_pass_at_1_is_the_mean():
    assert pass_at_1([True, False, True, True]) == 0.75
    assert pass_at_1([]) == 0.0


def test_majority_vote_counts_and_normalises():
    assert majority_vote(["4", " 7", "7 ", "4", "7"]) == "7"
    assert majority_vote([None, "", "5", None]) == "5"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_majority_tie_goes_to_earliest_first_occurrence():
    assert majority_vote(["8", "3", "3", "8"]) == "8"
    assert majority_vote(["3", "8", "8", "3"]) == "3"
    assert majority_vote([None, "b", "a", "a", "b"]) == "b"
    assert majority_vote(["x", "y", "z"]) == "x"


def test_majority_vote_merges_equivalent_answers():
    same = {"0.5", "1/2", "\\frac{1}{2}"}
    equiv = lambda a, b: a == b or (a in same and b in same)  # noqa: E731
    assert majority_vote(["3", "3", "1/2", "0.5", "\\frac{1}{2}"], equiv=equiv) == "1/2"
    assert majority_vote(["3", "3", "1/2", "0.5", "\\frac{1}{2}"]) == "3"


def test_votes_ranks_groups_and_breaks_ties_by_first_occurrence():
    same = {"0.5", "1/2", "\\frac{1}{2}"}
    equiv = lambda a, b: a == b or (a in same and b in same)  # noqa: E731
    assert votes(["3", "0.5", " 3", "1/2", None, "\\frac{1}{2}", ""], equiv) == [("0.5", [1, 3, 5]), ("3", [0, 2])]
    assert votes(["b", "a", "a", "b", "c"]) == [("b", [0, 3]), ("a", [1, 2]), ("c", [4])]
    assert votes([None, " "]) == []
    seen = []
    votes(["x", "y", "z"], lambda a, b: seen.append((a, b)) or False)
    assert seen == [("x", "y"), ("x", "z"), ("y", "z")]  # a new answer meets each group's first answer


def test_cons_at_n_correct_when_any_path_of_the_winner_is():
    assert cons_at_n(["7", "8", "7", None], [True, False, False, False]) == ("7", True)
    assert cons_at_n(["7", "8", "8"], [True, False, False]) == ("8", False)
    assert cons_at_n([None, None], [False, False]) == (None, False)
    with pytest.raises(ValueError):
        cons_at_n(["1"], [True, False])


@pytest.mark.parametrize("n,c,k", [(4, 1, 1), (4, 1, 2), (5, 2, 2), (8, 3, 4), (10, 0, 3),
                                   (10, 10, 3), (16, 5, 8), (3, 1, 3)])
def test_pass_at_k_matches_binomial_formula(n, c, k):
    expected = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_hand_values_and_stability():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)  # pass@1 is c/n
    assert pass_at_k(5, 4, 2) == 1.0
    big = pass_at_k(2000, 7, 100)  # binomials of ~1e200: no overflow, still in [0, 1]
    assert 0.0 < big < 1.0 and big == pytest.approx(1 - comb(1993, 100) / comb(2000, 100))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_summarize_aggregates_rows():
    rows = [
        {"pass_at_1": 0.25, "cons_correct": False, "paths": [
            {"correct": True, "tokens": 10}, {"correct": False, "tokens": 20},
            {"correct": False, "tokens": 30}, {"correct": False, "tokens": 40}]},
        {"pass_at_1": 1.0, "cons_correct": True, "paths": [
            {"correct": True, "tokens": 5}, {"correct": True, "tokens": 5},
            {"correct": True, "tokens": 5}, {"correct": True, "tokens": 5}]},
    ]
    s = summarize(rows)
    assert s["questions"] == 2
    assert s["pass_at_1"] == pytest.approx(0.625)
    assert s["cons_at_n"] == pytest.approx(0.5)
    assert sorted(s["pass_at_k"]) == [1, 2, 4]
    assert s["pass_at_k"][1] == pytest.approx((0.25 + 1.0) / 2)
    assert s["pass_at_k"][2] == pytest.approx((0.5 + 1.0) / 2)
    assert s["pass_at_k"][4] == pytest.approx(1.0)
    assert s["tokens"] == 120 and s["tokens_per_question"] == pytest.approx(60.0)
    assert s["grading_timeouts"] == 0
    rows[0]["grading_timeouts"], rows[1]["grading_timeouts"] = 2, 1
    assert summarize(rows)["grading_timeouts"] == 3


def test_summarize_empty():
    s = summarize([])
    assert s["questions"] == 0 and s["pass_at_k"] == {} and s["tokens"] == 0 and s["grading_timeouts"] == 0
