"""Timing decisions: repeated step timings, their confidence intervals, and when two speeds differ.

One module for every choice that rests on a measured speed (fit's "throughput saturates", and
infer's choice, its instance count and its precision comparison).

**The estimate.** A batch is timed in blocks of steps. The speed is `batch_size / mean(step
seconds)` over every step (images over time, not a mean of per-step speeds). Its interval is the
Student t interval at `CONFIDENCE` (95%, two-sided) of the mean step time, turned into images per
second: `batch_size / (mean +- t * sd / sqrt(n))`. Turning the interval over is exact (speed falls
as time grows), so it keeps its coverage; it is not symmetric. Steps of one block are correlated
(a busy moment slows all of them), so once there are two blocks or more the samples are the
blocks' mean step times, not the steps (`estimate_speed_blocks`): on a shared machine the speed
moves far more between blocks than within one, and an interval over the steps claimed a
precision the next run did not repeat. Timing the candidates in interleaved blocks
(`repeat_timings`) spreads slow spells over every candidate. With one sample there is no interval
(0 to unbounded); when the time interval reaches 0 the speed has no upper bound (`inf`, written
as null in JSON). A large outlier widens its own interval by more than it moves the mean (t > 1),
so it makes a decision harder to reach rather than a different one.

**The comparisons.** Two speeds differ only when their intervals do: the bounds of the ratio of
speeds `a / b` are taken from the intervals' ends (`a.low / b.high` to `a.high / b.low`). That
holds whenever both intervals do, and is stricter than an interval on the ratio itself: for two
intervals of equal width, about 0.3% of false calls on one side per look, rather than 2.5%:
- `measurably_faster(a, b)`: the ratio's lower bound exceeds 1 + `SPEED_TOLERANCE`;
- `as_fast(a, b)`: the ratio's lower bound is at least 1 - `SPEED_TOLERANCE`: `a` is shown to
  lose at most 3% to `b`.
`SPEED_TOLERANCE` (3%) is the practical margin: speeds closer than that count as the same.

`smallest_not_slower` is infer's rule: batches whose intervals overlap count as equal and the
smaller wins. `smallest_near_best` is the older point comparison (no interval), kept for the
comparison in fit's tests.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

SPEED_TOLERANCE = 0.03  # speeds within 3% of each other count as the same
CONFIDENCE = 0.95  # two-sided level of every interval here (the t table below is for it)

# Student t, 97.5th percentile, for 1 to 30 degrees of freedom (any statistics table)
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
          2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
          2.045, 2.042)
_Z_975 = 1.959964

MIN_BLOCKS = 3  # blocks per candidate before a decision: one block's steps share one moment of the machine
Label = TypeVar("Label", bound=Hashable)  # what a timed candidate is called: a batch size, a precision, a count


def t_quantile(degrees_of_freedom: int) -> float:
    """The Student t quantile for a two-sided 95% interval (the 97.5th percentile).

    From the table up to 30 degrees of freedom; beyond, the Cornish-Fisher expansion around the
    normal quantile (Abramowitz and Stegun 26.7.5), within 0.001 of the exact value there.

    Examples:
        >>> t_quantile(2), t_quantile(30), round(t_quantile(60), 3), round(t_quantile(10**6), 3)
        (4.303, 2.042, 2.0, 1.96)
    """
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees_of_freedom={degrees_of_freedom}: a t interval needs at least 2 samples")
    if degrees_of_freedom <= len(_T_975):
        return _T_975[degrees_of_freedom - 1]
    z, nu = _Z_975, float(degrees_of_freedom)
    return (z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * nu**3))


@dataclasses.dataclass(frozen=True, slots=True)
class SpeedEstimate:
    """Images per second at one batch size, from repeated timed steps, with its 95% interval.

    Attributes:
        batch_size: images per step.
        img_per_s: batch_size / mean step seconds.
        low_img_per_s: lower end of the interval (0 with a single sample).
        high_img_per_s: upper end (inf when unbounded: a single sample, or too few to bound it).
        samples: timed steps the estimate rests on.
    """

    batch_size: int
    img_per_s: float
    low_img_per_s: float
    high_img_per_s: float
    samples: int

    @property
    def relative_half_width(self) -> float:
        """Half the interval's width over the speed (inf when unbounded)."""
        return (self.high_img_per_s - self.low_img_per_s) / (2 * self.img_per_s)

    def describe(self) -> str:
        """The speed and its interval, as the plans print them.

        Examples:
            >>> SpeedEstimate(32, 250.0, 248.04, 251.96, 12).describe()
            '250.0 img/s (95% interval 248.0-252.0, 12 steps)'
            >>> SpeedEstimate(32, 250.0, 0.0, math.inf, 1).describe()
            '250.0 img/s (1 step: no interval)'
        """
        if self.samples < 2:
            return f"{self.img_per_s:.1f} img/s ({self.samples} step: no interval)"
        return f"{self.img_per_s:.1f} img/s ({CONFIDENCE:.0%} interval {self.span()}, {self.samples} steps)"

    def span(self) -> str:
        """The interval as every line and table prints it: 'low-high', 'unbounded' for an infinite top.

        Examples:
            >>> SpeedEstimate(32, 250.0, 248.04, 251.96, 12).span(), SpeedEstimate(4, 9.0, 1.25, math.inf, 2).span()
            ('248.0-252.0', '1.2-unbounded')
        """
        high = "unbounded" if math.isinf(self.high_img_per_s) else f"{self.high_img_per_s:.1f}"
        return f"{self.low_img_per_s:.1f}-{high}"


