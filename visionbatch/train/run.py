"""`visionbatch train`: check the inputs, choose the batch, run real Ultralytics training, record it.

The flow is `prepare()` (pure checks: arguments, dataset, task, model, batch; no training) then
`run()` (Ultralytics' own `YOLO(model).train(**args)`, with callbacks that time each epoch and
read its peak memory). Every Ultralytics argument passes through with Ultralytics' meaning;
visionbatch only fills defaults that work offline and refuses inputs that would fail later.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from visionbatch.devices.memory import (
    cuda_peaks,
    cuda_reset_peaks,
    device_name,
    peak_rss_bytes,
    reset_peak_rss,
)
from visionbatch.errors import ConfigError, StorageError
from visionbatch.files import atomic_write_text, is_disk_error, storage_error
from visionbatch.fit.plan import BatchPlan
from visionbatch.results import write_json
from visionbatch.staging import staged_dataset
from visionbatch.train.result import EpochRecord, PlanCheck, PlanSummary, TrainResult
from visionbatch.ultralytics.job import TrainingJob, prepare
from visionbatch.ultralytics.offline import (
    offline,
    trusted_checkpoints,
    versions,
)

SUMMARY_NAME = "visionbatch.json"
PLAN_NAME = "batch_plan.json"
RESOLVED_YAML_NAME = "data.resolved.yaml"  # the data.yaml Ultralytics reads: absolute paths into the mirror


def choose_batch(job: TrainingJob) -> TrainingJob:
    """Fill in the batch size: the user's, the default, or one fitted to the device (`fit_job`)."""
    if not job.batch.fit:
        if "memory_budget" in job.options:
            raise ConfigError(f"memory_budget={job.options['memory_budget']} only applies with batch=auto: "
                              f"drop it, or use batch=auto to fit the batch to it")
        return job
    from ultralytics.utils import LOGGER

    from visionbatch.fit.api import FitOptions, fit_job, resolve_device
    from visionbatch.ultralytics.density import DEFAULT_OOM_RISK
    from visionbatch.units import human_bytes

    memory_budget = job.options.get("memory_budget")
    options = FitOptions.check(device=job.args.get("device"), memory_fraction=job.batch.memory_fraction,
                               memory_budget=memory_budget, imgsz=job.args.get("imgsz"),
                               labels_per_image=job.options.get("labels_per_image"),
                               oom_risk=job.options.get("oom_risk", DEFAULT_OOM_RISK))
    resolve_device(options.device, memory_budget)  # refuse before any work
    LOGGER.info(f"visionbatch: {job.batch.source}: fitting the batch to {job.batch.memory_fraction:g} of the "
                f"device's memory by measuring the training step...")
    plan = fit_job(job, options)  # the job as prepared: the dataset is not read again
    note = (f"batch {plan.batch_size} from the fit ({plan.reason}); predicted peak "
            f"{human_bytes(plan.predicted_bytes)} of a {human_bytes(plan.budget_bytes)} budget")
    return replace(job, args={**job.args, "batch": plan.batch_size}, plan=plan, notes=job.notes + (note,))


def mosaic_on(dataset: Any) -> bool:
    """Whether the dataset's transform chain still applies Mosaic (close_mosaic sets its p to 0)."""
    pending, seen = [getattr(dataset, "transforms", None)], 0
    while pending and seen < 1000:
        item = pending.pop()
        seen += 1
        if type(item).__name__ == "Mosaic":
            return float(getattr(item, "p", 0.0)) > 0
        pending.extend(getattr(item, "transforms", None) or [])
    return False


