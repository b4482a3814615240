"""`visionbatch fit DATA.yaml [key=value ...]`: the batch plan, its table, JSON and curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from visionbatch.cli.args import positional, read_batch, suggested_command, typed_pairs
from visionbatch.console import Progress, table
from visionbatch.devices.catalog import TARGETS
from visionbatch.fit.curve import DEFAULT_SIGMAS
from visionbatch.fit.distributed import DistributedPlan
from visionbatch.fit.plan import BatchCheck, BatchPlan, WorkloadSummary
from visionbatch.keys import help_block, read_keys
from visionbatch.ultralytics.args import ultralytics_defaults
from visionbatch.units import DECIMAL_UNITS, human_bytes, parse_bytes, size_unit

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
as in train. A batch size asks one question instead: will it fit? `batch=16` runs training at 16
and validation at 32 (or traces them for target=), prints both peaks and the margin, and exits 0
when it fits and 3 when it does not (2 is bad input).

Targets (target=KEY, or a size such as target=6GiB for a generic CUDA GPU):
""" + "\n".join(f"  {t.key:14s} {t.name}" + (f"  [{t.note}]" if t.note else "") for t in TARGETS)


@dataclass(frozen=True, slots=True)
class FitRun:
    """A plan (or the check of one batch), where it was written, and the `key=value` arguments as typed
    (`cli.args.typed_pairs`), which the commands it suggests carry over."""

    plan: BatchPlan | BatchCheck | DistributedPlan
    folder: str
    files: tuple[str, ...]
    args: tuple[tuple[str, str], ...] = ()


def run(tokens: Sequence[str]) -> FitRun:
    from visionbatch.fit.api import PLAN_JSON, curve_names, fit_batch

    data, pairs = positional(tokens, "fit", "DATA", "data", "visionbatch fit path/to/data.yaml [key=value ...]")
    pairs = read_keys("fit", pairs, ultralytics_defaults())
    pairs = read_batch(pairs)
    with Progress("visionbatch fit") as progress:  # each probe on stderr as it runs; a bar on a terminal
        plan = fit_batch(data, save=True, progress=progress, **pairs)  # the library makes the run folder
    folder = Path(plan.save_dir)
    files = (PLAN_JSON, *curve_names(plan))
    return FitRun(plan, str(folder), tuple(str(folder / f) for f in files), typed_pairs(tokens))


def answered_no(result: FitRun) -> bool:
    """`batch=N` asked whether N fits, and it does not (the command exits 3)."""
    return isinstance(result.plan, BatchCheck) and not result.plan.fits


def _heading(plan: BatchPlan | BatchCheck) -> str:
    work = plan.workload
    return (f"visionbatch fit: {work.model} {work.task} imgsz={work.imgsz} "
            f"(steps at {work.max_imgsz}), labels padded to {work.labels_per_image}/image, "
            f"{work.optimizer}, AMP {'on' if work.amp else 'off'}\n"
            f"device {plan.device} ({plan.device_name}): {human_bytes(plan.usable_bytes)} usable"
            + (f" of {human_bytes(plan.total_bytes)}" if plan.total_bytes else "")
            + f", budget {plan.memory_fraction:g} x usable = {human_bytes(plan.budget_bytes)}")


def _cpu_counted(plan: BatchPlan | BatchCheck) -> list[str]:
    """For a CPU budget, one line saying what the readings count (the budget bounds the training process)."""
    return [f"counted: {plan.counted}"] if plan.device == "cpu" else []


def _decimal_budget(args: Sequence[tuple[str, str]]) -> list[str]:
    """A line when memory_budget= was typed in decimal units, which every figure here shows in binary ones.

    Examples:
        >>> _decimal_budget([("memory_budget", "2GB")])
        ['memory_budget=2GB: 2,000,000,000 bytes = 1.86 GiB (GB and MB are powers of 1000, GiB and MiB of 1024)']
        >>> _decimal_budget([("memory_budget", "2GiB")]), _decimal_budget([("memory_budget", "4g")])
        ([], [])
    """
    typed = dict(args).get("memory_budget", "")
    if size_unit(typed) not in DECIMAL_UNITS:
        return []
    size = parse_bytes(typed)
    return [f"memory_budget={typed}: {size:,} bytes = {human_bytes(size)} (GB and MB are powers of 1000, GiB and "
            f"MiB of 1024)"]


def _labels(plan: BatchPlan | BatchCheck) -> str:
    work = plan.workload
    batch = f"{work.labels_per_batch} in the batch of {plan.batch_size} measured; " if work.labels_per_batch else ""
    return batch + work.label_density


