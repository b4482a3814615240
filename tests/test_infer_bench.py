"""tools/bench_infer.py runs end to end at a tiny size: visionbatch infer and benchmark()'s path, both real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_infer_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    caches = sorted(ROOT.glob("datasets/shapes/**/*.cache"))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_infer.py"), "--imgsz", "64", "--tasks", "detect",
                           "--latency-ms", "1000", "--out", str(out),
                           "--infer-args", "max_batch=4", "seconds=0.25", "max_seconds=15"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| detect | onnxruntime cpu fp32 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    benchmark_ms, benchmark_fps, own_fps, batch1, chosen_batch, chosen_fps, gain = cells[2:9]
    assert float(benchmark_ms) > 0 and float(benchmark_fps) > 0 and float(own_fps) > 0  # both benchmark() runs worked
    assert float(batch1) > 0 and int(chosen_batch) >= 1 and float(chosen_fps) > 0 and gain.endswith("x")
    assert "### detect: yolo11n.yaml at 64 px, onnxruntime cpu fp32" in proc.stdout
    assert out.read_text() == proc.stdout[:-1]  # print() adds the last newline
    assert sorted(ROOT.glob("datasets/shapes/**/*.cache")) == caches  # benchmark() validated on a copy
