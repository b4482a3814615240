#!/usr/bin/env python3
"""What the plan cache saves: a cold `fit` against the same `fit` answered from the cache (issue 12).

Runs `fit_batch` in a fresh process per run, as a user running the command again would, with
XDG_CACHE_HOME in a temporary folder (the real ~/.cache is never touched): run 1 fits and stores
the plan, runs 2.. reuse it. Prints each run's wall seconds (process start to exit, imports
included), the batch, whether the plan was reused, and the entry `visionbatch cache list` shows.

Usage:
    python tools/bench_plan_cache.py [--runs 3] [--data datasets/shapes/data.yaml] [--imgsz 160]
                                     [--budget 3GiB] [--json FILE]
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
    """The worker: one fit, its batch and reuse written as JSON to `out`."""
    from visionbatch.fit.api import fit_batch

    started = time.perf_counter()
    plan = fit_batch(args.data, imgsz=args.imgsz, memory_budget=args.budget)
    out.write_text(json.dumps({"batch": plan.batch_size, "reused": plan.reused is not None,
                               "fit_s": round(time.perf_counter() - started, 2), "planning_s": plan.planning_s}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", default=str(ROOT / "datasets" / "shapes" / "data.yaml"))
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--budget", default="3GiB")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        one_run(args, args.worker)
        return 0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "XDG_CACHE_HOME": home}
        for run in range(1, args.runs + 1):
            out = Path(home) / f"run{run}.json"
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--worker", str(out), "--data", args.data, "--imgsz",
                            str(args.imgsz), "--budget", args.budget], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            row = {"run": run, "wall_s": round(time.perf_counter() - started, 2), **json.loads(out.read_text())}
            rows.append(row)
            print(f"run {run}: {row['wall_s']:6.1f} s wall, fit_batch {row['fit_s']:6.1f} s, batch {row['batch']}, "
                  f"{'reused' if row['reused'] else 'fitted and stored'}")
        listing = subprocess.run([sys.executable, "-m", "visionbatch", "cache", "list"], env=env, text=True,
                                 capture_output=True, cwd=ROOT).stdout
    print(listing.rstrip())
    same = len({row["batch"] for row in rows}) == 1
    print(f"same batch every run: {same}; load {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "same_batch": same}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
