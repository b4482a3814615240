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

The label estimate: the stand-in's mean labels per labelled training image is the validation line's
(instances / labelled images). The counts around that mean follow one shape for every row (`label_counts`):
1 + a negative binomial whose variance / mean is coco128's, 9.386 (coco128's quantiles 25/50/75/90% of
labels - 1 are 1/3/9/16; this shape gives 1/4/9/16, a Poisson 5/6/8/10). `--dispersion 1` gives session
4's 1 + Poisson(mean - 1): detection's worst row without carparts moves from -18.4% (Poisson) to -10.1%. `--labels-from-log` applies another rule to every row with estimated labels
(`estimate_labels`), tried in session 4 and not the default since it did not help (detection's median |error|
4.5% -> 5.0%; the worst row without the suspect carparts -18.4% -> -16.6%): where the row has `instances_last_batch` figures from epochs that ran
mosaic (`mosaic_epochs` under the log's version), the observed mean per image of those last batches
(their instances / (epochs x images in the last batch: train_images mod batch, or a full batch)) is what
mosaic made of the training split; the mean is then solved (`solve_mean`: bracket, then bisection) so that
visionbatch's own density model (`label_density` on the stand-in's boxes, as fit_batch sees them) gives
that observed mean per mosaic image. Rows without such figures (mosaic off in every listed epoch), and
rows with real labels (coco8), keep the validation line's mean. `--labels` prints each row's estimate.

Usage:
    python tools/bench_published.py [--rows ID_OR_NUMBER ...] [--yaml tools/published_logs.yaml]
                                    [--oom-risk 1e-3] [--json OUT.json] [--wheels DIR] [--list] [--labels]
                                    [--labels-from-log] [--dispersion 9.386]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_YAML = ROOT / "tools" / "published_logs.yaml"
COCO128_LABELS = ROOT.parent / "shared" / "datasets" / "coco128" / "labels" / "train2017"
UNIT_BYTES = {"GB": 10**9, "GiB": 2**30}  # GPU_mem's divisor: 1e9 up to 8.3.75, 2**30 from 8.3.76
FIRST_GIB_VERSION = (8, 3, 76)
TARGET_SET_VERSION = (8, 3, 0)  # the rows the target is stated for
# The trainer closes mosaic with `if epoch == epochs - close_mosaic` in every wheel checked from 8.0.200 to
# 8.3.179 (so a run with epochs < close_mosaic never closes it), and with `epoch >= epochs - close_mosaic`
# in 8.4.190, the installed version visionbatch plans for (a run with epochs <= close_mosaic never opens it).
# No row lies between 8.3.179 and 8.4.190 with epochs < close_mosaic, where the two rules differ.
FIRST_CLOSE_AT_OR_AFTER_VERSION = (8, 4, 190)
# Variance / mean of (labels - 1) over coco128's 128 labelled training images (mean 6.35, variance 59.6): real
# detection data is overdispersed (1 + Poisson(mean - 1) has a ratio of 1). `coco128_dispersion` recomputes it.
COUNT_DISPERSION = 9.386
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


def mosaic_epochs(version: str, train_args: dict[str, Any]) -> int:
    """Epochs the log's run trained with mosaic on, under its own version's close_mosaic rule.

    Examples:
        >>> args = {"epochs": 3, "close_mosaic": 10, "mosaic": 1.0}
        >>> mosaic_epochs("8.3.149", args), mosaic_epochs("8.4.190", args)  # `==` never fires; `>=` fires at once
        (3, 0)
        >>> mosaic_epochs("8.3.57", {"epochs": 10, "close_mosaic": 10}), mosaic_epochs("8.3.57", {"epochs": 20, "close_mosaic": 10})
        (0, 10)
    """
    epochs, close = int(train_args["epochs"]), int(train_args.get("close_mosaic", 10))
    if float(train_args.get("mosaic", 1.0)) <= 0:
        return 0
    if parse_version(version) >= FIRST_CLOSE_AT_OR_AFTER_VERSION or close <= 0:
        return max(epochs - close, 0) if close > 0 else epochs
    return epochs - close if 0 <= epochs - close else epochs


