#!/usr/bin/env python3
"""Regenerate the shipped `datasets/shapes` dataset byte for byte.

Coloured shapes (circle, triangle, square, star, cross) on textured backgrounds, with polygon
labels, so the same images serve detection and segmentation. Object counts vary from a single
shape to dense scenes of 60+ small ones; shapes never overlap, so every polygon is the visible
outline of its object.

Every image is drawn from its own seeded generator, so the output depends only on this script,
NumPy and OpenCV's JPEG encoder. `--check` regenerates into a temporary folder and compares
every file with the shipped copy.

Usage:
    python tools/make_shapes.py                 # rewrite datasets/shapes
    python tools/make_shapes.py --check         # exit 1 if the shipped files differ
    python tools/make_shapes.py --out /tmp/x    # write elsewhere
"""

from __future__ import annotations

import argparse
import filecmp
import math
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

SEED = 20261123
CLASSES = ("circle", "triangle", "square", "star", "cross")
SPLITS = {"train": 160, "val": 40}
SIZES = ((320, 320), (384, 288), (288, 384), (352, 256))  # (width, height)
JPEG_QUALITY = 88
ROOT = Path(__file__).resolve().parents[1] / "datasets" / "shapes"

DATA_YAML = """\
# visionbatch's shipped dataset: coloured shapes on textured backgrounds, drawn by
# tools/make_shapes.py (regenerate or verify with: python tools/make_shapes.py --check).
# Labels are polygons, so the same images train detection and segmentation (task=segment).
# Object counts run from 1 to 90 per image; a tenth of the images are dense scenes.
# No 'path' key: Ultralytics resolves train/val against this file's folder.
train: images/train
val: images/val

names:
{names}
"""


def shape_polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Outline of one shape as an (N, 2) array of pixel coordinates."""
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "triangle":
        t = np.array([0, 2, 4]) * np.pi / 3 - np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "square":
        t = np.array([1, 3, 5, 7]) * np.pi / 4
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif kind == "cross":
        a, b = 1.0, 0.34
        pts = np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
        )
    else:
        raise ValueError(kind)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T * radius + np.array([cx, cy])


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured background: smooth colour field, plus stripes, checks or grain, plus noise."""
    base = rng.uniform(30, 220, size=3)
    tint = rng.uniform(-60, 60, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx / width + np.sin(theta) * yy / height)[..., None]
    img = base + tint * ramp
    # low-frequency blotches: upsampled noise
    coarse = rng.normal(0, 1, size=(height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    img += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(8, 25)
    pattern = rng.integers(0, 4)
    if pattern == 1:  # stripes
        period = rng.uniform(6, 30)
        phi = rng.uniform(0, np.pi)
        wave = np.sin((np.cos(phi) * xx + np.sin(phi) * yy) * 2 * np.pi / period)
        img += wave[..., None] * rng.uniform(6, 20)
    elif pattern == 2:  # checks
        cell = int(rng.integers(8, 40))
        checks = ((xx // cell + yy // cell) % 2) * 2 - 1
        img += checks[..., None] * rng.uniform(5, 18)
    elif pattern == 3:  # wood-like grain
        grain = np.sin(yy / rng.uniform(3, 9) + 4 * np.sin(xx / rng.uniform(20, 60)))
        img += grain[..., None] * rng.uniform(6, 16)
    img += rng.normal(0, rng.uniform(2, 9), size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def object_count(rng: np.random.Generator) -> int:
    """Most scenes hold a few objects; one in ten is dense."""
    u = rng.uniform()
    if u < 0.10:
        return int(rng.integers(40, 91))
    if u < 0.30:
        return int(rng.integers(10, 25))
    return int(rng.integers(1, 9))


def place(rng: np.random.Generator, count: int, width: int, height: int) -> list[tuple[float, float, float]]:
    """Non-overlapping (cx, cy, radius) circles; dense scenes get small objects."""
    if count >= 40:
        r_lo, r_hi = 6.0, 12.0
    elif count >= 10:
        r_lo, r_hi = 10.0, 26.0
    else:
        r_lo, r_hi = 16.0, min(width, height) / 4
    placed: list[tuple[float, float, float]] = []
    for _ in range(count * 60):
        if len(placed) == count:
            break
        r = float(rng.uniform(r_lo, r_hi))
        cx = float(rng.uniform(r + 2, width - r - 2))
        cy = float(rng.uniform(r + 2, height - r - 2))
        if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 3) ** 2 for x, y, q in placed):
            placed.append((cx, cy, r))
    return placed


def draw_object(rng: np.random.Generator, img: np.ndarray, poly: np.ndarray) -> None:
    """Fill a polygon with a shaded colour and an occasional outline."""
    height, width = img.shape[:2]
    x0, y0 = np.floor(poly.min(0)).astype(int).clip(0)
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    x1, y1 = min(x1, width), min(y1, height)
    roi = img[y0:y1, x0:x1]
    mask = np.zeros(roi.shape[:2], np.uint8)
    pts = np.round((poly - [x0, y0]) * 16).astype(np.int32)  # 4 fractional bits: anti-aliased edges
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    colour = rng.uniform(0, 255, size=3)
    yy, xx = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32)
    shade = (xx / max(x1 - x0, 1) + yy / max(y1 - y0, 1)) / 2  # light from the top left
    fill = colour + (0.5 - shade[..., None]) * rng.uniform(20, 70)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    roi[:] = np.clip(roi * (1 - alpha) + fill * alpha, 0, 255).astype(np.uint8)
    if rng.uniform() < 0.4:
        edge = tuple(float(c) for c in np.clip(colour * 0.5, 0, 255))
        cv2.polylines(roi, [pts], True, edge, 1, lineType=cv2.LINE_AA, shift=4)


def make_image(split: str, index: int) -> tuple[bytes, str]:
    """One JPEG and its label text."""
    rng = np.random.default_rng([SEED, list(SPLITS).index(split), index])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    img = background(rng, width, height)
    lines = []
    for cx, cy, r in place(rng, object_count(rng), width, height):
        cls = int(rng.integers(len(CLASSES)))
        poly = shape_polygon(CLASSES[cls], cx, cy, r, float(rng.uniform(0, 2 * np.pi)))
        draw_object(rng, img, poly)
        norm = np.clip(poly / np.array([width, height]), 0, 1)
        lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in norm.reshape(-1)))
    if rng.uniform() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.0))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes(), "\n".join(lines) + "\n"


