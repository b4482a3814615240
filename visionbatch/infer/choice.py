"""Choose the inference batch: pure functions over measured batches and constraints.

A batch b is feasible when
  - its worst frame latency, fill wait + p99 batch latency, is within `latency_ms`, where the
    fill wait at a load of N streams x F fps is (b - 1) / (N x F) (the first frame of a batch waits
    for the others);
  - its throughput keeps up with the load: images/s >= N x F;
  - its memory reading is within the memory budget.
Among feasible batches the one with the most throughput wins, except that batches whose 95%
throughput intervals overlap (within `tolerance`, 3%) count as equally fast and then the smallest
batch wins (`visionbatch.stats.smallest_not_slower`): a smaller batch has less latency and memory
for the same work, and noise can only move the answer down.

Under a camera load with the measured call latencies (`service_ms`), the latency test is the
queueing simulation instead (`visionbatch.infer.queueing`): every batch is simulated with a small
grid of queue delays, N cameras at F fps with unsynchronised phases and jitter, and a batch is
feasible when one of its policies (batch, queue delay) keeps the simulated p99 frame latency
within `latency_ms` at a utilisation below 1. Then two regimes:
  - **headroom enough**: policies at most `COMFORTABLE_UTILISATION` (70%) busy, even at the low
    end of the throughput's interval, leave room for a slow spell or a burst; among them the
    lowest simulated p99 wins (p99s within `P99_TIE`, 10%, count as equal and the smallest batch
    wins), since more capacity would buy nothing but latency;
  - **a heavy load** (no policy that comfortable): per batch the delay with the most headroom
    (1 - utilisation) wins, the lower p99 among near ties, and across batches the interval rule
    above applies to what each policy could carry, load / utilisation, with the throughput's
    interval (a batch that runs part-full under the load carries less than its full-batch
    throughput).
The rest of the feasible policies are kept, best first, for a replay.
When nothing is feasible, `advise` says what would be, with numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from visionbatch.checks import MIN_IMGSZ
from visionbatch.infer.plan import (
    BatchMeasurement,
    BatchVerdict,
    Choice,
    Constraints,
    EarlierChoice,
    StreamLoad,
)
from visionbatch.infer.queueing import (
    JITTER_SHARE,
    QueueStats,
    arrivals_s,
    delay_grid_ms,
    frames_to_simulate,
    simulate,
)
from visionbatch.stats import (
    SPEED_TOLERANCE,
    SpeedEstimate,
    measurably_faster,
    smallest_not_slower,
)
from visionbatch.units import human_bytes


def judge(measurement: BatchMeasurement, constraints: Constraints) -> BatchVerdict:
    """Hold one measured batch against the constraints.

    Examples:
        >>> m = BatchMeasurement(4, 10, 30.0, 35.0, 40.0, 31.0, 41.0, 7.75, 129.0)
        >>> judge(m, Constraints(latency_ms=50)).feasible
        True
        >>> judge(m, Constraints(latency_ms=35)).violations
        ('latency 40.0 ms > 35 ms budget',)
    """
    fill = constraints.fill_wait_ms(measurement.batch_size)
    worst = fill + measurement.latency_p99_ms
    violations = []
    if constraints.latency_ms is not None and worst > constraints.latency_ms:
        detail = f" (fill wait {fill:.1f} + p99 {measurement.latency_p99_ms:.1f})" if fill else ""
        violations.append(f"latency {worst:.1f} ms{detail} > {constraints.latency_ms:g} ms budget")
    required = constraints.required_per_s
    if required is not None and measurement.throughput_per_s < required:
        violations.append(f"throughput {measurement.throughput_per_s:.1f} img/s < {required:g} img/s needed")
    budget = constraints.memory_budget_bytes
    if budget is not None and measurement.memory_bytes is not None and measurement.memory_bytes > budget:
        violations.append(f"memory {human_bytes(measurement.memory_bytes)} > {human_bytes(budget)} budget")
    return BatchVerdict(measurement.batch_size, round(fill, 3), round(worst, 3), not violations, tuple(violations))


P99_TIE = 0.10  # simulated p99s within 10% of the lowest count as equal among comfortable policies: the smallest wins
# At most 70% busy, even at the low end of the throughput's interval, a policy has 30% headroom: room for a
# slower spell of the device, jitter and a burst of frames, where the queue of an M/D/1-like batcher is still
# short (its mean wait is u / (2 (1 - u)) service times: 1.2 at 70%, 4.5 at 90%, and steeper still when the
# service is 10% slower than measured: 1.7 from 70%, 50 from 90%). Past that, capacity is what a deployment
# needs; below it, more capacity buys nothing and a larger batch costs latency.
COMFORTABLE_UTILISATION = 0.70
HEADROOM_TIE = 0.01  # policies of one batch within 1 point of headroom count as equal: the lower p99 wins
# A kept choice (`keep_earlier`) may run up to 85% busy at the low end of its interval before a fresh one replaces
# it: the hysteresis band above COMFORTABLE_UTILISATION. There an M/D/1-like queue's mean wait is 2.8 service
# times (1.2 at 70%), still short, and the simulated p99 must meet the budget all the same.
KEEP_UTILISATION = 0.85
# A kept policy gives way to a comfortably idle one whose simulated p99 is lower by more than this share of the
# latency budget (or P99_TIE of its p99, when that is more): a slow first run must not hold the latency hostage
# (batch 4 with a 100 ms queue delay, p99 130 ms, against batch 1's 25 ms under a 500 ms budget), while tens of
# milliseconds under a budget of hundreds are not worth moving a deployed policy for.
KEEP_P99_SHARE = 0.10
SAME_AS_ALONE = "this run alone chose the same"  # `EarlierChoice.why` when the earlier policy is the fresh one
CHOSEN_AFRESH = "keep_choice=False: chosen afresh"  # `EarlierChoice.why` when the caller asked not to keep it


def judge_queued(measurement: BatchMeasurement, constraints: Constraints, policy: QueueStats) -> BatchVerdict:
    """Hold one measured batch, batched by `policy` under the load, against the constraints.

    Examples:
        >>> from visionbatch.infer.plan import StreamLoad
        >>> m = BatchMeasurement(4, 10, 300.0, 300.0, 604.0, 376.0, 604.0, 94.0, 10.6)
        >>> sim = QueueStats(4, 300.0, 652.8, 1581.2, 1772.3, 0.9358, 0.182, 4.0, 2000)
        >>> judge_queued(m, Constraints(latency_ms=1000, load=StreamLoad(2, 5)), sim).violations
        ('simulated p99 1581.2 ms (queue delay 300 ms, 18.2% of frames over) > 1000 ms budget',)
    """
    violations = []
    budget = constraints.latency_ms
    if budget is not None and policy.latency_p99_ms > budget:
        share = f", {policy.over_budget_share:.1%} of frames over" if policy.over_budget_share else ""
        violations.append(f"simulated p99 {policy.latency_p99_ms:.1f} ms (queue delay {policy.queue_delay_ms:g} ms"
                          f"{share}) > {budget:g} ms budget")
    required = constraints.required_per_s
    if required is not None and measurement.throughput_per_s < required:
        violations.append(f"throughput {measurement.throughput_per_s:.1f} img/s < {required:g} img/s needed")
    elif policy.utilisation >= 1.0:
        violations.append(f"utilisation {policy.utilisation:.0%} at a {policy.queue_delay_ms:g} ms queue delay: "
                          f"the queue grows")
    memory = constraints.memory_budget_bytes
    if memory is not None and measurement.memory_bytes is not None and measurement.memory_bytes > memory:
        violations.append(f"memory {human_bytes(measurement.memory_bytes)} > {human_bytes(memory)} budget")
    return BatchVerdict(measurement.batch_size, round(constraints.fill_wait_ms(measurement.batch_size), 3),
                        policy.latency_p99_ms, not violations, tuple(violations), policy.queue_delay_ms, policy)


def simulate_policies(measurement: BatchMeasurement, constraints: Constraints,
                      service_ms: Mapping[int, Sequence[float]]) -> tuple[QueueStats, ...]:
    """`measurement`'s batch simulated under the load with each queue delay of `delay_grid_ms`.

    The load's cameras have random (seeded) phases and jitter of `JITTER_SHARE` of a frame
    period; partial batches cost what the next measured size does.
    """
    load = constraints.load
    if load is None:
        raise ValueError("simulate_policies() needs a stream load")
    return tuple(simulate_policy(measurement, constraints, service_ms, delay)
                 for delay in delay_grid_ms(measurement.batch_size, load.images_per_s))


def simulate_policy(measurement: BatchMeasurement, constraints: Constraints,
                    service_ms: Mapping[int, Sequence[float]], queue_delay_ms: float) -> QueueStats:
    """`measurement`'s batch with one queue delay, simulated under the load (as `simulate_policies`)."""
    arrivals = policy_arrivals(measurement.batch_size, constraints)
    service = {b: times for b, times in service_ms.items() if b <= measurement.batch_size and times}
    return simulate(arrivals, service, measurement.batch_size, queue_delay_ms, constraints.latency_ms)


