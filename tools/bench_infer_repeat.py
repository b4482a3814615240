#!/usr/bin/env python3
"""Does `visionbatch infer` give the same choice when run again? (issue 13: five runs, the same choice 4 times)

Runs the same `visionbatch infer` command N times in each of two modes, interleaved (kept, alone, kept,
alone, ...) so that both meet the same spells of the machine, each run in its own process as a user would:

  kept    the default, keep_choice=True, with its own empty visionbatch cache at the start: the first run
          chooses, later runs keep that policy while their own measurements carry it (`infer.kept`);
  alone   keep_choice=False, in another empty cache: every run chooses from its own measurements.

For each run it prints the policy chosen (batch, queue delay), batch 1's measured throughput with its 95%
interval (the machine's speed at that moment), the simulated p99 and utilisation, the replay's p99, and for
kept runs what that run alone would have chosen. Then, per mode, how many runs agree with the most common
choice.

Usage:
    python tools/bench_infer_repeat.py [--runs 5] [--model yolo11n.yaml] [--out FILE]
                                       [--infer-args imgsz=320 streams=4 fps=10 latency_ms=500 max_seconds=30]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = ["imgsz=320", "streams=4", "fps=10", "latency_ms=500", "max_seconds=30"]


def one_run(model: str, infer_args: list[str], mode: str, index: int, cache: Path, project: Path) -> dict:
    """One `visionbatch infer --json` in its own process; its plan, or the error."""
    argv = [sys.executable, "-m", "visionbatch", "infer", model, *infer_args, f"project={project}",
            f"name={mode}-{index}", "--json"]
    if mode == "alone":
        argv.insert(-1, "keep_choice=False")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"], "wall_s": wall}
    plan = json.loads(done.stdout)
    plan["bench_wall_s"] = wall
    return plan


def policy(plan: dict) -> str:
    if plan.get("batch_size") is None:
        return "none"
    delay = plan.get("queue_delay_ms")
    return f"{plan['batch_size']}" + ("" if delay is None else f" ({delay:g} ms)")


def row(mode: str, index: int, plan: dict) -> str:
    if "error" in plan:
        return f"| {index} | {mode} | error: {plan['error'][0]} | | | | | |"
    first = next((m for m in plan["measurements"] if m["batch_size"] == 1), None)
    speed = "-" if first is None else (f"{first['throughput_per_s']:.1f} ({first.get('throughput_low_per_s') or 0:.1f}"
                                       f"-{first.get('throughput_high_per_s') or 0:.1f})")
    sim = plan.get("simulated") or {}
    simulated = f"{sim['latency_p99_ms']:.1f} ({sim['utilisation']:.0%})" if sim else "-"
    replays = plan.get("replayed") or []
    replayed = f"{replays[-1]['latency_p99_ms']:.1f}" if replays else "-"
    earlier = plan.get("earlier")
    if earlier is None:
        alone = "(first)" if mode == "kept" else "-"
    else:
        delay = earlier.get("alone_queue_delay_ms")
        alone = (f"{earlier.get('alone_batch_size')}" + ("" if delay is None else f" ({delay:g} ms)")
                 + f"; {'kept' if earlier['kept'] else 'not kept'}: {earlier['why']}")
    return (f"| {index} | {mode} | {policy(plan)} | {speed} | {simulated} | {replayed} | {alone} | "
            f"{plan['bench_wall_s']:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--infer-args", nargs="*", default=DEFAULT_ARGS, metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vb-repeat-") as scratch:
        base = Path(scratch)
        plans: dict[str, list[dict]] = {"kept": [], "alone": []}
        for index in range(1, args.runs + 1):
            for mode in ("kept", "alone"):
                plan = one_run(args.model, args.infer_args, mode, index, base / f"cache-{mode}", base / "runs")
                plans[mode].append(plan)
                print(f"run {index} {mode}: {policy(plan) if 'error' not in plan else plan['error']}", file=sys.stderr)
    lines = [f"`visionbatch infer {args.model} {' '.join(args.infer_args)}`, {args.runs} runs per mode, "
             f"interleaved; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}",
             "",
             "| run | mode | chosen batch (queue delay) | batch 1 img/s (95%) | sim p99 ms (util.) | replayed p99 ms | "
             "this run alone; earlier choice | wall |",
             "|---|---|---|---|---|---|---|---|"]
    for index in range(args.runs):
        for mode in ("kept", "alone"):
            lines.append(row(mode, index + 1, plans[mode][index]))
    lines.append("")
    for mode in ("kept", "alone"):
        choices = [policy(p) if "error" not in p else "error" for p in plans[mode]]
        batches = [c.split(" ")[0] for c in choices]
        common, count = collections.Counter(batches).most_common(1)[0]
        lines.append(f"- {mode}: batches {', '.join(batches)}: batch {common} in {count} of {len(batches)} "
                     f"({'meets' if count >= 0.8 * len(batches) else 'misses'} 4 of 5)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
