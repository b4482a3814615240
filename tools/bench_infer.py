#!/usr/bin/env python3
"""Inference batching: `visionbatch infer`'s sweep and choice against Ultralytics' batch-1 `benchmark()`.

For each task (detect: yolo11n.yaml, segment: yolo11n-seg.yaml), each in its own process:

  visionbatch   `visionbatch infer MODEL imgsz=320 backend=onnxruntime latency_ms=100 --json`:
                exports the model (dynamic batch), sweeps batch sizes, chooses one; its wall time
                is the acceptance figure (< 2 minutes on a 2-core CPU)
  benchmark()   Ultralytics' `benchmark()` measuring path, run offline on the very file visionbatch
                exported: `YOLO(file).predict(bus.jpg)` then `.val(batch=1, rect=False, conf=0.001)`,
                reading `results.speed['inference']` (mean ms per image of the model call alone)
                and FPS = 1000 / that, as benchmark() does (ultralytics/utils/benchmarks.py). The
                lines are replayed rather than calling benchmark() itself because benchmark() can
                only export, not take a ready .onnx/.engine: its '-' (PyTorch) row reads
                `model.pt_path`, which a YOLO made from an exported file or a YAML does not have.
                Same model file, same backend (AutoBackend: ONNX Runtime with its default threads).
  benchmark()*  `benchmark(model=MODEL.yaml, format='onnx')` itself, as a user types it: Ultralytics
                exports its own static batch-1 ONNX and measures it the same way.

Validation runs on a temporary copy of the shipped datasets/shapes val split (40 images), so no
label cache lands in the repository. The models are built from YAML (untrained weights): timing
does not depend on the weight values, and mAP is meaningless here.

With CUDA present, the same comparison runs for PyTorch fp16, ONNX Runtime CUDA (when the CUDA
execution provider is installed) and TensorRT fp16 (when tensorrt imports).

Prints Markdown tables for BENCHMARKS.md.

Usage:
    python tools/bench_infer.py [--imgsz 320] [--latency-ms 100] [--tasks detect segment]
                                [--data datasets/shapes/data.yaml] [--no-benchmark] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"detect": "yolo11n.yaml", "segment": "yolo11n-seg.yaml"}
BENCHMARK = """
import json, sys
from visionbatch.ultralytics.offline import offline
mode, model, task, data, imgsz, fmt, device, half = sys.argv[1:9]
quantize = 16 if half == "1" else None
with offline():
    if mode == "benchmark":
        from ultralytics.utils.benchmarks import benchmark
        frame = benchmark(model=model, data=data, imgsz=int(imgsz), format=fmt, device=device, quantize=quantize)
        row = dict(zip(frame.columns, frame.row(0)))
        ms = row["Inference time (ms/im)"]
        ok = row["Status\u2754"] == "\u2705" and ms not in (None, "-")
        result = {"ms_per_image": float(ms) if ok else None, "fps": float(row["FPS"]) if ok else None}
    else:  # the lines benchmark() runs for one format, on a ready file
        from ultralytics import YOLO
        from ultralytics.utils import ASSETS
        yolo = YOLO(model, task=task)
        yolo.predict(ASSETS / "bus.jpg", imgsz=int(imgsz), device=device, quantize=quantize, verbose=False)
        results = yolo.val(data=data, batch=1, imgsz=int(imgsz), rect=False, plots=False, device=device,
                           quantize=quantize, verbose=False, conf=0.001)
        speed = results.speed["inference"]
        result = {"ms_per_image": round(speed, 2), "fps": round(1000 / (speed + 1e-3), 2)}
print("VISIONBATCH-BENCH " + json.dumps(result))
"""

def run(cmd: list[str], cwd: Path) -> tuple[str, str, float, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return proc.stdout, proc.stderr, time.perf_counter() - start, proc.returncode


def visionbatch_infer(model: str, args: list[str], work: Path) -> tuple[dict, float]:
    out, err, wall, code = run([sys.executable, "-m", "visionbatch", "infer", model, *args,
                                f"project={work / 'runs'}", "--json"], work)
    if code != 0:
        raise SystemExit(f"visionbatch infer {model} {' '.join(args)} failed ({code}):\n{err[-3000:]}")
    return json.loads(out), wall


def ultralytics_benchmark(mode: str, model: str, task: str, data: Path, imgsz: int, fmt: str, device: str,
                          half: bool, work: Path) -> dict:
    out, err, wall, code = run([sys.executable, "-c", BENCHMARK, mode, model, task, str(data), str(imgsz), fmt,
                                device, "1" if half else "0"], work)
    line = next((l for l in out.splitlines() if l.startswith("VISIONBATCH-BENCH ")), None)
    if code != 0 or line is None:
        return {"error": (err or out)[-500:], "wall_s": wall}
    result = json.loads(line.removeprefix("VISIONBATCH-BENCH "))
    if result["fps"] is None:
        failure = next((l for l in (err + out).splitlines() if "Benchmark failure" in l), "no figure")
        return {"error": failure, "wall_s": wall}
    return {**result, "wall_s": wall}


def val_copy(data_yaml: Path, dest: Path) -> Path:
    """A data.yaml over a copy of the val split, so benchmark()'s label cache stays out of the repo."""
    spec = yaml.safe_load(data_yaml.read_text())
    root = (data_yaml.parent / spec.get("path", ".")).resolve()
    for part in ("images", "labels"):
        shutil.copytree(root / part / "val", dest / part / "val")
    copy = {"path": str(dest), "train": "images/val", "val": "images/val", "names": spec["names"]}
    (dest / "data.yaml").write_text(yaml.safe_dump(copy, sort_keys=False))
    return dest / "data.yaml"


