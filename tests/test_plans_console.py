"""Result serialisation and text output."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from visionbatch.console import table
from visionbatch.errors import StorageError
from visionbatch.results import to_jsonable, write_json
from visionbatch.units import human_bytes


@dataclass(frozen=True, slots=True)
class _Value:
    path: Path
    sizes: tuple[int, ...]
    score: float


def test_to_jsonable() -> None:
    value = _Value(Path("/a/b"), (1, 2), math.nan)
    assert to_jsonable(value) == {"path": "/a/b", "sizes": [1, 2], "score": None}
    assert to_jsonable({"n": np.int64(3), "x": np.float32(0.5)}) == {"n": 3, "x": 0.5}


def test_write_json_is_readable_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = write_json(tmp_path / "sub" / "plan.json", {"batch": 16})
    assert json.loads(target.read_text()) == {"batch": 16}
    assert [p.name for p in target.parent.iterdir()] == ["plan.json"]  # no temporary file left


def test_write_json_interrupted_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    """The disk refuses the write half-way (a file size limit, whatever call writes): the old file stays whole."""
    resource = pytest.importorskip("resource")
    import signal

    target = write_json(tmp_path / "plan.json", {"batch": 8})
    old = target.read_bytes()
    limit = 4096
    before_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    before_signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, before_limit[1]))
    try:
        with pytest.raises((OSError, StorageError)):
            write_json(target, {"batch": 16, "samples": ["x" * 100] * 200})  # ~21 KB, over the limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before_limit)
        signal.signal(signal.SIGXFSZ, before_signal)
    assert target.read_bytes() == old  # a direct write would have left 4096 bytes of the new JSON here
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # and the partial temporary file is gone


def test_write_json_whose_rename_fails_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_json(tmp_path / "plan.json", {"batch": 8})
    old = target.read_bytes()

    def refuse(src, dst, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(PermissionError):
        write_json(target, {"batch": 16})
    monkeypatch.undo()
    assert target.read_bytes() == old  # the new JSON never reached the real name without the rename
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_human_bytes() -> None:
    assert [human_bytes(v) for v in (0, 1023, 1024, 10.5 * 2**20, 150 * 2**20, 1000 * 2**20, 3 * 2**30)] == [
        "0 B", "1023 B", "1.00 KiB", "10.5 MiB", "150 MiB", "1000 MiB", "3.00 GiB"]


def test_table_alignment() -> None:
    text = table(["batch", "memory", "note"], [[8, "1.50 GiB", "ok"], [16, "2.90 GiB", None]])
    assert text.splitlines() == [
        "batch    memory  note",
        "-----  --------  ----",
        "    8  1.50 GiB  ok",
        "   16  2.90 GiB  -",
    ]
