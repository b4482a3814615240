"""Deployment settings that carry the chosen batch into production: DeepStream, Triton, TensorRT.

Text generators are pure (`DeploymentSpec` in, text out); `write_deployment` puts the files in the
run folder. The numbers, from the chosen batch b and the load of N streams x F fps:

- nvstreammux `batch-size` = b; `batched-push-timeout` = b / (N x F) in microseconds: the time b
  frames take to arrive, one arrival more than the expected fill wait (b - 1) / (N x F), so a
  batch is not pushed half full by jitter. With b = N that is NVIDIA's advice, 1e6 / fps (DeepStream
  FAQ, "How to set parameters reasonably to improve the efficiency of nvstreammux in live mode").
  Without a load: the latency budget's slack (budget - p99), else 1e6 / 30 for 30 fps cameras.
- nvinfer `batch-size` = b, `network-mode` 0 (fp32) or 2 (fp16), `model-engine-file` named like
  the engine trtexec writes (keys as in gstnvinfer_property_parser.h).
- Triton `max_batch_size` = `preferred_batch_size` = b; `max_queue_delay_microseconds` = the fill
  wait (b - 1) / (N x F), else the budget's slack, else 0 (field names from Triton's
  model_config.proto: ModelConfig, ModelDynamicBatching, ModelInstanceGroup).
- TensorRT optimisation profile min 1, opt b, max b at the model's input size, and the trtexec
  command that builds it.

Names inside a model file are its maker's: the model name is a safe identifier (checked here),
file names that reach a config must be free of control characters, quotes and backslashes
(refused here), tensor names are escaped in Triton's strings, every shell word is quoted, and
class names and comments lose their control characters (`visionbatch.infer.text`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from visionbatch.errors import ConfigError
from visionbatch.files import atomic_copy, atomic_write_bytes, atomic_write_text
from visionbatch.infer.plan import StreamLoad
from visionbatch.text import (
    config_hazard,
    identifier,
    one_line,
    pbtxt_string,
    printable,
)

DEFAULT_CAMERA_FPS = 30
MAX_INT32 = 2**31 - 1  # nvstreammux's batched-push-timeout is a gint: a longer wait is written as its largest
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}  # nvinfer network-mode
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


@dataclasses.dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What the configs need to know.

    Attributes:
        model_name: the deployed model's name, e.g. 'yolo11n': Triton's model folder and the
            engine file's stem, so only [A-Za-z0-9_.-] (`identifier(file stem)` makes one).
        task: 'detect' or 'segment'.
        imgsz: square input size in pixels.
        batch_size: the chosen batch.
        precision: 'fp32' or 'fp16'.
        num_classes: classes the head predicts.
        outputs: (name, dtype, per-image dims) of each output, e.g. ('output0', 'float32', (84, 2100)).
        input_name: the image input tensor.
        input_dtype: 'float32' or 'float16'.
        load: the camera load, if given.
        latency_slack_ms: latency budget minus the chosen batch's p99, if a budget was given.
        gpu: whether the deployment runs on a GPU (Triton's instance kind).
        summary: one line on how the batch was chosen, written at the top of each file.
    """

    model_name: str
    task: str
    imgsz: int
    batch_size: int
    precision: str
    num_classes: int
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    input_name: str = "images"
    input_dtype: str = "float32"
    load: StreamLoad | None = None
    latency_slack_ms: float | None = None
    gpu: bool = True
    summary: str = ""

    def __post_init__(self) -> None:
        if identifier(self.model_name) != self.model_name:
            raise ConfigError(f"model_name={printable(self.model_name)} is not a safe model name (letters, digits, "
                              f"'_', '.', '-'; not starting with '.'): use model_name="
                              f"{identifier(self.model_name)} (visionbatch.infer.text.identifier)")


