"""Triton's instance count, measured: the chosen batch on one runner against two runners at once.

Triton's `instance_group { count: n }` runs n copies of the model, each taking the next batch the
dynamic batcher forms as soon as it is free. A second copy pays when one batch leaves the device
idle part of the time (the host's copies, launch overhead, the serial stretches between a CPU's
parallel operators): the other copy's batch fills the gaps. It costs a second copy's memory and,
on a CPU, the cores: two instances share them, so each gets half the threads (the Triton config
carries that as `intra_op_thread_count`).

The measurement (`compare_instances`): the chosen batch b on one runner (the sweep's, with every
thread) against two fresh runners of the same model (on a CPU, max(1, threads // 2) intra-op
threads each), called from two threads at once. A block starts the threads together; each runs
batches until it has made `min_calls` and `min_seconds` have passed since the start, and the
block's throughput is every image the threads completed over the wall time from the start to the
last thread's end. One instance is timed by the same code with one thread. (The thread that stops
first idles during the other's last call, so a block leans toward one instance; the smaller
count wins ties anyway.) Each block is one sample, and the two counts alternate in round-robin
blocks (`visionbatch.stats.repeat_alike`) until the decision is settled or the time bound
passes. Two instances are written only when `stats.measurably_faster` than one; otherwise one.

The clock, the block runner and the runner factory are arguments, so tests run on a fake clock
with fake runners.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from visionbatch.devices.oom import is_oom
from visionbatch.infer.pipeline import model_step
from visionbatch.stats import (
    MIN_BLOCKS,
    SPEED_TOLERANCE,
    SpeedEstimate,
    measurably_faster,
    repeat_alike,
    speed_ratio_bounds,
)
from visionbatch.text import error_line

INSTANCE_SECONDS = 4.0  # the comparison's time bound: a few seconds after the sweep and the replay
BLOCK_SECONDS = 0.25  # a block lasts at least this long...
BLOCK_CALLS = 2  # ...and each thread makes at least this many calls in it
FIXED_BLOCKS = 2  # with runs= fixed: this many blocks of `runs` calls per count, the fewest that give an interval

Step = Callable[[], object]
BlockRunner = Callable[[Sequence[Step], int, float, Callable[[], float]], tuple[int, float]]


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceSearch:
    """Triton's instance count for the chosen batch, and the timings it rests on.

    Attributes:
        count: the `instance_group` count written, 1 or 2.
        reason: why, in one line (with the numbers when measured, or why nothing was measured).
        measured: whether one and two instances were timed against each other.
        batch_size: the batch they were timed at (None when not measured).
        one: one instance's throughput with its 95% interval (None when not measured).
        two: two instances' throughput together (every image both completed over the wall time).
        threads: intra-op threads of the one instance (CPU runners; None on a GPU).
        threads_each: intra-op threads of each of the two.
        measured_on: the backend, provider and device the timings come from.
        timing: blocks, seconds, and whether the decision settled or the time bound stopped it.
    """

    count: int
    reason: str
    measured: bool = False
    batch_size: int | None = None
    one: SpeedEstimate | None = None
    two: SpeedEstimate | None = None
    threads: int | None = None
    threads_each: int | None = None
    measured_on: str = ""
    timing: str = ""


def not_measured(why: str) -> InstanceSearch:
    """One instance, the configuration the sweep measured, with the reason nothing else was.

    Examples:
        >>> not_measured("no batch was chosen").reason
        '1 instance, not measured: no batch was chosen'
    """
    return InstanceSearch(1, f"1 instance, not measured: {why}")


def for_latency(found: InstanceSearch, choice: Any) -> InstanceSearch:
    """One instance when the batch was chosen for latency (`Choice.by_latency`) and two would split the threads.

    Two CPU instances carry more together, but each runs its frames on half the threads, so a
    frame takes longer: under a load that leaves the device comfortably idle, the latency the
    choice went for (and the replay measured, on one instance) is what counts.

    Examples:
        >>> from types import SimpleNamespace
        >>> two = InstanceSearch(2, "2 instances, measurably faster than 1: figures", True, 1, threads=2,
        ...                      threads_each=1)
        >>> for_latency(two, SimpleNamespace(by_latency=True)).reason
        '1 instance: the load leaves the device comfortably idle and the batch was chosen for the lowest latency; 2 instances would carry more but run each frame on 1 of the 2 threads (figures)'
        >>> for_latency(two, SimpleNamespace(by_latency=False)).count
        2
    """
    split = found.threads_each is not None and found.threads is not None and found.threads_each < found.threads
    if found.count != 2 or not split or not getattr(choice, "by_latency", False):
        return found
    figures = found.reason.split(": ", 1)[-1]
    return dataclasses.replace(
        found, count=1,
        reason=(f"1 instance: the load leaves the device comfortably idle and the batch was chosen for the lowest "
                f"latency; 2 instances would carry more but run each frame on {found.threads_each} of the "
                f"{found.threads} threads ({figures})"))


def concurrent_block(steps: Sequence[Step], min_calls: int, min_seconds: float,
                     clock: Callable[[], float] = time.perf_counter) -> tuple[int, float]:
    """Call each step from a thread of its own, all starting together: (calls completed in all, wall seconds).

    Each thread calls its step until it has made `min_calls` and `min_seconds` have passed since
    the start; the wall time runs from the start to the last thread's end. A step that raises
    stops the other threads after their current call, and its error is raised here.
    """
    count = len(steps)
    gate = threading.Barrier(count + 1)
    stop = threading.Event()
    calls = [0] * count
    ends = [0.0] * count
    errors: list[BaseException] = []
    start = 0.0

    def work(index: int) -> None:
        gate.wait()
        try:
            while not stop.is_set():
                steps[index]()
                calls[index] += 1
                if calls[index] >= min_calls and clock() - start >= min_seconds:
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            errors.append(exc)
            stop.set()
        finally:
            ends[index] = clock()

    workers = [threading.Thread(target=work, args=(i,), name=f"visionbatch-instance-{i + 1}", daemon=True)
               for i in range(count)]
    for worker in workers:
        worker.start()
    start = clock()  # read by the threads only after the gate opens
    try:
        gate.wait()
        for worker in workers:
            worker.join()
    except BaseException:  # Ctrl-C: the threads finish their current call and stop
        stop.set()
        raise
    if errors:
        raise errors[0]
    return sum(calls), max(ends) - start


def decided(one: SpeedEstimate, two: SpeedEstimate, tolerance: float = SPEED_TOLERANCE) -> bool:
    """Whether the count is decided: two instances shown faster than one, or shown unable to be.

    Examples:
        >>> one = SpeedEstimate(4, 100.0, 98.0, 102.0, 6)
        >>> decided(one, SpeedEstimate(4, 130.0, 127.0, 133.0, 6)), decided(one, SpeedEstimate(4, 99.0, 98.0, 100.0, 6))
        (True, True)
        >>> decided(one, SpeedEstimate(4, 104.0, 96.0, 112.0, 6))  # could be up to 1.14x: time on
        False
    """
    low, high = speed_ratio_bounds(two, one)
    return low > 1 + tolerance or high <= 1 + tolerance


def compare_instances(one: Step, two: Sequence[Step], batch_size: int, bound_s: float, *,
                      min_calls: int = BLOCK_CALLS, block_seconds: float = BLOCK_SECONDS,
                      max_blocks: int | None = None, clock: Callable[[], float] = time.perf_counter,
                      run_block: BlockRunner = concurrent_block, threads: int | None = None,
                      threads_each: int | None = None, measured_on: str = "") -> InstanceSearch:
    """Time `one` alone against the two steps of `two` at once, in interleaved blocks; the count to deploy.

    Args:
        one: one batch of `batch_size` on the one instance, to completion.
        two: the same on each of two other instances.
        batch_size: images per call.
        bound_s: the time bound (every count gets one block whatever it is).
        min_calls, block_seconds: the least calls per thread and seconds of a block.
        max_blocks: stop after this many blocks of each count (None: until settled or the bound).
        clock: seconds, monotonic; run_block: runs one block (`concurrent_block`).
        threads, threads_each, measured_on: reported as given.

    Examples:
        On a simulated device where one instance takes 10 ms a call and two take 15 ms each at once:

        >>> now = [0.0]
        >>> def block(steps, min_calls, min_seconds, clock):
        ...     calls_each = max(min_calls, 10)
        ...     now[0] += calls_each * (0.010 if len(steps) == 1 else 0.015)
        ...     return calls_each * len(steps), calls_each * (0.010 if len(steps) == 1 else 0.015)
        >>> found = compare_instances(None, [None, None], 4, 1.0, clock=lambda: now[0], run_block=block)
        >>> found.count, round(found.one.img_per_s, 6), round(found.two.img_per_s, 6)
        (2, 400.0, 533.333333)
    """
    steps = {1: [one], 2: list(two)}

    def time_block(count: int) -> list[float]:
        calls, wall_s = run_block(steps[count], min_calls, block_seconds, clock)
        return [wall_s / calls]  # seconds per `batch_size` images, both threads' work counted

    def settled(speeds: Mapping[int, SpeedEstimate]) -> bool:
        if max_blocks is not None and all(s.samples >= max_blocks for s in speeds.values()):
            return True
        return decided(speeds[1], speeds[2])

    timed = repeat_alike(time_block, [1, 2], lambda count: batch_size, settled, bound_s, clock,
                         min_blocks=MIN_BLOCKS if max_blocks is None else min(max_blocks, MIN_BLOCKS))
    assert timed is not None  # time_block always returns samples
    speeds, timings = timed
    single, double = speeds[1], speeds[2]
    count = 2 if measurably_faster(double, single) else 1
    low, high = speed_ratio_bounds(double, single)
    shown_high = "unbounded" if high == float("inf") else f"{high:.2f}"
    each = f" ({threads_each} thread{'s' * (threads_each != 1)} each)" if threads_each else ""
    alone = f" ({threads} thread{'s' * (threads != 1)})" if threads else ""
    figures = (f"2 instances{each} ran batch {batch_size} at {_speed(double)} against {_speed(single)} for 1"
               f"{alone}, a ratio of {low:.2f}-{shown_high} at 95%")
    if count == 2:
        reason = f"2 instances, measurably faster than 1: {figures}"
    else:
        reason = f"1 instance: 2 were not measurably faster (by more than {SPEED_TOLERANCE:.0%}): {figures}"
    stopped = ("the decision settled" if timings.settled
               else f"the {bound_s:g} s bound passed: overlapping intervals count as equal")
    timing = (f"{timings.blocks} interleaved blocks of 1 and 2 instances in {timings.elapsed_s:.1f} s: {stopped}")
    return InstanceSearch(count, reason, True, batch_size, single, double, threads, threads_each, measured_on,
                          timing)


def search_instances(open_runner: Callable[[int | None], Any], runner: Any, batch_size: int, imgsz: int, *,
                     threads: int | None, bound_s: float = INSTANCE_SECONDS, warmup_runs: int = 1,
                     fixed_calls: int | None = None, measured_on: str = "",
                     clock: Callable[[], float] = time.perf_counter) -> InstanceSearch:
    """Open two more runners (`open_runner(threads each)`), warm all three, and compare 1 with 2 instances.

    `runner` is the one instance (the sweep's, with `threads`); the two others get
    max(1, threads // 2) threads each on a CPU (None on a GPU). With `fixed_calls` (runs=), blocks
    are that many calls and `FIXED_BLOCKS` of each count are timed. A second runner that will not
    open, or two that run out of memory, leave one instance with the reason.
    """
    threads_each = None if threads is None else max(1, threads // 2)
    opened: list[Any] = []
    try:
        try:
            while len(opened) < 2:
                opened.append(open_runner(threads_each))
        except Exception as exc:  # noqa: BLE001 - a backend or a device that holds one copy: one instance, said why
            return not_measured(f"a second instance of the backend would not open ({error_line(exc)})")
        one = model_step(runner, batch_size, imgsz)
        two = [model_step(other, batch_size, imgsz, seed=index + 1) for index, other in enumerate(opened)]
        try:
            for step in (one, *two):
                for _ in range(max(1, warmup_runs)):
                    step()
            return compare_instances(
                one, two, batch_size, bound_s, clock=clock, threads=threads, threads_each=threads_each,
                measured_on=measured_on, min_calls=fixed_calls or BLOCK_CALLS,
                block_seconds=0.0 if fixed_calls else BLOCK_SECONDS,
                max_blocks=FIXED_BLOCKS if fixed_calls else None)
        except Exception as exc:
            if is_oom(exc):
                return not_measured(f"two instances ran out of memory at batch {batch_size} ({error_line(exc)})")
            raise
    finally:
        for other in opened:
            other.close()


def _speed(speed: SpeedEstimate) -> str:
    return f"{speed.img_per_s:.1f} img/s (95% {speed.span()})"
