"""`visionbatch sweep DATA.yaml sizes=320,640,1024,1280 [key=value ...]`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from visionbatch.cli.args import positional, read_batch
from visionbatch.console import Progress, table
from visionbatch.fit.sweep import ResolutionSweep
from visionbatch.keys import help_block, read_keys
from visionbatch.ultralytics.args import ultralytics_defaults
from visionbatch.units import human_bytes

SUMMARY = "largest batch at each image size, and the largest image size at a batch"
USAGE = """visionbatch sweep DATA.yaml sizes=320,640,1024,1280 [key=value ...]

Probes batch 1 and 2 at the smallest and largest size (training, and validation at 2x), fits
peak = F + G*s^2 + b*(A + B*s^2), and answers for every size without more probing; sizes in
between are probed once each as a check of the fit. Writes runs/sweep/<name>/sweep.json and
sweep.png. imgsz= (the training size), when given, is always among the sizes swept. batch=16 (the training
batch) answers the inverse: the largest imgsz at batch 16; batch=auto, a fraction (0.85) or -1
set memory_fraction, as in fit.

visionbatch keys:
""" + help_block("sweep")


@dataclass(frozen=True, slots=True)
class SweepRun:
    sweep: ResolutionSweep
    folder: str
    files: tuple[str, ...]


def run(tokens: Sequence[str]) -> SweepRun:
    from visionbatch.fit.sweep import SWEEP_JSON, SWEEP_PNG, sweep_resolution

    data, pairs = positional(tokens, "sweep", "DATA", "data", "visionbatch sweep path/to/data.yaml sizes=320,640")
    pairs = read_keys("sweep", pairs, ultralytics_defaults())
    pairs = read_batch(pairs)  # the training batch: a size asks for the largest imgsz, a fit request the fraction
    with Progress("visionbatch sweep") as progress:  # each probe on stderr as it runs; a bar on a terminal
        sweep = sweep_resolution(data, save=True, progress=progress, **pairs)  # the library makes the run folder
    folder = Path(sweep.save_dir)
    return SweepRun(sweep, str(folder), (str(folder / SWEEP_JSON), str(folder / SWEEP_PNG)))


def show(result: SweepRun) -> str:
    sweep = result.sweep
    rows = []
    for row in sweep.rows:
        check = "-"
        if row.check_bytes:
            error = (row.check_predicted_bytes - row.check_bytes) / row.check_bytes
            check = f"{human_bytes(row.check_bytes)} ({error:+.1%})"
        rows.append([row.imgsz, row.max_batch_size, row.limited_by, human_bytes(row.per_image_bytes),
                     human_bytes(row.fixed_bytes), human_bytes(row.predicted_bytes), check])
    work = sweep.workload
    head = (f"visionbatch sweep: {work.model} {work.task}, labels padded to {work.labels_per_image}/image, "
            f"AMP {'on' if work.amp else 'off'}; {sweep.device} ({sweep.device_name}), budget "
            f"{sweep.memory_fraction:g} x {human_bytes(sweep.usable_bytes)} = {human_bytes(sweep.budget_bytes)}"
            + ("" if sweep.measured else " [predicted]"))
    lines = ["", table(["imgsz", "max batch", "limit", "per image", "fixed", "peak at max",
                        "check at batch 2 (fit error)"], rows, title=head), ""]
    if sweep.batch_size is not None:
        note = " (extrapolated)" if sweep.max_imgsz_extrapolated else ""
        lines.append(f"largest imgsz at batch {sweep.batch_size}: {sweep.max_imgsz}{note}")
    lines += [f"warning: {w}" for w in sweep.warnings]
    lines.append(f"swept in {sweep.seconds:.1f} s; wrote {', '.join(result.files)}")
    return "\n".join(lines)
