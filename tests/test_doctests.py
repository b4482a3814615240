"""Every Examples section in visionbatch runs: a docstring's example is an exact answer, or it is marked +SKIP.

The modules are found on disk, so a new module's examples run without being listed here. Examples that train,
profile or tune for real (seconds to minutes) carry `# doctest: +SKIP` in place; the rest run here.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "visionbatch"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_with_examples() -> list[str]:
    """Every module whose source holds an interactive example; __main__ runs the CLI when imported, and has none."""
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py")
                  if path.name != "__main__.py" and ">>> " in path.read_text(encoding="utf-8"))


MODULES = modules_with_examples()
# modules whose every example trains, profiles, sweeps or tunes for real: shown, not run
ONLY_ILLUSTRATIONS = {"visionbatch.augment.profile", "visionbatch.fit.sweep", "visionbatch.infer.tune",
                      "visionbatch.train.run"}


def test_the_examples_are_found() -> None:
    """The search above sees the package: a broken search would make every test below vanish, not fail."""
    assert len(MODULES) >= 30
    assert {"visionbatch", "visionbatch.console", "visionbatch.fit.curve", "visionbatch.infer.choice"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PACKAGE.parent)  # examples name datasets/shapes
    module = importlib.import_module(name)
    tests = [test for test in doctest.DocTestFinder().find(module, name) if test.examples]
    assert tests, f"{name} has '>>> ' in its source but no docstring example was found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted > 0 or name in ONLY_ILLUSTRATIONS, f"every example in {name} is marked +SKIP"
