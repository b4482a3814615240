#!/usr/bin/env python3
"""How close the CPU trace comes to the real step, on this machine (no GPU needed).

For each model, task, image size and batch: the real training step and validation at 2x, run on
CPU tensors under MemTracker (the CPU probe of `visionbatch fit memory_budget=...`), against the
trace estimate for a CPU device (FakeTensorMode, no CUDA overheads). Columns: real and traced
peak tensor bytes, their error, and the seconds each took. The CUDA side of the estimate is
checked by tools/gpu_check.py (its Phase A) on a GPU.

Usage:
    python tools/bench_trace.py [--data datasets/shapes/data.yaml] [--models yolo11n yolo11s]
                                [--imgsz 320 640] [--batches 1 4]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {("yolo11n", "detect"): "yolo11n.yaml", ("yolo11n", "segment"): "yolo11n-seg.yaml",
          ("yolo11s", "detect"): "yolo11s.yaml", ("yolo11s", "segment"): "yolo11s-seg.yaml"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "datasets" / "shapes" / "data.yaml"))
    parser.add_argument("--models", nargs="+", default=["yolo11n"])
    parser.add_argument("--tasks", nargs="+", default=["detect", "segment"])
    parser.add_argument("--imgsz", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    args = parser.parse_args(argv)

    from visionbatch.fit.api import trainer_globals
    from visionbatch.fit.probes.cpu import TensorProbe
    from visionbatch.fit.probes.trace import DeviceModel, TraceEstimator
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline
    from visionbatch.ultralytics.spec import job_spec
    from visionbatch.ultralytics.step import Workload

    rows = []
    with offline(), trainer_globals(True, "cpu"):
        for name in args.models:
            for task in args.tasks:
                for imgsz in args.imgsz:
                    job = prepare(args.data, {"model": MODELS[(name, task)], "task": task, "imgsz": imgsz})
                    spec = job_spec(job, "cpu", "", None)
                    start = time.perf_counter()
                    estimator = TraceEstimator(spec, DeviceModel.cpu())
                    setup_s = time.perf_counter() - start
                    workload = Workload(spec, "cpu")
                    probe = TensorProbe(1 << 40)
                    for b in args.batches:
                        for phase, size in (("train", b), ("val", 2 * b)):
                            start = time.perf_counter()
                            est = estimator.train(size) if phase == "train" else estimator.val(size)
                            trace_s = time.perf_counter() - start
                            step = (lambda s=size: workload.train_step(s, probe.pass_boundary)) if phase == "train" \
                                else (lambda s=size: workload.val_step(s))
                            start = time.perf_counter()
                            real = probe.measure(step, size, phase, workload.persistent()).peak_bytes
                            real_s = time.perf_counter() - start
                            rows.append((MODELS[(name, task)], imgsz, phase, size, real, est.allocated_bytes,
                                         real_s, trace_s))
                            print(f"{rows[-1][0]:17s} {imgsz:5d} {phase:5s} {size:3d}: real {real / 2**20:8.1f} MiB "
                                  f"({real_s:.1f} s), trace {est.allocated_bytes / 2**20:8.1f} MiB ({trace_s:.1f} s)",
                                  file=sys.stderr, flush=True)
                    workload.close()
                    print(f"  estimator set-up (model, optimizer state): {setup_s:.1f} s", file=sys.stderr)
    print(f"\nMachine: {platform.machine()}, {__import__('os').cpu_count()} CPUs; data {args.data}; labels: the "
          f"run's modelled density (visionbatch.ultralytics.density, oom_risk 1e-3) for training, the densest "
          f"validation images for validation\n")
    print("| model | imgsz | phase | batch | real CPU step MiB | trace MiB | error | real s | trace s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for model, imgsz, phase, size, real, traced, real_s, trace_s in rows:
        print(f"| {model} | {imgsz} | {phase} | {size} | {real / 2**20:.1f} | {traced / 2**20:.1f} | "
              f"{(traced - real) / real:+.1%} | {real_s:.1f} | {trace_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