def policy_arrivals(batch_size: int, constraints: Constraints) -> list[float]:
    """The load's arrivals every policy of `batch_size` is simulated (and replayed) over: random
    (seeded) camera phases, jitter of `JITTER_SHARE` of a frame period."""
    load = constraints.load
    if load is None:
        raise ValueError("policy_arrivals() needs a stream load")
    return arrivals_s(load.streams, load.fps, frames_to_simulate(batch_size),
                      jitter_ms=JITTER_SHARE * 1000.0 / load.fps, random_phases=True)


def comfortable(measurement: BatchMeasurement, policy: QueueStats,
                measurements: Sequence[BatchMeasurement] = ()) -> bool:
    """Whether `policy` keeps the device at most `COMFORTABLE_UTILISATION` (70%) busy even at the low
    end of the throughput's interval: then more capacity buys nothing but latency.

    The interval is that of the sizes the policy's batches run at: with `measurements` given, every
    measured size up to its mean batch rounded up, the slowest low end among them (a max batch of 4
    with no queue delay under a light load sends single frames, as batch 1 does, and is as uncertain
    as batch 1's timing); else `measurement`'s own.

    Examples:
        >>> m = BatchMeasurement(4, 10, 40.0, 40.0, 40.0, 40.0, 40.0, 10.0, 100.0,
        ...                      throughput_low_per_s=90.0, throughput_high_per_s=110.0)
        >>> comfortable(m, QueueStats(4, 0.0, 50.0, 60.0, 70.0, 0.63, 0.0, 4.0, 2000))  # 0.63 x 100/90 = 0.70
        True
        >>> comfortable(m, QueueStats(4, 0.0, 50.0, 60.0, 70.0, 0.64, 0.0, 4.0, 2000))
        False
        >>> one = BatchMeasurement(1, 10, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 50.0,
        ...                        throughput_low_per_s=40.0, throughput_high_per_s=60.0)
        >>> single_frames = QueueStats(4, 0.0, 20.0, 30.0, 40.0, 0.6, 0.0, 1.0, 2000)  # batches of 1
        >>> comfortable(m, single_frames), comfortable(m, single_frames, [one, m])  # 0.6 x 50/40 = 0.75
        (True, False)
    """
    return busiest(measurement, policy, measurements) <= COMFORTABLE_UTILISATION + 1e-9


