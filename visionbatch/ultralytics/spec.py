"""What one training step is made of, decided before anything is built: `WorkloadSpec` and its rules.

Ultralytics' own decisions, reproduced as plain functions of the arguments and the dataset: the
optimizer `optimizer=auto` picks (`resolve_optimizer`), the worst-case label density while mosaic
runs (`labels_for`), whether AMP runs (`make_spec`: its check_amp GPU list and the `amp=` argument).
`job_spec` builds the spec for a prepared training job; `step.Workload` builds and runs the step.
Nothing here imports torch or Ultralytics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visionbatch.dataset import train_count
from visionbatch.ultralytics.offline import amp_supported

if TYPE_CHECKING:
    from visionbatch.ultralytics.job import TrainingJob


MOSAIC_LABEL_FACTOR = 4  # a mosaic tile joins four images
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
        labels_per_image: labels in every synthetic training image.
        val_labels_per_image: labels in every synthetic validation image (no mosaic there).
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
    labels_per_image: int
    val_labels_per_image: int
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

    def max_imgsz(self, stride: int) -> int:
        """The largest side a training step sees: Ultralytics' multi-scale upper bound."""
        return math.ceil(self.imgsz * (1 + self.multi_scale) / stride) * stride

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model, "task": self.task, "nc": self.nc, "imgsz": self.imgsz,
            "multi_scale": self.multi_scale, "labels_per_image": self.labels_per_image,
            "val_labels_per_image": self.val_labels_per_image, "amp": self.amp, "amp_dtype": self.amp_dtype,
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


def labels_for(max_instances: int, args: dict[str, Any]) -> int:
    """Worst-case labels per training image: x4 while mosaic runs (mosaic > 0 and epochs > close_mosaic).

    Examples:
        >>> labels_for(90, {}), labels_for(90, {"mosaic": 0.0}), labels_for(90, {"epochs": 5})
        (360, 90, 90)
    """
    mosaic = float(args.get("mosaic", 1.0)) > 0
    mosaic_epochs = int(args.get("epochs", 100)) > int(args.get("close_mosaic", 10))
    return max(1, max_instances * (MOSAIC_LABEL_FACTOR if mosaic and mosaic_epochs else 1))


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
    model: str, task: str, names: dict[int, str], train_images: int, max_instances: int, val_max_instances: int,
    args: dict[str, Any], device_type: str, device_name: str = "", labels_per_image: int | None = None,
    amp: bool | None = None, channels: int = 3,
) -> WorkloadSpec:
    """The step Ultralytics would run for these arguments on this kind of device.

    Args:
        model: model YAML or checkpoint.
        task: 'detect' or 'segment'.
        names: class names by id.
        train_images: training images before `fraction`.
        max_instances: labels in the densest training image.
        val_max_instances: labels in the densest validation image.
        args: the Ultralytics train arguments.
        device_type: 'cuda' or 'cpu'.
        device_name: the GPU's name, for Ultralytics' AMP rule when `amp` is None.
        labels_per_image: the training label density to use instead of the densest image's.
        amp: whether training runs under AMP, decided by the caller, e.g. for a target GPU
            `trainer_amp(args, target.amp)`; None: Ultralytics' rule for this device (CUDA only,
            `trainer_amp` with check_amp judged from `device_name`).
        channels: image channels.

    Examples:
        >>> names = {0: "a"}
        >>> make_spec("yolo11n.yaml", "detect", names, 100, 3, 3, {}, "cuda", "NVIDIA GeForce GTX 1650").amp
        False
        >>> make_spec("yolo11n.yaml", "detect", names, 100, 3, 3, {"amp": "bf16"}, "cuda", amp=True).amp_dtype
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
        labels_per_image=labels_per_image or labels_for(max_instances, args),
        val_labels_per_image=max(1, val_max_instances),
        amp=amp, amp_dtype=amp_dtype, optimizer=optimizer, iterations=iterations, dataset_images=images,
        channels=int(channels), args=dict(args),
    )


def job_spec(job: TrainingJob, device_type: str, device_name: str = "", labels_per_image: int | None = None,
             amp: bool | None = None, channels: int = 3) -> WorkloadSpec:
    """`make_spec` for a prepared job: its model, task, arguments and the whole dataset's counts.

    The counts are the whole training set's (after `fraction`) even where only a sample of it is
    read (augcost): optimizer=auto chooses by the iterations training will run.
    """
    dataset = job.dataset
    return make_spec(job.model, job.task, dataset.names, dataset.train.images, dataset.train.max_instances,
                     dataset.val.max_instances, job.args, device_type, device_name, labels_per_image,
                     amp=amp, channels=channels)
