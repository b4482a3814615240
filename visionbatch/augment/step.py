"""The training step's throughput, measured on a real collated batch: what the loader must feed.

The step is Ultralytics' own: the task model built as the trainer builds it, `model(batch)` for
the real loss (assigner included), backward through a GradScaler under autocast when AMP is on,
then once per `accumulate` batches gradient clipping, the optimizer step and the EMA update
(`BaseTrainer.optimizer_step`). On a CPU the batch timed is at most `CPU_BATCH`: a batch-16 step of
yolo11n at 640 px takes many seconds there, and images per second hardly depend on the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from visionbatch.augment.report import StepTiming
from visionbatch.ultralytics.offline import amp_supported, cpu_count

CPU_BATCH = 4
NOMINAL_BATCH = 64  # Ultralytics' nbs: the optimizer steps once per nbs images
MIN_STEPS, MAX_STEPS = 2, 50
Clock = Callable[[], float]


def step_device(device: Any) -> Any:
    """The torch device the step runs on: the first one named, else CUDA 0 when present, else CPU.

    Examples:
        >>> str(step_device("cpu")), str(step_device("cuda:1")), str(step_device("0,1"))
        ('cpu', 'cuda:1', 'cuda:0')
    """
    import torch

    text = "" if device is None else str(device).lower().replace(" ", "")
    if text in {"", "-1"}:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text in {"cpu", "mps"}:
        return torch.device(text)
    first = text.replace("cuda:", "").strip("[]").split(",")[0]
    return torch.device(f"cuda:{int(first)}")


def images_per_s(forward_backward_ms: float, optimizer_ms: float, measured_batch: int, batch_size: int,
                 accumulate: int) -> float:
    """Training images per second: per-image forward/backward plus the optimizer's share.

    Examples:
        >>> images_per_s(400.0, 40.0, 4, 16, 4)  # 100 ms + 40 / 64 ms per image
        9.937888198757763
    """
    per_image_ms = forward_backward_ms / measured_batch + optimizer_ms / (batch_size * accumulate)
    return 1000 / per_image_ms


def build_model(task: str, model: str, nc: int, channels: int, cfg: Any) -> Any:
    """The task model as the trainer builds it from a YAML (or from a checkpoint's YAML), untrained."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel, load_checkpoint

    architecture: Any = model
    if str(model).endswith(".pt"):
        loaded, _ = load_checkpoint(model)
        architecture = loaded.yaml  # the architecture is what costs time; the weights do not
    kind = SegmentationModel if task == "segment" else DetectionModel
    net = kind(architecture, nc=nc, ch=channels, verbose=False)
    net.args = cfg  # the loss reads its gains (box, cls, dfl, overlap_mask) from here, as in training
    return net


def measure_step(task: str, model: str, nc: int, channels: int, cfg: Any, samples: Sequence[dict],
                 collate: Callable[[list], dict], device: Any, batch_size: int, budget_s: float = 3.0,
                 clock: Clock = time.perf_counter) -> StepTiming:
    """Time Ultralytics' training step for `model` on `samples` (outputs of the real pipeline)."""
    import torch
    from ultralytics.utils.torch_utils import ModelEMA

    device = step_device(device)
    cuda = device.type == "cuda"
    measured = batch_size if cuda else min(batch_size, CPU_BATCH)
    items = [samples[i % len(samples)] for i in range(measured)]
    batch = collate([{**s, "batch_idx": s["batch_idx"].clone()} if "batch_idx" in s else s for s in items])
    amp = bool(getattr(cfg, "amp", True)) and cuda and amp_supported(torch.cuda.get_device_name(device))
    accumulate = max(round(NOMINAL_BATCH / batch_size), 1)
    threads = torch.get_num_threads()
    net = optimizer = ema = None
    try:
        if not cuda:
            torch.set_num_threads(cpu_count())  # visionbatch trains on every core
        net = build_model(task, model, nc, channels, cfg).to(device).train()
        for p in net.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.937, nesterov=True)
        ema = ModelEMA(net)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                batch[key] = value.to(device, non_blocking=cuda)
        batch["img"] = batch["img"].float() / 255

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize(device)

        def forward_backward() -> float:
            start = clock()
            with torch.autocast(device.type, enabled=amp):
                loss, _ = net(batch)
            scaler.scale(loss.sum()).backward()
            sync()
            return clock() - start

        def optimizer_step() -> float:
            start = clock()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=10.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            ema.update(net)
            sync()
            return clock() - start

        forward_backward()  # warm-up: cuDNN autotuning, allocator growth, first-call overheads
        optimizer_step()
        passes, steps = [], []
        began = clock()
        while len(passes) < MIN_STEPS or (clock() - began < budget_s and len(passes) < MAX_STEPS):
            passes.append(forward_backward())
            steps.append(optimizer_step())
    finally:
        del net, optimizer, ema
        torch.set_num_threads(threads)
        if cuda:
            torch.cuda.empty_cache()
    fb_ms = 1000 * _median(passes)
    opt_ms = 1000 * _median(steps)
    rate = images_per_s(fb_ms, opt_ms, measured, batch_size, accumulate)
    return StepTiming(
        source=device.type,
        device=torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        model=str(model),
        batch_size=batch_size,
        measured_batch_size=measured,
        images_per_s=round(rate, 3),
        forward_backward_ms=round(fb_ms, 3),
        optimizer_ms=round(opt_ms, 3),
        accumulate=accumulate,
        amp=amp,
    )


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _cpu_name() -> str:
    from ultralytics.utils.torch_utils import get_cpu_info

    return f"{get_cpu_info()} ({cpu_count()} CPUs)"


def given_step(images_per_s_value: float, model: str, batch_size: int) -> StepTiming:
    """The user's own step throughput (step_img_per_s=), e.g. read from a GPU training log."""
    return StepTiming(source="given", device="given", model=str(model), batch_size=batch_size,
                      measured_batch_size=batch_size, images_per_s=float(images_per_s_value))
