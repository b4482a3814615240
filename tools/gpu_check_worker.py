#!/usr/bin/env python3
"""The worker behind tools/gpu_check.py: it runs the units the parent sends, one at a time.

Two lanes. 'gpu': the CUDA constants, Ultralytics' AutoBatch, `visionbatch fit` measured, and real
Ultralytics training, each on a smaller card emulated with torch's per-process memory fraction;
and Phase D's out-of-memory recovery and plan cache (gpu_check_phase_d.py).
'cpu': visionbatch's CPU-trace predictions, which need no GPU and run beside the GPU work.
With --simulate the gpu lane's device is `SimulatedDevice` (a known memory law in place of CUDA),
while the CPU trace and real Ultralytics training (on the CPU, tiny: Phase C's epochs and Phase D's
recovery) still run for real: the flow is exercised end to end, and its numbers are not measurements.

Requests come one JSON object per line on stdin; answers go one per line to the original stdout.
Everything the libraries print goes to stderr, the lane's log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, as the other tools

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_devices import (  # noqa: E402
    GIB,
    MIB,
    CudaDevice,
    NullRunner,
    NvmlPeak,
    SimulatedDevice,
    TrainingMeter,
    conv_workspace,
    simulated_step,
    simulated_trial,
)
from gpu_check_phase_d import unit_cache, unit_oom  # noqa: E402

SIMULATED_IMGSZ = 64  # --simulate: real CPU work (trace, training) at this size, whatever the case says


class Context:
    """What every unit may use: the device (gpu lane), the options, a scratch folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.simulate, self.data, self.tmp = args.simulate, args.data, Path(args.tmp)
        self.device: SimulatedDevice | CudaDevice | None = None
        if args.lane == "gpu":
            self.device = SimulatedDevice() if args.simulate else CudaDevice()

    def imgsz(self, case: dict) -> int:
        return SIMULATED_IMGSZ if self.simulate else int(case["imgsz"])

    def data_for(self, case: dict) -> str:
        return case.get("data") or self.data


def unit_hello(req: dict, ctx: Context) -> dict:
    from visionbatch.dataset import load_dataset

    summary = load_dataset(ctx.data)
    segment_data = ctx.data if summary.segmentable else segmentation_copy(ctx.data, ctx.tmp)
    # no batch above the dataset's size; the simulated device's law-only units read no data, and stand
    # for the shipped dataset's 160 images that a GPU run uses by default
    cap = SimulatedDevice.batch_cap if ctx.simulate else summary.train.images
    return {"device": ctx.device.describe(), "train_images": summary.train.images, "batch_cap": cap,
            "segment_data": segment_data, "max_labels": summary.train.max_instances, "nc": summary.nc,
            "packages": package_versions()}


