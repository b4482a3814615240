"""`visionbatch train`: check the inputs, choose the batch, run real Ultralytics training, record it.

The flow is `prepare()` (pure checks: arguments, dataset, task, model, batch; no training) then
`run()` (Ultralytics' own `YOLO(model).train(**args)`, with callbacks that time each epoch and
read its peak memory). An out-of-memory error in training resumes from the last complete epoch at a
smaller batch with the same effective batch (`recovery.py`), up to `oom_retries=` times; one in
validation runs it again smaller. Every Ultralytics argument passes through with Ultralytics' meaning;
visionbatch only fills defaults that work offline and refuses inputs that would fail later.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from visionbatch.devices.memory import (
    cuda_peaks,
    cuda_reset_peaks,
    device_name,
    peak_rss_bytes,
    reset_peak_rss,
)
from visionbatch.devices.oom import is_oom, read_oom
from visionbatch.errors import (
    ConfigError,
    StorageError,
    TrainingOutOfMemoryError,
    VisionbatchError,
)
from visionbatch.files import atomic_write_text, is_disk_error, storage_error
from visionbatch.fit.distributed import DistributedPlan
from visionbatch.fit.plan import BatchPlan
from visionbatch.results import utc_timestamp, write_json
from visionbatch.staging import staged_dataset
from visionbatch.text import error_line
from visionbatch.train.recovery import (
    DEFAULT_OOM_RETRIES,
    Recovery,
    batch_after_oom,
    keep_effective,
)
from visionbatch.train.result import (
    DistributedSummary,
    EpochRecord,
    PlanCheck,
    PlanSummary,
    TrainResult,
)
from visionbatch.ultralytics.job import TrainingJob, prepare
from visionbatch.ultralytics.offline import (
    offline,
    trusted_checkpoints,
    versions,
)
from visionbatch.ultralytics.spec import NOMINAL_BATCH
from visionbatch.values import DEFAULT_MEMORY_FRACTION

if TYPE_CHECKING:  # types only: fit loads when a batch is fitted
    from visionbatch.fit.api import FitOptions

SUMMARY_NAME = "visionbatch.json"
PLAN_NAME = "batch_plan.json"
DDP_PLAN_NAME = "ddp_plan.json"  # a DDP run's plan: the per-GPU batch, the total, and every GPU's plan
RESOLVED_YAML_NAME = "data.resolved.yaml"  # the data.yaml Ultralytics reads: absolute paths into the mirror


def choose_batch(job: TrainingJob) -> TrainingJob:
    """Fill in the batch size: the user's, the default, or one fitted to the device (`fit_job`)."""
    if not job.batch.fit:
        if "memory_budget" in job.options:
            raise ConfigError(f"memory_budget={job.options['memory_budget']} only applies with batch=auto: "
                              f"drop it, or use batch=auto to fit the batch to it")
        return job
    from ultralytics.utils import LOGGER

    from visionbatch.fit.api import fit_job, resolve_device
    from visionbatch.units import human_bytes

    memory_budget = job.options.get("memory_budget")
    options = fit_options(job)
    distributed = _distributed_batch(job, options)  # several GPUs (DDP), or one of torchrun's ranks
    if distributed is not None:
        return distributed
    resolve_device(options.device, memory_budget)  # refuse before any work
    LOGGER.info(f"visionbatch: {job.batch.source}: fitting the batch to {job.batch.memory_fraction:g} of the "
                f"device's memory by measuring the training step...")
    from visionbatch.console import Progress

    with Progress("visionbatch train: batch=auto") as progress:  # each probe on stderr as it runs
        plan = fit_job(job, options, progress=progress)  # the job as prepared: the dataset is not read again
    note = (f"batch {plan.batch_size} from the fit ({plan.reason}); predicted peak "
            f"{human_bytes(plan.predicted_bytes)} of a {human_bytes(plan.budget_bytes)} budget")
    if plan.reused is not None:
        note += f"; the plan was {plan.reused.describe()}: plan_cache=False fits again"
    return replace(job, args={**job.args, "batch": plan.batch_size}, plan=plan, notes=job.notes + (note,))


