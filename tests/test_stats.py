"""The statistics of timing decisions: exact intervals, their coverage, the comparisons, the repetition.

The docstring examples of visionbatch.stats run in tests/test_doctests.py. Fit's use of these
rules under noise is in tests/test_fit_speed.py.
"""

from __future__ import annotations

import math
import random

import pytest

from visionbatch.results import to_jsonable
from visionbatch.stats import (
    SpeedEstimate,
    as_fast,
    estimate_speed,
    estimate_speed_blocks,
    measurably_faster,
    repeat_timings,
    smallest_as_fast,
    smallest_as_fast_settled,
    speed_ratio_bounds,
    t_quantile,
)


def speed(batch_size: int, mean: float, half: float, samples: int = 9) -> SpeedEstimate:
    return SpeedEstimate(batch_size, mean, mean - half, mean + half, samples)


def test_t_quantile_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    worst = max(abs(t_quantile(df) - scipy_stats.t.ppf(0.975, df)) for df in range(1, 500))
    assert worst < 1e-3
    with pytest.raises(ValueError, match="at least 2 samples"):
        t_quantile(0)


def test_interval_is_the_t_interval_of_the_mean_step_turned_over() -> None:
    # mean 0.2 s, sd 0.02 s over 4 steps: half width t(3) * 0.02 / 2 = 3.182 * 0.01 = 0.03182 s
    estimate = estimate_speed(8, [0.18, 0.22, 0.18, 0.22])
    half = 3.182 * statistics_sd([0.18, 0.22, 0.18, 0.22]) / 2
    assert estimate.img_per_s == pytest.approx(40.0)
    assert estimate.low_img_per_s == pytest.approx(8 / (0.2 + half))
    assert estimate.high_img_per_s == pytest.approx(8 / (0.2 - half))
    assert estimate.samples == 4
    assert estimate.relative_half_width == pytest.approx((8 / (0.2 - half) - 8 / (0.2 + half)) / 80)


def statistics_sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_interval_covers_the_true_speed_95_percent_of_the_time() -> None:
    # 4000 seeded experiments of 3 steps each (normal noise, 10%): the t interval covers the true
    # speed about 95% of the time; the normal quantile (1.96) in its place would cover only ~81%
    rng = random.Random(7)
    true_s, batch_size = 0.25, 16
    covered = 0
    for _ in range(4000):
        estimate = estimate_speed(batch_size, [rng.gauss(true_s, 0.025) for _ in range(3)])
        covered += estimate.low_img_per_s <= batch_size / true_s <= estimate.high_img_per_s
    assert 0.94 <= covered / 4000 <= 0.96


def test_too_few_samples_leave_the_speed_unbounded() -> None:
    one = estimate_speed(4, [0.5])
    assert (one.img_per_s, one.low_img_per_s, one.high_img_per_s, one.samples) == (8.0, 0.0, math.inf, 1)
    wild = estimate_speed(4, [0.1, 2.0])  # mean 1.05 s, half width 12.7 * 0.95 s: no upper bound
    assert wild.high_img_per_s == math.inf and wild.low_img_per_s == pytest.approx(4 / (1.05 + 12.706 * 0.95))
    assert to_jsonable(wild)["high_img_per_s"] is None  # JSON has no infinity
    assert wild.describe() == "3.8 img/s (95% interval 0.3-unbounded, 2 steps)"
    for bad in ([], [0.1, 0.0]):
        with pytest.raises(ValueError, match="at least one positive step time"):
            estimate_speed(4, bad)


def test_comparisons_need_the_intervals_to_separate() -> None:
    slow, fast = speed(8, 100.0, 2.0), speed(32, 110.0, 2.0)
    assert speed_ratio_bounds(fast, slow) == pytest.approx((108 / 102, 112 / 98))
    assert measurably_faster(fast, slow)  # 108 / 102 = 1.059 > 1.03
    assert not measurably_faster(slow, fast) and not measurably_faster(fast, slow, tolerance=0.06)
    assert not measurably_faster(speed(32, 110.0, 6.0), slow)  # 104 / 102 = 1.02: within the noise
    # as_fast: the lower end of one against the upper end of the other, 3% given away
    assert as_fast(speed(8, 100.0, 0.5), speed(32, 101.0, 0.5))  # 99.5 / 101.5 = 0.980
    assert not as_fast(speed(8, 100.0, 2.0), speed(32, 101.0, 2.0))  # 98 / 103 = 0.951
    assert as_fast(speed(8, 100.0, 2.0), speed(32, 101.0, 2.0), tolerance=0.05)
    assert not as_fast(SpeedEstimate(8, 100.0, 0.0, math.inf, 1), speed(32, 50.0, 1.0))  # no interval: no claim


