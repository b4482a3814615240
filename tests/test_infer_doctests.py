"""The Examples in the infer modules' docstrings are exact answers: run them."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["plan", "choice", "sweep", "edge", "deploy", "ort", "text"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"visionbatch.infer.{module}"))
    assert result.attempted > 0 and result.failed == 0
