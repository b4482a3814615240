"""Deployment configs: they parse (Triton pbtxt strictly, DeepStream INI) and carry the chosen numbers."""

from __future__ import annotations

import configparser
import dataclasses
import json
import shlex
import subprocess
from pathlib import Path

import deepstream_keys
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
    assert prop["model-engine-file"] == "yolo11n.onnx_b8_gpu0_fp16.engine" and prop["onnx-file"] == "yolo11n.onnx"
    assert prop["infer-dims"] == "3;640;640" and prop["num-detected-classes"] == "3"
    assert prop["network-type"] == "100" and prop["output-tensor-meta"] == "1" and prop["maintain-aspect-ratio"] == "1"
    assert files["deepstream_onnx"].read_bytes() == b"onnx bytes"
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
    # the command's words after trtexec's own path, which the script finds (TRTEXEC=, PATH, JetPack's folder)
    assert script.startswith("#!/bin/sh\n") and script.rstrip().endswith(
        '"$TRTEXEC"' + trtexec_command(DETECT, "yolo11n.onnx").removeprefix("trtexec"))
    assert files["trtexec"].stat().st_mode & 0o111


def test_write_deployment_segment_engine(tmp_path: Path) -> None:
    files = write_deployment(SEGMENT, tmp_path, {}, engine_plan=b"PLAN")
    prop = ini(files["deepstream_nvinfer"])["property"]
    assert prop["network-type"] == "100" and prop["output-tensor-meta"] == "1" and prop["network-mode"] == "0"
    assert prop["batch-size"] == "4"
    # the measured engine is where nvinfer looks; no ONNX was given, and the config says so
    assert files["deepstream_engine"].read_bytes() == b"PLAN" and "deepstream_onnx" not in files
    assert files["deepstream_engine"].name == prop["model-engine-file"] == "yolo11n-seg.onnx_b4_gpu0_fp32.engine"
    assert "# yolo11n-seg.onnx was not written by this run" in files["deepstream_nvinfer"].read_text()
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
    assert words[:3] == ["trtexec", "--onnx=m;touch PWNED;.onnx", "--saveEngine=yolo11n.onnx_b8_gpu0_fp16.engine"]


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


# --- every written config against the real schemas, and paths by nvinfer's rule (issue 13) ---

def _written(tmp_path: Path, spec: DeploymentSpec, **kwargs) -> dict[str, Path]:
    onnx = tmp_path / "src" / "exported model.onnx"  # any source name: deepstream/ gets the model's safe name
    onnx.parent.mkdir(parents=True, exist_ok=True)
    onnx.write_bytes(b"onnx bytes")
    (onnx.parent / "w.bin").write_bytes(b"w")
    return write_deployment(spec, tmp_path / "run", {0: "person"}, onnx_path=onnx, onnx_external_data=["w.bin"],
                            **kwargs)


@pytest.mark.parametrize("spec", [
    DETECT, SEGMENT, dataclasses.replace(DETECT, batch_size=1, load=None, latency_slack_ms=None, instances=2),
    dataclasses.replace(SEGMENT, instances=2, instance_threads=3, instances_note="measured: 2 x 3 threads"),
    dataclasses.replace(DETECT, precision="int8", int8_calibration_cache="int8_calibration.cache"),
])
@pytest.mark.parametrize("engine", [None, b"PLAN"])
def test_every_config_parses_with_the_real_schemas(tmp_path: Path, spec: DeploymentSpec, engine) -> None:
    files = _written(tmp_path, spec, engine_plan=engine)
    nvinfer = deepstream_keys.parse(files["deepstream_nvinfer"].read_text(), deepstream_keys.nvinfer_table)
    assert set(nvinfer) == {"property", "class-attrs-all"}
    assert nvinfer["property"]["batch-size"] == spec.batch_size
    assert nvinfer["property"]["infer-dims"] == [3, spec.imgsz, spec.imgsz]
    mux = deepstream_keys.parse(files["deepstream_streammux"].read_text(), deepstream_keys.streammux_table)
    assert mux["streammux"]["batch-size"] == spec.batch_size
    assert 0 < mux["streammux"]["batched-push-timeout"] <= deepstream_keys.INT32_MAX
    config = triton_model_config.parse(files["triton_config"].read_text())
    assert config.max_batch_size == spec.batch_size and config.instance_group[0].count == spec.instances