def push_timeout_us(spec: DeploymentSpec) -> int:
    """nvstreammux batched-push-timeout in microseconds.

    Examples:
        >>> spec = DeploymentSpec("m", "detect", 640, 4, "fp16", 80, (), load=StreamLoad(4, 25))
        >>> push_timeout_us(spec)  # 4 frames at 100 frames/s
        40000
    """
    if spec.load is not None:
        return min(MAX_INT32, math.ceil(1e6 * spec.batch_size / spec.load.images_per_s))
    if spec.latency_slack_ms is not None:
        return min(MAX_INT32, max(0, int(spec.latency_slack_ms * 1000)))
    return round(1e6 / DEFAULT_CAMERA_FPS)


def queue_delay_us(spec: DeploymentSpec) -> int:
    """Triton max_queue_delay_microseconds.

    Examples:
        >>> spec = DeploymentSpec("m", "detect", 640, 4, "fp16", 80, (), load=StreamLoad(4, 25))
        >>> queue_delay_us(spec)  # 3 more frames at 100 frames/s
        30000
    """
    if spec.load is not None:
        return round(1e6 * spec.load.fill_wait_ms(spec.batch_size) / 1000)
    if spec.latency_slack_ms is not None:
        return max(0, int(spec.latency_slack_ms * 1000))
    return 0


def engine_file_name(spec: DeploymentSpec) -> str:
    return f"{spec.model_name}_b{spec.batch_size}_{spec.precision}.engine"


def _header(spec: DeploymentSpec, what: str) -> list[str]:
    lines = [f"# {what}, written by visionbatch infer"]
    if spec.summary:
        lines.append(f"# {one_line(spec.summary)}")
    return lines


def check_file_name(name: str) -> str:
    """`name`, refused when a config line could not carry it (a newline would start a new key).

    Examples:
        >>> check_file_name("yolo11n.onnx")
        'yolo11n.onnx'
    """
    hazard = config_hazard(name)
    if hazard:
        path = Path(name)
        raise ConfigError(f"file name '{printable(name)}' has {hazard}, which a DeepStream or Triton config cannot "
                          f"carry: rename the file, e.g. to {identifier(path.stem)}{printable(path.suffix)}")
    return name


def nvinfer_config(spec: DeploymentSpec, onnx_file: str) -> str:
    """A DeepStream Gst-nvinfer config ([property] and [class-attrs-all])."""
    segment = spec.task == "segment"
    check_file_name(onnx_file)
    lines = _header(spec, "DeepStream Gst-nvinfer config")
    lines += [
        "# Ultralytics' raw outputs need a custom bounding-box parser library (e.g. DeepStream-Yolo's",
        "# nvdsinfer_custom_impl_Yolo); set parse-bbox-func-name and custom-lib-path to yours.",
        "[property]",
        "gpu-id=0",
        "net-scale-factor=0.0039215697906911373",  # 1/255, as Ultralytics' pre-processing
        "model-color-format=0",  # RGB
        f"onnx-file={onnx_file}",
        f"model-engine-file={engine_file_name(spec)}",
        "labelfile-path=labels.txt",
        f"batch-size={spec.batch_size}",
        f"network-mode={NETWORK_MODE[spec.precision]}",
        f"num-detected-classes={spec.num_classes}",
        f"infer-dims=3;{spec.imgsz};{spec.imgsz}",
        "interval=0",
        "gie-unique-id=1",
        "process-mode=1",
        f"network-type={3 if segment else 0}",
        f"cluster-mode={4 if segment else 2}",
        "maintain-aspect-ratio=1",  # letterbox, as Ultralytics
        "symmetric-padding=1",
    ]
    if segment:
        lines += ["output-instance-mask=1", "#parse-bbox-instance-mask-func-name=NvDsInferParseYoloSeg"]
    else:
        lines += ["#parse-bbox-func-name=NvDsInferParseYolo"]
    lines += [
        "#custom-lib-path=nvdsinfer_custom_impl_Yolo/libnvdsinfer_custom_impl_Yolo.so",
        "",
        "[class-attrs-all]",
        "nms-iou-threshold=0.7",  # Ultralytics' predict defaults
        "pre-cluster-threshold=0.25",
        "topk=300",
    ]
    return "\n".join(lines) + "\n"


