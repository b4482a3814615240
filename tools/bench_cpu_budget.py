#!/usr/bin/env python3
"""Does a CPU `memory_budget=` bound the training process? Fit against it, then train at the answer.

For each budget: `visionbatch fit DATA memory_budget=X` in its own process (its plan.json gives the
batch, the baseline it counted and the predicted peak), then a real `visionbatch train` at that
batch with the same step-shaping arguments, in its own process, whose resident memory is read
every 0.1 s from /proc (the main process, and the sum over it and any child processes: DataLoader
workers would be children) and, at the end, from wait4()'s ru_maxrss. A row is "under" when the
training process's peak RSS stays within the budget.

`--setup` instead measures what Ultralytics' trainer adds before its first step (the constants in
visionbatch/fit/probes/cpu.py): RSS around each part of `BaseTrainer._setup_train`, then stops.

Usage:
    python tools/bench_cpu_budget.py [--data datasets/shapes/data.yaml] [--budgets 2GiB 3GiB]
                                     [--imgsz 320] [--epochs 2] [--model yolo11n.yaml] [--task detect]
    python tools/bench_cpu_budget.py --setup [--model yolo11s.yaml] [--plots False]
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
SAMPLE_S = 0.1

SETUP_PROBE = """
import functools, sys
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.models.yolo.detect.train import DetectionTrainer
from visionbatch.devices.memory import current_rss_bytes

def logged(cls, name):
    method = getattr(cls, name)
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        before = current_rss_bytes()
        out = method(*args, **kwargs)
        print(f"SETUP {name} {before} {current_rss_bytes()}", file=sys.stderr, flush=True)
        return out
    setattr(cls, name, wrapper)

for name in ("setup_model", "get_dataloader", "get_validator", "plot_training_labels", "_setup_train"):
    logged(DetectionTrainer if name in DetectionTrainer.__dict__ else BaseTrainer, name)

def stop(trainer):
    raise SystemExit(0)

from ultralytics.utils.callbacks import base
base.default_callbacks["on_train_start"].append(stop)
from visionbatch.cli import main
sys.exit(main(sys.argv[1:]))
"""


FIT_BASELINE = """
import sys
from visionbatch.fit.api import trainer_globals
from visionbatch.fit.probes.cpu import CpuProbe, trainer_share
from visionbatch.ultralytics.job import prepare
from visionbatch.ultralytics.offline import offline
from visionbatch.ultralytics.spec import job_spec
from visionbatch.ultralytics.step import Workload
from visionbatch.values import parse_pairs

with offline():
    job = prepare(sys.argv[1], parse_pairs(sys.argv[2:]))
    with trainer_globals(True, "cpu"):
        workload = Workload(job_spec(job, "cpu"), "cpu")
        probe = CpuProbe(1 << 40, trainer=trainer_share(job))
        probe.count_model(workload.model)
        capacity = probe.capacity()
        print(f"FIT {probe.baseline_rss} {capacity.context_bytes} {probe.trainer.model_bytes}", file=sys.stderr)
"""


@dataclass(frozen=True)
class Usage:
    """One process's run: exit code, wall seconds, peak RSS (ru_maxrss), sampled peaks, workers seen."""

    code: int
    wall_s: float
    maxrss_bytes: int
    sampled_main_bytes: int
    sampled_all_bytes: int
    children: int


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            found += kids
            stack += kids
    return found


