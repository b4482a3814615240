#!/usr/bin/env python3
"""Ultralytics' AutoBatch against visionbatch's fit_batch, judged by real training on a CUDA GPU.

For each model, task and image size, at the same memory fraction:
  autobatch     Ultralytics' check_train_batch_size (its proxy step, straight-line fit)
  visionbatch   fit_batch (the real step, verified)
  true max      the largest batch whose real Ultralytics training (N iterations with mosaic,
                plus one validation pass) stays within fraction x usable memory without running
                out of memory, found by bisection with real runs
and each planner's batch is then trained for real (same N iterations + validation) to read its
measured peak. Every planning and training run is a separate process (a clean CUDA state);
peaks come from NVML sampled every 20 ms (what the card really held, CUDA context included)
and from torch's peak reserved.

Segmentation on a box-only dataset (coco128) uses a copy whose labels are the boxes' corners as
polygons (written to a temporary folder; the dataset itself is not touched).

Usage (needs a CUDA GPU):
    python tools/bench_autobatch.py --data ../shared/datasets/coco128/data.yaml
    python tools/bench_autobatch.py --data ... --models yolo11n --tasks detect --imgsz 640
Without a GPU, --simulate runs the same flow on a simulated device (a known memory law; the
numbers are not measurements) to exercise the script.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
MODELS = {("yolo11n", "detect"): "yolo11n.yaml", ("yolo11n", "segment"): "yolo11n-seg.yaml",
          ("yolo11s", "detect"): "yolo11s.yaml", ("yolo11s", "segment"): "yolo11s-seg.yaml"}


# -- child runs: one process each ------------------------------------------------------------------

def _nvml_sampler(index: int):
    """Start sampling this process's NVML memory every 20 ms; return (stop() -> peak bytes)."""
    from visionbatch.devices.memory import nvml_reading

    peak = [0]
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            reading = nvml_reading(index)
            if reading and reading.process_bytes:
                peak[0] = max(peak[0], reading.process_bytes)
            done.wait(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop() -> int:
        done.set()
        thread.join()
        return peak[0]

    return stop


def child_trial(args: argparse.Namespace) -> dict:
    """Real Ultralytics training at one batch: N iterations with mosaic, then one validation pass."""
    import torch

    from visionbatch.devices.memory import cuda_capacity
    from visionbatch.ultralytics.offline import offline

    torch.cuda.init()
    torch.zeros(1, device="cuda:0")
    usable = cuda_capacity(0).usable_bytes
    batches_per_epoch = math.ceil(args.images / args.batch)
    epochs = math.ceil(args.iterations / batches_per_epoch)
    stop = _nvml_sampler(0)
    result = {"batch": args.batch, "usable_bytes": usable, "oom": False}
    start = time.perf_counter()
    try:
        with offline():
            from ultralytics import YOLO

            yolo = YOLO(args.model, task=args.task)
            yolo.train(data=args.data, batch=args.batch, imgsz=args.imgsz, epochs=epochs, close_mosaic=0, val=False,
                       plots=False, device=0, workers=4, project=args.tmp, name="trial", exist_ok=True, verbose=False)
            result["oom"] = yolo.trainer.batch_size != args.batch  # Ultralytics halved it after an OOM
    except torch.cuda.OutOfMemoryError:
        result["oom"] = True
    result["seconds"] = time.perf_counter() - start
    result["peak_nvml_bytes"] = stop()
    result["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(0)
    return result


def child_autobatch(args: argparse.Namespace) -> dict:
    """Ultralytics' check_train_batch_size on the model as its trainer builds it."""
    import torch

    from visionbatch.dataset import load_dataset
    from visionbatch.ultralytics.offline import offline

    summary = load_dataset(args.data)
    with offline():
        import ultralytics.utils.autobatch as autobatch_module
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel
        from ultralytics.utils import LOGGER

        lines: list[str] = []
        handler = type("Grab", (__import__("logging").Handler,), {"emit": lambda self, r: lines.append(r.getMessage())})()
        LOGGER.addHandler(handler)
        cls = SegmentationModel if args.task == "segment" else DetectionModel
        model = cls(args.model, nc=summary.nc, verbose=False).to("cuda:0")
        model.args = get_cfg(overrides={"task": args.task})
        start = time.perf_counter()
        batch = autobatch_module.check_train_batch_size(
            model, imgsz=args.imgsz, amp=True, batch=args.fraction,
            max_num_obj=4 * summary.train.max_instances, dataset_size=summary.train.images)
        seconds = time.perf_counter() - start
        LOGGER.removeHandler(handler)
    predicted = None
    for line in lines:  # "AutoBatch: Using batch-size 48 for CUDA:0 18.52G/79.18G (23%)"
        if "Using batch-size" in line:
            predicted = float(line.split(" for ")[1].split()[1].split("G/")[0]) * (1 << 30)
    torch.cuda.empty_cache()
    return {"batch": int(batch), "seconds": seconds, "predicted_bytes": predicted}


def child_fit(args: argparse.Namespace) -> dict:
    from visionbatch.fit.api import fit_batch

    start = time.perf_counter()
    plan = fit_batch(args.data, model=args.model, imgsz=args.imgsz, device=0, memory_fraction=args.fraction,
                     task=args.task)
    return {"batch": plan.batch_size, "max_batch": plan.max_batch_size, "seconds": time.perf_counter() - start,
            "predicted_bytes": plan.predicted_bytes, "measured_bytes": plan.measured_bytes,
            "usable_bytes": plan.usable_bytes, "probes": sum(s.phase == "train" for s in plan.samples)}


# -- the parent: orchestration ---------------------------------------------------------------------

class Runner:
    """Runs children in fresh processes (or on the simulated device)."""

    def __init__(self, data: str, images: int, fraction: float, iterations: int, simulate: bool, tmp: Path):
        self.data, self.images, self.fraction, self.iterations = data, images, fraction, iterations
        self.simulate, self.tmp = simulate, tmp
        self.cache: dict[tuple, dict] = {}

    def child(self, kind: str, model: str, task: str, imgsz: int, batch: int = 0, data: str | None = None) -> dict:
        key = (kind, model, task, imgsz, batch)
        if key in self.cache:
            return self.cache[key]
        if self.simulate:
            result = simulated_child(kind, model, task, imgsz, batch, self.fraction)
        else:
            out = self.tmp / f"{kind}-{len(self.cache)}.json"
            cmd = [sys.executable, __file__, "--child", kind, "--model", model, "--task", task, "--imgsz", str(imgsz),
                   "--batch", str(batch), "--data", data or self.data, "--fraction", str(self.fraction),
                   "--iterations", str(self.iterations), "--images", str(self.images), "--tmp", str(self.tmp),
                   "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"{kind} {model} {imgsz} batch {batch} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(out.read_text())
        self.cache[key] = result
        print(f"  {kind:9s} {model:17s} imgsz {imgsz:4d} batch {batch or result.get('batch')}: "
              f"{ {k: v for k, v in result.items() if k != 'usable_bytes'} }", file=sys.stderr, flush=True)
        return result

    def fits(self, trial: dict) -> bool:
        return not trial["oom"] and trial["peak_nvml_bytes"] <= self.fraction * trial["usable_bytes"]

    def true_max(self, model: str, task: str, imgsz: int, start: int, data: str) -> int:
        """Largest batch whose real training fits: grow from `start` until it fails, then bisect."""
        cap = self.images
        low, high = 0, None
        b = max(1, min(start, cap))
        while high is None:
            if self.fits(self.child("trial", model, task, imgsz, b, data)):
                low = b
                if b >= cap:
                    return cap
                b = min(cap, max(b + 1, int(b * 1.25)))
            else:
                high = b
        if low == 0:  # the start itself failed: search below it
            b = high // 2
            while b >= 1 and not self.fits(self.child("trial", model, task, imgsz, b, data)):
                high, b = b, b // 2
            low = max(b, 0)
        while high - low > 1:
            mid = (low + high) // 2
            if self.fits(self.child("trial", model, task, imgsz, mid, data)):
                low = mid
            else:
                high = mid
        return low


def simulated_child(kind: str, model: str, task: str, imgsz: int, batch: int, fraction: float) -> dict:
    """The simulated device: 16 GiB; memory = fixed + per_image * b (per model, task, imgsz); no GPU."""
    from visionbatch.fit.planner import plan_batch
    from visionbatch.fit.probes.simulated import SimulatedProbe

    scale = (imgsz / 640) ** 2 * (2.7 if "11s" in model else 1.0) * (1.35 if task == "segment" else 1.0)
    fixed, per_image, total = 0.9e9, 0.21e9 * scale, 16 * (1 << 30)

    def law(b: int, phase: str) -> float:
        return fixed + per_image * b * (1.0 if phase == "train" else 0.25)

    if kind == "trial":
        need = law(batch, "train") * 1.01  # real runs hold a little more than one step
        return {"batch": batch, "usable_bytes": total, "oom": need > total, "peak_nvml_bytes": min(need, total),
                "peak_reserved_bytes": min(need, total), "seconds": 0.0}
    if kind == "autobatch":  # its proxy step misses the loss, the optimizer state and the EMA
        proxy_fixed, proxy_slope = 0.8 * fixed, 0.7 * per_image
        b = int((fraction * total - proxy_fixed) / proxy_slope)
        return {"batch": b, "seconds": 0.0, "predicted_bytes": proxy_fixed + proxy_slope * b}

    class Null:
        train_step = val_step = staticmethod(lambda *a, **k: 0.0)
        time_steps = staticmethod(lambda b, steps=3: 0.01 + 0.001 * b)
        persistent = staticmethod(lambda: [])

    plan = plan_batch(SimulatedProbe(law, total), Null(), fraction, dataset_images=10_000)
    return {"batch": plan.batch_size, "max_batch": plan.max_batch_size, "seconds": plan.planning_s,
            "predicted_bytes": plan.predicted_bytes, "measured_bytes": plan.measured_bytes,
            "usable_bytes": plan.usable_bytes, "probes": sum(s.phase == "train" for s in plan.samples)}


def segmentation_copy(data: str, tmp: Path) -> str:
    """A copy of a box-labelled dataset whose labels are the boxes' corners as polygons."""
    import yaml

    from visionbatch.dataset import label_path, load_dataset

    summary = load_dataset(data)
    root = tmp / "seg-dataset"
    raw = dict(summary.raw)
    for key in ("train", "val"):
        split = getattr(summary, key)
        new_sources = []
        for n, source in enumerate(split.sources):
            src = Path(source)
            dest = root / f"{key}{n}" / "images"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.symlink_to(src if src.is_dir() else src.parent, target_is_directory=True)
            for image in (p for p in src.rglob("*") if p.is_file()):
                label = Path(label_path(str(image)))
                if not label.exists():
                    continue
                target = Path(label_path(str(dest / image.relative_to(src))))
                target.parent.mkdir(parents=True, exist_ok=True)
                rows = []
                for line in label.read_text().splitlines():
                    c, x, y, w, h = (float(v) for v in line.split()[:5])
                    corners = [x - w / 2, y - h / 2, x + w / 2, y - h / 2, x + w / 2, y + h / 2, x - w / 2, y + h / 2]
                    rows.append(f"{int(c)} " + " ".join(f"{min(max(v, 0), 1):.6f}" for v in corners))
                target.write_text("\n".join(rows) + "\n")
            new_sources.append(str(dest))
        raw[key] = new_sources
    raw.pop("path", None)
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data.yaml, e.g. ../shared/datasets/coco128/data.yaml")
    parser.add_argument("--models", nargs="+", default=["yolo11n", "yolo11s"])
    parser.add_argument("--tasks", nargs="+", default=["detect", "segment"])
    parser.add_argument("--imgsz", nargs="+", type=int, default=[640, 1024])
    parser.add_argument("--fraction", type=float, default=0.9)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--simulate", action="store_true", help="no GPU: run the flow on a simulated device")
    parser.add_argument("--json", dest="json_out", help="also write all results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--model", "--task", "--tmp", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = {"trial": child_trial, "autobatch": child_autobatch, "fit": child_fit}[args.child](args)
        Path(args.out).write_text(json.dumps(result))
        return 0

    if not args.simulate:
        import torch

        if not torch.cuda.is_available():
            print("bench_autobatch: no CUDA GPU here; run it on a machine with one, or pass --simulate to exercise "
                  "the script on a simulated device", file=sys.stderr)
            return 2
        device = torch.cuda.get_device_name(0)
    else:
        device = "SIMULATED 16 GiB device (not a measurement)"
    from visionbatch.dataset import load_dataset

    data = str(Path(args.data).resolve())
    images = load_dataset(data).train.images
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(data, images, args.fraction, args.iterations, args.simulate, Path(tmp))
        seg_data = None
        for model_name in args.models:
            for task in args.tasks:
                model = MODELS[(model_name, task)]
                task_data = data
                if task == "segment" and not load_dataset(data).segmentable:
                    seg_data = seg_data or segmentation_copy(data, Path(tmp))
                    task_data = seg_data
                runner.data = task_data
                for imgsz in args.imgsz:
                    auto = runner.child("autobatch", model, task, imgsz, data=task_data)
                    fit = runner.child("fit", model, task, imgsz, data=task_data)
                    truth = runner.true_max(model, task, imgsz, fit["max_batch"], task_data)
                    for name, plan in (("autobatch", auto), ("visionbatch", fit)):
                        trial = runner.child("trial", model, task, imgsz, plan["batch"], task_data)
                        rows.append({
                            "model": model, "task": task, "imgsz": imgsz, "planner": name,
                            "planning_s": plan["seconds"], "batch": plan["batch"], "true_max": truth,
                            "predicted_gb": plan["predicted_bytes"] / GB if plan["predicted_bytes"] else None,
                            "measured_gb": trial["peak_nvml_bytes"] / GB, "reserved_gb": trial["peak_reserved_bytes"] / GB,
                            "oom": trial["oom"], "within_fraction": runner.fits(trial),
                        })
    print(f"\nDevice: {device}; data {args.data}; memory fraction {args.fraction}; real runs: "
          f"{args.iterations} iterations with mosaic + one validation pass\n")
    print("| model | task | imgsz | planner | planning s | batch | true max | batch / true max | predicted GB | "
          "measured peak GB (NVML) | predicted / measured | OOM | within fraction |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        predicted = f"{r['predicted_gb']:.2f}" if r["predicted_gb"] else "-"
        ratio = f"{r['predicted_gb'] / r['measured_gb']:.3f}" if r["predicted_gb"] and r["measured_gb"] else "-"
        cells = [r["model"], r["task"], r["imgsz"], r["planner"], f"{r['planning_s']:.1f}", r["batch"], r["true_max"],
                 f"{r['batch'] / max(r['true_max'], 1):.2f}", predicted, f"{r['measured_gb']:.2f}", ratio,
                 "yes" if r["oom"] else "no", "yes" if r["within_fraction"] else "no"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