def _show_check(result: FitRun) -> str:
    check = result.plan
    rows = []
    for s in (check.train, check.val):
        if s is None:
            continue
        rows.append([s.phase, s.batch_size, human_bytes(s.peak_bytes) if s.ok else "OOM",
                     human_bytes(s.reserved_bytes) if s.ok and s.reserved_bytes is not None else "-",
                     ("yes" if s.peak_bytes <= check.budget_bytes else "no") if s.ok else "no"])
    lines = ["", table(["step", "batch", "peak", "torch reserved", "within budget"], rows, title=_heading(check)), ""]
    if not check.measured:
        lines.append("PREDICTED, not measured: the readings above are CPU-trace estimates for the target")
    answer = "YES" if check.fits else "NO"
    margin = "" if check.margin_bytes is None else (
        f" (margin {human_bytes(check.margin_bytes)})" if check.margin_bytes >= 0
        else f" ({human_bytes(-check.margin_bytes)} over)")
    lines.append(f"batch {check.batch_size} fits: {answer}{margin}")
    lines.append(f"why: {check.reason}")
    lines += _cpu_counted(check) + _decimal_budget(result.args)
    lines.append(f"labels: {_labels(check)}")
    lines += [f"warning: {w}" for w in check.warnings]
    lines.append(f"checked in {check.planning_s:.1f} s; wrote {', '.join(result.files)}")
    if not check.fits:
        again = suggested_command("fit", check.workload.data or "DATA.yaml", result.args, drop=("data", "batch"),
                                  ultralytics_keys=tuple(ultralytics_defaults()))
        lines.append(f"find the largest that fits: {again} (without batch=)")
    return "\n".join(lines)


def _show_distributed(result: FitRun) -> str:
    """A DDP fit: each GPU's answer, the per-GPU batch every rank trains, and the total for Ultralytics."""
    ddp = result.plan
    rows = [[plan.device, plan.device_name, human_bytes(plan.usable_bytes), human_bytes(plan.budget_bytes),
             plan.max_batch_size, plan.batch_size, human_bytes(plan.predicted_bytes)] for plan in ddp.per_device]
    work = ddp.governing.workload
    title = (f"visionbatch fit: {work.model} {work.task} imgsz={work.imgsz} (steps at {work.max_imgsz}), "
             f"{work.optimizer}, AMP {'on' if work.amp else 'off'}, DDP on {ddp.world_size} GPUs\n"
             f"set aside on each GPU before it was fitted: DDP's gradient buckets "
             f"{human_bytes(ddp.gradient_bucket_bytes)}, NCCL buffers {human_bytes(ddp.nccl_buffer_bytes)} "
             f"(assumed, not measured), the fitting process's CUDA context")
    lines = ["", table(["device", "GPU", "usable after DDP", "budget", "largest that fits", "batch",
                        "predicted peak"], rows, title=title), ""]
    lines.append(f"plan: per-GPU batch {ddp.per_gpu_batch} x {ddp.world_size} GPUs = batch {ddp.total_batch} "
                 f"(accumulate {ddp.accumulate} for nominal batch {ddp.nominal_batch_size})")
    lines.append(f"why: {ddp.reason}")
    lines += [f"warning: {w}" for w in ddp.warnings]
    lines += [f"warning: {plan.device}: {w}" for plan in ddp.per_device for w in plan.warnings
              if "set aside for DDP" not in w]  # the title says what was set aside
    lines.append(f"{_distributed_planned(ddp.per_device)}; wrote {', '.join(result.files)}")
    devices = ",".join(device.split(":")[-1] for device in ddp.devices)
    lines.append(f"train with it: {train_command(work, result.args, device=devices, batch=ddp.total_batch)}")
    return "\n".join(lines)


def _distributed_planned(plans: Sequence[BatchPlan]) -> str:
    """This run's planning time over every GPU: a GPU whose plan came from the plan cache counts the reuse, not
    the search it was fitted with then.

    Examples:
        >>> from types import SimpleNamespace as N
        >>> fresh, kept = N(planning_s=20.0, reused=None), N(planning_s=18.0, reused=N(seconds=0.25))
        >>> _distributed_planned([fresh, fresh])
        'planned in 40.0 s'
        >>> _distributed_planned([kept, kept])
        'planned in 0.5 s (2 of 2 GPUs reused their plans from the plan cache)'
        >>> _distributed_planned([fresh, N(planning_s=18.0, reused=N(seconds=None))])
        'planned in 20.0 s (1 of 2 GPUs reused their plans from the plan cache)'
    """
    reused = [plan for plan in plans if plan.reused is not None]
    seconds = sum(plan.planning_s for plan in plans if plan.reused is None)
    seconds += sum(plan.reused.seconds or 0.0 for plan in reused)
    note = f" ({len(reused)} of {len(plans)} GPUs reused their plans from the plan cache)" if reused else ""
    return f"planned in {seconds:.1f} s{note}"


