"""Generation backends behind one protocol (`base.Generator`); nothing here knows LeaP or GRPO."""

from .base import BackendError, Completion, Generator, SamplingParams, SessionGenerator, cut_at_stop, has_sessions
from .factory import BACKENDS, make_generator

__all__ = ["BACKENDS", "BackendError", "Completion", "Generator", "SamplingParams", "SessionGenerator", "cut_at_stop",
           "has_sessions", "make_generator"]
