"""Ultralytics' detection and segmentation trainers with checkpoints that are whole or absent.

Ultralytics writes `last.pt` and `best.pt` in place (`Path.write_bytes`) every epoch, and rewrites
them in place again at the end (`strip_optimizer`): a full disk, a crash or SIGTERM in the middle
leaves a truncated checkpoint under the real name, and the previous good one is gone. These
subclasses write each checkpoint to a temporary name in the same folder and rename it into place,
so `last.pt` is always the last complete one.

Importing this module imports Ultralytics: import it inside `ultralytics_compat.offline()` only. The
classes live at module level so Ultralytics' DDP launcher can import them in its workers.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import ultralytics.engine.trainer as _trainer_module
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


class AtomicCheckpoints:
    """Mixin: `save_model` and `final_eval` write checkpoints to a temporary name, then rename."""

    def save_model(self) -> Any:
        final_last, final_best = Path(self.last), Path(self.best)
        self.last, self.best = _partial_name(final_last), _partial_name(final_best)
        try:
            saved = super().save_model()
            for partial, final in ((self.last, final_last), (self.best, final_best)):
                if partial.exists():
                    os.replace(partial, final)
            return saved
        finally:
            for partial in (self.last, self.best):
                partial.unlink(missing_ok=True)
            self.last, self.best = final_last, final_best

    def final_eval(self) -> Any:
        original = _trainer_module.strip_optimizer
        _trainer_module.strip_optimizer = functools.partial(_atomic_strip_optimizer, original)
        try:
            return super().final_eval()
        finally:
            _trainer_module.strip_optimizer = original


def _atomic_strip_optimizer(strip: Any, f: str | Path = "best.pt", s: str = "", updates: dict | None = None) -> Any:
    """Ultralytics' strip_optimizer(f, s, updates), written to a temporary name and renamed to `s or f`."""
    target = Path(s or f)
    partial = _partial_name(target)
    try:
        result = strip(f, s=str(partial), updates=updates)
        os.replace(partial, target)
        return result
    finally:
        partial.unlink(missing_ok=True)


class AtomicDetectionTrainer(AtomicCheckpoints, DetectionTrainer):
    """Ultralytics' DetectionTrainer with whole-or-absent checkpoints."""


class AtomicSegmentationTrainer(AtomicCheckpoints, SegmentationTrainer):
    """Ultralytics' SegmentationTrainer with whole-or-absent checkpoints."""


TRAINERS = {"detect": AtomicDetectionTrainer, "segment": AtomicSegmentationTrainer}
