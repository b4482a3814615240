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

from visionbatch import telemetry
from visionbatch.config import BatchRequest, check_train_args, parse_batch
from visionbatch.dataset import DatasetSummary, load_dataset
from visionbatch.errors import ConfigError, DatasetError, StorageError
from visionbatch.files import atomic_write_text, is_disk_error, storage_error
from visionbatch.plans import BatchPlan, EpochRecord, TrainResult, write_json
from visionbatch.rundir import check_project, check_run_name
from visionbatch.staging import staged_dataset
from visionbatch.ultralytics_compat import (
    DEFAULT_MODELS,
    TASKS,
    check_model,
    load_checkpoint_safely,
    model_task,
    offline,
    trusted_checkpoints,
    versions,
)

SUMMARY_NAME = "visionbatch.json"
PLAN_NAME = "batch_plan.json"
RESOLVED_YAML_NAME = "data.resolved.yaml"  # the data.yaml Ultralytics reads: absolute paths into the mirror
DEFAULT_BATCH = 16  # Ultralytics' default
# visionbatch's own train keys (beyond Ultralytics'); value: help text.
TRAIN_KEYS: dict[str, str] = {
    "memory_budget": "with batch=auto on a CPU: the memory the batch must fit, e.g. 8GiB",
    "augcost": "augcost=True profiles the data pipeline first (visionbatch augcost); augcost.json/png go into "
               "the run folder",
    "trust_checkpoint": "trust_checkpoint=True loads model=*.pt with Ultralytics' unrestricted loader, which can run "
                        "code stored in the file: only for files you trust (default: the safe loader)",
}
SWITCHES = ("augcost", "trust_checkpoint")


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """Everything decided before training starts.

    Attributes:
        dataset: the checked data.yaml.
        task: 'detect' or 'segment'.
        model: model YAML or checkpoint to train.
        batch: what `batch=` asked for.
        args: the arguments Ultralytics receives (batch filled in once chosen).
        options: visionbatch's own keys (TRAIN_KEYS), kept away from Ultralytics.
        notes: decisions the user should see.
        plan: the batch plan, when the batch was fitted.
    """

    dataset: DatasetSummary
    task: str
    model: str
    batch: BatchRequest
    args: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    plan: BatchPlan | None = None

    @property
    def batch_size(self) -> int:
        return int(self.args["batch"])


def prepare(data: str | os.PathLike, overrides: Mapping[str, Any], extra_keys: Mapping[str, str] = TRAIN_KEYS
            ) -> TrainingJob:
    """Check arguments and dataset; choose task, model and output folder. Trains nothing.

    Raises:
        ConfigError: an argument is unknown, malformed or impossible.
        DatasetError: the data.yaml, its images or labels cannot be trained on.
    """
    if "data" in overrides:
        raise ConfigError(f"data= is given twice ({data} and data={overrides['data']}): pass the data.yaml once")
    overrides, cfg_notes = _with_cfg(overrides)
    args = check_train_args(overrides, extra_keys=list(extra_keys))
    options = {k: args.pop(k) for k in list(args) if k in extra_keys}
    for key in SWITCHES:
        if not isinstance(options.get(key, False), bool):
            raise ConfigError(f"{key}={options[key]} is not a switch: use {key}=True or leave it out")
    trust = bool(options.get("trust_checkpoint", False))
    _check_file_keys(args, trust)
    batch = parse_batch(args["batch"]) if "batch" in args else BatchRequest(DEFAULT_BATCH, None, "default")
    dataset = load_dataset(data, split=str(args.get("split") or "val"))
    task, model = _task_and_model(args.get("task"), args.get("model"), dataset, trust)
    _check_run_folder(args, dataset, task)
    notes = cfg_notes + list(dataset.notes)
    if task == "detect" and dataset.segmentable and "task" not in args and "model" not in args:
        notes.append("labels are polygons: task=segment trains segmentation on the same data")
    args.update(data=dataset.yaml_path, model=model, task=task, project=_project(args.get("project"), task))
    if batch.batch_size is not None:
        _check_last_batch(batch.batch_size, args, dataset)
        args["batch"] = batch.batch_size
    else:
        args.pop("batch", None)  # chosen by choose_batch()
    return TrainingJob(dataset, task, model, batch, args, options, tuple(notes))


