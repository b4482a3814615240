"""Estimate the CUDA memory of the real training step on a CPU, without a GPU.

The model's forward and backward run under FakeTensorMode (shapes and dtypes, no data, no
compute: a few seconds whatever the batch) with MemTracker following every storage; for the
proxy step this equals the real CPU peak to the byte. What fake tensors cannot run is measured
for real on CPU tensors: Ultralytics' loss and label assigner (data-dependent shapes), on the
batch's own label counts (`WorkloadSpec.batch_labels`) up to a batch of 16 and extended by its
per-image step beyond, and validation's loss and NMS. Accounted explicitly:
- gradients already allocated while the next backward runs (gradient accumulation's worst case);
- the optimizer state, from a real step of Ultralytics' own optimizer on the CPU copy;
- the EMA copy; the uint8 batch the dataloader hands over; AMP, by tracing under autocast.

Then what CUDA adds, from the calibration data (`visionbatch/data/calibration.json`): every
storage rounded to 512 bytes (exact: applied to each tracked storage), the caching allocator's
reserved-over-allocated factor, cuDNN/cuBLAS workspaces, and the CUDA context NVML counts.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator, Sequence

from visionbatch.devices.memory import Capacity
from visionbatch.fit.probes.base import Probe
from visionbatch.units import MIB

EXACT_LOSS_BATCH = 16  # the loss runs for real on the batch's counts up to here; beyond, its step 8 -> 16

@lru_cache(maxsize=1)
def calibration() -> dict[str, Any]:
    """The CUDA overhead constants shipped in visionbatch/data/calibration.json."""
    return json.loads(resources.files("visionbatch").joinpath("data/calibration.json").read_text())


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """What a device adds on top of the tensors a step holds.

    Attributes:
        name: the device or target.
        cuda: whether CUDA's allocator, workspaces and context apply.
        round_bytes: allocation granularity (512 on CUDA, 1 on CPU).
        reserved_over_allocated: the caching allocator's reserved/allocated ratio at peak.
        reserved_extra_bytes: reserved memory beyond the ratio (small-block segments).
        workspace_bytes: cuDNN and cuBLAS workspaces.
        context_bytes: the CUDA context (NVML counts it, torch does not).
        calibrated: whether the constants were measured (see calibration.json) or assumed.
    """

    name: str
    cuda: bool
    round_bytes: int = 1
    reserved_over_allocated: float = 1.0
    reserved_extra_bytes: int = 0
    workspace_bytes: int = 0
    context_bytes: int = 0
    calibrated: bool = True

    @classmethod
    def cpu(cls) -> "DeviceModel":
        return cls("cpu", cuda=False)

    @classmethod
    def for_arch(cls, name: str, arch: str) -> "DeviceModel":
        data = calibration()
        contexts = data["context_bytes"]
        return cls(name=name, cuda=True, round_bytes=int(data["round_bytes"]),
                   reserved_over_allocated=float(data["reserved_over_allocated"]),
                   reserved_extra_bytes=int(data["reserved_extra_bytes"]), workspace_bytes=int(data["workspace_bytes"]),
                   context_bytes=int(contexts.get(arch, contexts["default"])),
                   calibrated=data.get("status") == "calibrated")

    def device_bytes(self, allocated: float) -> tuple[int, int]:
        """(reserved, device total incl. context) for `allocated` tensor bytes at peak."""
        if not self.cuda:
            return int(allocated), int(allocated)
        reserved = allocated * self.reserved_over_allocated + self.reserved_extra_bytes + self.workspace_bytes
        return int(reserved), int(reserved + self.context_bytes)

    def rounded(self, nbytes: int) -> int:
        return math.ceil(nbytes / self.round_bytes) * self.round_bytes if self.round_bytes > 1 else nbytes


@contextlib.contextmanager
def _rounding(round_bytes: int) -> Iterator[None]:
    """Make MemTracker count every storage as CUDA would allocate it (a multiple of `round_bytes`)."""
    from torch.distributed._tools import mem_tracker

    original = mem_tracker._WeakRefInfo._calculate_mem_consumed
    if round_bytes > 1:
        mem_tracker._WeakRefInfo._calculate_mem_consumed = (  # type: ignore[method-assign]
            lambda self: math.ceil(self.size * self.element_size / round_bytes) * round_bytes)
    try:
        yield
    finally:
        mem_tracker._WeakRefInfo._calculate_mem_consumed = original  # type: ignore[method-assign]


def _trace_tracker() -> Any:
    """A MemTracker (see cpu.py) that also tracks the peak of memory-without-gradients."""
    from copy import deepcopy

    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, _MemRefType

    from visionbatch.fit.probes.cpu import memory_tracker

    tracker = memory_tracker()
    base = type(tracker)

    class TraceTracker(base):  # type: ignore[misc, valid-type]
        no_grad_peak = 0

        def _update_peak_stats(self, peak_state):  # type: ignore[override]
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                    self._peak_mem[dev] = snap[_TOTAL_KEY]
                    self._peak_mem_snap[dev] = deepcopy(snap)
            total = sum(s[_TOTAL_KEY] - s.get(_MemRefType.GRAD, 0) for s in self._curr_mem_snap.values())
            self.no_grad_peak = max(self.no_grad_peak, total)

    tracker.__class__ = TraceTracker
    return tracker


@contextlib.contextmanager
def _traceable_head(model: Any) -> Iterator[None]:
    """The detect head's strides as Python floats while tracing (a real scalar tensor inside fake mode
    needs .item(), which fake tensors cannot give), and no anchors cached from the trace afterwards."""
    head = model.model[-1]
    stride, shape, anchors, strides = head.stride, getattr(head, "shape", None), getattr(head, "anchors", None), \
        getattr(head, "strides", None)
    head.stride = [float(v) for v in stride]
    try:
        yield
    finally:
        head.stride = stride
        head.shape, head.anchors, head.strides = shape, anchors, strides


def _total(snapshot: dict) -> int:
    return int(sum(s.get("Total", 0) for s in snapshot.values()))


def _tensor_bytes(tensors: Any, device: DeviceModel) -> int:
    import torch
    from torch.utils._pytree import tree_leaves

    return sum(device.rounded(t.untyped_storage().nbytes()) for t in tree_leaves(tensors) if isinstance(t, torch.Tensor))


@dataclass(frozen=True, slots=True)
class TraceEstimate:
    """One estimated step.

    Attributes:
        batch_size: images.
        phase: 'train' or 'val'.
        allocated_bytes: tensor bytes at peak (what torch.cuda.max_memory_allocated would read).
        reserved_bytes: with the caching allocator and workspaces.
        device_bytes: with the CUDA context: the reading to compare with the budget.
        parts: the estimate's components in bytes.
    """

    batch_size: int
    phase: str
    allocated_bytes: int
    reserved_bytes: int
    device_bytes: int
    parts: dict[str, int]


class TraceEstimator:
    """Estimates of the workload's training and validation steps at any batch, on the CPU.

    `progress` receives a line as each stage of the trace starts (the model and its optimizer
    state; each traced step; each loss run for real), or None for silence.
    """

    def __init__(self, spec: Any, device: DeviceModel, progress: Callable[[str], None] | None = None) -> None:
        import torch
        from torch._subclasses.fake_tensor import FakeTensorMode

        from visionbatch.ultralytics.step import (
            build_model,
            build_optimizer,
            training_cfg,
        )

        self.say = progress or (lambda line: None)
        self.say(f"trace: building {spec.model} on the CPU and its optimizer state (one real optimizer step)")
        self.spec, self.device = spec, device
        self.cfg = training_cfg(spec)
        self.model = build_model(spec, self.cfg, "cpu").train()
        self.stride = max(int(self.model.stride.max()), 32)
        self.train_imgsz = spec.max_imgsz(self.stride)
        self.val_imgsz = math.ceil(spec.imgsz / self.stride) * self.stride
        self.amp_dtype = torch.float16 if spec.amp_dtype == "float16" else torch.bfloat16
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.grad_bytes = sum(device.rounded(p.nbytes) for p in trainable)
        self.ema_bytes = sum(device.rounded(v.nbytes) for v in self.model.state_dict().values()
                             if v.dtype.is_floating_point)
        self.optimizer_bytes = self._optimizer_state_bytes(build_optimizer, trainable)
        self._fake = FakeTensorMode(allow_non_fake_inputs=True)
        self._generator = torch.Generator().manual_seed(0)
        self._extras: dict[tuple[str, tuple[int, ...]], int] = {}
        self._outputs: dict[str, Any] = {}

    def at_imgsz(self, imgsz: int) -> "TraceEstimator":
        """The same model, optimizer and EMA accounting, for training at another image size."""
        import copy

        other = copy.copy(self)
        other.spec = replace(self.spec, imgsz=int(imgsz))
        other.train_imgsz = other.spec.max_imgsz(self.stride)
        other.val_imgsz = math.ceil(imgsz / self.stride) * self.stride
        other._extras, other._outputs = {}, {}
        return other

    def _optimizer_state_bytes(self, build_optimizer: Any, trainable: Sequence[Any]) -> int:
        """Bytes of the state Ultralytics' optimizer allocates on its first step (a real CPU step)."""
        import torch

        model = self.model
        saved = [p.detach().clone() for p in model.parameters()]
        optimizer = build_optimizer(model, self.cfg, self.spec)
        for p in trainable:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        state = sum(self.device.rounded(t.nbytes) for s in optimizer.state.values() for t in s.values()
                    if isinstance(t, torch.Tensor) and t.dim() > 0)
        with torch.no_grad():
            for p, v in zip(model.parameters(), saved):
                p.copy_(v)
                p.grad = None
        return int(state)

    def _autocast(self) -> Any:
        import torch

        if self.spec.amp:
            return torch.autocast("cpu", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    # -- the parts fake tensors cannot run: measured for real at batch 1 and 2 --------------------

    def _extra(self, phase: str, batch_size: int) -> int:
        """Loss bytes at `batch_size`: the real loss on the batch's own label counts, up to a batch of 16.

        The loss's peak is not a sum of parts: the densest image's mask loss, the assigner's tensors
        (images x the padded count) and the graph kept for backward peak at different moments, so it
        is run for real on the counts the spec gives (`batch_labels`, `val_batch_labels`). Past
        `EXACT_LOSS_BATCH` it grows by the per-image step between 8 and 16, where the padded
        assigner dominates (the labels' share per image only falls with the batch: the safe side).
        """
        labels = self.spec.batch_labels if phase == "train" else self.spec.val_batch_labels
        if batch_size <= EXACT_LOSS_BATCH:
            return self._real_extra(phase, labels(batch_size))
        low, high = EXACT_LOSS_BATCH // 2, EXACT_LOSS_BATCH
        measured = labels(low), labels(high)
        if any((phase, counts) not in self._extras for counts in measured):  # say why a smaller batch runs
            self.say(f"trace: {_phase_name(phase)} loss measured at batch {low} and {high} "
                     f"({sum(measured[0])} and {sum(measured[1])} labels) for real on the CPU, "
                     f"extended to {batch_size}")
        below, top = (self._real_extra(phase, counts, quiet=True) for counts in measured)
        return int(top + max(top - below, 0) / (high - low) * (batch_size - high))

    def _real_extra(self, phase: str, counts: tuple[int, ...], quiet: bool = False) -> int:
        key = (phase, counts)
        if key not in self._extras:
            if not quiet:
                self.say(f"trace: {_phase_name(phase)} loss at batch {len(counts)} "
                         f"({sum(counts)} labels), run for real on the CPU")
            self._extras[key] = self._measure_loss(phase, counts)
        return self._extras[key]

    def _nms_bytes(self) -> int:
        """Validation's NMS, one image at a time, at its worst: max_nms candidates (an untrained model's
        scores all pass conf=0.001). On CUDA torchvision's kernel also holds an n x n/64 suppression mask."""
        candidates = 30_000  # Ultralytics' max_nms
        extra_columns = 32 if self.spec.task == "segment" else 0  # mask coefficients ride along
        rows = candidates * (6 + extra_columns) * 4 * 3  # the candidate table, its sorted and offset copies
        mask = candidates * math.ceil(candidates / 64) * 8 if self.device.cuda else 0
        return self.device.rounded(rows) + self.device.rounded(mask)

    def _head_outputs(self, phase: str) -> Any:
        """The untrained model's real outputs for one image, per phase (cached).

        The loss's memory depends on how many anchors the assigner makes foreground, which depends
        on the predictions: real ones from the real model, not random numbers, reproduce it.
        """
        import torch

        if phase not in self._outputs:
            train = phase == "train"
            imgsz = self.train_imgsz if train else self.val_imgsz
            image = torch.rand(1, 3, imgsz, imgsz, generator=self._generator)
            self.model.train(train)
            try:
                with torch.no_grad():
                    self._outputs[phase] = self.model(image)
            finally:
                self.model.train()
        return self._outputs[phase]

    def _measure_loss(self, phase: str, labels: tuple[int, ...]) -> int:
        import torch
        from torch.utils._pytree import tree_map_only

        from visionbatch.fit.probes.cpu import memory_tracker
        from visionbatch.ultralytics.step import synthetic_batch

        train = phase == "train"
        imgsz = self.train_imgsz if train else self.val_imgsz
        batch_size = len(labels)
        dtype = self.amp_dtype if self.spec.amp else torch.float32

        def batched(t: Any) -> Any:  # one image's outputs, repeated to the batch
            t = t.expand(batch_size, *t.shape[1:]).clone()
            return t.to(dtype).requires_grad_(train) if t.dtype.is_floating_point else t

        preds = tree_map_only(torch.Tensor, batched, self._head_outputs(phase))
        batch = synthetic_batch(self.spec, batch_size, imgsz, labels, int(self.cfg.mask_ratio),
                                bool(self.cfg.overlap_mask), self._generator)
        batch["img"] = batch["img"].float()
        criterion = self.model.init_criterion()
        tracker = memory_tracker()
        with _rounding(self.device.round_bytes), tracker, self._autocast():
            if train:
                loss, _ = criterion(preds, batch)
                loss.sum().backward()
            else:  # the validator's loss on the EMA model's eval output
                with torch.inference_mode():
                    criterion(preds[1] if isinstance(preds, tuple) else preds, batch)
        return _total(tracker.get_tracker_snapshot("peak"))

    # -- the traced model ------------------------------------------------------------------------

    def train(self, batch_size: int) -> TraceEstimate:
        """The training step at `batch_size`: forward, loss, backward with gradients already allocated."""
        import torch
        from torch.utils._pytree import tree_leaves

        self.say(f"trace: training step at batch {batch_size}, imgsz {self.train_imgsz}: forward and backward "
                 f"under fake tensors")
        self.model.train()
        tracker = _trace_tracker()
        tracker.track_external(self.model)
        with _rounding(self.device.round_bytes), self._fake:
            with tracker, self._autocast():
                x = torch.empty(batch_size, 3, self.train_imgsz, self.train_imgsz)  # the float batch
                preds = self.model(x)
                forward_end = _total(tracker.get_tracker_snapshot("current"))
                forward_peak = _total(tracker.get_tracker_snapshot("peak"))
                outputs = [t for t in tree_leaves(preds) if isinstance(t, torch.Tensor) and t.requires_grad]
                grads_of_outputs = _tensor_bytes(outputs, self.device)
                tracker.no_grad_peak = 0
                sum(t.float().sum() for t in outputs).backward()
                backward_peak = tracker.no_grad_peak  # memory without gradients; they are added whole below
        for p in self.model.parameters():
            p.grad = None
        loss = self._extra("train", batch_size)
        uint8_batch = self.device.rounded(batch_size * 3 * self.train_imgsz**2)
        persistent = self.optimizer_bytes + self.ema_bytes + uint8_batch + self.grad_bytes
        peak_model = max(forward_end + loss, forward_peak, backward_peak + grads_of_outputs)
        allocated = persistent + peak_model
        reserved, device = self.device.device_bytes(allocated)
        parts = {"forward_end": forward_end, "forward_peak": forward_peak, "backward_peak": backward_peak,
                 "loss": loss, "output_grads": grads_of_outputs, "gradients": self.grad_bytes,
                 "optimizer_state": self.optimizer_bytes, "ema": self.ema_bytes, "uint8_batch": uint8_batch}
        return TraceEstimate(batch_size, "train", int(allocated), reserved, device, parts)

    def val(self, batch_size: int) -> TraceEstimate:
        """Validation of `batch_size` images between epochs, with the training state alive."""
        import torch

        self.say(f"trace: validation at batch {batch_size}, imgsz {self.val_imgsz}: forward under fake tensors, "
                 f"loss and NMS")
        self.model.eval()
        tracker = _trace_tracker()
        tracker.track_external(self.model)
        try:
            with _traceable_head(self.model), _rounding(self.device.round_bytes), self._fake:
                with tracker, torch.inference_mode(), self._autocast():
                    x = torch.empty(batch_size, 3, self.val_imgsz, self.val_imgsz)
                    outputs = self.model(x.half() if self.spec.amp else x)
                    forward_end = _total(tracker.get_tracker_snapshot("current"))  # the outputs still alive
                    forward_peak = _total(tracker.get_tracker_snapshot("peak"))
                    del outputs
        finally:
            self.model.train()
        loss, nms = self._extra("val", batch_size), self._nms_bytes()
        uint8_batch = self.device.rounded(batch_size * 3 * self.val_imgsz**2)
        persistent = self.optimizer_bytes + self.ema_bytes + uint8_batch + self.grad_bytes
        # the loss and NMS run after the forward has freed its activations, with its outputs alive
        allocated = persistent + max(forward_peak, forward_end + loss, forward_end + nms)
        reserved, device = self.device.device_bytes(allocated)
        parts = {"forward_peak": forward_peak, "forward_end": forward_end, "loss": loss, "nms": nms,
                 "gradients": self.grad_bytes, "optimizer_state": self.optimizer_bytes, "ema": self.ema_bytes,
                 "uint8_batch": uint8_batch}
        return TraceEstimate(batch_size, "val", int(allocated), reserved, device, parts)


class TraceProbe(Probe):
    """A probe that traces instead of running: readings are estimates for `device` (see module doc)."""

    def __init__(self, estimator: TraceEstimator, capacity: Capacity) -> None:
        self.estimator = estimator
        self._capacity = capacity
        self.device = capacity.device
        self.noise_floor_bytes = 2 * MIB if estimator.device.cuda else 0.0
        self._current: tuple[int, str] = (0, "train")
        self.estimates: list[TraceEstimate] = []

    def capacity(self) -> Capacity:
        return self._capacity

    def measure(self, step, batch_size: int, phase: str, persistent: Sequence[Any] = ()):
        self._current = (batch_size, phase)
        return super().measure(lambda: None, batch_size, phase, persistent)

    def _begin(self, persistent: Sequence[Any]) -> None:
        pass

    def _clean(self) -> None:
        pass  # nothing real was allocated

    def _end(self) -> dict[str, int | None]:
        batch_size, phase = self._current
        estimate = self.estimator.train(batch_size) if phase == "train" else self.estimator.val(batch_size)
        self.estimates.append(estimate)
        return {"peak_bytes": estimate.device_bytes, "allocated_bytes": estimate.allocated_bytes,
                "reserved_bytes": estimate.reserved_bytes if self.estimator.device.cuda else None}


class TraceRunner:
    """The workload side of a traced plan: nothing runs, and there is no throughput to time."""

    def train_step(self, batch_size: int, boundary: Any = None) -> None:
        return None

    def val_step(self, batch_size: int) -> None:
        return None

    def time_steps(self, batch_size: int, steps: int = 3) -> None:
        return None

    def persistent(self) -> list[Any]:
        return []


def proxy_step_peak(model: Any, batch_size: int, imgsz: int, fake: bool = True) -> int:  # noqa: D417
    """Peak tensor bytes of Ultralytics AutoBatch's proxy step (forward, then .sum().backward()).

    With `fake`, traced under FakeTensorMode (no data, no compute); without, run on real CPU
    tensors. The two agree to the byte: the trace's foundation, checked by the tests.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._pytree import tree_leaves

    tracker = _trace_tracker()
    tracker.track_external(model)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    try:
        with mode, tracker:
            x = torch.empty(batch_size, 3, imgsz, imgsz)
            outputs = [t for t in tree_leaves(model(x)) if isinstance(t, torch.Tensor) and t.requires_grad]
            sum(t.sum() for t in outputs).backward()
    finally:
        for p in model.parameters():
            p.grad = None
    return _total(tracker.get_tracker_snapshot("peak"))


def _phase_name(phase: str) -> str:
    """'train' or 'val' as the trace's lines name it.

    Examples:
        >>> _phase_name("train"), _phase_name("val")
        ('training', 'validation')
    """
    return "training" if phase == "train" else "validation"
