"""Deployment configs: they parse (Triton pbtxt strictly, DeepStream INI) and carry the chosen numbers."""

from __future__ import annotations

import configparser
import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import triton_model_config
from google.protobuf import text_format

from visionbatch.errors import ConfigError
from visionbatch.infer.deploy import (
    DeploymentSpec,
    push_timeout_us,
    queue_delay_us,
    triton_config,
    trtexec_command,
    write_deployment,
)
from visionbatch.infer.plan import StreamLoad

DETECT = DeploymentSpec(
    model_name="yolo11n", task="detect", imgsz=640, batch_size=8, precision="fp16", num_classes=3,
    outputs=(("output0", "float32", (7, 8400)),), load=StreamLoad(8, 25), latency_slack_ms=12.5,
    summary="batch 8: 300.0 img/s",
)
SEGMENT = DeploymentSpec(
    model_name="yolo11n-seg", task="segment", imgsz=320, batch_size=4, precision="fp32", num_classes=80,
    outputs=(("output0", "float32", (116, 2100)), ("output1", "float32", (32, 80, 80))), latency_slack_ms=20.0,
    gpu=False,
)


def ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read_string(path.read_text())  # raises on a malformed file
    return parser


def test_timeouts_from_the_load_the_budget_or_a_default() -> None:
    # 8 streams x 25 fps = 200 frames/s: 8 frames arrive in 40 ms; the first waits 35 ms for 7 more
    assert push_timeout_us(DETECT) == 40_000 and queue_delay_us(DETECT) == 35_000
    # no load: the budget's slack
    assert push_timeout_us(SEGMENT) == 20_000 and queue_delay_us(SEGMENT) == 20_000
    bare = DeploymentSpec("m", "detect", 640, 2, "fp32", 80, ())
    assert push_timeout_us(bare) == 33_333 and queue_delay_us(bare) == 0


def test_write_deployment_detect(tmp_path: Path) -> None:
    onnx = tmp_path / "src" / "yolo11n.onnx"
    onnx.parent.mkdir()
    onnx.write_bytes(b"onnx bytes")
    files = write_deployment(DETECT, tmp_path / "run", {0: "person", 1: "car", 2: "bus"}, onnx_path=onnx)

    nvinfer = ini(files["deepstream_nvinfer"])
    prop = nvinfer["property"]
    assert prop["batch-size"] == "8" and prop["network-mode"] == "2"  # fp16
    assert prop["model-engine-file"] == "yolo11n_b8_fp16.engine" and prop["onnx-file"] == "yolo11n.onnx"
    assert prop["infer-dims"] == "3;640;640" and prop["num-detected-classes"] == "3"
    assert prop["network-type"] == "0" and prop["maintain-aspect-ratio"] == "1"
    assert nvinfer["class-attrs-all"]["nms-iou-threshold"] == "0.7"
    mux = ini(files["deepstream_streammux"])["streammux"]
    assert mux["batch-size"] == "8" and mux["batched-push-timeout"] == "40000" and mux["live-source"] == "1"
    assert files["deepstream_labels"].read_text() == "person\ncar\nbus\n"

    config = triton_model_config.parse(files["triton_config"].read_text())
    assert config.name == "yolo11n" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 35_000
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [3, 640, 640])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("output0", [7, 8400])]
    assert config.input[0].data_type == 11  # TYPE_FP32
    assert config.instance_group[0].kind == 1  # KIND_GPU
    assert files["triton_model"].read_bytes() == b"onnx bytes"
    assert files["triton_model"] == tmp_path / "run" / "triton" / "yolo11n" / "1" / "model.onnx"

    profile = json.loads(files["tensorrt_profile"].read_text())
    assert (profile["min"], profile["opt"], profile["max"]) == ([1, 3, 640, 640], [8, 3, 640, 640], [8, 3, 640, 640])
    script = files["trtexec"].read_text()
    assert script.startswith("#!/bin/sh\n") and trtexec_command(DETECT, "yolo11n.onnx") in script
    assert files["trtexec"].stat().st_mode & 0o111