def _with_cfg(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Ultralytics' `cfg=other.yaml`: its keys as defaults under the ones given here, read with visionbatch's
    bounded YAML loader and checked like every other argument (Ultralytics would read it unchecked)."""
    from visionbatch.safeyaml import load_yaml

    merged = dict(overrides)
    cfg = merged.pop("cfg", None)
    if cfg is None:
        return merged, []
    text = str(cfg)
    if "://" in text or not Path(text).expanduser().is_file():
        raise ConfigError(f"cfg={text}: no such local file (visionbatch never downloads): pass a YAML of train "
                          f"arguments, or give them as key=value")
    content = load_yaml(Path(text).expanduser(), ConfigError, f"cfg={text}")
    if content is None:
        return merged, []
    if not isinstance(content, dict) or not all(isinstance(k, str) for k in content):
        raise ConfigError(f"cfg={text}: expected a mapping of train arguments (epochs: 50, imgsz: 640, ...)")
    content.pop("cfg", None)
    content.pop("mode", None)
    notes = [f"cfg={text}'s data: is ignored: the DATA argument is what trains"] if content.pop("data", None) else []
    return {**content, **merged}, notes


def _check_file_keys(args: Mapping[str, Any], trust: bool) -> None:
    """Arguments Ultralytics would fetch or load (pretrained=, distill_model=, resume=): local files, loaded safely."""
    for key, value in args.items():
        if isinstance(value, str) and "://" in value:
            raise ConfigError(f"{key}={value}: visionbatch never downloads: pass a local file")
    pretrained = args.get("pretrained")
    if isinstance(pretrained, str):
        _check_local_checkpoint("pretrained", pretrained, trust, "or pretrained=True/False")
    resume = args.get("resume")
    if isinstance(resume, str):
        _check_local_checkpoint("resume", resume, trust, "(a run's weights/last.pt), or resume=True")
    distill = args.get("distill_model")
    if distill not in (None, False):
        if not isinstance(distill, str) or not str(distill).endswith((".pt", ".yaml", ".yml")):
            raise ConfigError(f"distill_model={distill}: expected a local teacher checkpoint (.pt) or model YAML")
        model_task(distill, trust)


def _check_local_checkpoint(key: str, value: str, trust: bool, alternative: str) -> None:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={value}: no such file, and visionbatch never downloads weights: pass a local .pt "
                          f"{alternative}")
    checkpoint = load_checkpoint_safely(path, trust, key)
    epoch = checkpoint.get("epoch")
    if key == "resume" and (not isinstance(epoch, int) or epoch < 0):
        raise ConfigError(f"resume={value}: that run finished (its checkpoint keeps no optimizer state), so there "
                          f"is nothing to resume: train on from it with model={value}")


def _check_run_folder(args: Mapping[str, Any], dataset: DatasetSummary, task: str) -> None:
    """Where the run will write: a new folder, never inside the dataset, and only a run's own folder on resume.

    - `name=` is one folder name (it cannot climb out of `project=`);
    - an absolute `project=` may not lie inside the dataset's folder; `./runs` (the default, and where a
      relative `project=` goes) may not lie inside its image or label folders (the next run would
      train on the plots);
    - `exist_ok=True` may not write over a folder that already holds files;
    - `resume=` continues the run a checkpoint was saved in (`<run>/weights/last.pt`), nowhere else.
    """
    if args.get("name") is not None:
        check_run_name(args["name"], "train")
    project = args.get("project")
    if project:
        check_project(project, task)
    base = Path(str(project)).expanduser() if project else Path.cwd() / "runs"
    chosen = bool(project) and base.is_absolute()  # a relative project= lands under ./runs/<task>/, as Ultralytics'
    protected = _data_folders(dataset) | ({Path(dataset.root).resolve()} if chosen else set())
    target = Path(_project(str(project) if project else None, task)).resolve()
    _refuse_inside(target, protected, f"project={project}" if project else f"the working folder's runs/ ({target})")
    run = target / str(args.get("name") or "train")
    if args.get("exist_ok") and run.is_dir() and any(run.iterdir()):
        raise ConfigError(f"exist_ok=True would write over {run}, which holds a previous run: pick another name=, "
                          f"or move that folder away")
    resume = args.get("resume")
    checkpoint = resume if isinstance(resume, str) else args.get("model") if resume is True else None
    if isinstance(checkpoint, str) and checkpoint.endswith(".pt"):
        weights = Path(checkpoint).expanduser().resolve().parent
        if weights.name != "weights" or not (weights.parent / "args.yaml").is_file():
            raise ConfigError(f"resume: {checkpoint} is not in a run folder (<run>/weights/last.pt, beside args.yaml), "
                              f"so there is no run to continue: train from it with model={checkpoint} instead")
        _refuse_inside(weights.parent, protected | {Path(dataset.root).resolve()}, f"resume: the run of {checkpoint}")


def _refuse_inside(target: Path, protected: set[Path], what: str) -> None:
    inside = next((p for p in sorted(protected) if target == p or target.is_relative_to(p)), None)
    if inside is not None:
        raise ConfigError(f"{what} is inside the dataset's {inside}, which visionbatch never writes: pass "
                          f"project= a folder outside it")


def _data_folders(dataset: DatasetSummary) -> set[Path]:
    """The folders holding the dataset's images and their labels, resolved."""
    from visionbatch.dataset import label_path

    folders: set[Path] = set()
    for split in dataset.splits().values():
        for image_folder in split.image_folders:
            folders.add(Path(image_folder).resolve())
            folders.add(Path(label_path(os.path.join(image_folder, "x.jpg"))).parent.resolve())
    return folders