def standin_train_args(row: dict[str, Any]) -> dict[str, Any]:
    """The row's train arguments, with close_mosaic such that the installed Ultralytics (`>=` rule) opens and
    closes mosaic at the same epochs as the log's version did.

    Examples:
        >>> row = {"version": "8.3.149", "train_args": {"epochs": 3, "close_mosaic": 10, "mosaic": 1.0}}
        >>> standin_train_args(row)["close_mosaic"]
        0
        >>> standin_train_args({"version": "8.3.57", "train_args": {"epochs": 20, "close_mosaic": 10}})["close_mosaic"]
        10
    """
    args = dict(row["train_args"])
    args["close_mosaic"] = int(args["epochs"]) - mosaic_epochs(row["version"], args)
    return args


def wheel_versions(folder: Path | None) -> dict[tuple[int, ...], Path]:
    """The Ultralytics wheels in `folder` (any depth), by version."""
    if folder is None:
        return {}
    found = {}
    for path in folder.rglob("ultralytics-*-py3-none-any.whl"):
        with contextlib.suppress(ValueError):
            found[parse_version(path.name.split("-")[1])] = path
    return found


def assigner_wheel(version: str, wheels: dict[tuple[int, ...], Path]) -> Path | None:
    """The wheel whose TaskAlignedAssigner the log's run executed: its own version's, else the nearest older
    one of the same minor series (the assigner's memory is the same across 8.3.0-8.3.179, measured); None
    when there is none, and for the installed series (8.4), whose assigner the trace already runs.

    Examples:
        >>> wheels = {(8, 3, 0): Path("a.whl"), (8, 3, 57): Path("b.whl"), (8, 4, 1): Path("c.whl")}
        >>> [str(assigner_wheel(v, wheels)) for v in ("8.3.3", "8.3.57", "8.3.149", "8.4.37", "8.2.3")]
        ['a.whl', 'b.whl', 'b.whl', 'None', 'None']
    """
    wanted = parse_version(version)
    if wanted[:2] >= FIRST_CLOSE_AT_OR_AFTER_VERSION[:2]:
        return None
    older = [v for v in wheels if v[:2] == wanted[:2] and v <= wanted]
    return wheels[max(older)] if older else None


@contextlib.contextmanager
def log_version_assigner(wheel: Path | None):
    """Run the detection loss with the TaskAlignedAssigner of the log's Ultralytics version (from its wheel).

    Why: the trace runs the installed loss for real, and 8.4's assigner holds about half the memory of
    8.3's at a high label count (8.3 builds (b, n, anchors, 4) float deltas and dense (b, n, anchors)
    score and overlap tensors; b=16, 98 labels/image: 455 MiB against 229 MiB at the loss's peak, on cpu-2).
    A log made with 8.3 is compared like for like only with 8.3's assigner. Segmentation keeps the
    installed SegTaskAlignedAssigner (a subclass the loss binds directly): it is not swapped.
    """
    if wheel is None:
        yield None
        return
    import importlib.util

    import ultralytics.utils.loss as loss_module

    name = f"ultralytics.utils._tal_{wheel.name.split('-')[1].replace('.', '_')}"
    with tempfile.TemporaryDirectory(prefix="vb-tal-") as tmp:
        path = Path(tmp) / "tal.py"
        path.write_bytes(zipfile.ZipFile(wheel).read("ultralytics/utils/tal.py"))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # package ultralytics.utils: its relative imports resolve
        spec.loader.exec_module(module)
    old = module.TaskAlignedAssigner

    class LogAssigner(old):  # the installed loss passes arguments the old class did not take
        def __init__(self, topk=13, num_classes=80, alpha=1.0, beta=6.0, eps=1e-9, **_installed_only):
            super().__init__(topk=topk, num_classes=num_classes, alpha=alpha, beta=beta, eps=eps)

        def forward(self, *args, **_installed_only):
            return super().forward(*args)

    installed = loss_module.TaskAlignedAssigner
    loss_module.TaskAlignedAssigner = LogAssigner
    try:
        yield wheel
    finally:
        loss_module.TaskAlignedAssigner = installed


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


