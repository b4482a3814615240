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
    from visionbatch.files import atomic_write_text

    return atomic_write_text(path, json.dumps(to_jsonable(value), indent=2) + "\n")


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
        batch_plan: the fitted plan's key figures when the batch was fitted (batch_plan.json has it all).
        memory_vs_plan: per epoch, the measured peak next to the plan's prediction.
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
    batch_plan: dict[str, Any] | None = None
    memory_vs_plan: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @property
    def epoch_s(self) -> float | None:
        """Mean wall seconds per epoch (train + validation)."""
        if not self.epochs:
            return None
        return sum(e.train_s + e.val_s for e in self.epochs) / len(self.epochs)


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeSample:
    """One measured step at one batch size.

    Attributes:
        batch_size: images per step.
        phase: 'train' (forward, loss, backward, optimizer, EMA) or 'val' (eval forward, loss, NMS).
        ok: the step ran without running out of memory.
        peak_bytes: the fitted reading: device memory the process needed at peak (CUDA: peak
            reserved + CUDA context; CPU: peak bytes of live tensors). None when the step failed.
        allocated_bytes: peak allocated by torch (CUDA) or tensor bytes (CPU).
        reserved_bytes: peak reserved by torch's caching allocator (CUDA only).
        step_s: seconds per step, from the timed steps (None when not timed or failed).
        error: the out-of-memory message when the step failed.
    """

    batch_size: int
    phase: str
    ok: bool
    peak_bytes: int | None
    allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    step_s: float | None = None
    error: str | None = None

    @property
    def img_per_s(self) -> float | None:
        return self.batch_size / self.step_s if self.ok and self.step_s else None


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryCurve:
    """Peak memory against batch size: fixed + per_image * b + quadratic * b**2.

    Attributes:
        fixed_bytes: intercept: model, optimizer state, EMA, context.
        per_image_bytes: slope: activations, gradients of activations, loss buffers per image.
        quadratic_bytes: curvature term; 0 for a straight line.
        residual_bytes: standard deviation of the residuals (0 when the points fit exactly).
        noise_floor_bytes: the smallest uncertainty assumed for any prediction.
        points: samples the curve was fitted to.
        batch_min: smallest fitted batch size.
        batch_max: largest fitted batch size (predictions above it extrapolate).
        mean_batch: mean fitted batch size (for the prediction interval).
        sxx: sum of squared deviations of the fitted batch sizes (for the prediction interval).
    """

    fixed_bytes: float
    per_image_bytes: float
    quadratic_bytes: float
    residual_bytes: float
    noise_floor_bytes: float
    points: int
    batch_min: int
    batch_max: int
    mean_batch: float
    sxx: float

    @property
    def kind(self) -> str:
        return "quadratic" if self.quadratic_bytes else "linear"

    def predict(self, batch_size: float) -> float:
        """Predicted peak bytes at `batch_size`."""
        return self.fixed_bytes + self.per_image_bytes * batch_size + self.quadratic_bytes * batch_size**2

    def uncertainty(self, batch_size: float) -> float:
        """One standard deviation of the prediction at `batch_size`, never below the noise floor."""
        spread = 1.0 / max(self.points, 1)
        if self.sxx > 0:
            spread += (batch_size - self.mean_batch) ** 2 / self.sxx
        return max(self.residual_bytes * math.sqrt(1.0 + spread), self.noise_floor_bytes)

    def extrapolates(self, batch_size: float) -> bool:
        return batch_size > self.batch_max or batch_size < self.batch_min


