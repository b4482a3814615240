"""`visionbatch infer` on hostile model files and arguments: nothing escapes into a config, a shell or
a folder it should not reach; a file ONNX Runtime refuses is one line and exit code 2, with no run
folder left behind.

The models are one Conv and a Reshape made with onnx's helper API (output0: batch x 6 x 4096, so
two classes by Ultralytics' layout): each run takes about a second on a CPU.
"""

from __future__ import annotations

import configparser
import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import triton_model_config

from visionbatch.cli import main
from visionbatch.infer import tune

FAST = ["batch_sizes=1", "runs=2", "warmup=0", "device=cpu"]


def tiny_model(path: Path, *, names: str | None = None, task: str | None = None, domain: str | None = None,
               external: str | None = None, input_name: str = "images", fixed_batch: int | None = None) -> Path:
    """A Conv (3 -> 6 channels, 1x1) and a Reshape to batch x 6 x 4096 at 64 px.

    Args:
        names, task: Ultralytics metadata to store.
        domain: make the Conv an operator 'Evil' of this custom domain instead.
        external: 'w.bin' keeps the weight in that file beside the model (onnx.save does it);
            any other text forges a reference to that location without writing it.
        input_name: the image input's name.
        fixed_batch: reshape to this batch, so other batches fail at run time.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((6, 3, 1, 1), 0.1, np.float32), "w")
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [fixed_batch, 6, 4096] if fixed_batch else [0, 6, -1])
    conv = (helper.make_node("Evil", [input_name], ["c"], domain=domain) if domain else
            helper.make_node("Conv", [input_name, "w"], ["c"]))
    graph = helper.make_graph(
        [conv, helper.make_node("Reshape", ["c", "shape"], ["output0"])], "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 6, 4096])], [weight, shape])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    props = {k: v for k, v in (("names", names), ("task", task)) if v is not None}
    if props:
        helper.set_model_props(model, props)
    if external == "w.bin":
        onnx.save(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
        return path
    if external is not None:
        weight = model.graph.initializer[0]
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("length", "72")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["infer", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_refusal(code: int, err: str) -> bool:
    return code == 2 and err.startswith("visionbatch infer: ") and err.count("\n") == 1 and "Traceback" not in err


def test_trtexec_script_quotes_the_file_name(capsys, workdir: Path, tmp_path: Path) -> None:
    model = tiny_model(workdir / "m;touch PWNED_trtexec;.onnx")
    code, _, err = run_cli(capsys, model.name, *FAST, "name=sh")
    assert code == 0, err
    run = workdir / "runs" / "infer" / "sh"
    # a stand-in trtexec that records the words it was given
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text('#!/bin/sh\nfor word in "$@"; do echo "$word"; done > "$TRTEXEC_ARGS"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TRTEXEC_ARGS": str(tmp_path / "args")}
    done = subprocess.run(["sh", str(run / "tensorrt" / "trtexec.sh")], cwd=workdir, env=env, check=False)
    assert not (workdir / "PWNED_trtexec").exists()
    assert done.returncode == 0
    words = (tmp_path / "args").read_text().splitlines()
    # the configs and the script name the deepstream/ copy by the model's safe identifier
    assert words[:2] == ["--onnx=m_touch_PWNED_trtexec_.onnx",
                         "--saveEngine=m_touch_PWNED_trtexec_.onnx_b1_gpu0_fp32.engine"]
    assert (run / "triton" / "m_touch_PWNED_trtexec_" / "1" / "model.onnx").is_file()
    assert (run / "deepstream" / "m_touch_PWNED_trtexec_.onnx").is_file()
    nvinfer = configparser.ConfigParser()
    nvinfer.read_string((run / "deepstream" / "config_infer_primary.txt").read_text())
    assert nvinfer["property"]["onnx-file"] == "m_touch_PWNED_trtexec_.onnx"
    assert nvinfer["property"]["model-engine-file"] == "m_touch_PWNED_trtexec_.onnx_b1_gpu0_fp32.engine"


@pytest.mark.parametrize("file_name, hazard, renamed", [
    ("m\ncustom-lib-path=libevil.so\n#.onnx", "a control character (\\n)", "m_custom-lib-path_libevil.so__.onnx"),
    ('q"x\nmax_batch_size: 999\n#.onnx', 'a quote (")', "q_x_max_batch_size__999__.onnx"),
    ("w\\in.onnx", "a backslash", "w_in.onnx"),
])
def test_file_names_a_config_cannot_carry_are_refused(capsys, workdir: Path, file_name: str, hazard: str,
                                                       renamed: str) -> None:
    model = tiny_model(workdir / file_name)
    code, out, err = run_cli(capsys, f"model={model}", *FAST)
    assert one_line_refusal(code, err) and out == ""
    assert f"the file name has {hazard}, which the DeepStream, Triton and TensorRT configs cannot carry" in err
    assert err.rstrip().endswith(f"rename the file, e.g. to {renamed}")
    assert not (workdir / "runs").exists()


def test_tensor_names_are_escaped_in_the_triton_config(capsys, workdir: Path) -> None:
    hostile = 'images"\nmax_batch_size: 999\n#'
    model = tiny_model(workdir / "m.onnx", input_name=hostile)
    code, _, err = run_cli(capsys, str(model), *FAST, "name=t")
    assert code == 0, err
    config = triton_model_config.parse((workdir / "runs/infer/t/triton/m/config.pbtxt").read_text())
    assert config.input[0].name == hostile and config.max_batch_size == 1


def test_class_names_with_newlines_keep_one_label_per_line(capsys, workdir: Path) -> None:
    model = tiny_model(workdir / "m.onnx", names="{0: 'a\\nb', 1: 'c\\r\\x00'}")
    code, _, err = run_cli(capsys, str(model), *FAST, "name=labels")
    assert code == 0, err
    assert (workdir / "runs/infer/labels/deepstream/labels.txt").read_text() == "a b\nc  \n"


@pytest.mark.parametrize("location, words", [
    ("/etc/passwd", "keeps its data in '/etc/passwd', an absolute path"),
    ("../../../../../../../../etc/passwd", "a path that climbs out with '..'"),
    ("link.bin", "which leads outside the model's folder (to /etc/passwd)"),
    ("missing.bin", "which is no file beside the model"),
])
def test_external_data_outside_the_model_folder_is_refused(capsys, workdir: Path, location: str, words: str) -> None:
    folder = workdir / "models"
    folder.mkdir()
    (folder / "link.bin").symlink_to("/etc/passwd")
    model = tiny_model(folder / "m.onnx", external=location)
    code, out, err = run_cli(capsys, str(model), *FAST)
    assert one_line_refusal(code, err) and out == ""
    assert f"model={model}: tensor w " in err and words in err
    assert "external data must be files inside the model's folder" in err
    assert not (workdir / "runs").exists()


def test_a_custom_operator_is_one_line_and_leaves_no_run_folder(capsys, workdir: Path) -> None:
    model = tiny_model(workdir / "evil.onnx", domain="com.evil")
    code, out, err = run_cli(capsys, str(model), *FAST)
    assert one_line_refusal(code, err) and out == ""
    assert "model=" in err and "evil.onnx: ONNX Runtime" in err and "cannot load it (Fail: " in err
    assert "com.evil:Evil(-1) is not a registered function/op" in err
    assert not (workdir / "runs").exists()


def test_a_batch_the_model_cannot_run_is_one_line(capsys, workdir: Path) -> None:
    model = tiny_model(workdir / "fixed.onnx", fixed_batch=1)  # says dynamic, reshapes to batch 1
    code, _, err = run_cli(capsys, str(model), "batch_sizes=1,2", "runs=2", "warmup=0", "device=cpu")
    assert code == 2 and err.splitlines()[-1].startswith(f"visionbatch infer: model={model}: ONNX Runtime failed "
                                                         f"on a batch of 2")
    assert "Traceback" not in err and not (workdir / "runs").exists()


def test_external_data_travels_with_the_triton_copy(capsys, workdir: Path) -> None:
    import onnxruntime

    folder = workdir / "models"
    folder.mkdir()
    model = tiny_model(folder / "m.onnx", external="w.bin")
    code, _, err = run_cli(capsys, str(model), *FAST, "name=ext")
    assert code == 0, err
    version = workdir / "runs/infer/ext/triton/m/1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "w.bin"]
    assert (version / "w.bin").read_bytes() == (folder / "w.bin").read_bytes()
    session = onnxruntime.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"images": np.ones((1, 3, 64, 64), np.float32)})
    assert output.shape == (1, 6, 4096) and np.allclose(output, 0.3)


@pytest.mark.parametrize("argv, words", [
    (["name=../../x"], ("name=../../x: a run name is one folder name, without '/', '\\', '..' or control "
                        "characters: use name=x, or project= for another parent folder")),
    (["name=/ABSOLUTE/elsewhere"], "use name=elsewhere, or project="),
    (["name=a/b"], "use name=b, or project="),
    (["name=.."], "use name=infer, or project="),
    (["name=a\\b"], "use name=b, or project="),
    (["project=taken"], "project=taken: "),
    (["project=taken/deeper"], "project=taken/deeper: "),
])
def test_run_folder_options_that_escape_or_cannot_be_made(capsys, workdir: Path, tmp_path: Path, argv: list[str],
                                                         words: str) -> None:
    argv = [arg.replace("/ABSOLUTE", str(tmp_path)) for arg in argv]
    model = tiny_model(workdir / "m.onnx")
    taken = workdir / "runs" / "infer" / "taken"  # a relative project= lands under runs/infer/
    taken.parent.mkdir(parents=True)
    taken.write_text("a file")
    code, out, err = run_cli(capsys, str(model), *FAST, *argv)
    assert one_line_refusal(code, err) and out == "" and words in err
    if argv[0].startswith("project="):
        assert f"{taken} is a file, not a folder" in err
    assert sorted(p.name for p in (workdir / "runs" / "infer").iterdir()) == ["taken"]
    assert not (workdir.parent / "x").exists() and not (tmp_path / "elsewhere").exists()


def test_absolute_project_that_is_a_file(capsys, workdir: Path, tmp_path: Path) -> None:
    model = tiny_model(workdir / "m.onnx")
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, str(model), *FAST, f"project={tmp_path / 'file'}")
    assert one_line_refusal(code, err) and f"{tmp_path / 'file'} is a file, not a folder" in err


def test_unknown_metadata_task_falls_back_to_the_outputs(capsys, workdir: Path) -> None:
    model = tiny_model(workdir / "m.onnx", task="../../../tmp/x")
    code, out, err = run_cli(capsys, str(model), *FAST, "name=task", "--json")
    assert code == 0, err
    assert json.loads(out)["task"] == "detect"
    assert "tmp/x" not in (workdir / "runs/infer/task/plan.json").read_text()


def test_a_pose_model_by_its_metadata_is_refused(capsys, workdir: Path) -> None:
    model = tiny_model(workdir / "m.onnx", task="pose")
    code, _, err = run_cli(capsys, str(model), *FAST)
    assert one_line_refusal(code, err)
    assert f"model={model} is a pose model: visionbatch infer tunes detect and segment models" in err
    assert not (workdir / "runs").exists()


def test_a_failed_export_leaves_no_empty_run_folder(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from visionbatch.errors import ConfigError

    def failing_export(model: str, fmt: str, out_dir: Path, *args, **kwargs) -> Path:
        assert out_dir.is_dir()  # the export is what makes the run folder
        (out_dir / "scratch").mkdir()
        raise ConfigError("export failed")

    monkeypatch.setattr(tune, "export", failing_export)
    with pytest.raises(ConfigError, match="export failed"):
        tune.tune_inference("yolo11n.yaml", imgsz=64, batch_sizes=[1], device="cpu", name="gone")
    assert not (workdir / "runs" / "infer" / "gone").exists()


def _engine_with_header(path: Path, header: dict) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(4, "little") + text + b"PLAN")
    return path


def test_an_engine_header_is_only_a_hint(tmp_path: Path) -> None:
    from visionbatch.errors import ConfigError
    from visionbatch.infer.export import engine_info

    info = engine_info(_engine_with_header(tmp_path / "m.engine", {"task": "../../../tmp/x", "names": {"a": "b"},
                                                                     "imgsz": ["640"]}))
    assert (info.task, info.names, info.imgsz) == ("detect", {}, None)
    with pytest.raises(ConfigError, match=r"m\.engine is a pose model: visionbatch infer tunes detect and segment"):
        engine_info(_engine_with_header(tmp_path / "m.engine", {"task": "pose"}))
