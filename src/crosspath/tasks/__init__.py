"""What is asked and how it is judged: problems, loaders, grading and metrics.

>>> from crosspath.tasks import load_task, grade
>>> p = load_task("demo", limit=1)[0]
>>> grade(p, "8 + 3 = 11, so the answer is 11.")
('11', True)
"""

from crosspath.tasks.datasets import TaskError, list_tasks, load_jsonl, load_task
from crosspath.tasks.grading import SameAnswer, count_markers, extract_answer, grade, is_equivalent, judge
from crosspath.tasks.metrics import cons_at_n, majority_vote, pass_at_1, pass_at_k, summarize, votes
from crosspath.tasks.problem import Problem

__all__ = [
    "Problem", "TaskError", "load_task", "load_jsonl", "list_tasks",
    "extract_answer", "count_markers", "is_equivalent", "grade", "judge", "SameAnswer",
    "pass_at_1", "votes", "majority_vote", "cons_at_n", "pass_at_k", "summarize",
]