def test_nvinfer_paths_resolve_from_the_config_folder(tmp_path: Path) -> None:
    files = _written(tmp_path, DETECT)
    config = files["deepstream_nvinfer"]
    paths = deepstream_keys.paths(config, deepstream_keys.nvinfer_table)
    deepstream = tmp_path / "run" / "deepstream"
    assert paths == {"onnx-file": deepstream / "yolo11n.onnx", "labelfile-path": deepstream / "labels.txt",
                     "model-engine-file": deepstream / "yolo11n.onnx_b8_gpu0_fp16.engine"}
    assert paths["onnx-file"].read_bytes() == b"onnx bytes" and (deepstream / "w.bin").read_bytes() == b"w"
    assert paths["labelfile-path"] == files["deepstream_labels"]
    # the engine is not there yet: trtexec.sh or nvinfer's own first build writes it (next test)
    assert not paths["model-engine-file"].exists()
    with_engine = _written(tmp_path / "e", DETECT, engine_plan=b"PLAN")
    engine = deepstream_keys.paths(with_engine["deepstream_nvinfer"], deepstream_keys.nvinfer_table)
    assert engine["model-engine-file"].read_bytes() == b"PLAN"


def test_trtexec_writes_the_engine_where_nvinfer_looks(tmp_path: Path) -> None:
    files = _written(tmp_path, DETECT)
    fake = tmp_path / "bin" / "trtexec"  # a stand-in that records where it ran and what it was told
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\npwd > "$RECORD"\nfor word in "$@"; do echo "$word" >> "$RECORD"; done\n')
    fake.chmod(0o755)
    record = tmp_path / "record.txt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "RECORD": str(record)}
    subprocess.run(["sh", str(files["trtexec"])], cwd=elsewhere, env=env, check=True)
    cwd, *words = record.read_text().splitlines()
    flags = dict(word.removeprefix("--").split("=", 1) for word in words if "=" in word)
    paths = deepstream_keys.paths(files["deepstream_nvinfer"], deepstream_keys.nvinfer_table)
    assert Path(cwd, flags["onnx"]).resolve() == paths["onnx-file"].resolve()
    assert Path(cwd, flags["saveEngine"]).resolve() == paths["model-engine-file"].resolve()


def test_triton_batches_only_a_batch_above_1_and_takes_1_or_2_instances() -> None:
    single = triton_model_config.parse(triton_config(dataclasses.replace(DETECT, batch_size=1), "onnxruntime_onnx"))
    assert single.max_batch_size == 1 and not single.HasField("dynamic_batching")
    two = triton_model_config.parse(triton_config(dataclasses.replace(DETECT, instances=2), "onnxruntime_onnx"))
    assert two.HasField("dynamic_batching") and two.instance_group[0].count == 2
    with pytest.raises(ConfigError, match=r"instances=3 is not a Triton instance count .*: expected 1 or 2"):
        dataclasses.replace(DETECT, instances=3)


def test_a_cpu_config_gives_each_instance_the_threads_it_was_measured_with() -> None:
    note = "2 instances, measurably faster than 1: ...; measured with onnxruntime (CPUExecutionProvider) on cpu"
    spec = dataclasses.replace(SEGMENT, instances=2, instance_threads=1, instances_note=note + "\nnot a key: 1")
    text = triton_config(spec, "onnxruntime_onnx")
    config = triton_model_config.parse(text)
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == 2  # KIND_CPU
    assert dict(config.parameters) == {"intra_op_thread_count": config.parameters["intra_op_thread_count"]}
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    assert f"# instance_group: {note} not a key: 1\ninstance_group [" in text  # a note is one comment line
    # ONNX Runtime's thread count is for ONNX Runtime on a CPU: not a GPU's instances, not a TensorRT plan
    for other, platform in ((dataclasses.replace(spec, gpu=True), "onnxruntime_onnx"), (spec, "tensorrt_plan"),
                            (dataclasses.replace(spec, instance_threads=None), "onnxruntime_onnx")):
        assert len(triton_model_config.parse(triton_config(other, platform)).parameters) == 0
    with pytest.raises(ConfigError, match="instance_threads=0: an instance needs at least one thread"):
        dataclasses.replace(spec, instance_threads=0)


