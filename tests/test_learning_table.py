"""benchmarks/learning.py's pooled paired test of M3PO (think) against GRPO (think) over seeds."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import learning  # noqa: E402
from shared import mcnemar_p  # noqa: E402


def _row(algo, seed, correct, lam=None):
    return {"model": "m", "steps": 30, "eval_size": 10, "seed": seed, "algo": algo, "variant": "think",
            "m3po_lambda": lam, "m3po_temperature": None if lam is None else 0.1,
            "after": len(correct) / 10, "after_correct": sorted(correct)}


def test_discordant_questions_are_summed_over_seeds_per_setting():
    rows = [_row("grpo", 0, {"a", "b", "c"}), _row("m3po", 0, {"a", "d", "e"}, 0.3),   # 2 / 2
            _row("grpo", 1, {"a", "b"}), _row("m3po", 1, {"a", "b", "c", "d"}, 0.3),   # 0 / 2
            _row("m3po", 0, {"a"}, 0.1)]                                               # one seed: no line
    (line,) = learning._think_pooled(rows)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:4] == ["λ0.3 T0.1", "0,1"]
    assert cells[4:6] == ["25.0", "35.0"]               # GRPO 0.3, 0.2; M3PO 0.3, 0.4
    assert cells[6] == "+10.0 ± 14.1"                    # per-seed differences 0 and +20 points
    assert cells[7] == "2 / 4" and cells[8] == f"{mcnemar_p(2, 4):.2f}"
