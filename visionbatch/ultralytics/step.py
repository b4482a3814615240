"""The real Ultralytics training step at a given batch size, for measuring its memory and speed.

One step for every command: fit and sweep measure `train_step`/`val_step` on synthetic batches,
augcost times `forward_backward` + `optimizer_step` on a real collated batch. What the step is
made of (model, optimizer, AMP, label density) is decided in `spec.py`; this module builds it.

What one step holds, as `ultralytics/engine/trainer.py` builds it:
- the task's model, built from the user's YAML (or checkpoint) with the dataset's classes, in
  train mode, channels-last on CUDA, with Ultralytics' frozen layers;
- the task's real loss and label assigner, fed a synthetic batch carrying the run's worst batch
  of labels at `oom_risk` (`spec.batch_labels(b)`: one image at the largest per-image count the
  loss pads to, the rest sharing the largest batch total; see `density.py`) with masks at the
  model's mask ratio for segmentation;
- the optimizer Ultralytics would build (its `optimizer=auto` rule, via its own
  `build_optimizer`), the EMA copy, AMP autocast and the grad scaler when AMP is on;
- the largest image training will see (`imgsz * (1 + multi_scale)`, rounded up to the stride).

`train_step(b)` runs, in order: one full step the first time (so the optimizer state exists),
a forward/backward (gradients now allocated, as in the middle of gradient accumulation), then a
full step (forward, backward, clip, optimizer, EMA): the peak of the last is the peak of a real
step. `val_step(b)` runs what validation does between epochs: the EMA model in eval mode on a
batch of `b`, its loss and NMS (and mask decoding), with the training state still alive.

The synthetic labels follow Ultralytics' batch format exactly (keys, dtypes, shapes), so the
loss, the assigner and the mask loss allocate what they allocate for real data.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from visionbatch.ultralytics.offline import quiet_ultralytics

if TYPE_CHECKING:
    from visionbatch.ultralytics.spec import WorkloadSpec


class Workload:
    """The model, optimizer, EMA and scaler of one training run, on one device.

    Build it inside `offline()`; `close()` frees the device memory it holds. `train_step`,
    `time_steps` and `val_step` run on synthetic batches (fit, sweep); `forward_backward` and
    `optimizer_step` are the two halves of the trainer's loop, for a caller's own collated batch
    (augcost times them on a real one).
    """

    def __init__(self, spec: WorkloadSpec, device: str) -> None:
        import torch
        from ultralytics.utils.torch_utils import ModelEMA

        self.spec = spec
        self.device = torch.device(device)
        self.cfg = training_cfg(spec)
        self.model = build_model(spec, self.cfg, self.device)
        self.stride = max(int(self.model.stride.max()), 32)
        self.train_imgsz, self.val_imgsz = self.sizes(spec.imgsz)
        self.mask_ratio = int(self.cfg.mask_ratio)
        self.overlap = bool(self.cfg.overlap_mask)
        self.optimizer = build_optimizer(self.model, self.cfg, spec)
        self.ema = ModelEMA(self.model)
        use_scaler = spec.amp and spec.amp_dtype == "float16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler and self.device.type == "cuda")
        self.amp_arg: Any = torch.bfloat16 if spec.amp_dtype == "bfloat16" else spec.amp
        self._optimizer_ready = False
        self._generator = torch.Generator().manual_seed(0)

    def sizes(self, imgsz: int) -> tuple[int, int]:
        """(training side, validation side) in pixels when training at `imgsz`: multi-scale's top size, and
        imgsz rounded up to the stride."""
        return (replace(self.spec, imgsz=int(imgsz)).max_imgsz(self.stride),
                math.ceil(int(imgsz) / self.stride) * self.stride)

    def persistent(self) -> list[Any]:
        """What lives across steps (for trackers that must be told): model, optimizer, EMA."""
        return [self.model, self.optimizer, self.ema.ema]

    # -- batches --------------------------------------------------------------------------------

    def _batch(self, batch_size: int, imgsz: int, labels: Sequence[int]) -> dict[str, Any]:
        return synthetic_batch(self.spec, batch_size, imgsz, labels, self.mask_ratio, self.overlap, self._generator)

    def _to_device(self, batch: dict[str, Any], half: bool = False) -> dict[str, Any]:
        import torch

        # the trainer's preprocess_batch: tensors move, the rest (file names, shapes) stays as it is
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out["img"] = (out["img"].half() if half else out["img"].float()) / 255
        return out

    # -- steps ----------------------------------------------------------------------------------

    def sync(self) -> None:
        """Wait for the device's queued work (a no-op on CPU): call before reading a clock."""
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def forward_backward(self, batch: dict[str, Any]) -> None:
        """The trainer's forward, loss and backward on a collated CPU batch in Ultralytics' format."""
        from ultralytics.utils.torch_utils import autocast

        with autocast(self.amp_arg, device=self.device.type):
            loss, _ = self.model(self._to_device(batch))
            loss = loss.sum()
        self.scaler.scale(loss).backward()
        del loss

    def optimizer_step(self) -> None:
        """`BaseTrainer.optimizer_step`: unscale, clip, step, zero the gradients, update the EMA."""
        import torch

        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        self.ema.update(self.model)
        self._optimizer_ready = True

    def _pass(self, batch: dict[str, Any], step: bool) -> None:
        self.forward_backward(batch)
        if step:
            self.optimizer_step()

    def train_step(self, batch_size: int, boundary: Callable[[], None] | None = None, imgsz: int | None = None
                   ) -> float:
        """Run the measured training sequence at `batch_size`; return the last full step's seconds.

        `boundary` is called between forward passes (trackers that count per pass need it). `imgsz`
        steps as if training at that size (default: the spec's), e.g. for a sweep over sizes.
        """
        boundary = boundary or (lambda: None)
        self.model.train()
        side = self.train_imgsz if imgsz is None else self.sizes(imgsz)[0]
        batch = self._batch(batch_size, side, self.spec.batch_labels(batch_size))
        if not self._optimizer_ready:
            self._pass(batch, step=True)  # allocates the optimizer state
            boundary()
        self._pass(batch, step=False)  # gradients allocated, as between accumulation steps
        boundary()
        self.sync()
        start = time.perf_counter()
        self._pass(batch, step=True)
        self.sync()
        return time.perf_counter() - start

    def time_steps(self, batch_size: int, steps: int = 3) -> list[float]:
        """Seconds of each of `steps` full training steps at `batch_size`, after one warm-up step.

        One sample per step (each synchronised) so that fit can put an interval on the mean.
        """
        self.model.train()
        batch = self._batch(batch_size, self.train_imgsz, self.spec.batch_labels(batch_size))
        self._pass(batch, step=True)
        self.sync()
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            self._pass(batch, step=True)
            self.sync()
            seconds.append(time.perf_counter() - start)
        return seconds

    def val_step(self, batch_size: int, imgsz: int | None = None) -> float:
        """Run one validation batch of `batch_size` with the training state alive; return seconds.

        `imgsz` validates as if training at that size (default: the spec's).
        """
        import torch

        grads = [p for p in self.model.parameters() if p.requires_grad and p.grad is None]
        for p in grads:  # an epoch can end mid-accumulation: gradients may still be allocated
            p.grad = torch.zeros_like(p)
        ema = self.ema.ema.float().eval()
        side = self.val_imgsz if imgsz is None else self.sizes(imgsz)[1]
        batch = self._batch(batch_size, side, self.spec.val_batch_labels(batch_size))
        try:
            start = time.perf_counter()
            with torch.inference_mode():
                self._validate(ema, self._to_device(batch, half=self.spec.amp and self.device.type == "cuda"))
            self.sync()
            return time.perf_counter() - start
        finally:
            for p in grads:
                p.grad = None

    def _validate(self, ema: Any, batch: dict[str, Any]) -> None:
        import torchvision  # noqa: F401  Ultralytics' NMS uses torchvision's kernel once it is imported, as in training
        from ultralytics.utils import nms, ops
        from ultralytics.utils.torch_utils import autocast

        with autocast(self.spec.amp and self.device.type == "cuda", device=self.device.type):
            preds = ema(batch["img"])
            ema.loss(batch, preds)  # the validator computes the loss during training
        head = preds[0] if self.spec.task == "segment" else preds
        with quiet_ultralytics(logging.ERROR):  # an untrained model trips NMS's time-limit warning
            detections = nms.non_max_suppression(
                head, conf_thres=0.001, iou_thres=float(self.cfg.iou),
                nc=self.spec.nc if self.spec.task == "segment" else 0, multi_label=True, max_det=int(self.cfg.max_det))
        if self.spec.task == "segment":  # SegmentationValidator.postprocess
            proto = preds[0][1] if isinstance(preds[0], tuple) else preds[1]
            shape = [4 * x for x in proto.shape[2:]]
            for i, x in enumerate(detections):
                ops.process_mask(proto[i], x[:, 6:], x[:, :4], shape=shape)

    def close(self) -> None:
        """Free the model, optimizer and EMA (and the device cache)."""
        import gc

        import torch

        self.model = self.optimizer = self.ema = self.scaler = None  # type: ignore[assignment]
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def training_cfg(spec: WorkloadSpec) -> Any:
    """Ultralytics' full argument namespace for the spec's arguments (what model.args holds in training)."""
    from ultralytics.cfg import get_cfg

    return get_cfg(overrides={**spec.args, "task": spec.task, "mode": "train"})