def package_versions() -> dict[str, str]:
    """The versions this process runs with (the GPU machine's own, or carried), and whether albumentations
    imports: Ultralytics trains without it when it does not, with a slightly different pipeline."""
    from importlib import metadata

    versions = {}
    for name in ("torch", "torchvision", "numpy", "opencv-python-headless", "nvidia-ml-py", "ultralytics",
                 "albumentations", "pydantic", "typing-extensions", "polars"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    try:
        import albumentations  # noqa: F401
    except Exception as exc:  # pydantic on an older typing-extensions, for one
        versions["albumentations"] += f" (does not import: {type(exc).__name__}: {exc})"
    return versions


def unit_constants(req: dict, ctx: Context) -> dict:
    """The allocator's rounding and segments, the cuBLAS and cuDNN workspaces, and the context."""
    device = ctx.device
    if device.simulated:
        return {"round_bytes": 512, "segments": {"1": 2 * MIB, "5242880": 20 * MIB, "52428801": 52 * MIB},
                "cublas_workspace_bytes": 8 * MIB, "cudnn_workspace_bytes": 48 * MIB,
                "context_init_bytes": 300 * MIB, "context_bytes": device.context_bytes}
    torch, cuda = device.torch, device.torch.cuda
    with device.card(None):
        held = torch.empty(1, dtype=torch.uint8, device="cuda:0")  # keeps the small pool's segment alive
        before = cuda.memory_allocated(0)
        probe = torch.empty(1, dtype=torch.uint8, device="cuda:0")
        round_bytes = cuda.memory_allocated(0) - before
        del probe, held
        segments = {}
        for size in (1, 5 * MIB, 50 * MIB + 1):  # the small pool, a 20 MiB block, a large block rounded to 2 MiB
            device.clean()
            before = cuda.memory_reserved(0)
            block = torch.empty(size, dtype=torch.uint8, device="cuda:0")
            segments[str(size)] = cuda.memory_reserved(0) - before
            del block
        cublas = None  # the workspace stays with the handle: measurable only once it is let go
        if hasattr(torch._C, "_cuda_clearCublasWorkspaces"):
            torch._C._cuda_clearCublasWorkspaces()
            device.clean()
            a = torch.randn(1024, 1024, device="cuda:0", dtype=torch.float16)
            before = cuda.memory_allocated(0)
            (a @ a).sum().item()
            cublas = cuda.memory_allocated(0) - before
            del a
        cudnn = conv_workspace(torch, device)
    return {"round_bytes": int(round_bytes), "segments": segments, "cublas_workspace_bytes": cublas,
            "cudnn_workspace_bytes": int(cudnn), "context_init_bytes": device.context_init_bytes,
            "context_bytes": device.context_bytes, "context_measured": device.context_measured}


def _job_spec(ctx: Context, case: dict, gpu_name: str) -> Any:
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.spec import job_spec

    job = prepare(ctx.data_for(case), {"model": case["model"], "task": case["task"], "imgsz": ctx.imgsz(case)})
    return job_spec(job, "cuda", gpu_name)


def unit_points(req: dict, ctx: Context) -> dict:
    """The real training step (and validation at 2b) at a few batches: peak allocated and reserved."""
    case, device, rows = req["case"], ctx.device, []
    if device.simulated:
        for b in req["batches"]:
            for phase, batch in (("train", b), ("val", 2 * b)):
                allocated, reserved = simulated_step(case["model"], case["task"], case["imgsz"], batch, phase)
                rows.append({"phase": phase, "batch": batch, "ok": True, "allocated": allocated, "reserved": reserved})
        return {"rows": rows}
    from visionbatch.fit.api import trainer_globals
    from visionbatch.fit.probes.cuda import CudaProbe
    from visionbatch.ultralytics.offline import offline
    from visionbatch.ultralytics.step import Workload

    with device.card(None), offline():
        spec = _job_spec(ctx, case, device.describe()["name"])
        probe = CudaProbe(0)
        with trainer_globals(True, "cuda"):
            workload = Workload(spec, "cuda:0")
            try:
                probe.capacity()
                for b in req["batches"]:
                    for phase, batch, step in (("train", b, workload.train_step), ("val", 2 * b, workload.val_step)):
                        s = probe.measure(lambda: step(batch), batch, phase, workload.persistent())
                        rows.append({"phase": phase, "batch": batch, "ok": s.ok, "allocated": s.allocated_bytes,
                                     "reserved": s.reserved_bytes})
            finally:
                workload.close()
    return {"rows": rows}


def unit_trace(req: dict, ctx: Context) -> dict:
    """The CPU trace's tensor bytes (no CUDA overheads) at the points `unit_points` measures."""
    from visionbatch.fit.api import trainer_globals
    from visionbatch.fit.probes.trace import DeviceModel, TraceEstimator
    from visionbatch.ultralytics.offline import offline

    tensors_only = DeviceModel("trace", cuda=True, round_bytes=512)
    rows = []
    with offline():
        spec = _job_spec(ctx, req["case"], req["gpu_name"])
        with trainer_globals(True, "cpu"):
            estimator = TraceEstimator(spec, tensors_only)
            for b in req["batches"]:
                rows.append({"phase": "train", "batch": b, "allocated": estimator.train(b).allocated_bytes})
                rows.append({"phase": "val", "batch": 2 * b, "allocated": estimator.val(2 * b).allocated_bytes})
    return {"rows": rows}


def unit_autobatch(req: dict, ctx: Context) -> dict:
    """Ultralytics' check_train_batch_size on the emulated card, as its trainer calls it."""
    case, device, card = req["case"], ctx.device, int(req["card_bytes"])
    cap, fraction = int(req["train_images"]), float(req["fraction"])
    if device.simulated:  # its proxy step misses the loss, the optimizer state and the EMA
        allocated1, reserved1 = simulated_step(case["model"], case["task"], case["imgsz"], 1, "train")
        allocated2, reserved2 = simulated_step(case["model"], case["task"], case["imgsz"], 2, "train")
        slope, fixed = 0.7 * (reserved2 - reserved1), 0.8 * (reserved1 - (reserved2 - reserved1))
        batch = min(max(int((fraction * (card - device.context_bytes) - fixed) / slope), 1), cap)
        return {"batch": batch, "predicted_reserved_bytes": int(fixed + slope * batch)}
    import logging

    from visionbatch.ultralytics.offline import offline

    lines: list[str] = []
    handler = type("Lines", (logging.Handler,), {  # its messages, without the terminal's colour codes
        "emit": lambda self, record: lines.append(re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage()))})()
    with device.card(card, seen=True), offline():
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel
        from ultralytics.utils import LOGGER
        from ultralytics.utils.autobatch import check_train_batch_size

        cls = SegmentationModel if case["task"] == "segment" else DetectionModel
        model = cls(case["model"], nc=int(req["nc"]), verbose=False).to("cuda:0")
        model.args = get_cfg(overrides={"task": case["task"]})
        LOGGER.addHandler(handler)
        try:  # max_num_obj as DetectionTrainer.auto_batch passes it: the densest image x4 for mosaic
            batch = check_train_batch_size(model, imgsz=case["imgsz"], amp=True, batch=fraction,
                                           max_num_obj=4 * int(req["max_labels"]), dataset_size=cap)
        except RuntimeError as exc:  # every profiled batch ran out of memory: its answer is that none fits
            if "no usable batch size" not in str(exc):
                raise
            return {"batch": 0, "predicted_reserved_bytes": None, "reason": str(exc)}
        finally:
            LOGGER.removeHandler(handler)
            del model
    return {"batch": int(batch), "predicted_reserved_bytes": autobatch_prediction(lines), "log": lines[-3:]}