def negbin_quantile(mean: float, dispersion: float, quantile: float) -> int:
    """The smallest k with P(X <= k) >= quantile, X negative binomial with this mean and variance / mean ratio
    (Poisson at a ratio of 1 or less).

    Examples:
        >>> negbin_quantile(2.0, 1.0, 0.99) == poisson_quantile(2.0, 0.99)
        True
        >>> [negbin_quantile(6.35, 9.39, q) for q in (0.25, 0.5, 0.9, 0.99)]
        [1, 4, 16, 35]
    """
    if dispersion <= 1.0 or mean <= 0.0:
        return poisson_quantile(mean, quantile)
    r = mean / (dispersion - 1.0)  # variance = mean + mean**2 / r = dispersion * mean
    p = 1.0 / dispersion  # r / (r + mean)
    term = math.exp(r * math.log(p))
    if term == 0.0:  # P(0) underflows (mean * ln(dispersion) / (dispersion - 1) > 745): no row comes near
        raise ValueError(f"negbin_quantile: mean {mean:g} at variance / mean {dispersion:g} is out of range")
    cdf, k = term, 0
    while cdf < quantile:
        k += 1
        term *= (k - 1 + r) / k * (1.0 - p)
        cdf += term
        if k > 1_000_000:
            raise ValueError(f"negbin_quantile: no quantile {quantile:g} below a million at mean {mean:g}")
    return k


def coco128_dispersion() -> float | None:
    """Variance / mean of (labels - 1) over coco128's labelled training images, the one real detection dataset
    at hand (../shared/datasets/coco128: 9.386, COUNT_DISPERSION), or None where it is absent."""
    if not COCO128_LABELS.is_dir():
        return None
    counts = [n - 1 for n in (sum(1 for line in f.read_text().splitlines() if line.strip())
                              for f in sorted(COCO128_LABELS.glob("*.txt"))) if n > 0]
    mean = statistics.fmean(counts)
    return statistics.pvariance(counts) / mean if mean > 0 else None


def label_counts(labels: dict[str, Any], images: int, backgrounds: int,
                 dispersion: float = COUNT_DISPERSION) -> list[int]:
    """Per-image label counts for a stand-in split: the one shape rule every estimated row shares.

    `backgrounds` images carry none; each of the others carries 1 + a negative binomial of mean (mean - 1)
    whose variance / mean is `dispersion` (default COUNT_DISPERSION, coco128's; 1 gives 1 + Poisson(mean - 1),
    the session-4 rule), taken at evenly spaced quantiles so the histogram is exact and repeatable, not sampled.

    Examples:
        >>> label_counts({"mean_per_labelled_image": 1.0}, 4, 1)
        [0, 1, 1, 1]
        >>> label_counts({"mean_per_labelled_image": 3.0}, 5, 0, dispersion=1.0)
        [1, 2, 3, 4, 5]
        >>> label_counts({"mean_per_labelled_image": 3.0}, 5, 0, dispersion=4.0)
        [1, 1, 2, 3, 7]
    """
    labelled = images - backgrounds
    extra = max(float(labels["mean_per_labelled_image"]) - 1.0, 0.0)
    counts = [1 + negbin_quantile(extra, dispersion, (i + 0.5) / labelled) for i in range(labelled)]
    return [0] * backgrounds + counts


def last_batch_images(train_images: int, batch: int) -> int:
    """Images in an epoch's last batch: the remainder of train_images / batch, or a full batch (drop_last=False).

    Examples:
        >>> last_batch_images(878, 16), last_batch_images(64, 16), last_batch_images(4, 16)
        (14, 16, 4)
    """
    return train_images % batch or min(batch, train_images)