@dataclass
class EpochTelemetry:
    """Ultralytics callbacks that time each epoch and read its memory peaks."""

    resolved_yaml: dict
    plan: BatchPlan | None = None
    records: dict[int, EpochRecord] = field(default_factory=dict)
    save_dir: Path | None = None
    device: Any = None
    cpu_threads: int = 0
    first_epoch_at: float | None = None
    _epoch_start: float = 0.0
    _train_end: float = 0.0
    _epoch_open: bool = False

    def callbacks(self) -> dict[str, Callable]:
        return {
            "on_pretrain_routine_start": self.on_pretrain_routine_start,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_epoch_end": self.on_train_epoch_end,
            "on_fit_epoch_end": self.on_fit_epoch_end,
        }

    def on_pretrain_routine_start(self, trainer) -> None:
        self.save_dir = Path(trainer.save_dir)
        self.device = trainer.device
        # before get_dataset(): Ultralytics reads (and records) this copy, never the user's YAML (staging.py)
        copy = atomic_write_text(self.save_dir / RESOLVED_YAML_NAME,
                                 yaml.safe_dump(self.resolved_yaml, sort_keys=False, allow_unicode=True))
        trainer.args.data = str(copy)
        if self.plan is not None:
            from visionbatch.fit.api import write_plan

            write_plan(self.plan, self.save_dir, PLAN_NAME)

    def on_train_epoch_start(self, trainer) -> None:
        import torch

        if self.first_epoch_at is None:
            self.first_epoch_at = time.perf_counter()
        self.cpu_threads = torch.get_num_threads()
        reset_peak_rss()
        if trainer.device.type == "cuda":
            cuda_reset_peaks(trainer.device)
        self._epoch_start = time.perf_counter()
        self._epoch_open = True

    def on_train_epoch_end(self, trainer) -> None:
        self._train_end = time.perf_counter()

    def on_fit_epoch_end(self, trainer) -> None:
        if not self._epoch_open:
            return  # final_eval fires this event again after the last epoch
        self._epoch_open = False
        epoch = trainer.epoch + 1
        allocated = reserved = None
        if trainer.device.type == "cuda":
            allocated, reserved = cuda_peaks(trainer.device)
        losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
        self.records[epoch] = EpochRecord(
            epoch=epoch,
            train_s=round(self._train_end - self._epoch_start, 3),
            val_s=round(time.perf_counter() - self._train_end, 3),
            peak_rss_bytes=peak_rss_bytes(),
            cuda_peak_allocated_bytes=allocated,
            cuda_peak_reserved_bytes=reserved,
            losses={k: float(v) for k, v in losses.items()},
            metrics={k: float(v) for k, v in (trainer.metrics or {}).items()},
            mosaic=mosaic_on(getattr(trainer.train_loader, "dataset", None)),
        )


def run(job: TrainingJob, started: float | None = None) -> TrainResult:
    """Train with Ultralytics and write `visionbatch.json` into the run folder, also on failure.

    Ultralytics gets a linked mirror of the checked dataset (staging.py), never the user's folders;
    checkpoints load safely unless `trust_checkpoint=True`; checkpoints are written whole
    (trainers.py).

    Raises:
        StorageError: the disk filled up (or is read-only) while the run wrote its files.
    """
    started = time.perf_counter() if started is None else started
    status, error, yolo, probe = "failed", None, None, None
    with offline(), staged_dataset(job.dataset) as staged, \
            trusted_checkpoints(bool(job.options.get("trust_checkpoint"))):
        from ultralytics import YOLO
        from ultralytics.utils import LOGGER

        from visionbatch.ultralytics.trainers import TRAINERS

        probe = EpochTelemetry(staged.content, job.plan)
        LOGGER.info(_header(job))
        try:
            yolo = YOLO(job.model, task=job.task)
            for event, callback in probe.callbacks().items():
                yolo.add_callback(event, callback)
            if job.options.get("augcost"):  # after the telemetry callback, which records save_dir first
                from visionbatch.augment import training_callback

                yolo.add_callback("on_pretrain_routine_start", training_callback(job.dataset.yaml_path, job.args))
            yolo.train(trainer=TRAINERS[job.task], **{**job.args, "data": str(staged.yaml_path)})
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"
            if is_disk_error(exc):
                raise storage_error(exc, probe.save_dir or job.args["project"], "the run's files") from None
            raise
        finally:
            result = _result(job, probe, yolo, status, error, started)
            if probe.save_dir is not None:
                try:
                    write_json(probe.save_dir / SUMMARY_NAME, result)
                except StorageError:
                    if status == "completed":
                        raise
                    # otherwise the error on its way out already says what went wrong
    return result