def busiest(measurement: BatchMeasurement, policy: QueueStats, measurements: Sequence[BatchMeasurement] = ()) -> float:
    """`policy`'s utilisation at the low end of the throughput interval of the sizes it runs (see `comfortable`).

    Examples:
        >>> m = BatchMeasurement(4, 10, 40.0, 40.0, 40.0, 40.0, 40.0, 10.0, 100.0,
        ...                      throughput_low_per_s=80.0, throughput_high_per_s=120.0)
        >>> busiest(m, QueueStats(4, 0.0, 50.0, 60.0, 70.0, 0.6, 0.0, 4.0, 2000))  # 0.6 x 100 / 80
        0.75
    """
    served = [x for x in measurements if x.batch_size <= max(1, math.ceil(policy.mean_batch - 1e-9))
              and x.batch_size <= measurement.batch_size] or [measurement]
    slow = 1.0
    for size in served:
        speed = size.speed()
        slow = max(slow, speed.img_per_s / speed.low_img_per_s if speed.low_img_per_s > 0 else math.inf)
    return policy.utilisation * slow


def best_policy(measurement: BatchMeasurement, constraints: Constraints,
                policies: Sequence[QueueStats], measurements: Sequence[BatchMeasurement] = ()) -> QueueStats:
    """The feasible policy with the lowest p99 among those that leave the device comfortably idle
    (`comfortable`: 70% busy at most); else the one with the most headroom (the lower p99 among near ties); else,
    when none is feasible, the lowest p99."""
    feasible = [p for p in policies if judge_queued(measurement, constraints, p).feasible]
    if not feasible:
        return min(policies, key=lambda p: (p.latency_p99_ms, p.queue_delay_ms))
    idle = [p for p in feasible if comfortable(measurement, p, measurements)]
    if idle:
        return min(idle, key=lambda p: (p.latency_p99_ms, p.queue_delay_ms))
    most = max(p.headroom for p in feasible)
    return min((p for p in feasible if p.headroom >= most - HEADROOM_TIE),
               key=lambda p: (p.latency_p99_ms, p.queue_delay_ms))


def carried(measurement: BatchMeasurement, policy: QueueStats, constraints: Constraints) -> SpeedEstimate:
    """What `policy` could carry: load / utilisation, with the throughput's relative interval.

    Examples:
        >>> from visionbatch.infer.plan import StreamLoad
        >>> m = BatchMeasurement(8, 10, 400.0, 400.0, 400.0, 400.0, 400.0, 50.0, 20.0,
        ...                      throughput_low_per_s=18.0, throughput_high_per_s=22.0)
        >>> sim = QueueStats(8, 400.0, 600.0, 800.0, 810.0, 0.8, 0.0, 4.0, 2000)  # part-full batches
        >>> speed = carried(m, sim, Constraints(load=StreamLoad(2, 5)))
        >>> speed.img_per_s, round(speed.low_img_per_s, 3), round(speed.high_img_per_s, 3)
        (12.5, 11.25, 13.75)
    """
    if constraints.load is None:
        raise ValueError("carried() needs a stream load")
    point = measurement.speed()
    capacity = constraints.load.images_per_s / max(policy.utilisation, 1e-9)
    scale = capacity / point.img_per_s
    return SpeedEstimate(measurement.batch_size, capacity, point.low_img_per_s * scale,
                         point.high_img_per_s * scale, point.samples)


