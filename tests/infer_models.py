"""Small exported models shared by the infer tests: exported once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionbatch.infer.export import export

_exported: dict[str, Path] = {}


def tiny_onnx(factory: pytest.TempPathFactory, model: str = "yolo11n.yaml", imgsz: int = 64) -> Path:
    """`model` exported to ONNX at `imgsz` with a dynamic batch (Ultralytics' exporter, offline)."""
    key = f"{model}@{imgsz}"
    if key not in _exported:
        _exported[key] = export(model, "onnx", factory.mktemp("onnx"), imgsz=imgsz)
    return _exported[key]
