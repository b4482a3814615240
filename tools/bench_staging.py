"""What the dataset mirror costs: linking a COCO-sized dataset into visionbatch's cache, then reusing it.

Every `visionbatch train` hands Ultralytics a mirror of the checked dataset (visionbatch/staging.py):
one symlink per image and per label in `~/.cache/visionbatch/datasets`. This builds a synthetic
dataset of N images (empty files: the mirror never opens them) with one label each, in a temporary
folder, and times the first staging (build), a second one (reuse), and a staging after one label
file was added (a new stamp: rebuild, and the old mirror removed).

    python tools/bench_staging.py --images 118287   # COCO train2017's count

Prints a Markdown row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from visionbatch.dataset import load_dataset  # noqa: E402
from visionbatch.staging import staged_dataset  # noqa: E402


def make_dataset(root: Path, images: int, val: int) -> Path:
    for split, count in (("train", images), ("val", val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for number in range(count):
            (root / "images" / split / f"{number:012d}.jpg").touch()
            (root / "labels" / split / f"{number:012d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = root / "data.yaml"
    data.write_text("train: images/train\nval: images/val\nnames: [thing]\n")
    return data


def timed(summary, cache: Path) -> tuple[float, bool]:
    started = time.perf_counter()
    with staged_dataset(summary, cache) as staged:
        reused = staged.reused
    return time.perf_counter() - started, reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--val", type=int, default=5_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    try:
        data = make_dataset(folder / "ds", args.images, args.val)
        started = time.perf_counter()
        summary = load_dataset(data, check_images=False)
        check_s = time.perf_counter() - started
        cache = folder / "cache"
        build_s, _ = timed(summary, cache)
        reuse_s, reused = timed(summary, cache)
        assert reused
        (folder / "ds" / "images" / "train" / "extra.jpg").touch()
        (folder / "ds" / "labels" / "train" / "extra.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        summary = load_dataset(data, check_images=False)
        rebuild_s, _ = timed(summary, cache)
        mirrors = [p for p in next(cache.iterdir()).iterdir() if p.is_dir()]
        print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
              f"{platform.system()} {platform.release()}")
        print()
        print("| images (train + val) | label check s | first staging s | reuse s | rebuild after a change s "
              "| mirrors kept |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {args.images + args.val} | {check_s:.2f} | {build_s:.2f} | {reuse_s:.2f} | {rebuild_s:.2f} "
              f"| {len(mirrors)} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
