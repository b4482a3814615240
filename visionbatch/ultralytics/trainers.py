"""Ultralytics' detection and segmentation trainers: whole-or-absent checkpoints, offline DDP workers, safe resume.

Ultralytics writes `last.pt` and `best.pt` in place (`Path.write_bytes`) every epoch, and rewrites
them in place again at the end (`strip_optimizer`): a full disk, a crash or SIGTERM in the middle
leaves a truncated checkpoint under the real name, and the previous good one is gone. These
subclasses write each checkpoint to a temporary name in the same folder and rename it into place,
so `last.pt` is always the last complete one (and `epoch<N>.pt` with `save_period=` a copy of it).

Ultralytics' DDP launcher runs each rank in a fresh interpreter that inherits only the environment,
so a worker enters `offline()` itself when its trainer is built. On `resume=`, Ultralytics adopts
the checkpoint's own arguments: a `distill_model` there must be a local file too.

Out of memory: Ultralytics' own first-epoch halving is turned off (it lets the effective batch
drift); an epoch's validation, or the final one, that runs out of memory runs again at half the
validation batch; a training step that runs out propagates to `visionbatch.train.run`, which
resumes from `last.pt` at a smaller batch, and `effective_batch` makes the resumed trainer
accumulate so that batch x accumulate stays what it was (`visionbatch/train/recovery.py`).

Importing this module imports Ultralytics: import it inside `ultralytics_compat.offline()` only. The
classes live at module level so Ultralytics' DDP launcher can import them in its workers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ultralytics.engine.trainer as _trainer_module
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer

from visionbatch.devices.oom import is_oom, read_oom
from visionbatch.errors import ConfigError
from visionbatch.files import atomic_copy
from visionbatch.results import utc_timestamp
from visionbatch.text import error_line
from visionbatch.ultralytics.offline import offline, offline_active

ULTRALYTICS_OOM_RETRIES = 3  # BaseTrainer._do_train halves the batch while its _oom_retries is below this


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


def torchrun_world_size(world_size: int, environ: Any = None) -> int:
    """The ranks DDP spans: torchrun's WORLD_SIZE in a worker it launched, where Ultralytics counts only `device=`.

    Ultralytics sets a trainer's world_size to the GPUs in `device=`, which is one machine's: under
    `torchrun --nnodes N` its process group (`_setup_ddp`) and each rank's share of `batch` need all
    N machines' ranks. A CPU run (world_size 0) and a run outside torchrun keep their own count.

    Examples:
        >>> torchrun_world_size(2, {"WORLD_SIZE": "8", "LOCAL_RANK": "1"}), torchrun_world_size(2, {})
        (8, 2)
        >>> torchrun_world_size(0, {"WORLD_SIZE": "8", "LOCAL_RANK": "0"})
        0
    """
    environ = os.environ if environ is None else environ
    launched = int(environ.get("WORLD_SIZE") or 1)
    if environ.get("LOCAL_RANK") is None or world_size < 1 or launched <= world_size:
        return world_size
    return launched


class AtomicCheckpoints:
    """Mixin: checkpoints written to a temporary name, then renamed; offline in DDP workers; safe resume."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        offline_in_ddp_worker()
        super().__init__(*args, **kwargs)
        self.world_size = torchrun_world_size(self.world_size)  # before _setup_ddp and the loaders read it

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
            return self._validating(super().final_eval, "final_val")  # stripping twice changes nothing
        finally:
            _trainer_module.strip_optimizer = original

    # -- out-of-memory recovery (visionbatch/train/recovery.py has the rules) ----------------------

    effective_batch: int | None = None  # set by visionbatch's telemetry: batch x accumulate to keep after a recovery
    started_batch: int | None = None  # the batch the run started with: the optimizer's choice keeps counting with it
    val_recoveries: tuple[dict, ...] = ()  # each validation that ran out of memory and ran again smaller
    val_batch_cap: int | None = None  # set by visionbatch's telemetry: the validation batch a recovery found to fit
    validating: bool = False  # True while a validation runs (and after one that ran out of memory at batch 1)

    def _model_train(self) -> None:
        super()._model_train()
        # Called at each epoch's start, after Ultralytics resets its OOM counter: marking its retries as used up
        # turns off its first-epoch halving, which lets the effective batch drift. visionbatch recovers instead.
        self._oom_retries = ULTRALYTICS_OOM_RETRIES

    def _build_train_pipeline(self) -> None:
        super()._build_train_pipeline()
        if self.effective_batch:  # after a recovery: accumulate so that batch x accumulate stays what it was
            accumulate = max(round(self.effective_batch / self.batch_size), 1)
            self.accumulate = accumulate if self.args.time else min(accumulate, len(self.train_loader) * self.epochs)
            decay = self.args.weight_decay * self.batch_size * self.accumulate / self.args.nbs  # as Ultralytics scales it
            for group in self.optimizer.param_groups:  # a resumed optimizer's state restores its own after this
                if group.get("param_group") in {"weight", "muon"}:
                    group["weight_decay"] = decay
        if self.val_batch_cap and self.test_loader.batch_size > self.val_batch_cap:
            self._shrink_validation(self.val_batch_cap)  # validation already ran out of memory above this

    def build_optimizer(self, model: Any, name: str = "auto", lr: float = 0.001, momentum: float = 0.9,
                        decay: float = 1e-5, iterations: float = 1e5) -> Any:
        if self.started_batch and self.batch_size != self.started_batch:  # optimizer=auto picks from this count
            iterations = math.ceil(len(self.train_loader.dataset) / max(self.started_batch, self.args.nbs)) * self.epochs
        return super().build_optimizer(model, name=name, lr=lr, momentum=momentum, decay=decay, iterations=iterations)

    def validate(self) -> Any:
        return self._validating(super().validate, "val")

    def _validating(self, validation: Callable[[], Any], phase: str) -> Any:
        """Run `validation`; on an out-of-memory error, run it again at half the validation batch (down to 1)."""
        while True:
            self.validating = True
            try:
                result = validation()
                self.validating = False
                return result
            except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is retried, the rest re-raised
                loader = getattr(self, "test_loader", None)
                old = int(getattr(loader, "batch_size", 0) or 0)
                if not is_oom(exc) or old <= 1 or self.world_size > 1 or os.environ.get("LOCAL_RANK") is not None:
                    raise  # under DDP one rank's retry would wait forever for the others' collectives
                self._record_val_oom(exc, phase, old)
            self._shrink_validation(max(old // 2, 1))

    def _record_val_oom(self, exc: BaseException, phase: str, old_batch: int) -> None:
        import torch
        from ultralytics.utils import LOGGER

        peak = read_oom(exc).needed_bytes()
        if peak is None and self.device.type == "cuda":
            peak = torch.cuda.max_memory_reserved(self.device)
        record = {"at": utc_timestamp(), "phase": phase, "epoch": self.epoch + 1, "old_batch": old_batch,
                  "new_batch": old_batch // 2, "peak_bytes": peak, "error": error_line(exc)}
        self.val_recoveries = (*self.val_recoveries, record)
        LOGGER.warning(f"visionbatch: out of memory in {'validation' if phase == 'val' else 'the final validation'} "
                       f"at batch {old_batch} (epoch {self.epoch + 1}): validating again at batch {old_batch // 2}; "
                       f"training is not touched")

    def _shrink_validation(self, batch_size: int) -> None:
        """A validation loader at `batch_size`, in place of the one that ran out (after its tensors are freed)."""
        import gc

        import torch
        from ultralytics.utils import LOCAL_RANK

        old = self.test_loader
        if hasattr(old, "close"):
            old.close()  # its workers and prefetched batches
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.test_loader = self.get_dataloader(self.data[self.args.split], batch_size=batch_size, rank=LOCAL_RANK,
                                               mode="val")
        if getattr(self, "validator", None) is not None:  # absent while the first pipeline is built
            self.validator.dataloader = self.test_loader


def atomic_strip_optimizer(strip: Any, f: str | Path = "best.pt", s: str = "", updates: dict | None = None) -> Any:
    """Ultralytics' strip_optimizer(f, s, updates), written to a temporary name and renamed to `s or f`."""
    target = Path(s or f)
    partial = _partial_name(target)

    def as_ultralytics_says_it(record: logging.LogRecord) -> bool:
        # its line names the temporary file ("... saved as .last.pt.123.partial"): say it as for the file itself
        if isinstance(record.msg, str) and str(partial) in record.msg:
            saved = f" saved as {target}," if s and Path(s) != Path(f) else ""
            record.msg = record.msg.replace(f" saved as {partial},", saved).replace(str(partial), str(target))
        return True

    logger = logging.getLogger("ultralytics")
    logger.addFilter(as_ultralytics_says_it)
    try:
        result = strip(f, s=str(partial), updates=updates)
        if partial.exists():  # strip_optimizer writes nothing for a checkpoint without a model
            os.replace(partial, target)
        return result
    finally:
        logger.removeFilter(as_ultralytics_says_it)
        partial.unlink(missing_ok=True)


class AtomicDetectionTrainer(AtomicCheckpoints, DetectionTrainer):
    """Ultralytics' DetectionTrainer with whole-or-absent checkpoints."""


class AtomicSegmentationTrainer(AtomicCheckpoints, SegmentationTrainer):
    """Ultralytics' SegmentationTrainer with whole-or-absent checkpoints."""


TRAINERS = {"detect": AtomicDetectionTrainer, "segment": AtomicSegmentationTrainer}
