"""Fit's pictures: a BatchPlan's memory curve (samples, fits, budget, choice, throughput) and a sweep's
memory per image against image size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from visionbatch.fit.plan import BatchPlan
from visionbatch.plotting import new_figure, save_figure
from visionbatch.units import MIB

if TYPE_CHECKING:  # the sweep writes its own plot: a type only, no import of the sweep
    from visionbatch.fit.sweep import ResolutionSweep

GIB = float(1 << 30)


def plot_batch_plan(plan: BatchPlan, path: str | Path) -> Path:
    """Write a PNG: peak memory against training batch (validation at 2x plotted at its training batch)."""
    fig, ax = new_figure(8.0, 5.0)
    train = [s for s in plan.samples if s.phase == "train"]
    val = [s for s in plan.samples if s.phase == "val" and s.ok]
    failed = [s for s in train if not s.ok]
    top = max([s.batch_size for s in train] + [plan.max_batch_size]) * 1.15
    xs = [top * i / 200 for i in range(201)]
    curve = plan.curve
    mean = [curve.predict(x) / GIB for x in xs]
    band = [2 * curve.uncertainty(x) / GIB for x in xs]
    ax.fill_between(xs, [m - b for m, b in zip(mean, band)], [m + b for m, b in zip(mean, band)],
                    color="tab:blue", alpha=0.15, linewidth=0, label="training fit ±2σ")
    ax.plot(xs, mean, color="tab:blue", linewidth=1.5, label=f"training fit ({curve.kind})")
    ok = [s for s in train if s.ok]
    ax.scatter([s.batch_size for s in ok], [s.peak_bytes / GIB for s in ok], color="tab:blue", zorder=3,
               label="training step (measured)")
    if plan.val_curve is not None:
        ax.plot(xs, [plan.val_curve.predict(2 * x) / GIB for x in xs], color="tab:orange", linestyle="--",
                linewidth=1.2, label="validation at 2x batch (fit)")
    if val:
        ax.scatter([s.batch_size / 2 for s in val], [s.peak_bytes / GIB for s in val], marker="s", color="tab:orange",
                   zorder=3, label="validation at 2x batch (measured)")
    if failed:
        ax.scatter([s.batch_size for s in failed], [plan.budget_bytes / GIB] * len(failed), marker="x", s=60,
                   color="tab:red", zorder=4, label="out of memory")
    ax.axhline(plan.budget_bytes / GIB, color="tab:red", linewidth=1,
               label=f"budget {plan.memory_fraction:g} x usable ({plan.budget_bytes / GIB:.2f} GiB)")
    if plan.total_bytes:
        ax.axhline(plan.total_bytes / GIB, color="grey", linewidth=0.8, linestyle=":", label="device total")
    ax.axvline(plan.batch_size, color="tab:green", linewidth=1.2, label=f"chosen batch {plan.batch_size}")
    if plan.max_batch_size != plan.batch_size:
        ax.axvline(plan.max_batch_size, color="tab:green", linewidth=1, linestyle="--",
                   label=f"largest that fits {plan.max_batch_size}")
    ax.set_xlim(0, top)
    ax.set_ylim(0, max(plan.budget_bytes, max(s.peak_bytes for s in ok)) / GIB * 1.15)
    ax.set_xlabel("training batch size (images)")
    ax.set_ylabel("peak memory (GiB)")
    work = plan.workload
    title = f"{work.model} {work.task} imgsz={work.max_imgsz or work.imgsz}" if work else "simulated step"
    ax.set_title(f"{title}"
                 f" on {plan.device_name} ({plan.device})", fontsize=10)
    timed = [s for s in ok if s.step_s]
    if timed:
        right = ax.twinx()
        right.plot([s.batch_size for s in timed], [s.img_per_s for s in timed], color="tab:purple", marker="^",
                   linestyle=":", label="throughput (img/s)")
        right.set_ylabel("training throughput (img/s)", color="tab:purple")
        right.set_ylim(0, max(s.img_per_s for s in timed) * 1.3)
        right.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def plot_sweep(sweep: ResolutionSweep, path: str | Path) -> Path:
    """Two panels: the largest batch at each size; memory per image (fit and probes) at each size."""
    fig, (left, right) = new_figure(10.0, 4.2, 1, 2)
    sizes = [row.imgsz for row in sweep.rows]
    left.bar([str(s) for s in sizes], [row.max_batch_size for row in sweep.rows], color="tab:blue")
    for i, row in enumerate(sweep.rows):
        left.annotate(f"{row.max_batch_size}" + (" (val)" if row.limited_by == "val" else ""), (i, row.max_batch_size),
                      ha="center", va="bottom", fontsize=9)
    left.set_xlabel("imgsz (pixels)")
    left.set_ylabel("largest batch that fits")
    left.set_title(f"{sweep.memory_fraction:g} x {sweep.usable_bytes / 2**30:.2f} GiB on {sweep.device_name}",
                   fontsize=9)
    top = max(sizes) * 1.1
    xs = [top * i / 100 for i in range(1, 101)]
    right.plot(xs, [sweep.surface.per_image(x) / MIB for x in xs], color="tab:blue", label="per training image (fit)")
    right.plot(xs, [2 * sweep.val_surface.per_image(x) / MIB for x in xs], color="tab:orange", linestyle="--",
               label="per training image, validation at 2x (fit)")
    probed = sorted({s for s, sample in sweep.samples})
    right.scatter(probed, [sweep.surface.per_image(s) / MIB for s in probed], color="tab:blue", zorder=3,
                  label="probed sizes")
    right.set_xlabel("imgsz (pixels)")
    right.set_ylabel("memory per image (MiB)")
    right.set_xlim(0, top)
    right.legend(fontsize=8)
    return save_figure(fig, path)
