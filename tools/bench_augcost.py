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

Usage:
    python tools/bench_augcost.py [--data datasets/shapes/data.yaml ../shared/datasets/coco128/data.yaml]
                                  [--imgsz 320 640] [--tasks detect segment] [--out DIR] [-- key=value ...]
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "datasets" / "shapes" / "data.yaml"
COCO128 = ROOT.parent / "shared" / "datasets" / "coco128" / "data.yaml"
TOP_ROWS = 8


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
        overhead = (f"{mosaic['getitem_ms'] / mosaic['unprofiled_ms'] - 1:+.1%}" if mosaic else "-")
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
    parser.add_argument("extra", nargs="*", help="more key=value arguments for every run (after --)")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-augcost-") as tmp:
        cwd = Path(args.out).resolve() if args.out else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        for data in (Path(d).resolve() for d in args.data):
            raw = yaml.safe_load(data.read_text())
            label = data.parent.name
            for task in args.tasks:
                target, shown = data, label
                if task == "segment" and not _has_polygons(data, raw):
                    target = box_polygon_copy(data, Path(tmp) / f"{label}-box-polygons" / label)
                    shown = f"{label} (box polygons)"
                for imgsz in args.imgsz:
                    report, wall = run_augcost(target, task, imgsz, args.extra, cwd)
                    if report is not None:
                        runs.append((shown, task, imgsz, report, wall))
                        print(f"  {shown} {task} {imgsz}: {wall:.0f} s; {report['verdict']['message'] if report['verdict'] else ''}",
                              file=sys.stderr, flush=True)
    if not runs:
        return 1
    versions = runs[0][3]["versions"]
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python "
          f"{versions.get('python')}, torch {versions.get('torch')}, Ultralytics {versions.get('ultralytics')}, "
          f"albumentations {versions.get('albumentations')}, opencv-python {versions.get('opencv-python')}\n")
    print("\n".join(summary_table(runs)))
    print()
    for label, task in dict.fromkeys((r[0], r[1]) for r in runs):
        print("\n".join(transform_table(label, task, runs)))
    print("DataLoader images/s (batch 16, the chain of the first training phase, timed after each worker's first "
          "batch):\n")
    print("\n".join(loader_table(runs)))
    return 0


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
