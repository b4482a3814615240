"""The benchmark scripts run end to end (GPU ones through their simulated mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_autobatch_runs_on_the_simulated_device(small_shapes: Path) -> None:
    for label in (small_shapes.parent / "labels").rglob("*.txt"):  # boxes only, as coco128
        label.write_text("0 0.5 0.5 0.2 0.2\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_autobatch.py"), "--data", str(small_shapes), "--simulate",
         "--models", "yolo11n", "--tasks", "detect", "segment", "--imgsz", "640"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| yolo11n")]
    assert len(rows) == 4  # two tasks x two planners
    assert "SIMULATED" in proc.stdout
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[1], c[3]) for c in cells] == [("detect", "autobatch"), ("detect", "visionbatch"),
                                             ("segment", "autobatch"), ("segment", "visionbatch")]
    assert [c[11] for c in cells if c[3] == "visionbatch"] == ["no", "no"]  # OOM column


def test_bench_autobatch_refuses_without_a_gpu(small_shapes: Path) -> None:
    """Asserted on every machine: a GPU machine hides its GPUs from the script (CUDA_VISIBLE_DEVICES empty)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_autobatch.py"), "--data", str(small_shapes)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "no CUDA GPU here" in proc.stderr


def test_bench_augcost_overhead_reports_each_phase(small_shapes: Path) -> None:
    """The timing agreement the suite no longer asserts is a measurement here: one row per phase, figures unjudged."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_augcost.py"), "--overhead", "--data", str(small_shapes),
         "--tasks", "detect", "--imgsz", "64", "--attempts", "1", "--", "images=8", "repeats=1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # 1 if a timed output differed from its untimed twin
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith("| shapes |")]
    assert [(row[3], row[4], row[8]) for row in rows] == [("1", "mosaic", "yes"), ("1", "close_mosaic", "yes"),
                                                          ("1", "val", "yes")]
    assert all(float(row[5]) > 0 and float(row[6]) > 0 and row[7].endswith("%") for row in rows)
    assert "over 3 phases" in proc.stdout and "within +-5%" in proc.stdout


def _load_tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibration_fit_recovers_the_allocator_law() -> None:
    tool = _load_tool("calibrate_memory")
    rows = [{"measured": {"ok": True, "allocated": a, "reserved": int(1.1 * a + 30 * 2**20), "context": c}}
            for a, c in ((1 << 30, 500 << 20), (2 << 30, 510 << 20), (5 << 30, 505 << 20))]
    constants = tool.fit_constants(rows, "hopper", "NVIDIA H100")
    assert constants["status"] == "calibrated" and constants["measured_on"] == "NVIDIA H100"
    assert constants["reserved_over_allocated"] == 1.1
    assert abs(constants["reserved_extra_bytes"] - 30 * 2**20) <= 1
    assert constants["context_bytes"]["hopper"] == 505 << 20


def test_calibrate_memory_trace_only_runs_without_a_gpu(shapes_yaml: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "calibrate_memory.py"), "--data", str(shapes_yaml),
                           "--models", "yolo11n", "--tasks", "detect", "--imgsz", "64", "--amp", "off", "--batches",
                           "1", "--trace-only"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| yolo11n.yaml | detect | 64 | False | 1 |" in proc.stdout


def test_bench_staging_builds_reuses_and_rebuilds() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_staging.py"), "--images", "50", "--val", "10"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 60 ")]
    assert len(row) == 1 and row[0].rstrip().endswith("| 1 |")  # the older mirror was removed