def _header(job: TrainingJob) -> str:
    lines = [
        f"visionbatch: {job.task} {job.model} on {job.dataset.yaml_path}",
        f"visionbatch: {job.dataset.describe()}",
        f"visionbatch: batch {job.batch_size} ({job.batch.source})",
    ]
    return "\n".join(lines + [f"visionbatch: note: {note}" for note in job.notes])


def _result(job: TrainingJob, probe: EpochTelemetry, yolo: Any, status: str, error: str | None, started: float
            ) -> TrainResult:
    trainer = getattr(yolo, "trainer", None)
    device = probe.device if probe.device is not None else getattr(trainer, "device", None)
    final = {}
    best = last = None
    if trainer is not None and status == "completed":
        final = {k: float(v) for k, v in (trainer.metrics or {}).items() if isinstance(v, (int, float))}
        best = str(trainer.best) if Path(trainer.best).exists() else None
        last = str(trainer.last) if Path(trainer.last).exists() else None
    first_epoch = probe.first_epoch_at
    return TrainResult(
        status=status,
        save_dir=str(probe.save_dir) if probe.save_dir else "",
        task=job.task,
        model=job.model,
        data=job.dataset.yaml_path,
        device=str(device) if device is not None else "",
        device_name=device_name(device) if device is not None else "",
        cpu_threads=probe.cpu_threads,
        batch_size=int(getattr(trainer, "batch_size", job.batch_size) or job.batch_size),
        batch_source=job.batch.source,
        args={k: v for k, v in job.args.items()},
        versions=versions(),
        epochs=tuple(probe.records[k] for k in sorted(probe.records)),
        setup_s=round((first_epoch or time.perf_counter()) - started, 3),
        wall_s=round(time.perf_counter() - started, 3),
        final_metrics=final,
        best=best,
        last=last,
        error=error,
        notes=job.notes,
        batch_plan=PlanSummary.of(job.plan, PLAN_NAME) if job.plan else None,
        memory_vs_plan=_memory_vs_plan(job.plan, probe.records),
    )


def _memory_vs_plan(plan: BatchPlan | None, records: Mapping[int, EpochRecord]) -> tuple[PlanCheck, ...]:
    """Each epoch's measured peak next to the plan's prediction, in the same units where possible."""
    if plan is None:
        return ()
    rows = []
    for epoch in sorted(records):
        record = records[epoch]
        if record.cuda_peak_reserved_bytes is not None:
            measured, what = record.cuda_peak_reserved_bytes + plan.context_bytes, "CUDA peak reserved + context"
        else:
            measured, what = record.peak_rss_bytes, "process peak RSS (the plan counts tensors only)"
        rows.append(PlanCheck(epoch=epoch, predicted_bytes=plan.predicted_bytes, measured_bytes=measured,
                              measured_over_predicted=round(measured / plan.predicted_bytes, 4) if measured else None,
                              measured=what))
    return tuple(rows)


def train(data: str | os.PathLike, /, **overrides: Any) -> TrainResult:
    """Train a YOLO detection or segmentation model offline with Ultralytics.

    Args:
        data: path to the dataset's data.yaml.
        **overrides: any Ultralytics train argument (`epochs=3`, `imgsz=320`, `task="segment"`,
            `model="yolo11s.yaml"`, `device=0`, ...), with Ultralytics' meaning; `augcost=True` first
            profiles the data pipeline (`profile_augmentation`) into the run folder.

    Returns:
        The run's `TrainResult`, also written as `visionbatch.json` in the run folder.

    Raises:
        ConfigError: an unknown key or impossible value.
        DatasetError: a data.yaml, image or label problem.

    Examples:
        >>> result = train("datasets/shapes/data.yaml", epochs=1, imgsz=64)  # doctest: +SKIP
        >>> result.status, result.task  # doctest: +SKIP
        ('completed', 'detect')
    """
    started = time.perf_counter()
    with offline():
        job = choose_batch(prepare(data, overrides))
        return run(job, started)