def test_smallest_as_fast_compares_with_every_other_batch() -> None:
    # 8 is as fast as 137 but not as 32, which is as fast as both: 32
    speeds = [speed(8, 240.0, 1.0), speed(32, 300.0, 1.0), speed(137, 245.0, 1.0)]
    assert smallest_as_fast(speeds).batch_size == 32
    assert smallest_as_fast(list(reversed(speeds))).batch_size == 32  # order does not matter
    assert smallest_as_fast([speed(8, 250.0, 1.0), speed(32, 250.0, 1.0), speed(137, 250.0, 1.0)]).batch_size == 8
    # one noisy batch keeps the largest: nothing is shown as fast as it
    noisy = [speed(8, 250.0, 1.0), speed(32, 250.0, 60.0), speed(137, 250.0, 1.0)]
    assert smallest_as_fast(noisy).batch_size == 137
    assert smallest_as_fast([speed(4, 10.0, 1.0)]).batch_size == 4


def test_settled_when_no_more_timing_can_change_the_answer() -> None:
    largest = speed(137, 250.0, 2.0)
    assert smallest_as_fast_settled([speed(32, 250.0, 1.0), largest])  # 249 / 252 = 0.988: 32, for good
    assert smallest_as_fast_settled([speed(32, 200.0, 2.0), largest])  # 202 < 0.97 x 248: never as fast
    assert not smallest_as_fast_settled([speed(32, 245.0, 8.0), largest])  # could go either way
    # 8 is undecided, so 32's being as fast does not settle it: 8 could still win
    assert not smallest_as_fast_settled([speed(8, 245.0, 8.0), speed(32, 250.0, 1.0), largest])
    assert smallest_as_fast_settled([speed(8, 150.0, 8.0), speed(32, 250.0, 1.0), largest])
    assert smallest_as_fast_settled([largest])


class TickClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeat_timings_interleaves_until_settled() -> None:
    # batch 8 times 0.1 s a step (80 img/s), alternating +-20% within each block; batch 32 a steady
    # 0.25 s (128 img/s): 8's interval rules it out after two blocks, but no decision is taken before
    # every batch has MIN_BLOCKS (3) blocks
    clock, calls = TickClock(), []

    def block(batch_size: int) -> list[float]:
        calls.append(batch_size)
        clock.now += 1.0
        return [0.08, 0.12, 0.08, 0.12] if batch_size == 8 else [0.25, 0.25, 0.25]

    timings = repeat_timings(block, [8, 32], smallest_as_fast_settled, bound_s=100.0, clock=clock)
    assert calls == [8, 32, 8, 32, 8, 32]
    assert (timings.blocks, timings.elapsed_s, timings.settled, timings.bound_s) == (6, 6.0, True, 100.0)
    assert [s.samples for s in timings.speeds] == [12, 9]
    assert repeat_timings(block, [8, 32], smallest_as_fast_settled, bound_s=100.0, clock=clock,
                          min_blocks=2).blocks == 4  # with two blocks each enough: 8, 32, 8, 32
    assert timings.speed(8).img_per_s == pytest.approx(80.0) and timings.speed(64) is None


def test_blocks_that_disagree_widen_the_interval_the_steps_alone_would_not() -> None:
    # each block's steps agree exactly, the blocks do not (a machine that changes speed between blocks):
    # the steps' interval is a point, the blocks' one is not; steady blocks leave the steps' interval alone
    drifting = [[0.09] * 5, [0.10] * 5, [0.11] * 5]
    steps = estimate_speed(10, [step for block in drifting for step in block])
    blocks = estimate_speed_blocks(10, drifting)
    assert blocks.img_per_s == pytest.approx(steps.img_per_s) and blocks.samples == steps.samples == 15
    assert steps.relative_half_width < 0.05 < blocks.relative_half_width
    assert blocks.low_img_per_s == pytest.approx(10 / (0.1 + 4.303 * 0.01 / 3**0.5))
    steady = [[0.08, 0.12, 0.08, 0.12], [0.12, 0.08, 0.12, 0.08]]  # equal block means: the steps' interval
    assert estimate_speed_blocks(8, steady) == estimate_speed(8, [s for block in steady for s in block])
    assert estimate_speed_blocks(8, [[0.1, 0.2]]) == estimate_speed(8, [0.1, 0.2])


def test_repeat_timings_stops_at_the_bound_and_times_every_batch_once() -> None:
    clock = TickClock()
    costs = {4: 1.0, 16: 3.0}

    def block(batch_size: int) -> list[float]:
        clock.now += costs[batch_size]
        return [0.1, 0.3]

    never = lambda speeds: False  # noqa: E731
    # first round 0 -> 4 s; then 4: 5 s, 16: 8 s, 4: 9 s, 16: 12 s > 10: stop at 9 s
    timings = repeat_timings(block, [4, 16], never, bound_s=10.0, clock=clock)
    assert (timings.blocks, timings.elapsed_s, timings.settled) == (5, 9.0, False)
    # a bound shorter than one round still times each batch once
    clock.now = 0.0
    assert repeat_timings(block, [4, 16], never, bound_s=0.5, clock=clock).blocks == 2
    assert repeat_timings(lambda b: None, [4, 16], never, bound_s=10.0, clock=clock) is None  # nothing to time
    with pytest.raises(ValueError, match="at least one batch size"):
        repeat_timings(block, [], never, bound_s=10.0, clock=clock)
