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
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from visionbatch.devices.parse import parse_device
from visionbatch.errors import ConfigError
from visionbatch.files import is_disk_error, storage_error
from visionbatch.text import config_hazard, identifier, is_control, printable
from visionbatch.ultralytics.models import check_model
from visionbatch.ultralytics.offline import offline, quiet_ultralytics

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
SOURCE_SUFFIXES = (".pt", ".yaml", ".yml")
MAX_METADATA_CHARS = 1_000_000  # an ONNX file's names/imgsz metadata is parsed as a literal: bounded first
TASKS = ("detect", "segment")  # what visionbatch infer tunes
OTHER_TASKS = ("classify", "pose", "obb")  # Ultralytics' other tasks: refused by name


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
        external_data: files the ONNX keeps tensors in, relative to its folder (checked to be
            files inside it), in the order first named.
    """

    path: Path
    task: str
    names: dict[int, str]
    imgsz: int | None
    input_name: str = "images"
    fixed_batch: int | None = None
    fixed_hw: tuple[int, int] | None = None
    half: bool = False
    external_data: tuple[str, ...] = ()


def check_source(model: str) -> str:
    """Refuse what cannot run or would download; returns the kind: 'source', 'onnx' or 'engine'."""
    text = str(model)
    suffix = Path(text).suffix.lower()
    if suffix in ONNX_SUFFIXES + ENGINE_SUFFIXES:
        if "://" in text:
            raise ConfigError(f"model={printable(text)}: visionbatch never downloads models: pass a local file")
        if not Path(text).expanduser().is_file():
            raise ConfigError(f"model={printable(text)}: no such file: pass the path to a local {printable(suffix)} "
                              f"file, or a .pt/.yaml model to export")
        _check_file_name(text)
        return "onnx" if suffix in ONNX_SUFFIXES else "engine"
    if suffix in SOURCE_SUFFIXES or "://" in text:
        if "://" not in text:
            _check_file_name(text)
        check_model(text)
        return "source"
    raise ConfigError(f"model={printable(text)}: expected a model YAML (yolo11n.yaml), a local checkpoint (.pt), "
                      f"an ONNX file (.onnx) or a TensorRT engine (.engine)")


def _check_file_name(model: str) -> None:
    """Refuse a file name the deployment configs could not carry as it is.

    The DeepStream config and trtexec.sh name the model's file (or the ONNX exported from it):
    a newline there starts a new config key, a quote or backslash changes what is read. Renamed
    copies would name files the user does not have, so such a name is refused before anything runs.
    """
    name = Path(model).name
    hazard = config_hazard(name)
    if hazard:
        path = Path(name)
        raise ConfigError(f"model={printable(model)}: the file name has {hazard}, which the DeepStream, Triton and "
                          f"TensorRT configs cannot carry: rename the file, e.g. to "
                          f"{identifier(path.stem)}{printable(path.suffix)}")


def source_task(model: str, trust: bool = False) -> str:
    """The task of a .pt/.yaml model, loading a checkpoint safely unless `trust` (ConfigError if it cannot be)."""
    from visionbatch.ultralytics.models import model_task

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
        # the exporter's info lines (banner, summary, scratch paths, a Netron link) report visionbatch's own step,
        # which says one line of its own; its warnings and errors still show
        with offline(), quiet_ultralytics():
            from ultralytics import YOLO

            yolo = YOLO(model)
            stem = Path(model).stem
            # the exporter names its output after pt_path: point it at the scratch folder
            yolo.model.pt_path = str(scratch / f"{stem}.pt")
            args: dict[str, Any] = dict(format=fmt, dynamic=True, imgsz=imgsz, verbose=False,
                                        simplify=importlib.util.find_spec("onnxslim") is not None,
                                        device=parse_device(device).ultralytics_name,
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


def onnx_info(path: Path) -> ModelInfo:
    """Read an ONNX file's input shape and Ultralytics metadata without running it.

    Tensors kept in external data files are checked to point at files inside the model's folder
    (ONNX Runtime refuses anything else, and a deployment copy can carry only those).
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise ConfigError(f"model={printable(path)}: not a readable ONNX file ({type(exc).__name__}): "
                          f"re-export it") from None
    external = external_data_files(model, path)
    meta = {p.key: p.value for p in model.metadata_props}
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not graph_inputs:
        raise ConfigError(f"model={printable(path)}: the ONNX graph has no input: re-export it")
    first = graph_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ConfigError(f"model={printable(path)}: input {printable(first.name)} has {len(dims)} dimensions, "
                          f"expected NCHW images")
    elem = first.type.tensor_type.elem_type
    outputs = len(model.graph.output)
    return ModelInfo(
        path=path,
        task=model_task(meta.get("task"), path, "segment" if outputs == 2 else "detect"),
        names=_names(meta.get("names")),
        imgsz=_imgsz(meta.get("imgsz")),
        input_name=first.name,
        fixed_batch=dims[0],
        fixed_hw=(dims[2], dims[3]) if dims[2] and dims[3] else None,
        half=elem == onnx.TensorProto.FLOAT16,
        external_data=external,
    )


