"""A strict reader for DeepStream's key files: Gst-nvinfer configs and deepstream-app's [streammux] group.

DeepStream reads these files with GLib's GKeyFile: `[group]` lines, `key=value` lines, and whole
lines starting with '#' as comments (a '#' after a value is part of the value). The tables below
hold only keys NVIDIA documents, with their value types:

- Gst-nvinfer: the "Gst-nvinfer Property Group Supported Keys" and "Class-attributes Group
  Supported Keys" tables of the DeepStream plugin guide, whose names are the macros of
  gstnvinfer_property_parser.h (deprecated keys such as is-classifier and uff-input-dims left out).
- nvstreammux: the [streammux] group of the deepstream-app configuration guide ("Streammux Group"),
  the same names as the Gst-nvstreammux element properties; checked against the fields of
  deepstream-app's `NvDsStreammuxConfig` / `GstDsNvStreammuxConfig` (DeepStream 7.1 and 8.0 SDK API
  reference: pipeline_width/height are `width`/`height`, no_pipeline_eos is `drop-pipeline-eos`).

`parse` refuses what GKeyFile or nvinfer would refuse or silently misread: a line that is not a
group, a key or a comment; a key outside its table; a value of the wrong type (GKeyFile integers and
booleans are whole-value, booleans are true/false/1/0); a key given twice. `resolve` is nvinfer's
rule for file paths (get_absolute_file_path): absolute as written, else relative to the folder of
the config file, never to the working directory.
"""

from __future__ import annotations

import re
from pathlib import Path

INT, UINT, POSITIVE, FLOAT, BOOL, STRING, PATH, INT_LIST, FLOAT_LIST, STRING_LIST = (
    "int", "uint", "positive", "float", "bool", "string", "path", "int_list", "float_list", "string_list")


def choice(*values: int) -> tuple[str, tuple[int, ...]]:
    return ("choice", values)


NVINFER_PROPERTY = {
    "gpu-id": UINT, "gie-unique-id": POSITIVE, "process-mode": choice(1, 2), "interval": UINT,
    "labelfile-path": PATH, "secondary-reinfer-interval": UINT, "output-tensor-meta": BOOL,
    "enable-dla": BOOL, "use-dla-core": UINT, "batch-size": POSITIVE, "tensor-meta-pool-size": POSITIVE,
    "network-mode": choice(0, 1, 2, 3), "model-engine-file": PATH, "int8-calib-file": PATH,
    "workspace-size": POSITIVE, "output-blob-names": STRING_LIST, "network-type": choice(0, 1, 2, 3, 100),
    "force-implicit-batch-dim": BOOL, "infer-dims": INT_LIST, "output-io-formats": STRING_LIST,
    "layer-device-precision": STRING_LIST, "model-color-format": choice(0, 1, 2), "net-scale-factor": FLOAT,
    "offsets": FLOAT_LIST, "mean-file": PATH, "maintain-aspect-ratio": BOOL, "symmetric-padding": BOOL,
    "scaling-filter": UINT, "scaling-compute-hw": choice(0, 1, 2), "network-input-order": choice(0, 1),
    "input-tensor-from-meta": BOOL, "custom-lib-path": PATH, "parse-bbox-func-name": STRING,
    "parse-bbox-instance-mask-func-name": STRING, "engine-create-func-name": STRING,
    "parse-classifier-func-name": STRING, "custom-network-config": PATH, "model-file": PATH, "proto-file": PATH,
    "uff-file": PATH, "uff-input-order": choice(0, 1, 2), "uff-input-blob-name": STRING,
    "tlt-encoded-model": PATH, "tlt-model-key": STRING, "onnx-file": PATH, "num-detected-classes": POSITIVE,
    "cluster-mode": choice(0, 1, 2, 3, 4), "classifier-type": STRING, "classifier-threshold": FLOAT,
    "classifier-async-mode": BOOL, "segmentation-threshold": FLOAT, "segmentation-output-order": choice(0, 1),
    "output-instance-mask": BOOL, "input-object-min-width": UINT, "input-object-min-height": UINT,
    "input-object-max-width": UINT, "input-object-max-height": UINT, "operate-on-gie-id": INT,
    "operate-on-class-ids": INT_LIST, "filter-out-class-ids": INT_LIST,
}
NVINFER_CLASS_ATTRS = {
    "threshold": FLOAT, "pre-cluster-threshold": FLOAT, "post-cluster-threshold": FLOAT, "eps": FLOAT,
    "group-threshold": UINT, "minBoxes": UINT, "dbscan-min-score": FLOAT, "nms-iou-threshold": FLOAT,
    "topk": INT, "roi-top-offset": UINT, "roi-bottom-offset": UINT, "detected-min-w": UINT, "detected-min-h": UINT,
    "detected-max-w": UINT, "detected-max-h": UINT, "border-color": FLOAT_LIST, "bg-color": FLOAT_LIST,
}
STREAMMUX = {
    "gpu-id": UINT, "live-source": BOOL, "buffer-pool-size": POSITIVE, "batch-size": POSITIVE,
    "batched-push-timeout": INT, "width": POSITIVE, "height": POSITIVE, "enable-padding": BOOL,
    "nvbuf-memory-type": choice(0, 1, 2, 3), "num-surfaces-per-frame": POSITIVE, "attach-sys-ts-as-ntp": BOOL,
    "config-file-path": PATH, "sync-inputs": BOOL, "max-latency": UINT, "frame-num-reset-on-eos": BOOL,
    "frame-num-reset-on-stream-reset": BOOL, "frame-duration": INT, "async-process": BOOL,
    "drop-pipeline-eos": BOOL, "interpolation-method": UINT, "compute-hw": choice(0, 1, 2),
}
INT32_MAX = 2**31 - 1


