"""The sweep as a picture: throughput and p99 latency against batch size, budget and choice marked."""

from __future__ import annotations

from pathlib import Path

from visionbatch.infer.plan import InferencePlan
from visionbatch.plotting import new_figure, save_figure


def plot_sweep(plan: InferencePlan, path: Path) -> Path:
    """Write the sweep plot as PNG and return its path."""
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
    ax.set_ylim(bottom=0)
    if constraints.required_per_s is not None:
        ax.axhline(constraints.required_per_s, color="C2", linestyle=":",
                   label=f"load {constraints.required_per_s:g} img/s")

    lat = ax.twinx()
    lat.plot(sizes, p99, marker="s", color="C1", label="p99 batch latency (ms)")
    if constraints.load is not None:
        worst = [v.worst_latency_ms for v in plan.verdicts]
        lat.plot(sizes, worst, marker="s", color="C1", linestyle="--", label="fill wait + p99 (ms)")
    if constraints.latency_ms is not None:
        lat.axhline(constraints.latency_ms, color="C3", linestyle=":", label=f"budget {constraints.latency_ms:g} ms")
    lat.set_ylabel("latency (ms)", color="C1")
    lat.set_ylim(bottom=0)

    if plan.batch_size is not None:
        ax.axvline(plan.batch_size, color="0.5", alpha=0.5, linewidth=6, label=f"chosen: batch {plan.batch_size}")
    handles = ax.get_legend_handles_labels()
    more = lat.get_legend_handles_labels()
    fig.legend(handles[0] + more[0], handles[1] + more[1], loc="outside lower center", ncols=3, fontsize=8)
    extra = ", end to end" if plan.end_to_end else ""
    ax.set_title(f"{Path(plan.model).name} {plan.imgsz}px, {plan.backend} {plan.precision} on "
                 f"{plan.device_name or plan.device}{extra}", fontsize=9)
    return save_figure(fig, path)
