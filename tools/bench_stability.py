#!/usr/bin/env python3
"""Does `visionbatch fit` choose the same batch every time on identical input? (issue 11, stable choices)

Runs `fit_batch` N times on the same data, model, imgsz and CPU memory budget (real CPU steps),
each run in its own process, as a user running the command again would. For each run it prints
the batch chosen and the largest that fits, the probes, the timed speeds with their 95% intervals,
how the timing stopped (decided, or the time bound) and the reason; then whether all runs agree.
The load average is printed before and after: on a busy machine the intervals stay wide, and the
rule then keeps the largest batch that fits rather than deciding on noise.

Usage:
    python tools/bench_stability.py [--runs 5] [--data datasets/shapes/data.yaml] [--model yolo11n.yaml]
                                    [--imgsz 160] [--budget 1GiB] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, as the other tools


def one_run(args: argparse.Namespace, out: Path) -> None:
    """The worker: one fit, its plan written as JSON to `out`."""
    from visionbatch.fit.api import fit_batch

    # plan_cache=False: a reused plan would agree with the first run by construction (fit/cache.py)
    plan = fit_batch(args.data, model=args.model, imgsz=args.imgsz, memory_budget=args.budget, plan_cache=False)
    out.write_text(json.dumps(plan.to_dict()))


def describe(plan: dict) -> list[str]:
    from visionbatch.stats import smallest_near_best

    probes = ", ".join(f"{s['batch_size']}" + ("" if s["ok"] else " (OOM)") for s in plan["samples"]
                       if s["phase"] == "train")
    lines = [f"batch {plan['batch_size']} (largest that fits {plan['max_batch_size']}); probes {probes}; "
             f"planned in {plan['planning_s']:.1f} s"]
    timings = plan.get("timings")
    if timings:
        stop = "decided" if timings["settled"] else f"stopped at the {timings['bound_s']:g} s bound"
        lines.append(f"  timing: {timings['blocks']} interleaved blocks in {timings['elapsed_s']:.1f} s, {stop}")
        for s in timings["speeds"]:
            high = "unbounded" if s["high_img_per_s"] is None else f"{s['high_img_per_s']:.2f}"
            lines.append(f"    batch {s['batch_size']:>3}: {s['img_per_s']:.2f} img/s, 95% interval "
                         f"{s['low_img_per_s']:.2f}-{high} ({s['samples']} steps)")
        if len(timings["speeds"]) > 1:  # what the old point rule (3% of the best mean) would have chosen
            old = smallest_near_best({s["batch_size"]: s["img_per_s"] for s in timings["speeds"]})
            lines.append(f"  the old rule (smallest mean within 3% of the best mean) would choose {old}")
    lines.append(f"  why: {plan['reason']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", default=str(ROOT / "datasets" / "shapes" / "data.yaml"))
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--budget", default="1GiB", help="memory_budget= for the CPU steps")
    parser.add_argument("--json", type=Path, help="write every run's plan here")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the worker's output file
    args = parser.parse_args(argv)
    if args.one:
        one_run(args, args.one)
        return 0

    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} before")
    print(f"input: {args.data} model={args.model} imgsz={args.imgsz} memory_budget={args.budget}, "
          f"{args.runs} runs, each in its own process")
    plans = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(1, args.runs + 1):
            out = Path(folder) / f"plan{run}.json"
            started = time.perf_counter()
            command = [sys.executable, __file__, "--one", str(out), "--data", args.data, "--model", args.model,
                       "--imgsz", str(args.imgsz), "--budget", args.budget]
            done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"run {run} failed:\n{done.stderr[-2000:]}")
                return 2
            plan = json.loads(out.read_text())
            plans.append(plan)
            lines = describe(plan)
            print(f"run {run} ({time.perf_counter() - started:.0f} s wall, load {os.getloadavg()[0]:.2f}): {lines[0]}")
            print("\n".join(lines[1:]), flush=True)
    batches = [p["batch_size"] for p in plans]
    agree = len(set(batches)) == 1
    print(f"batches chosen: {batches}: {'all agree' if agree else 'they differ'}; "
          f"load average {os.getloadavg()[0]:.2f} after")
    # two causes apart: the memory answer (largest that fits) and the speed rule (a smaller batch)
    print(f"largest that fits: {[p['max_batch_size'] for p in plans]}; the speed rule chose a smaller batch in "
          f"{sum(p['batch_size'] < p['max_batch_size'] for p in plans)} of {len(plans)} runs")
    if args.json:
        args.json.write_text(json.dumps(plans, indent=2) + "\n")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