def fit_options(job: TrainingJob) -> FitOptions:
    """How `batch=auto` fits this job (`fit.api.FitOptions`), from its train arguments and visionbatch keys."""
    from visionbatch.fit.api import FitOptions  # noqa: F811 - the run-time import of the type named above
    from visionbatch.ultralytics.density import DEFAULT_OOM_RISK

    return FitOptions.check(device=job.args.get("device"), memory_fraction=job.batch.memory_fraction,
                            memory_budget=job.options.get("memory_budget"), imgsz=job.args.get("imgsz"),
                            labels_per_image=job.options.get("labels_per_image"),
                            oom_risk=job.options.get("oom_risk", DEFAULT_OOM_RISK),
                            plan_cache=job.options.get("plan_cache", True))


def _forget_plan(job: TrainingJob) -> None:
    """Drop the cached plan of a run that ran out of memory, so the next `batch=auto` fits again."""
    if job.plan is None or not job.options.get("plan_cache", True) or job.plan.device.startswith("target"):
        return
    from visionbatch.fit.cache import discard_plan

    try:
        discard_plan(job, fit_options(job), job.plan.device)
    except (OSError, VisionbatchError):  # the cache is an aid: a failure to forget must not stop the recovery
        pass


def _distributed_batch(job: TrainingJob, options: Any) -> TrainingJob | None:
    """The job with a DDP run's batch (`fit.distributed`), or None for a run on one device.

    `device=0,1`: each GPU is fitted here, before Ultralytics starts its DDP workers. Under torchrun:
    local rank 0 of each node fits its node, and every rank gets the smallest node's per-GPU batch.
    Ultralytics is given the total (per-GPU batch x ranks), which it splits evenly.
    """
    import functools

    from ultralytics.utils import LOGGER

    from visionbatch.fit.api import fit_devices
    from visionbatch.fit.distributed import (
        agree_across_nodes,
        node_gpus,
        several_gpus,
        torchrun_env,
    )

    env = torchrun_env()
    gpus = several_gpus(options.device, options.memory_budget)  # one line for GPUs this machine does not have
    if env is None and not gpus:
        return None
    if env is None:
        LOGGER.info(f"visionbatch: {job.batch.source}: fitting the per-GPU batch of DDP on each of "
                    f"{len(gpus)} GPUs by measuring the training step...")
        plan = fit_devices(job, options, gpus)
    else:
        gpus = node_gpus(options.device, env)
        LOGGER.info(f"visionbatch: {job.batch.source}: rank {env.rank} of {env.world_size} (node {env.node} of "
                    f"{env.nodes}): " + ("fitting this node's per-GPU batch..." if env.local_rank == 0 else
                                         "waiting for the nodes' fits..."))
        plan = agree_across_nodes(functools.partial(fit_devices, job, options, gpus), env)
    note = (f"batch {plan.total_batch} = per-GPU batch {plan.per_gpu_batch} x {plan.world_size} ranks "
            f"({plan.reason})")
    return replace(job, args={**job.args, "batch": plan.total_batch}, plan=plan.governing, distributed=plan,
                   notes=job.notes + (note,))


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
    distributed: DistributedPlan | None = None  # a DDP run's plan: every GPU's, written beside the run
    records: dict[int, EpochRecord] = field(default_factory=dict)
    save_dir: Path | None = None
    device: Any = None
    cpu_threads: int = 0
    first_epoch_at: float | None = None
    effective_batch: int | None = None  # batch x accumulate of the first attempt: recoveries keep it
    started_batch: int | None = None
    val_batch_cap: int | None = None  # the validation batch that fitted after a validation ran out of memory
    accumulate: int | None = None  # the nominal accumulation of the attempt running
    epoch: int = 0  # where the run is: 1-based epoch, 0-based iteration, and whether it is in a training step
    iteration: int | None = None
    in_training: bool = False
    _epoch_start: float = 0.0
    _train_end: float = 0.0
    _epoch_open: bool = False

    def callbacks(self) -> dict[str, Callable]:
        return {
            "on_pretrain_routine_start": self.on_pretrain_routine_start,
            "on_train_start": self.on_train_start,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_batch_start": self.on_train_batch_start,
            "on_train_epoch_end": self.on_train_epoch_end,
            "on_fit_epoch_end": self.on_fit_epoch_end,
        }

    def on_pretrain_routine_start(self, trainer) -> None:
        self.save_dir = Path(trainer.save_dir)
        self.device = trainer.device
        trainer.effective_batch, trainer.started_batch = self.effective_batch, self.started_batch
        trainer.val_batch_cap = self.val_batch_cap
        # before get_dataset(): Ultralytics reads (and records) this copy, never the user's YAML (staging.py)
        copy = atomic_write_text(self.save_dir / RESOLVED_YAML_NAME,
                                 yaml.safe_dump(self.resolved_yaml, sort_keys=False, allow_unicode=True))
        trainer.args.data = str(copy)
        if self.plan is not None:
            from visionbatch.fit.api import write_plan

            write_plan(self.plan, self.save_dir, PLAN_NAME)
        if self.distributed is not None:
            from visionbatch.fit.api import write_plan

            write_plan(self.distributed, self.save_dir, DDP_PLAN_NAME)

    def on_train_start(self, trainer) -> None:
        self.accumulate = int(trainer.accumulate)  # nominal: warm-up ramps up to it
        if self.effective_batch is None:
            self.effective_batch, self.started_batch = int(trainer.batch_size) * self.accumulate, int(trainer.batch_size)

    def on_train_batch_start(self, trainer) -> None:
        self.iteration = 0 if self.iteration is None else self.iteration + 1

    def on_train_epoch_start(self, trainer) -> None:
        import torch

        if self.first_epoch_at is None:
            self.first_epoch_at = time.perf_counter()
        self.epoch, self.iteration, self.in_training = trainer.epoch + 1, None, True
        self.cpu_threads = torch.get_num_threads()
        reset_peak_rss()
        if trainer.device.type == "cuda":
            cuda_reset_peaks(trainer.device)
        self._epoch_start = time.perf_counter()
        self._epoch_open = True

    def on_train_epoch_end(self, trainer) -> None:
        self._train_end = time.perf_counter()
        self.in_training = False

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
            batch_size=_per_device(trainer),
            accumulate=self.accumulate,
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
    recoveries: list[Recovery] = []
    with offline(), staged_dataset(job.dataset) as staged, \
            trusted_checkpoints(bool(job.options.get("trust_checkpoint"))):
        from ultralytics import YOLO
        from ultralytics.utils import LOGGER

        from visionbatch.ultralytics.trainers import TRAINERS

        probe = EpochTelemetry(staged.content, job.plan, distributed=job.distributed)
        LOGGER.info(_header(job))
        first = {**job.args, "data": str(staged.yaml_path)}
        arguments = first
        try:
            while True:  # one attempt, then one more after each out-of-memory recovery (recovery.py)
                yolo = YOLO(job.model, task=job.task)
                for event, callback in probe.callbacks().items():
                    yolo.add_callback(event, callback)
                if job.options.get("augcost") and arguments is first:  # after the telemetry, which records save_dir
                    from visionbatch.augment import training_callback

                    yolo.add_callback("on_pretrain_routine_start", training_callback(
                        job.dataset.yaml_path, job.args, remap_classes=job.dataset.remapped))
                try:
                    yolo.train(trainer=TRAINERS[job.task], **arguments)
                    break
                except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is recovered, the rest re-raised
                    if not is_oom(exc) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
                        raise  # a DDP rank cannot resume alone: the others wait in their collectives
                    recovery, arguments = _recover(job, probe, getattr(yolo, "trainer", None), exc, first,
                                                   len([r for r in recoveries if r.phase == "train"]))
                finally:  # in the order they happened: this attempt's validations came before its failure
                    recoveries.extend(_validation_recoveries(yolo))
                    probe.val_batch_cap = min((r.new_batch for r in recoveries if r.phase != "train"), default=None)
                recoveries.append(recovery)
                LOGGER.warning(recovery_line(recovery))
                _forget_plan(job)
                _close_loaders(getattr(yolo, "trainer", None))
                yolo = None  # the failed attempt's model, optimizer and EMA go before the next attempt
                _free_device_memory(probe.device)
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
            launcher = getattr(yolo, "trainer", None)
            if probe.save_dir is None and getattr(launcher, "ddp", False) and getattr(launcher, "save_dir", None):
                probe.save_dir = Path(launcher.save_dir)  # device=0,1: the callbacks ran in the workers Ultralytics started
            result = _result(job, probe, yolo, status, error, started, tuple(recoveries))
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


