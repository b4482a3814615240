"""The benchmark scripts run end to end (GPU ones through their simulated mode)."""

from __future__ import annotations

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
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_autobatch.py"), "--data", str(small_shapes)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU here" in proc.stderr