@dataclasses.dataclass(frozen=True, slots=True)
class BatchPlan:
    """The batch size to train with, and everything it was decided from.

    Attributes:
        batch_size: the batch to train with: the largest verified batch, or a smaller one where
            throughput has already saturated (within 3% of the best measured).
        max_batch_size: the largest batch verified to fit the budget (training and validation).
        val_batch_size: the validation batch Ultralytics will use (2 x batch_size).
        val_max_batch_size: the largest validation batch the validation curve allows.
        accumulate: gradient accumulation Ultralytics applies at this batch (nominal batch 64).
        nominal_batch_size: Ultralytics' nbs.
        budget_bytes: memory the plan may use: memory_fraction x usable device memory.
        memory_fraction: the fraction of usable memory aimed at.
        device: 'cuda:0', 'cpu', or a target name for predictions.
        device_name: the GPU model, CPU model or target.
        total_bytes: device memory in total (None for a CPU budget).
        usable_bytes: memory this process can have: total minus other processes' use, or the budget given.
        context_bytes: memory the CUDA context takes outside torch's allocator (0 on CPU).
        predicted_bytes: training peak predicted at batch_size.
        predicted_uncertainty_bytes: one standard deviation of that prediction.
        measured_bytes: training peak measured at batch_size (None when predicted, not measured).
        val_predicted_bytes: validation peak predicted at val_batch_size.
        val_measured_bytes: validation peak measured at val_batch_size.
        img_per_s: training throughput measured at batch_size.
        best_img_per_s: the best throughput measured.
        samples: every probe, in the order run.
        curve: the fitted training curve.
        val_curve: the fitted validation curve (batch = validation batch).
        workload: what one step contained (model, task, imgsz, labels per image, AMP, optimizer, ...).
        reason: why this batch, in one sentence.
        warnings: things to know (noisy readings, extrapolation, clamps).
        measured: True when the answer was verified with real steps on the device.
        planning_s: seconds spent planning.
    """

    batch_size: int
    max_batch_size: int
    val_batch_size: int
    val_max_batch_size: int | None
    accumulate: int
    nominal_batch_size: int
    budget_bytes: int
    memory_fraction: float
    device: str
    device_name: str
    total_bytes: int | None
    usable_bytes: int
    context_bytes: int
    predicted_bytes: int
    predicted_uncertainty_bytes: int
    measured_bytes: int | None
    val_predicted_bytes: int | None
    val_measured_bytes: int | None
    img_per_s: float | None
    best_img_per_s: float | None
    samples: tuple[ProbeSample, ...]
    curve: MemoryCurve
    val_curve: MemoryCurve | None
    workload: dict[str, Any]
    reason: str
    warnings: tuple[str, ...]
    measured: bool
    planning_s: float

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


@dataclasses.dataclass(frozen=True, slots=True)
class MemorySurface:
    """Peak memory over batch and image size: (fixed + fixed_per_pixel s^2) + b (per_image + per_image_per_pixel s^2).

    s is the image side in pixels. The fixed part (model, optimizer, EMA, context) barely depends on
    s; what each image adds (activations, their gradients, the loss's anchors) scales with its pixels.

    Attributes:
        fixed_bytes, fixed_per_pixel_bytes, per_image_bytes, per_image_per_pixel_bytes: the coefficients.
        residual_bytes: standard deviation of the residuals of the fit.
        points: readings fitted.
        imgsz_min, imgsz_max, batch_min, batch_max: the fitted range (outside it, predictions extrapolate).
    """

    fixed_bytes: float
    fixed_per_pixel_bytes: float
    per_image_bytes: float
    per_image_per_pixel_bytes: float
    residual_bytes: float
    points: int
    imgsz_min: int
    imgsz_max: int
    batch_min: int
    batch_max: int

    def fixed(self, imgsz: float) -> float:
        return self.fixed_bytes + self.fixed_per_pixel_bytes * imgsz**2

    def per_image(self, imgsz: float) -> float:
        """Bytes each image in the batch adds at this size."""
        return self.per_image_bytes + self.per_image_per_pixel_bytes * imgsz**2

    def predict(self, batch_size: float, imgsz: float) -> float:
        return self.fixed(imgsz) + batch_size * self.per_image(imgsz)

    def extrapolates(self, batch_size: float, imgsz: float) -> bool:
        return not (self.imgsz_min <= imgsz <= self.imgsz_max and self.batch_min <= batch_size <= self.batch_max)