def _per_device(trainer: Any) -> int | None:
    """The batch each device trains (Ultralytics' batch is the total under DDP), or None when unknown."""
    batch = getattr(trainer, "batch_size", None)
    return int(batch) // max(int(getattr(trainer, "world_size", 1) or 1), 1) if batch else None


def _recover(job: TrainingJob, probe: EpochTelemetry, trainer: Any, exc: BaseException, first: dict,
             done: int) -> tuple[Recovery, dict]:
    """The recovery from an out-of-memory error in training, and the arguments of the next attempt.

    Raises:
        TrainingOutOfMemoryError: the retries are used up, batch 1 ran out, validation ran out at
            batch 1, or no checkpoint is left to resume from.
    """
    retries = int(job.options.get("oom_retries", DEFAULT_OOM_RETRIES))
    old_batch = int(getattr(trainer, "batch_size", None) or first["batch"])
    where = f"epoch {max(probe.epoch, 1)}" + (f", step {probe.iteration + 1}" if probe.iteration is not None else "")
    message = error_line(exc)
    if getattr(trainer, "validating", False):  # the trainer retried down to batch 1 and re-raised
        raise TrainingOutOfMemoryError(f"out of memory validating at batch 1 ({where}): {message}; nothing smaller "
                                       f"is left to try: use a smaller imgsz or model, or a device with more memory")
    if probe.effective_batch is None:  # before training started: Ultralytics' own nominal accumulation
        nbs = int(first.get("nbs") or NOMINAL_BATCH)
        probe.started_batch, probe.effective_batch = old_batch, old_batch * max(round(nbs / old_batch), 1)
    if done >= retries:
        raise TrainingOutOfMemoryError(f"out of memory training at batch {old_batch} ({where}) after {done} "
                                       f"recoveries (oom_retries={retries}): {message}; raise oom_retries=, or use a "
                                       f"smaller batch or imgsz, or memory_fraction= lower with batch=auto")
    if old_batch <= 1:
        raise TrainingOutOfMemoryError(f"out of memory training at batch 1 ({where}): {message}; use a smaller imgsz "
                                       f"or model, or a device with more memory")
    needed, budget = _needed_and_budget(job, probe, exc)
    fixed = job.plan.curve.fixed_bytes if job.plan is not None else 0.0
    effective = probe.effective_batch or old_batch * (probe.accumulate or 1)
    new_batch, accumulate = keep_effective(effective, batch_after_oom(old_batch, needed, budget, fixed))
    save_dir = probe.save_dir or Path(getattr(trainer, "save_dir", ""))
    last = save_dir / "weights" / "last.pt"
    complete = max(probe.records, default=0)
    if complete and last.is_file():
        arguments, resumed = ({"data": first["data"], "resume": str(last), "batch": new_batch},
                              f"weights/last.pt (epoch {complete} complete)")
    elif not complete:
        arguments, resumed = ({**first, "batch": new_batch, "project": str(save_dir.parent), "name": save_dir.name,
                               "exist_ok": True}, "the start (no epoch was complete)")
    else:
        raise TrainingOutOfMemoryError(f"out of memory training at batch {old_batch} ({where}), and {last} is not "
                                       f"there to resume from (save=False?): train with save=True to recover")
    dataset = getattr(getattr(trainer, "train_loader", None), "dataset", None)
    recovery = Recovery(at=utc_timestamp(), phase="train", epoch=max(probe.epoch, 1), iteration=probe.iteration,
                        mosaic=mosaic_on(dataset) if dataset is not None else None, old_batch=old_batch,
                        new_batch=new_batch, old_accumulate=probe.accumulate, new_accumulate=accumulate,
                        effective_batch=new_batch * accumulate, peak_bytes=needed, resumed_from=resumed,
                        error=message)
    return recovery, arguments