def _check_last_batch(batch_size: int, args: Mapping[str, Any], dataset: DatasetSummary) -> None:
    """Refuse what Ultralytics' trainer refuses only after building everything: a last batch of one image at a
    size where the deepest feature map is 1x1 (BatchNorm cannot train one value per channel)."""
    from visionbatch.augment.sample import train_count

    stride = 32
    imgsz = int(args.get("imgsz", 640))
    smallest = max(stride, int(imgsz * (1 - float(args.get("multi_scale", 0.0) or 0.0)))) // stride * stride
    images = train_count(dataset.train.images, args.get("fraction", 1.0))
    if smallest < 2 * stride and images % batch_size == 1:
        raise ConfigError(
            f"batch={batch_size} with {images} training images leaves a last batch of 1 image, which BatchNorm "
            f"cannot train at imgsz={smallest}: use another batch size, or imgsz={2 * stride} or more"
        )


def _task_and_model(task: str | None, model: str | None, dataset: DatasetSummary, trust: bool = False
                    ) -> tuple[str, str]:
    if model is not None:
        model = str(model)
        found = model_task(model, trust)
        if found not in TASKS:
            raise ConfigError(f"model={model} is a {found} model: visionbatch trains detect or segment models")
        if task is not None and task != found:
            raise ConfigError(
                f"task={task} but model={model} is a {found} model: use model={DEFAULT_MODELS[task]} "
                f"(or another {task} model), or leave task out"
            )
        task = found
    task = task or "detect"
    model = model or DEFAULT_MODELS[task]
    check_model(model)
    if task == "segment" and not dataset.segmentable:
        boxes = dataset.train.instances - dataset.train.polygons
        raise DatasetError(
            f"{dataset.yaml_path}: task=segment needs polygon labels, but {boxes} of "
            f"{dataset.train.instances} training objects are boxes: label them as polygons "
            f"('class x1 y1 x2 y2 ...'), or train task=detect"
        )
    return task, model