def estimate_speed(batch_size: int, step_s: Sequence[float]) -> SpeedEstimate:
    """The speed of `batch_size` from per-step seconds, with the t interval of the mean step time.

    Examples:
        >>> speed = estimate_speed(10, [0.09, 0.10, 0.11])  # mean 0.1 s, sd 0.01 s, t(2) = 4.303
        >>> round(speed.img_per_s, 3), round(speed.low_img_per_s, 3), round(speed.high_img_per_s, 3), speed.samples
        (100.0, 80.1, 133.055, 3)
        >>> point = estimate_speed(10, [0.1, 0.1, 0.1])  # exact timings: a point
        >>> round(point.low_img_per_s, 9) == round(point.high_img_per_s, 9) == 100.0
        True
    """
    if not step_s or min(step_s) <= 0:
        raise ValueError(f"step_s={list(step_s)[:5]}: a speed needs at least one positive step time")
    mean_s = statistics.fmean(step_s)
    speed = batch_size / mean_s
    if len(step_s) < 2:
        return SpeedEstimate(batch_size, speed, 0.0, math.inf, len(step_s))
    half_s = t_quantile(len(step_s) - 1) * statistics.stdev(step_s) / math.sqrt(len(step_s))
    high = batch_size / (mean_s - half_s) if mean_s > half_s else math.inf
    return SpeedEstimate(batch_size, speed, batch_size / (mean_s + half_s), high, len(step_s))


def estimate_speed_blocks(batch_size: int, blocks: Sequence[Sequence[float]]) -> SpeedEstimate:
    """The speed of `batch_size` from steps timed in blocks, with an interval over the blocks.

    Steps of one block share the machine's state of that moment (a busy neighbour, a clock
    change), so they are not independent samples, and an interval over them is too narrow: on a
    shared 2-core machine, one block's steps gave +-1% while the same batch moved 20% between
    blocks. The point is every step's mean, as in `estimate_speed`; the interval is the t interval
    over the blocks' mean step times, its relative width carried over to the point, or the steps'
    own interval where that is wider (two or three blocks can agree by chance, and the decisions
    look again after every block). With one block there is nothing between blocks to go on, and
    the steps' interval stands. `samples` counts steps either way.

    Examples:
        >>> steady = estimate_speed_blocks(10, [[0.125, 0.125], [0.125, 0.125], [0.125, 0.125]])
        >>> steady.img_per_s, steady.low_img_per_s, steady.high_img_per_s, steady.samples
        (80.0, 80.0, 80.0, 6)
        >>> drift = estimate_speed_blocks(10, [[0.09, 0.09], [0.10, 0.10], [0.11, 0.11]])  # each block exact
        >>> round(drift.low_img_per_s, 1), round(drift.high_img_per_s, 1)  # as wide as 3 single samples
        (80.1, 133.1)
        >>> estimate_speed_blocks(10, [[0.09, 0.10, 0.11]]) == estimate_speed(10, [0.09, 0.10, 0.11])
        True
    """
    blocks = [list(block) for block in blocks if len(block)]
    steps = [step for block in blocks for step in block]
    point = estimate_speed(batch_size, steps)
    if len(blocks) < 2:
        return point
    spread = estimate_speed(batch_size, [statistics.fmean(block) for block in blocks])
    low = min(point.low_img_per_s, point.img_per_s * spread.low_img_per_s / spread.img_per_s)
    high = max(point.high_img_per_s, point.img_per_s * spread.high_img_per_s / spread.img_per_s)
    return SpeedEstimate(batch_size, point.img_per_s, low, high, point.samples)


