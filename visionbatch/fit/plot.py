"""Fit's pictures: a BatchPlan's memory curve (samples, fits, budget, choice, throughput) and a sweep's
memory per image against image size."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionbatch.fit.curve import DEFAULT_SIGMAS
from visionbatch.fit.plan import (
    BatchPlan,
    MemorySurface,
    held_predicted,
    val_batch_size,
)
from visionbatch.plotting import legend_below, new_figure, save_figure
from visionbatch.units import MIB, human_bytes

if TYPE_CHECKING:  # the sweep writes its own plot: a type only, no import of the sweep
    from visionbatch.fit.sweep import ResolutionSweep

GIB = float(1 << 30)
BAND_SIGMAS = DEFAULT_SIGMAS  # the band drawn around the training fit: the planner's margin


def plot_batch_plan(plan: BatchPlan, path: str | Path) -> Path:
    """Write a PNG: peak memory against training batch (validation plotted at its training batch)."""
    return save_figure(batch_plan_figure(plan), path)


CARD_SCALE = 2.0  # the device total is drawn when it is at most this many times the rest of the plot's top


def batch_plan_figure(plan: BatchPlan) -> Any:
    """The memory curve as a matplotlib Figure, its legend below the axes so it never hides a reading.

    Every reading is drawn at its training batch (validation's too); where Ultralytics' cache rule
    holds training and validation together (`plan.held_after_validation`), that figure is drawn
    beside them; a batch that did not fit is crossed at the figure that was over the budget.
    """
    fig, ax = new_figure(8.0, 5.5)
    read = "measured" if plan.measured else "traced"
    train = [s for s in plan.samples if s.phase == "train"]
    failed = [s for s in train if not s.ok]
    ok = [s for s in train if s.ok]
    val = {s.batch_size: v for s in ok if (v := plan.val_sample(s.batch_size)) is not None and v.ok}
    held = {s.batch_size: h for s in ok if (h := plan.held_after_validation(s.batch_size)) is not None}
    top = max([s.batch_size for s in train] + [plan.max_batch_size]) * 1.15
    xs = [top * i / 200 for i in range(201)]
    curve = plan.curve
    mean = [curve.predict(x) / GIB for x in xs]
    band = [BAND_SIGMAS * curve.uncertainty(x) / GIB for x in xs]
    # the band is the plan's own margin: the ± its printed prediction and its reason quote (2σ)
    at_chosen = human_bytes(BAND_SIGMAS * curve.uncertainty(plan.batch_size))
    ax.fill_between(xs, [m - b for m, b in zip(mean, band)], [m + b for m, b in zip(mean, band)],
                    color="tab:blue", alpha=0.15, linewidth=0,
                    label=f"training fit ±{BAND_SIGMAS:g}σ (±{at_chosen} at batch {plan.batch_size})")
    ax.plot(xs, mean, color="tab:blue", linewidth=1.5, label=f"training fit ({curve.kind})")
    outside = outside_band(plan)
    inside = [s for s in ok if s.batch_size not in outside]
    ax.scatter([s.batch_size for s in inside], [s.peak_bytes / GIB for s in inside], color="tab:blue", zorder=3,
               label=f"training step ({read})")
    if outside:  # readings the band misses are drawn apart, never left to look like the fit's
        ax.scatter(outside, [plan.sample(b, "train").peak_bytes / GIB for b in outside], facecolors="white",
                   edgecolors="tab:red", linewidths=1.5, zorder=4,
                   label=f"training step outside the ±{BAND_SIGMAS:g}σ band")
    over = [s.batch_size for s in ok if not plan.fits(s.batch_size)]
    if over:  # crossed at the figure that did not fit: a cross under the budget line would say nothing
        ax.scatter(over, [failed_at(plan, b) / GIB for b in over], marker="x", s=60, color="tab:red", zorder=5,
                   label="did not fit (at the figure over the budget)" if held
                   else "did not fit (training or validation)")
    capped = plan.workload.val_images if plan.workload else None
    # no validation batch holds more than the split: said short, so the legend keeps to the figure's width
    at_val = f"validation at 2x batch, ≤{capped}" if capped else "validation at 2x batch"
    if plan.val_curve is not None:
        ax.plot(xs, [plan.val_curve.predict(val_batch_size(x, capped)) / GIB for x in xs], color="tab:orange",
                linestyle="--", linewidth=1.2, label=f"{at_val} (fit)")
    if val:
        ax.scatter(list(val), [v.peak_bytes / GIB for v in val.values()], marker="s", color="tab:orange",
                   zorder=3, label=f"{at_val} ({read})")
    if held:
        _draw_held(ax, plan, xs, held, capped, read)
    if failed:
        ax.scatter([s.batch_size for s in failed], [plan.budget_bytes / GIB] * len(failed), marker="x", s=60,
                   color="tab:red", zorder=4, label="out of memory")
    ax.axhline(plan.budget_bytes / GIB, color="tab:red", linewidth=1,
               label=f"budget {plan.memory_fraction:g} x usable ({plan.budget_bytes / GIB:.2f} GiB)")
    # the axis is scaled to what is drawn: the budget and every reading, the card only when it is near
    drawn = max(plan.budget_bytes, *(s.peak_bytes for s in ok), *(v.peak_bytes for v in val.values()),
                *held.values())
    if plan.total_bytes and plan.total_bytes <= CARD_SCALE * drawn:
        ax.axhline(plan.total_bytes / GIB, color="grey", linewidth=0.8, linestyle=":",
                   label=f"device total ({plan.total_bytes / GIB:.2f} GiB)")
        drawn = max(drawn, plan.total_bytes)
    elif plan.total_bytes:  # far above the budget: named in the legend, not drawn, or every point sits at the bottom
        ax.plot([], [], color="grey", linewidth=0.8, linestyle=":",
                label=f"device total {plan.total_bytes / GIB:.2f} GiB (above the axis)")
    ax.axvline(plan.batch_size, color="tab:green", linewidth=1.2, label=f"chosen batch {plan.batch_size}")
    if plan.max_batch_size != plan.batch_size:
        ax.axvline(plan.max_batch_size, color="tab:green", linewidth=1, linestyle="--",
                   label=f"largest that fits {plan.max_batch_size}")
    ax.set_xlim(0, top)
    ax.set_ylim(0, drawn / GIB * 1.08)
    ax.set_xlabel("training batch size (images)")
    ax.set_ylabel("peak memory (GiB)")
    work = plan.workload
    title = f"{work.model} {work.task} imgsz={work.max_imgsz or work.imgsz}" if work else "simulated step"
    ax.set_title(f"{title} on {plan.device_name} ({plan.device})", fontsize=10)
    axes = [ax]
    timed = [s for s in ok if s.step_s]
    if timed:
        right = ax.twinx()
        right.plot([s.batch_size for s in timed], [s.img_per_s for s in timed], color="tab:purple", marker="^",
                   linestyle=":", label="training throughput (img/s, right axis)")
        right.set_ylabel("training throughput (img/s)", color="tab:purple")
        right.set_ylim(0, max(s.img_per_s for s in timed) * 1.3)
        axes.append(right)
    legend_below(fig, axes)
    return fig


def _draw_held(ax: Any, plan: BatchPlan, xs: list[float], held: dict[int, int], val_images: int | None,
               read: str) -> None:
    """What training and validation hold together after the first validation: each probe's figure,
    and the curves' (training's fit plus validation's, the context once) where training stays under
    half the card, as the planner solves it (`planner._together`)."""
    if plan.val_curve is not None and plan.total_bytes:
        def together(x: float) -> float:  # nan above half the card: the cache is emptied, nothing is held
            held = held_predicted(plan.curve, plan.val_curve, x, val_batch_size(x, val_images), plan.context_bytes,
                                  plan.total_bytes)
            return math.nan if held is None else held / GIB

        ax.plot(xs, [together(x) for x in xs], color="tab:brown", linestyle="-.", linewidth=1.2,
                label="held together after validation (fit)")
    ax.scatter(list(held), [h / GIB for h in held.values()], marker="D", s=28, color="tab:brown", zorder=4,
               label=f"held together after validation ({read})")


def failed_at(plan: BatchPlan, batch_size: int) -> int:
    """Where a batch that ran but did not fit is crossed: the largest of its figures that `batch_fits`
    weighs (training's peak, validation's, and what the two hold together after validation).

    Examples:
        >>> from types import SimpleNamespace
        >>> from visionbatch.fit.plan import ProbeSample
        >>> samples = {("train", 86): ProbeSample(86, "train", True, 130, reserved_bytes=100),
        ...            ("val", 86): ProbeSample(172, "val", True, 70, reserved_bytes=40)}
        >>> plan = SimpleNamespace(sample=lambda b, phase: samples[("train", b)],
        ...                        val_sample=lambda b: samples[("val", b)],
        ...                        held_after_validation=lambda b: 170)
        >>> failed_at(plan, 86)
        170
    """
    val = plan.val_sample(batch_size)
    figures = [plan.sample(batch_size, "train").peak_bytes, plan.held_after_validation(batch_size) or 0]
    return max(figures + ([val.peak_bytes] if val is not None and val.ok else []))


def outside_band(plan: BatchPlan, sigmas: float = BAND_SIGMAS) -> list[int]:
    """Training batches whose reading lies outside the plan's curve ± `sigmas` standard deviations.

    Examples:
        >>> from types import SimpleNamespace
        >>> from visionbatch.fit.curve import fit_memory_curve
        >>> from visionbatch.fit.plan import ProbeSample
        >>> curve = fit_memory_curve([1, 2, 4], [100, 200, 400])
        >>> samples = [ProbeSample(b, "train", True, p) for b, p in ((1, 100), (2, 200), (4, 400), (8, 900))]
        >>> outside_band(SimpleNamespace(curve=curve, samples=samples))
        [8]
    """
    curve = plan.curve
    return sorted(s.batch_size for s in plan.samples if s.phase == "train" and s.ok
                  and abs(s.peak_bytes - curve.predict(s.batch_size)) > sigmas * curve.uncertainty(s.batch_size))


def plot_sweep(sweep: ResolutionSweep, path: str | Path) -> Path:
    """Two panels: the largest batch at each size; memory per image (fit and probes) at each size."""
    return save_figure(sweep_figure(sweep), path)


def sweep_figure(sweep: ResolutionSweep) -> Any:
    """The sweep as a matplotlib Figure: no curve below zero memory, the probed range shaded."""
    fig, (left, right) = new_figure(10.0, 4.8, 1, 2)
    sizes = [row.imgsz for row in sweep.rows]
    left.bar([str(s) for s in sizes], [row.max_batch_size for row in sweep.rows], color="tab:blue")
    for i, row in enumerate(sweep.rows):
        left.annotate(f"{row.max_batch_size}" + (" (val)" if row.limited_by == "val" else ""), (i, row.max_batch_size),
                      ha="center", va="bottom", fontsize=9)
    left.set_ylim(0, max([row.max_batch_size for row in sweep.rows] + [1]) * 1.12)  # room for the labels
    left.set_xlabel("imgsz (pixels)")
    left.set_ylabel("largest batch that fits (images)")
    traced = "" if sweep.measured else ", traced"
    left.set_title(f"budget {sweep.memory_fraction:g} x {sweep.usable_bytes / 2**30:.2f} GiB on "
                   f"{sweep.device_name}{traced}", fontsize=9)
    top = max(sizes) * 1.1
    xs = [top * i / 100 for i in range(101)]
    surface, val_surface = sweep.surface, sweep.val_surface
    right.axvspan(surface.imgsz_min, surface.imgsz_max, color="0.92", zorder=0,
                  label=f"fitted range ({surface.imgsz_min}-{surface.imgsz_max} px); outside it, extrapolated")
    right.plot(xs, memory_per_image_mib(surface, xs), color="tab:blue", label="per training image (fit)")
    right.plot(xs, memory_per_image_mib(val_surface, xs, images=2), color="tab:orange", linestyle="--",
               label="per training image, validation at 2x (fit)")
    probed = _probed_per_image(sweep)
    read = "measured" if sweep.measured else "traced"
    right.scatter(list(probed), [v / MIB for v in probed.values()], color="tab:blue", zorder=3,
                  label=f"per training image ({read})")
    right.set_xlabel("imgsz (pixels)")
    right.set_ylabel("memory per image (MiB)")
    right.set_xlim(0, top)
    right.set_ylim(bottom=0)
    right.set_title("what each image in the batch adds", fontsize=9)
    right.legend(fontsize=8, loc="upper left")
    return fig


def memory_per_image_mib(surface: MemorySurface, sizes: list[float], images: int = 1) -> list[float]:
    """MiB that `images` images add at each size, never below zero.

    The surface's `per_image_bytes + per_image_per_pixel_bytes * s^2` can have a negative intercept
    (fitted between the probed sizes); below them it would draw negative memory, which no image takes.

    Examples:
        >>> from visionbatch.fit.curve import fit_memory_surface
        >>> law = lambda b, s: 600 * MIB + b * (400 * s * s - 4 * MIB)
        >>> surface = fit_memory_surface([(b, s, law(b, s)) for b in (1, 2) for s in (320, 1280)])
        >>> [round(v, 1) for v in memory_per_image_mib(surface, [0, 64, 320])]
        [0.0, 0.0, 35.1]
    """
    return [max(0.0, images * surface.per_image(s) / MIB) for s in sizes]


def _probed_per_image(sweep: ResolutionSweep) -> dict[int, float]:
    """imgsz -> bytes per training image as read: batch 2 less batch 1 where both ran, else a check at batch 2
    less the surface's fixed part."""
    peaks: dict[int, dict[int, int]] = {}
    for imgsz, sample in sweep.samples:
        if sample.phase == "train" and sample.ok:
            peaks.setdefault(imgsz, {})[sample.batch_size] = sample.peak_bytes
    out = {}
    for imgsz, by_batch in sorted(peaks.items()):
        if 1 in by_batch and 2 in by_batch:
            out[imgsz] = float(by_batch[2] - by_batch[1])
        elif 2 in by_batch:
            out[imgsz] = (by_batch[2] - sweep.surface.fixed(imgsz)) / 2
    return {imgsz: max(0.0, value) for imgsz, value in out.items()}
