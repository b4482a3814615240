"""PNG plots without pyplot: no global backend or state is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
