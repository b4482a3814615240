"""Result values: frozen, JSON-able dataclasses that explain themselves.

Each result type has `to_dict()` (plain JSON types) and is written next to its run with
`write_json()`. Types of a capability that grows (batch plans, augmentation reports, inference
plans) live beside it and use the same helpers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Dataclasses, paths, tuples and NumPy scalars as plain JSON types; NaN and inf as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(value), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclasses.dataclass(frozen=True, slots=True)
class EpochRecord:
    """One training epoch as measured by visionbatch's callbacks.

    Attributes:
        epoch: 1-based epoch number.
        train_s: wall seconds of the training loop.
        val_s: wall seconds of validation (0 when validation was off).
        peak_rss_bytes: the process's peak resident memory during the epoch (CPU memory).
        cuda_peak_allocated_bytes: torch.cuda peak allocated during the epoch, None on CPU.
        cuda_peak_reserved_bytes: torch.cuda peak reserved during the epoch, None on CPU.
        losses: mean training losses by name.
        metrics: validation metrics by Ultralytics' names.
        mosaic: whether mosaic augmentation was on.
    """

    epoch: int
    train_s: float
    val_s: float
    peak_rss_bytes: int | None
    cuda_peak_allocated_bytes: int | None
    cuda_peak_reserved_bytes: int | None
    losses: dict[str, float]
    metrics: dict[str, float]
    mosaic: bool


@dataclasses.dataclass(frozen=True, slots=True)
class TrainResult:
    """What `visionbatch train` ran and what it measured; written as `visionbatch.json`.

    Attributes:
        status: 'completed', 'interrupted' or 'failed'.
        save_dir: Ultralytics' run folder.
        task: 'detect' or 'segment'.
        model: the model argument that was trained.
        data: the data.yaml trained on.
        device: the torch device used, e.g. 'cpu' or 'cuda:0'.
        device_name: the CPU or GPU model.
        cpu_threads: torch threads during training.
        batch_size: the batch size trained with.
        batch_source: how it was chosen, e.g. 'batch=16', 'default', 'fit (plan.json)'.
        args: the arguments passed to Ultralytics, after visionbatch's defaults.
        versions: package versions.
        epochs: per-epoch measurements.
        setup_s: seconds from the call to the first epoch's start (checks, model build, loaders).
        wall_s: seconds for the whole call.
        final_metrics: metrics of the final validation of best.pt.
        best: path of best.pt, if saved.
        last: path of last.pt, if saved.
        error: the error message when status is 'failed'.
        notes: things the user should know (resolved paths, refused defaults).
    """

    status: str
    save_dir: str
    task: str
    model: str
    data: str
    device: str
    device_name: str
    cpu_threads: int
    batch_size: int
    batch_source: str
    args: dict[str, Any]
    versions: dict[str, str]
    epochs: tuple[EpochRecord, ...]
    setup_s: float
    wall_s: float
    final_metrics: dict[str, float]
    best: str | None
    last: str | None
    error: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @property
    def epoch_s(self) -> float | None:
        """Mean wall seconds per epoch (train + validation)."""
        if not self.epochs:
            return None
        return sum(e.train_s + e.val_s for e in self.epochs) / len(self.epochs)
