"""tools/make_shapes.py regenerates the shipped dataset byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_dataset_regenerates_byte_for_byte() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_shapes.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all 401 files match" in proc.stdout


def test_check_notices_a_changed_file(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_shapes.py"), "--out", str(out)], check=True,
                   capture_output=True)
    label = out / "labels" / "val" / "val_0003.txt"
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_shapes.py"), "--check", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "differs: labels/val/val_0003.txt" in proc.stdout
