"""Result serialisation and text output."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionbatch.console import table
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


def test_write_json_is_atomic_and_readable(tmp_path: Path) -> None:
    target = write_json(tmp_path / "sub" / "plan.json", {"batch": 16})
    assert json.loads(target.read_text()) == {"batch": 16}
    assert [p.name for p in target.parent.iterdir()] == ["plan.json"]  # no temporary file left


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
