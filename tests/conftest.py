"""Shared fixtures: the shipped dataset, small mutable copies of it, and a clean working folder."""

from __future__ import annotations

import gc
import hashlib
import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "datasets" / "shapes"
SHAPES_YAML = SHAPES / "data.yaml"
ULTRALYTICS_HANDLER = "ultralytics.utils.set_logging"  # the name Ultralytics gives its console handler


@pytest.fixture
def shapes_yaml() -> Path:
    return SHAPES_YAML


def copy_shapes(dest: Path, n_train: int = 8, n_val: int = 4, dense: bool = True) -> Path:
    """A small copy of datasets/shapes under `dest`; returns its data.yaml.

    With `dense`, the densest training image (90 objects) is among the copied ones, so the copy
    keeps the shipped dataset's worst label density.
    """
    for split, count in (("train", n_train), ("val", n_val)):
        images = sorted((SHAPES / "images" / split).glob("*.jpg"))[:count]
        if dense and split == "train":
            densest = SHAPES / "images" / "train" / "train_0104.jpg"
            images = images[: count - 1] + [densest]
        for image in images:
            label = SHAPES / "labels" / split / f"{image.stem}.txt"
            (dest / "images" / split).mkdir(parents=True, exist_ok=True)
            (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, dest / "images" / split / image.name)
            shutil.copy(label, dest / "labels" / split / label.name)
    shutil.copy(SHAPES_YAML, dest / "data.yaml")
    return dest / "data.yaml"


@pytest.fixture
def small_shapes(tmp_path: Path) -> Path:
    """A data.yaml of 8 train and 4 val images, in a folder the test may change."""
    return copy_shapes(tmp_path / "shapes")


@pytest.fixture
def make_shapes(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_shapes(n_train, n_val) -> data.yaml of a fresh copy."""
    counter = iter(range(1000))

    def make(n_train: int = 8, n_val: int = 4, dense: bool = True) -> Path:
        return copy_shapes(tmp_path / f"shapes{next(counter)}", n_train, n_val, dense)

    return make


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from an empty folder, so runs/ lands there."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def tree_digest(folder: Path, ignore_suffixes: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder`: to prove nothing was changed, added (a label cache) or removed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix not in ignore_suffixes
    }


@pytest.fixture(autouse=True)
def _ultralytics_logs_to_this_tests_stdout():
    """Ultralytics' log handler keeps the stdout it was created with; pytest replaces stdout per test."""
    import logging
    import sys

    for handler in logging.getLogger("ultralytics").handlers:
        if handler.get_name() == ULTRALYTICS_HANDLER:  # not pytest's own capture handlers
            handler.stream = sys.stdout  # not setStream(): it flushes the old, possibly closed, stream
    yield


@pytest.fixture(autouse=True)
def _collections_skip_what_outlived_the_last_test() -> None:
    """Garbage collections leave out what was alive before this test: imported libraries, fixtures, caches.

    Every probe runs gc.collect() around its step, and Ultralytics does at each epoch. With torch, Ultralytics and
    matplotlib loaded, one full collection walks some 400,000 objects: a fifth of the suite's time went there.
    The last test's garbage is collected first, so only live objects are frozen; the collector still sees and
    frees everything this test makes. (Freezing changes what a collection walks, not what refcounting frees.)
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="session")
def _visionbatch_cache(tmp_path_factory: pytest.TempPathFactory):
    """visionbatch's cache (dataset mirrors, Ultralytics' settings and font) in this session's own folder."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def _plan_cache_per_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty plan cache (`fit.cache`): a plan another test fitted (on a patched probe,
    say) is never reused, and a test that fits twice sees the second fit come from the cache only if it asks."""
    from visionbatch.fit import cache
    from visionbatch.infer import kept

    folder = tmp_path_factory.getbasetemp() / "plan-caches" / f"{next(_PLAN_CACHES)}"
    monkeypatch.setattr(cache, "plans_dir", lambda: folder)  # made by the first entry a test writes
    monkeypatch.setattr(kept, "choices_dir", lambda: folder / "choices")  # infer's kept choices, likewise


_PLAN_CACHES = itertools.count()
