"""Ultralytics' detection and segmentation trainers: whole-or-absent checkpoints, offline DDP workers, safe resume.

Ultralytics writes `last.pt` and `best.pt` in place (`Path.write_bytes`) every epoch, and rewrites
them in place again at the end (`strip_optimizer`): a full disk, a crash or SIGTERM in the middle
leaves a truncated checkpoint under the real name, and the previous good one is gone. These
subclasses write each checkpoint to a temporary name in the same folder and rename it into place,
so `last.pt` is always the last complete one (and `epoch<N>.pt` with `save_period=` a copy of it).

Ultralytics' DDP launcher runs each rank in a fresh interpreter that inherits only the environment,
so a worker enters `offline()` itself when its trainer is built. On `resume=`, Ultralytics adopts
the checkpoint's own arguments: a `distill_model` there must be a local file too.

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

from visionbatch.errors import ConfigError
from visionbatch.files import atomic_copy
from visionbatch.ultralytics.offline import offline, offline_active


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


_WORKER_OFFLINE: list[Any] = []  # a DDP worker's offline() context, entered once and held for the process


def offline_in_ddp_worker() -> None:
    """A DDP worker is a fresh interpreter that inherited only the environment: give it the whole offline set-up
    (the AMP check without its download, network settings off in memory, safe loading, visionbatch's font)."""
    if os.environ.get("LOCAL_RANK") is None or offline_active():
        return
    context = offline()
    context.__enter__()
    _WORKER_OFFLINE.append(context)


class AtomicCheckpoints:
    """Mixin: checkpoints written to a temporary name, then renamed; offline in DDP workers; safe resume."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        offline_in_ddp_worker()
        super().__init__(*args, **kwargs)

    def check_resume(self, overrides: dict) -> None:
        super().check_resume(overrides)  # takes the checkpoint's train_args, with visionbatch's data=
        if not self.args.resume:
            return
        distill = getattr(self.args, "distill_model", None)
        if distill and ("://" in str(distill) or not Path(str(distill)).expanduser().is_file()):
            raise ConfigError(f"resume: the checkpoint's distill_model={distill} is not a local file (visionbatch "
                              f"never downloads): add distill_model=<a local .pt>")
        # A checkpoint's own save_dir could point anywhere (into the dataset, over another run): the run being
        # resumed is the folder the checkpoint is in.
        weights = Path(str(self.args.resume)).resolve().parent
        self.args.save_dir = str(weights.parent if weights.name == "weights" else weights)

    def save_model(self) -> Any:
        final_last, final_best, period = Path(self.last), Path(self.best), self.save_period
        self.last, self.best = _partial_name(final_last), _partial_name(final_best)
        self.save_period = -1  # the epoch copy is made below, from the whole last.pt
        try:
            saved = super().save_model()
            for partial, final in ((self.last, final_last), (self.best, final_best)):
                if partial.exists():
                    os.replace(partial, final)
            if period > 0 and self.epoch % period == 0 and final_last.exists():
                atomic_copy(final_last, self.wdir / f"epoch{self.epoch}.pt")
            return saved
        finally:
            for partial in (self.last, self.best):
                partial.unlink(missing_ok=True)
            self.last, self.best, self.save_period = final_last, final_best, period

    def final_eval(self) -> Any:
        original = _trainer_module.strip_optimizer
        _trainer_module.strip_optimizer = functools.partial(atomic_strip_optimizer, original)
        try:
            return super().final_eval()
        finally:
            _trainer_module.strip_optimizer = original


def atomic_strip_optimizer(strip: Any, f: str | Path = "best.pt", s: str = "", updates: dict | None = None) -> Any:
    """Ultralytics' strip_optimizer(f, s, updates), written to a temporary name and renamed to `s or f`."""
    target = Path(s or f)
    partial = _partial_name(target)
    try:
        result = strip(f, s=str(partial), updates=updates)
        if partial.exists():  # strip_optimizer writes nothing for a checkpoint without a model
            os.replace(partial, target)
        return result
    finally:
        partial.unlink(missing_ok=True)


class AtomicDetectionTrainer(AtomicCheckpoints, DetectionTrainer):
    """Ultralytics' DetectionTrainer with whole-or-absent checkpoints."""


class AtomicSegmentationTrainer(AtomicCheckpoints, SegmentationTrainer):
    """Ultralytics' SegmentationTrainer with whole-or-absent checkpoints."""


TRAINERS = {"detect": AtomicDetectionTrainer, "segment": AtomicSegmentationTrainer}
