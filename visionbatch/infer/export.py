"""What to run: the user's model resolved to a file the chosen backend can load, exported if need be.

`.pt`/`.yaml` go through Ultralytics' own exporter (offline) with a dynamic batch dimension;
a ready `.onnx` or `.engine` is used as it is. Traps handled here:

- The exporter writes next to the source (`file.with_suffix('.onnx')`: beside the user's `.pt`,
  or in the working folder for a `.yaml`), overwriting a file of that name. visionbatch points the
  copy it exports at the run folder instead, so nothing of the user's is touched.
- `simplify=True` (Ultralytics' default) asks for `onnxslim`, which Ultralytics would pip-install;
  it is used only when already installed.
- `dynamic=True` makes height and width dynamic too; the model still runs at one `imgsz`.
- A TensorRT engine built by Ultralytics starts with a JSON metadata header that TensorRT itself
  (trtexec, Triton, DeepStream) cannot read; `engine_bytes` strips it for deployment copies.
- Ultralytics' engine profile spans batch 1..`batch` with opt at `batch`: the exporter's `batch`
  must be the largest batch to sweep, or the engine refuses anything above 1.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.files import is_disk_error, storage_error
from visionbatch.ultralytics_compat import check_model, offline

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
SOURCE_SUFFIXES = (".pt", ".yaml", ".yml")
MAX_METADATA_CHARS = 1_000_000  # an ONNX file's names/imgsz metadata is parsed as a literal: bounded first


@dataclasses.dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model file says about itself.

    Attributes:
        path: the file.
        task: 'detect' or 'segment' (from metadata, else from the outputs).
        names: class names by id (empty when unknown).
        imgsz: the size the file was exported at, if it says.
        input_name: the image input's name.
        fixed_batch: the batch size when the batch dimension is fixed, else None (dynamic).
        fixed_hw: (height, width) when fixed, else None.
        half: whether the input is fp16.
    """

    path: Path
    task: str
    names: dict[int, str]
    imgsz: int | None
    input_name: str = "images"
    fixed_batch: int | None = None
    fixed_hw: tuple[int, int] | None = None
    half: bool = False


def check_source(model: str) -> str:
    """Refuse what cannot run or would download; returns the kind: 'source', 'onnx' or 'engine'."""
    text = str(model)
    suffix = Path(text).suffix.lower()
    if suffix in ONNX_SUFFIXES + ENGINE_SUFFIXES:
        if "://" in text:
            raise ConfigError(f"model={text}: visionbatch never downloads models: pass a local file")
        if not Path(text).expanduser().is_file():
            raise ConfigError(f"model={text}: no such file: pass the path to a local {suffix} file, "
                              f"or a .pt/.yaml model to export")
        return "onnx" if suffix in ONNX_SUFFIXES else "engine"
    if suffix in SOURCE_SUFFIXES or "://" in text:
        check_model(text)
        return "source"
    raise ConfigError(f"model={text}: expected a model YAML (yolo11n.yaml), a local checkpoint (.pt), "
                      f"an ONNX file (.onnx) or a TensorRT engine (.engine)")


def source_task(model: str, trust: bool = False) -> str:
    """The task of a .pt/.yaml model, loading a checkpoint safely unless `trust` (ConfigError if it cannot be)."""
    from visionbatch.ultralytics_compat import model_task

    return model_task(model, trust)