def choose(measurements: Sequence[BatchMeasurement], constraints: Constraints,
           tolerance: float = SPEED_TOLERANCE, imgsz: int | None = None, precision: str = "fp32",
           device_type: str = "cpu", service_ms: Mapping[int, Sequence[float]] | None = None) -> Choice:
    """The batch that meets every constraint: under a load, the lowest simulated p99 among policies at
    most `COMFORTABLE_UTILISATION` busy, else the most it can carry; without one, the most throughput
    (the smallest batch among those whose intervals overlap, in both throughput rules).

    Args:
        measurements: measured batches (any order).
        constraints: latency budget, memory budget, stream load.
        tolerance: throughputs whose intervals come within this fraction of each other count
            as equal; the smallest such batch wins.
        imgsz, precision, device_type: what ran, for the advice when nothing is feasible.
        service_ms: batch size -> measured call latencies in ms: with a stream load, the latency
            test is the queueing simulation over these, and the queue delay is chosen too.

    Examples:
        >>> ms = [BatchMeasurement(b, 10, lat, lat, lat, lat, lat, lat / b, thr)
        ...       for b, lat, thr in [(1, 10.0, 100.0), (2, 16.0, 125.0), (4, 30.0, 133.0), (8, 70.0, 114.0)]]
        >>> choose(ms, Constraints(latency_ms=20)).batch_size
        2
        >>> choose(ms, Constraints()).batch_size  # 133 is the best; 125 is 6% below it
        4
    """
    if not measurements:
        raise ValueError("choose() needs at least one measured batch")
    ordered = sorted(measurements, key=lambda m: m.batch_size)
    queued = constraints.load is not None and bool(service_ms)
    if queued:
        verdicts = tuple(judge_queued(m, constraints, best_policy(m, constraints,
                                                                  simulate_policies(m, constraints, service_ms),
                                                                  ordered))
                         for m in ordered)
    else:
        verdicts = tuple(judge(m, constraints) for m in ordered)
    feasible = [m for m, v in zip(ordered, verdicts) if v.feasible]
    if not feasible:
        reason = _infeasible_reason(ordered, verdicts, constraints)
        advice = advise(ordered, constraints, imgsz=imgsz, precision=precision, device_type=device_type,
                        verdicts=verdicts)
        return Choice(None, reason, verdicts, advice)
    if queued:
        speeds = {m.batch_size: carried(m, verdicts[ordered.index(m)].simulated, constraints) for m in feasible}
    else:
        speeds = {m.batch_size: m.speed() for m in feasible}
    best = max(feasible, key=lambda m: speeds[m.batch_size].img_per_s)
    smallest = smallest_not_slower(list(speeds.values()), tolerance).batch_size
    idle = [m for m in feasible if queued and comfortable(m, verdicts[ordered.index(m)].simulated, ordered)]
    if idle:  # headroom enough: more capacity buys only latency, so the lowest p99 wins, and among p99s
        # within P99_TIE of it (simulation noise) the smallest batch
        p99 = {m.batch_size: verdicts[ordered.index(m)].simulated.latency_p99_ms for m in idle}
        smallest = min(b for b, value in p99.items() if value <= min(p99.values()) * (1 + P99_TIE))
    chosen = next(m for m in feasible if m.batch_size == smallest)
    verdict = verdicts[ordered.index(chosen)]
    reason = _reason(chosen, verdict, best, ordered, verdicts, constraints, tolerance, speeds, by_latency=bool(idle))
    if idle:
        reason += (f"; batch {chosen.batch_size} is at most {COMFORTABLE_UTILISATION:.0%} busy even at the low end "
                   f"of its interval, so the lowest simulated p99 wins over capacity")
        if chosen.batch_size != best.batch_size:
            reason += (f" (batch {best.batch_size} could carry "
                       f"{speeds[best.batch_size].img_per_s / constraints.required_per_s:.1f}x the load)")
    if not queued:
        return Choice(chosen.batch_size, reason, verdicts)
    others = sorted((v.simulated for v in verdicts if v.feasible and v.batch_size != chosen.batch_size),
                    key=lambda p: (p.latency_p99_ms, p.batch_size))
    return Choice(chosen.batch_size, reason, verdicts, queue_delay_ms=verdict.queue_delay_ms,
                  simulated=verdict.simulated, candidates=(verdict.simulated, *others), by_latency=bool(idle))


