"""Pure maths: fit peak memory against batch size and solve for the largest batch under a budget.

No torch, no device: plain functions over plain numbers, tested with exact values.

The model is `peak(b) = fixed + per_image * b` (YOLO training memory is linear in the batch:
activations, their gradients and the loss buffers all scale with it). With three or more batch
sizes the fit also tries a quadratic term and keeps it only when the curvature is real: positive
(memory growing faster than linear) and larger than both 1% of the predicted peak and three
times the noise floor at the largest batch measured. Extrapolating a convex curve with a line
would under-predict, so the curved fit is the conservative one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from visionbatch.plans import MemoryCurve

CURVATURE_SHARE = 0.01  # curvature must add this share of the peak at the largest batch to count
CURVATURE_NOISE_MULTIPLE = 3.0
DEFAULT_SIGMAS = 2.0  # predictions must clear the budget by two standard deviations


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _linear(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    mx, my = _mean(xs), _mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - slope * mx, slope


def _quadratic(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares (c0, c1, c2) for y = c0 + c1 x + c2 x^2, by the normal equations (3x3)."""
    s = [sum(x**k for x in xs) for k in range(5)]
    t = [sum(y * x**k for x, y in zip(xs, ys)) for k in range(3)]
    matrix = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]]
    return tuple(_solve3(matrix, t))  # type: ignore[return-value]


def _solve3(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for a 3x3 system."""
    m = [row[:] + [v] for row, v in zip(a, b)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for row in range(col + 1, 3):
            factor = m[row][col] / m[col][col]
            for k in range(col, 4):
                m[row][k] -= factor * m[col][k]
    out = [0.0, 0.0, 0.0]
    for row in (2, 1, 0):
        out[row] = (m[row][3] - sum(m[row][k] * out[k] for k in range(row + 1, 3))) / m[row][row]
    return out


def fit_memory_curve(
    batch_sizes: Sequence[int], peak_bytes: Sequence[float], noise_floor_bytes: float = 0.0
) -> MemoryCurve:
    """Fit peak memory against batch size.

    Args:
        batch_sizes: batch sizes that ran (at least two distinct values).
        peak_bytes: the peak measured at each.
        noise_floor_bytes: the smallest prediction uncertainty to assume (e.g. the CUDA
            allocator's 2 MiB block granularity); readings that fit a line exactly are not
            taken as exact.

    Returns:
        The fitted `MemoryCurve`.

    Raises:
        ValueError: fewer than two distinct batch sizes, or mismatched lengths.

    Examples:
        >>> curve = fit_memory_curve([1, 2, 4], [300, 400, 600])
        >>> curve.fixed_bytes, curve.per_image_bytes, curve.kind
        (200.0, 100.0, 'linear')
    """
    if len(batch_sizes) != len(peak_bytes):
        raise ValueError(f"{len(batch_sizes)} batch sizes but {len(peak_bytes)} readings")
    # exact rational arithmetic: a handful of points, and fits that are exact stay exact
    xs, ys = [Fraction(b) for b in batch_sizes], [Fraction(p) for p in peak_bytes]
    if len(set(xs)) < 2:
        raise ValueError(f"need readings at two or more batch sizes, got {sorted(set(batch_sizes))}")
    fixed, slope = _linear(xs, ys)
    curvature = Fraction(0)
    if len(set(xs)) >= 3:
        c0, c1, c2 = _quadratic(xs, ys)
        top = max(xs)
        curved_top = c0 + c1 * top + c2 * top**2
        threshold = max(CURVATURE_SHARE * float(curved_top), CURVATURE_NOISE_MULTIPLE * noise_floor_bytes)
        if c2 > 0 and c2 * top**2 > threshold:
            fixed, slope, curvature = c0, c1, c2
    predicted = [fixed + slope * x + curvature * x**2 for x in xs]
    params = 3 if curvature else 2
    dof = len(xs) - params
    residual = math.sqrt(sum((y - p) ** 2 for y, p in zip(ys, predicted)) / dof) if dof > 0 else 0.0
    mean_x = _mean(xs)
    return MemoryCurve(
        fixed_bytes=float(fixed),
        per_image_bytes=float(slope),
        quadratic_bytes=float(curvature),
        residual_bytes=float(residual),
        noise_floor_bytes=float(noise_floor_bytes),
        points=len(xs),
        batch_min=int(min(xs)),
        batch_max=int(max(xs)),
        mean_batch=float(mean_x),
        sxx=float(sum((x - mean_x) ** 2 for x in xs)),
    )


def solve_batch(
    curve: MemoryCurve,
    budget_bytes: float,
    sigmas: float = DEFAULT_SIGMAS,
    below: int | None = None,
    cap: int = 1 << 16,
) -> int:
    """The largest batch whose predicted peak, plus `sigmas` standard deviations, fits the budget.

    Args:
        curve: the fitted curve.
        budget_bytes: memory the batch may use.
        sigmas: safety margin in standard deviations of the prediction.
        below: a batch known not to fit (a failed probe): the answer stays under it.
        cap: the largest answer considered.

    Returns:
        The batch size, or 0 when not even batch 1 fits.

    Examples:
        >>> curve = fit_memory_curve([1, 2, 4], [300, 400, 600])
        >>> solve_batch(curve, 1000), solve_batch(curve, 1000, below=7), solve_batch(curve, 250)
        (8, 6, 0)
    """
    high = min(cap, below - 1) if below is not None else cap

    def fits(b: int) -> bool:
        return curve.predict(b) + sigmas * curve.uncertainty(b) <= budget_bytes

    if high < 1 or not fits(1):
        return 0
    if curve.per_image_bytes <= 0 and curve.quadratic_bytes <= 0:
        return high  # memory does not grow with the batch: only the bound limits it
    low = 1  # fits(low) holds; find the largest b in [low, high] that fits
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def monotonic_violations(batch_sizes: Sequence[int], peak_bytes: Sequence[float]) -> list[tuple[int, int]]:
    """Pairs (smaller batch, larger batch) where the larger batch read less memory.

    Examples:
        >>> monotonic_violations([1, 2, 4, 8], [100, 150, 140, 300])
        [(2, 4)]
    """
    ordered = sorted(zip(batch_sizes, peak_bytes))
    return [(a, b) for (a, pa), (b, pb) in zip(ordered, ordered[1:]) if b > a and pb < pa]


def interpolate_batch(low: tuple[int, float], high: tuple[int, float], budget_bytes: float) -> int:
    """The batch where the straight line through two readings meets the budget, kept strictly inside.

    Used to bisect between the largest batch that fitted and the smallest that did not, faster
    than halving when the readings are known.

    Examples:
        >>> interpolate_batch((10, 1000.0), (20, 2000.0), 1500.0)
        15
        >>> interpolate_batch((10, 1000.0), (11, 1100.0), 1050.0)
        10
    """
    (b_low, m_low), (b_high, m_high) = low, high
    if b_high - b_low <= 1:
        return b_low
    if m_high <= m_low:
        guess = (b_low + b_high) // 2
    else:
        guess = math.floor(b_low + (budget_bytes - m_low) * (b_high - b_low) / (m_high - m_low))
    return min(max(guess, b_low + 1), b_high - 1)
