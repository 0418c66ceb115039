"""Every prompt string of crosspath, in one place.

The LeaP structure follows the paper (arXiv 2505.07787): a question prompt announcing the
summary/comment protocol, an assistant pre-fill restating it, recap triggers before
`<summarize>`, a comment block with the peers' summaries, a resolve sentence, and a forced
final answer. The wording is crosspath's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks.grading import LETTERS
from ..tasks.problem import Problem

# ---- plain reasoning (independent sampling, greedy evaluation, LeaP-T) ----------------------------
STEP_BY_STEP = "{question}\n\nReason step by step, and put your final answer within \\boxed{{}}."

# ---- the training prompts (crosspath train), also an independent-sampling --prompt ------------------
# HRPO/M3PO format: reason first, then the marker, then the answer. No example answer (it gets copied).
MARKER_PROMPT = ("{question}\n\nThink it through step by step first. When you are done, write {marker} "
                 "followed by your final answer.")
# --answer-format think: the same order, asked for line by line; still no example answer (a literal one
# was reward-hacked: the model copied it)
THINK_PROMPT = ("{question}\n\nFirst reason step by step and show your work. Then write a last line that starts "
                "with {marker} and gives only your final answer.")
# --prompt of independent sampling: plain (step by step, \boxed{}), or what `crosspath train` asks with
# --answer-format plain (marker) or think, so a trained adapter is evaluated on the prompt it learned
QUESTION_PROMPTS = ("plain", "marker", "think")

# ---- multiple choice (GPQA style: the question, then one lettered option per line) ---------------
OPTION_LINE = "{letter}) {text}"
STEP_BY_STEP_CHOICE = (
    "{question}\n\nReason step by step, then give the letter of the option you pick, and nothing else, "
    "within \\boxed{{}}."
)

# ---- LeaP --------------------------------------------------------------------------------------------
LEAP_QUESTION = (
    "{question}\n\n"
    "Reason step by step, and put your final answer within \\boxed{{}}. "
    "{peers_note}"
)
LEAP_QUESTION_CHOICE = (
    "{question}\n\n"
    "Reason step by step, then give the letter of the option you pick, and nothing else, within \\boxed{{}}. "
    "{peers_note}"
)
LEAP_PEERS_NOTE = (
    "Other solvers are working on the same problem at the same time. Every so often you will pause "
    "and write a brief summary of where you stand between <summarize> and </summarize>; after that "
    "you will be shown summaries from some of the other solvers. Weigh their conclusions against "
    "your own before you go on."
)
LEAP_PREFILL = (
    "I will work through this step by step, pausing now and then to summarize my progress inside "
    "<summarize> </summarize> and to read what the other solvers report.\n\n"
)

# Sentences that hand over to the summary (one is chosen per path and round, deterministically).
RECAP_TRIGGERS = (
    "Let me pause and recap my progress so far.",
    "Before I continue, I will sum up what I have found.",
    "Time to take stock of my reasoning up to here.",
    "Let me write down a short summary of my current state.",
)
SUMMARY_OPENER = "So far, "

# What follows the peers' summaries: the path resolves to check them against its own result.
RESOLVE = (
    "\n\nLet me compare these with my own reasoning: if another solver reached a different result, "
    "I will check which one holds before continuing.\n\n"
)
NO_COMMENTS = "No comments from other solvers this time."
RESUME_ALONE = "\n\nI will carry on with my own reasoning.\n\n"

FINAL_ANSWER = "\n\nI have to give my answer now.\n\n**Final Answer**\n\\boxed{"
FINAL_ANSWER_CHOICE = "\n\nI have to pick an option now.\n\n**Final Answer** (the letter of my choice)\n\\boxed{"


def show_question(problem: Problem) -> str:
    """The question as the model reads it: multiple-choice options follow it, one lettered line each.

    >>> print(show_question(Problem("p", "Which is prime?", "B", choices=["4", "7"])))
    Which is prime?
    <BLANKLINE>
    A) 4
    B) 7
    """
    if not problem.choices:
        return problem.question
    options = "\n".join(OPTION_LINE.format(letter=LETTERS[i], text=c) for i, c in enumerate(problem.choices))
    return f"{problem.question}\n\n{options}"


def plain_prompt(problem: Problem) -> str:
    """User turn of independent sampling, greedy evaluation and LeaP-T."""
    template = STEP_BY_STEP_CHOICE if problem.choices else STEP_BY_STEP
    return template.format(question=show_question(problem))


def question_text(problem: Problem, style: str = "plain", marker: str = "####") -> str:
    """User turn of independent sampling in one of QUESTION_PROMPTS (marker / think: the training
    prompts, with `marker` as the answer marker).

    >>> question_text(Problem("p", "2+3?", "5"), "think").endswith("starts with #### and gives only your final answer.")
    True
    """
    if style == "plain":
        return plain_prompt(problem)
    if style not in QUESTION_PROMPTS:
        raise ValueError(f"unknown prompt {style!r}; choose one of {QUESTION_PROMPTS}")
    return (THINK_PROMPT if style == "think" else MARKER_PROMPT).format(question=show_question(problem), marker=marker)


def leap_prompt(problem: Problem) -> str:
    """User turn of LeaP: the question, the answer format, and the summary/peer protocol."""
    template = LEAP_QUESTION_CHOICE if problem.choices else LEAP_QUESTION
    return template.format(question=show_question(problem), peers_note=LEAP_PEERS_NOTE)


def final_answer(problem: Problem) -> str:
    """The lead-in of a forced answer: ends in \\boxed{ (a choice letter for multiple choice)."""
    return FINAL_ANSWER_CHOICE if problem.choices else FINAL_ANSWER


@dataclass(frozen=True)
class Tags:
    """The tag set that frames summaries and peer blocks."""

    summarize: str = "summarize"
    peers: str = "comment"  # the released code's tag; the paper's figures show "peer_summary"

    @property
    def open_summary(self) -> str:
        return f"<{self.summarize}>"

    @property
    def close_summary(self) -> str:
        return f"</{self.summarize}>"


TAG_SETS = {"comment": Tags(peers="comment"), "peer_summary": Tags(peers="peer_summary")}


def summary_request(round_idx: int, path_idx: int, tags: Tags) -> str:
    """Text appended after a path's round to make it summarize."""
    trigger = RECAP_TRIGGERS[(round_idx + path_idx) % len(RECAP_TRIGGERS)]
    return f"\n\n{trigger}\n\n{tags.open_summary}\n{SUMMARY_OPENER}"


def peer_block(summaries: list[str], tags: Tags) -> str:
    """The block injected right after a path's own summary: peers renumbered 1..k in routing order."""
    if not summaries:
        return f"\n\n<{tags.peers}>\n{NO_COMMENTS}\n</{tags.peers}>{RESUME_ALONE}"
    lines = "\n".join(f'Peer {i}: "{s}"' for i, s in enumerate(summaries, 1))
    return f"\n\n<{tags.peers}>\n{lines}\n</{tags.peers}>{RESOLVE}"


# ---- PaCoRe (arXiv 2601.05593): a round reads the previous round's messages (crosspath's wording) -----
PACORE_INTRO = "Below is a problem, followed by the conclusions that earlier attempts reached on it."
PACORE_REFERENCE = "Attempt {i}:\n{message}"
PACORE_CLOSE = (
    "These attempts may be wrong or disagree. Weigh them against the problem, then solve it yourself "
    "from the start and give your own complete solution."
)

# ---- Mixture-of-Agents (arXiv 2406.04692): an aggregator reads the previous layer's answers ----------
MOA_INTRO = (
    "Several assistants answered the question below. Their answers follow it. Some may contain mistakes: "
    "judge each one critically rather than copying it, keep what is right, and write a single improved answer."
)
MOA_REFERENCE = "Answer {i}:\n{message}"


def _reference_prompt(problem: Problem, messages: list[str], intro: str, item: str, close: str) -> str:
    if not messages:
        return plain_prompt(problem)
    refs = "\n\n".join(item.format(i=i, message=m) for i, m in enumerate(messages, 1))
    ask = plain_prompt(problem)[len(show_question(problem)):].strip()  # the answer-format sentence
    parts = [intro, "Problem:\n" + show_question(problem), refs]
    return "\n\n".join(parts + ([close] if close else []) + [ask])


def pacore_prompt(problem: Problem, messages: list[str]) -> str:
    """User turn of a PaCoRe round after the first: the problem, the previous round's messages
    (Attempt 1..M), and the answer format. No messages: the plain prompt (as the paper).

    >>> print(pacore_prompt(Problem("p", "1+1?", "2"), ["It is 2.", "It is 3."]))
    Below is a problem, followed by the conclusions that earlier attempts reached on it.
    <BLANKLINE>
    Problem:
    1+1?
    <BLANKLINE>
    Attempt 1:
    It is 2.
    <BLANKLINE>
    Attempt 2:
    It is 3.
    <BLANKLINE>
    These attempts may be wrong or disagree. Weigh them against the problem, then solve it yourself from the start and give your own complete solution.
    <BLANKLINE>
    Reason step by step, and put your final answer within \\boxed{}.
    """
    return _reference_prompt(problem, messages, PACORE_INTRO, PACORE_REFERENCE, PACORE_CLOSE)


def moa_prompt(problem: Problem, answers: list[str]) -> str:
    """User turn of a Mixture-of-Agents aggregator: the instruction, the question and the previous
    layer's answers (Answer 1..M), then the answer format."""
    return _reference_prompt(problem, answers, MOA_INTRO, MOA_REFERENCE, "")
