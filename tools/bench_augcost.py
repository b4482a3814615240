#!/usr/bin/env python3
"""The augcost tables of BENCHMARKS.md: per-transform cost, resolution, loader throughput, verdict.

One `visionbatch augcost DATA imgsz=S task=T --json` per (dataset, task, imgsz), each in its own
process with the command's defaults (sizes S/2, S, 2S; loader workers 0..CPUs x cache
False/ram/disk; the step timed on this machine), so each run's wall time is what a user waits.
Prints Markdown for BENCHMARKS.md; `--out` also keeps each run's augcost.json and augcost.png.

coco128 has only box labels, which Ultralytics cannot train segmentation on. For task=segment the
script links coco128's images into a temporary copy whose labels are each box written as a
4-vertex polygon (a rectangle mask): Ultralytics then runs its real segmentation pipeline
(segment resampling to 1000 points, polygon masks in Format) on real photos and object counts.
Masks from rectangles cost about what masks from real outlines do; the rows say 'box polygons'.

`--overhead` measures the profiler itself instead: per phase, the timed `__getitem__` against the
same images through an untimed twin (same seed), `--attempts` times per dataset, task and imgsz,
with the loader and the step cut to a minimum. The profiler aims at agreement within 5%; a busy
machine spreads the figure both ways, so it is reported here, never asserted in the test suite
(which checks the accounting exactly on simulated clocks). Exit 1 if a run fails or a timed output
differs from its untimed twin.

Usage:
    python tools/bench_augcost.py [--data datasets/shapes/data.yaml ../shared/datasets/coco128/data.yaml]
                                  [--imgsz 320 640] [--tasks detect segment] [--out DIR] [-- key=value ...]
    python tools/bench_augcost.py --overhead [--attempts 3] [--agreement 0.05] [--data ...] [--imgsz ...]
                                  [--tasks ...] [-- key=value ...]
    quick: python tools/bench_augcost.py --overhead --data datasets/shapes/data.yaml --tasks detect
                                         --imgsz 192 --attempts 1
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
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "datasets" / "shapes" / "data.yaml"
COCO128 = ROOT.parent / "shared" / "datasets" / "coco128" / "data.yaml"
TOP_ROWS = 8
AGREEMENT = 0.05  # |timed / untimed - 1| the profiler aims at, per phase
# --overhead: the per-transform profile as the old suite test ran it; the loader and the step cut short
OVERHEAD_ARGS = {"images": "32", "repeats": "5", "workers": "0", "loader_workers": "0", "loader_cache": "False",
                 "seconds": "0.3", "step_img_per_s": "50"}


def box_polygon_copy(data: Path, folder: Path) -> Path:
    """A copy of a box-labelled dataset whose labels are rectangles as polygons; images linked, not copied."""
    raw = yaml.safe_load(data.read_text())
    root = Path(raw.get("path") or data.parent)
    root = root if root.is_absolute() else (data.parent / root).resolve()
    splits = {}
    for key in ("train", "val"):
        source = (root / raw[key]).resolve()
        target = folder / "images" / key
        target.mkdir(parents=True, exist_ok=True)
        labels = folder / "labels" / key
        labels.mkdir(parents=True, exist_ok=True)
        for image in sorted(source.iterdir()):
            (target / image.name).symlink_to(image)
            label = label_file(image)
            rows = []
            if label.is_file():
                for line in label.read_text().splitlines():
                    if not line.strip():
                        continue
                    cls, x, y, w, h = line.split()[:5]
                    x, y, w, h = (float(v) for v in (x, y, w, h))
                    corners = [x - w / 2, y - h / 2, x + w / 2, y - h / 2, x + w / 2, y + h / 2, x - w / 2, y + h / 2]
                    rows.append(" ".join([cls] + [f"{min(max(c, 0.0), 1.0):.6f}" for c in corners]))
            (labels / f"{image.stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
        splits[key] = f"images/{key}"
    copy = {k: v for k, v in raw.items() if k not in {"path", "train", "val", "test", "download"}}
    copy.update(path=str(folder), **splits)
    (folder / "data.yaml").write_text(yaml.safe_dump(copy, sort_keys=False))
    return folder / "data.yaml"


def label_file(image: Path) -> Path:
    """Ultralytics' pairing: the last /images/ of the path becomes /labels/, the suffix .txt."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(labels.join(str(image).rsplit(images, 1))).with_suffix(".txt")