def speed_ratio_bounds(a: SpeedEstimate, b: SpeedEstimate) -> tuple[float, float]:
    """Bounds of speed(a) / speed(b), from the intervals' ends.

    Examples:
        >>> speed_ratio_bounds(SpeedEstimate(8, 100.0, 95.0, 105.0, 9), SpeedEstimate(4, 50.0, 48.0, 52.0, 9))
        (1.826..., 2.1875)
    """
    high = a.high_img_per_s / b.low_img_per_s if b.low_img_per_s > 0 else math.inf
    return a.low_img_per_s / b.high_img_per_s, high


def measurably_faster(a: SpeedEstimate, b: SpeedEstimate, tolerance: float = SPEED_TOLERANCE) -> bool:
    """Whether `a` is faster than `b` by more than `tolerance`, beyond both intervals.

    Examples:
        >>> fast, slow = SpeedEstimate(8, 120.0, 115.0, 125.0, 9), SpeedEstimate(4, 100.0, 95.0, 105.0, 9)
        >>> measurably_faster(fast, slow), measurably_faster(fast, slow, tolerance=0.1)
        (True, False)
    """
    return speed_ratio_bounds(a, b)[0] > 1 + tolerance


def as_fast(a: SpeedEstimate, b: SpeedEstimate, tolerance: float = SPEED_TOLERANCE) -> bool:
    """Whether `a` is shown to lose at most `tolerance` to `b`: its lower bound against `b`'s upper one.

    Examples:
        >>> same = SpeedEstimate(8, 100.0, 99.0, 101.0, 30), SpeedEstimate(4, 100.0, 99.5, 100.5, 30)
        >>> as_fast(*same), as_fast(SpeedEstimate(8, 100.0, 80.0, 125.0, 3), same[1])  # 99/100.5; 80/100.5
        (True, False)
    """
    return speed_ratio_bounds(a, b)[0] >= 1 - tolerance


def smallest_as_fast(speeds: Sequence[SpeedEstimate], tolerance: float = SPEED_TOLERANCE) -> SpeedEstimate:
    """Fit's rule: the smallest batch shown `as_fast` as every other, else the largest batch.

    Noise never moves the answer down: a smaller batch is chosen only when its interval, against
    every other interval, shows it within `tolerance` of the fastest.

    Examples:
        >>> flat = [SpeedEstimate(8, 100.0, 99.0, 101.0, 30), SpeedEstimate(32, 100.5, 99.8, 101.2, 30)]
        >>> smallest_as_fast(flat).batch_size
        8
        >>> noisy = [SpeedEstimate(8, 100.0, 80.0, 125.0, 3), SpeedEstimate(32, 100.5, 99.8, 101.2, 30)]
        >>> smallest_as_fast(noisy).batch_size
        32
    """
    ordered = sorted(speeds, key=lambda s: s.batch_size)
    for speed in ordered[:-1]:
        if all(as_fast(speed, other, tolerance) for other in ordered if other is not speed):
            return speed
    return ordered[-1]


