"""Every PNG visionbatch writes reads at a glance: no negative memory, plain-number ticks on every value axis,
legends that hide no reading, every horizontal line inside its axis.

The figures are drawn from the results of real runs on the shipped shapes dataset (tests/data/plots:
`visionbatch sweep` and `fit` for target=rtx3060, `fit` on this CPU against a budget, `augcost`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from visionbatch.augment.figure import plot_report, report_figure
from visionbatch.augment.report import AugmentationReport
from visionbatch.fit.cache import plan_from_dict
from visionbatch.fit.plan import BatchPlan
from visionbatch.fit.plot import (
    batch_plan_figure,
    plot_batch_plan,
    plot_sweep,
    sweep_figure,
)
from visionbatch.fit.sweep import ResolutionSweep
from visionbatch.plotting import log_ticks
from visionbatch.units import MIB

DATA = Path(__file__).parent / "data" / "plots"


def load(cls: type, name: str) -> Any:
    return plan_from_dict(cls, json.loads((DATA / name).read_text()))


def sweep() -> ResolutionSweep:
    return load(ResolutionSweep, "sweep_rtx3060.json")


def report() -> AugmentationReport:
    return load(AugmentationReport, "augcost_cpu.json")


PLANS = ["plan_cpu.json", "plan_rtx3060.json"]


def drawn(fig: Any) -> Any:
    fig.draw_without_rendering()  # lays out the figure and sets its tick labels, as saving would
    return fig


def tick_labels(ax: Any, axis: str) -> list[str]:
    """The labels of the major ticks inside the axis's view."""
    low, high = sorted(getattr(ax, f"get_{axis}lim")())
    index = 0 if axis == "x" else 1
    return [t.get_text() for t in getattr(ax, f"{axis}axis").get_majorticklabels()
            if t.get_text() and low <= t.get_position()[index] <= high]


def value_axes(fig: Any) -> list[tuple[Any, str]]:
    """(axes, 'x' or 'y') for every numeric axis: category axes (bar names, imgsz labels) are not counted."""
    out = []
    for ax in fig.axes:
        for axis in ("x", "y"):
            labels = tick_labels(ax, axis)
            if labels and all(_number(label) is not None for label in labels) or getattr(ax, f"get_{axis}scale")() \
                    == "log":
                out.append((ax, axis))
    return out


def _number(text: str) -> float | None:
    try:
        return float(text.replace("\u2212", "-"))
    except ValueError:
        return None


def test_the_sweep_draws_no_negative_memory_per_image() -> None:
    result = sweep()
    # the fitted law itself runs negative below ~40 px (training) and ~240 px (validation): the case to guard
    assert result.surface.per_image(32) < 0 and result.val_surface.per_image(160) < 0
    right = drawn(sweep_figure(result)).axes[1]
    curves = [line for line in right.get_lines() if len(line.get_xdata()) > 2]
    assert len(curves) == 2
    for line in curves:
        assert min(line.get_ydata()) == 0.0  # clipped where the fit would go negative, not dropped
        assert all(y >= 0 for y in line.get_ydata())
    assert right.get_ylim()[0] == 0
    points = right.collections[-1].get_offsets()  # per image as read: batch 2 less batch 1, or a check at batch 2
    assert [y for _, y in points] == pytest.approx([result.surface.per_image(x) / MIB for x, _ in points], rel=0.02)


def test_the_sweep_shades_the_fitted_range_and_labels_its_bars() -> None:
    result = sweep()
    left, right = drawn(sweep_figure(result)).axes
    assert [t.get_text() for t in left.texts] == [str(row.max_batch_size) for row in result.rows]
    assert max(row.max_batch_size for row in result.rows) < left.get_ylim()[1]
    labels = right.get_legend_handles_labels()[1]
    assert "fitted range (320-1280 px); outside it, extrapolated" in labels
    assert "per training image (traced)" in labels and "traced" in left.get_title()


@pytest.mark.parametrize("name", PLANS)
def test_the_memory_curve_legend_hides_no_reading_and_lines_stay_inside(name: str) -> None:
    plan = load(BatchPlan, name)
    fig = drawn(batch_plan_figure(plan))
    ax = fig.axes[0]
    assert len(fig.legends) == 1 and not any(a.get_legend() for a in fig.axes)
    legend = fig.legends[0].get_window_extent()
    assert all(not legend.overlaps(a.get_window_extent()) for a in fig.axes)
    top = ax.get_ylim()[1]
    flat = [line.get_ydata()[0] for line in ax.get_lines() if len(set(line.get_ydata())) == 1]
    assert plan.budget_bytes / 2**30 in flat and all(0 < y < top for y in flat)
    read = "measured" if plan.measured else "traced"
    assert f"training step ({read})" in fig.legends[0].get_texts()[2].get_text()


def test_augcost_resolution_panel_has_plain_ticks_on_its_log_axis() -> None:
    fig = drawn(report_figure(report()))
    sizes = fig.axes[2]
    assert sizes.get_yscale() == "log"
    labels = tick_labels(sizes, "y")
    assert len(labels) >= 3 and all(_number(label) for label in labels), labels  # "10^1" alone was the defect
    values = [ms for fit in report().resolution for ms in fit.total_ms]
    low, high = sizes.get_ylim()
    assert low < min(values) and max(values) < high


def test_augcost_legends_sit_below_their_panels() -> None:
    fig = drawn(report_figure(report()))
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent()
        assert legend.y1 < ax.get_window_extent().y0  # under the axes (and their tick labels' row), over nothing


@pytest.mark.parametrize("figure", ["sweep", "augcost", *PLANS])
def test_every_value_axis_has_at_least_three_plain_number_ticks(figure: str) -> None:
    fig = drawn(sweep_figure(sweep()) if figure == "sweep" else report_figure(report()) if figure == "augcost"
                else batch_plan_figure(load(BatchPlan, figure)))
    axes = value_axes(fig)
    assert len(axes) >= len(fig.axes)
    for ax, axis in axes:
        labels = tick_labels(ax, axis)
        assert len(labels) >= 3, (ax.get_title(), axis, labels)
        assert all(_number(label) is not None for label in labels), (ax.get_title(), axis, labels)


def test_pngs_are_written(tmp_path: Path) -> None:
    for path in (plot_sweep(sweep(), tmp_path / "sweep.png"), plot_report(report(), tmp_path / "augcost.png"),
                 plot_batch_plan(load(BatchPlan, PLANS[0]), tmp_path / "memory_curve.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("low", "high"), [(3.6, 15.8), (0.11, 0.13), (1.0, 1e6), (40.0, 41.0), (7.0, 9.0),
                                         (1.2345, 1.2346)])
def test_log_ticks_give_at_least_three_round_numbers_in_range(low: float, high: float) -> None:
    ticks = log_ticks(low, high)
    assert len(ticks) >= 3 and ticks == sorted(set(ticks)) and all(low <= t <= high for t in ticks)
