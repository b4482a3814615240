#!/usr/bin/env python3
"""visionbatch's prediction against published Ultralytics training logs (their GPU_mem column).

For each row of tools/published_logs.yaml: a stand-in dataset in a temporary folder (the run's
class count and image counts, tiny images, labels whose per-image count histogram follows the
row's label estimate), then the public fixed-batch API,
`fit_batch(data, model=..., imgsz=..., batch_size=b, target=<the log's GPU>, epochs=..., ...)`.
Like for like: `check.train.reserved_bytes` (torch's reserved memory, no CUDA context) against
the log's GPU_mem at epoch 1 (training only: validation first runs after it). The table also
shows the largest GPU_mem printed in any epoch, against the larger of the training and
validation predictions. Nothing is tuned per row: one stand-in rule for every row.

Usage:
    python tools/bench_published.py [--rows ID_OR_NUMBER ...] [--yaml tools/published_logs.yaml]
                                    [--oom-risk 1e-3] [--json OUT.json] [--list]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_YAML = ROOT / "tools" / "published_logs.yaml"
COCO128_LABELS = ROOT.parent / "shared" / "datasets" / "coco128" / "labels" / "train2017"
UNIT_BYTES = {"GB": 10**9, "GiB": 2**30}  # GPU_mem's divisor: 1e9 up to 8.3.75, 2**30 from 8.3.76
FIRST_GIB_VERSION = (8, 3, 76)
TARGET_SET_VERSION = (8, 3, 0)  # the rows the target is stated for
STANDIN_IMAGE_PX = 32  # stand-in images are never decoded for a target's prediction, only their headers read
GIB = 2**30
sys.path.insert(0, str(ROOT))  # run from a checkout, as the other tools


def parse_version(text: str) -> tuple[int, ...]:
    """An Ultralytics version as a comparable tuple.

    Examples:
        >>> parse_version("8.3.75"), parse_version("8.4.190") > parse_version("8.3.76")
        ((8, 3, 75), True)
    """
    return tuple(int(part) for part in str(text).split("."))


def gpu_mem_unit(version: str) -> str:
    """The unit an Ultralytics version prints GPU_mem in: 'GB' (1e9 bytes) up to 8.3.75, 'GiB' from 8.3.76.

    Examples:
        >>> gpu_mem_unit("8.3.75"), gpu_mem_unit("8.3.76"), gpu_mem_unit("8.0.2")
        ('GB', 'GiB', 'GB')
    """
    return "GiB" if parse_version(version) >= FIRST_GIB_VERSION else "GB"


def printed_bytes(value: float, unit: str) -> int:
    """Bytes behind a printed GPU_mem figure.

    Examples:
        >>> printed_bytes(2.0, "GiB"), printed_bytes(2.43, "GB")
        (2147483648, 2430000000)
    """
    return round(value * UNIT_BYTES[unit])


def error_fraction(predicted_bytes: int, reported_bytes: int) -> float:
    """Signed relative error of a prediction: positive when it is over the report.

    Examples:
        >>> error_fraction(110, 100), error_fraction(95, 100)
        (0.1, -0.05)
    """
    return (predicted_bytes - reported_bytes) / reported_bytes


def in_target_set(row: dict[str, Any]) -> bool:
    """Whether a row counts toward the issue's target (Ultralytics >= 8.3)."""
    return parse_version(row["version"]) >= TARGET_SET_VERSION


def poisson_quantile(mean: float, quantile: float) -> int:
    """The smallest k with P(Poisson(mean) <= k) >= quantile.

    Examples:
        >>> poisson_quantile(0.0, 0.99), poisson_quantile(1.0, 0.5), poisson_quantile(1.0, 0.99)
        (0, 1, 4)
    """
    term = math.exp(-mean)
    cdf, k = term, 0
    while cdf < quantile and k < 10_000:
        k += 1
        term *= mean / k
        cdf += term
    return k


