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

from visionbatch.checks import STRIDE
from visionbatch.fit.plan import MemoryCurve, MemorySurface

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
    return tuple(_solve(matrix, t))  # type: ignore[return-value]


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for a small square system."""
    n = len(b)
    m = [row[:] + [v] for row, v in zip(a, b)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if m[pivot][col] == 0:
            raise ValueError("the readings do not determine the fit (too few distinct points)")
        m[col], m[pivot] = m[pivot], m[col]
        for row in range(col + 1, n):
            factor = m[row][col] / m[col][col]
            for k in range(col, n + 1):
                m[row][k] -= factor * m[col][k]
    out = [0] * n
    for row in reversed(range(n)):
        out[row] = (m[row][n] - sum(m[row][k] * out[k] for k in range(row + 1, n))) / m[row][row]
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


def extrapolate_batch(low: tuple[int, float], high: tuple[int, float], budget_bytes: float) -> int | None:
    """The batch where the straight line through two readings that fitted meets the budget, at or
    above the larger of them: the local slope, for a search bracketed by an out-of-memory error
    that left no reading (None when the readings do not grow).

    Examples:
        >>> extrapolate_batch((27, 1440.0), (67, 2540.0), 3072.0)
        86
        >>> extrapolate_batch((67, 2540.0), (86, 2920.0), 3072.0), extrapolate_batch((4, 500.0), (8, 500.0), 900.0)
        (93, None)
    """
    (b_low, m_low), (b_high, m_high) = low, high
    if b_high <= b_low or m_high <= m_low:
        return None
    return b_high + max(0, math.floor((budget_bytes - m_high) * (b_high - b_low) / (m_high - m_low)))


def fit_memory_surface(points: Sequence[tuple[int, int, float]]) -> MemorySurface:
    """Fit peak memory over (batch, imgsz): fixed + fixed_per_pixel s^2 + b (per_image + per_image_per_pixel s^2).

    Args:
        points: (batch size, image size in pixels, peak bytes) readings: at least two batch sizes
            at each of at least two image sizes.

    Raises:
        ValueError: the readings cannot determine the four coefficients.

    Examples:
        >>> pts = [(b, s, 1000 + 0.01 * s * s + b * (50 + 0.5 * s * s)) for b in (1, 2) for s in (100, 200)]
        >>> surface = fit_memory_surface(pts)
        >>> round(surface.per_image(300)), round(surface.predict(4, 300))
        (45050, 182100)
    """
    if len({s for _, s, _ in points}) < 2 or len({b for b, _, _ in points}) < 2 or len(points) < 4:
        raise ValueError("a memory surface needs readings at two or more batch sizes and two or more image sizes")
    rows = [[Fraction(1), Fraction(s) ** 2, Fraction(b), Fraction(b) * Fraction(s) ** 2] for b, s, _ in points]
    ys = [Fraction(y) for _, _, y in points]
    normal = [[sum(r[i] * r[j] for r in rows) for j in range(4)] for i in range(4)]
    rhs = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(4)]
    coef = _solve(normal, rhs)
    residuals = [y - sum(c * x for c, x in zip(coef, r)) for r, y in zip(rows, ys)]
    dof = len(points) - 4
    residual = math.sqrt(sum(r * r for r in residuals) / dof) if dof > 0 else 0.0
    return MemorySurface(
        fixed_bytes=float(coef[0]), fixed_per_pixel_bytes=float(coef[1]), per_image_bytes=float(coef[2]),
        per_image_per_pixel_bytes=float(coef[3]), residual_bytes=float(residual), points=len(points),
        imgsz_min=min(s for _, s, _ in points), imgsz_max=max(s for _, s, _ in points),
        batch_min=min(b for b, _, _ in points), batch_max=max(b for b, _, _ in points),
    )


def surface_max_batch(surface: MemorySurface, imgsz: int, budget_bytes: float, cap: int = 1 << 16) -> int:
    """The largest batch whose predicted peak at `imgsz` fits the budget (0 if not even 1).

    Examples:
        >>> pts = [(b, s, 1000 + b * s * s) for b in (1, 2) for s in (10, 20)]
        >>> surface_max_batch(fit_memory_surface(pts), 30, 10_000)
        10
    """
    room = budget_bytes - surface.fixed(imgsz)
    each = surface.per_image(imgsz)
    if room < each:
        return 0
    return cap if each <= 0 else min(cap, int(room // each))


def surface_max_imgsz(surface: MemorySurface, batch_size: int, budget_bytes: float, stride: int = STRIDE,
                      cap: int = 8192) -> int:
    """The largest image size (a multiple of `stride`) at which `batch_size` fits the budget (0 if none).

    Examples:
        >>> pts = [(b, s, 1000 + b * s * s) for b in (1, 2) for s in (10, 20)]
        >>> surface_max_imgsz(fit_memory_surface(pts), 4, 1000 + 4 * 64 * 64, stride=32)
        64
    """
    room = budget_bytes - surface.fixed_bytes - batch_size * surface.per_image_bytes
    per_pixel = surface.fixed_per_pixel_bytes + batch_size * surface.per_image_per_pixel_bytes
    if room <= 0:
        return 0
    side = cap if per_pixel <= 0 else math.isqrt(int(room / per_pixel))
    side = min(side, cap) // stride * stride
    while side > 0 and surface.predict(batch_size, side) > budget_bytes:  # float edge of the square root
        side -= stride
    return side
