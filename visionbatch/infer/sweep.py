"""The batch sweep: which sizes, how each is timed, and when to stop early.

Two passes. The first goes up the batch sizes one after another (warm-up, one block of timed
calls, the memory and power reading) until a stop rule fires: latency, memory, a plateau of
throughput shown beyond the noise, or the time bound. The second times the batches the first
kept (but those whose median is already over the latency budget) again, in round-robin blocks,
so a slow spell of a shared machine hits every batch alike, until each batch has `min_blocks`
blocks and its throughput's 95% interval over the blocks (`visionbatch.stats.estimate_speed_blocks`)
is within `interval_width` of its value, or the time bound (`max_seconds`) passes. Every timed call of both
passes counts; the intervals go into the plan and the choice compares them. `runs=` fixes the
calls per batch instead: one pass, no repetition.

`run_sweep` is the only part that touches a clock; it takes the clock, the step and the probe as
arguments so tests drive it with a fake device. Everything else here is pure.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from visionbatch.infer.plan import BatchMeasurement, Constraints
from visionbatch.stats import SPEED_TOLERANCE, estimate_speed_blocks, time_calls
from visionbatch.units import human_bytes

DEFAULT_MAX_BATCH = 64


def default_batch_sizes(max_batch: int = DEFAULT_MAX_BATCH) -> tuple[int, ...]:
    """Powers of two from 1 up to `max_batch` (and `max_batch` itself if it is not one).

    Examples:
        >>> default_batch_sizes(64), default_batch_sizes(12)
        ((1, 2, 4, 8, 16, 32, 64), (1, 2, 4, 8, 12))
    """
    sizes = [2**k for k in range(int(math.log2(max_batch)) + 1)]
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return tuple(sizes)


@dataclasses.dataclass(frozen=True, slots=True)
class SweepPolicy:
    """How each batch is timed and when the sweep stops.

    Attributes:
        warmup_runs: untimed calls first (the first call at a new shape allocates and tunes).
        runs: a fixed number of timed calls per batch; None to time for `seconds_per_batch`.
        seconds_per_batch: time each batch at least this long (and at least `min_runs` calls).
        min_runs: fewest timed calls per batch.
        max_runs: most timed calls per batch.
        max_seconds: time bound for the whole sweep: a batch predicted to end past it is skipped.
        plateau_gain: a batch shown (by the intervals) to gain less than this over the best
            before it has plateaued.
        plateau_patience: stop after this many plateaued batches in a row.
        interval_width: the second pass stops once every throughput's 95% interval reaches at
            most this share of its value on either side.
        block_runs: fewest timed calls in a block of the second pass. With `runs` given there is
            no second pass: the count is fixed.
        block_seconds: a block of the second pass lasts at least this long.
        min_blocks: fewest blocks per batch (the first pass's included) before its interval may
            count as narrow: the calls of one block share one moment of the machine, and only
            blocks apart show how much it moves.
    """

    warmup_runs: int = 3
    runs: int | None = None
    seconds_per_batch: float = 1.0
    min_runs: int = 10
    max_runs: int = 1000
    max_seconds: float = 90.0
    plateau_gain: float = 0.05
    plateau_patience: int = 2
    interval_width: float = SPEED_TOLERANCE
    block_runs: int = 3
    block_seconds: float = 0.25
    min_blocks: int = 3


def summarize(batch_size: int, latencies_ms: Sequence[float], memory_bytes: int | None = None,
              memory_source: str = "", power_mw: float | None = None,
              stages_ms: Sequence[dict[str, float]] = (), detections: Sequence[float] = (),
              block_sizes: Sequence[int] = ()) -> BatchMeasurement:
    """Percentiles, per-image latency, throughput and its 95% interval from the timed calls of one batch.

    `block_sizes` splits the calls, in order, into the blocks they were timed in: with two blocks
    or more the interval is over the blocks (`visionbatch.stats.estimate_speed_blocks`).

    Examples:
        >>> m = summarize(4, [10.0, 10.0, 10.0, 30.0])
        >>> m.latency_p50_ms, m.latency_mean_ms, m.per_image_ms, m.throughput_per_s
        (10.0, 15.0, 3.75, 266.667)
        >>> m.throughput_low_per_s, m.throughput_high_per_s  # mean 15 +- 3.182 x 10 / 2 = 15.9 ms
        (129.408, inf)
    """
    values = np.asarray(latencies_ms, dtype=float)
    speed = estimate_speed_blocks(batch_size, _split([ms / 1000.0 for ms in latencies_ms], block_sizes))
    mean = float(values.mean())
    p50, p90, p99 = (float(np.percentile(values, q)) for q in (50, 90, 99))
    stage_means = {}
    for key in (stages_ms[0] if stages_ms else {}):
        stage_means[key] = round(float(np.mean([s[key] for s in stages_ms])), 3)
    return BatchMeasurement(
        batch_size=batch_size,
        runs=len(values),
        latency_p50_ms=round(p50, 3),
        latency_p90_ms=round(p90, 3),
        latency_p99_ms=round(p99, 3),
        latency_mean_ms=round(mean, 3),
        latency_max_ms=round(float(values.max()), 3),
        per_image_ms=round(mean / batch_size, 3),
        throughput_per_s=round(float(batch_size * len(values) / (values.sum() / 1000.0)), 3),
        memory_bytes=memory_bytes,
        memory_source=memory_source,
        power_mw=None if power_mw is None else round(power_mw, 1),
        stages_ms=stage_means,
        detections_per_image=round(float(np.mean(detections)), 3) if len(detections) else None,
        throughput_low_per_s=round(speed.low_img_per_s, 3),
        throughput_high_per_s=round(speed.high_img_per_s, 3),
    )


def _split(values: Sequence[float], sizes: Sequence[int]) -> list[list[float]]:
    """`values` cut into consecutive blocks of `sizes` (one block when no sizes are given).

    Examples:
        >>> _split([1.0, 2.0, 3.0], [2, 1]), _split([1.0, 2.0], [])
        ([[1.0, 2.0], [3.0]], [[1.0, 2.0]])
    """
    if not sizes:
        return [list(values)]
    if sum(sizes) != len(values):
        raise ValueError(f"block sizes {list(sizes)} do not add up to {len(values)} values")
    ends = np.cumsum(sizes)
    return [list(values[end - size:end]) for size, end in zip(sizes, ends)]


def stop_reason(measured: Sequence[BatchMeasurement], next_batch: int, constraints: Constraints,
                policy: SweepPolicy, memory_limit_bytes: int | None = None, elapsed_s: float = 0.0) -> str | None:
    """Why the sweep should not measure `next_batch`, or None to go on.

    Stops when the last batch's median latency (plus fill wait) is over the latency budget (a
    larger batch only takes longer), when `next_batch` would wait longer than the budget just to
    fill, when memory projected linearly from the last two batches passes `memory_limit_bytes`,
    when throughput has plateaued, or when `next_batch` would end past the time bound. A batch has
    plateaued only when even the top of its interval gains less than `plateau_gain` over the
    bottom of the best interval before it: a batch that could still win by more than the noise
    never stops the sweep.

    Examples:
        >>> m = [summarize(b, [t] * 3) for b, t in [(1, 10.0), (2, 19.0), (4, 38.0), (8, 75.0)]]
        >>> stop_reason(m[:2], 4, Constraints(), SweepPolicy()) is None
        True
        >>> stop_reason(m, 16, Constraints(), SweepPolicy())
        'throughput plateaued: batches 4 and 8 gained less than 5% over the best before them'
    """
    last = measured[-1]
    budget = constraints.latency_ms
    if budget is not None:
        fill = constraints.fill_wait_ms(last.batch_size)
        if last.latency_p50_ms + fill > budget:
            if not fill:
                return (f"latency: batch {last.batch_size} takes {last.latency_p50_ms:.1f} ms at the median, "
                        f"over the {budget:g} ms budget; larger batches only take longer")
            return (f"latency: a full batch {last.batch_size} waits {fill:.1f} ms to fill at "
                    f"{constraints.required_per_s:g} img/s and takes {last.latency_p50_ms:.1f} ms at the median, "
                    f"over the {budget:g} ms budget; larger batches only wait longer (batches sent part-full "
                    f"after a shorter queue delay are simulated with the rest)")
        if constraints.fill_wait_ms(next_batch) > budget:
            return (f"latency: batch {next_batch} would wait {constraints.fill_wait_ms(next_batch):.1f} ms to fill "
                    f"at {constraints.required_per_s:g} img/s, over the {budget:g} ms budget")
    if memory_limit_bytes is not None:
        projected = _project_memory(measured, next_batch)
        if projected is not None and projected > memory_limit_bytes:
            return (f"memory: batch {next_batch} is projected at {human_bytes(projected)}, over the "
                    f"{human_bytes(memory_limit_bytes)} limit")
    plateau = _plateau(measured, policy)
    if plateau is not None:
        return plateau
    predicted_s = predicted_batch_seconds(last, next_batch, policy)
    if elapsed_s + predicted_s > policy.max_seconds:
        return (f"time: batch {next_batch} would take about {predicted_s:.1f} s, past the "
                f"{policy.max_seconds:g} s bound for the sweep (max_seconds=)")
    return None


PLATEAU = "throughput plateaued"


def _plateau(measured: Sequence[BatchMeasurement], policy: SweepPolicy) -> str | None:
    """Why throughput has plateaued (the last `plateau_patience` batches, by their intervals, gained
    less than `plateau_gain` over the best before each), or None."""
    patience = policy.plateau_patience
    if len(measured) <= patience:
        return None
    for index in range(len(measured) - patience, len(measured)):
        before = max((m.speed() for m in measured[:index]), key=lambda speed: speed.img_per_s)
        if measured[index].speed().high_img_per_s >= before.low_img_per_s * (1 + policy.plateau_gain):
            return None
    sizes = [str(m.batch_size) for m in measured[-patience:]]
    return (f"{PLATEAU}: batches {' and '.join(sizes)} gained less than {policy.plateau_gain:.0%} over the best "
            f"before them")


def predicted_batch_seconds(last: BatchMeasurement, next_batch: int, policy: SweepPolicy) -> float:
    """Seconds to measure `next_batch`, scaling the last batch's per-image time."""
    call_s = last.per_image_ms * next_batch / 1000.0
    if policy.runs is not None:
        timed = call_s * policy.runs
    else:
        timed = max(call_s * policy.min_runs, policy.seconds_per_batch)
    return call_s * policy.warmup_runs + timed


