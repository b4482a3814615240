"""What one training step is made of, decided before anything is built: `WorkloadSpec` and its rules.

Ultralytics' own decisions, reproduced as plain functions of the arguments and the dataset: the
optimizer `optimizer=auto` picks (`resolve_optimizer`), the label counts the run's batches carry
(`density.label_density`, sized for `oom_risk`), whether AMP runs (`make_spec`: its check_amp GPU
list and the `amp=` argument).
`job_spec` builds the spec for a prepared training job; `step.Workload` builds and runs the step.
Nothing here imports torch or Ultralytics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visionbatch.dataset import train_count
from visionbatch.ultralytics.density import (
    DEFAULT_OOM_RISK,
    LabelDensity,
    label_density,
)
from visionbatch.ultralytics.offline import amp_supported

if TYPE_CHECKING:
    from visionbatch.ultralytics.job import TrainingJob


MAX_VAL_COUNTS = 2 * 65536  # validation counts kept: the densest validation batch at checks.MAX_BATCH_SIZE
NOMINAL_BATCH = 64  # Ultralytics' default nbs: the optimizer steps (and decays weights) once per nbs images


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What one training step is made of.

    Attributes:
        model: model YAML or checkpoint.
        task: 'detect' or 'segment'.
        names: class names by id.
        imgsz: the training image size.
        multi_scale: Ultralytics' multi_scale fraction.
        density: the training batches' label counts (`LabelDensity`): `batch_labels(b)`.
        val_counts: validation images' label counts, densest first (no augmentation there).
        amp: whether training runs under AMP.
        amp_dtype: 'float16', 'bfloat16' or 'float32' (no AMP).
        optimizer: the optimizer Ultralytics will build (after resolving optimizer=auto).
        iterations: the iteration count Ultralytics' optimizer=auto rule sees.
        dataset_images: training images (after fraction).
        channels: image channels (the data.yaml's `channels:`, 3 unless it says otherwise).
        args: the Ultralytics arguments the step depends on.
    """

    model: str
    task: str
    names: dict[int, str]
    imgsz: int
    multi_scale: float
    density: LabelDensity
    val_counts: tuple[int, ...]
    amp: bool
    amp_dtype: str
    optimizer: str
    iterations: int
    dataset_images: int
    channels: int = 3
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def labels_per_image(self) -> int:
        """The largest per-image label count a training batch is planned for (its padding)."""
        return self.density.labels_per_image

    @property
    def val_labels_per_image(self) -> int:
        return self.val_counts[0] if self.val_counts else 1

    def batch_labels(self, batch_size: int) -> tuple[int, ...]:
        """Per-image label counts of the training batch measured at `batch_size`."""
        return self.density.batch_counts(batch_size)

    def val_batch_labels(self, batch_size: int) -> tuple[int, ...]:
        """Per-image label counts of the densest validation batch: the `batch_size` densest images.

        Validation sees every image once per epoch, unaugmented, so the densest batch is bounded by
        the densest images together (at least one label, so the loss has a target).
        """
        counts = self.val_counts[:batch_size]
        return tuple(counts) + (0,) * (batch_size - len(counts)) if any(counts) else (1,) + (0,) * (batch_size - 1)

    def max_imgsz(self, stride: int) -> int:
        """The largest side a training step sees: Ultralytics' multi-scale upper bound."""
        return math.ceil(self.imgsz * (1 + self.multi_scale) / stride) * stride

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model, "task": self.task, "nc": self.nc, "imgsz": self.imgsz,
            "multi_scale": self.multi_scale, "labels_per_image": self.labels_per_image,
            "val_labels_per_image": self.val_labels_per_image, "oom_risk": None if self.density.forced
            else self.density.oom_risk, "label_density": self.density.describe(),
            "amp": self.amp, "amp_dtype": self.amp_dtype,
            "optimizer": self.optimizer, "ema": True, "dataset_images": self.dataset_images,
        }


def resolve_optimizer(name: str, dataset_images: int, epochs: int, nbs: int) -> tuple[str, int]:
    """Ultralytics' optimizer=auto rule (`BaseTrainer.build_optimizer`) for batches up to nbs.

    Examples:
        >>> resolve_optimizer("auto", 160, 100, 64)
        ('AdamW', 300)
        >>> resolve_optimizer("auto", 118287, 100, 64)
        ('MuSGD', 184900)
        >>> resolve_optimizer("SGD", 160, 100, 64)
        ('SGD', 300)
    """
    iterations = math.ceil(dataset_images / max(nbs, 1)) * epochs
    if name.lower() != "auto":
        return name, iterations
    return ("MuSGD" if iterations > 10000 else "AdamW"), iterations


