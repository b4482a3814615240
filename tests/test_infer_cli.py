"""`visionbatch infer`: bad input gets one line and exit code 2 before anything is written; a tiny real run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import infer_models
import pytest

from visionbatch.cli import main

BAD = [
    ("misspelt-key", ["latency=100"], "unknown argument 'latency=100' (did you mean 'latency_ms'?)"),
    ("zero-latency", ["latency_ms=0"],
     "latency_ms=0 is impossible: give the per-frame latency budget in milliseconds, e.g. latency_ms=50"),
    ("streams-alone", ["streams=4"], "streams=4 needs its partner: a stream load is streams=N fps=F"),
    ("fps-zero", ["streams=4", "fps=0"], "fps=0 is impossible"),
    ("imgsz-stride", ["imgsz=300"], "imgsz=300 is not a multiple of the model's stride 32: use imgsz=288 or imgsz=320"),
    ("imgsz-small", ["imgsz=16"], "imgsz=16 is impossible"),
    ("batch-zero", ["batch_sizes=0,2"], "batch_sizes=0 is impossible"),
    ("batch-text", ["batch_sizes=big"], "batch_sizes=big is not a whole number"),
    ("batch-old-spelling", ["batch=1,2"], "batch=1,2: visionbatch infer takes batch_sizes=1,2 instead"),
    ("fraction", ["memory_fraction=1.5"], "memory_fraction=1.5 is out of range"),
    ("budget-units", ["memory_budget=2parsecs"], "memory_budget=2parsecs is not a memory size"),
    ("unknown-target", ["target=orin-nano-16gb"], "(did you mean 'orin-nano-8gb'?): use one of gtx1050,"),
    ("unknown-backend", ["backend=openvino"], "backend=openvino is not a backend"),
    ("provider-pytorch", ["backend=pytorch", "provider=cuda"], "provider=cuda is for backend=onnxruntime"),
    ("half-flag", ["half=maybe"], "half=maybe is not a switch: use half=True or half=False"),
    ("two-models", ["other.yaml"], "takes one MODEL"),
]


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["infer", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("extra, words", [pytest.param(a, w, id=i) for i, a, w in BAD])
def test_bad_arguments_exit_2_with_one_line(capsys, workdir: Path, extra: list[str], words: str) -> None:
    code, out, err = run_cli(capsys, "yolo11n.yaml", *extra)
    assert code == 2 and out == ""
    assert err.startswith("visionbatch infer: ") and err.count("\n") == 1 and "Traceback" not in err
    assert words in err
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("argv, words", [
    (["missing.onnx"], "model=missing.onnx: no such file"),
    (["yolo11n.pt"], "never downloads weights"),
    (["https://example.com/m.onnx"], "never downloads"),
    ([], "needs MODEL: visionbatch infer yolo11n.yaml"),
])
def test_bad_models(capsys, workdir: Path, argv: list[str], words: str) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and words in err and err.count("\n") == 1


def static_onnx(path: Path, shape: list[int]) -> Path:
    """A one-node ONNX graph (Identity) with a fixed input shape, like a static export."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "static",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.mark.parametrize("argv, words", [
    (["batch_sizes=1,2"], "the batch dimension is fixed at 1: re-export with dynamic=True"),
    (["imgsz=128", "batch_sizes=1"], "imgsz=128: static.onnx takes 64x64 inputs only: use imgsz=64"),
])
def test_static_onnx_refused_before_anything_is_written(capsys, workdir: Path, argv: list[str], words: str) -> None:
    model = static_onnx(workdir / "static.onnx", [1, 3, 64, 64])
    code, _, err = run_cli(capsys, str(model), *argv)
    assert code == 2 and words in err and err.count("\n") == 1
    assert not (workdir / "runs").exists()


def test_pose_model_refused(capsys, workdir: Path) -> None:
    code, _, err = run_cli(capsys, "yolo11n-pose.yaml")
    assert code == 2 and "model=yolo11n-pose.yaml is a pose model: visionbatch infer tunes detect and segment" in err
    assert not (workdir / "runs").exists()


def test_onnx_file_with_backend_pytorch(capsys, workdir: Path) -> None:
    (workdir / "m.onnx").write_bytes(b"x")
    code, _, err = run_cli(capsys, "m.onnx", "backend=pytorch")
    assert code == 2 and "backend=pytorch needs the .pt or .yaml it came from" in err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_missing(capsys, workdir: Path) -> None:
    code, _, err = run_cli(capsys, "yolo11n.yaml", "backend=tensorrt")
    assert code == 2 and "backend=tensorrt needs the tensorrt package" in err


def test_half_and_cuda_on_a_cpu_machine(capsys, workdir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert "half=True needs a CUDA device" in run_cli(capsys, "yolo11n.yaml", "half=True")[2]
    assert "no CUDA GPU is visible" in run_cli(capsys, "yolo11n.yaml", "device=0")[2]
    assert "provider=cuda runs on a GPU but device=cpu" in run_cli(capsys, "yolo11n.yaml", "provider=cuda")[2]


@pytest.fixture
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolo11n exported at 64 px with a dynamic batch, once per session."""
    return infer_models.tiny_onnx(tmp_path_factory)


def test_cli_run_prints_the_table_and_the_choice(capsys, workdir: Path, tiny_onnx: Path) -> None:
    # constraints a 64 px model meets with ~100x to spare on any CPU, however busy: the choice is never in doubt
    code, out, err = run_cli(capsys, str(tiny_onnx), "batch_sizes=1,2", "runs=3", "warmup=1", "streams=2", "fps=1",
                             "latency_ms=1000", "name=cli")
    assert code == 0, err
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("batch  runs"))
    assert "fill ms" in header and "verdict" in header and "95% img/s" in header and "sim p99 ms" in header
    assert any(line.startswith("chosen: batch ") for line in lines)
    assert "constraints: latency <= 1000 ms (simulated p99 with queueing), 2 streams x 1 fps = 2 img/s" in out
    assert any(line.startswith("simulated load: batch ") for line in lines)
    assert any(line.startswith("replayed in real time: batch ") and line.endswith("(within the budget)")
               for line in lines)
    assert "timing: runs=3 fixed the calls per batch" in out
    assert "visionbatch infer: [2/2] batch 2:" in err  # progress on stderr
    run = workdir / "runs" / "infer" / "cli"
    assert {p.name for p in run.iterdir()} >= {"plan.json", "sweep.png", "deepstream", "triton", "tensorrt"}


def test_cli_json(capsys, workdir: Path, tiny_onnx: Path) -> None:
    code, out, _ = run_cli(capsys, str(tiny_onnx), "batch_sizes=2", "runs=2", "warmup=0", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["batch_size"] == 2 and plan["measurements"][0]["runs"] == 2
    assert plan["files"]["plan"].endswith("plan.json")
    # the interval of each throughput, how it was timed; no load: nothing simulated or replayed
    assert plan["measurements"][0]["throughput_low_per_s"] <= plan["measurements"][0]["throughput_per_s"]
    assert plan["timing"].startswith("runs=2 fixed the calls per batch")
    assert (plan["simulated"], plan["queue_delay_ms"], plan["replayed"]) == (None, None, [])