def _project_memory(measured: Sequence[BatchMeasurement], next_batch: int) -> int | None:
    points = [(m.batch_size, m.memory_bytes) for m in measured if m.memory_bytes is not None]
    if len(points) < 2:
        return None
    (b1, m1), (b2, m2) = points[-2], points[-1]
    slope = max(0.0, (m2 - m1) / (b2 - b1))
    return int(m2 + slope * (next_batch - b2))


class Probe(Protocol):
    """Reads memory (and power) over a window of timed calls."""

    memory_source: str

    def start(self) -> None: ...

    def stop(self) -> tuple[int | None, float | None]: ...  # (memory bytes, mean power mW)


@dataclasses.dataclass(frozen=True, slots=True)
class SweepResult:
    """What the sweep measured.

    Attributes:
        measurements: one per batch kept, smallest first, over the calls of both passes.
        stop_reason: why the first pass stopped where it did.
        service_ms: batch size -> every timed call's latency in ms (the queueing simulation draws from these).
        rounds: round-robin rounds of the second pass.
        settled: True when the intervals narrowed to `interval_width`; False when the time bound
            (or `max_runs`) stopped the second pass first.
        timing: the second pass in one line, for the plan.
    """

    measurements: tuple[BatchMeasurement, ...]
    stop_reason: str
    service_ms: dict[int, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    rounds: int = 0
    settled: bool = True
    timing: str = ""


Step = Callable[[], Any]  # runs one batch; may return {'stages_ms': {...}, 'detections': n}


@dataclasses.dataclass(slots=True)
class _Timed:
    """The calls of one batch so far, both passes (mutable while the sweep runs)."""

    batch_size: int
    step: Step
    latencies_ms: list[float]
    stages: list[dict[str, float]]
    detections: list[float]
    memory_bytes: int | None = None
    power_mw: float | None = None
    block_s: float = 0.0  # how long its last block took
    block_sizes: list[int] = dataclasses.field(default_factory=list)  # calls in each block, in order

    def summary(self, memory_source: str) -> BatchMeasurement:
        return summarize(self.batch_size, self.latencies_ms, self.memory_bytes, memory_source, self.power_mw,
                         self.stages, self.detections, self.block_sizes)

    def speed_width(self) -> float:
        """The throughput interval's half width over its value, blocks counted (inf when unbounded)."""
        return estimate_speed_blocks(self.batch_size, _split([ms / 1000.0 for ms in self.latencies_ms],
                                                             self.block_sizes)).relative_half_width


def run_sweep(make_step: Callable[[int], Step], batch_sizes: Sequence[int], policy: SweepPolicy,
              constraints: Constraints, probe: Probe, memory_limit_bytes: int | None = None,
              is_out_of_memory: Callable[[BaseException], bool] = lambda exc: False,
              clock: Callable[[], float] = time.perf_counter,
              progress: Callable[[str], None] | None = None) -> SweepResult:
    """Measure each batch size in turn until done or a stop rule fires, then time them again, interleaved.

    Args:
        make_step: batch size -> a callable that runs one batch (its input prepared once).
        batch_sizes: ascending sizes to try.
        policy: warm-up, timing and stop settings.
        constraints: used by the early-stop rules.
        probe: memory/power reader around the first pass's timed calls.
        memory_limit_bytes: stop before a batch projected past this.
        is_out_of_memory: says whether an exception is the device running out of memory; such a
            batch ends the sweep (the last size that worked is kept), anything else propagates.
        clock: seconds, monotonic.
        progress: receives one line per batch measured.

    Returns:
        The measurements (with their throughput intervals), why the first pass stopped, every
        call's latency, and how the second pass ended.
    """
    timed: list[_Timed] = []
    started = clock()
    reason = every = f"all {len(batch_sizes)} batch sizes measured"
    index, rounds, settled, timing = 0, 0, True, ""
    while True:
        index, reason = _first_pass(make_step, batch_sizes, index, timed, policy, constraints, probe,
                                    memory_limit_bytes, is_out_of_memory, clock, started, progress, reason)
        more, now_settled, now_timing = _interleave(_contenders(timed, constraints, probe.memory_source), policy,
                                                    clock, started)
        if more or not rounds:  # a pass that timed nothing more keeps what the one before found
            settled, timing = now_settled, now_timing
        rounds += more
        if more and progress:
            progress(timing)
        # the first pass judged the plateau on one block per batch; the blocks since may show a larger
        # batch could still win by more than the noise: then the sweep goes on up the sizes, if it may
        measured = [t.summary(probe.memory_source) for t in timed]
        if (not reason.startswith(PLATEAU) or index >= len(batch_sizes)
                or _plateau(measured, policy) is not None):
            break
        why = stop_reason(measured, batch_sizes[index], constraints, policy, memory_limit_bytes, clock() - started)
        if why:
            reason = f"{why} (the plateau before it did not hold once the batches were timed again)"
            break
        if progress:
            progress(f"the plateau did not hold once the batches were timed again: measuring batch "
                     f"{batch_sizes[index]} too")
        reason = every
    return SweepResult(
        measurements=tuple(measured), stop_reason=reason,
        service_ms={t.batch_size: tuple(t.latencies_ms) for t in timed}, rounds=rounds, settled=settled,
        timing=timing)


def _first_pass(make_step: Callable[[int], Step], batch_sizes: Sequence[int], index: int, timed: list[_Timed],
                policy: SweepPolicy, constraints: Constraints, probe: Probe, memory_limit_bytes: int | None,
                is_out_of_memory: Callable[[BaseException], bool], clock: Callable[[], float], started: float,
                progress: Callable[[str], None] | None, reason: str) -> tuple[int, str]:
    """Measure `batch_sizes[index:]` one after another into `timed` until a stop rule fires.

    Returns the index of the first size not measured and why the pass stopped (`reason` when every
    size was measured)."""
    while index < len(batch_sizes):
        batch_size = batch_sizes[index]
        if timed:
            measured = [t.summary(probe.memory_source) for t in timed]
            why = stop_reason(measured, batch_size, constraints, policy, memory_limit_bytes, clock() - started)
            if why:
                return index, why
        try:
            first = _first_block(make_step, batch_size, policy, probe, clock)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if progress:
                progress(f"batch {batch_size}: out of memory; keeping batches up to "
                         f"{timed[-1].batch_size if timed else 'none'}")
            return len(batch_sizes), f"memory: batch {batch_size} ran out of memory ({type(exc).__name__})"
        timed.append(first)
        if progress:
            progress(_progress_line(first.summary(probe.memory_source), index, len(batch_sizes)))
        index += 1
    return index, reason


def _contenders(timed: Sequence[_Timed], constraints: Constraints, memory_source: str) -> list[_Timed]:
    """The batches the second pass times: all but those whose median plus fill wait is already
    over the latency budget (no timing can bring them back)."""
    budget = constraints.latency_ms
    if budget is None:
        return list(timed)
    return [t for t in timed
            if t.summary(memory_source).latency_p50_ms + constraints.fill_wait_ms(t.batch_size) <= budget]


def _interleave(timed: Sequence[_Timed], policy: SweepPolicy, clock: Callable[[], float],
                started: float) -> tuple[int, bool, str]:
    """Time the batches again in round-robin blocks until every interval is narrow or the time bound.

    A round starts only when, its blocks lasting as long as each batch's last one, it would end
    within `max_seconds` of the sweep's start. Returns (rounds, settled, one line on how it ended).
    """
    def widths() -> list[float]:
        return [t.speed_width() for t in timed]

    rounds = 0
    if not timed:
        return 0, True, ""
    if policy.runs is not None:  # a fixed count asked for: one pass, the intervals as they fell
        widest = max(widths())
        shown = "unbounded" if math.isinf(widest) else f"+-{widest:.1%}"
        return 0, widest <= policy.interval_width, (f"runs={policy.runs} fixed the calls per batch: one pass, no "
                                                    f"interleaved repetition; widest interval {shown}")
    while True:
        widest = max(widths())
        if widest <= policy.interval_width and all(len(t.block_sizes) >= policy.min_blocks for t in timed):
            settled, why = True, (f"every 95% interval, over at least {policy.min_blocks} blocks, within "
                                  f"{policy.interval_width:.0%}")
            break
        if all(len(t.latencies_ms) >= policy.max_runs for t in timed):
            settled, why = False, f"max_runs={policy.max_runs} reached"
            break
        if clock() - started + sum(t.block_s for t in timed) > policy.max_seconds:  # a round as long as the last
            settled, why = False, f"the {policy.max_seconds:g} s time bound (max_seconds=) passed"
            break
        for entry in timed:
            if len(entry.latencies_ms) < policy.max_runs:
                _block(entry, policy, clock, policy.block_runs, policy.block_seconds)
        rounds += 1
    widest = max(widths())
    shown = "unbounded" if math.isinf(widest) else f"+-{widest:.1%}"
    if not rounds:
        return 0, settled, f"one block per batch: {why}"
    text = (f"timed in {rounds} interleaved round{'s' * (rounds != 1)} after the first pass "
            f"({clock() - started:.1f} s in all): {why}; widest interval {shown}")
    if not settled:
        text += ": batches whose intervals overlap count as equal"
    return rounds, settled, text


def _first_block(make_step: Callable[[int], Step], batch_size: int, policy: SweepPolicy, probe: Probe,
                 clock: Callable[[], float]) -> _Timed:
    """Warm-up, then the first pass's block inside the probe's window."""
    entry = _Timed(batch_size, make_step(batch_size), [], [], [])
    for _ in range(policy.warmup_runs):
        entry.step()
    probe.start()
    try:
        if policy.runs is not None:
            _block(entry, policy, clock, policy.runs, 0.0)
        else:
            _block(entry, policy, clock, policy.min_runs, policy.seconds_per_batch)
    finally:
        entry.memory_bytes, entry.power_mw = probe.stop()
    return entry


def _block(entry: _Timed, policy: SweepPolicy, clock: Callable[[], float], min_calls: int,
           min_seconds: float) -> None:
    """Time calls of one batch until `min_calls` and `min_seconds` (or `max_runs` in all)."""
    def keep(out: object) -> None:  # end to end, a call also says what its stages took and what NMS kept
        if isinstance(out, dict):
            if "stages_ms" in out:
                entry.stages.append(out["stages_ms"])
            if "detections" in out:
                entry.detections.append(out["detections"])

    begin = clock()
    calls = time_calls(entry.step, min_calls, min_seconds, clock,
                       max_calls=max(1, policy.max_runs - len(entry.latencies_ms)), each=keep)
    entry.latencies_ms.extend(seconds * 1000.0 for seconds in calls)
    entry.block_s = clock() - begin
    entry.block_sizes.append(len(calls))


def _progress_line(m: BatchMeasurement, index: int, total: int) -> str:
    memory = f", {m.memory_source} {human_bytes(m.memory_bytes)}" if m.memory_bytes is not None else ""
    return (f"[{index + 1}/{total}] batch {m.batch_size}: {m.runs} runs, p50 {m.latency_p50_ms:.1f} ms, "
            f"p99 {m.latency_p99_ms:.1f} ms, {m.throughput_per_s:.1f} img/s{memory}")
