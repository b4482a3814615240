"""Measure a step on the CPU against a memory budget: the budget bounds the training process.

On a CPU, `memory_budget=` means what the process that trains will hold, as resident memory
(RSS). `CpuProbe` counts three parts:

1. **The baseline, measured**: this process's RSS once the step is built and before it runs
   (Python, torch and its thread pools, Ultralytics, the model, its optimizer and EMA), after a
   garbage collection and a heap trim. Added to it, what Ultralytics' trainer holds before its first
   step that this process does not (`TrainerShare`): its own build of the model, the dataloaders,
   validator and trainer objects, what validation leaves on the training heap, the label and
   validation plots when `plots=True`, and the images `cache=ram` keeps.
2. **The step's growth, measured**: the peak RSS while the real step runs (its tensors, and the
   allocator's and heap's overhead on top of them: 1.3x to 1.6x the tensor bytes on cpu-2), over
   the baseline RSS; plus `EPOCH_HEAP_SHARE` of it for what the heap gains over epochs (below).
3. **The loader's mosaic buffer**: training keeps up to min(images, 8 x batch, 1000) resized images
   for mosaic, in this process: on a CPU Ultralytics trains with workers=0 (BaseTrainer sets it),
   so there are no DataLoader worker processes to count.

`TensorProbe` is the older reading, the step's live tensor bytes from torch's MemTracker: the
trace (probes/trace.py) predicts tensor bytes, and is checked against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from visionbatch.devices.memory import Capacity, ProcessRss
from visionbatch.fit.plan import ProbeSample
from visionbatch.fit.probes.base import Probe
from visionbatch.units import MIB

if TYPE_CHECKING:
    from visionbatch.ultralytics.job import TrainingJob

# What Ultralytics' trainer (8.4.190) adds to the process before its first step, beyond what this
# process already holds, measured on cpu-2 (2-core EPYC, torch 2.14.1) with yolo11n and yolo11s at
# imgsz 320 by logging RSS around BaseTrainer._setup_train (tools/bench_cpu_budget.py --setup):
# dataloaders 21 MiB, validator 8 MiB, the rest of the model set-up 43 MiB beyond one more copy of
# the weights (counted apart, `TrainerShare.model_bytes`); label plots 95 MiB (matplotlib, polars
# and a 1600 x 1600 figure), only with plots=True.
TRAINER_OBJECTS_BYTES = 72 * MIB
LABEL_PLOTS_BYTES = 95 * MIB
# With plots=True the last epoch's validation and the final evaluation also draw prediction mosaics, PR
# curves and confusion matrices (matplotlib at 250 dpi), on top of the training heap: measured by
# validating a trained checkpoint alone, plots=True minus plots=False, +148 to +164 MiB with 5 classes
# (shapes), +187 to +247 MiB with 80 (coco128); in training, coco128's last validation added 270 MiB.
VAL_PLOTS_BYTES = 128 * MIB
VAL_PLOTS_PER_CLASS_BYTES = 3 * MIB // 2
MOSAIC_BUFFER_PER_BATCH = 8  # BaseDataset.max_buffer_length = min(images, 8 x batch, 1000)
MOSAIC_BUFFER_MAX = 1000
# Training's peak RSS exceeds the fit's reading of the same step: the heap fragments over epochs (the
# loader's and the validator's batches of varying shapes, checkpoints, metrics), and the validator and the
# final evaluation (the best checkpoint reloaded and validated again) allocate on top of the heap training
# leaves, hardly reusing it (coco128, imgsz 320, batch 5: each validation added ~190 MiB over training's
# peak). Measured on cpu-2 with yolo11n over 2-3 epochs (RSS per epoch, tools/bench_cpu_budget.py), the
# excess was up to 17% of the step's growth at large steps (imgsz 640 batch 4: +179 MiB on ~1.4 GiB) and up
# to 191 MiB at small ones: budgeted as 20% of each step's growth, plus 192 MiB in the baseline.
EPOCH_HEAP_SHARE = 0.2
VALIDATION_HEAP_BYTES = 192 * MIB


@dataclass(frozen=True, slots=True)
class TrainerShare:
    """What Ultralytics' trainer holds in the training process that a fit's process does not.

    Attributes:
        objects_bytes: dataloaders, validator and the trainer's model set-up (constant, measured).
        validation_bytes: what validation and the final evaluation leave on the training heap (measured).
        plots_bytes: the label plots drawn before the first epoch and the validation plots of the last
            (0 with plots=False).
        model_bytes: one more copy of the model's weights and buffers (the trainer builds its own).
        train_images: images in the training split (after `fraction`).
        cached_images: images `cache=ram` keeps resized in memory (train and val; 0 without it).
        aspect: mean short side / long side of the images (1.0 when their sizes are unknown).
        channels: image channels.
        imgsz: the training size the loader resizes to.
    """

    objects_bytes: int = TRAINER_OBJECTS_BYTES
    validation_bytes: int = VALIDATION_HEAP_BYTES
    plots_bytes: int = LABEL_PLOTS_BYTES
    model_bytes: int = 0
    train_images: int = 0
    cached_images: int = 0
    aspect: float = 1.0
    channels: int = 3
    imgsz: int = 640

    def image_bytes(self, imgsz: int | None = None) -> int:
        """One image as the loader keeps it: long side resized to imgsz, uint8 HWC.

        Examples:
            >>> TrainerShare(aspect=0.75).image_bytes(640)
            921600
        """
        side = self.imgsz if imgsz is None else int(imgsz)
        return self.channels * side * math.ceil(side * self.aspect)

    def fixed_bytes(self, imgsz: int | None = None) -> int:
        """What the trainer adds whatever the batch: objects, validation, plots, the model copy, the RAM cache."""
        return (self.objects_bytes + self.validation_bytes + self.plots_bytes + self.model_bytes
                + self.cached_images * self.image_bytes(imgsz))

    def buffer_bytes(self, batch_size: int, imgsz: int | None = None) -> int:
        """The mosaic buffer at training batch `batch_size` (none when cache=ram holds every image).

        Examples:
            >>> share = TrainerShare(train_images=160, aspect=1.0, imgsz=320)
            >>> share.buffer_bytes(4) // share.image_bytes(), share.buffer_bytes(64) // share.image_bytes()
            (32, 160)
        """
        if self.cached_images:
            return 0
        images = min(self.train_images, MOSAIC_BUFFER_PER_BATCH * int(batch_size), MOSAIC_BUFFER_MAX)
        return images * self.image_bytes(imgsz)


def trainer_share(job: TrainingJob, channels: int = 3) -> TrainerShare:
    """The trainer's share for a prepared job: its plots= and cache= settings, images and their sizes.

    The model's copy is counted once it is built (`CpuProbe.count_model`).
    """
    args, dataset = job.args, job.dataset
    fraction = float(args.get("fraction", 1.0) or 1.0)
    train = max(1, round(dataset.train.images * fraction))
    cache = args.get("cache", False)
    in_ram = (cache.lower() in ("ram", "true") if isinstance(cache, str) else bool(cache))
    sizes = [(o.width, o.height) for o in getattr(dataset.train, "objects", ()) if o.width and o.height]
    aspect = sum(min(w, h) / max(w, h) for w, h in sizes) / len(sizes) if sizes else 1.0
    return TrainerShare(
        plots_bytes=plots_bytes(len(dataset.names)) if args.get("plots", True) else 0,
        train_images=train,
        cached_images=train + dataset.val.images if in_ram else 0,
        aspect=aspect,
        channels=channels,
        imgsz=int(args.get("imgsz", 640)),
    )


def plots_bytes(classes: int) -> int:
    """What plots=True adds: the label plots, and the last validation's plots for `classes` classes.

    Examples:
        >>> plots_bytes(5) // MIB, plots_bytes(80) // MIB
        (230, 343)
    """
    return LABEL_PLOTS_BYTES + VAL_PLOTS_BYTES + VAL_PLOTS_PER_CLASS_BYTES * int(classes)


def model_bytes(model: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


class CpuProbe(Probe):
    """The training process's peak resident memory at a step, against `budget_bytes` (see the module).

    A reading is baseline + the step's RSS growth x (1 + EPOCH_HEAP_SHARE) + the mosaic buffer at the
    step's training batch (half the batch for a validation step, which runs at 2x). `capacity()`
    measures the baseline: call it once the step is built and before any step runs.
    """

    device = "cpu"
    noise_floor_bytes = 4 * MIB  # repeated readings of one step agree to a few MiB (pages, heap arenas)
    # identical runs, each its own process, move further: on cpu-2 the baseline spread over 8 MiB and batch 8's
    # growth over 10 MiB in 5 runs (BENCHMARKS, stable choices), batch 16's training peak over 30 MiB in 4 checks
    rerun_spread_bytes = 32 * MIB

    def __init__(self, budget_bytes: int, name: str = "CPU", trainer: TrainerShare | None = None,
                 rss: Any = None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.name = name
        self.trainer = trainer or TrainerShare()
        self.imgsz = self.trainer.imgsz  # the size the loader resizes to (a sweep moves it)
        self.rss = rss or ProcessRss()
        self.baseline_rss: int | None = None  # this process's RSS before any step
        self.exact_peaks = True  # False where the OS cannot reset the peak: readings are lifetime peaks
        self._capacity: Capacity | None = None
        self._train_batch = 1
        self._trained = False  # a training step was measured: validation steps keep its batch

    def count_model(self, model: Any) -> None:
        """Count the trainer's own copy of `model` (the fit's model, once built) in the baseline."""
        self.trainer = replace(self.trainer, model_bytes=model_bytes(model))

    def capacity(self) -> Capacity:
        self.rss.start_window()
        self.baseline_rss = self.rss.now()
        # a budget below the baseline is answered by the probes: batch 1 does not fit (or, for a fixed batch, no)
        baseline = self.baseline_rss + self.trainer.fixed_bytes(self.imgsz)
        self._capacity = Capacity(device="cpu", name=self.name, total_bytes=None, used_by_others_bytes=0,
                                  context_bytes=int(baseline), usable_bytes=self.budget_bytes)
        return self._capacity

    def measure(self, step: Any, batch_size: int, phase: str, persistent: Sequence[Any] = ()) -> ProbeSample:
        # the mosaic buffer follows the training batch: a validation step runs after its training step (at
        # twice it, at most the split's images), so it keeps that step's batch; alone, half its own
        if phase == "train":
            self._train_batch, self._trained = batch_size, True
        elif not self._trained:
            self._train_batch = max(batch_size // 2, 1)
        return super().measure(step, batch_size, phase, persistent)

    def _begin(self, persistent: Sequence[Any]) -> None:
        if self._capacity is None:
            self.capacity()
        self.exact_peaks = self.rss.start_window() and self.exact_peaks

    def _end(self) -> dict[str, int | None]:
        growth = max(self.rss.peak() - self.baseline_rss, 0)
        buffer = self.trainer.buffer_bytes(self._train_batch, self.imgsz)
        peak = self._capacity.context_bytes + round(growth * (1 + EPOCH_HEAP_SHARE)) + buffer
        return {"peak_bytes": int(peak), "allocated_bytes": int(growth), "reserved_bytes": None}


# -- tensor bytes, for the trace ----------------------------------------------------------------


class _Unhooked:
    """Stands in for a hook handle on a frozen parameter (nothing to remove)."""

    def remove(self) -> None:
        pass


def memory_tracker() -> Any:
    """A MemTracker that tolerates frozen parameters and repeated forward passes.

    MemTracker (torch.distributed._tools.mem_tracker) follows every tensor storage created or
    registered while it is active. It hooks every parameter's gradient, which fails on frozen ones
    (Ultralytics always freezes the DFL layer); those are marked as hooked already. A second forward
    of the root module inside one context is refused unless module stats are reset in between: see
    `TensorProbe.pass_boundary()`.
    """
    from copy import deepcopy

    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker

    class Tracker(MemTracker):
        def _update_peak_stats(self, peak_state):  # type: ignore[override]
            # Only the global peak: MemTracker also walks every module's stats on every op,
            # which made a YOLO step 4x slower and is not needed here.
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                    self._peak_mem[dev] = snap[_TOTAL_KEY]
                    self._peak_mem_snap[dev] = deepcopy(snap)

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):  # type: ignore[override]
            if install_grad_hooks:
                for param in module.parameters():
                    if not param.requires_grad:
                        self._param_to_grad_hook_handles.setdefault(param, (_Unhooked(), _Unhooked()))
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

    return Tracker()


class TensorProbe(Probe):
    """Peak bytes of the step's live tensors (parameters, gradients, optimizer state, EMA, activations,
    temporaries), from MemTracker: no allocator or heap overhead, no baseline. What the CPU trace
    predicts; a budget of the process is `CpuProbe`'s."""

    device = "cpu"

    def __init__(self, budget_bytes: int, name: str = "CPU") -> None:
        self.budget_bytes = int(budget_bytes)
        self.name = name
        self.tracker: Any = None

    def capacity(self) -> Capacity:
        return Capacity(device="cpu", name=self.name, total_bytes=None, used_by_others_bytes=0, context_bytes=0,
                        usable_bytes=self.budget_bytes)

    def _begin(self, persistent: Sequence[Any]) -> None:
        self.tracker = memory_tracker()
        if persistent:
            self.tracker.track_external(*persistent)
        self.tracker.__enter__()

    def pass_boundary(self) -> None:
        """Between two forward passes of one step: forget per-module stats, keep the running peak."""
        if self.tracker is not None:
            self.tracker.reset_mod_stats()

    def _end(self) -> dict[str, int | None]:
        tracker, self.tracker = self.tracker, None
        tracker.__exit__(None, None, None)
        peak = sum(snapshot.get("Total", 0) for snapshot in tracker.get_tracker_snapshot("peak").values())
        return {"peak_bytes": int(peak), "allocated_bytes": int(peak), "reserved_bytes": None}

    def _clean(self) -> None:
        if self.tracker is not None:  # the step failed while tracking
            self.tracker.__exit__(None, None, None)
            self.tracker = None
        super()._clean()