def _project(project: str | None, task: str) -> str:
    """Ultralytics' run folder, with runs_dir fixed to ./runs: runs/<task>[/<project>]."""
    base = Path.cwd() / "runs" / task
    if not project:
        return str(base)
    path = Path(project).expanduser()
    return str(path if path.is_absolute() else base / path)


def choose_batch(job: TrainingJob) -> TrainingJob:
    """Fill in the batch size: the user's, the default, or one fitted to the device (fit_batch)."""
    if not job.batch.fit:
        if "memory_budget" in job.options:
            raise ConfigError(f"memory_budget={job.options['memory_budget']} only applies with batch=auto: "
                              f"drop it, or use batch=auto to fit the batch to it")
        return job
    from ultralytics.utils import LOGGER

    from visionbatch.console import human_bytes
    from visionbatch.fit import fit_batch, resolve_device

    resolve_device(job.args.get("device"), job.options.get("memory_budget"))  # refuse before any work
    LOGGER.info(f"visionbatch: {job.batch.source}: fitting the batch to {job.batch.memory_fraction:g} of the "
                f"device's memory by measuring the training step...")
    shaping = {k: v for k, v in job.args.items() if k not in {"data", "model", "imgsz", "device", "project", "name"}}
    if job.options.get("trust_checkpoint"):
        shaping["trust_checkpoint"] = True
    plan = fit_batch(job.dataset.yaml_path, model=job.model, imgsz=job.args.get("imgsz", 640),
                     device=job.args.get("device"), memory_fraction=job.batch.memory_fraction,
                     memory_budget=job.options.get("memory_budget"), **shaping)
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
class _Telemetry:
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
            from visionbatch.fit_plot import plot_batch_plan

            write_json(self.save_dir / PLAN_NAME, self.plan)
            plot_batch_plan(self.plan, self.save_dir / "memory_curve.png")

    def on_train_epoch_start(self, trainer) -> None:
        import torch

        if self.first_epoch_at is None:
            self.first_epoch_at = time.perf_counter()
        self.cpu_threads = torch.get_num_threads()
        telemetry.reset_peak_rss()
        if trainer.device.type == "cuda":
            telemetry.cuda_reset_peaks(trainer.device)
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
            allocated, reserved = telemetry.cuda_peaks(trainer.device)
        losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
        self.records[epoch] = EpochRecord(
            epoch=epoch,
            train_s=round(self._train_end - self._epoch_start, 3),
            val_s=round(time.perf_counter() - self._train_end, 3),
            peak_rss_bytes=telemetry.peak_rss_bytes(),
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

        from visionbatch.trainers import TRAINERS

        probe = _Telemetry(staged.content, job.plan)
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


def _result(job: TrainingJob, probe: _Telemetry, yolo: Any, status: str, error: str | None, started: float
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
        device_name=telemetry.device_name(device) if device is not None else "",
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
        batch_plan=_plan_summary(job.plan),
        memory_vs_plan=_memory_vs_plan(job.plan, probe.records),
    )


def _plan_summary(plan: BatchPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    keys = ("batch_size", "max_batch_size", "val_batch_size", "budget_bytes", "memory_fraction", "device",
            "device_name", "predicted_bytes", "predicted_uncertainty_bytes", "measured_bytes", "context_bytes",
            "img_per_s", "reason", "warnings", "planning_s")
    return {k: getattr(plan, k) for k in keys} | {"file": PLAN_NAME}


def _memory_vs_plan(plan: BatchPlan | None, records: Mapping[int, EpochRecord]) -> tuple[dict[str, Any], ...]:
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
        rows.append({"epoch": epoch, "predicted_bytes": plan.predicted_bytes, "measured_bytes": measured,
                     "measured_over_predicted": round(measured / plan.predicted_bytes, 4) if measured else None,
                     "measured": what})
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
        >>> result = train("datasets/shapes/data.yaml", epochs=1, imgsz=64)
        >>> result.status, result.task
        ('completed', 'detect')
    """
    started = time.perf_counter()
    with offline():
        job = choose_batch(prepare(data, overrides))
        return run(job, started)