def build_model(spec: WorkloadSpec, cfg: Any, device: Any) -> Any:
    """The task's model as Ultralytics' trainer builds it: classes, args, frozen layers, channels-last on CUDA."""
    import torch
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel, load_checkpoint

    model_class = SegmentationModel if spec.task == "segment" else DetectionModel
    with quiet_ultralytics():
        if str(spec.model).endswith(".pt"):
            weights, _ = load_checkpoint(spec.model)
            model = model_class(weights.yaml, nc=spec.nc, ch=spec.channels, verbose=False)
            model.load(weights)
        else:
            model = model_class(spec.model, nc=spec.nc, ch=spec.channels, verbose=False)
    model.nc, model.names, model.args = spec.nc, spec.names, cfg
    model = model.to(device)
    if torch.device(device).type == "cuda" and cfg.channels_last is not False:
        model = model.to(memory_format=torch.channels_last)  # as the trainer does on CUDA
    freeze = cfg.freeze
    indices = list(range(freeze)) if isinstance(freeze, int) else list(freeze) if isinstance(freeze, (list, tuple)) else []
    names = [f"model.{x}." for x in indices] + [".dfl"]
    for name, param in model.named_parameters():
        param.requires_grad = not any(f in name for f in names)
    return model


def build_optimizer(model: Any, cfg: Any, spec: WorkloadSpec) -> Any:
    """The optimizer Ultralytics' BaseTrainer.build_optimizer makes for these arguments."""
    from ultralytics.engine.trainer import BaseTrainer

    with quiet_ultralytics():
        return BaseTrainer.build_optimizer(
            _OptimizerOwner(cfg, spec.nc), model, name=cfg.optimizer, lr=cfg.lr0, momentum=cfg.momentum,
            decay=cfg.weight_decay, iterations=spec.iterations)


