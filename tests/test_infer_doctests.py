"""The Examples in the infer modules' docstrings are exact answers: run them."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["infer.plan", "infer.choice", "infer.sweep", "devices.jetson", "infer.deploy", "infer.ort", "text"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"visionbatch.{module}"))
    assert result.attempted > 0 and result.failed == 0
