"""Memory against image size: fit a surface over (batch, imgsz) from few probes, answer both ways.

`sweep_resolution()` probes batch 1 and 2 at the smallest and the largest requested size, fits
`peak(b, s) = F + G s^2 + b (A + B s^2)` (curve.fit_memory_surface) for training and for
validation at 2x the batch, then, with no further probing:
- the largest batch at every requested size, and the memory each image costs there;
- the largest image size at a given batch (`batch=16`: "how large can images be at 16?").
Sizes in between are held out of the fit and probed once each, as a check of the surface.

Probes, as for `fit`: a CPU trace for a `target` GPU, real CUDA steps on a GPU, real CPU steps
against a CPU `memory_budget`. Each probe is said as it starts and ends, with the time left over
the probes planned (their number is known from the sizes), to a `progress` line sink.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from visionbatch.console import Steps, err
from visionbatch.devices.memory import Capacity
from visionbatch.errors import BudgetError, ConfigError
from visionbatch.fit.curve import (
    fit_memory_surface,
    surface_max_batch,
    surface_max_imgsz,
)
from visionbatch.fit.plan import (
    MemorySurface,
    ProbeSample,
    WorkloadSummary,
    val_batch_size,
)
from visionbatch.results import to_jsonable
from visionbatch.ultralytics.density import DEFAULT_OOM_RISK
from visionbatch.units import human_bytes
from visionbatch.values import DEFAULT_MEMORY_FRACTION

DEFAULT_SIZES = (320, 640, 1024, 1280)


@dataclass(frozen=True, slots=True)
class SizeRow:
    """One image size.

    Attributes:
        imgsz: image side in pixels.
        max_batch_size: the largest batch whose training and validation (2x) fit the budget.
        predicted_bytes: training peak predicted at that batch.
        per_image_bytes: what each training image adds at this size.
        fixed_bytes: what training holds whatever the batch (model, optimizer, EMA, context).
        limited_by: 'train' or 'val': which phase sets the limit.
        extrapolated: the size lies outside the probed sizes.
        check_bytes: a probe at this size (held out of the fit), if one was run.
        check_predicted_bytes: the surface's prediction for that probe.
    """

    imgsz: int
    max_batch_size: int
    predicted_bytes: int
    per_image_bytes: int
    fixed_bytes: int
    limited_by: str
    extrapolated: bool
    check_bytes: int | None = None
    check_predicted_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ResolutionSweep:
    """Largest batch per image size, memory per image, and the inverse answer.

    Attributes:
        rows: one per requested size.
        surface: the training surface.
        val_surface: the validation surface (batch = validation batch).
        budget_bytes: memory_fraction x usable memory.
        memory_fraction: the fraction aimed at.
        device: 'cuda:0', 'cpu' (a CPU memory budget) or 'target:<key>'.
        device_name: the GPU, CPU or target.
        usable_bytes: memory the process may have.
        measured: True when the probes ran on the device (or the CPU), False for a target's traces.
        samples: every probe.
        batch_size: the batch of the inverse question, if asked.
        max_imgsz: the largest image size at `batch_size` (a multiple of the stride).
        max_imgsz_extrapolated: that answer lies outside the probed sizes.
        workload: what one step held.
        warnings: things to know.
        seconds: time spent.
        save_dir: the run folder the sweep was written to (absent from JSON when not saved).
    """

    JSON_OPTIONAL: ClassVar[tuple[str, ...]] = ("save_dir",)

    rows: tuple[SizeRow, ...]
    surface: MemorySurface
    val_surface: MemorySurface
    budget_bytes: int
    memory_fraction: float
    device: str
    device_name: str
    usable_bytes: int
    measured: bool
    samples: tuple[tuple[int, ProbeSample], ...]
    batch_size: int | None
    max_imgsz: int | None
    max_imgsz_extrapolated: bool | None
    workload: WorkloadSummary
    warnings: tuple[str, ...]
    seconds: float
    save_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def _sizes(sizes: Any, imgsz: Any) -> list[int]:
    """The sizes to sweep, ascending: `sizes` and the training size `imgsz` (one size) among them."""
    from visionbatch.checks import MAX_IMGSZ, MIN_PROBE_IMGSZ
    from visionbatch.keys import refuse_old_spelling
    from visionbatch.text import shown

    refuse_old_spelling("sweep", "imgsz", imgsz)  # a list of sizes goes in sizes= now
    values = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
    found = []
    given_sizes = [("sizes", sizes, v) for v in values] + ([] if imgsz is None else [("imgsz", imgsz, imgsz)])
    for key, given, value in given_sizes:
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_PROBE_IMGSZ <= value <= MAX_IMGSZ:
            example = "imgsz=640" if key == "imgsz" else "sizes=320,640,1024"
            raise ConfigError(f"{key}={shown(given)}: give image sizes in pixels, at least {MIN_PROBE_IMGSZ} (the "
                              f"sweep probes batch 1, which BatchNorm cannot train below that) and at most "
                              f"{MAX_IMGSZ}, e.g. {example}")
        found.append(value)
    if len(set(found)) < 2:
        raise ConfigError(f"sizes={shown(sizes)}: a sweep needs two or more sizes, e.g. sizes=320,640,1024,1280")
    return sorted(set(found))


def sweep_resolution(
    data: str | os.PathLike,
    sizes: Sequence[int] = DEFAULT_SIZES,
    imgsz: int | None = None,
    model: str | None = None,
    device: Any = None,
    target: str | None = None,
    memory_budget: Any = None,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    batch_size: int | None = None,
    labels_per_image: int | None = None,
    save: bool = False,
    oom_risk: float = DEFAULT_OOM_RISK,
    progress: Callable[[str], None] | None = err,
    **train_args: Any,
) -> ResolutionSweep:
    """Largest batch at each image size, and the largest size at a batch, from one fitted surface.

    Args:
        data: the dataset's data.yaml.
        sizes: image sizes to answer for (two or more, with `imgsz`).
        imgsz: the training size, one size, always among the sizes answered for.
        model: model YAML or checkpoint.
        device: a CUDA device to measure on (default: GPU 0 when there is one and no target).
        target: a GPU to predict for (see `visionbatch.devices.catalog`), traced on this CPU.
        memory_budget: the memory to fit into instead of a GPU's ('2GiB'): real CPU steps against it, as in fit
            (the whole training process's resident memory: a measured baseline plus each step's growth).
        memory_fraction: share of usable memory to fill.
        batch_size: answer the inverse question: the largest imgsz at this batch.
        labels_per_image: force this many labels into every training image (default: modelled from
            the dataset at `oom_risk`, as in fit).
        save: write `sweep.json` and `sweep.png` into a new run folder, `runs/sweep/<name>/`
            (`name=` and `project=` as in Ultralytics); `sweep.save_dir` says where.
        oom_risk: the chance, at most, that a batch of the run carries more labels than measured.
        progress: receives a line as each probe starts and ends (size, batch, phase, peak, the time
            left) and the trace's stages (default: stderr); None for silence. A `console.Progress`
            also draws a bar over the planned probes on a terminal.
        **train_args: Ultralytics train arguments that shape the step.

    Returns:
        The `ResolutionSweep`.

    Examples:
        >>> sweep = sweep_resolution("datasets/shapes/data.yaml", sizes=(320, 640, 1024), target="rtx3060",
        ...                          batch_size=16)  # doctest: +SKIP
        >>> [row.imgsz for row in sweep.rows], sweep.max_imgsz is not None  # doctest: +SKIP
        ([320, 640, 1024], True)
    """
    from visionbatch.checks import MAX_BATCH_SIZE, whole_number
    from visionbatch.fit.api import (
        FitOptions,
        resolve_device,
        target_capacity,
        trainer_globals,
    )
    from visionbatch.keys import visionbatch_keys
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline, trusted_checkpoints
    from visionbatch.ultralytics.spec import job_spec, trainer_amp

    started = time.perf_counter()
    if "batch" in train_args:  # the training batch: a size asks for the largest imgsz, a fit request sets the fraction
        from visionbatch.values import parse_batch

        request = parse_batch(train_args.pop("batch"))
        if request.fit:
            memory_fraction = request.memory_fraction
        else:
            batch_size = request.batch_size
    sizes = _sizes(sizes, imgsz)
    if batch_size is not None:
        batch_size = whole_number(batch_size, "batch", example="batch=16", maximum=MAX_BATCH_SIZE)
    # the same options, checked the same way as fit's, before the dataset is read
    options = FitOptions.check(device=device, memory_fraction=memory_fraction, memory_budget=memory_budget,
                               target=target, labels_per_image=labels_per_image, oom_risk=oom_risk)
    fraction, labels_per_image, gpu = options.memory_fraction, options.labels_per_image, options.target
    overrides = dict(train_args)
    overrides["imgsz"] = sizes[0]
    if model is not None:
        overrides["model"] = model
    say = progress or (lambda line: None)
    with offline():
        job = prepare(data, overrides, visionbatch_keys("sweep"), command="sweep")  # name=, project= checked here
        with trusted_checkpoints(bool(job.options.get("trust_checkpoint"))):  # the probes load the model
            if gpu is not None:
                from visionbatch.fit.probes.trace import TraceEstimator

                capacity, device_model = target_capacity(gpu, options.memory_budget_bytes)
                spec = job_spec(job, "cuda", gpu.name, labels_per_image, amp=trainer_amp(job.args, gpu.amp),
                                oom_risk=options.oom_risk)
                with trainer_globals(bool(job.args.get("deterministic", True)), "cpu"):
                    base = TraceEstimator(spec, device_model, progress=progress)
                    probe = _TracePoints(base)
                    result = sweep_points(probe, capacity, sizes, fraction, batch_size, spec, measured=False,
                                    progress=progress, val_images=job.dataset.val.images)
            else:
                device_name, cpu_budget = resolve_device(device, memory_budget)
                device_type = device_name.split(":")[0]
                probe = _MeasuredPoints(device_name, cpu_budget, job)
                with trainer_globals(bool(job.args.get("deterministic", True)), device_type):
                    try:
                        spec = job_spec(job, device_type, probe.gpu_name, labels_per_image, oom_risk=options.oom_risk)
                        say(f"building the training step on {device_name}: {spec.model}, its loss, optimizer and EMA")
                        probe.start(spec)
                        result = sweep_points(probe, probe.capacity(), sizes, fraction, batch_size, spec, measured=True,
                                        progress=progress, val_images=job.dataset.val.images)
                    finally:
                        probe.close()
    result = _finish(result, job, time.perf_counter() - started)
    return save_sweep(result, train_args.get("name"), train_args.get("project")) if save else result


SWEEP_JSON = "sweep.json"
SWEEP_PNG = "sweep.png"


def save_sweep(sweep: ResolutionSweep, name: str | None = None,
               project: str | os.PathLike | None = None) -> ResolutionSweep:
    """Write `sweep.json` and `sweep.png` into a new run folder, `runs/sweep/<name>/`; return it with `save_dir` set."""
    from visionbatch.fit.plot import plot_sweep
    from visionbatch.results import write_json
    from visionbatch.rundir import new_run_dir

    sweep = replace(sweep, save_dir=str(new_run_dir("sweep", name, project)))
    write_json(Path(sweep.save_dir) / SWEEP_JSON, sweep)
    plot_sweep(sweep, Path(sweep.save_dir) / SWEEP_PNG)
    return sweep


def _finish(result: ResolutionSweep, job: Any, seconds: float) -> ResolutionSweep:
    return replace(result, workload=replace(result.workload, data=job.dataset.yaml_path), seconds=round(seconds, 3))


class _TracePoints:
    """(batch, imgsz, phase) -> trace estimate, one estimator per size sharing one model."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.by_size: dict[int, Any] = {}
        self.stride = base.stride

    def read(self, batch_size: int, imgsz: int, phase: str) -> ProbeSample:
        estimator = self.by_size.setdefault(imgsz, self.base.at_imgsz(imgsz))
        estimate = estimator.train(batch_size) if phase == "train" else estimator.val(batch_size)
        return ProbeSample(batch_size, phase, True, estimate.device_bytes, estimate.allocated_bytes,
                           estimate.reserved_bytes)