def streammux_config(spec: DeploymentSpec) -> str:
    """The [streammux] group of a deepstream-app config, with the gst-launch equivalent."""
    timeout = push_timeout_us(spec)
    live = 1 if spec.load is not None else 0
    lines = _header(spec, "DeepStream nvstreammux settings (deepstream-app [streammux] group)")
    lines += [
        f"# gst-launch: nvstreammux batch-size={spec.batch_size} batched-push-timeout={timeout} "
        f"width=1920 height=1080 live-source={live}",
        "# width/height: the muxer's output resolution; set your cameras' resolution.",
        "[streammux]",
        "gpu-id=0",
        f"live-source={live}",
        f"batch-size={spec.batch_size}",
        f"batched-push-timeout={timeout}",
        "width=1920",
        "height=1080",
        "enable-padding=0",
        "nvbuf-memory-type=0",
    ]
    return "\n".join(lines) + "\n"


def triton_config(spec: DeploymentSpec, platform: str) -> str:
    """A Triton config.pbtxt (protobuf text format of inference.ModelConfig)."""
    filename = "model.plan" if platform == "tensorrt_plan" else "model.onnx"
    lines = _header(spec, "Triton Inference Server model configuration")
    lines += [
        f"name: {pbtxt_string(spec.model_name)}",
        f"platform: {pbtxt_string(platform)}",
        f"default_model_filename: {pbtxt_string(filename)}",
        f"max_batch_size: {spec.batch_size}",
        "input [",
        "  {",
        f"    name: {pbtxt_string(spec.input_name)}",
        f"    data_type: {TRITON_TYPES[spec.input_dtype]}",
        "    format: FORMAT_NCHW",
        f"    dims: [ 3, {spec.imgsz}, {spec.imgsz} ]",
        "  }",
        "]",
        "output [",
    ]
    for index, (name, dtype, dims) in enumerate(spec.outputs):
        lines += [
            "  {",
            f"    name: {pbtxt_string(name)}",
            f"    data_type: {TRITON_TYPES[dtype]}",
            f"    dims: [ {', '.join(str(d) for d in dims)} ]",
            "  }" + ("," if index < len(spec.outputs) - 1 else ""),
        ]
    lines += [
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {spec.batch_size} ]",
        f"  max_queue_delay_microseconds: {queue_delay_us(spec)}",
        "}",
        "instance_group [",
        "  {",
        "    count: 1",
        f"    kind: {'KIND_GPU' if spec.gpu else 'KIND_CPU'}",
        "  }",
        "]",
    ]
    return "\n".join(lines) + "\n"


def tensorrt_profile(spec: DeploymentSpec) -> dict[str, object]:
    """The optimisation profile for the image input: min batch 1, opt and max the chosen batch."""
    shape = [3, spec.imgsz, spec.imgsz]
    return {
        "input": spec.input_name,
        "min": [1, *shape],
        "opt": [spec.batch_size, *shape],
        "max": [spec.batch_size, *shape],
        "precision": spec.precision,
    }


def trtexec_command(spec: DeploymentSpec, onnx_file: str) -> str:
    """The trtexec line that builds the engine the nvinfer config names, every word shell-quoted.

    Examples:
        >>> spec = DeploymentSpec("yolo11n", "detect", 640, 8, "fp16", 80, ())
        >>> print(trtexec_command(spec, "yolo11n.onnx"))
        trtexec --onnx=yolo11n.onnx --saveEngine=yolo11n_b8_fp16.engine --minShapes=images:1x3x640x640 --optShapes=images:8x3x640x640 --maxShapes=images:8x3x640x640 --fp16
        >>> print(trtexec_command(spec, "m;touch PWNED;.onnx").split(" --saveEngine")[0])
        trtexec '--onnx=m;touch PWNED;.onnx'
    """
    profile = tensorrt_profile(spec)
    shapes = {k: "x".join(str(d) for d in profile[k]) for k in ("min", "opt", "max")}
    parts = [
        "trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file_name(spec)}",
        f"--minShapes={spec.input_name}:{shapes['min']}",
        f"--optShapes={spec.input_name}:{shapes['opt']}",
        f"--maxShapes={spec.input_name}:{shapes['max']}",
    ]
    if spec.precision == "fp16":
        parts.append("--fp16")
    return " ".join(shlex.quote(part) for part in parts)