def model_task(stated: object, path: Path, guessed: str) -> str:
    """The task a model file states in its metadata when it is one visionbatch knows, else `guessed`.

    Metadata is whatever the file's maker wrote: a detect or segment task is taken, another
    Ultralytics task (pose, classify, obb) is refused, anything else is ignored for `guessed`.

    Raises:
        ConfigError: the file is a pose, classify or obb model.
    """
    if stated in TASKS:
        return str(stated)
    if stated in OTHER_TASKS:
        raise ConfigError(f"model={printable(path)} is a {stated} model: visionbatch infer tunes detect and "
                          f"segment models")
    return guessed


def external_data_files(model: Any, path: Path) -> tuple[str, ...]:
    """The external data files an ONNX model's tensors point at, each checked to be a file in its folder.

    Raises:
        ConfigError: a location that is absolute, climbs out with '..', leads outside the model's
            folder through a link, or names no file.
    """
    import onnx

    folder = path.parent
    real_folder = os.path.realpath(folder)
    found: dict[str, None] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:  # as ONNX Runtime and onnx decide it
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        problem = _location_problem(location, folder, real_folder)
        if problem:
            raise ConfigError(f"model={printable(path)}: tensor {printable(tensor.name, 40)} keeps its data in "
                              f"'{printable(location)}', {problem}: external data must be files inside the model's "
                              f"folder; re-save it with onnx.save(model, path, save_as_external_data=True, "
                              f"location='{identifier(path.stem)}.data')")
        found[location] = None
    return tuple(found)


def _location_problem(location: str, folder: Path, real_folder: str) -> str | None:
    """Why an external data `location` cannot be read safely from `folder`, or None."""
    if not location:
        return "an empty location"
    if any(is_control(char) for char in location):
        return "a location with control characters"
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute() \
            or PureWindowsPath(location).drive or location.startswith(("/", "\\")):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", location):
        return "a path that climbs out with '..'"
    target = os.path.realpath(folder / location)
    if os.path.commonpath([target, real_folder]) != real_folder:
        return f"which leads outside the model's folder (to {printable(target)})"
    if not os.path.isfile(target):
        return "which is no file beside the model"
    return None


def _all_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse ones, node attributes, subgraphs, functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            sparse = list(attribute.sparse_tensors)
            if attribute.HasField("sparse_tensor"):
                sparse.append(attribute.sparse_tensor)
            for tensor in sparse:
                yield tensor.values
                yield tensor.indices
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for graph in attribute.graphs:
                yield from _graph_tensors(graph)


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
    meta = meta if isinstance(meta, dict) else {}
    imgsz = meta.get("imgsz")
    return ModelInfo(
        path=path,
        task=model_task(meta.get("task"), path, "detect"),
        names=_name_map(meta.get("names")),
        imgsz=int(imgsz[0]) if isinstance(imgsz, (list, tuple)) and imgsz and _is_size(imgsz[0]) else None,
    )


def _names(text: str | None) -> dict[int, str]:
    if not text:
        return {}
    try:
        return _name_map(ast.literal_eval(text[:MAX_METADATA_CHARS]))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {}  # metadata a file carries is only a hint: unreadable means none


def _name_map(value: Any) -> dict[int, str]:
    """Class names by id from a metadata dict; {} for anything else."""
    try:
        return {int(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
    except (ValueError, TypeError, OverflowError):
        return {}


def _imgsz(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = ast.literal_eval(text[:MAX_METADATA_CHARS])
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        return int(value) if _is_size(value) else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**16