def _needed_and_budget(job: TrainingJob, probe: EpochTelemetry, exc: BaseException) -> tuple[int | None, int | None]:
    """What the step needed at least, and the memory to fit the next batch into, measured alike.

    With a plan: the plans' unit (reserved + CUDA context) against the plan's budget. Without one:
    the default memory fraction of what the message says this process could have (`OomReading.room_bytes`).
    """
    reading = read_oom(exc)
    cuda = getattr(probe.device, "type", None) == "cuda"
    if job.plan is not None:
        needed = reading.needed_bytes(job.plan.context_bytes)
        if needed is None and cuda:
            needed = cuda_peaks(probe.device)[1] + job.plan.context_bytes  # the epoch's peak reserved: a lower bound
        return needed, job.plan.budget_bytes
    needed, room = reading.room_bytes()
    if cuda and (needed is None or room is None):
        import torch

        needed = cuda_peaks(probe.device)[1]
        room = torch.cuda.get_device_properties(probe.device).total_memory
    return needed, int(room * DEFAULT_MEMORY_FRACTION) if room else None


def _validation_recoveries(yolo: Any) -> tuple[Recovery, ...]:
    """The trainer's validation recoveries (`ultralytics.trainers`), as records."""
    return tuple(Recovery(at=r["at"], phase=r["phase"], epoch=r["epoch"], iteration=None, mosaic=None,
                          old_batch=r["old_batch"], new_batch=r["new_batch"], old_accumulate=None, new_accumulate=None,
                          effective_batch=None, peak_bytes=r["peak_bytes"], resumed_from="validation again",
                          error=r["error"])
                 for r in getattr(getattr(yolo, "trainer", None), "val_recoveries", ()))


