"""Fit's results: one probe's reading, the fitted memory curve and surface, the step probed, and the plan.

All frozen and JSON-able (`results.to_jsonable`); a `BatchPlan` is written as `plan.json` (and as
`batch_plan.json` beside a training run). `batch_fits` is the one rule for "a batch fits".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from visionbatch.results import minutes, to_jsonable
from visionbatch.stats import Timings
from visionbatch.units import human_bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeSample:
    """One measured step at one batch size.

    Attributes:
        batch_size: images per step.
        phase: 'train' (forward, loss, backward, optimizer, EMA) or 'val' (eval forward, loss, NMS).
        ok: the step ran without running out of memory.
        peak_bytes: the fitted reading: device memory the process needed at peak (CUDA: peak
            reserved + CUDA context; CPU budget: the training process's resident memory, baseline +
            the step's growth + the mosaic buffer, fit/probes/cpu.py). None when the step failed.
        allocated_bytes: peak allocated by torch (CUDA); the step's growth of resident memory over
            the baseline (CPU budget), or live tensor bytes (the CPU trace's `TensorProbe`).
        reserved_bytes: peak reserved by torch's caching allocator (CUDA only).
        step_s: seconds per step: the mean of the interleaved timed steps (None when not timed or failed;
            the plan's `timings` has the intervals).
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



CACHE_KEPT_SHARE = 0.5  # Ultralytics empties the CUDA cache between phases only above half the card


def after_validation_bytes(train: ProbeSample | None, val: ProbeSample | None, total_bytes: int | None) -> int | None:
    """What the device holds once validation has run, as Ultralytics' cache rule leaves it.

    Ultralytics' trainer (8.3.149 and later, `BaseTrainer._clear_memory(0.5)`) empties the CUDA
    cache before validation and after each epoch only when reserved memory is above half the card.
    Below that, validation allocates beside training's cached blocks and training resumes beside
    validation's: the published logs' `GPU_mem` grows after epoch 1 by up to validation's reserved
    memory. So: training's peak plus validation's reserved memory (no block reused: the bound)
    when training stays under half the card, else the larger of the two peaks. None without
    reserved readings (a CPU) or a known card size.

    Examples:
        >>> train = ProbeSample(4, "train", ok=True, peak_bytes=30, reserved_bytes=25)
        >>> val = ProbeSample(8, "val", ok=True, peak_bytes=20, reserved_bytes=15)
        >>> after_validation_bytes(train, val, 100), after_validation_bytes(train, val, 40)
        (45, 30)
    """
    if not _reserved_readings(train, val, total_bytes):
        return None
    held = held_after_validation(train, val, total_bytes)
    return held if held is not None else max(train.peak_bytes, val.peak_bytes)


def _reserved_readings(train: ProbeSample | None, val: ProbeSample | None, total_bytes: int | None) -> bool:
    """Both steps ran on a card of known size and read their reserved memory: the cache rule can be read."""
    return bool(train is not None and val is not None and train.ok and val.ok and total_bytes
                and train.reserved_bytes is not None and val.reserved_bytes is not None)


def held_predicted(train: MemoryCurve, val: MemoryCurve, batch_size: float, val_batch: float, context_bytes: int,
                   total_bytes: int | None) -> float | None:
    """What the curves predict training and validation hold together after the first validation at
    training batch `batch_size` (validation at `val_batch`): training's peak plus validation's, the
    CUDA context once, while training's reserved memory stays under half the card (`CACHE_KEPT_SHARE`);
    None above it (Ultralytics empties its cache) or without a card size. The planner, its reason and
    the plot all read this one rule.
    """
    trained = train.predict(batch_size)
    if not total_bytes or trained - context_bytes > CACHE_KEPT_SHARE * total_bytes:
        return None
    return trained + val.predict(val_batch) - context_bytes


def held_after_validation(train: ProbeSample | None, val: ProbeSample | None, total_bytes: int | None) -> int | None:
    """Training's peak plus validation's reserved memory, held together once validation has run,
    where Ultralytics keeps its CUDA cache (training reserves at most half the card). None where
    that rule does not apply: a CPU, no card size, a step that failed, or training above half the
    card (the cache is emptied and each peak counts alone).

    Examples:
        >>> train = ProbeSample(4, "train", ok=True, peak_bytes=30, reserved_bytes=25)
        >>> val = ProbeSample(8, "val", ok=True, peak_bytes=20, reserved_bytes=15)
        >>> held_after_validation(train, val, 100), held_after_validation(train, val, 40)
        (45, None)
    """
    if not _reserved_readings(train, val, total_bytes) or train.reserved_bytes > CACHE_KEPT_SHARE * total_bytes:
        return None
    return train.peak_bytes + val.reserved_bytes


def held_over_budget(train: ProbeSample | None, val: ProbeSample | None, budget_bytes: int,
                     total_bytes: int | None) -> int | None:
    """The held-together figure (`held_after_validation`) when it alone is what does not fit: both
    steps ran and peaked within the budget, and the two held together are over it (else None).

    Examples:
        >>> train = ProbeSample(4, "train", ok=True, peak_bytes=30, reserved_bytes=25)
        >>> val = ProbeSample(8, "val", ok=True, peak_bytes=20, reserved_bytes=15)
        >>> held_over_budget(train, val, 40, 100), held_over_budget(train, val, 50, 100)
        (45, None)
    """
    held = held_after_validation(train, val, total_bytes)
    if held is None or held <= budget_bytes or max(train.peak_bytes, val.peak_bytes) > budget_bytes:
        return None
    return held


def val_batch_size(batch_size: int, val_images: int | None) -> int:
    """Ultralytics' validation batch for training batch `batch_size`: twice it, and no batch holds
    more than the validation split (`val_images`; None: not known). A plot's fractional batch works too.

    Examples:
        >>> val_batch_size(16, None), val_batch_size(16, 1000), val_batch_size(85, 40), val_batch_size(2.5, 40)
        (32, 32, 40, 5.0)
    """
    return min(2 * batch_size, val_images) if val_images else 2 * batch_size


def batch_fits(train: ProbeSample | None, val: ProbeSample | None, budget_bytes: int,
               total_bytes: int | None = None) -> bool:
    """The one rule for "batch b fits": its training step and its validation step (batch 2b, which
    runs between epochs with the training state alive) both ran and peaked within the budget, and
    on a CUDA card of `total_bytes` so does what the two leave reserved together
    (`after_validation_bytes`).

    Examples:
        >>> ok = ProbeSample(4, "train", ok=True, peak_bytes=90)
        >>> batch_fits(ok, ProbeSample(8, "val", ok=True, peak_bytes=100), 100), batch_fits(ok, None, 100)
        (True, False)
        >>> batch_fits(ok, ProbeSample(8, "val", ok=False, peak_bytes=None), 100)
        False
    """
    if not (train is not None and val is not None and train.ok and val.ok
            and train.peak_bytes <= budget_bytes and val.peak_bytes <= budget_bytes):
        return False
    after = after_validation_bytes(train, val, total_bytes)
    return after is None or after <= budget_bytes



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
class PlanReuse:
    """Where a reused plan came from: its plan-cache entry (`fit.cache`).

    Attributes:
        key: the entry's key hash (SHA-256 of the key; `visionbatch cache list` shows its start).
        fitted_at: when the plan was fitted, UTC, ISO 8601 ('2026-11-30T10:02:41+00:00').
        seconds: how long this run took to find the entry and check that it still applies (the
            key's model hash and label density, the card's memory now); None when not timed.
    """

    key: str
    fitted_at: str
    seconds: float | None = None

    def _when(self) -> str:
        return minutes(self.fitted_at) + (" UTC" if self.fitted_at.endswith("+00:00") else "")

    def describe(self) -> str:
        """The reuse in a few words, as `visionbatch fit` and `train` print it.

        Examples:
            >>> PlanReuse("3fa2c1d4e5f6a7b8" + "0" * 48, "2026-11-30T10:02:41+00:00").describe()
            'reused from the plan cache (fitted 2026-11-30 10:02 UTC, key 3fa2c1d4e5f6)'
        """
        return f"reused from the plan cache (fitted {self._when()}, key {self.key[:12]})"

    def planned(self, planning_s: float) -> str:
        """The planning time of a reused plan: the search's, when it was fitted, and this run's, which ran none.

        Examples:
            >>> PlanReuse("3fa2c1d4e5f6", "2026-11-30T18:22:05+00:00", 0.42).planned(18.7)
            'planned in 18.7 s when fitted (2026-11-30 18:22 UTC); reused now in 0.4 s'
            >>> PlanReuse("3fa2c1d4e5f6", "2026-11-30T18:22:05+00:00").planned(18.7)
            'planned in 18.7 s when fitted (2026-11-30 18:22 UTC); reused now'
        """
        now = "" if self.seconds is None else f" in {self.seconds:.1f} s"
        return f"planned in {planning_s:.1f} s when fitted ({self._when()}); reused now{now}"



def memory_counted(device: str, measured: bool, context_bytes: int) -> str:
    """What a plan's or check's memory figures count, in one sentence (`counted` in its JSON; the CLI prints it).

    Examples:
        >>> memory_counted("cpu", True, 2**30).split(": ")[0]
        "the training process's resident memory"
        >>> memory_counted("cuda:0", True, 300 * 2**20)
        "torch.cuda's peak reserved memory in each step, plus the CUDA context of 300 MiB (NVML); the budget is memory_fraction x the usable memory (what this process can have, or memory_budget=)"
    """
    if device == "cpu":
        return (f"the training process's resident memory: a measured baseline of {human_bytes(context_bytes)} "
                f"(Python, torch, Ultralytics, model, optimizer; with the trainer, its loader and what validation "
                f"leaves), plus each step's measured growth (+20% for the heap over epochs) and the mosaic buffer; "
                f"no DataLoader workers on a CPU (workers=0)")
    if not measured:
        return (f"torch's reserved memory at each step's peak, traced on this machine's CPU for the target, plus a "
                f"CUDA context of {human_bytes(context_bytes)}; the budget is memory_fraction x the usable memory "
                f"(the target's, or memory_budget=)")
    return (f"torch.cuda's peak reserved memory in each step, plus the CUDA context of {human_bytes(context_bytes)} "
            f"(NVML); the budget is memory_fraction x the usable memory (what this process can have, or "
            f"memory_budget=)")


@dataclasses.dataclass(frozen=True, slots=True)
class BatchPlan:
    """The batch size to train with, and everything it was decided from.

    Attributes:
        batch_size: the batch to train with: the largest verified batch, or a smaller one whose
            speed interval shows it within 3% of every other timed batch (throughput saturates).
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
        context_bytes: memory the CUDA context takes outside torch's allocator; on a CPU budget, the
            training process's measured baseline before any step (fit/probes/cpu.py).
        predicted_bytes: training peak predicted at batch_size.
        predicted_uncertainty_bytes: one standard deviation of that prediction.
        measured_bytes: training peak measured at batch_size (None when predicted, not measured).
        val_predicted_bytes: validation peak predicted at val_batch_size.
        val_measured_bytes: validation peak measured at val_batch_size.
        img_per_s: training throughput measured at batch_size (the mean; intervals in `timings`).
        best_img_per_s: the best throughput measured.
        samples: every probe, in the order run.
        curve: the fitted training curve.
        val_curve: the fitted validation curve (batch = validation batch).
        workload: what one step contained (model, task, imgsz, labels per image, AMP, optimizer, ...).
        reason: why this batch, in one sentence.
        warnings: things to know (noisy readings, extrapolation, clamps).
        measured: True when the answer was verified with real steps on the device.
        planning_s: seconds spent planning.
        timings: the timed batches' speeds with their 95% intervals, how long the timing took and
            whether it settled the choice or hit its time bound (None when nothing was timed: a trace).
        after_validation_bytes: what the card holds once validation has run at the chosen batch,
            under Ultralytics' cache rule (`after_validation_bytes`; None on a CPU).
        save_dir: the run folder the plan was written to (absent from JSON when not saved).
        reused: set when the plan came from the plan cache instead of being fitted now: the
            entry's key and when it was fitted (`PlanReuse`; absent from JSON for a fresh fit).
    """

    JSON_OPTIONAL: ClassVar[tuple[str, ...]] = ("save_dir", "reused")
    JSON_PROPERTIES: ClassVar[tuple[str, ...]] = ("counted",)

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
    workload: WorkloadSummary
    reason: str
    warnings: tuple[str, ...]
    measured: bool
    planning_s: float
    timings: Timings | None = None
    after_validation_bytes: int | None = None
    save_dir: str | None = None
    reused: PlanReuse | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @property
    def counted(self) -> str:
        """What the memory figures count (`memory_counted`): on a CPU, the whole training process."""
        return memory_counted(self.device, self.measured, self.context_bytes)

    def sample(self, batch_size: int, phase: str) -> ProbeSample | None:
        """The probe of `phase` ('train' or 'val') at `batch_size`, if one ran."""
        return next((s for s in self.samples if s.batch_size == batch_size and s.phase == phase), None)

    def val_batch_for(self, batch_size: int) -> int:
        """The validation batch that goes with training batch `batch_size`: twice it, at most the split."""
        return val_batch_size(batch_size, self.workload.val_images if self.workload else None)

    def val_sample(self, batch_size: int) -> ProbeSample | None:
        """The validation probe run with the training probe at `batch_size` (the one right after it)."""
        for index, sample in enumerate(self.samples):
            if sample.phase == "train" and sample.batch_size == batch_size:
                after = self.samples[index + 1] if index + 1 < len(self.samples) else None
                return after if after is not None and after.phase == "val" else None
        return self.sample(self.val_batch_for(batch_size), "val")

    def fits(self, batch_size: int) -> bool:
        """Whether the probes at `batch_size` (training, and validation at twice it) fit the budget."""
        return batch_fits(self.sample(batch_size, "train"), self.val_sample(batch_size), self.budget_bytes,
                          self.total_bytes)

    def held_after_validation(self, batch_size: int) -> int | None:
        """What training at `batch_size` and its validation hold together where Ultralytics keeps its
        CUDA cache (`held_after_validation`; None where that rule does not apply)."""
        return held_after_validation(self.sample(batch_size, "train"), self.val_sample(batch_size), self.total_bytes)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchCheck:
    """The answer to "will batch b fit?": one training step at b and validation at 2b, no search.

    `fit_batch(..., batch_size=b)` and `visionbatch fit DATA batch=b` return it. On a device the
    steps are measured; for a `target=` they are predicted from a CPU trace (`measured` False).

    Attributes:
        batch_size: the training batch asked about.
        val_batch_size: the validation batch Ultralytics will use (2 x batch_size).
        fits: training and validation both ran and peaked within the budget (`batch_fits`).
        train: the training step's reading. `peak_bytes` is what has to fit (CUDA: peak reserved
            plus the context); `reserved_bytes` is torch's peak reserved without the context,
            what Ultralytics' `GPU_mem` column shows.
        val: the validation step's reading at val_batch_size (None when training did not run).
        budget_bytes: memory_fraction x usable memory.
        margin_bytes: budget minus the largest of the two peaks and `after_validation_bytes`
            (negative when over; None when a step ran out of memory and left no reading).
        memory_fraction, device, device_name, total_bytes, usable_bytes, context_bytes: as in
            `BatchPlan`.
        workload: what one step contained (model, task, imgsz, label density, AMP, optimizer, ...).
        reason: the answer in one sentence.
        warnings: things to know.
        measured: True when the steps ran on the device; False for a target's prediction.
        planning_s: seconds spent.
        after_validation_bytes: what the card holds once validation has run, under Ultralytics'
            cache rule (`after_validation_bytes`; None on a CPU).
        save_dir: the run folder the check was written to (absent from JSON when not saved).
    """

    JSON_OPTIONAL: ClassVar[tuple[str, ...]] = ("save_dir",)
    JSON_PROPERTIES: ClassVar[tuple[str, ...]] = ("counted",)

    batch_size: int
    val_batch_size: int
    fits: bool
    train: ProbeSample
    val: ProbeSample | None
    budget_bytes: int
    margin_bytes: int | None
    memory_fraction: float
    device: str
    device_name: str
    total_bytes: int | None
    usable_bytes: int
    context_bytes: int
    workload: WorkloadSummary
    reason: str
    warnings: tuple[str, ...]
    measured: bool
    planning_s: float
    after_validation_bytes: int | None = None
    save_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @property
    def counted(self) -> str:
        """What the memory figures count (`memory_counted`): on a CPU, the whole training process."""
        return memory_counted(self.device, self.measured, self.context_bytes)

    @property
    def peak_bytes(self) -> int | None:
        """The larger of the training and validation peaks (None when a step ran out of memory)."""
        readings = [s.peak_bytes for s in (self.train, self.val) if s is not None and s.ok]
        return max(readings) if len(readings) == 2 else None



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



@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadSummary:
    """What one probed training step contained: the model, the data it saw and how it was optimised.

    Attributes:
        model, task, nc: the model file, 'detect' or 'segment', and the number of classes.
        imgsz: the training size asked for; max_imgsz: the largest size a step runs at (multi-scale).
        multi_scale: Ultralytics' multi_scale fraction.
        labels_per_image: the largest per-image label count a training batch is planned for (the
            loss pads every image to it); val_labels_per_image: the densest validation image's.
        oom_risk: the chance, at most, that a batch of the run carries more labels than planned
            (None when `labels_per_image=` forced the count).
        label_density: how the training density was set, in one sentence.
        labels_per_batch: labels in the training batch the answer was measured with.
        amp, amp_dtype: mixed precision, and its dtype ('float16', 'bfloat16') when on.
        optimizer: the optimizer Ultralytics' optimizer=auto picks (or the one given).
        ema: whether the step updates an EMA copy (always, as Ultralytics' trainer does).
        dataset_images: training images (sets optimizer=auto's choice and the batch clamp).
        val_images: validation images: Ultralytics validates at twice the batch, and no validation
            batch holds more than the split (None: not known, validation at twice the batch).
        device, data, target: where the step ran, the data.yaml, and the target predicted for.
    """

    JSON_OPTIONAL: ClassVar[tuple[str, ...]] = ("max_imgsz", "device", "data", "target", "labels_per_batch",
                                                "val_images")

    model: str
    task: str
    nc: int
    imgsz: int
    multi_scale: float
    labels_per_image: int
    val_labels_per_image: int
    oom_risk: float | None
    label_density: str
    amp: bool
    amp_dtype: str | None
    optimizer: str
    ema: bool
    dataset_images: int
    max_imgsz: int | None = None
    device: str | None = None
    data: str | None = None
    target: str | None = None
    labels_per_batch: int | None = None
    val_images: int | None = None