class _MeasuredPoints:
    """(batch, imgsz, phase) -> a measured step on a CUDA device, or on the CPU against a budget (as fit does)."""

    def __init__(self, device_name: str, cpu_budget_bytes: int | None, job: Any = None) -> None:
        import torch

        if device_name.startswith("cuda"):
            from visionbatch.fit.probes.cuda import CudaProbe

            self.probe: Any = CudaProbe(int(device_name.split(":")[1]))
            torch.cuda.set_device(self.probe.index)
            self.gpu_name = torch.cuda.get_device_name(self.probe.index)
        else:
            from visionbatch.devices.memory import device_name as describe
            from visionbatch.fit.probes.cpu import CpuProbe, trainer_share

            # as in fit: the budget bounds the training process (baseline, trainer's share, each step)
            self.probe = CpuProbe(cpu_budget_bytes, name=describe(torch.device("cpu")),
                                  trainer=trainer_share(job) if job is not None else None)
            self.gpu_name = ""
        self.device_name = device_name
        self.workload: Any = None

    def start(self, spec: Any) -> None:
        from visionbatch.ultralytics.step import Workload

        self.workload = Workload(spec, self.device_name)
        self.stride = self.workload.stride
        if self.device_name == "cpu":
            self.probe.count_model(self.workload.model)  # the trainer builds its own copy

    def capacity(self) -> Capacity:
        return self.probe.capacity()

    def read(self, batch_size: int, imgsz: int, phase: str) -> ProbeSample:
        w = self.workload
        if self.device_name == "cpu":
            self.probe.imgsz = imgsz  # the loader's mosaic buffer holds images of this size
        if phase == "train":
            return self.probe.measure(lambda: w.train_step(batch_size, self.probe.pass_boundary, imgsz=imgsz),
                                      batch_size, phase, w.persistent())
        return self.probe.measure(lambda: w.val_step(batch_size, imgsz=imgsz), batch_size, phase, w.persistent())

    def close(self) -> None:
        if self.workload is not None:
            self.workload.close()


