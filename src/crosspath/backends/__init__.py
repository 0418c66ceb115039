"""Generation backends behind one protocol (`base.Generator`); nothing here knows LeaP or GRPO."""

from .base import BackendError, Completion, Generator, SamplingParams, SessionGenerator, cut_at_stop, has_sessions

__all__ = ["BackendError", "Completion", "Generator", "SamplingParams", "SessionGenerator", "cut_at_stop", "has_sessions"]