def nvinfer_table(group: str) -> dict:
    if group == "property":
        return NVINFER_PROPERTY
    if group == "class-attrs-all" or re.fullmatch(r"class-attrs-\d+", group):
        return NVINFER_CLASS_ATTRS
    raise ValueError(f"[{group}] is not a Gst-nvinfer group")


def streammux_table(group: str) -> dict:
    if group == "streammux":
        return STREAMMUX
    raise ValueError(f"[{group}] is not the deepstream-app [streammux] group")


def _int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"{text!r} is not an integer")
    value = int(text)
    if not -INT32_MAX - 1 <= value <= INT32_MAX:
        raise ValueError(f"{text!r} does not fit a gint")
    return value


def _float(text: str) -> float:
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        raise ValueError(f"{text!r} is not a number")
    return float(text)


def _items(text: str) -> list[str]:
    items = text.split(";")
    return items[:-1] if items and items[-1] == "" else items  # GKeyFile lists may end with ';'


def typed(kind, text: str):
    """`text` read as GKeyFile and nvinfer read a value of `kind`; ValueError when they could not."""
    if isinstance(kind, tuple):
        value = _int(text)
        if value not in kind[1]:
            raise ValueError(f"{value} is not one of {kind[1]}")
        return value
    if kind == INT:
        return _int(text)
    if kind in (UINT, POSITIVE):
        value = _int(text)
        if value < (1 if kind == POSITIVE else 0):
            raise ValueError(f"{value} is below {1 if kind == POSITIVE else 0}")
        return value
    if kind == FLOAT:
        return _float(text)
    if kind == BOOL:
        if text not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not a GKeyFile boolean (true, false, 1, 0)")
        return text in ("true", "1")
    if kind in (STRING, PATH):
        if not text:
            raise ValueError("empty value")
        return text
    if kind == INT_LIST:
        return [_int(item) for item in _items(text)]
    if kind == FLOAT_LIST:
        return [_float(item) for item in _items(text)]
    if kind == STRING_LIST:
        return _items(text)
    raise AssertionError(kind)


def parse(text: str, table) -> dict[str, dict[str, object]]:
    """group -> key -> typed value; ValueError naming the line for anything the tables do not allow."""
    groups: dict[str, dict[str, object]] = {}
    current: dict[str, object] | None = None
    rows = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        group = re.fullmatch(r"\[([^\[\]]+)\]", stripped)
        if group:
            name = group.group(1)
            if name in groups:
                raise ValueError(f"line {number}: [{name}] given twice")
            rows = table(name)
            current = groups[name] = {}
            continue
        if "=" not in stripped:
            raise ValueError(f"line {number}: {line!r} is not a group, a key=value or a comment")
        if current is None:
            raise ValueError(f"line {number}: a key before any group")
        key, value = (part.strip() for part in stripped.split("=", 1))
        if key not in rows:
            raise ValueError(f"line {number}: {key} is not a documented key of this group")
        if key in current:
            raise ValueError(f"line {number}: {key} given twice")
        try:
            current[key] = typed(rows[key], value)
        except ValueError as error:
            raise ValueError(f"line {number}: {key}={value}: {error}") from None
    return groups


def paths(config: Path, table) -> dict[str, Path]:
    """Every path-valued key of `config`, resolved by nvinfer's rule."""
    found = parse(config.read_text(), table)
    return {key: resolve(config, value) for group, values in found.items() for key, value in values.items()
            if table(group)[key] == PATH}


def resolve(config: Path, value: str) -> Path:
    """nvinfer's get_absolute_file_path: absolute as written, else beside the config file."""
    path = Path(value)
    return path if path.is_absolute() else config.parent / path
