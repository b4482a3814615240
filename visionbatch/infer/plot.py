"""The sweep as a picture: throughput and p99 latency against batch size, budget and choice marked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from visionbatch.infer.plan import InferencePlan
from visionbatch.plotting import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_sweep(plan: InferencePlan, path: Path) -> Path:
    """Write the sweep plot as PNG and return its path."""
    return save_figure(sweep_figure(plan), path)


def sweep_figure(plan: InferencePlan) -> Figure:
    """The sweep as a matplotlib Figure; both axes reach every line drawn on them (the load, the budget)."""
    fig, ax = new_figure(7.5, 5.0)
    sizes = [m.batch_size for m in plan.measurements]
    throughput = [m.throughput_per_s for m in plan.measurements]
    p99 = [m.latency_p99_ms for m in plan.measurements]
    constraints = plan.constraints

    ax.plot(sizes, throughput, marker="o", color="C0", label="throughput (img/s)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (img/s)", color="C0")
    # the axis reaches the load line even when the load exceeds every measured throughput
    ax.set_ylim(0, _top([*throughput, constraints.required_per_s]))
    if constraints.required_per_s is not None:
        ax.axhline(constraints.required_per_s, color="C2", linestyle=":",
                   label=f"load {constraints.required_per_s:g} img/s")

    lat = ax.twinx()
    lat.plot(sizes, p99, marker="s", color="C1", label="p99 batch latency (ms)")
    worst = [v.worst_latency_ms for v in plan.verdicts] if constraints.load is not None else []
    simulated = any(v.simulated is not None for v in plan.verdicts)
    if constraints.load is not None:
        lat.plot(sizes, worst, marker="s", color="C1", linestyle="--",
                 label="frame p99 with queueing, simulated (ms)" if simulated else "fill wait + p99 (ms)")
    if constraints.latency_ms is not None:
        lat.axhline(constraints.latency_ms, color="C3", linestyle=":", label=f"latency budget {constraints.latency_ms:g} ms (right axis)")
    lat.set_ylabel("latency (ms)", color="C1")
    # more headroom than the throughput axis, so a budget and a load that top their axes do not overlap; an
    # overloaded batch's queue (seconds, growing without bound) runs off the top rather than flattening the rest
    cap = 3 * max([*p99, constraints.latency_ms or 0.0]) if simulated else math.inf
    lat.set_ylim(0, _top([*p99, *(w for w in worst if w <= cap), constraints.latency_ms], headroom=0.25))

    if plan.batch_size is not None:
        ax.axvline(plan.batch_size, color="0.5", alpha=0.5, linewidth=6, label=f"chosen: batch {plan.batch_size}")
    handles = ax.get_legend_handles_labels()
    more = lat.get_legend_handles_labels()
    fig.legend(handles[0] + more[0], handles[1] + more[1], loc="outside lower center", ncols=3, fontsize=8)
    extra = ", end to end" if plan.end_to_end else ""
    ax.set_title(f"{Path(plan.model).name} {plan.imgsz}px, {plan.backend} {plan.precision} on "
                 f"{plan.device_name or plan.device}{extra}", fontsize=9)
    return fig


def _top(values: list[float | None], headroom: float = 0.08) -> float:
    """The top of an axis from 0: `headroom` above the largest value, 1 when there is none.

    Examples:
        >>> _top([40.0, None, 250.0])
        270.0
    """
    largest = max((v for v in values if v is not None), default=0.0)
    return largest * (1 + headroom) if largest > 0 else 1.0