def label_counts(labels: dict[str, Any], images: int, backgrounds: int) -> list[int]:
    """Per-image label counts for a stand-in split: the one shape rule every estimated row shares.

    `backgrounds` images carry none; each of the others carries 1 + Poisson(mean - 1), taken at
    evenly spaced quantiles so the histogram is exact and repeatable, not sampled.

    Examples:
        >>> label_counts({"mean_per_labelled_image": 1.0}, 4, 1)
        [0, 1, 1, 1]
        >>> label_counts({"mean_per_labelled_image": 3.0}, 5, 0)
        [1, 2, 3, 4, 5]
    """
    labelled = images - backgrounds
    extra = max(float(labels["mean_per_labelled_image"]) - 1.0, 0.0)
    counts = [1 + poisson_quantile(extra, (i + 0.5) / labelled) for i in range(labelled)]
    return [0] * backgrounds + counts


def box_layout(count: int) -> list[tuple[float, float, float, float]]:
    """Where a stand-in image's `count` boxes go (normalised x1, y1, x2, y2).

    One rule for every row, since no log says where its objects are: a ceil(sqrt(n)) grid over the
    image, each box 0.6 of its cell, centred in it.

    Examples:
        >>> box_layout(1)
        [(0.2, 0.2, 0.8, 0.8)]
        >>> [tuple(round(v, 2) for v in b) for b in box_layout(2)]
        [(0.1, 0.1, 0.4, 0.4), (0.6, 0.1, 0.9, 0.4)]
    """
    side = math.ceil(math.sqrt(count)) if count else 0
    boxes = []
    for i in range(count):
        row, col = divmod(i, side)
        cell = 1.0 / side
        x1, y1 = col * cell + 0.2 * cell, row * cell + 0.2 * cell
        boxes.append((x1, y1, x1 + 0.6 * cell, y1 + 0.6 * cell))
    return boxes


