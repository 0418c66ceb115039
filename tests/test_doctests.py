"""The worked examples in the docstrings of the pure modules are tests too."""

import doctest
import importlib

import pytest

MODULES = ["crosspath.backends.base", "crosspath.backends.vllm", "crosspath.infer.routing", "crosspath.infer.leap", "crosspath.tasks",
           "crosspath.tasks.metrics", "crosspath.tasks.grading", "crosspath.train.grpo", "crosspath.train.m3po"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