def autobatch_prediction(lines: list[str]) -> int | None:
    """The bytes AutoBatch predicts at its batch, from its last log line (GiB, its proxy's reserved memory).

    Examples:
        >>> autobatch_prediction(["AutoBatch: Using batch-size 48 for CUDA:0 6.00G/7.50G (80%) ✅"])
        6442450944
        >>> autobatch_prediction(["AutoBatch: error detected: boom,  using default batch-size 16."]) is None
        True
    """
    for line in reversed(lines):
        if "Using batch-size" in line:
            return int(float(line.split(" for ")[1].split()[1].split("G/")[0]) * GIB)
    return None


def unit_fit(req: dict, ctx: Context) -> dict:
    """`visionbatch fit` measured on the emulated card (the CUDA probe sees the per-process fraction)."""
    from visionbatch.errors import BudgetError

    case, device, card = req["case"], ctx.device, int(req["card_bytes"])
    with device.card(card):
        try:
            if device.simulated:
                from visionbatch.fit.planner import plan_batch
                from visionbatch.fit.probes.simulated import SimulatedProbe

                law = lambda b, phase: simulated_step(case["model"], case["task"], case["imgsz"], b, phase)[1]  # noqa: E731
                probe = SimulatedProbe(law, card, context_bytes=device.context_bytes)
                return plan_summary(plan_batch(probe, NullRunner(), float(req["fraction"]), int(req["train_images"])))
            from visionbatch.fit.api import fit_batch

            return plan_summary(fit_batch(ctx.data_for(case), model=case["model"], imgsz=case["imgsz"], device=0,
                                          memory_fraction=float(req["fraction"]), task=case["task"],
                                          plan_cache=False))  # a fit measured each time, never the machine's cache
        except BudgetError as exc:
            return no_batch(exc)


def no_batch(exc: Exception) -> dict:
    """A planner's answer when not even batch 1 fits the card: a result, not a failure."""
    return {"batch": 0, "max_batch": 0, "predicted_bytes": None, "val_predicted_bytes": None, "measured_bytes": None,
            "val_measured_bytes": None, "reason": str(exc)}


