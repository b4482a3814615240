"""Deployment settings that carry the chosen batch into production: DeepStream, Triton, TensorRT.

Text generators are pure (`DeploymentSpec` in, text out); `write_deployment` puts the files in the
run folder. The numbers, from the chosen batch b and the load of N streams x F fps:

- nvstreammux `batch-size` = b; `batched-push-timeout` = b / (N x F) in microseconds: the time b
  frames take to arrive, one arrival more than the expected fill wait (b - 1) / (N x F), so a
  batch is not pushed half full by jitter. With b = N that is NVIDIA's advice, 1e6 / fps (DeepStream
  FAQ, "How to set parameters reasonably to improve the efficiency of nvstreammux in live mode").
  Without a load: the latency budget's slack (budget - p99), else 1e6 / 30 for 30 fps cameras.
- nvinfer `batch-size` = b, `network-mode` 0 (fp32) or 2 (fp16) (keys as in
  gstnvinfer_property_parser.h). nvinfer resolves a relative `onnx-file` and `model-engine-file`
  against the config file's own folder, so `deepstream/` is self-contained: the ONNX is copied
  there as `<model>.onnx`, and the engine is named as nvinfer names one it builds itself,
  `<model>.onnx_b<b>_gpu0_<precision>.engine` beside the ONNX. `tensorrt/trtexec.sh` writes that
  same file, and a TensorRT engine this run measured is placed there too; when none is there,
  nvinfer builds it on first start and reuses it after.
- Bounding boxes: Ultralytics' raw `output0` is [4 + classes (+ 32 mask coefficients), anchors]
  per image, box centres and sizes in network pixels, class scores without objectness, before
  NMS. No parser shipped with DeepStream reads it, and DeepStream-Yolo's `NvDsInferParseYolo`
  expects its own exporter's layout, so the config sets `network-type=100` with
  `output-tensor-meta=1`: nvinfer loads and runs the model and attaches the raw tensors to each
  frame, and the application decodes them (or the user sets a parser written for this layout).
- Triton `max_batch_size` = `preferred_batch_size` = b; `max_queue_delay_microseconds` = the fill
  wait (b - 1) / (N x F), else the budget's slack, else 0; `dynamic_batching` only when b > 1;
  `instance_group` count from the spec: 1, or 2 where `infer.instances` measured two faster, with
  a comment saying what was measured; on a CPU, ONNX Runtime's `intra_op_thread_count` parameter
  per instance, the threads it was measured with (field names from Triton's model_config.proto:
  ModelConfig, ModelDynamicBatching, ModelInstanceGroup, ModelParameter; the parameter from
  Triton's onnxruntime_backend).
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
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs trtexec, which is not on PATH
INT8_CACHE_NAME = "int8_calibration.cache"  # beside the ONNX in deepstream/, where nvinfer and trtexec.sh resolve it
INT8_CACHE_NOTE = ("the INT8 configs name deepstream/{cache} (nvinfer int8-calib-file, trtexec --calib), which this "
                   "run did not make: a TensorRT calibration cache needs TensorRT on the target (e.g. Ultralytics' "
                   "yolo export format=engine int8=True data=... writes one); {int8_onnx} is for ONNX Runtime "
                   "on a CPU (unsigned activations), not a model TensorRT builds")
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
        precision: 'fp32', 'fp16', or 'int8' (with `int8_calibration_cache`).
        num_classes: classes the head predicts.
        outputs: (name, dtype, per-image dims) of each output, e.g. ('output0', 'float32', (84, 2100)).
        input_name: the image input tensor.
        input_dtype: 'float32' or 'float16'.
        load: the camera load, if given.
        latency_slack_ms: latency budget minus the chosen batch's p99, if a budget was given.
        gpu: whether the deployment runs on a GPU (Triton's instance kind).
        summary: one line on how the batch was chosen, written at the top of each file.
        instances: Triton `instance_group` count, 1 or 2. Two instances let one batch's copies
            overlap another's compute, but each holds its own memory and they share the device;
            `infer.instances` measures whether that pays (1, the configuration the sweep
            measured, otherwise).
        instances_note: one line on how the count was found, written above `instance_group`.
        instance_threads: ONNX Runtime intra-op threads per instance on a CPU (Triton's
            `intra_op_thread_count`), the count the instances were measured with; None: not written.
        queue_delay_ms: the queue delay the choice simulated under the load (`infer.queueing`);
            when given it is both nvstreammux's batched-push-timeout and Triton's max queue delay.
        int8_calibration_cache: for precision 'int8', the TensorRT calibration cache's file name in
            `deepstream/` (nvinfer's `int8-calib-file`, trtexec's `--calib`); None otherwise. Only
            TensorRT makes one (visionbatch does not fake it): see `INT8_CACHE_NOTE`.
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
    instances: int = 1
    int8_calibration_cache: str | None = None
    queue_delay_ms: float | None = None
    instances_note: str = ""
    instance_threads: int | None = None

    def __post_init__(self) -> None:
        if self.instance_threads is not None and self.instance_threads < 1:
            raise ConfigError(f"instance_threads={self.instance_threads}: an instance needs at least one thread, "
                              f"e.g. instance_threads=1")
        if self.instances not in (1, 2):
            raise ConfigError(f"instances={self.instances} is not a Triton instance count visionbatch writes: "
                              f"expected 1 or 2, e.g. instances=1")
        if (self.precision == "int8") != (self.int8_calibration_cache is not None):
            raise ConfigError(f"precision={self.precision} with int8_calibration_cache="
                              f"{self.int8_calibration_cache}: TensorRT's INT8 build reads its scales from a "
                              f"calibration cache, so they go together, e.g. precision='int8', "
                              f"int8_calibration_cache='{INT8_CACHE_NAME}'")
        if self.int8_calibration_cache is not None:
            check_file_name(self.int8_calibration_cache)
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
    if spec.queue_delay_ms is not None:  # the simulated policy's wait
        return min(MAX_INT32, max(0, round(spec.queue_delay_ms * 1000)))
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
    if spec.queue_delay_ms is not None:  # the simulated policy's wait
        return min(MAX_INT32, max(0, round(spec.queue_delay_ms * 1000)))
    if spec.load is not None:
        return round(1e6 * spec.load.fill_wait_ms(spec.batch_size) / 1000)
    if spec.latency_slack_ms is not None:
        return max(0, int(spec.latency_slack_ms * 1000))
    return 0


def onnx_file_name(spec: DeploymentSpec) -> str:
    """The ONNX copy in `deepstream/`: the model's safe name, whatever the source file was called."""
    return f"{spec.model_name}.onnx"


