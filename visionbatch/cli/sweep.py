"""`visionbatch sweep DATA.yaml imgsz=320,640,1024,1280 [key=value ...]`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from visionbatch.cli.args import positional
from visionbatch.console import table
from visionbatch.fit.sweep import ResolutionSweep
from visionbatch.keys import check_keys
from visionbatch.ultralytics.args import ultralytics_defaults
from visionbatch.units import human_bytes

SUMMARY = "largest batch at each image size, and the largest image size at a batch"
SWEEP_KEYS = {
    "target": "a GPU to predict for, traced on this CPU: gtx1050, rtx3060, t4, orin-nano-8gb, 6GiB, ...",
    "memory_fraction": "share of usable memory to fill (default 0.9)",
    "memory_budget": "a memory budget instead of a device (traced tensor bytes): 4GiB",
    "batch": "answer the inverse: the largest imgsz at this batch, e.g. batch=16",
    "labels_per_image": "worst-case labels per training image (default: densest image, x4 with mosaic)",
    "trust_checkpoint": "True loads model=*.pt with Ultralytics' unrestricted loader, which can run code stored in "
                        "the file: only for files you trust (default: the safe loader)",
}
USAGE = """visionbatch sweep DATA.yaml imgsz=320,640,1024,1280 [key=value ...]

Probes batch 1 and 2 at the smallest and largest size (training, and validation at 2x), fits
peak = F + G*s^2 + b*(A + B*s^2), and answers for every size without more probing; sizes in
between are probed once each as a check of the fit. Writes runs/sweep/<name>/sweep.json and
sweep.png.

visionbatch keys:
""" + "\n".join(f"  {k:17s} {v}" for k, v in SWEEP_KEYS.items())


@dataclass(frozen=True, slots=True)
class SweepRun:
    sweep: ResolutionSweep
    folder: str
    files: tuple[str, ...]


def run(tokens: Sequence[str]) -> SweepRun:
    from visionbatch.fit.plot import plot_sweep
    from visionbatch.fit.sweep import DEFAULT_SIZES, sweep_resolution
    from visionbatch.results import write_json
    from visionbatch.rundir import new_run_dir

    data, pairs = positional(tokens, "sweep", "DATA", "data", "visionbatch sweep path/to/data.yaml imgsz=320,640")
    check_keys(pairs, set(ultralytics_defaults()) | set(SWEEP_KEYS), "sweep")
    name, project = pairs.get("name"), pairs.get("project")  # checked with the dataset in hand, then used here
    sweep = sweep_resolution(data, imgsz=pairs.pop("imgsz", DEFAULT_SIZES), batch_size=pairs.pop("batch", None),
                             **pairs)
    folder = new_run_dir("sweep", name, project)
    files = (write_json(folder / "sweep.json", sweep), plot_sweep(sweep, folder / "sweep.png"))
    return SweepRun(sweep, str(folder), tuple(str(f) for f in files))


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
    head = (f"visionbatch sweep: {work.get('model')} {work.get('task')}, {work.get('labels_per_image')} labels/image, "
            f"AMP {'on' if work.get('amp') else 'off'}; {sweep.device} ({sweep.device_name}), budget "
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
