"""The resolution sweep's picture: largest batch and memory per image against image size."""

from __future__ import annotations

from pathlib import Path

from visionbatch.plots import new_figure, save_figure
from visionbatch.sweep import ResolutionSweep

MIB = float(1 << 20)


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