def write_deployment(spec: DeploymentSpec, folder: Path, names: dict[int, str], onnx_path: Path | None = None,
                     engine_plan: bytes | None = None, onnx_external_data: Sequence[str] = ()) -> dict[str, Path]:
    """Write every config into `folder`; returns artefact name -> path.

    `onnx_path` is copied into Triton's model repository layout (`triton/<name>/1/model.onnx`),
    with its external data files (`onnx_external_data`, relative to its folder) beside the copy
    under the same relative names; `engine_plan` (a bare serialized engine) is written there as
    `model.plan` instead.

    Raises:
        ConfigError: the ONNX file's name cannot be written into a config, or an external data
            file would land outside the copy's folder or on model.onnx itself.
    """
    onnx_file = check_file_name(onnx_path.name if onnx_path else f"{spec.model_name}.onnx")
    external = [_external_location(location) for location in onnx_external_data] if engine_plan is None else []
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    deepstream = folder / "deepstream"
    deepstream.mkdir(exist_ok=True)
    files["deepstream_nvinfer"] = _write(deepstream / "config_infer_primary.txt", nvinfer_config(spec, onnx_file))
    files["deepstream_streammux"] = _write(deepstream / "streammux.txt", streammux_config(spec))
    labels = [one_line(names.get(i, str(i))) for i in range(spec.num_classes)]  # one class per line, always
    files["deepstream_labels"] = _write(deepstream / "labels.txt", "\n".join(labels) + "\n")

    platform = "tensorrt_plan" if engine_plan is not None else "onnxruntime_onnx"
    model_dir = folder / "triton" / spec.model_name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    files["triton_config"] = _write(model_dir / "config.pbtxt", triton_config(spec, platform))
    if engine_plan is not None:
        atomic_write_bytes(model_dir / "1" / "model.plan", engine_plan)
        files["triton_model"] = model_dir / "1" / "model.plan"
    elif onnx_path is not None:
        for location in external:  # the data first: a model.onnx in place is one Triton can load
            atomic_copy(onnx_path.parent / location, model_dir / "1" / location)
        atomic_copy(onnx_path, model_dir / "1" / "model.onnx")
        files["triton_model"] = model_dir / "1" / "model.onnx"

    tensorrt = folder / "tensorrt"
    tensorrt.mkdir(exist_ok=True)
    files["tensorrt_profile"] = _write(tensorrt / "profile.json", json.dumps(tensorrt_profile(spec), indent=2) + "\n")
    script = "\n".join(["#!/bin/sh", *(_header(spec, "TensorRT engine for the chosen batch")),
                        f"# run where {onnx_file} is; the engine is specific to the GPU and TensorRT version",
                        trtexec_command(spec, onnx_file)]) + "\n"
    files["trtexec"] = _write(tensorrt / "trtexec.sh", script)
    (tensorrt / "trtexec.sh").chmod(0o755)
    return files


def _external_location(location: str) -> str:
    """An external data location, refused unless it is a relative path that stays in its folder."""
    parts = re.split(r"[\\/]", location)
    if (not location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute()
            or PureWindowsPath(location).drive or ".." in parts
            or PurePosixPath(location) == PurePosixPath("model.onnx")):
        raise ConfigError(f"external data file '{printable(location)}' cannot be copied beside Triton's "
                          f"model.onnx: it must be a relative path inside the model's folder, not model.onnx")
    return location


def _write(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)