def run_augcost(data: Path, task: str, imgsz: int, extra: list[str], cwd: Path) -> tuple[dict | None, float]:
    """One augcost run in a fresh process: (report, wall seconds)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "visionbatch", "augcost", str(data), f"imgsz={imgsz}", f"task={task}",
           f"name={data.parent.name}-{task}-{imgsz}", *extra, "--json"]
    print(f"$ {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"  failed (exit {proc.returncode})", file=sys.stderr)
        return None, wall
    return json.loads(proc.stdout), wall


def phase(report: dict, name: str, imgsz: int | None = None) -> dict | None:
    imgsz = imgsz or report["imgsz"]
    chain = "pipeline" if report["pipeline"] else "default"
    return next((p for p in report["phases"] if (p["phase"], p["imgsz"], p["chain"]) == (name, imgsz, chain)), None)


def cost(profile: dict | None, name: str) -> dict | None:
    return next((t for t in profile["transforms"] if t["name"] == name), None) if profile else None


def summary_table(runs: list[tuple[str, str, int, dict, float]]) -> list[str]:
    lines = ["| dataset | task | imgsz | mosaic ms/img (p95) | close_mosaic ms/img | val ms/img | top transforms "
             "(mosaic) | timed vs untimed | growth (mosaic) | best loader img/s | step img/s (CPU) | verdict | "
             "wall s |", "|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|---:|"]
    for label, task, imgsz, report, wall in runs:
        mosaic, closed, val = phase(report, "mosaic"), phase(report, "close_mosaic"), phase(report, "val")
        top = ", ".join(f"{t['name']} {t['mean_ms']:.1f}" for t in mosaic["transforms"][:3]) if mosaic else "-"
        overhead = f"{timed_vs_untimed(mosaic):+.1%}" if mosaic else "-"
        growth = next((f["growth"].split(" (")[0] + f", {f['fixed_ms']:.1f} + {f['per_mpx_ms']:.1f}/Mpx"
                       for f in report["resolution"] if f["phase"] == "mosaic"), "-")
        loaders = [s for s in report["loader"] if s["images_per_s"]]
        best = max(loaders, key=lambda s: s["images_per_s"]) if loaders else None
        best_text = f"{best['images_per_s']:.0f} (w={best['workers']}, {best['cache']})" if best else "-"
        step = report["step"]["images_per_s"] if report["step"] else None
        verdict = report["verdict"]["bound"] if report["verdict"] else "-"
        lines.append(
            f"| {label} | {task} | {imgsz} | {mosaic['total_ms']:.2f} ({mosaic['total_p95_ms']:.1f}) | "
            f"{closed['total_ms']:.2f} | {val['total_ms']:.2f} | {top} | {overhead} | {growth} | {best_text} | "
            f"{step:.2f} | {verdict} | {wall:.0f} |" if mosaic and closed and val and step is not None else
            f"| {label} | {task} | {imgsz} | incomplete: see the JSON | | | | | | | | | {wall:.0f} |")
    return lines


def timed_vs_untimed(profile: dict) -> float:
    """Timed over untimed `__getitem__` time of a phase, minus 1 (as PhaseProfile.overhead)."""
    return profile["getitem_ms"] / profile["unprofiled_ms"] - 1 if profile["unprofiled_ms"] > 0 else 0.0


def overhead_table(runs: list[tuple[str, str, int, int, dict]]) -> list[str]:
    lines = [("| dataset | task | imgsz | attempt | phase | timed ms/img | untimed ms/img | timed vs untimed | "
              "identical output |"), "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for label, task, imgsz, attempt, report in runs:
        for p in report["phases"]:
            lines.append(f"| {label} | {task} | {imgsz} | {attempt} | {p['phase']} | {p['getitem_ms']:.3f} | "
                         f"{p['unprofiled_ms']:.3f} | {timed_vs_untimed(p):+.1%} | "
                         f"{'yes' if p['identical_output'] else 'NO'} |")
    return lines


def overhead_summary(runs: list[tuple[str, str, int, int, dict]], agreement: float) -> str:
    """One line: the spread of timed vs untimed over every phase of every run, and how many agree."""
    figures = [timed_vs_untimed(p) for *_, report in runs for p in report["phases"]]
    inside = sum(abs(figure) <= agreement for figure in figures)
    return (f"timed vs untimed __getitem__: {min(figures):+.1%} to {max(figures):+.1%} over {len(figures)} phases; "
            f"{inside} of {len(figures)} within +-{agreement:.0%}")


def transform_table(label: str, task: str, runs: list[tuple[str, str, int, dict, float]]) -> list[str]:
    mine = [(imgsz, report) for l, t, imgsz, report, _ in runs if (l, t) == (label, task)]
    if not mine:
        return []
    columns = [(imgsz, name, phase(report, name)) for imgsz, report in mine for name in ("mosaic", "close_mosaic")]
    first = columns[0][2] or columns[1][2]
    names = [t["name"] for t in first["transforms"]][:TOP_ROWS * 2]
    header = "| transform | " + " | ".join(f"{imgsz} {name} ms (share)" for imgsz, name, _ in columns) + " |"
    lines = [f"{label}, {task}: ms per image (mean) and share of the phase's total", "", header,
             "|---|" + "---:|" * len(columns)]
    for name in names:
        cells = []
        for _, _, profile in columns:
            row = cost(profile, name)
            cells.append(f"{row['mean_ms']:.2f} ({row['share']:.0%})" if row else "-")
        if any(c != "-" and not c.startswith("0.00") for c in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{p['total_ms']:.2f}**" if p else "-" for _, _, p in columns) + " |")
    return lines + [""]


def loader_table(runs: list[tuple[str, str, int, dict, float]]) -> list[str]:
    workers = sorted({s["workers"] for _, _, _, r, _ in runs for s in r["loader"]})
    lines = ["| dataset | task | imgsz | cache | " + " | ".join(f"workers={w}" for w in workers) + " | cache fill s |",
             "|---|---|---:|---|" + "---:|" * (len(workers) + 1)]
    for label, task, imgsz, report, _ in runs:
        for cache in ("none", "ram", "disk"):
            samples = {s["workers"]: s for s in report["loader"] if s["cache"] == cache}
            if not samples:
                continue
            cells = [f"{samples[w]['images_per_s']:.0f}" if w in samples and samples[w]["images_per_s"] else "-"
                     for w in workers]
            fill = max(s["cache_fill_s"] for s in samples.values())
            lines.append(f"| {label} | {task} | {imgsz} | {cache} | " + " | ".join(cells) + f" | {fill:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=[str(SHAPES)] + ([str(COCO128)] if COCO128.is_file() else []))
    parser.add_argument("--imgsz", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--tasks", nargs="+", default=["detect", "segment"])
    parser.add_argument("--out", help="keep each run's folder (augcost.json, augcost.png) here")
    parser.add_argument("--overhead", action="store_true",
                        help="measure the profiler's overhead instead: timed against untimed __getitem__ per phase")
    parser.add_argument("--attempts", type=int, default=3, help="with --overhead: runs per dataset, task and imgsz")
    parser.add_argument("--agreement", type=float, default=AGREEMENT,
                        help="with --overhead: the |timed / untimed - 1| counted as agreeing (default 0.05)")
    parser.add_argument("extra", nargs="*", help="more key=value arguments for every run (after --)")
    args = parser.parse_args(argv)
    if args.attempts < 1:
        parser.error(f"--attempts {args.attempts}: give at least 1")
    if args.overhead and any("=" not in token for token in args.extra):
        parser.error(f"{' '.join(t for t in args.extra if '=' not in t)}: give key=value arguments, e.g. -- repeats=3")
    with tempfile.TemporaryDirectory(prefix="bench-augcost-") as tmp:
        cwd = Path(args.out).resolve() if args.out else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        if args.overhead:
            return overhead(args, Path(tmp), cwd)
        runs = []
        for target, shown, task in targets(args.data, args.tasks, Path(tmp)):
            for imgsz in args.imgsz:
                report, wall = run_augcost(target, task, imgsz, args.extra, cwd)
                if report is not None:
                    runs.append((shown, task, imgsz, report, wall))
                    print(f"  {shown} {task} {imgsz}: {wall:.0f} s; {report['verdict']['message'] if report['verdict'] else ''}",
                          file=sys.stderr, flush=True)
    if not runs:
        return 1
    print(machine_line(runs[0][3]["versions"]))
    print("\n".join(summary_table(runs)))
    print()
    for label, task in dict.fromkeys((r[0], r[1]) for r in runs):
        print("\n".join(transform_table(label, task, runs)))
    print("DataLoader images/s (batch 16, the chain of the first training phase, timed after each worker's first "
          "batch):\n")
    print("\n".join(loader_table(runs)))
    return 0


def overhead(args: argparse.Namespace, tmp: Path, cwd: Path) -> int:
    """--overhead: the timed pass against its untimed twin, attempt by attempt, as a Markdown table."""
    runs, failed, load_before = [], 0, os.getloadavg()
    for target, shown, task in targets(args.data, args.tasks, tmp):
        for imgsz in args.imgsz:
            extra = dict(OVERHEAD_ARGS, sizes=str(imgsz))
            extra.update(token.split("=", 1) for token in args.extra)  # the user's key=value wins
            for attempt in range(1, args.attempts + 1):
                report, wall = run_augcost(target, task, imgsz, [f"{k}={v}" for k, v in extra.items()], cwd)
                if report is None:
                    failed += 1
                    continue
                runs.append((shown, task, imgsz, attempt, report))
                shown_phases = ", ".join(f"{p['phase']} {timed_vs_untimed(p):+.1%}" for p in report["phases"])
                print(f"  {shown} {task} {imgsz} attempt {attempt}: {wall:.0f} s; {shown_phases}", file=sys.stderr,
                      flush=True)
    if not runs:
        return 1
    print(machine_line(runs[0][4]["versions"]))
    print(f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("\n".join(overhead_table(runs)))
    print()
    print(overhead_summary(runs, args.agreement))
    differs = any(not p["identical_output"] for *_, report in runs for p in report["phases"])
    return 1 if failed or differs else 0


def targets(data: list[str], tasks: list[str], tmp: Path) -> Iterator[tuple[Path, str, str]]:
    """(data.yaml to run, label shown, task) for each dataset and task; box polygons for segment on box labels."""
    for path in (Path(d).resolve() for d in data):
        raw = yaml.safe_load(path.read_text())
        label = path.parent.name
        for task in tasks:
            if task == "segment" and not _has_polygons(path, raw):
                yield box_polygon_copy(path, tmp / f"{label}-box-polygons" / label), f"{label} (box polygons)", task
            else:
                yield path, label, task


def machine_line(versions: dict) -> str:
    return (f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python "
            f"{versions.get('python')}, torch {versions.get('torch')}, Ultralytics {versions.get('ultralytics')}, "
            f"albumentations {versions.get('albumentations')}, opencv-python {versions.get('opencv-python')}\n")


def _has_polygons(data: Path, raw: dict) -> bool:
    """True when the first non-empty training label file holds polygons (more than 5 columns)."""
    root = Path(raw.get("path") or data.parent)
    root = root if root.is_absolute() else (data.parent / root).resolve()
    images = (root / raw["train"]).resolve()
    for file in (label_file(image) for image in sorted(images.iterdir())):
        if not file.is_file():
            continue
        for line in file.read_text().splitlines():
            if line.strip():
                return len(line.split()) > 5
    return False


if __name__ == "__main__":
    sys.exit(main())