def sweep_table(plan: dict) -> str:
    first = plan["measurements"][0]
    verdicts = {v["batch_size"]: v for v in plan["verdicts"]}
    lines = ["| batch | runs | p50 ms | p90 ms | p99 ms | ms/img | img/s | x batch 1 | memory MiB | verdict |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in plan["measurements"]:
        gain = m["throughput_per_s"] / first["throughput_per_s"] if first["batch_size"] == 1 else None
        verdict = verdicts[m["batch_size"]]
        mark = "**chosen**" if m["batch_size"] == plan["batch_size"] else (
            "ok" if verdict["feasible"] else "; ".join(verdict["violations"]))
        memory = f"{m['memory_bytes'] / 2**20:.0f}" if m["memory_bytes"] else "-"
        lines.append(f"| {m['batch_size']} | {m['runs']} | {m['latency_p50_ms']:.1f} | {m['latency_p90_ms']:.1f} | "
                     f"{m['latency_p99_ms']:.1f} | {m['per_image_ms']:.2f} | {m['throughput_per_s']:.1f} | "
                     f"{'-' if gain is None else f'{gain:.2f}x'} | {memory} | {mark} |")
    return "\n".join(lines)


def configurations(cuda: bool) -> list[tuple[str, list[str], bool]]:
    """(label, visionbatch infer args, half) for each backend to compare on this machine."""
    if not cuda:
        return [("onnxruntime cpu fp32", ["backend=onnxruntime", "device=cpu"], False)]
    found = [("pytorch cuda fp16", ["backend=pytorch", "device=0", "half=True"], True)]
    from visionbatch.infer.ort import import_onnxruntime  # telemetry off

    if "CUDAExecutionProvider" in import_onnxruntime().get_available_providers():
        found.append(("onnxruntime cuda fp32", ["backend=onnxruntime", "device=0"], False))
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        found.append(("tensorrt fp16", ["backend=tensorrt", "device=0", "half=True"], True))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--tasks", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=ROOT / "datasets" / "shapes" / "data.yaml")
    parser.add_argument("--no-benchmark", action="store_true", help="skip Ultralytics' benchmark() runs")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--infer-args", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more visionbatch infer keys, e.g. max_batch=4 seconds=0.25 (a quick run)")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    machine = torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or platform.machine()}, " \
                                                          f"{os.cpu_count()} CPUs"
    sections = [f"Machine: {machine}; python {platform.python_version()}, torch {torch.__version__}; "
                f"{time.strftime('%Y-%m-%d')}. Command: `python tools/bench_infer.py "
                f"{' '.join(argv if argv is not None else sys.argv[1:])}`."]
    summary = ["| task | backend | benchmark() ms/img (same ONNX) | benchmark() img/s | benchmark()* img/s (own "
               "export) | visionbatch batch 1 img/s | chosen batch | chosen img/s | gain vs benchmark() | "
               "visionbatch infer wall s |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        work = Path(tmp)
        data = val_copy(args.data.resolve(), work / "data")
        for task in args.tasks:
            model = MODELS[task]
            for label, extra, half in configurations(cuda):
                plan, wall = visionbatch_infer(model, [f"imgsz={args.imgsz}", f"latency_ms={args.latency_ms:g}",
                                                       f"name={task}-{label.replace(' ', '-')}", *extra,
                                                       *args.infer_args], work)
                sections.append(f"### {task}: {model} at {args.imgsz} px, {label} ({plan['provider']}, "
                                f"{plan['cpu_threads'] or '-'} CPU threads), latency_ms={args.latency_ms:g}\n\n"
                                f"{sweep_table(plan)}\n\nchosen: {plan['reason']}  \nsweep stopped: "
                                f"{plan['stop_reason']}  \n`visionbatch infer` wall time: {wall:.1f} s "
                                f"(export, sweep, plot, configs)")
                device = "cpu" if "device=cpu" in extra else "0"
                same_file = model if plan["backend"] == "pytorch" else plan["model_file"]
                bench = own = {}
                if not args.no_benchmark:
                    bench = ultralytics_benchmark("replica", same_file, task, data, args.imgsz, "", device, half, work)
                    if plan["backend"] != "pytorch":  # benchmark() cannot run a YAML-built PyTorch model
                        own_format = {"onnxruntime": "onnx", "tensorrt": "engine"}[plan["backend"]]
                        own = ultralytics_benchmark("benchmark", model, task, data, args.imgsz, own_format, device,
                                                    half, work)
                first = plan["measurements"][0]
                chosen = next((m for m in plan["measurements"] if m["batch_size"] == plan["batch_size"]), None)
                gain = (f"{chosen['throughput_per_s'] / bench['fps']:.2f}x"
                        if chosen and bench.get("fps") else "-")
                summary.append(
                    f"| {task} | {label} | {_num(bench.get('ms_per_image'))} | {_num(bench.get('fps'))} | "
                    f"{_num(own.get('fps'))} | {first['throughput_per_s']:.1f} | {plan['batch_size'] or '-'} | "
                    f"{_num(chosen and chosen['throughput_per_s'])} | {gain} | {wall:.1f} |")
                for name, result in (("benchmark()", bench), ("benchmark()*", own)):
                    if "error" in result:
                        sections.append(f"{name} failed for {task} {label}: `{result['error'].strip()[-300:]}`")
    text = "\n\n".join(["\n".join(summary), *sections]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