def test_the_config_names_the_output_layout_and_no_misfitting_parser(tmp_path: Path) -> None:
    text = _written(tmp_path, SEGMENT)["deepstream_nvinfer"].read_text()
    assert ("#   output0 [116, 2100] per image: rows 0-3 box centre x, centre y, width, height in network pixels "
            "(letterboxed), rows 4-83 the 80 class scores (sigmoid, no objectness), rows 84-115 mask coefficients, "
            "for 2100 anchors, before NMS") in text
    assert "#   output1 [32, 80, 80] per image: 32 mask prototypes of 80x80" in text
    assert "NvDsInferParseYolo expects the layout of DeepStream-Yolo's own exporter (not this ONNX)" in text
    keys = [line.split("=")[0] for line in text.splitlines() if "=" in line and not line.startswith("#")]
    assert "parse-bbox-func-name" not in keys and "custom-lib-path" not in keys


@pytest.mark.parametrize(("text", "message"), [
    ("[property]\nbatch-sise=8\n", "batch-sise is not a documented key"),
    ("[property]\nbatch-size=8 # eight\n", "batch-size=8 # eight: '8 # eight' is not an integer"),
    ("[property]\nmaintain-aspect-ratio=yes\n", "is not a GKeyFile boolean"),
    ("[property]\nnetwork-type=4\n", "4 is not one of"),
    ("batch-size=8\n", "a key before any group"),
    ("[property]\nbatch-size=8\nbatch-size=4\n", "batch-size given twice"),
    ("[streammux]\n", r"\[streammux\] is not a Gst-nvinfer group"),
])
def test_the_key_tables_catch_mistakes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deepstream_keys.parse(text, deepstream_keys.nvinfer_table)


def test_trtexec_script_finds_jetpacks_trtexec_or_says_where_it_looked(tmp_path: Path) -> None:
    """JetPack installs trtexec at /usr/src/tensorrt/bin, off PATH: the script looks there after PATH, takes
    TRTEXEC= first (an absolute path, one relative to where it is run from, or a name on PATH), and without
    any says where it looked, in one line (exit 2), instead of 'trtexec: command not found'."""
    import stat

    files = write_deployment(DETECT, tmp_path / "run", {0: "person", 1: "car", 2: "bus"}, onnx_path=None)
    script = files["trtexec"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "my-trtexec"
    fake.write_text('#!/bin/sh\necho "$@" > "$HOME/args"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no trtexec on this machine's PATH

    def run(env: dict, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        (tmp_path / "args").unlink(missing_ok=True)
        return subprocess.run(["sh", str(script)], env={**bare, **env}, cwd=cwd, capture_output=True, text=True,
                              check=False)

    for env, where in [({}, "on PATH or at /usr/src/tensorrt/bin/trtexec"),
                       ({"TRTEXEC": "nope"}, "named TRTEXEC=nope on PATH"),
                       ({"TRTEXEC": "/no/such/trtexec"}, "at TRTEXEC=/no/such/trtexec")]:
        done = run(env)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (env, done.stderr)
        assert done.stderr.startswith(f"trtexec.sh: no trtexec {where}: install TensorRT"), done.stderr
    for env in ({"TRTEXEC": str(fake)}, {"TRTEXEC": "bin/my-trtexec"},  # relative to where it runs from
                {"TRTEXEC": "my-trtexec", "PATH": f"{bin_dir}:/usr/bin:/bin"}):
        done = run(env)
        assert done.returncode == 0, (env, done.stderr)
        assert (tmp_path / "args").read_text().split()[:2] == [
            "--onnx=yolo11n.onnx", "--saveEngine=yolo11n.onnx_b8_gpu0_fp16.engine"]
