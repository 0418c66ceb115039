"""Prompt strings of distillation: the six teacher styles and the path judge.

Every other prompt of crosspath lives in `crosspath.infer.prompts`; these live here, in their own
module, so that distillation work does not collide with edits to the inference prompts. The
student side of distillation reuses `crosspath.infer.prompts.STEP_BY_STEP` unchanged: a student is
trained to answer the plain prompt it is evaluated with, whatever style the teacher wrote in.

The six styles follow QR-Distill (arXiv 2508.16861); the wording is crosspath's own.

>>> sorted(STYLES)[:3]
['backward', 'facts', 'program']
>>> parse_verdict("VALID: the sums are right")
('VALID', 'the sums are right')
>>> parse_verdict("I think this is INVALID.\\nReason: step 2 adds wrong")
('INVALID', 'step 2 adds wrong')
>>> parse_verdict("no idea")[0] is None
True
"""

from __future__ import annotations

import re

_BOXED = "Put your final answer within \\boxed{{}}."

# ---- teacher styles: style name -> user prompt with a {question} slot ---------------------------
STYLES: dict[str, str] = {
    "step": "{question}\n\nWork through the problem one step at a time, writing each step on its own line. "
            + _BOXED,
    "program": "{question}\n\nSolve this the way a programmer would: write the solution as short, code-like "
               "pseudocode (variables, assignments, loops if needed) and trace its values by hand, without "
               "running anything. Then state the result. " + _BOXED,
    "facts": "{question}\n\nFirst list the facts, definitions and rules that this problem depends on. Then use "
             "them, one by one, to reach the answer. " + _BOXED,
    "tree": "{question}\n\nExplore the problem like a search tree: propose two or three different ways to "
            "attack it, follow each for a few steps, drop the branches that fail or disagree, and finish "
            "along the most reliable one. " + _BOXED,
    "backward": "{question}\n\nSolve the problem forwards first. Then check your result by working backwards "
                "from it to the numbers in the question, and fix the answer if the check fails. " + _BOXED,
    "reason": "{question}\n\nReason about the problem to solve it. " + _BOXED,
}
STYLE_NAMES: tuple[str, ...] = tuple(STYLES)

# ---- the judge ------------------------------------------------------------------------------------
JUDGE = (
    "You are grading a worked solution. Read the problem and the solution below and decide whether "
    "the reasoning really supports the final answer: every step must follow from the previous ones, "
    "with no wrong arithmetic, no unjustified jumps and no lucky guess.\n\n"
    "Problem:\n{question}\n\n"
    "Solution:\n{path}\n\n"
    "Reply with exactly one word, VALID or INVALID, then a colon and a one-line reason."
)
JUDGE_PREFILL = "Verdict:"

_VERDICT = re.compile(r"\b(INVALID|VALID|NOT\s+VALID)\b", re.IGNORECASE)


def parse_verdict(reply: str) -> tuple[str | None, str]:
    """(VALID | INVALID | None, reason) from a judge's reply.

    The first verdict word wins ("NOT VALID" counts as INVALID); the reason is the rest of that
    line after the word, or else the next non-empty line (a leading "Reason:" is dropped).
    None means the reply named no verdict (counted apart by the filter).
    """
    m = _VERDICT.search(reply)
    if m is None:
        return None, reply.strip().splitlines()[0][:200] if reply.strip() else ""
    word = m.group(1).upper()
    verdict = "VALID" if word == "VALID" else "INVALID"
    rest = reply[m.end():].split("\n", 1)
    reason = rest[0].strip(" .:-–—\t")
    if not reason and len(rest) > 1:
        reason = next((ln.strip() for ln in rest[1].splitlines() if ln.strip()), "")
    reason = re.sub(r"^(reason\s*[:\-]\s*)", "", reason, flags=re.IGNORECASE).strip()
    return verdict, reason[:200]
