#!/usr/bin/env python3
"""Wall time per epoch and peak memory: `visionbatch train` against plain Ultralytics.

Three runs per task, each in its own process, same arguments, same data:
  yolo-cli       `yolo train ...` as a user types it (Ultralytics trains on cpus - 1 threads)
  ultralytics    Ultralytics' Python API with the thread count visionbatch uses (all cores):
                 the like-for-like baseline for the wrapper's overhead
  visionbatch    `visionbatch train ...`

Per-epoch time comes from each run's results.csv (`time`, Ultralytics' own clock, so all three
are read the same way); peak memory is the process's max RSS from wait4(). Prints a Markdown
table for BENCHMARKS.md.

Usage:
    python tools/bench_train.py [--data datasets/shapes/data.yaml] [--epochs 3] [--imgsz 320]
                                [--tasks detect segment] [--repeats 1]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"detect": "yolo11n.yaml", "segment": "yolo11n-seg.yaml"}
ULTRALYTICS_API = """
import sys, yaml
from visionbatch.ultralytics.offline import offline
with offline():  # the same offline set-up and thread count as visionbatch, without its wrapper
    from ultralytics import YOLO
    args = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
    YOLO(args.pop("model"), task=args["task"]).train(data=sys.argv[1], **args)
"""


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit code) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss * 1024, proc.returncode


def epoch_times(results_csv: Path) -> list[float]:
    """Per-epoch seconds (train + val) from Ultralytics' cumulative `time` column."""
    with results_csv.open() as fh:
        cumulative = [float(row["time"]) for row in csv.DictReader(fh)]
    return [b - a for a, b in zip([0.0] + cumulative, cumulative)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "datasets" / "shapes" / "data.yaml"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--tasks", nargs="+", default=["detect", "segment"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    data = str(Path(args.data).resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0")  # plain yolo must not hit the network either
    yolo = shutil.which("yolo") or "yolo"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            common = [f"model={MODELS[task]}", f"task={task}", f"epochs={args.epochs}", f"imgsz={args.imgsz}",
                      "plots=False"]
            tools = {
                "yolo-cli": [yolo, "train", f"data={data}", *common],
                "ultralytics": [sys.executable, "-c", ULTRALYTICS_API, data, *common],
                "visionbatch": [sys.executable, "-m", "visionbatch", "train", data, *common],
            }
            for repeat in range(args.repeats):
                for tool, cmd in tools.items():
                    cwd = Path(tmp) / f"{task}-{tool}-{repeat}"
                    cwd.mkdir()
                    project = cwd / "runs"
                    cmd = cmd + ([f"project={project}"])
                    wall, rss, code = run(cmd, cwd, env)
                    found = list(project.rglob("results.csv"))
                    if code != 0 or not found:
                        print(f"{task} {tool}: failed (exit {code})", file=sys.stderr)
                        continue
                    times = epoch_times(found[0])
                    rows.append((task, tool, repeat, times, wall, rss))
                    print(f"{task:8s} {tool:12s} epochs {', '.join(f'{t:.1f}' for t in times)} s, "
                          f"wall {wall:.1f} s, peak RSS {rss / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"data {args.data}, epochs={args.epochs}, imgsz={args.imgsz}\n")
    print("| task | run | s/epoch (mean) | epochs (s) | process wall s | peak RSS MiB | vs ultralytics (same threads) |")
    print("|---|---|---:|---|---:|---:|---:|")
    for task in args.tasks:
        base = [sum(r[3]) / len(r[3]) for r in rows if r[0] == task and r[1] == "ultralytics"]
        for task_, tool, repeat, times, wall, rss in (r for r in rows if r[0] == task):
            mean = sum(times) / len(times)
            rel = f"{(mean / (sum(base) / len(base)) - 1) * 100:+.1f}%" if base else "-"
            print(f"| {task_} | {tool} | {mean:.2f} | {', '.join(f'{t:.1f}' for t in times)} | {wall:.1f} | "
                  f"{rss / 2**20:.0f} | {rel} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