def synthetic_batch(spec: WorkloadSpec, batch_size: int, imgsz: int, labels: Sequence[int], mask_ratio: int,
                    overlap: bool, generator: Any) -> dict[str, Any]:
    """A collated batch in Ultralytics' format (CPU tensors, as the dataloader yields), `labels[i]` in image i."""
    import torch

    g = generator
    counts = torch.tensor(list(labels), dtype=torch.long)
    n = int(counts.sum())
    centres = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    sizes = torch.rand(n, 2, generator=g) * 0.15 + 0.01
    batch = {
        "img": torch.randint(0, 256, (batch_size, spec.channels, imgsz, imgsz), dtype=torch.uint8, generator=g),
        "batch_idx": torch.arange(batch_size).repeat_interleave(counts).float(),
        "cls": torch.randint(0, spec.nc, (n, 1), generator=g).float(),
        "bboxes": torch.cat([centres, sizes], 1),
    }
    if spec.task == "segment":
        side = imgsz // mask_ratio
        if overlap:  # one index mask per image; int32 past 255 objects, as polygons2masks_overlap
            dtype = torch.int32 if int(counts.max()) > 255 else torch.uint8
            batch["masks"] = (torch.rand(batch_size, side, side, generator=g) * (counts + 1).view(-1, 1, 1)).to(dtype)
        else:
            batch["masks"] = torch.randint(0, 2, (n, side, side), dtype=torch.uint8, generator=g)
        batch["sem_masks"] = torch.zeros(batch_size, side, side)
    return batch


class _OptimizerOwner:
    """What `BaseTrainer.build_optimizer` reads from its trainer: args (it may rewrite lr0) and nc."""

    def __init__(self, cfg: Any, nc: int) -> None:
        from copy import copy

        self.args = copy(cfg)
        self.data = {"nc": nc}
