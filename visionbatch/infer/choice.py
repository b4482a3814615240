"""Choose the inference batch: pure functions over measured batches and constraints.

A batch b is feasible when
  - its worst frame latency, fill wait + p99 batch latency, is within `latency_ms`, where the
    fill wait at a load of N streams x F fps is (b - 1) / (N x F) (the first frame of a batch waits
    for the others);
  - its throughput keeps up with the load: images/s >= N x F;
  - its memory reading is within the memory budget.
Among feasible batches the one with the most throughput wins, except that throughputs within
`tolerance` (3%) of the best count as equal and then the smallest batch wins: timing noise is
larger than that, and a smaller batch has less latency and memory for the same work.
When nothing is feasible, `advise` says what would be, with numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from visionbatch.checks import MIN_IMGSZ
from visionbatch.infer.plan import BatchMeasurement, BatchVerdict, Choice, Constraints
from visionbatch.stats import SPEED_TOLERANCE, smallest_near_best
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


def choose(measurements: Sequence[BatchMeasurement], constraints: Constraints,
           tolerance: float = SPEED_TOLERANCE, imgsz: int | None = None, precision: str = "fp32",
           device_type: str = "cpu") -> Choice:
    """The batch with the most throughput that meets every constraint.

    Args:
        measurements: measured batches (any order).
        constraints: latency budget, memory budget, stream load.
        tolerance: throughputs within this fraction of the best count as equal; the smallest
            such batch wins.
        imgsz, precision, device_type: what ran, for the advice when nothing is feasible.

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
    verdicts = tuple(judge(m, constraints) for m in ordered)
    feasible = [m for m, v in zip(ordered, verdicts) if v.feasible]
    if not feasible:
        reason = _infeasible_reason(ordered, verdicts, constraints)
        advice = advise(ordered, constraints, imgsz=imgsz, precision=precision, device_type=device_type)
        return Choice(None, reason, verdicts, advice)
    best = max(feasible, key=lambda m: m.throughput_per_s)
    smallest = smallest_near_best({m.batch_size: m.throughput_per_s for m in feasible}, tolerance)
    chosen = next(m for m in feasible if m.batch_size == smallest)
    verdict = verdicts[ordered.index(chosen)]
    return Choice(chosen.batch_size, _reason(chosen, verdict, best, ordered, verdicts, constraints, tolerance), verdicts)


def _reason(chosen: BatchMeasurement, verdict: BatchVerdict, best: BatchMeasurement,
            ordered: Sequence[BatchMeasurement], verdicts: Sequence[BatchVerdict], constraints: Constraints,
            tolerance: float) -> str:
    parts = [f"batch {chosen.batch_size}: {chosen.throughput_per_s:.1f} img/s"]
    first = ordered[0]
    if first.batch_size == 1 and chosen.batch_size != 1 and first.throughput_per_s > 0:
        parts[0] += f" ({chosen.throughput_per_s / first.throughput_per_s:.2f}x batch 1)"
    latency = f"worst frame latency {verdict.worst_latency_ms:.1f} ms"
    if verdict.fill_wait_ms:
        latency += f" (fill wait {verdict.fill_wait_ms:.1f} + p99 {chosen.latency_p99_ms:.1f})"
    if constraints.latency_ms is not None:
        latency += f" within the {constraints.latency_ms:g} ms budget"
    parts.append(latency)
    if constraints.load is not None:
        parts.append(f"keeps up with {constraints.load.streams} x {constraints.load.fps:g} fps "
                     f"= {constraints.required_per_s:g} img/s")
    if constraints.memory_budget_bytes is not None and chosen.memory_bytes is not None:
        parts.append(f"memory {human_bytes(chosen.memory_bytes)} of {human_bytes(constraints.memory_budget_bytes)}")
    text = ", ".join(parts)
    if best.batch_size != chosen.batch_size:
        text += (f"; batch {best.batch_size} measured {best.throughput_per_s:.1f} img/s, within "
                 f"{tolerance:.0%}: the smaller batch wins (less latency and memory for the same work)")
    larger = [(m, v) for m, v in zip(ordered, verdicts) if m.batch_size > chosen.batch_size and not v.feasible]
    if larger:
        m, v = larger[0]
        text += f"; batch {m.batch_size} is out: {v.violations[0]}"
    return text


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
           precision: str = "fp32", device_type: str = "cpu") -> tuple[str, ...]:
    """What would make the constraints feasible, with numbers from the measurements.

    Compute is taken to scale with pixels (imgsz squared): a first guess to measure, not a promise.

    Examples:
        >>> ms = [BatchMeasurement(1, 10, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 50.0),
        ...       BatchMeasurement(2, 10, 32.0, 32.0, 32.0, 32.0, 32.0, 16.0, 62.5)]
        >>> from visionbatch.infer.plan import StreamLoad
        >>> advise(ms, Constraints(load=StreamLoad(4, 25)), imgsz=640)[0]
        'more devices: 2 of these carry 4 x 25 fps (one keeps up with 2 streams at 62.5 img/s, batch 2)'
    """
    ordered = sorted(measurements, key=lambda m: m.batch_size)
    advice: list[str] = []
    required = constraints.required_per_s
    fastest = max(ordered, key=lambda m: m.throughput_per_s)
    # the factor by which the work must get cheaper, from the binding constraint
    factor = 1.0
    if required is not None and fastest.throughput_per_s < required:
        load = constraints.load
        devices = math.ceil(required / fastest.throughput_per_s)
        per_device = math.floor(fastest.throughput_per_s / load.fps)
        carry = (f"one keeps up with {per_device} stream{'s' * (per_device != 1)}" if per_device
                 else f"one cannot keep up with a single {load.fps:g} fps stream")
        advice.append(f"more devices: {devices} of these carry {load.streams} x {load.fps:g} fps "
                      f"({carry} at {fastest.throughput_per_s:.1f} img/s, batch {fastest.batch_size})")
        factor = max(factor, required / fastest.throughput_per_s)
    if constraints.latency_ms is not None:
        quickest = min(ordered, key=lambda m: m.latency_p99_ms + constraints.fill_wait_ms(m.batch_size))
        worst = quickest.latency_p99_ms + constraints.fill_wait_ms(quickest.batch_size)
        if worst > constraints.latency_ms:
            factor = max(factor, quickest.latency_p99_ms / max(constraints.latency_ms
                                                               - constraints.fill_wait_ms(quickest.batch_size), 1e-9))
        relaxed = [m for m in ordered if _meets(m, constraints, latency=False)]
        if relaxed:
            smallest = min(relaxed, key=lambda m: m.latency_p99_ms + constraints.fill_wait_ms(m.batch_size))
            needed = smallest.latency_p99_ms + constraints.fill_wait_ms(smallest.batch_size)
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


def _meets(m: BatchMeasurement, constraints: Constraints, latency: bool = True, memory: bool = True) -> bool:
    """Feasibility with the latency or memory constraint left out."""
    relaxed = Constraints(
        latency_ms=constraints.latency_ms if latency else None,
        memory_budget_bytes=constraints.memory_budget_bytes if memory else None,
        load=constraints.load,
    )
    return judge(m, relaxed).feasible
