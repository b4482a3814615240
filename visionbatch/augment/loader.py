"""Images per second of Ultralytics' real training DataLoader, for one workers x cache setting.

`build_dataloader` is called exactly as the trainer calls it (shuffle, the training batch, the
device for pin_memory), so its caps on workers apply. The first batch of every worker pays the
worker's start-up and is left out; then batches are timed until `seconds` have passed, across
epochs of the sample when it is small (Ultralytics' InfiniteDataLoader keeps its workers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from visionbatch.augment.report import LoaderSample

Clock = Callable[[], float]
MIN_TIMED_BATCHES = 3


def throughput(arrivals: list[tuple[float, int]], skip: int) -> tuple[float | None, int, float]:
    """(images/s, images, seconds) from batch arrival times, ignoring the first `skip` batches.

    The clock starts when batch `skip - 1` arrives (or the first batch when skip is 0), so the images
    counted are those of the batches after it.

    Examples:
        >>> throughput([(1.0, 16), (2.0, 16), (2.5, 16), (3.0, 16)], skip=1)
        (24.0, 48, 2.0)
        >>> throughput([(1.0, 16)], skip=1)
        (None, 0, 0.0)
    """
    start = max(skip, 1) - 1
    timed = arrivals[start + 1:]
    if not timed:
        return None, 0, 0.0
    seconds = timed[-1][0] - arrivals[start][0]
    images = sum(n for _, n in timed)
    return (images / seconds if seconds > 0 else None), images, seconds


def measure(dataset: Any, batch_size: int, workers: int, seconds: float, device: Any, cache: str,
            cache_fill_s: float, clock: Clock = time.perf_counter) -> LoaderSample:
    """Time the real training DataLoader over `dataset` for about `seconds` after warm-up."""
    from ultralytics.data.build import build_dataloader

    loader = build_dataloader(dataset, batch=batch_size, workers=workers, shuffle=True, rank=-1,
                              pin_memory=getattr(device, "type", "cpu") == "cuda", device=device)
    used = loader.num_workers
    skip = max(used, 1)
    arrivals: list[tuple[float, int]] = []
    started = None
    try:
        while True:
            for batch in loader:
                now = clock()
                arrivals.append((now, int(batch["img"].shape[0])))
                if len(arrivals) == skip:
                    started = now
                if started is not None and now - started >= seconds and len(arrivals) >= skip + MIN_TIMED_BATCHES:
                    break
            else:
                continue
            break
    finally:
        loader.close()
        del loader
    rate, images, timed_s = throughput(arrivals, skip)
    return LoaderSample(cache=cache, workers=workers, workers_used=used,
                        images_per_s=round(rate, 3) if rate else None, images=images,
                        seconds=round(timed_s, 3), cache_fill_s=round(cache_fill_s, 3))
