"""visionbatch.fit.curve: exact fits and exact answers."""

from __future__ import annotations

import pytest

from visionbatch.fit.curve import (
    fit_memory_curve,
    interpolate_batch,
    monotonic_violations,
    solve_batch,
)

MIB = 1 << 20


def test_exact_line() -> None:
    curve = fit_memory_curve([1, 2, 4, 8], [1100, 1200, 1400, 1800])
    assert (curve.fixed_bytes, curve.per_image_bytes, curve.quadratic_bytes) == (1000.0, 100.0, 0.0)
    assert curve.residual_bytes == 0.0 and curve.kind == "linear"
    assert (curve.points, curve.batch_min, curve.batch_max, curve.mean_batch, curve.sxx) == (4, 1, 8, 3.75, 28.75)
    assert curve.predict(10) == 2000.0
    assert curve.extrapolates(10) and not curve.extrapolates(5)


def test_two_points_define_a_line() -> None:
    curve = fit_memory_curve([1, 2], [300 * MIB, 350 * MIB], noise_floor_bytes=2 * MIB)
    assert curve.per_image_bytes == 50 * MIB and curve.fixed_bytes == 250 * MIB
    assert curve.uncertainty(100) == 2 * MIB  # no residual to go on: the noise floor


def test_noisy_line_has_residual_and_a_wider_interval_far_away() -> None:
    curve = fit_memory_curve([1, 2, 3, 4], [10, 21, 29, 40])
    assert curve.per_image_bytes == pytest.approx(9.8)
    assert curve.fixed_bytes == pytest.approx(0.5)
    assert curve.residual_bytes == pytest.approx(0.9486832981)  # sqrt(1.8 / 2): residuals -0.3, 0.9, -0.9, 0.3
    assert curve.uncertainty(40) > curve.uncertainty(2.5) > curve.residual_bytes


def test_real_curvature_is_kept() -> None:
    batches = [1, 2, 4, 8, 16]
    peaks = [1000 + 10 * b + 2 * b * b for b in batches]
    curve = fit_memory_curve(batches, peaks)
    assert curve.kind == "quadratic"
    assert (curve.fixed_bytes, curve.per_image_bytes, curve.quadratic_bytes) == pytest.approx((1000, 10, 2))
    assert curve.residual_bytes == pytest.approx(0, abs=1e-6)


def test_curvature_within_noise_is_ignored() -> None:
    # a bend of 1 byte over readings of ~1 MB is noise, not curvature
    curve = fit_memory_curve([1, 2, 4], [1_000_100, 1_000_200, 1_000_401])
    assert curve.kind == "linear"


def test_concave_readings_stay_linear() -> None:
    curve = fit_memory_curve([1, 2, 4, 8], [100, 190, 350, 600])
    assert curve.kind == "linear"  # flattening memory: a line over-predicts, which is the safe side


@pytest.mark.parametrize("budget, below, sigmas, answer", [
    (2000, None, 2.0, 10),
    (2099, None, 2.0, 10),
    (2100, None, 2.0, 11),
    (2000, 8, 2.0, 7),
    (1099, None, 2.0, 0),
    (10**9, None, 2.0, 1 << 16),
])
def test_solve_exact(budget, below, sigmas, answer) -> None:
    curve = fit_memory_curve([1, 2, 4, 8], [1100, 1200, 1400, 1800])
    assert solve_batch(curve, budget, sigmas, below=below) == answer


def test_solve_keeps_a_margin_of_sigmas() -> None:
    curve = fit_memory_curve([1, 2], [1100, 1200], noise_floor_bytes=50)
    assert solve_batch(curve, 2000, sigmas=0) == 10
    assert solve_batch(curve, 2000, sigmas=2) == 9  # 1000 + 100 b + 2 * 50 <= 2000


def test_solve_caps() -> None:
    flat = fit_memory_curve([1, 2], [500, 500])
    assert solve_batch(flat, 1000, cap=300) == 300
    assert solve_batch(flat, 1000, below=5) == 4


def test_fit_refuses_one_batch_size() -> None:
    with pytest.raises(ValueError, match="two or more batch sizes"):
        fit_memory_curve([4, 4], [1, 2])


def test_monotonic_violations() -> None:
    assert monotonic_violations([1, 2, 4, 8], [100, 150, 140, 300]) == [(2, 4)]
    assert monotonic_violations([8, 1, 4], [300, 100, 200]) == []


@pytest.mark.parametrize("low, high, budget, answer", [
    ((10, 1000.0), (20, 2000.0), 1500.0, 15),
    ((10, 1000.0), (20, 2000.0), 1999.0, 19),
    ((10, 1000.0), (20, 2000.0), 1001.0, 11),  # kept strictly inside the bracket
    ((10, 1000.0), (11, 1100.0), 1050.0, 10),
    ((10, 1000.0), (20, 900.0), 1500.0, 15),  # readings not increasing: halve
])
def test_interpolate_batch(low, high, budget, answer) -> None:
    assert interpolate_batch(low, high, budget) == answer
