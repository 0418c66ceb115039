"""Held-out evaluation of distilled students: greedy accuracy of each, and their majority vote.

Each student runs `crosspath.infer.runner.run(method="greedy")` on the task with its LoRA adapter
still attached (the in-memory peft model behind an `HFGenerator`), so its numbers are exactly what
`crosspath eval --adapter DIR/student-i/adapter` prints. The ensemble answer of a question is the
majority of the students' answers, grouped by meaning as in cons@N (`crosspath.tasks.votes` with
`SameAnswer`); ties go to the student with the higher competence weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from ..tasks import SameAnswer
from ..tasks.metrics import cons_at_n


def evaluate_students(models: Sequence, toks: Sequence, names: Sequence[str], out: Path, problems: Sequence,
                      max_tokens: int = 256, batch_questions: int = 8, competence: Sequence[float] | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """{"students": [{"name", "accuracy"}...], "ensemble": accuracy, "questions": n}; writes eval.json."""
    from ..backends.hf import HFGenerator
    from ..infer.runner import RunConfig, read_results, run

    per_student: list[dict[str, dict]] = []
    result: dict[str, Any] = {"task": problems[0].source if problems else "", "students": []}
    for i, (model, tok, name) in enumerate(zip(models, toks, names)):
        was_training = model.training
        model.eval()
        cfg = RunConfig(method="greedy", model=name, task=problems[0].source if problems else "",
                        max_tokens=max_tokens, out=str(out / f"student-{i}"), overwrite=True,
                        batch_questions=batch_questions)
        summary = run(cfg, generator=HFGenerator(model, tok), problems=list(problems), progress=False)
        if was_training:
            model.train()
        rows = {r["id"]: r for r in read_results(out / f"student-{i}" / "results.jsonl")}
        per_student.append(rows)
        result["students"].append({"name": name, "accuracy": summary["pass_at_1"]})
        log(f"  student {i} ({name}): greedy accuracy {summary['pass_at_1']:.3f} on {summary['questions']} questions")
    result["questions"] = len(per_student[0]) if per_student else 0
    if len(per_student) > 1:
        result["ensemble"] = ensemble_accuracy(per_student, competence)
        log(f"  ensemble (majority vote of {len(per_student)} students): {result['ensemble']:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def ensemble_accuracy(per_student: Sequence[dict[str, dict]], competence: Sequence[float] | None = None) -> float:
    """Accuracy of the majority answer over students (result rows keyed by question id).

    Students vote in decreasing competence order, so a tie goes to the more competent student;
    equivalent answers ("0.5", "1/2") are one vote.

    >>> a = {"q": {"paths": [{"answer": "3", "correct": True}]}}
    >>> b = {"q": {"paths": [{"answer": "4", "correct": False}]}}
    >>> ensemble_accuracy([a, b], [0.2, 0.8]), ensemble_accuracy([a, b], [0.8, 0.2])
    (0.0, 1.0)
    """
    order = sorted(range(len(per_student)), key=lambda s: -(competence[s] if competence is not None else 0.0))
    ids = list(per_student[0])
    hits = 0
    for q in ids:
        rows = [per_student[s][q] for s in order if q in per_student[s]]
        paths = [r["paths"][0] for r in rows]
        hits += cons_at_n([p["answer"] for p in paths], [p["correct"] for p in paths], equiv=SameAnswer(rows[0]))[1]
    return hits / len(ids) if ids else 0.0