def sweep_points(points: Any, capacity: Capacity, sizes: list[int], fraction: float, batch_size: int | None,
                 spec: Any, measured: bool, progress: Callable[[str], None] | None = None,
                 val_images: int | None = None) -> ResolutionSweep:
    """The sweep over `sizes` from `points.read(batch, imgsz, phase)` (measured steps, a trace, or a test's
    simulated law): batch 1 and 2 at the smallest and largest size, one check between, the surfaces,
    and each size's largest batch (validation at twice it, at most `val_images`)."""
    budget = int(fraction * capacity.usable_bytes)
    fitted = [sizes[0], sizes[-1]]
    samples: list[tuple[int, ProbeSample]] = []
    # batch 1 and 2, training and validation, at the two fitted sizes; one check at each size between
    steps = Steps(progress, 8 + len(sizes) - len(fitted), "probe")

    def read(b: int, s: int, phase: str) -> ProbeSample:
        step = f"imgsz {s}: {'training' if phase == 'train' else 'validation'} at batch {b}"
        steps.begin(step)
        sample = points.read(b, s, phase)
        samples.append((s, sample))
        peak = "peak" if measured else "traced peak"
        steps.end(f"{step}: {peak} {human_bytes(sample.peak_bytes)}" if sample.ok else f"{step}: ran out of memory")
        if not sample.ok:
            raise BudgetError(f"batch {b} at imgsz={s} ran out of memory on {capacity.device} while sweeping: "
                              f"sweep smaller sizes, e.g. imgsz={','.join(str(x) for x in sizes[:-1])}")
        return sample

    train_pts, val_pts = [], []
    for s in fitted:
        for b in (1, 2):
            train_pts.append((b, s, read(b, s, "train").peak_bytes))
            val_pts.append((2 * b, s, read(2 * b, s, "val").peak_bytes))
    train, val = fit_memory_surface(train_pts), fit_memory_surface(val_pts)
    checks = {s: read(2, s, "train").peak_bytes for s in sizes if s not in fitted}
    rows, warnings = [], []
    for s in sizes:
        by_train = surface_max_batch(train, s, budget)
        by_val = surface_max_batch(val, s, budget)
        # validation runs at twice the batch, but never at more than the split's images
        by_val = by_train if val_images and by_val >= val_images else by_val // 2
        best = min(by_train, by_val)
        rows.append(SizeRow(
            imgsz=s, max_batch_size=best, predicted_bytes=int(train.predict(best, s)) if best else 0,
            per_image_bytes=int(train.per_image(s)), fixed_bytes=int(train.fixed(s)),
            limited_by="val" if by_val < by_train else "train", extrapolated=not fitted[0] <= s <= fitted[-1],
            check_bytes=checks.get(s), check_predicted_bytes=int(train.predict(2, s)) if s in checks else None))
    if all(row.max_batch_size == 0 for row in rows):
        warnings.append("not even batch 1 fits at any of these sizes")
    top = max(row.max_batch_size for row in rows)
    if top > 2:
        warnings.append("batches above 2 are predicted along the surface's straight line in the batch "
                        "(probed at 1 and 2); `visionbatch fit` verifies one size at its answer")
    max_imgsz = extrapolated = None
    if batch_size is not None:
        max_imgsz = min(surface_max_imgsz(train, batch_size, budget, points.stride),
                        surface_max_imgsz(val, val_batch_size(batch_size, val_images), budget, points.stride))
        extrapolated = not fitted[0] <= max_imgsz <= fitted[-1]
        if extrapolated:
            warnings.append(f"the largest imgsz at batch {batch_size} ({max_imgsz}) lies outside the probed sizes "
                            f"({fitted[0]}-{fitted[-1]}): an extrapolation")
    if not measured:
        warnings.append(f"traced on this CPU for {capacity.name}, not measured on it")
    return ResolutionSweep(
        rows=tuple(rows), surface=train, val_surface=val, budget_bytes=budget, memory_fraction=fraction,
        device=capacity.device, device_name=capacity.name, usable_bytes=capacity.usable_bytes, measured=measured,
        samples=tuple(samples), batch_size=batch_size, max_imgsz=max_imgsz, max_imgsz_extrapolated=extrapolated,
        workload=WorkloadSummary(**spec.describe()), warnings=tuple(warnings), seconds=0.0)