def test_write_deployment_segment_engine(tmp_path: Path) -> None:
    files = write_deployment(SEGMENT, tmp_path, {}, engine_plan=b"PLAN")
    prop = ini(files["deepstream_nvinfer"])["property"]
    assert prop["network-type"] == "3" and prop["output-instance-mask"] == "1" and prop["network-mode"] == "0"
    assert prop["batch-size"] == "4"
    assert ini(files["deepstream_streammux"])["streammux"]["live-source"] == "0"
    assert files["deepstream_labels"].read_text().splitlines()[:2] == ["0", "1"]
    config = triton_model_config.parse(files["triton_config"].read_text())
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model.plan"
    assert [(o.name, list(o.dims)) for o in config.output] == [("output0", [116, 2100]), ("output1", [32, 80, 80])]
    assert config.instance_group[0].kind == 2  # KIND_CPU
    assert files["triton_model"].read_bytes() == b"PLAN"
    assert "--fp16" not in files["trtexec"].read_text()


def test_the_strict_parser_catches_mistakes() -> None:
    with pytest.raises(text_format.ParseError):
        triton_model_config.parse('name: "m"\nmax_batch: 8\n')  # no such field
    with pytest.raises(text_format.ParseError):
        triton_model_config.parse('input [ { name: "images" data_type: TYPE_FLOAT32 } ]')  # no such enum value


def test_tensor_names_cannot_end_a_triton_string() -> None:
    hostile = 'images"\nmax_batch_size: 999\n#'
    spec = dataclasses.replace(DETECT, input_name=hostile, outputs=(("out\\\"0\n", "float32", (7, 8400)),))
    config = triton_model_config.parse(triton_config(spec, "onnxruntime_onnx"))
    assert config.input[0].name == hostile and config.output[0].name == 'out\\"0\n'
    assert config.max_batch_size == 8


def test_model_name_must_be_an_identifier() -> None:
    with pytest.raises(ConfigError, match=r"model_name=q\"x\\nmax is not a safe model name .*: use model_name=q_x_max"):
        dataclasses.replace(DETECT, model_name='q"x\nmax')


def test_trtexec_words_are_shell_quoted() -> None:
    words = shlex.split(trtexec_command(DETECT, "m;touch PWNED;.onnx"))
    assert words[:3] == ["trtexec", "--onnx=m;touch PWNED;.onnx", "--saveEngine=yolo11n_b8_fp16.engine"]


def test_a_file_name_with_a_newline_is_refused_before_writing(tmp_path: Path) -> None:
    onnx = tmp_path / "m\ncustom-lib-path=libevil.so\n#.onnx"
    onnx.write_bytes(b"onnx bytes")
    with pytest.raises(ConfigError, match=r"has a control character \(\\n\), which a DeepStream or Triton config"):
        write_deployment(DETECT, tmp_path / "run", {}, onnx_path=onnx)
    assert not (tmp_path / "run").exists()


def test_labels_stay_one_per_line(tmp_path: Path) -> None:
    files = write_deployment(DETECT, tmp_path, {0: "a\nb", 1: "c\u2028d", 2: "e\x00"})
    assert files["deepstream_labels"].read_text() == "a b\nc d\ne \n"


def test_external_data_is_copied_beside_the_triton_model(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "weights").mkdir(parents=True)
    (source / "yolo11n.onnx").write_bytes(b"onnx bytes")
    (source / "w.bin").write_bytes(b"w")
    (source / "weights" / "x.bin").write_bytes(b"x")
    files = write_deployment(DETECT, tmp_path / "run", {}, onnx_path=source / "yolo11n.onnx",
                             onnx_external_data=["w.bin", "weights/x.bin"])
    version = files["triton_model"].parent
    assert sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()) == [
        "model.onnx", "w.bin", "weights/x.bin"]
    assert (version / "weights" / "x.bin").read_bytes() == b"x"


@pytest.mark.parametrize("location", ["../w.bin", "/etc/passwd", "a/../../w.bin", "./model.onnx", ""])
def test_external_data_that_would_land_elsewhere_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "yolo11n.onnx").write_bytes(b"onnx bytes")
    with pytest.raises(ConfigError, match="cannot be copied beside Triton's model.onnx"):
        write_deployment(DETECT, tmp_path / "run", {}, onnx_path=tmp_path / "yolo11n.onnx",
                         onnx_external_data=[location])
    assert not (tmp_path / "run").exists()