def plan_summary(plan: Any) -> dict:
    curves = {}
    for name, curve in (("curve", plan.curve), ("val_curve", plan.val_curve)):
        if curve is not None:
            curves[name] = [curve.fixed_bytes, curve.per_image_bytes, curve.quadratic_bytes]
    return {"batch": plan.batch_size, "max_batch": plan.max_batch_size, "predicted_bytes": plan.predicted_bytes,
            "val_predicted_bytes": plan.val_predicted_bytes, "measured_bytes": plan.measured_bytes,
            "val_measured_bytes": plan.val_measured_bytes, "usable_bytes": plan.usable_bytes,
            "context_bytes": plan.context_bytes, "budget_bytes": plan.budget_bytes, "planning_s": plan.planning_s,
            "probes": sum(s.phase == "train" for s in plan.samples), "reason": plan.reason, **curves}


@contextlib.contextmanager
def calibration_from(data: dict | None):
    """Predict with the constants this run measured (Phase A) instead of the shipped ones."""
    from visionbatch.fit.probes import trace

    saved = trace.calibration
    if data:
        trace.calibration = lambda: data
    try:
        yield
    finally:
        trace.calibration = saved


def unit_predict(req: dict, ctx: Context) -> dict:
    """visionbatch's CPU-trace plan for an H200 that leaves the card's memory to training."""
    from visionbatch.errors import BudgetError

    case, card = req["case"], int(req["card_bytes"])
    try:
        if ctx.simulate:  # the trace's known bias on segmentation, on the simulated law
            from visionbatch.fit.planner import plan_batch
            from visionbatch.fit.probes.simulated import SimulatedProbe

            bias = 1.08 if case["task"] == "segment" else 0.99
            law = lambda b, phase: bias * simulated_step(case["model"], case["task"], case["imgsz"], b, phase)[1]  # noqa: E731
            plan = plan_batch(SimulatedProbe(law, card, context_bytes=SimulatedDevice.context_bytes), NullRunner(),
                              float(req["fraction"]), int(req["train_images"]), measured=False)
        else:
            from visionbatch.fit.api import fit_batch

            with calibration_from(req.get("calibration")):
                plan = fit_batch(ctx.data_for(case), model=case["model"], imgsz=case["imgsz"], target="h200",
                                 memory_budget=card, memory_fraction=float(req["fraction"]), task=case["task"],
                                 plan_cache=False)
    except BudgetError as exc:
        return no_batch(exc)
    return {**plan_summary(plan), "constants": "measured" if req.get("calibration") else "shipped"}


def unit_check(req: dict, ctx: Context) -> dict:
    """The fixed-batch prediction (`fit_batch(..., batch_size=b)`) at a batch that was trained for real."""
    case, card, batch = req["case"], int(req["card_bytes"]), int(req["batch"])
    if ctx.simulate:
        bias = 1.08 if case["task"] == "segment" else 0.99
        train = simulated_step(case["model"], case["task"], case["imgsz"], batch, "train")[1] * bias
        val = simulated_step(case["model"], case["task"], case["imgsz"], 2 * batch, "val")[1] * bias
        return {"train_reserved_bytes": int(train), "val_reserved_bytes": int(val),
                "context_bytes": SimulatedDevice.context_bytes}
    from visionbatch.fit.api import fit_batch

    with calibration_from(req.get("calibration")):
        check = fit_batch(ctx.data_for(case), model=case["model"], imgsz=case["imgsz"], target="h200",
                          memory_budget=card, memory_fraction=float(req["fraction"]), task=case["task"],
                          batch_size=batch)
    val = check.val.reserved_bytes if check.val is not None and check.val.ok else None
    return {"train_reserved_bytes": check.train.reserved_bytes, "val_reserved_bytes": val,
            "context_bytes": check.context_bytes, "fits": check.fits,
            "constants": "measured" if req.get("calibration") else "shipped"}


