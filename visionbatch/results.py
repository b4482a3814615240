"""Result values as JSON: what every frozen result dataclass is written with.

Each result type lives beside its capability (`fit.plan`, `train.result`, `augment.report`,
`infer.plan`), has `to_dict()` (plain JSON types) and is written next to its run with
`write_json()`. A result type may name fields that are left out of its JSON when None
(`JSON_OPTIONAL`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any


def utc_timestamp() -> str:
    """Now, in UTC, to the second (ISO 8601): when a record was made, e.g. '2026-11-30T10:02:41+00:00'."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def minutes(timestamp: object) -> str:
    """A stored ISO 8601 time to the minute, as tables and notes show it ('2026-11-30 15:05'); '-' for none,
    or for anything else read from a file (never its text: it may not be a time).

    Examples:
        >>> minutes("2026-11-30T15:05:09+00:00"), minutes(None), minutes("\x1b[31mRED\x1b[0m")
        ('2026-11-30 15:05', '-', '-')
    """
    import re

    if not isinstance(timestamp, str) or not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d", timestamp):
        return "-"
    return timestamp[:16].replace("T", " ")


def json_sha256(value: Any) -> str:
    """SHA-256 of `value`'s canonical JSON (`to_jsonable`, keys sorted, no spaces): a cache entry's name.

    Examples:
        >>> json_sha256({"b": 1, "a": [1, 2]}) == json_sha256({"a": [1, 2], "b": 1})
        True
        >>> json_sha256({"a": 1})[:12]
        '015abd7f5cc5'
    """
    import hashlib

    text = json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def to_jsonable(value: Any) -> Any:
    """Dataclasses, paths, tuples and NumPy scalars as plain JSON types; NaN and inf as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        optional = getattr(value, "JSON_OPTIONAL", ())  # fields left out rather than written as null
        derived = getattr(value, "JSON_PROPERTIES", ())  # properties written after the fields
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.name in optional and getattr(value, f.name) is None)} | {
                name: to_jsonable(getattr(value, name)) for name in derived}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # NumPy and torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write `value` as indented JSON, atomically (a reader never sees half a file)."""
    from visionbatch.files import atomic_write_text

    return atomic_write_text(path, json.dumps(to_jsonable(value), indent=2) + "\n")


