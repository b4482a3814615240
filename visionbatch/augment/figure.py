"""augcost's outputs: `augcost.json` and `augcost.png` (per-transform cost, loader throughput, resolution)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from visionbatch.augment.report import AugmentationReport
from visionbatch.plotting import new_figure, plain_log_axis, save_figure
from visionbatch.results import write_json

JSON_NAME = "augcost.json"
PNG_NAME = "augcost.png"
MAX_BARS = 14


def save_report(report: AugmentationReport, folder: str | Path | None = None, *, name: str | None = None,
                project: str | Path | None = None) -> AugmentationReport:
    """Write `augcost.json` and `augcost.png`; return the report with `save_dir` set.

    Into `folder` when given (`visionbatch train augcost=True` uses the training run's folder), else
    into a new run folder, `runs/augcost/<name>/` (`name=`/`project=` as in Ultralytics).
    """
    if folder is None:
        from visionbatch.rundir import new_run_dir

        folder = new_run_dir("augcost", name, project)
    folder = Path(folder)
    report = dataclasses.replace(report, save_dir=str(folder))
    plot_report(report, folder / PNG_NAME)
    write_json(folder / JSON_NAME, report)
    return report


def plot_report(report: AugmentationReport, path: str | Path) -> Path:
    """Write the report's PNG and return its path."""
    return save_figure(report_figure(report), path)


def report_figure(report: AugmentationReport) -> Any:
    """Three panels: cost per transform (by phase), loader images/s against workers, cost against imgsz.

    Each legend sits below its panel, where it hides no bar or line.
    """
    fig, (bars, loader, sizes) = new_figure(16.0, 5.5, rows=1, cols=3)
    _bars(bars, report)
    _loader(loader, report)
    _sizes(sizes, report)
    fig.suptitle(f"visionbatch augcost: {report.task} {Path(report.data).parent.name}, imgsz {report.imgsz}, "
                 f"batch {report.batch_size}")
    return fig


def _bars(ax, report: AugmentationReport) -> None:
    phases = [p for p in (report.phase("mosaic"), report.phase("close_mosaic"), report.phase("val")) if p]
    if not phases:
        return
    names = [t.name for t in phases[0].transforms][:MAX_BARS]
    for other in phases[1:]:
        names += [t.name for t in other.transforms if t.name not in names][: max(0, MAX_BARS - len(names))]
    height = 0.8 / len(phases)
    for offset, phase in enumerate(phases):
        values = [(phase.cost(n).mean_ms if phase.cost(n) else 0.0) for n in names]
        ax.barh([i + offset * height for i in range(len(names))], values, height=height,
                label=f"{phase.phase} ({phase.total_ms:.1f} ms/img)")
    ax.set_yticks([i + height * (len(phases) - 1) / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per image (mean)")
    ax.set_title(f"cost per transform at imgsz {report.imgsz}")
    _legend_below(ax)


def _loader(ax, report: AugmentationReport) -> None:
    for cache in ("none", "ram", "disk"):
        points = sorted((s.workers_used, s.images_per_s) for s in report.loader
                        if s.cache == cache and s.images_per_s)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"cache={cache}")
    if report.step is not None:
        ax.axhline(report.step.images_per_s, color="black", linestyle="--",
                   label=f"training step ({report.step.source}): {report.step.images_per_s:.0f} img/s")
    ax.set_xticks(sorted({s.workers_used for s in report.loader if s.images_per_s}) or [0])
    ax.set_xlabel("DataLoader workers")
    ax.set_ylim(bottom=0)  # from zero, so two speeds compare by height
    ax.set_ylabel("images / s")
    ax.set_title(f"loader throughput (batch {report.batch_size})")
    if ax.get_legend_handles_labels()[0]:
        _legend_below(ax)


def _sizes(ax, report: AugmentationReport) -> None:
    for fit in report.resolution:
        ax.plot(fit.sizes, fit.total_ms, marker="o", label=f"{fit.phase}: {fit.growth}")
    ax.set_xlabel("imgsz (px)")
    ax.set_ylabel("ms per image (mean)")
    ax.set_title("cost against resolution")
    if report.resolution:
        # log-log: a cost growing as pixels^k is a straight line; plain numbers on both axes, not "10^1"
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(report.sizes), [str(s) for s in report.sizes])
        ax.minorticks_off()
        plain_log_axis(ax, "y", [ms for fit in report.resolution for ms in fit.total_ms])
        _legend_below(ax)


def _legend_below(ax) -> None:
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13))
