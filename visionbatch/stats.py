"""When two measured speeds count as the same: the one rule fit and infer decide by.

A larger batch is worth its latency and memory only when it is measurably faster. Today that
means "within `SPEED_TOLERANCE` of the best counts as equal, and then the smallest batch wins".
"""

from __future__ import annotations

from collections.abc import Mapping

SPEED_TOLERANCE = 0.03  # speeds within 3% of the best count as equal


def smallest_near_best(speeds: Mapping[int, float], tolerance: float = SPEED_TOLERANCE) -> int:
    """The smallest key whose speed is within `tolerance` of the best speed.

    Examples:
        >>> smallest_near_best({1: 100.0, 2: 190.0, 4: 197.0, 8: 200.0})
        4
        >>> smallest_near_best({1: 100.0, 2: 190.0, 4: 197.0, 8: 200.0}, tolerance=0.0)
        8
    """
    best = max(speeds.values())
    return min(key for key, speed in speeds.items() if speed >= (1 - tolerance) * best)