def mosaic_last_batches(row: dict[str, Any]) -> list[int]:
    """The row's `instances_last_batch` figures from epochs that ran mosaic (the list starts at epoch 1, and
    mosaic runs in the first `mosaic_epochs` epochs under the log's version's close_mosaic rule).

    Examples:
        >>> row = {"version": "8.3.58", "train_args": {"epochs": 15, "close_mosaic": 10}, "instances_last_batch": [9, 8, 7, 6, 5, 4, 3]}
        >>> mosaic_last_batches(row), mosaic_last_batches(row | {"train_args": {"epochs": 10, "close_mosaic": 10}})
        ([9, 8, 7, 6, 5], [])
    """
    return list(row.get("instances_last_batch") or [])[: mosaic_epochs(row["version"], row["train_args"])]


def observed_per_image(instances: list[int], images: int) -> float:
    """Mean labels per image over several last batches of `images` images each (pooled: total / images).

    Examples:
        >>> observed_per_image([20, 28, 20], 14)
        1.619047619047619
    """
    return sum(instances) / (len(instances) * images)


def solve_mean(modelled, target: float, start: float, rel_tol: float = 0.005, max_evals: int = 24) -> float:
    """The mean m >= 1 for which `modelled(m)` (increasing in m) gives `target`: a bracket grown from `start` by
    proportional steps, then bisection until the bracket is within `rel_tol` of its top or the modelled value
    within `rel_tol` of the target.

    Examples:
        >>> round(solve_mean(lambda m: 1.5 * m, 6.0, 1.0), 3)  # exact answer 4
        4.0
        >>> round(solve_mean(lambda m: 2 * m - 1, 2.0, 3.0, rel_tol=1e-4), 3)  # below the start: exact answer 1.5
        1.5
        >>> solve_mean(lambda m: 3 * m, 2.0, 2.0)  # no mean >= 1 is low enough: 1
        1.0
    """
    values = {}

    def at(m: float) -> float:
        if m not in values:
            values[m] = modelled(m)
        return values[m]

    lo = hi = max(start, 1.0)
    while len(values) < max_evals:  # grow the bracket: lo with modelled <= target, hi with modelled >= target
        if at(hi) < target:
            lo, hi = hi, hi * max(target / max(at(hi), 1e-9), 1.05)
        elif at(lo) > target and lo > 1.0:
            hi, lo = lo, max(lo * min(target / at(lo), 0.95), 1.0)
        else:
            break
    if at(lo) > target:  # the mean cannot go below 1 (every labelled image carries one)
        return lo
    while len(values) < max_evals and hi - lo > rel_tol * hi:
        if abs(at(lo) - target) <= rel_tol * target:
            return lo
        if abs(at(hi) - target) <= rel_tol * target:
            return hi
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda m: abs(at(m) - target))


def standin_objects(mean: float, images: int, backgrounds: int, dispersion: float = COUNT_DISPERSION) -> list:
    """The stand-in training split's objects as `dataset.load_dataset` reads them from `build_standin`'s files
    (each image STANDIN_IMAGE_PX square, its boxes from `box_layout`), without writing the files."""
    from array import array

    from visionbatch.dataset import ImageLabels

    by_count = {}
    counts = label_counts({"mean_per_labelled_image": mean}, images, backgrounds, dispersion)
    for n in counts:
        if n not in by_count:
            by_count[n] = ImageLabels(STANDIN_IMAGE_PX, STANDIN_IMAGE_PX, array("f", [v for b in box_layout(n) for v in b]))
    return [by_count[n] for n in counts]


@functools.lru_cache(maxsize=256)
def modelled_mosaic_mean(mean: float, images: int, backgrounds: int, imgsz: int, segment: bool,
                         dispersion: float = COUNT_DISPERSION) -> float:
    """Mean labels per mosaic image that visionbatch's density model gives for the stand-in at `mean`."""
    from visionbatch.ultralytics.density import label_density

    density = label_density(standin_objects(mean, images, backgrounds, dispersion),
                            {"imgsz": imgsz, "epochs": 1, "close_mosaic": 0, "mosaic": 1.0}, images, segment)
    return sum(k * p for k, p in enumerate(density.mosaic_pmf))


@dataclass(frozen=True, slots=True)
class LabelEstimate:
    """The stand-in's mean labels per labelled training image, the rule that gave it, and its figures."""

    mean: float
    rule: str  # 'last batches' or 'validation line'
    how: str