def engine_file_name(spec: DeploymentSpec) -> str:
    """The engine nvinfer looks for: the name nvinfer gives an engine it builds from `onnx-file`.

    nvinfer serializes a built engine beside the model as `<model file>_b<batch>_gpu<id>_<mode>.engine`
    (its log: "serialize cuda engine to file: .../yolo11n.onnx_b8_gpu0_fp16.engine"), so trtexec.sh
    and nvinfer's own build land on the same file, and either one is reused on the next start.

    Examples:
        >>> engine_file_name(DeploymentSpec("yolo11n", "detect", 640, 8, "fp16", 80, ()))
        'yolo11n.onnx_b8_gpu0_fp16.engine'
    """
    return f"{onnx_file_name(spec)}_b{spec.batch_size}_gpu0_{spec.precision}.engine"


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


def output_layout(spec: DeploymentSpec) -> list[str]:
    """Comment lines that say what each output holds, so a parser or a probe can decode it.

    Examples:
        >>> spec = DeploymentSpec("m", "detect", 640, 4, "fp16", 80, (("output0", "float32", (84, 8400)),))
        >>> output_layout(spec)[0]
        '#   output0 [84, 8400] per image: rows 0-3 box centre x, centre y, width, height in network pixels (letterboxed), rows 4-83 the 80 class scores (sigmoid, no objectness), for 8400 anchors, before NMS'
    """
    lines = []
    for index, (name, _dtype, dims) in enumerate(spec.outputs):
        shown = f"#   {one_line(printable(name))} [{', '.join(str(d) for d in dims)}] per image"
        last = 3 + spec.num_classes
        if index == 0 and len(dims) == 2 and dims[0] in (last + 1, last + 33):  # boxes + scores (+ 32 masks)
            masks = (f", rows {last + 1}-{dims[0] - 1} mask coefficients"
                     if spec.task == "segment" and dims[0] > last + 1 else "")
            lines.append(f"{shown}: rows 0-3 box centre x, centre y, width, height in network pixels (letterboxed), "
                         f"rows 4-{last} the {spec.num_classes} class scores (sigmoid, no objectness){masks}, "
                         f"for {dims[1]} anchors, before NMS")
        elif spec.task == "segment" and len(dims) == 3:
            lines.append(f"{shown}: {dims[0]} mask prototypes of {dims[1]}x{dims[2]}")
        else:
            lines.append(shown)
    return lines


