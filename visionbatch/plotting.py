"""PNG plots without pyplot: no global backend or state is touched."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# round numbers for a log axis, sparsest first: the first series that puts enough ticks in range wins
_LOG_MANTISSAS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0,
                                                                             6.0, 8.0))


def new_figure(width_in: float = 7.0, height_in: float = 4.5, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    """A matplotlib Figure with its axes (one Axes, or an array for rows x cols)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(rows, cols)
    return fig, axes


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` as PNG, atomically, and return the path."""
    from visionbatch.files import atomic_write_with

    return atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def legend_below(fig: Any, axes: Sequence[Any], ncols: int = 3) -> Any:
    """One legend for the lines of every axis in `axes` (a twin axis's too), below the plot, where it hides nothing."""
    handles, labels = [], []
    for ax in axes:
        more = ax.get_legend_handles_labels()
        handles += more[0]
        labels += more[1]
    return fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8)


def log_ticks(low: float, high: float, at_least: int = 3) -> list[float]:
    """Round numbers between `low` and `high` (both > 0) for a log axis, at least `at_least` of them.

    Matplotlib's default log axis labels only powers of ten, so a range within one decade shows one
    label ("10^1") or none.

    Examples:
        >>> log_ticks(3.6, 15.8)
        [5.0, 7.0, 10.0, 15.0]
        >>> log_ticks(0.8, 900)
        [1.0, 10.0, 100.0]
        >>> log_ticks(10.0, 11.0)
        [10.2, 10.5, 10.8]
    """
    for mantissas in _LOG_MANTISSAS:
        ticks = [round(m * 10.0**e, 12) for e in range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1)
                 for m in mantissas if low <= m * 10.0**e <= high]
        if len(ticks) >= at_least:
            return ticks
    # a range too narrow for round numbers: evenly spaced in log, away from the ends, with the fewest digits
    # (3 or more) that keep them distinct and in range
    spaced = [low * (high / low) ** ((i + 0.5) / at_least) for i in range(at_least)]
    for digits in range(3, 16):
        ticks = [float(f"{t:.{digits}g}") for t in spaced]
        if len(set(ticks)) == at_least and all(low <= t <= high for t in ticks):
            return ticks
    return spaced


def plain_log_axis(ax: Any, axis: str, values: Sequence[float], at_least: int = 3) -> None:
    """Log-scale `axis` ('x' or 'y') of `ax` around `values`, with plain-number ticks (`log_ticks`) and no minor ones.

    Values at or below zero have no place on a log axis: the axis stays linear when nothing else is left.
    """
    from matplotlib.ticker import NullLocator

    positive = [v for v in values if v > 0]
    if not positive:
        return
    low, high = min(positive), max(positive)
    pad = max(1.15, (high / low) ** 0.05)  # a little room beyond the outermost points, in log space
    low, high = low / pad, high * pad
    ticks = log_ticks(low, high, at_least)
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"set_{axis}lim")(low, high)
    getattr(ax, f"set_{axis}ticks")(ticks, [f"{t:g}" for t in ticks])
    getattr(ax, f"{axis}axis").set_minor_locator(NullLocator())