def recovery_line(recovery: Recovery) -> str:
    """One line saying what a training recovery did.

    Examples:
        >>> r = Recovery(at="2026-11-30T10:00:00+00:00", phase="train", epoch=3, iteration=40, mosaic=True,
        ...              old_batch=16, new_batch=8, old_accumulate=4, new_accumulate=8, effective_batch=64,
        ...              peak_bytes=12 << 30, resumed_from="weights/last.pt (epoch 2 complete)", error="CUDA out of memory")
        >>> recovery_line(r)
        'visionbatch: out of memory at batch 16 (epoch 3, step 41; it needed at least 12.0 GiB): resuming from weights/last.pt (epoch 2 complete) at batch 8, accumulate 8 (effective batch 64, was 64)'
    """
    from visionbatch.units import human_bytes

    needed = f"; it needed at least {human_bytes(recovery.peak_bytes)}" if recovery.peak_bytes else ""
    step = f", step {recovery.iteration + 1}" if recovery.iteration is not None else ""
    was = recovery.old_batch * recovery.old_accumulate if recovery.old_accumulate else None
    return (f"visionbatch: out of memory at batch {recovery.old_batch} (epoch {recovery.epoch}{step}{needed}): "
            f"resuming from {recovery.resumed_from} at batch {recovery.new_batch}, accumulate "
            f"{recovery.new_accumulate} (effective batch {recovery.effective_batch}, was {was})")


def _close_loaders(trainer: Any) -> None:
    """Stop a finished or failed attempt's loaders: their workers and prefetched batches."""
    for loader in (getattr(trainer, "train_loader", None), getattr(trainer, "test_loader", None)):
        if hasattr(loader, "close"):
            loader.close()


def _free_device_memory(device: Any) -> None:
    """Collect what nothing holds any more, and give the CUDA cache back."""
    import gc

    gc.collect()
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()


def _result(job: TrainingJob, probe: EpochTelemetry, yolo: Any, status: str, error: str | None, started: float,
            recoveries: tuple[Recovery, ...] = ()) -> TrainResult:
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
        distributed_plan=DistributedSummary.of(job.distributed, DDP_PLAN_NAME) if job.distributed else None,
        memory_vs_plan=_memory_vs_plan(job.plan, probe.records),
        effective_batch=probe.effective_batch,
        recoveries=recoveries,
        remapped_classes=job.dataset.remapped,
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
            # a CPU budget's plan is the process's resident memory too (fit/probes/cpu.py: baseline, the trainer's
            # share, each step's growth with its allowance): like for like
            measured, what = record.peak_rss_bytes, "process peak RSS"
        predicted = plan.predicted_bytes  # after an out-of-memory recovery: the plan's curve at the smaller batch
        if record.batch_size is not None and record.batch_size != plan.batch_size:
            predicted = int(plan.curve.predict(record.batch_size))
        rows.append(PlanCheck(epoch=epoch, predicted_bytes=predicted, measured_bytes=measured,
                              measured_over_predicted=round(measured / predicted, 4) if measured else None,
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