def smallest_as_fast_settled(speeds: Sequence[SpeedEstimate], tolerance: float = SPEED_TOLERANCE) -> bool:
    """Whether more timing could still change `smallest_as_fast`'s answer.

    Settled when, going up from the smallest batch, a batch is shown as fast as every other before
    any batch is left undecided; a batch is decided against when its upper bound falls more than
    `tolerance` below another's lower bound (it can never be shown as fast).

    Examples:
        >>> settled = [SpeedEstimate(8, 80.0, 78.0, 82.0, 9), SpeedEstimate(32, 100.0, 98.0, 102.0, 9)]
        >>> smallest_as_fast_settled(settled)  # 82 < 0.97 x 98: batch 8 is slower, so 32
        True
        >>> smallest_as_fast_settled([SpeedEstimate(8, 99.0, 90.0, 110.0, 3), settled[1]])
        False
    """
    ordered = sorted(speeds, key=lambda s: s.batch_size)
    for speed in ordered[:-1]:
        others = [other for other in ordered if other is not speed]
        if all(as_fast(speed, other, tolerance) for other in others):
            return True
        if not any(speed.high_img_per_s < (1 - tolerance) * other.low_img_per_s for other in others):
            return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Timings:
    """Speeds from interleaved repeated timing, and why the repetition stopped.

    Attributes:
        speeds: one estimate per candidate: by batch, smallest first (`repeat_timings`), or in the
            order of the labels (`repeat_alike`, where candidates may share a batch size).
        blocks: blocks of steps timed, all candidates together.
        elapsed_s: seconds the repetition took (by the clock it was given).
        bound_s: the time bound it ran under.
        settled: True when it stopped because the decision was settled; False when the bound stopped it.
    """

    speeds: tuple[SpeedEstimate, ...]
    blocks: int
    elapsed_s: float
    bound_s: float
    settled: bool

    def speed(self, batch_size: int) -> SpeedEstimate | None:
        """The estimate at `batch_size` (`repeat_timings`' candidates; the first one when several share it)."""
        return next((s for s in self.speeds if s.batch_size == batch_size), None)


def time_calls(step: Callable[[], object], min_calls: int, min_seconds: float,
               clock: Callable[[], float] = time.perf_counter, max_calls: int | None = None,
               each: Callable[[object], None] | None = None) -> list[float]:
    """One timing block: call `step` until at least `min_calls` calls and `min_seconds` have passed (or
    `max_calls` calls, at least one); return each call's seconds. `each` receives every call's result.

    Examples:
        >>> now = [0.0]
        >>> def step():
        ...     now[0] += 0.1
        >>> [round(s, 3) for s in time_calls(step, 2, 0.35, clock=lambda: now[0])]
        [0.1, 0.1, 0.1, 0.1]
        >>> len(time_calls(step, 2, 10.0, clock=lambda: now[0], max_calls=3))
        3
    """
    calls: list[float] = []
    begin = clock()
    while True:
        t0 = clock()
        out = step()
        t1 = clock()
        calls.append(t1 - t0)
        if each is not None:
            each(out)
        if (max_calls is not None and len(calls) >= max_calls) or (len(calls) >= min_calls
                                                                     and t1 - begin >= min_seconds):
            return calls


def repeat_timings(
    time_block: Callable[[int], Sequence[float] | None],
    batch_sizes: Sequence[int],
    settled: Callable[[Sequence[SpeedEstimate]], bool],
    bound_s: float,
    clock: Callable[[], float] = time.perf_counter,
    min_blocks: int = MIN_BLOCKS,
) -> Timings | None:
    """Time `batch_sizes` in round-robin blocks until `settled(speeds)` or the time bound.

    `repeat_alike` with each batch size its own label and images a step; the speeds come back
    smallest batch first.

    Examples:
        >>> calls = []
        >>> def block(b):
        ...     calls.append(b)
        ...     return [b / 100.0] * 3  # exact timings: settled once each batch has MIN_BLOCKS blocks
        >>> timings = repeat_timings(block, [8, 32], smallest_as_fast_settled, bound_s=10.0)
        >>> calls, timings.settled, [s.img_per_s for s in timings.speeds]
        ([8, 32, 8, 32, 8, 32], True, [100.0, 100.0])
    """
    if not batch_sizes:
        raise ValueError("repeat_timings() needs at least one batch size")
    timed = repeat_alike(time_block, batch_sizes, lambda b: b,
                         lambda speeds: settled([speeds[b] for b in sorted(speeds)]), bound_s, clock, min_blocks)
    if timed is None:
        return None
    speeds, timings = timed
    return dataclasses.replace(timings, speeds=tuple(speeds[b] for b in sorted(speeds)))