def run_sampled(cmd: list[str], log: Path, env: dict) -> Usage:
    """Run `cmd`, sampling the RSS of it and its descendants until it exits."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        main_peak = all_peak = children = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            kids = _descendants(proc.pid)
            main = _rss(proc.pid)
            main_peak = max(main_peak, main)
            all_peak = max(all_peak, main + sum(_rss(k) for k in kids))
            children = max(children, len(kids))
            time.sleep(SAMPLE_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Usage(proc.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024, main_peak, all_peak, children)


def fit(data: str, budget: str, shape: list[str], folder: Path, env: dict) -> dict:
    cmd = [sys.executable, "-m", "visionbatch", "fit", data, f"memory_budget={budget}", *shape,
           f"project={folder}", "name=fit"]
    usage = run_sampled(cmd, folder / "fit.log", env)
    if usage.code != 0:
        raise SystemExit(f"fit failed (exit {usage.code}): see {folder / 'fit.log'}")
    plan = json.loads((folder / "fit" / "plan.json").read_text())
    plan["fit_maxrss_bytes"] = usage.maxrss_bytes
    return plan


def setup(args: argparse.Namespace, env: dict) -> int:
    """RSS around each part of Ultralytics' trainer set-up, and the fit's own baseline for the same job."""
    with tempfile.TemporaryDirectory() as tmp:
        shape = [f"imgsz={args.imgsz}", f"model={args.model}", f"task={args.task}", f"plots={args.plots}"]
        cmd = [sys.executable, "-c", SETUP_PROBE, "train", args.data, "batch=4", "epochs=1", *shape,
               f"project={tmp}", "name=setup"]
        log = Path(tmp) / "setup.log"
        run_sampled(cmd, log, env)
        for line in log.read_text().splitlines():
            if line.startswith("SETUP "):
                _, name, before, after = line.split()
                print(f"{name:22s} {int(before) / MIB:7.0f} -> {int(after) / MIB:7.0f} MiB "
                      f"(+{(int(after) - int(before)) / MIB:.0f})")
        log = Path(tmp) / "fit.log"
        run_sampled([sys.executable, "-c", FIT_BASELINE, args.data, *shape], log, env)
        for line in log.read_text().splitlines():
            if line.startswith("FIT "):
                _, rss, context, weights = line.split()
                print(f"fit's baseline RSS {int(rss) / MIB:.0f} MiB; with the trainer's share (model copy "
                      f"{int(weights) / MIB:.0f} MiB) {int(context) / MIB:.0f} MiB: compare _setup_train's end above")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "datasets" / "shapes" / "data.yaml"))
    parser.add_argument("--budgets", nargs="+", default=["2GiB", "3GiB"])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--task", default="detect")
    parser.add_argument("--plots", default="True")
    parser.add_argument("--setup", action="store_true", help="measure the trainer's set-up share instead")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.setup:
        return setup(args, env)
    data = str(Path(args.data).resolve())
    shape = [f"imgsz={args.imgsz}", f"model={args.model}", f"task={args.task}", f"plots={args.plots}"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:
            folder = Path(tmp) / budget
            folder.mkdir()
            plan = fit(data, budget, shape, folder, env)
            batch = plan["batch_size"]
            cmd = [sys.executable, "-m", "visionbatch", "train", data, f"batch={batch}", f"epochs={args.epochs}",
                   *shape, f"project={folder}", "name=train"]
            usage = run_sampled(cmd, folder / "train.log", env)
            if usage.code != 0:
                print(f"{budget}: training failed (exit {usage.code}):\n"
                      + "\n".join((folder / "train.log").read_text().splitlines()[-15:]), file=sys.stderr)
                continue
            peak = max(usage.maxrss_bytes, usage.sampled_all_bytes)
            summary = json.loads((folder / "train" / "visionbatch.json").read_text())
            epochs = [e["peak_rss_bytes"] for e in summary.get("epochs", []) if e.get("peak_rss_bytes")]
            row = dict(budget=budget, usable=plan["usable_bytes"], aim=plan["budget_bytes"], batch=batch,
                       baseline=plan["context_bytes"], predicted=plan["predicted_bytes"],
                       fit_measured=plan["measured_bytes"],
                       val=plan["val_measured_bytes"] or plan["val_predicted_bytes"],
                       peak=peak, main=usage.maxrss_bytes, children=usage.children, train_s=usage.wall_s,
                       fit_process=plan["fit_maxrss_bytes"], epochs=epochs)
            rows.append(row)
            print(f"{budget}: batch {batch}, baseline {row['baseline'] / MIB:.0f} MiB, predicted "
                  f"{row['predicted'] / MIB:.0f} MiB, training peak RSS {peak / MIB:.0f} MiB "
                  f"({'under' if peak <= row['usable'] else 'OVER'} the budget; {usage.children} child processes; "
                  f"{usage.wall_s:.0f} s; per epoch {', '.join(f'{e / MIB:.0f}' for e in epochs)} MiB)",
                  file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs; data {args.data}; {args.model} {args.task} "
          f"imgsz={args.imgsz}, {args.epochs} epochs, plots={args.plots}\n")
    print("| budget | aim (0.9x) | batch | baseline MiB | predicted MiB | fit measured MiB | val MiB | training peak "
          "RSS MiB | per epoch MiB | peak / predicted | worker processes | verdict | fit process peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|")
    for r in rows:
        verdict = "under" if r["peak"] <= r["usable"] else "OVER"
        print(f"| {r['budget']} | {r['aim'] / MIB:.0f} | {r['batch']} | {r['baseline'] / MIB:.0f} | "
              f"{r['predicted'] / MIB:.0f} | {r['fit_measured'] / MIB:.0f} | {r['val'] / MIB:.0f} | "
              f"{r['peak'] / MIB:.0f} | {', '.join(f'{e / MIB:.0f}' for e in r['epochs'])} | "
              f"{r['peak'] / r['predicted']:.3f} | {r['children']} | {verdict} | "
              f"{r['fit_process'] / MIB:.0f} |")
    return 0 if all(r["peak"] <= r["usable"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