def show(result: FitRun) -> str:
    if isinstance(result.plan, BatchCheck):
        return _show_check(result)
    if isinstance(result.plan, DistributedPlan):
        return _show_distributed(result)
    plan = result.plan
    work = plan.workload
    headers, rows = probe_table(plan)
    lines = ["", table(headers, rows, title=_heading(plan)), ""]
    if HELD_COLUMN in headers:  # the column's figure decides "fits" too: say what it counts
        lines.append(f"{HELD_COLUMN}: training's peak plus validation's reserved memory, held together once "
                     f"validation has run (Ultralytics empties its CUDA cache only above half the card); "
                     f"a batch fits when this is within the {human_bytes(plan.budget_bytes)} budget too")
    measured = f", measured {human_bytes(plan.measured_bytes)}" if plan.measured_bytes is not None else ""
    if not plan.measured:
        lines.append("PREDICTED, not measured: the readings above are CPU-trace estimates for the target")
    lines.append(f"plan: batch {plan.batch_size} (largest that fits {plan.max_batch_size}; validation batch "
                 f"{plan.val_batch_size}), accumulate {plan.accumulate} for nominal batch {plan.nominal_batch_size}")
    # the ± is the planner's margin (DEFAULT_SIGMAS standard deviations), as its reason and the plot's band say
    lines.append(f"memory at batch {plan.batch_size}: predicted {human_bytes(plan.predicted_bytes)} "
                 f"± {human_bytes(DEFAULT_SIGMAS * plan.predicted_uncertainty_bytes)} ({DEFAULT_SIGMAS:g}σ)"
                 f"{measured}; validation {human_bytes(plan.val_measured_bytes or plan.val_predicted_bytes)}")
    lines.append(f"why: {plan.reason}")
    lines += _cpu_counted(plan) + _decimal_budget(result.args)
    lines.append(f"labels: {_labels(plan)}")
    if plan.after_validation_bytes is not None:
        lines.append(f"after the first validation: {human_bytes(plan.after_validation_bytes)} held at batch "
                     f"{plan.batch_size}, within the {human_bytes(plan.budget_bytes)} budget (Ultralytics empties "
                     f"its CUDA cache only above half the card)")
    lines += [f"warning: {w}" for w in plan.warnings]
    if plan.reused is not None:
        lines.append(f"plan: {plan.reused.describe()}; plan_cache=False fits again")
    planned = plan.reused.planned(plan.planning_s) if plan.reused is not None else f"planned in {plan.planning_s:.1f} s"
    lines.append(f"{planned}; wrote {', '.join(result.files)}")
    lines.append(f"train with it: {train_command(work, result.args, batch=plan.batch_size)}"
                 + (f"   (on the {work.target})" if work.target else ""))
    return "\n".join(lines)


HELD_COLUMN = "held after val"


def probe_table(plan: BatchPlan) -> tuple[list[str], list[list[object]]]:
    """The plan's probes as table headers and rows: one row per training batch, with the validation
    step run beside it. Where Ultralytics' cache rule holds the two together for some probe (a CUDA
    card, training under half of it: `plan.held_after_validation`), a column shows that figure, so a
    "no" beside peaks under the budget shows what did not fit."""
    held = {s.batch_size: plan.held_after_validation(s.batch_size) for s in plan.samples if s.phase == "train"}
    show_held = any(v is not None for v in held.values())
    rows = []
    for s in (s for s in plan.samples if s.phase == "train"):
        v = plan.val_sample(s.batch_size)
        speed = plan.timings.speed(s.batch_size) if plan.timings and s.ok else None
        row = [s.batch_size, human_bytes(s.peak_bytes) if s.ok else "OOM",
               v.batch_size if v else plan.val_batch_for(s.batch_size),
               human_bytes(v.peak_bytes) if v and v.ok else ("OOM" if v else "-")]
        if show_held:
            row.append(human_bytes(held[s.batch_size]) if held[s.batch_size] is not None else "-")
        row += [f"{speed.img_per_s:.1f} ({speed.low_img_per_s:.1f}-{speed.high_img_per_s:.1f})" if speed else "-",
                "yes" if plan.fits(s.batch_size) else "no"]
        rows.append(row)
    headers = ["batch", "train peak", "val batch", "val peak", *([HELD_COLUMN] if show_held else []),
               "img/s (95% interval)", "fits"]
    return headers, rows


def train_command(work: WorkloadSummary, typed: Sequence[tuple[str, str]], **chosen: object) -> str:
    """The `visionbatch train` line that trains what was fitted, quoted for a shell: the same data, the
    model and size (the user's spelling where they gave one), every other argument of the user's that
    train takes (`typed`: epochs=, close_mosaic=, optimizer=, ... shape the step), and `chosen` (the batch).

    memory_budget= is left out: it fits the batch, and train refuses it beside a batch size.

    Examples:
        >>> from types import SimpleNamespace
        >>> work = SimpleNamespace(data="d.yaml", model="yolo11n.yaml", imgsz=320)
        >>> train_command(work, [("memory_budget", "2GiB"), ("epochs", "1"), ("target", "t4")], batch=4)
        'visionbatch train d.yaml model=yolo11n.yaml imgsz=320 epochs=1 batch=4'
    """
    given = {key for key, _ in typed}
    fitted = [(key, value) for key, value in (("model", work.model), ("imgsz", work.imgsz)) if key not in given]
    return suggested_command("train", work.data or "DATA.yaml", typed, first=fitted, last=tuple(chosen.items()),
                             drop=("data", "batch", "memory_budget"), ultralytics_keys=tuple(ultralytics_defaults()))
