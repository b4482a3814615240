"""Frame latency under a camera load, with queueing: a discrete-event simulation of the batcher.

Pure: plain numbers in, `QueueStats` out; no clock, no runner. `tune` calls it over the service
times the sweep measured; `choice` holds its percentiles against the latency budget.

**The load.** `streams` cameras at `fps` each. Camera i's frames arrive at `phase_i + k / fps`,
each moved by up to `jitter_ms` either way (uniform). The phases are spread evenly over one frame
period (`phase_i = i / (streams * fps)`), or drawn at random when `random_phases` is set: cameras
that are not synchronised can line up, and then frames arrive in bursts.

**The batcher** (Triton's dynamic batcher; nvstreammux with `batched-push-timeout` works alike).
One model instance serves one batch at a time. Frames queue in arrival order. While the instance
is free, a batch goes as soon as `max_batch` frames wait, or when the oldest waiting frame has
waited `queue_delay_ms`, whichever is first; it takes at most `max_batch` frames. While the
instance is busy, frames wait; when it frees, a full batch (or any batch whose oldest frame has
already waited the delay) goes at once.

**The service time** of a batch of k frames is drawn (seeded) from the measured latencies of the
smallest measured batch size >= k: a partial batch runs on the same engine and costs about what
the next measured size does (a static-shape engine pads to it).

A frame's latency is its batch's end less its arrival: queueing, the wait to fill and the
service. Utilisation is the instance's busy time over the span of the arrivals; at 1 or more the
load is not carried and the queue grows for as long as it is simulated.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from collections.abc import Mapping, Sequence

SEED = 0  # every simulation is reproducible: the same inputs give the same figures
JITTER_SHARE = 0.1  # a camera's frames come up to a tenth of its frame period early or late


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """One batching policy simulated under one load.

    Attributes:
        batch_size: the policy's largest batch.
        queue_delay_ms: the longest a frame waits for the batch to fill while the instance is free.
        latency_p50_ms: median frame latency (arrival to its batch's end).
        latency_p99_ms: 99th percentile frame latency.
        latency_max_ms: the slowest frame.
        utilisation: busy time of the instance over the span of the arrivals (>= 1: overloaded).
        over_budget_share: share of frames later than the budget (None without a budget).
        mean_batch: frames per dispatched batch, on average.
        frames: frames simulated.
        headroom: 1 - utilisation: the share of the instance left idle (negative when overloaded).
    """

    batch_size: int
    queue_delay_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    utilisation: float
    over_budget_share: float | None
    mean_batch: float
    frames: int
    headroom: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headroom", round(1.0 - self.utilisation, 4))  # in plan.json beside utilisation


def arrivals_s(streams: int, fps: float, frames: int, jitter_ms: float = 0.0, random_phases: bool = False,
               seed: int = SEED) -> list[float]:
    """Arrival times in seconds of `frames` frames from `streams` cameras at `fps`, sorted.

    Examples:
        >>> arrivals_s(2, 5, 6)  # two cameras at 5 fps, phases spread: a frame every 100 ms
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    """
    rng = random.Random(seed)
    period_s = 1.0 / fps
    phases = [rng.uniform(0.0, period_s) if random_phases else i * period_s / streams for i in range(streams)]
    per_stream = math.ceil(frames / streams)
    times = []
    for phase in phases:
        for k in range(per_stream):
            moved = rng.uniform(-jitter_ms, jitter_ms) / 1000.0 if jitter_ms else 0.0
            times.append(max(0.0, phase + k * period_s + moved))
    times.sort()
    return [round(t, 9) for t in times[:frames]]


def simulate(arrivals: Sequence[float], service_ms: Mapping[int, Sequence[float]], max_batch: int,
             queue_delay_ms: float, latency_budget_ms: float | None = None, seed: int = SEED) -> QueueStats:
    """Simulate the batcher over `arrivals` (seconds, sorted) with measured service times.

    Args:
        arrivals: frame arrival times in seconds, ascending.
        service_ms: measured batch size -> its call latencies in ms (at least one size >= max_batch
            or the largest size is used for bigger batches).
        max_batch: the policy's largest batch.
        queue_delay_ms: the policy's longest wait for a batch to fill.
        latency_budget_ms: for the share of frames over it.
        seed: for the draws of service times.

    Examples:
        One camera at 10 fps, batch 4 taking 376 ms whatever its size, no queue delay: the first
        frame goes alone, then each batch takes the frames that came during the one before.

        >>> stats = simulate(arrivals_s(1, 10, 12), {4: [376.0]}, 4, 0.0)
        >>> stats.latency_p50_ms, stats.latency_max_ms, stats.mean_batch, round(stats.utilisation, 3)
        (540.0, 728.0, 3.0, 1.253)
    """
    if not arrivals:
        raise ValueError("simulate() needs at least one arrival")
    if max_batch < 1 or queue_delay_ms < 0:
        raise ValueError(f"max_batch={max_batch}, queue_delay_ms={queue_delay_ms}: need max_batch >= 1, delay >= 0")
    sizes = sorted(service_ms)
    if not sizes or any(not service_ms[b] for b in sizes):
        raise ValueError("service_ms needs at least one batch size with measured latencies")
    rng = random.Random(seed)
    delay_s = queue_delay_ms / 1000.0
    latencies: list[float] = []
    busy_s = 0.0
    batches = 0
    free_at = 0.0  # when the instance is next free
    head = 0  # index of the oldest waiting frame
    count = len(arrivals)
    while head < count:
        oldest = arrivals[head]
        start = max(free_at, oldest)
        # frames waiting at `start`; if fewer than a batch, wait for more up to the oldest's delay
        waiting = bisect.bisect_right(arrivals, start, lo=head) - head
        if waiting < max_batch:
            deadline = max(start, oldest + delay_s)
            full_at = arrivals[head + max_batch - 1] if head + max_batch - 1 < count else math.inf
            start = max(start, min(deadline, full_at))
            waiting = bisect.bisect_right(arrivals, start, lo=head) - head
        taken = min(waiting, max_batch)
        index = min(bisect.bisect_left(sizes, taken), len(sizes) - 1)
        service_s = rng.choice(service_ms[sizes[index]]) / 1000.0
        end = start + service_s
        latencies.extend(end - arrivals[i] for i in range(head, head + taken))
        busy_s += service_s
        batches += 1
        head += taken
        free_at = end
    span_s = arrivals[-1] - arrivals[0] + 1.0 / _rate(arrivals)
    ordered = sorted(latencies)
    over = None if latency_budget_ms is None else sum(t * 1000.0 > latency_budget_ms for t in ordered) / count
    return QueueStats(
        batch_size=max_batch,
        queue_delay_ms=round(queue_delay_ms, 3),
        latency_p50_ms=round(percentile(ordered, 50) * 1000.0, 3),
        latency_p99_ms=round(percentile(ordered, 99) * 1000.0, 3),
        latency_max_ms=round(ordered[-1] * 1000.0, 3),
        utilisation=round(busy_s / span_s, 4),
        over_budget_share=None if over is None else round(over, 4),
        mean_batch=round(count / batches, 3),
        frames=count,
    )


def delay_grid_ms(batch_size: int, images_per_s: float) -> tuple[float, ...]:
    """Queue delays worth simulating for `batch_size` at a load of `images_per_s`.

    None (0) and fractions of the time `batch_size` frames take to arrive: a half, three quarters,
    one, and one and a half. Batch 1 never waits.

    Examples:
        >>> delay_grid_ms(4, 10.0), delay_grid_ms(1, 10.0)
        ((0.0, 200.0, 300.0, 400.0, 600.0), (0.0,))
    """
    if batch_size == 1:
        return (0.0,)
    arrive_ms = 1000.0 * batch_size / images_per_s
    return tuple(sorted({0.0, *(round(share * arrive_ms, 3) for share in (0.5, 0.75, 1.0, 1.5))}))


def frames_to_simulate(batch_size: int) -> int:
    """Enough frames for a steady p99: at least 2000, and 200 batches, at most 20000.

    Examples:
        >>> frames_to_simulate(4), frames_to_simulate(64), frames_to_simulate(256)
        (2000, 12800, 20000)
    """
    return min(20000, max(2000, 200 * batch_size))


def _rate(arrivals: Sequence[float]) -> float:
    """Mean arrivals per second (one frame's period closes the span)."""
    if len(arrivals) < 2 or arrivals[-1] == arrivals[0]:
        return 1.0e9
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile of sorted values, interpolated between closest ranks (numpy's default).

    Examples:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
        (2.5, 3.97)
    """
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