def trainer_amp(args: Mapping[str, Any], check_amp: bool) -> bool:
    """Whether Ultralytics' trainer runs AMP on a CUDA GPU (`BaseTrainer._setup_train`).

    `amp=False` or `'fp32'` turns it off; `amp='bf16'` turns it on without asking check_amp;
    otherwise it is `check_amp`'s verdict on the GPU (False on the GTX 16xx it blocks).

    Examples:
        >>> trainer_amp({}, True), trainer_amp({}, False), trainer_amp({"amp": "bf16"}, False)
        (True, False, True)
        >>> trainer_amp({"amp": False}, True), trainer_amp({"amp": "fp32"}, True)
        (False, False)
    """
    amp_arg = args.get("amp", True)
    return amp_arg not in (False, "fp32") and (amp_arg == "bf16" or check_amp)


def make_spec(
    model: str, task: str, names: dict[int, str], train_images: int, density: LabelDensity, val_counts: Sequence[int],
    args: dict[str, Any], device_type: str, device_name: str = "", amp: bool | None = None, channels: int = 3,
) -> WorkloadSpec:
    """The step Ultralytics would run for these arguments on this kind of device.

    Args:
        model: model YAML or checkpoint.
        task: 'detect' or 'segment'.
        names: class names by id.
        train_images: training images before `fraction`.
        density: the training batches' label counts (`density.label_density`, or `LabelDensity.fixed`).
        val_counts: the validation images' label counts.
        args: the Ultralytics train arguments.
        device_type: 'cuda' or 'cpu'.
        device_name: the GPU's name, for Ultralytics' AMP rule when `amp` is None.
        amp: whether training runs under AMP, decided by the caller, e.g. for a target GPU
            `trainer_amp(args, target.amp)`; None: Ultralytics' rule for this device (CUDA only,
            `trainer_amp` with check_amp judged from `device_name`).
        channels: image channels.

    Examples:
        >>> names, three = {0: "a"}, LabelDensity.fixed(3)
        >>> make_spec("yolo11n.yaml", "detect", names, 100, three, [3], {}, "cuda", "NVIDIA GeForce GTX 1650").amp
        False
        >>> make_spec("yolo11n.yaml", "detect", names, 100, three, [3], {"amp": "bf16"}, "cuda", amp=True).amp_dtype
        'bfloat16'
    """
    images = train_count(train_images, args.get("fraction", 1.0))  # the images Ultralytics trains on
    amp_arg = args.get("amp", True)
    if amp is None:
        amp = device_type == "cuda" and trainer_amp(args, amp_supported(device_name))
    amp_dtype = ("bfloat16" if amp_arg == "bf16" else "float16") if amp else "float32"
    optimizer, iterations = resolve_optimizer(str(args.get("optimizer", "auto")), images,
                                              int(args.get("epochs", 100)), int(args.get("nbs", NOMINAL_BATCH)))
    return WorkloadSpec(
        model=model, task=task, names=dict(names), imgsz=int(args.get("imgsz", 640)),
        multi_scale=float(args.get("multi_scale", 0.0) or 0.0),
        density=density,
        val_counts=tuple(sorted(val_counts, reverse=True)[:MAX_VAL_COUNTS]),
        amp=amp, amp_dtype=amp_dtype, optimizer=optimizer, iterations=iterations, dataset_images=images,
        channels=int(channels), args=dict(args),
    )


def job_spec(job: TrainingJob, device_type: str, device_name: str = "", labels_per_image: int | None = None,
             amp: bool | None = None, channels: int = 3, oom_risk: float = DEFAULT_OOM_RISK) -> WorkloadSpec:
    """`make_spec` for a prepared job: its model, task, arguments and the whole dataset's counts.

    The counts are the whole training set's (after `fraction`) even where only a sample of it is
    read (augcost): optimizer=auto chooses by the iterations training will run. The label density
    is modelled from the training labels at `oom_risk`, unless `labels_per_image` forces a count.
    """
    dataset = job.dataset
    images = train_count(dataset.train.images, job.args.get("fraction", 1.0))
    if labels_per_image is not None:
        density = LabelDensity.fixed(labels_per_image)
    else:
        density = label_density(dataset.train.objects, job.args, images, dataset.train.polygons > 0, oom_risk)
    val_counts = [o.count for o in dataset.val.objects] or [dataset.val.max_instances]
    return make_spec(job.model, job.task, dataset.names, dataset.train.images, density, val_counts, job.args,
                     device_type, device_name, amp=amp, channels=channels)
