#!/usr/bin/env python3
"""The label-density model against Ultralytics' own training DataLoader (no GPU needed).

For each dataset it builds the training loader exactly as the trainer does (the dataset staged
into visionbatch's mirror, `build_yolo_dataset` + `build_dataloader`, shuffled) and draws
`--batches` batches with mosaic on, then calls the dataset's `close_mosaic` (as the trainer does
for the last epochs) and draws as many again. For every batch it counts each image's labels (the
`batch_idx` column) and records the batch's largest per-image count (what Ultralytics pads the
loss's targets to) and its total. It prints the observed 50th and 99th percentiles of both against
`visionbatch.ultralytics.density`'s prediction for the same batch size, and whether the observed
99th percentile of the per-batch maximum is within 10% of the predicted one.

Usage:
    python tools/bench_density.py [--data datasets/shapes/data.yaml ../shared/datasets/coco128/data.yaml]
                                  [--batch 16] [--batches 1000] [--imgsz 640] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOLERANCE = 0.10  # the observed p99 of the batch maximum must lie within 10% of the predicted one


def observe(loader, batches: int, batch_size: int) -> tuple[list[int], list[int]]:
    """Per-batch maximum and total label counts over `batches` batches of the loader."""
    import torch

    maxima, totals = [], []
    while len(maxima) < batches:
        for batch in loader:
            counts = torch.bincount(batch["batch_idx"].long(), minlength=len(batch["im_file"]))
            maxima.append(int(counts.max()) if len(counts) else 0)
            totals.append(int(counts.sum()))
            if len(maxima) >= batches:
                break
    return maxima, totals


def percentile(values: list[int], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q, method="inverted_cdf"))


def run_dataset(data: str, args: argparse.Namespace) -> list[dict]:
    from ultralytics.cfg import DEFAULT_CFG, get_cfg
    from ultralytics.data.build import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from visionbatch.staging import staged_dataset
    from visionbatch.ultralytics.density import label_density
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline, quiet_ultralytics

    rows = []
    overrides = {"imgsz": args.imgsz, "epochs": args.epochs, "close_mosaic": args.close_mosaic}
    with offline(), quiet_ultralytics():
        job = prepare(data, dict(overrides), command="fit")
        train = job.dataset.train
        density = label_density(train.objects, job.args, train.images, train.polygons > 0)
        with staged_dataset(job.dataset) as staged:
            data_dict = check_det_dataset(str(staged.yaml_path))
            cfg = get_cfg(DEFAULT_CFG, {**overrides, "task": job.task, "model": job.model})
            dataset = build_yolo_dataset(cfg, data_dict["train"], args.batch, data_dict, mode="train", stride=32)
            loader = build_dataloader(dataset, args.batch, args.workers, shuffle=True, rank=-1)
            for phase in ("mosaic", "plain"):
                started = time.perf_counter()
                if phase == "plain":  # the trainer's close_mosaic: the dataset rebuilds its transforms
                    from copy import copy

                    dataset.close_mosaic(hyp=copy(cfg))
                    loader.reset()
                maxima, totals = observe(loader, args.batches, args.batch)
                predicted = {q: density.batch_max_quantile(args.batch, q / 100, phase) for q in (50, 99)}
                predicted_total = {q: density.batch_total_quantile(args.batch, q / 100, phase) for q in (50, 99)}
                observed = {q: percentile(maxima, q) for q in (50, 99)}
                observed_total = {q: percentile(totals, q) for q in (50, 99)}
                error = (observed[99] - predicted[99]) / predicted[99] if predicted[99] else float("nan")
                rows.append({
                    "data": data, "images": train.images, "densest": train.max_instances, "phase": phase,
                    "batch": args.batch, "batches": len(maxima), "observed_max": observed, "predicted_max": predicted,
                    "observed_total": observed_total, "predicted_total": predicted_total,
                    "max_seen": max(maxima), "p99_error": error, "within": abs(error) <= TOLERANCE,
                    "planned_labels_per_image": density.labels_per_image, "seconds": round(time.perf_counter() - started, 1),
                })
                print(f"{Path(data).parent.name} {phase}: {len(maxima)} batches in {rows[-1]['seconds']} s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = [str(ROOT / "datasets" / "shapes" / "data.yaml")]
    coco = ROOT.parent / "shared" / "datasets" / "coco128" / "data.yaml"
    if coco.is_file():
        default.append(str(coco))
    parser.add_argument("--data", nargs="+", default=default)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--close-mosaic", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    rows = [row for data in args.data for row in run_dataset(data, args)]
    print(f"# label density: Ultralytics' loader against the model ({platform.node()}, batch {args.batch}, "
          f"imgsz {args.imgsz})\n")
    print("| dataset | phase | batches | max p50 obs/pred | max p99 obs/pred | p99 error | total p50 obs/pred | "
          "total p99 obs/pred | largest seen | planned (risk 1e-3) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {Path(r['data']).parent.name} | {r['phase']} | {r['batches']} | "
              f"{r['observed_max'][50]:g} / {r['predicted_max'][50]} | {r['observed_max'][99]:g} / {r['predicted_max'][99]} | "
              f"{r['p99_error']:+.1%} | {r['observed_total'][50]:g} / {r['predicted_total'][50]} | "
              f"{r['observed_total'][99]:g} / {r['predicted_total'][99]} | {r['max_seen']} | "
              f"{r['planned_labels_per_image']} |")
    ok = all(r["within"] for r in rows)
    print(f"\nobserved p99 of the per-batch maximum within {TOLERANCE:.0%} of the prediction: "
          f"{'yes' if ok else 'NO'} ({sum(r['within'] for r in rows)} of {len(rows)})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
