"""tune_inference end to end at a tiny size: a real Ultralytics export and a real ONNX Runtime sweep."""

from __future__ import annotations

import configparser
import json
from functools import partial
from pathlib import Path

import deepstream_keys
import infer_models
import pytest
import triton_model_config
from test_infer_edge import fake_tegrastats, make_board, ready_jetson_probe

from visionbatch.devices import jetson
from visionbatch.infer import probes
from visionbatch.infer.tune import tune_inference

FAST = dict(batch_sizes=[1, 2], runs=3, warmup_runs=1)
GIB = 2**30


@pytest.fixture
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolo11n exported at 64 px with a dynamic batch, once per session."""
    return infer_models.tiny_onnx(tmp_path_factory)


def nvinfer(plan) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(plan.files["deepstream_nvinfer"])
    return parser["property"]


def test_yaml_is_exported_swept_and_deployed(workdir: Path) -> None:
    import torch

    threads = torch.get_num_threads()
    plan = tune_inference("yolo11n.yaml", imgsz=64, latency_ms=1000, **FAST)
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    assert (plan.task, plan.backend, plan.provider, plan.device, plan.precision) == (
        "detect", "onnxruntime", "CPUExecutionProvider", "cpu", "fp32")
    assert [m.batch_size for m in plan.measurements] == [1, 2]
    assert all(m.runs == 3 and m.throughput_per_s > 0 and m.latency_p99_ms >= m.latency_p50_ms > 0
               for m in plan.measurements)
    assert plan.measurements[0].memory_source == "process peak RSS" and plan.measurements[0].memory_bytes > 0
    assert plan.batch_size in (1, 2) and plan.stop_reason == "all 2 batch sizes measured"
    run = Path(plan.run_dir)
    assert run == workdir / "runs" / "infer" / "infer"
    assert Path(plan.model_file) == run / "yolo11n.onnx"  # exported into the run folder, nowhere else
    assert sorted(p.name for p in workdir.iterdir()) == ["runs"]
    saved = json.loads((run / "plan.json").read_text())
    assert saved["batch_size"] == plan.batch_size and saved["measurements"][1]["batch_size"] == 2
    assert (run / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert nvinfer(plan)["batch-size"] == str(plan.batch_size)
    config = triton_model_config.parse(Path(plan.files["triton_config"]).read_text())
    assert config.max_batch_size == plan.batch_size
    assert [(o.name, list(o.dims)) for o in config.output] == [("output0", [84, 84])]  # 8x8 + 4x4 + 2x2 anchors
    assert Path(plan.files["triton_model"]).stat().st_size == Path(plan.model_file).stat().st_size
    # Triton's instance count: 1 against 2 instances at the chosen batch, each of the two with half the threads
    found = plan.instances
    assert found.measured and found.batch_size == plan.batch_size and found.count in (1, 2)
    assert found.threads == plan.cpu_threads and found.threads_each == max(1, plan.cpu_threads // 2)
    assert config.instance_group[0].count == found.count
    assert saved["instances"]["count"] == found.count and saved["instances"]["one"]["samples"] >= 2


@pytest.mark.slow
def test_segmentation_end_to_end(workdir: Path) -> None:
    plan = tune_inference("yolo11n-seg.yaml", imgsz=64, end_to_end=True, name="seg", **FAST)
    assert plan.task == "segment" and plan.end_to_end
    for m in plan.measurements:
        assert set(m.stages_ms) == {"preprocess", "inference", "postprocess"}
        assert m.detections_per_image is not None
    assert any("weights are untrained" in note for note in plan.notes)
    assert nvinfer(plan)["network-type"] == "100"  # raw tensors out: no DeepStream parser reads this layout
    # the config loads by the documented keys, and its paths reach the files this run wrote
    config_path = Path(plan.files["deepstream_nvinfer"])
    deepstream_keys.parse(config_path.read_text(), deepstream_keys.nvinfer_table)
    paths = deepstream_keys.paths(config_path, deepstream_keys.nvinfer_table)
    assert paths["onnx-file"].read_bytes() == Path(plan.model_file).read_bytes()
    assert paths["labelfile-path"].read_text().count("\n") == 80
    config = triton_model_config.parse(Path(plan.files["triton_config"]).read_text())
    assert [o.name for o in config.output] == ["output0", "output1"]


def test_onnx_file_with_a_memory_budget_nothing_fits(workdir: Path, tiny_onnx: Path) -> None:
    plan = tune_inference(str(tiny_onnx), memory_budget=2**20, **FAST)
    assert plan.imgsz == 64  # read from the file's metadata
    assert plan.batch_size is None
    assert plan.reason.startswith("no measured batch meets the constraints (batch 1: memory ")
    assert any(a.startswith("a larger memory budget: ") for a in plan.advice)
    assert "no deployment configs written: no batch met the constraints" in plan.notes
    assert set(plan.files) == {"plan", "plot"} and Path(plan.files["plot"]).is_file()
    assert not (Path(plan.run_dir) / "deepstream").exists()


def test_on_a_simulated_jetson(workdir: Path, tiny_onnx: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The Jetson path: board detection, unified memory and tegrastats power, the target's budget."""
    board = make_board(tmp_path / "board", "NVIDIA Jetson Orin Nano Developer Kit",
                       "nvidia,p3768-0000+p3767-0005\x00nvidia,tegra234",
                       "# R36 (release), REVISION: 4.3, GCID: 1\n", mem_total_kb=7_650_336, mem_available_kb=5_000_000)
    monkeypatch.setattr(jetson, "detect_jetson", partial(jetson.detect_jetson, board))
    monkeypatch.setattr(probes, "jetson_probe", partial(ready_jetson_probe, board,
                                                        fake_tegrastats(tmp_path, power_mw=7200), 0.01))
    # 2 img/s: met with ~100x to spare however busy the CPU, so a batch is always chosen
    plan = tune_inference(str(tiny_onnx), target="orin-nano-8gb", streams=2, fps=1, **FAST)
    assert plan.jetson.module.key == "orin-nano-8gb" and plan.device_name == "NVIDIA Jetson Orin Nano Developer Kit"
    assert plan.constraints.memory_budget_bytes == int(0.9 * (8 * GIB - 3 * GIB // 2))  # the OS keeps 1.5 GiB
    first = plan.measurements[0]
    assert first.memory_source == "unified memory used (/proc/meminfo)"
    assert first.memory_bytes == (7_650_336 - 5_000_000) * 1024
    assert first.power_mw == 7200.0
    assert not any(n.startswith("timings are from") for n in plan.notes)  # measured on the target itself
    mux = configparser.ConfigParser()
    mux.read(plan.files["deepstream_streammux"])
    assert mux["streammux"]["batch-size"] == str(plan.batch_size)
    # the queue delay the simulation chose under 2 x 1 fps is the push timeout
    assert plan.simulated is not None and plan.simulated.batch_size == plan.batch_size
    assert mux["streammux"]["batched-push-timeout"] == str(round(plan.queue_delay_ms * 1000))


def test_planning_for_a_jetson_from_this_machine(workdir: Path, tiny_onnx: Path) -> None:
    plan = tune_inference(str(tiny_onnx), target="agx-orin-32gb", memory_fraction=0.5, **FAST)
    assert plan.jetson is None and plan.target.key == "agx-orin-32gb"
    assert plan.constraints.memory_budget_bytes == 15 * GIB  # half of 32 GiB less the 2 GiB the OS keeps
    assert plan.constraints.memory_budget_source == ("50% of Jetson AGX Orin 32GB's 30.0 GiB usable "
                                                     "(32.0 GiB less 2.00 GiB the OS keeps)")
    assert any(n.startswith("timings are from ") and "not from the Jetson AGX Orin 32GB" in n for n in plan.notes)
    config = triton_model_config.parse(Path(plan.files["triton_config"]).read_text())
    assert config.instance_group[0].kind == 1  # KIND_GPU: planned for the Jetson


def test_pytorch_backend_on_cpu(workdir: Path) -> None:
    plan = tune_inference("yolo11n.yaml", imgsz=64, backend="pytorch", **FAST)
    assert plan.backend == "pytorch" and plan.provider.startswith("torch ") and plan.provider.endswith(" eager")
    assert plan.precision == "fp32" and plan.model_file == "yolo11n.yaml"
    assert [m.batch_size for m in plan.measurements] == [1, 2]
    assert any(n.startswith("the configs name yolo11n.onnx, which this run did not export") for n in plan.notes)
    assert "triton_model" not in plan.files and Path(plan.files["triton_config"]).is_file()
    assert plan.instances.count == 1 and not plan.instances.measured  # torch's threads are one pool per process
    assert plan.instances.reason.startswith("1 instance, not measured: PyTorch's CPU threads are one pool")


def test_a_checkpoint_is_exported_into_the_run_folder_not_beside_it(workdir: Path, tmp_path: Path) -> None:
    """Ultralytics' exporter writes beside the .pt (overwriting a same-named .onnx); visionbatch must not."""
    from visionbatch.ultralytics.offline import offline

    mine = tmp_path / "mine"
    mine.mkdir()
    with offline():
        from ultralytics import YOLO

        YOLO("yolo11n.yaml").save(mine / "best.pt")
    (mine / "best.onnx").write_bytes(b"the user's own file")
    plan = tune_inference(str(mine / "best.pt"), imgsz=64, batch_sizes=[1], runs=2, warmup_runs=0)
    assert Path(plan.model_file) == Path(plan.run_dir) / "best.onnx"
    assert sorted(p.name for p in mine.iterdir()) == ["best.onnx", "best.pt"]
    assert (mine / "best.onnx").read_bytes() == b"the user's own file"
