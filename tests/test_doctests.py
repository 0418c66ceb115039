"""The worked examples in the docstrings of the pure modules are tests too."""

import doctest
import importlib

import pytest

MODULES = ["crosspath.backends.base", "crosspath.backends.vllm", "crosspath.infer.routing", "crosspath.infer.leap",
           "crosspath.infer.budget", "crosspath.infer.runner", "crosspath.infer.prompts", "crosspath.tasks",
           "crosspath.tasks.hub", "crosspath.tasks.datasets", "crosspath.tasks.metrics", "crosspath.tasks.grading",
           "crosspath.tasks.rg_scoring", "crosspath.train.grpo", "crosspath.train.m3po", "crosspath.config",
           "crosspath.rundir", "crosspath.serve.protocol", "crosspath.report.rows", "crosspath.report.markup"]
MODULES += ["crosspath.infer.aggregate", "crosspath.infer.deepconf", "crosspath.infer.pacore", "crosspath.infer.moa"]
MODULES += ["crosspath.train.spo", "crosspath.train.shaping", "crosspath.train.hints"]
MODULES += ["crosspath.train.data", "crosspath.train.format"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