def _reason(chosen: BatchMeasurement, verdict: BatchVerdict, best: BatchMeasurement,
            ordered: Sequence[BatchMeasurement], verdicts: Sequence[BatchVerdict], constraints: Constraints,
            tolerance: float, speeds: Mapping[int, SpeedEstimate], by_latency: bool = False) -> str:
    parts = [f"batch {chosen.batch_size}: {chosen.throughput_per_s:.1f} img/s{_interval(chosen)}"]
    first = ordered[0]
    if first.batch_size == 1 and chosen.batch_size != 1 and first.throughput_per_s > 0:
        parts[0] += f" ({chosen.throughput_per_s / first.throughput_per_s:.2f}x batch 1)"
    policy = verdict.simulated
    if policy is not None:
        latency = (f"queue delay {policy.queue_delay_ms:g} ms: simulated frame latency p50 "
                   f"{policy.latency_p50_ms:.1f} / p99 {policy.latency_p99_ms:.1f} ms with queueing")
    else:
        latency = f"worst frame latency {verdict.worst_latency_ms:.1f} ms"
    if verdict.fill_wait_ms and policy is None:
        latency += f" (fill wait {verdict.fill_wait_ms:.1f} + p99 {chosen.latency_p99_ms:.1f})"
    if constraints.latency_ms is not None:
        latency += f" within the {constraints.latency_ms:g} ms budget"
    parts.append(latency)
    if constraints.load is not None:
        parts.append(f"keeps up with {constraints.load.streams} x {constraints.load.fps:g} fps "
                     f"= {constraints.required_per_s:g} img/s")
        if policy is not None:
            parts[-1] += f" at {policy.utilisation:.0%} utilisation (headroom {policy.headroom:.0%})"
    if constraints.memory_budget_bytes is not None and chosen.memory_bytes is not None:
        parts.append(f"memory {human_bytes(chosen.memory_bytes)} of {human_bytes(constraints.memory_budget_bytes)}")
    text = ", ".join(parts)
    if best.batch_size == chosen.batch_size or by_latency:
        pass  # the capacity rule did not pass over a faster batch (under by_latency, choose() says why)
    elif policy is not None:
        text += (f"; batch {best.batch_size} could carry {speeds[best.batch_size].img_per_s:.1f} img/s under the "
                 f"load against {speeds[chosen.batch_size].img_per_s:.1f}, not measurably more (its interval's low "
                 f"end is not {tolerance:.0%} above the other's high end): the smaller batch wins")
    else:
        text += (f"; batch {best.batch_size} measured {best.throughput_per_s:.1f} img/s{_interval(best)}, not "
                 f"measurably faster (its interval's low end is not {tolerance:.0%} above the other's high end): the "
                 f"smaller batch wins "
                 f"(less latency and memory for the same work)")
    larger = [(m, v) for m, v in zip(ordered, verdicts) if m.batch_size > chosen.batch_size and not v.feasible]
    if larger:
        m, v = larger[0]
        text += f"; batch {m.batch_size} is out: {v.violations[0]}"
    return text


def _interval(m: BatchMeasurement) -> str:
    """' [95% low-high]' when the measurement has an interval, else ''."""
    if m.throughput_low_per_s is None or m.throughput_high_per_s is None:
        return ""
    return f" [95% {m.speed().span()}]"


def _infeasible_reason(ordered: Sequence[BatchMeasurement], verdicts: Sequence[BatchVerdict],
                       constraints: Constraints) -> str:
    if constraints.load is not None:
        fastest = max(ordered, key=lambda m: m.throughput_per_s)
        if fastest.throughput_per_s < constraints.load.images_per_s:
            return (f"no batch keeps up with {constraints.load.streams} streams x {constraints.load.fps:g} fps "
                    f"= {constraints.load.images_per_s:g} img/s: the most measured is "
                    f"{fastest.throughput_per_s:.1f} img/s (batch {fastest.batch_size})")
    lines = "; ".join(f"batch {v.batch_size}: {', '.join(v.violations)}" for v in verdicts)
    return f"no measured batch meets the constraints ({lines})"