def unit_train(req: dict, ctx: Context) -> dict:
    """Real Ultralytics training at one batch on the emulated card: peaks per epoch, or where it ran out.

    A trial is two epochs (mosaic, then the close_mosaic switch), each validated at 2b; Phase C runs more.
    On --simulate it trains for real on the CPU at a tiny size, and the memory readings are the law's.
    """
    from visionbatch.devices.oom import is_oom
    from visionbatch.ultralytics.offline import offline

    case, device, batch = req["case"], ctx.device, int(req["batch"])
    epochs, close_mosaic = int(req["epochs"]), int(req["close_mosaic"])
    if device.simulated and req.get("law_only"):  # the simulated trials: the law, no training
        return simulated_trial(device, case, batch, epochs, int(req["card_bytes"]))
    meter = TrainingMeter(device, case, batch, epochs, close_mosaic)
    sampler = NvmlPeak() if not device.simulated else None
    started = time.perf_counter()
    with device.card(req.get("card_bytes"), seen=True), offline():
        from ultralytics import YOLO

        yolo = YOLO(case["model"], task=case["task"])
        for event, callback in meter.callbacks().items():
            yolo.add_callback(event, callback)
        try:
            yolo.train(data=ctx.data_for(case), batch=batch, imgsz=ctx.imgsz(case), epochs=epochs,
                       close_mosaic=close_mosaic, val=True, save=False, plots=False, device=device.train_device,
                       workers=device.workers, project=str(ctx.tmp / "runs"), name="train", exist_ok=True,
                       verbose=False)
        except Exception as exc:
            if not is_oom(exc):
                raise
            meter.out_of_memory(str(exc).strip().splitlines()[0][:200])
        finally:
            trainer = getattr(yolo, "trainer", None)
            for loader in (getattr(trainer, "train_loader", None), getattr(trainer, "test_loader", None)):
                if hasattr(loader, "close"):
                    loader.close()
            del yolo, trainer
    return {**meter.result(), "nvml_peak_bytes": sampler.stop() if sampler else None,
            "train_s": round(time.perf_counter() - started, 2)}


def segmentation_copy(data: str, tmp: Path) -> str:
    """A copy of a box-labelled dataset whose labels are the boxes' corners as polygons (coco128 has boxes only)."""
    import yaml

    from visionbatch.dataset import label_path, load_dataset

    summary = load_dataset(data)
    root = tmp / "seg-dataset"
    raw = dict(summary.raw)
    for key in ("train", "val"):
        new_sources = []
        for n, source in enumerate(getattr(summary, key).sources):
            src = Path(source)
            dest = root / f"{key}{n}" / "images"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.symlink_to(src if src.is_dir() else src.parent, target_is_directory=True)
            for image in (p for p in src.rglob("*") if p.is_file()):
                label = Path(label_path(str(image)))
                if not label.exists():
                    continue
                target = Path(label_path(str(dest / image.relative_to(src))))
                target.parent.mkdir(parents=True, exist_ok=True)
                rows = []
                for line in label.read_text().splitlines():
                    c, x, y, w, h = (float(v) for v in line.split()[:5])
                    corners = [x - w / 2, y - h / 2, x + w / 2, y - h / 2, x + w / 2, y + h / 2, x - w / 2, y + h / 2]
                    rows.append(f"{int(c)} " + " ".join(f"{min(max(v, 0), 1):.6f}" for v in corners))
                target.write_text("\n".join(rows) + "\n")
            new_sources.append(str(dest))
        raw[key] = new_sources
    raw.pop("path", None)
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(out)


UNITS = {"hello": unit_hello, "constants": unit_constants, "points": unit_points, "trace": unit_trace,
         "autobatch": unit_autobatch, "fit": unit_fit, "predict": unit_predict, "check": unit_check,
         "trial": unit_train, "epochs": unit_train, "oom": unit_oom, "cache": unit_cache}


def serve(args: argparse.Namespace) -> int:
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever prints (Ultralytics, C libraries) goes to the log, not into the answers
    ctx = Context(args)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        try:
            answer = {"ok": True, "result": UNITS[request["kind"]](request, ctx)}
        except Exception as exc:  # one unit's failure is reported, and the run goes on with the next
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip()[:500]}"}
        if ctx.device is not None:
            ctx.device.clean()
            answer["allocated_after"] = ctx.device.allocated_now()
        answer["seconds"] = round(time.perf_counter() - started, 3)
        protocol.write(json.dumps(answer, default=float) + "\n")
        protocol.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lane", choices=("gpu", "cpu"), required=True)
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--data", required=True)
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--cores", help="CPU cores for this lane, e.g. 0,1,2")
    args = parser.parse_args(argv)
    if args.cores:  # the lane's share of the machine, so that the two lanes do not slow each other down
        with contextlib.suppress(OSError):  # a sandbox may refuse it: the lanes then share every core
            os.sched_setaffinity(0, [int(v) for v in args.cores.split(",")])
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
