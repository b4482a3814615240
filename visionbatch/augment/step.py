"""The training step's throughput, measured on a real collated batch: what the loader must feed.

The step is the one fit measures (`visionbatch.ultralytics.step.Workload`), built from the job's
spec: the task model with Ultralytics' frozen layers, its real loss, the optimizer its
`optimizer=auto` rule picks, the EMA, and AMP (fp16 with a grad scaler, or bf16) where its rule
turns AMP on. Forward and backward run once per batch; clipping, the optimizer step and the EMA
update once per `accumulate` batches, as `BaseTrainer.optimizer_step` does. On a CPU the batch
timed is at most `CPU_BATCH`: a batch-16 step of yolo11n at 640 px takes many seconds there, and
images per second hardly depend on the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from visionbatch.augment.report import StepTiming
from visionbatch.ultralytics.offline import cpu_count

if TYPE_CHECKING:
    from visionbatch.ultralytics.job import TrainingJob

CPU_BATCH = 4
MIN_STEPS, MAX_STEPS = 2, 50
Clock = Callable[[], float]


def step_device(device: Any) -> Any:
    """The torch device the step runs on: the first one named, else CUDA 0 when present, else CPU.

    Examples:
        >>> str(step_device("cpu")), str(step_device("cuda:1")), str(step_device("0,1"))
        ('cpu', 'cuda:1', 'cuda:0')
    """
    import torch

    from visionbatch.devices.parse import parse_device

    return torch.device(parse_device(device).resolve(torch.cuda.is_available()).torch_name)


def images_per_s(forward_backward_ms: float, optimizer_ms: float, measured_batch: int, batch_size: int,
                 accumulate: int) -> float:
    """Training images per second: per-image forward/backward plus the optimizer's share.

    Examples:
        >>> images_per_s(400.0, 40.0, 4, 16, 4)  # 100 ms + 40 / 64 ms per image
        9.937888198757763
    """
    per_image_ms = forward_backward_ms / measured_batch + optimizer_ms / (batch_size * accumulate)
    return 1000 / per_image_ms


def measure_step(job: TrainingJob, samples: Sequence[dict], collate: Callable[[list], dict], device: Any,
                 batch_size: int, channels: int = 3, budget_s: float = 3.0, clock: Clock = time.perf_counter
                 ) -> StepTiming:
    """Time the job's training step on `samples` (outputs of the real pipeline), collated into one batch.

    Args:
        job: the prepared training job (model, task, arguments, the whole dataset's counts).
        samples: dataset items in Ultralytics' format; repeated when fewer than the batch.
        collate: the dataset's collate function.
        device: the device argument (`0`, `'cuda:1'`, `'cpu'`; None: CUDA 0 when present).
        batch_size: the training batch (at most `CPU_BATCH` is timed on a CPU).
        channels: image channels of the dataset.
        budget_s: seconds of timed steps, between `MIN_STEPS` and `MAX_STEPS` of them.
        clock: seconds now (injected by tests).

    Returns:
        The median forward/backward and optimizer milliseconds, and the images per second they give.

    Examples:
        >>> timing = measure_step(job, items, dataset.collate_fn, "cpu", batch_size=16)  # doctest: +SKIP
        >>> timing.measured_batch_size, timing.accumulate  # doctest: +SKIP
        (4, 4)
    """
    import torch

    from visionbatch.ultralytics.spec import job_spec
    from visionbatch.ultralytics.step import Workload

    device = step_device(device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else _cpu_name()
    # augcost times a real collated batch, never the synthetic one: a forced count skips modelling the density
    spec = job_spec(job, device.type, name if cuda else "", labels_per_image=1, channels=channels)
    measured = batch_size if cuda else min(batch_size, CPU_BATCH)
    items = [samples[i % len(samples)] for i in range(measured)]
    # collate_fn adds each item's index to its batch_idx in place: collate copies, keep the samples as they are
    batch = collate([{**s, "batch_idx": s["batch_idx"].clone()} if "batch_idx" in s else s for s in items])
    threads = torch.get_num_threads()
    workload = None
    try:
        if not cuda:
            torch.set_num_threads(cpu_count())  # visionbatch trains on every core
        workload = Workload(spec, str(device))
        accumulate = max(round(int(workload.cfg.nbs) / batch_size), 1)
        workload.model.train()

        def timed(work: Callable[[], None]) -> float:
            start = clock()
            work()
            workload.sync()
            return clock() - start

        timed(lambda: workload.forward_backward(batch))  # warm-up: cuDNN autotuning, allocator growth, first calls
        timed(workload.optimizer_step)  # and the optimizer's state
        passes, steps = [], []
        began = clock()
        while len(passes) < MIN_STEPS or (clock() - began < budget_s and len(passes) < MAX_STEPS):
            passes.append(timed(lambda: workload.forward_backward(batch)))
            steps.append(timed(workload.optimizer_step))
    finally:
        if workload is not None:
            workload.close()
        torch.set_num_threads(threads)
    fb_ms = 1000 * _median(passes)
    opt_ms = 1000 * _median(steps)
    return StepTiming(
        source=device.type,
        device=name,
        model=str(job.model),
        batch_size=batch_size,
        measured_batch_size=measured,
        images_per_s=round(images_per_s(fb_ms, opt_ms, measured, batch_size, accumulate), 3),
        forward_backward_ms=round(fb_ms, 3),
        optimizer_ms=round(opt_ms, 3),
        accumulate=accumulate,
        amp=spec.amp,
    )


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _cpu_name() -> str:
    from ultralytics.utils.torch_utils import get_cpu_info

    return f"{get_cpu_info()} ({cpu_count()} CPUs)"


def given_step(images_per_s_value: float, model: str, batch_size: int) -> StepTiming:
    """The user's own step throughput (step_img_per_s=), e.g. read from a GPU training log.

    Examples:
        >>> given_step(250.0, "yolo11n.yaml", 16).measured_batch_size
        16
    """
    return StepTiming(source="given", device="given", model=str(model), batch_size=batch_size,
                      measured_batch_size=batch_size, images_per_s=float(images_per_s_value))