def nvinfer_config(spec: DeploymentSpec, onnx_missing: bool = False) -> str:
    """A DeepStream Gst-nvinfer config ([property] and [class-attrs-all]) for `deepstream/`.

    It loads as written: the model runs and its raw outputs are attached as tensor metadata
    (`network-type=100`, `output-tensor-meta=1`), because no parser that ships with DeepStream
    reads Ultralytics' raw output (see the module docstring).
    """
    lines = _header(spec, "DeepStream Gst-nvinfer config")
    lines += [
        "# Paths are relative to this file's folder, as nvinfer resolves them. model-engine-file is the name",
        "# nvinfer gives an engine it builds from onnx-file: ../tensorrt/trtexec.sh builds it here, or nvinfer",
        "# builds it on first start (for this GPU and TensorRT version) and reuses it after.",
    ]
    if onnx_missing:
        lines.append(f"# {onnx_file_name(spec)} was not written by this run: put the model's ONNX export here under "
                     f"that name")
    lines += [
        "# Outputs (Ultralytics' raw head):",
        *output_layout(spec),
        "# No bounding-box parser that ships with DeepStream reads this layout, and DeepStream-Yolo's",
        "# NvDsInferParseYolo expects the layout of DeepStream-Yolo's own exporter (not this ONNX): it would",
        "# misparse it. So nvinfer runs the model and attaches the raw tensors to each frame",
        "# (network-type=100, output-tensor-meta=1, NvDsInferTensorMeta); decode them in a pad probe",
        "# (transpose, score, NMS, undo the letterbox). For boxes in NvDsObjectMeta instead, build a",
        "# custom parser for this layout and set network-type=0, cluster-mode=2 (NMS), parse-bbox-func-name",
        "# and custom-lib-path; [class-attrs-all] below holds Ultralytics' predict thresholds for it.",
        "[property]",
        "gpu-id=0",
        "net-scale-factor=0.0039215697906911373",  # 1/255, as Ultralytics' pre-processing
        "model-color-format=0",  # RGB
        f"onnx-file={onnx_file_name(spec)}",
        f"model-engine-file={engine_file_name(spec)}",
        "labelfile-path=labels.txt",
        f"batch-size={spec.batch_size}",
        f"network-mode={NETWORK_MODE[spec.precision]}",
        *([f"int8-calib-file={spec.int8_calibration_cache}"] if spec.int8_calibration_cache else []),
        f"num-detected-classes={spec.num_classes}",
        f"infer-dims=3;{spec.imgsz};{spec.imgsz}",
        "interval=0",
        "gie-unique-id=1",
        "process-mode=1",
        "network-type=100",
        "output-tensor-meta=1",
        "maintain-aspect-ratio=1",  # letterbox, as Ultralytics
        "symmetric-padding=1",
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
    lines.append("]")
    if spec.batch_size > 1:  # with max_batch_size 1 there is nothing to batch
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {spec.batch_size} ]",
            f"  max_queue_delay_microseconds: {queue_delay_us(spec)}",
            "}",
        ]
    if spec.instances_note:
        lines.append(f"# instance_group: {one_line(spec.instances_note)}")
    lines += [
        "instance_group [",
        "  {",
        f"    count: {spec.instances}",
        f"    kind: {'KIND_GPU' if spec.gpu else 'KIND_CPU'}",
        "  }",
        "]",
    ]
    if spec.instance_threads is not None and not spec.gpu and platform == "onnxruntime_onnx":
        lines += [  # each instance's ONNX Runtime session gets the threads it was measured with
            "parameters {",
            '  key: "intra_op_thread_count"',
            f'  value: {{ string_value: "{spec.instance_threads}" }}',
            "}",
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


def trtexec_command(spec: DeploymentSpec, onnx_file: str, program: str = "trtexec") -> str:
    """The trtexec line that builds the engine the nvinfer config names, every word shell-quoted but `program`,
    which is one shell word as given (trtexec.sh passes "$TRTEXEC").

    Examples:
        >>> spec = DeploymentSpec("yolo11n", "detect", 640, 8, "fp16", 80, ())
        >>> print(trtexec_command(spec, "yolo11n.onnx"))
        trtexec --onnx=yolo11n.onnx --saveEngine=yolo11n.onnx_b8_gpu0_fp16.engine --minShapes=images:1x3x640x640 --optShapes=images:8x3x640x640 --maxShapes=images:8x3x640x640 --fp16
        >>> print(trtexec_command(spec, "m;touch PWNED;.onnx").split(" --saveEngine")[0])
        trtexec '--onnx=m;touch PWNED;.onnx'
    """
    profile = tensorrt_profile(spec)
    shapes = {k: "x".join(str(d) for d in profile[k]) for k in ("min", "opt", "max")}
    parts = [
        f"--onnx={onnx_file}", f"--saveEngine={engine_file_name(spec)}",
        f"--minShapes={spec.input_name}:{shapes['min']}",
        f"--optShapes={spec.input_name}:{shapes['opt']}",
        f"--maxShapes={spec.input_name}:{shapes['max']}",
    ]
    if spec.precision == "fp16":
        parts.append("--fp16")
    if spec.int8_calibration_cache is not None:
        parts += ["--int8", f"--calib={spec.int8_calibration_cache}"]
    return " ".join([program, *(shlex.quote(part) for part in parts)])


def write_deployment(spec: DeploymentSpec, folder: Path, names: dict[int, str], onnx_path: Path | None = None,
                     engine_plan: bytes | None = None, onnx_external_data: Sequence[str] = ()) -> dict[str, Path]:
    """Write every config into `folder`; returns artefact name -> path.

    `onnx_path` is copied into `deepstream/<name>.onnx`, where the nvinfer config and trtexec.sh
    name it, and into Triton's model repository layout (`triton/<name>/1/model.onnx`), with its
    external data files (`onnx_external_data`, relative to its folder) beside each copy under the
    same relative names. `engine_plan` (a bare serialized engine) is written to Triton as
    `model.plan` instead, and to `deepstream/` under the engine name nvinfer looks for.

    Raises:
        ConfigError: the ONNX file's name cannot be written into a config, or an external data
            file would land outside the copy's folder or on model.onnx itself.
    """
    if onnx_path is not None:
        check_file_name(onnx_path.name)
    onnx_file = onnx_file_name(spec)
    external = [_external_location(location, onnx_file) for location in onnx_external_data] if onnx_path else []
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    deepstream = folder / "deepstream"
    deepstream.mkdir(exist_ok=True)
    if onnx_path is not None:
        for location in external:  # the data first: a model in place is one that loads
            atomic_copy(onnx_path.parent / location, deepstream / location)
        files["deepstream_onnx"] = atomic_copy(onnx_path, deepstream / onnx_file)
    if engine_plan is not None:
        files["deepstream_engine"] = atomic_write_bytes(deepstream / engine_file_name(spec), engine_plan)
    files["deepstream_nvinfer"] = _write(deepstream / "config_infer_primary.txt",
                                         nvinfer_config(spec, onnx_missing=onnx_path is None))
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
        for location in external:
            atomic_copy(onnx_path.parent / location, model_dir / "1" / location)
        atomic_copy(onnx_path, model_dir / "1" / "model.onnx")
        files["triton_model"] = model_dir / "1" / "model.onnx"

    tensorrt = folder / "tensorrt"
    tensorrt.mkdir(exist_ok=True)
    files["tensorrt_profile"] = _write(tensorrt / "profile.json", json.dumps(tensorrt_profile(spec), indent=2) + "\n")
    script = "\n".join([
        "#!/bin/sh", *(_header(spec, "TensorRT engine for the chosen batch")),
        f"# Builds ../deepstream/{engine_file_name(spec)} from ../deepstream/{onnx_file}: the engine",
        "# ../deepstream/config_infer_primary.txt names (model-engine-file). An engine is specific to the GPU and",
        "# TensorRT version: run this on the device that runs it. For Triton's TensorRT backend, copy the engine",
        f"# to ../triton/{spec.model_name}/1/model.plan, and in its config.pbtxt set platform: \"tensorrt_plan\"",
        "# and default_model_filename: \"model.plan\".",
        "set -e",
        f"# trtexec from TRTEXEC= (a path, or a name on PATH), else PATH, else {JETPACK_TRTEXEC} (where JetPack",
        "# installs it, off PATH); found before the cd below, so a relative TRTEXEC= means from where you are",
        'case "${TRTEXEC:-}" in',
        f'  "") TRTEXEC="$(command -v trtexec || echo {JETPACK_TRTEXEC})"; WHERE="on PATH or at {JETPACK_TRTEXEC}" ;;',
        '  /*) WHERE="at TRTEXEC=$TRTEXEC" ;;',
        '  */*) TRTEXEC="$PWD/$TRTEXEC"; WHERE="at TRTEXEC=$TRTEXEC" ;;',
        '  *) WHERE="named TRTEXEC=$TRTEXEC on PATH"; TRTEXEC="$(command -v "$TRTEXEC" || echo "$TRTEXEC")" ;;',
        'esac',
        '[ -x "$TRTEXEC" ] || { echo "trtexec.sh: no trtexec $WHERE: install TensorRT (JetPack has it), or run '
        'TRTEXEC=/path/to/trtexec sh $0" >&2; exit 2; }',
        'cd "$(dirname "$0")/../deepstream"',
        *([f'[ -f {shlex.quote(spec.int8_calibration_cache)} ] || {{ echo "trtexec.sh: '
           f'deepstream/{spec.int8_calibration_cache} is missing: without it trtexec --int8 calibrates on random '
           f'data; make it with TensorRT on this device first" >&2; exit 2; }}']
          if spec.int8_calibration_cache else []),
        trtexec_command(spec, onnx_file, program='"$TRTEXEC"')]) + "\n"
    files["trtexec"] = _write(tensorrt / "trtexec.sh", script)
    (tensorrt / "trtexec.sh").chmod(0o755)
    return files


def _external_location(location: str, onnx_file: str) -> str:
    """An external data location, refused unless it is a relative path that stays in its folder."""
    parts = re.split(r"[\\/]", location)
    if (not location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute()
            or PureWindowsPath(location).drive or ".." in parts
            or PurePosixPath(location) in {PurePosixPath("model.onnx"), PurePosixPath(onnx_file)}):
        raise ConfigError(f"external data file '{printable(location)}' cannot be copied beside Triton's "
                          f"model.onnx and deepstream/{onnx_file}: it must be a relative path inside the model's "
                          f"folder, not model.onnx or {onnx_file}")
    return location


def _write(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)
