#!/usr/bin/env python3
"""How close, in how many probes, does `fit`'s search get to the true largest batch? (simulated devices)

The search (`visionbatch.fit.planner.plan_batch`) runs against N random simulated devices whose
memory curves are known exactly, so the true largest batch is known too: a fixed cost and a cost
per image, sometimes a quadratic term, sometimes a step (a new allocator segment, a kernel that
switches algorithm), sometimes a fixed reading noise; validation at 2x the batch with its own
slope; a card of 2 to 12 GiB (above it a step runs out of memory, leaving no reading). For each it
prints how the answer compares with the true largest batch and how many probes it took, and,
with `--against REV`, the same for the planner at a git revision, on the same devices.

These are not GPU measurements: they check the search's rules, with nothing timed.

Usage:
    python tools/bench_planner.py [--cases 300] [--seed 7] [--noise 0,0,3] [--against HEAD~1]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, as the other tools

MIB, GIB = 1 << 20, 1 << 30


def random_device(rng: random.Random, noises: list[float]):
    """A memory function (batch, phase) -> bytes, and the card's size."""
    fixed, per = rng.uniform(300, 1500), rng.uniform(3, 60)
    quad = rng.choice([0, 0, rng.uniform(0, 0.3)])
    step_at, step = rng.choice([None, None, rng.randint(5, 200)]), rng.uniform(50, 600)
    val_per, total = per * rng.uniform(0.2, 0.6), rng.choice([2, 3, 4, 6, 8, 12]) * GIB
    noise = rng.choice(noises)

    def memory(batch: int, phase: str) -> float:
        if phase == "train":
            mib = fixed + per * batch + quad * batch * batch + (step if step_at and batch >= step_at else 0)
        else:
            mib = fixed + val_per * batch
        return (mib + noise * ((batch * 7919) % 5 - 2)) * MIB  # a fixed pattern: the same every run

    return memory, total


def true_largest(memory, total: int) -> int:
    """The largest batch whose training and validation at 2x fit, below the first whose training does not."""
    best = 0
    for batch in range(1, 1 << 14):
        if memory(batch, "train") > total:
            break
        if memory(2 * batch, "val") <= total:
            best = batch
    return best


def planner_at(revision: str) -> ModuleType:
    """visionbatch.fit.planner as it was at a git revision (its imports resolve to today's package)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:visionbatch/fit/planner.py"],
                            check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(prefix="bench-planner-") as folder:
        path = Path(folder) / "planner_then.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("planner_then", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["planner_then"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


def run(planner: ModuleType, memory, total: int) -> tuple[int, int]:
    """(largest batch found, training probes run) on one simulated device."""
    from visionbatch.fit.probes.simulated import SimulatedBudget, UntimedRunner

    probe = SimulatedBudget(memory, total_bytes=total, noise_floor_bytes=4 * MIB)  # the card's size is the budget
    plan = planner.plan_batch(probe, UntimedRunner(), 1.0, dataset_images=100_000)
    return plan.max_batch_size, sum(1 for s in plan.samples if s.phase == "train")


def summary(name: str, results: list[tuple[int, int]], truths: list[int]) -> str:
    ratios = [found / true for (found, _), true in zip(results, truths)]
    exact = sum(found == true for (found, _), true in zip(results, truths))
    return (f"{name}: found/true mean {statistics.mean(ratios):.4f}, worst {min(ratios):.3f}; exact {exact}/"
            f"{len(truths)}; at least 90% of the true largest {sum(r >= 0.9 for r in ratios)}/{len(truths)}; "
            f"probes mean {statistics.mean(p for _, p in results):.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--noise", default="0,0,3", help="MiB of reading noise, one drawn per device")
    parser.add_argument("--against", help="a git revision whose planner runs on the same devices")
    args = parser.parse_args(argv)
    from visionbatch.fit import planner

    rng = random.Random(args.seed)
    noises = [float(v) for v in args.noise.split(",")]
    devices = [random_device(rng, noises) for _ in range(args.cases)]
    devices = [(memory, total, true_largest(memory, total)) for memory, total in devices]
    devices = [d for d in devices if d[2] >= 1]
    truths = [true for _, _, true in devices]
    now = [run(planner, memory, total) for memory, total, _ in devices]
    print(f"{len(devices)} simulated devices (seed {args.seed}, noise {args.noise} MiB), max_probes "
          f"{planner.MAX_PROBES}")
    print(summary("this checkout", now, truths))
    if args.against:
        earlier = planner_at(args.against)
        then = [run(earlier, memory, total) for memory, total, _ in devices]
        print(summary(args.against, then, truths))
        better = sum(a[0] > b[0] for a, b in zip(now, then))
        worse = [(true, b[0], a[0]) for a, b, true in zip(now, then, truths) if a[0] < b[0]]
        print(f"this checkout finds a larger batch on {better}, a smaller on {len(worse)}"
              + (f" (true, {args.against}, now: {worse[:8]})" if worse else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