def write_dataset(out: Path) -> list[Path]:
    """Write images, labels and data.yaml under `out`; return the files written."""
    written = []
    for split, count in SPLITS.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            jpeg, labels = make_image(split, i)
            stem = f"{split}_{i:04d}"
            for path, data in ((out / "images" / split / f"{stem}.jpg", jpeg),
                               (out / "labels" / split / f"{stem}.txt", labels.encode())):
                path.write_bytes(data)
                written.append(path)
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    yaml_path = out / "data.yaml"
    yaml_path.write_text(DATA_YAML.format(names=names))
    written.append(yaml_path)
    return written


def check(shipped: Path) -> int:
    """Regenerate into a temporary folder and compare with `shipped`; return an exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_dataset(Path(tmp))
        rel = sorted(p.relative_to(tmp) for p in fresh)
        differ = [r for r in rel if not (shipped / r).is_file() or not filecmp.cmp(Path(tmp) / r, shipped / r, False)]
    extra = sorted(
        p.relative_to(shipped) for p in shipped.rglob("*")
        if p.is_file() and p.suffix in {".jpg", ".txt", ".yaml"} and p.relative_to(shipped) not in set(rel)
    )
    for r in differ:
        print(f"differs: {r}")
    for r in extra:
        print(f"not generated: {r}")
    if differ or extra:
        print(f"{len(differ)} of {len(rel)} files differ, {len(extra)} extra (opencv {cv2.__version__})")
        return 1
    print(f"all {len(rel)} files match (opencv {cv2.__version__})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help=f"output folder (default {ROOT})")
    parser.add_argument("--check", action="store_true", help="compare a fresh copy with --out instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.out)
    files = write_dataset(args.out)
    size = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {size / 2**20:.1f} MiB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