def export(model: str, fmt: str, out_dir: Path, imgsz: int, half: bool = False, device: str = "cpu",
           max_batch: int = 1) -> Path:
    """Export a .pt/.yaml to ONNX or a TensorRT engine in `out_dir`, dynamic batch, offline.

    Args:
        model: a .pt or model YAML.
        fmt: 'onnx' or 'engine'.
        out_dir: where the file goes (the run folder); nothing is written beside `model`.
        imgsz: export size in pixels.
        half: fp16 (an fp16 ONNX needs a CUDA device to export; an engine builds fp16 kernels).
        device: 'cpu' or a CUDA device ('0', 'cuda:0').
        max_batch: for engines, the largest batch the optimisation profile admits.

    Returns:
        The exported file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # the export is written in a scratch folder and moved into place whole: a crash or a full disk
    # never leaves a partial .onnx under the real name
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        with offline():
            from ultralytics import YOLO

            yolo = YOLO(model)
            stem = Path(model).stem
            # the exporter names its output after pt_path: point it at the scratch folder
            yolo.model.pt_path = str(scratch / f"{stem}.pt")
            args: dict[str, Any] = dict(format=fmt, dynamic=True, imgsz=imgsz, verbose=False,
                                        simplify=importlib.util.find_spec("onnxslim") is not None,
                                        device=_ultralytics_device(device),
                                        batch=max_batch if fmt == "engine" else 1)
            if half:
                args["quantize"] = 16
            try:
                written = Path(yolo.export(**args))
            except Exception as exc:
                if is_disk_error(exc):
                    raise storage_error(exc, out_dir, f"the {fmt} export") from None
                raise
        if not written.is_file():
            raise ConfigError(f"model={model}: Ultralytics' {fmt} export wrote nothing at {written}: "
                              f"see its log above")
        path = out_dir / written.name
        os.replace(written, path)
        return path
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ultralytics_device(device: str) -> str:
    return "cpu" if device == "cpu" else device.replace("cuda:", "")


def onnx_info(path: Path) -> ModelInfo:
    """Read an ONNX file's input shape and Ultralytics metadata without running it."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise ConfigError(f"model={path}: not a readable ONNX file ({type(exc).__name__}): re-export it") from None
    meta = {p.key: p.value for p in model.metadata_props}
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not graph_inputs:
        raise ConfigError(f"model={path}: the ONNX graph has no input: re-export it")
    first = graph_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ConfigError(f"model={path}: input {first.name} has {len(dims)} dimensions, expected NCHW images")
    elem = first.type.tensor_type.elem_type
    outputs = len(model.graph.output)
    task = meta.get("task") or ("segment" if outputs == 2 else "detect")
    return ModelInfo(
        path=path,
        task=task,
        names=_names(meta.get("names")),
        imgsz=_imgsz(meta.get("imgsz")),
        input_name=first.name,
        fixed_batch=dims[0],
        fixed_hw=(dims[2], dims[3]) if dims[2] and dims[3] else None,
        half=elem == onnx.TensorProto.FLOAT16,
    )


def engine_header(path: Path) -> tuple[int, dict]:
    """(offset of the engine bytes, Ultralytics metadata) of an .engine file; (0, {}) for a plain plan.

    Ultralytics writes a 4-byte little-endian length and that much JSON before the engine
    (`ultralytics/nn/backends/base.py`, `engine_header`).
    """
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(4), byteorder="little")
        end = fh.seek(0, 2)
        if 0 < size <= end - 4:
            fh.seek(4)
            try:
                return 4 + size, json.loads(fh.read(size))
            except (ValueError, UnicodeDecodeError):
                pass
    return 0, {}


def engine_bytes(path: Path) -> bytes:
    """The serialized engine alone, as trtexec, Triton and DeepStream expect it."""
    offset, _ = engine_header(path)
    data = path.read_bytes()
    return data[offset:]


def engine_info(path: Path) -> ModelInfo:
    """What an .engine file's Ultralytics header says (task, names, imgsz); defaults otherwise."""
    _, meta = engine_header(path)
    imgsz = meta.get("imgsz")
    return ModelInfo(
        path=path,
        task=meta.get("task", "detect"),
        names={int(k): v for k, v in (meta.get("names") or {}).items()},
        imgsz=int(imgsz[0]) if isinstance(imgsz, (list, tuple)) and imgsz else None,
    )


def _names(text: str | None) -> dict[int, str]:
    if not text:
        return {}
    try:
        value = ast.literal_eval(text[:MAX_METADATA_CHARS])
        return {int(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {}  # metadata a file carries is only a hint: unreadable means none


def _imgsz(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = ast.literal_eval(text[:MAX_METADATA_CHARS])
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**16 else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
