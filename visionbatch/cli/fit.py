"""`visionbatch fit DATA.yaml [key=value ...]`: the batch plan, its table, JSON and curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from visionbatch.cli.args import positional
from visionbatch.console import table
from visionbatch.devices.catalog import TARGETS
from visionbatch.errors import ConfigError
from visionbatch.fit.plan import BatchPlan
from visionbatch.keys import help_block, read_keys
from visionbatch.ultralytics.args import ultralytics_defaults
from visionbatch.units import human_bytes
from visionbatch.values import parse_batch

SUMMARY = "find the largest (and the fastest) training batch that fits the GPU, by measuring it"
USAGE = """visionbatch fit DATA.yaml [key=value ...]

Measures the real Ultralytics training step (real loss at the dataset's worst label density,
optimizer state, EMA, AMP, multi-scale) and validation at 2x the batch, fits the memory curve,
and verifies the answer with real steps. Writes runs/fit/<name>/plan.json and memory_curve.png.

visionbatch keys:
""" + help_block("fit") + """

Ultralytics train keys that shape the step pass through: model=, device=, task=, amp=,
multi_scale=, optimizer=, epochs=, mosaic=, close_mosaic=, mask_ratio=, overlap_mask=, freeze=, ...
fit finds the batch: batch=auto, batch=0.85 (a fraction) and batch=-1 are read as memory_fraction,
as in train; a batch size (batch=16) is refused.

Targets (target=KEY, or a size such as target=6GiB for a generic CUDA GPU):
""" + "\n".join(f"  {t.key:14s} {t.name}" + (f"  [{t.note}]" if t.note else "") for t in TARGETS)


@dataclass(frozen=True, slots=True)
class FitRun:
    """A plan and where it was written."""

    plan: BatchPlan
    folder: str
    files: tuple[str, ...]


def run(tokens: Sequence[str]) -> FitRun:
    from visionbatch.fit.api import CURVE_PNG, PLAN_JSON, fit_batch

    data, pairs = positional(tokens, "fit", "DATA", "data", "visionbatch fit path/to/data.yaml [key=value ...]")
    pairs = read_keys("fit", pairs, ultralytics_defaults())
    if "batch" in pairs:
        request = parse_batch(pairs.pop("batch"))
        if not request.fit:
            raise ConfigError(f"{request.source}: fit finds the batch; give memory_fraction= (or batch=0.85) instead")
        pairs.setdefault("memory_fraction", request.memory_fraction)
    plan = fit_batch(data, save=True, **pairs)  # the library makes the run folder, as for every command
    folder = Path(plan.save_dir)
    return FitRun(plan, str(folder), (str(folder / PLAN_JSON), str(folder / CURVE_PNG)))


def show(result: FitRun) -> str:
    plan = result.plan
    val = {s.batch_size: s for s in plan.samples if s.phase == "val"}
    rows = []
    for s in (s for s in plan.samples if s.phase == "train"):
        v = val.get(2 * s.batch_size)
        fits = plan.fits(s.batch_size)
        rows.append([s.batch_size, human_bytes(s.peak_bytes) if s.ok else "OOM",
                     2 * s.batch_size, human_bytes(v.peak_bytes) if v and v.ok else ("OOM" if v else "-"),
                     f"{s.img_per_s:.1f}" if s.img_per_s else "-", "yes" if fits else "no"])
    work = plan.workload
    head = (f"visionbatch fit: {work.model} {work.task} imgsz={work.imgsz} "
            f"(steps at {work.max_imgsz}), {work.labels_per_image} labels/image, "
            f"{work.optimizer}, AMP {'on' if work.amp else 'off'}\n"
            f"device {plan.device} ({plan.device_name}): {human_bytes(plan.usable_bytes)} usable"
            + (f" of {human_bytes(plan.total_bytes)}" if plan.total_bytes else "")
            + f", budget {plan.memory_fraction:g} x usable = {human_bytes(plan.budget_bytes)}")
    lines = ["", table(["batch", "train peak", "val batch", "val peak", "img/s", "fits"], rows, title=head), ""]
    measured = f", measured {human_bytes(plan.measured_bytes)}" if plan.measured_bytes is not None else ""
    if not plan.measured:
        lines.append("PREDICTED, not measured: the readings above are CPU-trace estimates for the target")
    lines.append(f"plan: batch {plan.batch_size} (largest that fits {plan.max_batch_size}; validation batch "
                 f"{plan.val_batch_size}), accumulate {plan.accumulate} for nominal batch {plan.nominal_batch_size}")
    lines.append(f"memory at batch {plan.batch_size}: predicted {human_bytes(plan.predicted_bytes)} "
                 f"± {human_bytes(plan.predicted_uncertainty_bytes)}{measured}; "
                 f"validation {human_bytes(plan.val_measured_bytes or plan.val_predicted_bytes)}")
    lines.append(f"why: {plan.reason}")
    lines += [f"warning: {w}" for w in plan.warnings]
    lines.append(f"planned in {plan.planning_s:.1f} s; wrote {', '.join(result.files)}")
    lines.append(f"train with it: visionbatch train {work.data or 'DATA.yaml'} batch={plan.batch_size} ...")
    return "\n".join(lines)