def estimate_labels(row: dict[str, Any], modelled=None, from_log: bool = True,
                    dispersion: float = COUNT_DISPERSION) -> LabelEstimate:
    """The row's training-split mean per labelled image: the validation line's, or with `from_log` the
    last-batch rule (see the module docstring).

    `modelled(mean) -> mean labels per mosaic image` defaults to visionbatch's density model on the stand-in.
    """
    labels, data = row["labels"], row["dataset"]
    val_mean = float(labels["mean_per_labelled_image"])
    if not from_log:
        return LabelEstimate(val_mean, "validation line", f"the validation line mean, {val_mean:g}")
    figures = mosaic_last_batches(row)
    if labels["shape"] != "estimated" or not figures:
        why = "real labels" if labels["shape"] != "estimated" else "no last-batch figures from mosaic epochs"
        return LabelEstimate(val_mean, "validation line", f"the validation line mean, {val_mean:g} ({why})")
    images = last_batch_images(int(data["train_images"]), int(row["batch"]))
    observed = observed_per_image(figures, images)
    if modelled is None:
        def modelled(m):
            return modelled_mosaic_mean(round(m, 4), int(data["train_images"]), int(data["train_backgrounds"]),
                                        int(row["imgsz"]), row["task"] == "segment", dispersion)
    mean = round(solve_mean(modelled, observed, val_mean), 3)
    how = (f"last batches: {sum(figures)} instances in {len(figures)} mosaic epochs x {images} images = "
           f"{observed:.3f} per mosaic image; the density model gives {modelled(mean):.3f} at mean {mean:g} per "
           f"labelled image (validation line: {val_mean:g}, modelled {modelled(val_mean):.3f} per mosaic image)")
    return LabelEstimate(mean, "last batches", how)


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
    labels_rule: str = "validation line"  # which label rule set labels_mean (`estimate_labels`)
    labels_how: str = ""  # that rule's figures

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
        rule = " (last batches)" if r.labels_rule == "last batches" else ""
        both = r.predicted_later_bytes
        lines.append(f"| {r.row_id}{'' if r.target_set else ' (older)'} | {r.gpu} | {r.version} | {r.model} | {r.task} "
                     f"| {r.imgsz} | {r.batch_size} | {r.labels_mean:g}{rule} -> {planned} | {r.reported_bytes / GIB:.2f} "
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


def build_standin(row: dict[str, Any], folder: Path, dispersion: float = COUNT_DISPERSION) -> Path:
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
            counts = label_counts(labels, data[f"{split}_images"], data[f"{split}_backgrounds"], dispersion)
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


def predict(row: dict[str, Any], oom_risk: float | None, wheels: dict[tuple[int, ...], Path] | None = None,
            labels_from_log: bool = False, dispersion: float = COUNT_DISPERSION) -> Result:
    """Build the row's stand-in dataset and ask the fixed-batch API about the row's batch (with the log's
    version's detection assigner when `wheels` holds it)."""
    from visionbatch.fit.api import fit_batch

    started = time.perf_counter()
    extra = {} if oom_risk is None else {"oom_risk": oom_risk}
    wheel = assigner_wheel(row["version"], wheels or {})
    estimate = estimate_labels(row, from_log=labels_from_log, dispersion=dispersion)
    standin_row = row | {"labels": row["labels"] | {"mean_per_labelled_image": estimate.mean}}
    with tempfile.TemporaryDirectory(prefix="vb-published-") as tmp, log_version_assigner(wheel):
        data_yaml = build_standin(standin_row, Path(tmp), dispersion)
        check = fit_batch(str(data_yaml), model=f"{row['model']}.yaml", imgsz=row["imgsz"], batch_size=row["batch"],
                          target=row["gpu"]["target"], task=row["task"], amp=row["amp"], **standin_train_args(row),
                          plan_cache=False, **extra)
    if check.train.reserved_bytes is None:
        raise SystemExit(f"row {row['id']}: the check has no train.reserved_bytes ({check.reason})")
    unit = row["unit"]
    return Result(row["id"], row["gpu"]["name"], row["version"], row["model"], row["task"], row["imgsz"], row["batch"],
                  estimate.mean, check.workload.labels_per_image,
                  printed_bytes(row["gpu_mem"][0], unit), int(check.train.reserved_bytes),
                  printed_bytes(max(row["gpu_mem"]), unit),
                  None if check.val is None or check.val.reserved_bytes is None else int(check.val.reserved_bytes),
                  in_target_set(row), time.perf_counter() - started,
                  # like for like: the plan's after-validation figure counts the context once; GPU_mem does not
                  None if check.after_validation_bytes is None else check.after_validation_bytes - check.context_bytes,
                  estimate.rule, estimate.how)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml", type=Path, default=DEFAULT_YAML)
    parser.add_argument("--rows", nargs="+", help="row ids or 1-based numbers (default: all)")
    parser.add_argument("--oom-risk", type=float, default=None, help="passed to fit_batch (default: its own)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--wheels", type=Path, help="a folder of Ultralytics wheels: each 8.3 row's detection loss "
                        "then runs its own version's TaskAlignedAssigner (default: the installed one)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit, predicting nothing")
    parser.add_argument("--labels", action="store_true", help="print each row's label estimate and exit")
    parser.add_argument("--labels-from-log", action="store_true", help="estimate each row's labels from the log's "
                        "Instances column (estimate_labels; default: the validation line's mean)")
    parser.add_argument("--dispersion", type=float, default=COUNT_DISPERSION,
                        help="variance / mean of the stand-ins' label counts above 1 (default: coco128's, "
                        f"{COUNT_DISPERSION}); 1 gives session 4's 1 + Poisson(mean - 1)")
    args = parser.parse_args(argv)
    dispersion = args.dispersion
    if not (math.isfinite(dispersion) and dispersion >= 1.0):
        print(f"--dispersion {dispersion}: give a finite variance / mean of at least 1 (1: Poisson)", file=sys.stderr)
        return 2

    rows = select_rows(load_rows(args.yaml), args.rows)
    if args.list:
        for i, row in enumerate(rows, 1):
            print(f"{i:3d} {row['id']:40s} {row['gpu']['target']:8s} {row['model']:12s} b{row['batch']:<3d} "
                  f"{row['imgsz']}  GPU_mem {row['gpu_mem'][0]}{row['unit'][0]} -> max {max(row['gpu_mem'])}")
        return 0
    if args.labels:
        for row in rows:
            estimate = estimate_labels(row, from_log=args.labels_from_log, dispersion=dispersion)
            print(f"{row['id']}: {estimate.mean:g} ({estimate.rule}): {estimate.how}", flush=True)
        return 0
    wheels = wheel_versions(args.wheels)
    if args.wheels is not None and not wheels:
        print(f"--wheels {args.wheels}: no ultralytics-*-py3-none-any.whl there", file=sys.stderr)
        return 2
    results = []
    for i, row in enumerate(rows, 1):
        result = predict(row, args.oom_risk, wheels, args.labels_from_log, dispersion)
        results.append(result)
        print(f"[{i}/{len(rows)}] {row['id']}: predicted {result.predicted_bytes / GIB:.2f} GiB, reported "
              f"{result.reported_bytes / GIB:.2f} GiB ({result.error:+.1%}), {result.seconds:.0f} s; labels "
              f"{result.labels_mean:g} ({result.labels_how})", file=sys.stderr, flush=True)
    measured = coco128_dispersion()
    print(f"\nMachine: {platform.node() or 'unknown'}, {os.cpu_count()} CPUs; predictions are CPU traces for the "
          f"log's GPU (target=); GPU_mem converted to GiB. Stand-in label counts: 1 + a negative binomial of "
          f"variance / mean {dispersion:g} (coco128's: "
          f"{'not at hand' if measured is None else f'{measured:.3f}'}).\n")
    print(markdown_table(results))
    print()
    print("\n".join(summary_lines(results)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"error": r.error, "later_error": r.later_error}
                                         for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
