#!/usr/bin/env python3
"""Calibrate the CPU trace's CUDA model against real CUDA measurements, and report its error.

For every point of a grid (models yolo11n/s/m, detection and segmentation, imgsz 320 to 1280,
AMP on and off, batches 1, 2 and 8 by default) it measures the real training step on the GPU
(visionbatch's workload and CUDA probe: peak allocated, peak reserved, and the CUDA context from
NVML) and traces the same step on the CPU (fit/probes/trace.py). Then it fits the constants the trace
needs to turn tensor bytes into device bytes:
    reserved = reserved_over_allocated x allocated + reserved_extra + workspace
    device   = reserved + context (per GPU architecture)
and writes them, with the GPU's name and the date, as the package's calibration data, plus the
error table (trace against measurement, in percent) for BENCHMARKS.md.

Usage (needs a CUDA GPU):
    python tools/calibrate_memory.py --data datasets/shapes/data.yaml --arch hopper \\
        --write visionbatch/data/calibration.json > calibration.md
    python tools/calibrate_memory.py --data ... --models yolo11n --imgsz 320 640 --batches 1 2
Without a GPU, --trace-only runs the CPU side of the grid (timing and sanity of the estimates).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {("yolo11n", "detect"): "yolo11n.yaml", ("yolo11n", "segment"): "yolo11n-seg.yaml",
          ("yolo11s", "detect"): "yolo11s.yaml", ("yolo11s", "segment"): "yolo11s-seg.yaml",
          ("yolo11m", "detect"): "yolo11m.yaml", ("yolo11m", "segment"): "yolo11m-seg.yaml"}


def grid_points(args: argparse.Namespace):
    for model in args.models:
        for task in args.tasks:
            for imgsz in args.imgsz:
                for amp in args.amp:
                    yield MODELS[(model, task)], task, imgsz, amp


def trace_point(job, spec_args: dict, task: str, batches: list[int], device_model) -> dict[int, dict]:
    from visionbatch.fit.api import trainer_globals
    from visionbatch.fit.probes.trace import TraceEstimator
    from visionbatch.ultralytics.spec import job_spec

    spec = job_spec(job, "cuda" if device_model.cuda else "cpu", spec_args["gpu"], None)
    out = {}
    with trainer_globals(True, "cpu"):
        estimator = TraceEstimator(spec, device_model)
        for b in batches:
            estimate = estimator.train(b)
            out[b] = {"allocated": estimate.allocated_bytes, "reserved": estimate.reserved_bytes,
                      "device": estimate.device_bytes}
    return out


def measure_point(job, gpu: str, batches: list[int]) -> dict[int, dict]:
    import torch

    from visionbatch.devices.memory import cuda_capacity
    from visionbatch.fit.api import trainer_globals
    from visionbatch.fit.probes.cuda import CudaProbe
    from visionbatch.ultralytics.spec import job_spec
    from visionbatch.ultralytics.step import Workload

    spec = job_spec(job, "cuda", gpu, None)
    probe = CudaProbe(0)
    out = {}
    with trainer_globals(True, "cuda"):
        workload = Workload(spec, "cuda:0")
        try:
            context = cuda_capacity(0).context_bytes
            for b in batches:
                sample = probe.measure(lambda: workload.train_step(b), b, "train", workload.persistent())
                out[b] = {"ok": sample.ok, "allocated": sample.allocated_bytes, "reserved": sample.reserved_bytes,
                          "context": context}
        finally:
            workload.close()
            torch.cuda.empty_cache()
    return out


def fit_constants(rows: list[dict], arch: str, gpu: str) -> dict:
    """Least squares reserved = k allocated + c over measured points; context from NVML readings."""
    points = [(r["measured"]["allocated"], r["measured"]["reserved"]) for r in rows if r["measured"].get("ok")]
    if len(points) < 2:
        raise SystemExit("calibrate_memory: fewer than two successful measurements; nothing to fit")
    xs, ys = zip(*points)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 1.0
    c = my - k * mx
    from visionbatch.fit.probes.trace import calibration

    data = json.loads(json.dumps(calibration()))
    contexts = [r["measured"]["context"] for r in rows if r["measured"].get("ok")]
    data.update(status="calibrated", measured_on=gpu, date=datetime.date.today().isoformat(),
                note=f"fitted by tools/calibrate_memory.py over {len(points)} measured steps",
                reserved_over_allocated=round(k, 4), reserved_extra_bytes=int(max(c, 0)), workspace_bytes=0)
    data["context_bytes"][arch] = int(statistics.median(contexts))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "datasets" / "shapes" / "data.yaml"))
    parser.add_argument("--models", nargs="+", default=["yolo11n", "yolo11s", "yolo11m"])
    parser.add_argument("--tasks", nargs="+", default=["detect", "segment"])
    parser.add_argument("--imgsz", nargs="+", type=int, default=[320, 640, 1024, 1280])
    parser.add_argument("--amp", nargs="+", type=lambda v: v.lower() in {"1", "true", "on"}, default=[True, False])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 8])
    parser.add_argument("--arch", default="default", help="the GPU's architecture key in calibration.json")
    parser.add_argument("--write", help="write the fitted calibration JSON here")
    parser.add_argument("--trace-only", action="store_true", help="no GPU: run the CPU trace side only")
    args = parser.parse_args(argv)

    import torch

    from visionbatch.fit.probes.trace import DeviceModel
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if gpu is None and not args.trace_only:
        print("calibrate_memory: no CUDA GPU here: run it on a machine with one, or pass --trace-only to run the "
              "CPU side", file=sys.stderr)
        return 2
    # the uncalibrated constants are set aside: compare tensor bytes first, then fit the overheads
    tensors_only = DeviceModel("trace", cuda=True, round_bytes=512)
    rows = []
    with offline():
        for model, task, imgsz, amp in grid_points(args):
            job = prepare(args.data, {"model": model, "task": task, "imgsz": imgsz, "amp": amp})
            started = time.perf_counter()
            traced = trace_point(job, {"gpu": gpu or "NVIDIA GPU"}, task, args.batches, tensors_only)
            trace_s = time.perf_counter() - started
            measured = measure_point(job, gpu, args.batches) if gpu else {}
            for b in args.batches:
                rows.append({"model": model, "task": task, "imgsz": imgsz, "amp": amp, "batch": b,
                             "trace": traced[b], "measured": measured.get(b, {}), "trace_s": trace_s})
                m = measured.get(b, {})
                print(f"{model:17s} {task:7s} {imgsz:5d} amp={amp!s:5s} b={b:3d} trace {traced[b]['allocated'] / 2**20:9.1f}"
                      f" MiB" + (f"  measured alloc {m['allocated'] / 2**20:9.1f} reserved {m['reserved'] / 2**20:9.1f}"
                                 if m.get("ok") else "  (not measured)" if not m else "  OOM"),
                      file=sys.stderr, flush=True)
    if not gpu:
        print("| model | task | imgsz | AMP | batch | traced allocated MiB | trace seconds (per point) |")
        print("|---|---|---:|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['task']} | {r['imgsz']} | {r['amp']} | {r['batch']} | "
                  f"{r['trace']['allocated'] / 2**20:.1f} | {r['trace_s']:.1f} |")
        return 0
    constants = fit_constants(rows, args.arch, gpu)
    model = DeviceModel("calibrated", cuda=True, round_bytes=512,
                        reserved_over_allocated=constants["reserved_over_allocated"],
                        reserved_extra_bytes=constants["reserved_extra_bytes"],
                        context_bytes=constants["context_bytes"][args.arch])
    print(f"\nDevice: {gpu}; {datetime.date.today().isoformat()}; constants: reserved = "
          f"{constants['reserved_over_allocated']} x allocated + {constants['reserved_extra_bytes'] / 2**20:.0f} MiB, "
          f"context {constants['context_bytes'][args.arch] / 2**20:.0f} MiB\n")
    print("| model | task | imgsz | AMP | batch | measured allocated MiB | traced allocated MiB | error | "
          "measured reserved+context MiB | predicted MiB | error |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        m = r["measured"]
        if not m.get("ok"):
            continue
        _, predicted = model.device_bytes(r["trace"]["allocated"])
        actual = m["reserved"] + m["context"]
        print(f"| {r['model']} | {r['task']} | {r['imgsz']} | {r['amp']} | {r['batch']} | "
              f"{m['allocated'] / 2**20:.0f} | {r['trace']['allocated'] / 2**20:.0f} | "
              f"{(r['trace']['allocated'] - m['allocated']) / m['allocated']:+.1%} | {actual / 2**20:.0f} | "
              f"{predicted / 2**20:.0f} | {(predicted - actual) / actual:+.1%} |")
    if args.write:
        Path(args.write).write_text(json.dumps(constants, indent=2) + "\n")
        print(f"\nwrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
