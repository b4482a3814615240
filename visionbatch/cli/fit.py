"""`visionbatch fit DATA.yaml [key=value ...]`: the batch plan, its table, JSON and curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from visionbatch.cli.args import positional
from visionbatch.console import table
from visionbatch.errors import ConfigError
from visionbatch.keys import check_keys, parse_batch
from visionbatch.results import BatchPlan
from visionbatch.ultralytics.args import ultralytics_defaults
from visionbatch.units import human_bytes

SUMMARY = "find the largest (and the fastest) training batch that fits the GPU, by measuring it"
FIT_KEYS = {
    "target": "predict for a GPU you do not have, from a CPU trace: gtx1050, rtx3060, t4, orin-nano-8gb, 6GiB, ...",
    "memory_fraction": "share of usable device memory to fill, 0 < f <= 1 (default 0.9)",
    "memory_budget": "fit against this much memory instead of a GPU's: 4GiB, 512MiB (CPU fits)",
    "labels_per_image": "worst-case labels per training image (default: densest image, x4 with mosaic)",
    "max_probes": "the most training probes to run (default 8)",
    "trust_checkpoint": "True loads model=*.pt with Ultralytics' unrestricted loader, which can run code stored in "
                        "the file: only for files you trust (default: the safe loader)",
}
USAGE = """visionbatch fit DATA.yaml [key=value ...]

Measures the real Ultralytics training step (real loss at the dataset's worst label density,
optimizer state, EMA, AMP, multi-scale) and validation at 2x the batch, fits the memory curve,
and verifies the answer with real steps. Writes runs/fit/<name>/plan.json and memory_curve.png.

visionbatch keys:
""" + "\n".join(f"  {k:17s} {v}" for k, v in FIT_KEYS.items()) + """

Ultralytics train keys that shape the step pass through: model=, imgsz=, device=, task=, amp=,
multi_scale=, optimizer=, epochs=, mosaic=, close_mosaic=, mask_ratio=, overlap_mask=, freeze=, ...
batch=0.85 (a fraction), batch=-1 and batch=auto are read as memory_fraction, as in train.

Targets (target=KEY, or a size such as target=6GiB for a generic CUDA GPU):
""" + "\n".join(f"  {t.key:14s} {t.name}" + (f"  [{t.note}]" if t.note else "") for t in __import__(
    "visionbatch.devices.catalog", fromlist=["TARGETS"]).TARGETS)


@dataclass(frozen=True, slots=True)
class FitRun:
    """A plan and where it was written."""

    plan: BatchPlan
    folder: str
    files: tuple[str, ...]


def run(tokens: Sequence[str]) -> FitRun:
    from visionbatch.fit.api import fit_batch
    from visionbatch.fit.plot import plot_batch_plan
    from visionbatch.results import write_json
    from visionbatch.rundir import new_run_dir

    data, pairs = positional(tokens, "fit", "DATA", "data", "visionbatch fit path/to/data.yaml [key=value ...]")
    check_keys(pairs, set(ultralytics_defaults()) | set(FIT_KEYS), "fit")
    if "batch" in pairs:
        request = parse_batch(pairs.pop("batch"))
        if not request.fit:
            raise ConfigError(f"{request.source}: fit finds the batch; give memory_fraction= (or batch=0.85) instead")
        pairs.setdefault("memory_fraction", request.memory_fraction)
    name, project = pairs.get("name"), pairs.get("project")  # checked with the dataset in hand, then used here
    plan = fit_batch(data, **pairs)
    folder = new_run_dir("fit", name, project)
    files = (write_json(folder / "plan.json", plan), plot_batch_plan(plan, folder / "memory_curve.png"))
    return FitRun(plan, str(folder), tuple(str(f) for f in files))


def show(result: FitRun) -> str:
    plan = result.plan
    val = {s.batch_size: s for s in plan.samples if s.phase == "val"}
    rows = []
    for s in (s for s in plan.samples if s.phase == "train"):
        v = val.get(2 * s.batch_size)
        fits = s.ok and s.peak_bytes <= plan.budget_bytes and v is not None and v.ok and v.peak_bytes <= plan.budget_bytes
        rows.append([s.batch_size, human_bytes(s.peak_bytes) if s.ok else "OOM",
                     2 * s.batch_size, human_bytes(v.peak_bytes) if v and v.ok else ("OOM" if v else "-"),
                     f"{s.img_per_s:.1f}" if s.img_per_s else "-", "yes" if fits else "no"])
    work = plan.workload
    head = (f"visionbatch fit: {work.get('model')} {work.get('task')} imgsz={work.get('imgsz')} "
            f"(steps at {work.get('max_imgsz')}), {work.get('labels_per_image')} labels/image, "
            f"{work.get('optimizer')}, AMP {'on' if work.get('amp') else 'off'}\n"
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
    lines.append(f"train with it: visionbatch train {work.get('data', 'DATA.yaml')} batch={plan.batch_size} ...")
    return "\n".join(lines)
