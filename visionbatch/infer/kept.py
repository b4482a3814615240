"""The choice an earlier run made for the same question: stored, and offered to the next run (`keep_choice=`).

Why: a device's speed moves between runs (on cpu-2, a shared 2-core machine, batch 1 measured 49 to 88
img/s in one afternoon), and any rule with a threshold on speed (70% busy, an interval's overlap) flips
when a run lands on the other side of it: the same command then gives batch 1 one time and batch 2 the
next. So `infer` remembers the policy it chose, and a later run with the same question keeps it while that
run's own measurements still carry it (`choice.keep_earlier`: within the constraints, at most 85% busy or
not measurably less capacity than a fresh choice, and no comfortable policy lower in p99 by a tenth of the
latency budget): hysteresis, which a deployment engineer wants from a tool re-run on the same camera setup. A change that makes it fail moves the answer, and says why.

The question (`choice_key`): the model file's bytes, the backend and its provider, precision, imgsz,
end_to_end, the device (its name, CPU count and threads), the target, the batch sizes tried, the
constraints as asked (latency, memory_budget= or memory_fraction=, streams x fps) and the software
versions. Any part that differs is
another entry.

An entry is `$XDG_CACHE_HOME/visionbatch/choices/<key hash>.json` (`results.json_sha256`), written whole
(`files.atomic_write_text`) under the folder's lock. It holds plain JSON, read field by field with their types checked: nothing in it
can run code, and an entry that cannot be read is no entry (the next choice replaces it).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from visionbatch.files import (
    UnusableEntry,
    atomic_write_text,
    cache_entry_files,
    cache_entry_size,
    config_dir,
    entry_field,
    locked_folder,
    read_json_entry,
    remove_cache_entries,
)
from visionbatch.infer.plan import EarlierChoice
from visionbatch.results import json_sha256, to_jsonable, utc_timestamp
from visionbatch.text import printable

FORMAT = 1  # the entry layout; another value is no entry
MAX_ENTRY_BYTES = 1 << 20  # an entry is a few hundred bytes: anything this large is not one
MAX_NUMBER = 1 << 53  # the largest integer a float holds exactly: a larger stored number is no entry's


def choices_dir() -> Path:
    """Where the entries live: `$XDG_CACHE_HOME/visionbatch/choices` (made by the first entry written)."""
    return config_dir() / "choices"


def choice_key(*, model_sha256: str, model: str, backend: str, provider: str, precision: str, imgsz: int,
               end_to_end: bool, device: str, device_name: str, threads: int | None, target: str | None,
               batch_sizes: tuple[int, ...], latency_ms: float | None, memory_budget_bytes: int | None,
               memory_fraction: float | None, streams: int | None, fps: float | None,
               software: Mapping[str, str]) -> dict[str, Any]:
    """The question a choice answers, as a readable dict (see the module's docstring).

    The memory budget is keyed as asked (`memory_budget=`, `memory_fraction=`), never as computed: a budget
    taken as a share of the memory free right now differs on every run. `choice.keep_earlier` holds a kept
    batch to this run's computed budget all the same.

    Examples:
        >>> key = choice_key(model_sha256="ab", model="m.onnx", backend="onnxruntime", provider="CPU",
        ...                  precision="fp32", imgsz=320, end_to_end=False, device="cpu", device_name="EPYC",
        ...                  threads=2, target=None, batch_sizes=(1, 2), latency_ms=500, memory_budget_bytes=None,
        ...                  memory_fraction=None, streams=4, fps=10, software={"onnxruntime": "1.32.0"})
        >>> key["load"], key["device"]["cpu_count"] == os.cpu_count()
        ({'streams': 4, 'fps': 10.0}, True)
    """
    return {
        "format": FORMAT,
        "model": {"name": Path(model).name, "sha256": model_sha256},
        "runner": {"backend": backend, "provider": provider, "precision": precision, "imgsz": int(imgsz),
                   "end_to_end": bool(end_to_end), "batch_sizes": [int(b) for b in batch_sizes]},
        "device": {"device": device, "name": device_name, "cpu_count": os.cpu_count(), "threads": threads,
                   "target": target},
        "constraints": {"latency_ms": None if latency_ms is None else float(latency_ms),
                        "memory_budget_bytes": memory_budget_bytes,
                        "memory_fraction": None if memory_fraction is None else float(memory_fraction)},
        "load": None if streams is None or fps is None else {"streams": int(streams), "fps": float(fps)},
        "software": dict(sorted(software.items())),
    }


def load_choice(key: Mapping[str, Any]) -> EarlierChoice | None:
    """The choice stored for `key`, or None: no entry, or one that cannot be read as one."""
    digest = json_sha256(dict(key))
    try:
        entry = read_json_entry(choices_dir() / f"{digest}.json", MAX_ENTRY_BYTES)  # a link, FIFO, huge file: none
    except (OSError, UnusableEntry):
        return None
    return choice_from_entry(entry, digest)


def choice_from_entry(entry: Any, digest: str) -> EarlierChoice | None:
    """An entry's choice, its fields checked by type; None for anything else.

    Examples:
        >>> entry = {"format": 1, "key_hash": "ab", "batch_size": 2, "queue_delay_ms": 25.0,
        ...          "run_dir": "runs/infer/infer", "chosen_at": "2026-11-30T15:00:00+00:00"}
        >>> choice_from_entry(entry, "ab").describe()
        'batch 2 (queue delay 25 ms), chosen 2026-11-30T15:00:00+00:00 in runs/infer/infer'
        >>> choice_from_entry({**entry, "batch_size": "2"}, "ab") is None, choice_from_entry(entry, "cd") is None
        (True, True)
        >>> choice_from_entry({**entry, "run_dir": "x\\n\\x1b[31m"}, "ab").run_dir  # shown as escapes
        'x\\\\n\\\\x1b[31m'
        >>> choice_from_entry({**entry, "chosen_at": "yesterday"}, "ab") is None
        True
    """
    if _choice_problem(entry, digest) is not None:
        return None
    batch, delay = entry["batch_size"], entry.get("queue_delay_ms")
    run_dir, chosen_at = entry["run_dir"], entry["chosen_at"]
    return EarlierChoice(batch, None if delay is None else float(delay), printable(run_dir, 300), chosen_at)


def _choice_problem(entry: Any, digest: str) -> str | None:
    """Why an entry holds no choice `load_choice` would use (one rule for reading and for listing); None if it does.

    Examples:
        >>> _choice_problem({"format": 1, "key_hash": "ab", "batch_size": 0}, "ab")
        'its batch is not a whole number of at least 1'
    """
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return f"not an entry of format {FORMAT}"
    if entry.get("key_hash") != digest:
        return "its key hash is not its name"
    batch, delay = entry.get("batch_size"), entry.get("queue_delay_ms")
    if type(batch) is not int or not 1 <= batch <= MAX_NUMBER:
        return "its batch is not a whole number of at least 1"
    # a stored delay is also held to this run's grid of delays (`choice.keep_earlier`)
    if delay is not None and (not _number(delay) or delay < 0):
        return "its queue delay is not a number of ms of at least 0"
    if not isinstance(entry.get("run_dir"), str):
        return "no run folder"
    try:
        datetime.datetime.fromisoformat(entry.get("chosen_at"))
    except (TypeError, ValueError):
        return "no time it was chosen"
    return None


def store_choice(key: Mapping[str, Any], batch_size: int, queue_delay_ms: float | None, run_dir: str,
                 chosen_at: str | None = None) -> Path:
    """Write the entry for `key` (whole, under the folder's lock); return its path.

    Raises:
        StorageError: the disk failed while the entry was written (`files.atomic_path`).
        OSError: the folder cannot be made or locked.
    """
    digest = json_sha256(dict(key))
    entry = {"format": FORMAT, "key_hash": digest, "batch_size": int(batch_size),
             "queue_delay_ms": None if queue_delay_ms is None else float(queue_delay_ms), "run_dir": str(run_dir),
             "chosen_at": chosen_at or utc_timestamp(), "key": to_jsonable(dict(key))}
    folder = choices_dir()
    with locked_folder(folder):
        return atomic_write_text(folder / f"{digest}.json", json.dumps(entry, indent=1, allow_nan=False) + "\n")


@dataclasses.dataclass(frozen=True, slots=True)
class KeptChoice:
    """One kept choice, as `visionbatch cache list` shows it. Text read from the entry is made printable
    (`text.printable`): an entry is a file on disk, and its text ends up on a terminal.

    Attributes:
        key_hash: the question's SHA-256 (the file's name).
        chosen_at: when it was first chosen (ISO 8601, UTC); None when the entry is unusable.
        model: the model file's name.
        runner: the backend and precision ('onnxruntime/fp32').
        imgsz: the image size.
        load: the camera load ('4 x 10 fps'); None when the question had none.
        batch_size, queue_delay_ms: the policy kept.
        run_dir: the run that first chose it.
        size_bytes: the entry file's size.
        path: the entry file.
        key: the whole question (None when unusable).
        problem: why the entry cannot be used (None when it can): the next infer of its question replaces it.
    """

    key_hash: str
    chosen_at: str | None
    model: str | None
    runner: str | None
    imgsz: int | None
    load: str | None
    batch_size: int | None
    queue_delay_ms: float | None
    run_dir: str | None
    size_bytes: int
    path: str
    key: dict[str, Any] | None = None
    problem: str | None = None


def list_choices() -> tuple[KeptChoice, ...]:
    """Every kept choice, newest first; unusable ones too, with their problem. Makes nothing."""
    rows = [_row(path) for path in cache_entry_files(choices_dir())]
    rows.sort(key=lambda row: (row.chosen_at or "", row.key_hash), reverse=True)
    return tuple(rows)


def _row(path: Path) -> KeptChoice:
    """One entry file as a `KeptChoice`: its fields checked by type as `load_choice` checks them."""
    digest, size = path.stem, cache_entry_size(path)
    try:
        entry = read_json_entry(path, MAX_ENTRY_BYTES)
    except FileNotFoundError:
        return _unusable(digest, size, path, "no entry (removed while listed)")
    except UnusableEntry as exc:
        return _unusable(digest, size, path, str(exc))
    problem = _choice_problem(entry, digest)
    key = entry.get("key") if isinstance(entry, dict) else None
    model, runner = entry_field(key, "model"), entry_field(key, "runner")
    if problem is None and not (isinstance(entry_field(model, "name"), str) and isinstance(runner, dict)):
        problem = "its question names no model or runner"
    if problem is not None:
        return _unusable(digest, size, path, problem)
    imgsz, load = runner.get("imgsz"), entry_field(key, "load")
    streams, fps = entry_field(load, "streams"), entry_field(load, "fps")
    delay = entry.get("queue_delay_ms")
    return KeptChoice(
        key_hash=digest, chosen_at=printable(entry["chosen_at"], 40), model=printable(model["name"], 80),
        runner=f"{_text(runner.get('backend'), 40)}/{_text(runner.get('precision'), 20)}",
        imgsz=imgsz if type(imgsz) is int else None,
        load=f"{streams} x {fps:g} fps" if type(streams) is int and _number(streams) and _number(fps) else None,
        batch_size=entry["batch_size"], queue_delay_ms=None if delay is None else float(delay),
        run_dir=printable(entry["run_dir"], 300), size_bytes=size, path=str(path), key=key,
    )


def _unusable(digest: str, size: int, path: Path, problem: str) -> KeptChoice:
    return KeptChoice(digest, None, None, None, None, None, None, None, None, size, str(path),
                      problem=printable(problem, 200))


def _text(value: Any, limit: int) -> str:
    """Text from an entry for a terminal: printable, or '-' when the entry holds no text there."""
    return printable(value, limit) if isinstance(value, str) else "-"


def _number(value: Any) -> bool:
    """A JSON number a float holds: finite, and no integer beyond 2**53 (a huge one overflows `float`).

    Examples:
        >>> _number(25.0), _number(3), _number(10 ** 400), _number(float("nan")), _number(True), _number("1")
        (True, True, False, False, False, False)
    """
    if type(value) is int:
        return abs(value) <= MAX_NUMBER
    return type(value) is float and math.isfinite(value)


def count_choices() -> int:
    """How many choices are kept."""
    return len(cache_entry_files(choices_dir()))


def clear_choices(prefix: str | None = None) -> tuple[str, ...]:
    """Remove every kept choice (and leftovers of killed writers), or the one whose key starts with `prefix`, under
    the folder's lock; return the key hashes removed.

    Raises:
        ConfigError: `prefix` is not hex digits, or it starts more than one choice's key.
    """
    return remove_cache_entries(choices_dir(), prefix)
