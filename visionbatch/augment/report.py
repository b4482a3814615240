"""What `profile_augmentation` measured: frozen, JSON-able values that explain themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visionbatch.results import to_jsonable

# Names of the rows that are not transforms of the chain (see timing.py for what each one covers).
LOAD = "load_image"  # decode (or .npy/RAM read) and resize to imgsz: BaseDataset.load_image
LABELS = "labels"  # deepcopy of the label and segment resampling: get_image_and_label minus load_image
COLLATE = "collate"  # the DataLoader's collate_fn, per image of a batch
OTHER = "other"  # __getitem__ itself and the chain's loops: whatever no timer above covers



@dataclass(frozen=True, slots=True)
class TransformCost:
    """The cost of one row of the pipeline, per image of a phase.

    Attributes:
        name: `load_image`, `labels`, a transform's class name (`Mosaic`, `RandomFlip(horizontal)`,
            `Albumentations: Blur`), `collate` or `other`.
        mean_ms: mean milliseconds per image (exclusive: time inside nested timers is theirs).
        p95_ms: 95th percentile over images.
        share: mean_ms over the phase's total mean (0 to 1).
        calls_per_image: how often it ran per image (Mosaic pulls 3 more images through load_image).
    """

    name: str
    mean_ms: float
    p95_ms: float
    share: float
    calls_per_image: float


@dataclass(frozen=True, slots=True)
class PhaseProfile:
    """One pass of the real Ultralytics dataset at one imgsz, with every transform timed.

    Attributes:
        phase: `mosaic` (the chain as built for training), `close_mosaic` (after
            `dataset.close_mosaic()` rebuilt it, as the trainer does for the last close_mosaic epochs)
            or `val` (the validation chain: LetterBox, Format).
        imgsz: training image size in pixels.
        chain: `default` (Ultralytics' Albumentations defaults) or `pipeline` (the user's).
        images: images timed.
        epochs: training epochs spent in this phase (None for val).
        transforms: per-row costs, most expensive first; they sum to `total_ms`.
        total_ms: mean milliseconds per image, `__getitem__` plus collation.
        total_p95_ms: 95th percentile of the per-image total.
        getitem_ms: mean milliseconds of `__getitem__` alone, with the timers in place.
        unprofiled_ms: the same images through `__getitem__` with no timer, same seed.
        identical_output: the timed pass produced exactly the tensors of the untimed one.
        total_sem_ms: the standard error of `total_ms` over the images (0 for one image).
    """

    phase: str
    imgsz: int
    chain: str
    images: int
    epochs: int | None
    transforms: tuple[TransformCost, ...]
    total_ms: float
    total_p95_ms: float
    getitem_ms: float
    unprofiled_ms: float
    identical_output: bool
    total_sem_ms: float = 0.0

    @property
    def overhead(self) -> float:
        """Timed over untimed `__getitem__` time, minus 1 (noise included)."""
        return self.getitem_ms / self.unprofiled_ms - 1 if self.unprofiled_ms > 0 else 0.0

    def cost(self, name: str) -> TransformCost | None:
        return next((t for t in self.transforms if t.name == name), None)


@dataclass(frozen=True, slots=True)
class ResolutionFit:
    """How a phase's cost per image grows with imgsz.

    Attributes:
        phase: the phase fitted.
        sizes: the imgsz values measured.
        total_ms: mean milliseconds per image at each size.
        exponent: k in ms ~ pixels^k (log-log least squares; 1 = linear in pixels).
        fixed_ms: intercept of the straight line ms = fixed_ms + per_mpx_ms * megapixels.
        per_mpx_ms: slope of that line, milliseconds per megapixel of imgsz x imgsz.
        growth: the exponent in words, e.g. '~linear in pixels'.
        transform_exponents: k for each row present at every size.
    """

    phase: str
    sizes: tuple[int, ...]
    total_ms: tuple[float, ...]
    exponent: float
    fixed_ms: float
    per_mpx_ms: float
    growth: str
    transform_exponents: dict[str, float]


@dataclass(frozen=True, slots=True)
class LoaderSample:
    """Throughput of Ultralytics' real training DataLoader for one setting.

    Attributes:
        cache: `none`, `ram` or `disk` (Ultralytics' cache=False/ram/disk).
        workers: workers asked for.
        workers_used: worker processes `build_dataloader` started (it caps at the CPU count and
            at the number of batches).
        images_per_s: images per second after the warm-up batches; None when not measured.
        images: images timed.
        seconds: seconds timed.
        cache_fill_s: seconds Ultralytics took to fill the cache for the sampled images.
        note: why a setting was skipped or reduced, else ''.
    """

    cache: str
    workers: int
    workers_used: int
    images_per_s: float | None
    images: int
    seconds: float
    cache_fill_s: float
    note: str = ""


@dataclass(frozen=True, slots=True)
class StepTiming:
    """The training step's throughput: what the loader must keep up with.

    Attributes:
        source: `cuda` or `cpu` (measured here), or `given` (step_img_per_s=).
        device: the device's name.
        model: the model timed.
        batch_size: the training batch size.
        measured_batch_size: the batch actually timed (smaller on CPU, where img/s hardly
            depends on the batch and a batch-16 step takes many seconds).
        images_per_s: training images per second of the step alone.
        forward_backward_ms: milliseconds of forward + loss + backward for the measured batch.
        optimizer_ms: milliseconds of the optimizer step + EMA update, run once per
            `accumulate` batches as Ultralytics does (nbs=64).
        accumulate: batches per optimizer step.
        amp: mixed precision on.
    """

    source: str
    device: str
    model: str
    batch_size: int
    measured_batch_size: int
    images_per_s: float
    forward_backward_ms: float | None = None
    optimizer_ms: float | None = None
    accumulate: int = 1
    amp: bool = False


@dataclass(frozen=True, slots=True)
class PipelineDelta:
    """What the user's Albumentations pipeline adds to Ultralytics' default chain.

    Attributes:
        phase: the phase compared.
        default_ms: mean milliseconds per image with Ultralytics' default Albumentations.
        pipeline_ms: the same with the user's pipeline in its place.
        added_ms: pipeline_ms - default_ms.
        added_share: added_ms / default_ms.
        added_low_ms, added_high_ms: the 95% interval of added_ms (Welch, over the images timed); when it
            holds 0, the two chains are not measurably different.
    """

    phase: str
    default_ms: float
    pipeline_ms: float
    added_ms: float
    added_share: float
    added_low_ms: float
    added_high_ms: float

    @property
    def measured(self) -> bool:
        """Whether the interval leaves out 0: the pipeline is measurably slower or faster."""
        return self.added_low_ms > 0 or self.added_high_ms < 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Which side limits training speed, by how much, and the change that helps most.

    Attributes:
        bound: `data` (the loader is slower than the step) or `compute`.
        loader_images_per_s: what the loader delivers at the training's own workers and cache.
        step_images_per_s: what the step consumes.
        idle_share: share of time the step waits for data (data-bound), else 0. On CPU, where
            Ultralytics loads data in the training process, the pipeline's share of each image's time.
        serial: data loading runs in series with the step (Ultralytics sets workers=0 on CPU).
        change: the concrete change that helps most.
        message: the whole verdict in one line.
    """

    bound: str
    loader_images_per_s: float
    step_images_per_s: float
    idle_share: float
    serial: bool
    change: str
    message: str


@dataclass(frozen=True, slots=True)
class AugmentationReport:
    """Everything `visionbatch augcost` measured; written as `augcost.json`.

    Attributes:
        data: the data.yaml profiled.
        task: 'detect' or 'segment'.
        model: the model whose step was timed.
        imgsz: the training image size.
        batch_size: the training batch size.
        sizes: the image sizes profiled (the resolution sweep).
        pipeline: the user's Albumentations pipeline file, or None for Ultralytics' defaults.
        train_images: training images Ultralytics would use (after fraction=).
        sampled_images: images the measurements ran on (a symlinked sample of the training set).
        seed: seed of every timed pass.
        args: the Ultralytics arguments the dataset was built with.
        phases: one profile per (imgsz, phase, chain), training size first.
        resolution: growth with imgsz, per training phase.
        pipeline_delta: the user's pipeline against the default, per phase at the training size.
        loader: DataLoader throughput for each workers x cache setting.
        step: the training step's throughput, or None when it could not be measured.
        verdict: data- or compute-bound, and what to change.
        notes: things the reader should know to read the numbers right.
        versions: package versions.
        wall_s: seconds the whole profile took.
        save_dir: where augcost.json and augcost.png were written, once saved.
    """

    data: str
    task: str
    model: str
    imgsz: int
    batch_size: int
    sizes: tuple[int, ...]
    pipeline: str | None
    train_images: int
    sampled_images: int
    seed: int
    args: dict[str, Any]
    phases: tuple[PhaseProfile, ...]
    resolution: tuple[ResolutionFit, ...]
    pipeline_delta: tuple[PipelineDelta, ...]
    loader: tuple[LoaderSample, ...]
    step: StepTiming | None
    verdict: Verdict | None
    notes: tuple[str, ...]
    versions: dict[str, str]
    wall_s: float
    save_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    def phase(self, phase: str, imgsz: int | None = None, chain: str | None = None) -> PhaseProfile | None:
        """The profile of `phase` at `imgsz` (default: the training size) for `chain` (default: the one studied)."""
        imgsz = self.imgsz if imgsz is None else imgsz
        chain = chain or ("pipeline" if self.pipeline else "default")
        return next((p for p in self.phases if (p.phase, p.imgsz, p.chain) == (phase, imgsz, chain)), None)

    @property
    def best_loader(self) -> LoaderSample | None:
        measured = [s for s in self.loader if s.images_per_s is not None]
        return max(measured, key=lambda s: s.images_per_s) if measured else None