def repeat_alike(
    time_block: Callable[[Label], Sequence[float] | None],
    labels: Sequence[Label],
    images: Callable[[Label], int],
    settled: Callable[[Mapping[Label, SpeedEstimate]], bool],
    bound_s: float,
    clock: Callable[[], float] = time.perf_counter,
    min_blocks: int = MIN_BLOCKS,
) -> tuple[dict[Label, SpeedEstimate], Timings] | None:
    """Time candidates (batch sizes, precisions, instance counts) in round-robin blocks until
    `settled(speeds)` or the time bound.

    Each call `time_block(label)` times one block of that candidate and returns its steps' seconds
    (None when nothing can be timed: then None is returned); a step carries `images(label)` images.
    Every candidate gets one block, whatever the bound; once each has `min_blocks` (the speed
    between blocks is what one block cannot show), before each block the speeds are checked with
    `settled`; and after the first round a block starts only when the candidate's previous block,
    run again, would end within `bound_s` of the start. Blocks go round the candidates in order, so a
    slow spell of the machine hits every one alike. Returns the speeds by label (intervals over the
    blocks, `estimate_speed_blocks`) and the `Timings` (speeds in the order of `labels`).

    Examples:
        >>> def block(label):
        ...     return {"fp32": [0.5, 0.5], "int8": [0.25, 0.25]}[label]  # seconds a step of 4 images
        >>> speeds, timings = repeat_alike(block, ["fp32", "int8"], lambda label: 4, lambda s: True, bound_s=1.0)
        >>> {k: (v.batch_size, v.img_per_s) for k, v in speeds.items()}, timings.blocks
        ({'fp32': (4, 8.0), 'int8': (4, 16.0)}, 6)
    """
    if not labels:
        raise ValueError("repeat_alike() needs at least one candidate")
    samples: dict[Label, list[list[float]]] = {label: [] for label in labels}
    block_s: dict[Label, float] = {}
    start = clock()

    def speeds() -> dict[Label, SpeedEstimate]:
        return {label: estimate_speed_blocks(images(label), samples[label]) for label in labels}

    def finish(done: bool) -> tuple[dict[Label, SpeedEstimate], Timings]:
        now = speeds()
        return now, Timings(tuple(now[label] for label in labels), blocks, clock() - start, bound_s, done)

    blocks = 0
    while True:
        for label in labels:
            if len(block_s) == len(samples):  # every candidate has a block: decide whether to go on
                if min(map(len, samples.values())) >= min_blocks and settled(speeds()):
                    return finish(True)
                if clock() - start + block_s[label] > bound_s:
                    return finish(False)
            began = clock()
            steps = time_block(label)
            if steps is None:
                return None
            block_s[label] = clock() - began
            samples[label].append(list(steps))
            blocks += 1


def smallest_not_slower(speeds: Sequence[SpeedEstimate], tolerance: float = SPEED_TOLERANCE) -> SpeedEstimate:
    """Infer's rule: the smallest batch no other batch is `measurably_faster` than.

    Batches whose intervals overlap (within `tolerance`) count as equally fast, and the smaller
    one wins: it has less latency and memory for the same work. Noise widens the intervals and
    so moves the answer down, never up (fit's `smallest_as_fast` goes the other way).

    Examples:
        >>> tight = [SpeedEstimate(1, 100.0, 98.0, 102.0, 30), SpeedEstimate(4, 140.0, 137.0, 143.0, 30),
        ...          SpeedEstimate(8, 141.0, 136.0, 146.0, 30)]
        >>> smallest_not_slower(tight).batch_size  # 8 overlaps 4; both beat 1
        4
        >>> wide = [SpeedEstimate(1, 100.0, 70.0, 150.0, 3), tight[1]]
        >>> smallest_not_slower(wide).batch_size  # 137 / 150 < 1.03: not shown faster
        1
    """
    ordered = sorted(speeds, key=lambda s: s.batch_size)
    if not ordered:
        raise ValueError("smallest_not_slower() needs at least one speed")
    return next(speed for speed in ordered
                if not any(measurably_faster(other, speed, tolerance) for other in ordered if other is not speed))


def smallest_near_best(speeds: Mapping[int, float], tolerance: float = SPEED_TOLERANCE) -> int:
    """The smallest key whose speed is within `tolerance` of the best speed (point values, no interval).

    Examples:
        >>> smallest_near_best({1: 100.0, 2: 190.0, 4: 197.0, 8: 200.0})
        4
        >>> smallest_near_best({1: 100.0, 2: 190.0, 4: 197.0, 8: 200.0}, tolerance=0.0)
        8
    """
    best = max(speeds.values())
    return min(key for key, speed in speeds.items() if speed >= (1 - tolerance) * best)