@dataclass(frozen=True, slots=True)
class Result:
    """One row's prediction against its report (bytes throughout)."""

    row_id: str
    gpu: str
    version: str
    model: str
    task: str
    imgsz: int
    batch_size: int
    labels_mean: float
    labels_planned: int | None
    reported_bytes: int
    predicted_bytes: int
    later_reported_bytes: int
    predicted_val_bytes: int | None
    target_set: bool
    seconds: float
    predicted_after_val_bytes: int | None = None  # reserved once validation has ran (the plan's cache rule)

    @property
    def predicted_later_bytes(self) -> int:
        """The later epochs' prediction: what the plan budgets after the first validation, else the larger peak."""
        return self.predicted_after_val_bytes or max(self.predicted_bytes, self.predicted_val_bytes or 0)

    @property
    def error(self) -> float:
        return error_fraction(self.predicted_bytes, self.reported_bytes)

    @property
    def later_error(self) -> float:
        return error_fraction(self.predicted_later_bytes, self.later_reported_bytes)


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and worst |error| over a group of rows."""

    rows: int
    median_abs_error: float
    worst_error: float
    worst_row: str


def summarize(results: list[Result], later: bool = False) -> dict[str, Summary]:
    """Median |error| and the worst (signed) error for the >= 8.3 detection rows, segmentation rows,
    both, and the older rows; groups with no rows are left out.

    Examples:
        >>> r = lambda i, task, p, ok=True: Result(i, "T4", "8.3.1" if ok else "8.0.1", "m", task, 640, 16, 1.0,
        ...                                        None, 100, p, 100, None, ok, 0.0)
        >>> s = summarize([r("a", "detect", 103), r("b", "detect", 90), r("c", "segment", 120), r("d", "detect", 50, False)])
        >>> s["detect"], s["all"].worst_row, s["older"].rows
        (Summary(rows=2, median_abs_error=0.065, worst_error=-0.1, worst_row='b'), 'c', 1)
    """
    groups = {"detect": [r for r in results if r.target_set and r.task == "detect"],
              "segment": [r for r in results if r.target_set and r.task == "segment"],
              "all": [r for r in results if r.target_set],
              "older": [r for r in results if not r.target_set]}
    out = {}
    for name, rows in groups.items():
        if rows:
            errors = [(r.later_error if later else r.error, r.row_id) for r in rows]
            worst = max(errors, key=lambda e: abs(e[0]))
            out[name] = Summary(len(rows), round(statistics.median(abs(e) for e, _ in errors), 6),
                                round(worst[0], 6), worst[1])
    return out


def markdown_table(results: list[Result]) -> str:
    """The per-row table (GiB throughout, whatever unit the log printed)."""
    lines = ["| row | GPU | version | model | task | imgsz | batch | labels (mean/img -> planned) | reported GiB "
             "(epoch 1) | predicted GiB | error | max reported GiB | predicted after validation GiB | error |",
             "|---|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        planned = "?" if r.labels_planned is None else str(r.labels_planned)
        both = r.predicted_later_bytes
        lines.append(f"| {r.row_id}{'' if r.target_set else ' (older)'} | {r.gpu} | {r.version} | {r.model} | {r.task} "
                     f"| {r.imgsz} | {r.batch_size} | {r.labels_mean:g} -> {planned} | {r.reported_bytes / GIB:.2f} "
                     f"| {r.predicted_bytes / GIB:.2f} | {r.error:+.1%} | {r.later_reported_bytes / GIB:.2f} "
                     f"| {both / GIB:.2f} | {r.later_error:+.1%} |")
    return "\n".join(lines)


def summary_lines(results: list[Result]) -> list[str]:
    lines = []
    for later, what in ((False, "epoch 1 vs the training prediction"),
                        (True, "largest printed epoch vs the after-validation prediction")):
        for name, s in summarize(results, later).items():
            label = {"detect": "Ultralytics >= 8.3, detection", "segment": "Ultralytics >= 8.3, segmentation",
                     "all": "Ultralytics >= 8.3, both", "older": "older than 8.3"}[name]
            lines.append(f"- {what}: {label}: {s.rows} rows, median |error| {s.median_abs_error:.1%}, "
                         f"worst {s.worst_error:+.1%} ({s.worst_row})")
    return lines


def load_rows(path: Path) -> list[dict[str, Any]]:
    import yaml

    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["rows"]
    for row in rows:
        if row["unit"] != gpu_mem_unit(row["version"]):
            raise SystemExit(f"{path}: row {row['id']} says unit={row['unit']} but Ultralytics {row['version']} "
                             f"prints {gpu_mem_unit(row['version'])}")
    return rows


def select_rows(rows: list[dict[str, Any]], wanted: list[str] | None) -> list[dict[str, Any]]:
    """Rows by id or 1-based number, in the order given (all rows when `wanted` is empty)."""
    if not wanted:
        return rows
    by_id = {row["id"]: row for row in rows}
    chosen = []
    for key in wanted:
        if key in by_id:
            chosen.append(by_id[key])
        elif key.isdigit() and 1 <= int(key) <= len(rows):
            chosen.append(rows[int(key) - 1])
        else:
            raise SystemExit(f"--rows {key}: no such row; use an id from {DEFAULT_YAML.name} or a number 1-{len(rows)}")
    return chosen


def _label_lines(boxes: list[tuple[float, float, float, float]], nc: int, segment: bool) -> list[str]:
    lines = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if segment:  # an octagon inside the box: polygons make the density model keep 1% of area, as Ultralytics
            w, h = x2 - x1, y2 - y1
            points = [(x1 + w * a, y1 + h * b) for a, b in ((0.3, 0), (0.7, 0), (1, 0.3), (1, 0.7), (0.7, 1),
                                                            (0.3, 1), (0, 0.7), (0, 0.3))]
            lines.append(f"{i % nc} " + " ".join(f"{x:.5f} {y:.5f}" for x, y in points))
        else:
            lines.append(f"{i % nc} {(x1 + x2) / 2:.5f} {(y1 + y2) / 2:.5f} {x2 - x1:.5f} {y2 - y1:.5f}")
    return lines


def build_standin(row: dict[str, Any], folder: Path) -> Path:
    """Write the row's stand-in dataset into `folder` and return its data.yaml."""
    import numpy as np
    from PIL import Image

    data = row["dataset"]
    nc = int(data["classes"])
    segment = row["task"] == "segment"
    image = folder / "blank.png"
    Image.fromarray(np.full((STANDIN_IMAGE_PX, STANDIN_IMAGE_PX, 3), 114, np.uint8)).save(image)
    labels = row["labels"]
    for split in ("train", "val"):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        if labels["shape"] == "coco128":  # real boxes: copied, not drawn
            names = labels["images" if split == "train" else "val_images"]
            texts = [(COCO128_LABELS / f"{name}.txt").read_text() for name in names]
        else:
            counts = label_counts(labels, data[f"{split}_images"], data[f"{split}_backgrounds"])
            texts = ["\n".join(_label_lines(box_layout(n), nc, segment)) + "\n" if n else "" for n in counts]
        for i, text in enumerate(texts):
            target = folder / "images" / split / f"{i:06d}.png"
            try:
                os.link(image, target)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(image, target)
            (folder / "labels" / split / f"{i:06d}.txt").write_text(text)
    names = "\n".join(f"  {i}: class{i}" for i in range(nc))
    (folder / "data.yaml").write_text(f"path: {folder}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return folder / "data.yaml"


def predict(row: dict[str, Any], oom_risk: float | None) -> Result:
    """Build the row's stand-in dataset and ask the fixed-batch API about the row's batch."""
    from visionbatch.fit.api import fit_batch

    started = time.perf_counter()
    extra = {} if oom_risk is None else {"oom_risk": oom_risk}
    with tempfile.TemporaryDirectory(prefix="vb-published-") as tmp:
        data_yaml = build_standin(row, Path(tmp))
        check = fit_batch(str(data_yaml), model=f"{row['model']}.yaml", imgsz=row["imgsz"], batch_size=row["batch"],
                          target=row["gpu"]["target"], task=row["task"], amp=row["amp"], **row["train_args"], **extra)
    if check.train.reserved_bytes is None:
        raise SystemExit(f"row {row['id']}: the check has no train.reserved_bytes ({check.reason})")
    unit = row["unit"]
    return Result(row["id"], row["gpu"]["name"], row["version"], row["model"], row["task"], row["imgsz"], row["batch"],
                  float(row["labels"]["mean_per_labelled_image"]), check.workload.labels_per_image,
                  printed_bytes(row["gpu_mem"][0], unit), int(check.train.reserved_bytes),
                  printed_bytes(max(row["gpu_mem"]), unit),
                  None if check.val is None or check.val.reserved_bytes is None else int(check.val.reserved_bytes),
                  in_target_set(row), time.perf_counter() - started,
                  # like for like: the plan's after-validation figure counts the context once; GPU_mem does not
                  None if check.after_validation_bytes is None else check.after_validation_bytes - check.context_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml", type=Path, default=DEFAULT_YAML)
    parser.add_argument("--rows", nargs="+", help="row ids or 1-based numbers (default: all)")
    parser.add_argument("--oom-risk", type=float, default=None, help="passed to fit_batch (default: its own)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--list", action="store_true", help="list the rows and exit, predicting nothing")
    args = parser.parse_args(argv)

    rows = select_rows(load_rows(args.yaml), args.rows)
    if args.list:
        for i, row in enumerate(rows, 1):
            print(f"{i:3d} {row['id']:40s} {row['gpu']['target']:8s} {row['model']:12s} b{row['batch']:<3d} "
                  f"{row['imgsz']}  GPU_mem {row['gpu_mem'][0]}{row['unit'][0]} -> max {max(row['gpu_mem'])}")
        return 0
    results = []
    for i, row in enumerate(rows, 1):
        result = predict(row, args.oom_risk)
        results.append(result)
        print(f"[{i}/{len(rows)}] {row['id']}: predicted {result.predicted_bytes / GIB:.2f} GiB, reported "
              f"{result.reported_bytes / GIB:.2f} GiB ({result.error:+.1%}), {result.seconds:.0f} s",
              file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.node() or 'unknown'}, {os.cpu_count()} CPUs; predictions are CPU traces for the "
          f"log's GPU (target=); GPU_mem converted to GiB.\n")
    print(markdown_table(results))
    print()
    print("\n".join(summary_lines(results)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"error": r.error, "later_error": r.later_error}
                                         for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