def advise(measurements: Sequence[BatchMeasurement], constraints: Constraints, imgsz: int | None = None,
           precision: str = "fp32", device_type: str = "cpu",
           verdicts: Sequence[BatchVerdict] = ()) -> tuple[str, ...]:
    """What would make the constraints feasible, with numbers from the measurements.

    Compute is taken to scale with pixels (imgsz squared): a first guess to measure, not a promise.
    `verdicts` (one per measurement, as `choose` makes them): where they carry a queueing
    simulation, a frame's latency is its simulated p99 with queueing, not fill wait + p99, and a
    batch whose queue grows (utilisation 1 or more) is no candidate for a larger budget.

    Examples:
        >>> ms = [BatchMeasurement(1, 10, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 50.0),
        ...       BatchMeasurement(2, 10, 32.0, 32.0, 32.0, 32.0, 32.0, 16.0, 62.5)]
        >>> from visionbatch.infer.plan import StreamLoad
        >>> advise(ms, Constraints(load=StreamLoad(4, 25)), imgsz=640)[0]
        'more devices: 2 of these carry 4 x 25 fps, 2 streams each (one keeps up with 2 streams at 62.5 img/s, batch 2: 80% busy)'
    """
    ordered = sorted(measurements, key=lambda m: m.batch_size)
    advice: list[str] = []
    required = constraints.required_per_s
    fastest = max(ordered, key=lambda m: m.throughput_per_s)
    # the factor by which the work must get cheaper, from the binding constraint
    factor = 1.0
    if required is not None and fastest.throughput_per_s < required:
        advice.append(_more_devices(constraints.load, fastest))
        factor = max(factor, required / fastest.throughput_per_s)
    if constraints.latency_ms is not None:
        simulated = {v.batch_size: v.simulated for v in verdicts if v.simulated is not None}

        def frame_ms(m: BatchMeasurement) -> float:
            policy = simulated.get(m.batch_size)
            if policy is not None:
                return policy.latency_p99_ms
            return m.latency_p99_ms + constraints.fill_wait_ms(m.batch_size)

        quickest = min(ordered, key=frame_ms)
        if frame_ms(quickest) > constraints.latency_ms:
            wait = frame_ms(quickest) - quickest.latency_p99_ms  # fill wait, or queueing and batching
            policy = simulated.get(quickest.batch_size)
            if wait < constraints.latency_ms:
                factor = max(factor, quickest.latency_p99_ms / (constraints.latency_ms - wait))
            elif policy is None or policy.utilisation < 1.0:  # the wait alone is over the budget, near saturation:
                factor = max(factor, frame_ms(quickest) / constraints.latency_ms)  # it shrinks with the work at least
            # else the queue grows without bound, and its simulated latency says only how long the simulation ran:
            # the throughput the load needs (above) says how much the work must shrink
        relaxed = [m for m in ordered if _meets(m, constraints, latency=False)
                   and (m.batch_size not in simulated or simulated[m.batch_size].utilisation < 1.0)]
        if relaxed:
            smallest = min(relaxed, key=frame_ms)
            needed = frame_ms(smallest)
            if needed > constraints.latency_ms:
                advice.append(f"a larger latency budget: latency_ms={math.ceil(needed)} admits batch "
                              f"{smallest.batch_size}")
    if constraints.memory_budget_bytes is not None:
        relaxed = [m for m in ordered if _meets(m, constraints, memory=False) and m.memory_bytes is not None]
        if relaxed and all(m.memory_bytes > constraints.memory_budget_bytes for m in relaxed):
            smallest = min(relaxed, key=lambda m: m.memory_bytes)
            advice.append(f"a larger memory budget: {human_bytes(smallest.memory_bytes)} admits batch "
                          f"{smallest.batch_size}")
    if factor > 1.0 and imgsz:
        smaller = int(imgsz / math.sqrt(factor) // MIN_IMGSZ * MIN_IMGSZ)
        if MIN_IMGSZ <= smaller < imgsz:
            advice.append(f"a smaller input: imgsz={smaller} has {(smaller / imgsz) ** 2:.2f}x the pixels of "
                          f"imgsz={imgsz} (work must shrink {factor:.2f}x; compute scales roughly with pixels: "
                          f"measure it)")
        else:
            advice.append(f"a smaller or faster model: the work must shrink {factor:.2f}x, more than a smaller "
                          f"imgsz can give")
    if precision == "fp32":
        if device_type == "cuda":
            advice.append("fp16: measure again with half=True (TensorRT or PyTorch on this GPU)")
        else:
            advice.append("fp16 on a GPU: a CPU gains nothing from fp16; on a Jetson or CUDA GPU measure "
                          "backend=tensorrt half=True")
    return tuple(advice)


def _more_devices(load: StreamLoad, fastest: BatchMeasurement) -> str:
    """How many devices like this one carry the load, counted so that the sentence adds up.

    A stream is not split while a device can carry one: each device takes
    per_device = floor(throughput / fps) whole streams, so ceil(streams / per_device) devices carry
    them all (a device with k streams is k x fps / throughput busy). A device too slow for one
    stream gets its frames dealt round-robin with others: ceil(fps / throughput) devices per stream.

    Examples:
        >>> slow = BatchMeasurement(2, 10, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 15.0)
        >>> _more_devices(StreamLoad(4, 10), slow)  # the issue's case: 15 img/s carries 1 stream of 10 fps
        'more devices: 4 of these carry 4 x 10 fps, 1 stream each (one keeps up with 1 stream at 15.0 img/s, batch 2: 67% busy)'
    """
    per_device = math.floor(fastest.throughput_per_s / load.fps)
    measured = f"{fastest.throughput_per_s:.1f} img/s, batch {fastest.batch_size}"
    if per_device:
        devices = math.ceil(load.streams / per_device)
        streams = f"{per_device} stream{'s' * (per_device != 1)}"
        busy = per_device * load.fps / fastest.throughput_per_s
        return (f"more devices: {devices} of these carry {load.streams} x {load.fps:g} fps, {streams} each "
                f"(one keeps up with {streams} at {measured}: {busy:.0%} busy)")
    per_stream = math.ceil(load.fps / fastest.throughput_per_s)
    return (f"more devices: {load.streams * per_stream} of these carry {load.streams} x {load.fps:g} fps, "
            f"{per_stream} per stream with its frames dealt round-robin (one cannot keep up with a single "
            f"{load.fps:g} fps stream at {measured})")


def _meets(m: BatchMeasurement, constraints: Constraints, latency: bool = True, memory: bool = True) -> bool:
    """Feasibility with the latency or memory constraint left out."""
    relaxed = Constraints(
        latency_ms=constraints.latency_ms if latency else None,
        memory_budget_bytes=constraints.memory_budget_bytes if memory else None,
        load=constraints.load,
    )
    return judge(m, relaxed).feasible


def keep_earlier(fresh: Choice, earlier: EarlierChoice, measurements: Sequence[BatchMeasurement],
                 constraints: Constraints, service_ms: Mapping[int, Sequence[float]] | None = None,
                 tolerance: float = SPEED_TOLERANCE) -> Choice:
    """`fresh`, or the policy `earlier` chose for the same question while this run's measurements still carry it.

    Hysteresis against a device whose speed moves between runs: any rule with a threshold on speed
    (`COMFORTABLE_UTILISATION`, an interval's overlap) flips when a run lands on the other side of it. The
    earlier policy (its batch, with its queue delay under a load) is kept when, on this run's measurements,
    it meets every constraint (under a load, its simulated p99 within the budget and a queue that does not
    grow) and either it is at most `KEEP_UTILISATION` (85%) busy at the low end of its interval, or what it
    carries is not measurably less than what the fresh choice carries; and, when the load leaves headroom
    enough that the lowest latency chose (`Choice.by_latency`), the fresh policy's p99 is not lower than the
    earlier one's by more than `KEEP_P99_SHARE` (10%) of the latency budget (`_p99_margin_ms`). So a run that
    finds a comfortable policy with a clearly lower p99 moves to it, and one that finds a few milliseconds
    does not.
    Otherwise the fresh choice stands, and its reason says why the earlier one no longer holds. Nothing is
    kept when nothing is feasible.

    Returns:
        A choice whose `earlier` records the verdict; when kept, its candidates (for the replay) start with
        the kept policy, then the fresh choice's.

    Examples:
        >>> ms = [BatchMeasurement(b, 10, lat, lat, lat, lat, lat, lat / b, thr, throughput_low_per_s=thr * 0.99,
        ...                        throughput_high_per_s=thr * 1.01)
        ...       for b, lat, thr in [(1, 10.0, 100.0), (2, 16.0, 125.0), (4, 30.0, 133.0)]]
        >>> fresh = choose(ms, Constraints())  # 4: 131.7-134.3 img/s clears 2's 123.8-126.3 by 3%+
        >>> fresh.batch_size
        4
        >>> kept = keep_earlier(fresh, EarlierChoice(2, None, "runs/infer/infer", "2026-11-30T15:00:00Z"), ms,
        ...                     Constraints())
        >>> kept.batch_size, kept.earlier.kept, kept.earlier.why
        (4, False, 'it carries measurably less: 125.0 img/s against 133.0')
    """
    earlier = dataclasses.replace(earlier, alone_batch_size=fresh.batch_size, alone_queue_delay_ms=fresh.queue_delay_ms)
    if fresh.batch_size is None:
        return dataclasses.replace(fresh, earlier=dataclasses.replace(earlier, kept=False, why="nothing is feasible"))
    ordered = sorted(measurements, key=lambda m: m.batch_size)
    old = next((m for m in ordered if m.batch_size == earlier.batch_size), None)
    if old is None:
        return _not_kept(fresh, earlier, f"batch {earlier.batch_size} was not measured in this run")
    now = next(m for m in ordered if m.batch_size == fresh.batch_size)
    queued = constraints.load is not None and bool(service_ms) and fresh.simulated is not None
    if queued:
        delay = earlier.queue_delay_ms if earlier.queue_delay_ms is not None else 0.0
        if delay not in delay_grid_ms(old.batch_size, constraints.load.images_per_s):
            return _not_kept(fresh, earlier, f"its queue delay of {delay:g} ms is not one this load's policies "
                                             f"try")
        policy = simulate_policy(old, constraints, service_ms, delay)
        verdict = judge_queued(old, constraints, policy)
        old_speed, new_speed = carried(old, policy, constraints), carried(now, fresh.simulated, constraints)
        if (old.batch_size, delay) == (fresh.batch_size, fresh.queue_delay_ms):
            return dataclasses.replace(fresh, earlier=dataclasses.replace(earlier, kept=True, why=SAME_AS_ALONE))
    else:
        policy, verdict = None, judge(old, constraints)
        old_speed, new_speed = old.speed(), now.speed()
        if old.batch_size == fresh.batch_size:
            return dataclasses.replace(fresh, earlier=dataclasses.replace(earlier, kept=True, why=SAME_AS_ALONE))
    if not verdict.feasible:
        return _not_kept(fresh, earlier, verdict.violations[0])
    busy = busiest(old, policy, ordered) if policy is not None else None
    if (policy is not None and fresh.by_latency  # a policy means a queued choice: fresh.simulated is set
            and policy.latency_p99_ms - fresh.simulated.latency_p99_ms > _p99_margin_ms(fresh.simulated, constraints)):
        return _not_kept(fresh, earlier, f"its simulated p99 is {policy.latency_p99_ms:.1f} ms, and batch "
                                         f"{fresh.batch_size}, comfortably idle, gives {fresh.simulated.latency_p99_ms:.1f}")
    if busy is not None and busy <= KEEP_UTILISATION + 1e-9:
        why = (f"{busy:.0%} busy at the low end of its interval, within the {KEEP_UTILISATION:.0%} a kept "
               f"choice may reach (a new one: {COMFORTABLE_UTILISATION:.0%})")
    elif not measurably_faster(new_speed, old_speed, tolerance):
        why = (f"it carries {old_speed.img_per_s:.1f} img/s against {new_speed.img_per_s:.1f} for this run's own "
               f"choice, batch {fresh.batch_size}: not measurably less")
    else:
        busy_text = "" if busy is None else (f"{busy:.0%} busy at the low end of its interval, past the "
                                             f"{KEEP_UTILISATION:.0%} a kept choice may reach, and ")
        return _not_kept(fresh, earlier, f"{busy_text}it carries measurably less: {old_speed.img_per_s:.1f} img/s "
                                         f"against {new_speed.img_per_s:.1f}")
    record = dataclasses.replace(earlier, kept=True, why=why)
    reason = f"batch {old.batch_size}: {old.throughput_per_s:.1f} img/s{_interval(old)}, kept from an earlier run "
    reason += f"({earlier.describe()}): {why}"
    if policy is not None:
        reason += (f"; queue delay {policy.queue_delay_ms:g} ms: simulated frame latency p50 "
                   f"{policy.latency_p50_ms:.1f} / p99 {policy.latency_p99_ms:.1f} ms at {policy.utilisation:.0%} "
                   f"utilisation")
    if constraints.latency_ms is not None:
        reason += f", within the {constraints.latency_ms:g} ms budget"
    alone = f"batch {fresh.batch_size}"
    if fresh.simulated is not None:
        alone += f" (queue delay {fresh.queue_delay_ms:g} ms, simulated p99 {fresh.simulated.latency_p99_ms:.1f} ms)"
    reason += f". This run alone would choose {alone}; keep_choice=False chooses afresh"
    verdicts = tuple(verdict if v.batch_size == old.batch_size else v for v in fresh.verdicts)
    if policy is None:
        return dataclasses.replace(fresh, batch_size=old.batch_size, reason=reason, verdicts=verdicts,
                                   earlier=record)
    others = tuple(p for p in fresh.candidates if (p.batch_size, p.queue_delay_ms) != (old.batch_size, delay))
    return dataclasses.replace(fresh, batch_size=old.batch_size, reason=reason, verdicts=verdicts,
                               queue_delay_ms=policy.queue_delay_ms, simulated=policy, candidates=(policy, *others),
                               earlier=record)


def _p99_margin_ms(fresh: QueueStats, constraints: Constraints) -> float:
    """How much higher a kept policy's p99 may be than a comfortable fresh one's before it gives way: `P99_TIE`
    (10%) of the fresh p99, or `KEEP_P99_SHARE` of the latency budget when that is more (a difference the
    budget's owner would not notice is not worth a change of the deployed policy).

    Examples:
        >>> fresh = QueueStats(1, 0.0, 12.0, 24.0, 30.0, 0.5, 0.0, 1.0, 2000)
        >>> _p99_margin_ms(fresh, Constraints(latency_ms=500)), round(_p99_margin_ms(fresh, Constraints()), 2)
        (50.0, 2.4)
    """
    budget = constraints.latency_ms
    return max(P99_TIE * fresh.latency_p99_ms, KEEP_P99_SHARE * budget if budget is not None else 0.0)


def _not_kept(fresh: Choice, earlier: EarlierChoice, why: str) -> Choice:
    """`fresh`, its reason saying why `earlier` no longer holds."""
    return dataclasses.replace(fresh, reason=f"{fresh.reason}; an earlier run's choice ({earlier.describe()}) no "
                                             f"longer holds: {why}",
                               earlier=dataclasses.replace(earlier, kept=False, why=why))
