"""Precision trade-offs (`visionbatch.infer.precision`): INT8 quantisation, mAP per precision, CLI and JSON."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import deepstream_keys
import infer_models
import pytest
from conftest import SHAPES, tree_digest

from visionbatch.cli import main
from visionbatch.errors import ConfigError
from visionbatch.infer.deploy import (
    INT8_CACHE_NAME,
    DeploymentSpec,
    trtexec_command,
    write_deployment,
)
from visionbatch.infer.precision import (
    PrecisionReport,
    PrecisionResult,
    check_precisions,
    check_request,
    compare_precisions,
    head_decoding_nodes,
    pick_images,
    settled_against,
    time_precisions,
    tradeoff_lines,
)
from visionbatch.stats import SpeedEstimate

SHAPES_YAML = str(SHAPES / "data.yaml")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return infer_models.tiny_onnx(tmp_path_factory)


@pytest.fixture(scope="module")
def report(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[PrecisionReport, Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    before = tree_digest(SHAPES)
    request = check_request("fp32,fp16,int8", SHAPES_YAML, 8)
    made = compare_precisions(onnx_model, request, run_dir, imgsz=64, batch_size=2, device="cpu", threads=1,
                              seconds=0.01)
    return made, run_dir, before


def test_int8_is_quantised_into_the_run_folder_with_the_metadata(report, onnx_model: Path) -> None:
    import onnx

    made, run_dir, before = report
    int8 = next(r for r in made.results if r.precision == "int8")
    assert Path(int8.file) == run_dir / "yolo11n_int8.onnx"
    assert sorted(p.name for p in run_dir.iterdir()) == ["yolo11n_int8.onnx"]  # no scratch left behind
    model = onnx.load(int8.file)
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    source = onnx.load(str(onnx_model))
    assert {p.key: p.value for p in model.metadata_props} == {p.key: p.value for p in source.metadata_props}
    assert made.calibration_images == 8
    assert tree_digest(SHAPES) == before  # Ultralytics' label caches went to the staged mirror


def test_fp32_and_int8_get_a_finite_map_and_fp16_is_not_measured_on_a_cpu(report) -> None:
    made, _, _ = report
    assert [r.precision for r in made.results] == ["fp32", "fp16", "int8"]
    for result in (made.results[0], made.results[2]):
        assert math.isfinite(result.map50_95) and math.isfinite(result.map50) and result.img_per_s > 0
        assert 0 <= result.map50_95 <= result.map50 <= 1
    fp16 = made.results[1]
    assert (fp16.file, fp16.img_per_s, fp16.map50_95) == (None, None, None) and "CUDA" in fp16.note
    assert made.tradeoffs[0].startswith("fp16: not measured (fp16 runs on a CUDA device only")
    assert made.tradeoffs[1].startswith("int8: ") and ("at 95%" in made.tradeoffs[1] or "(95% " in made.tradeoffs[1])
    assert made.tradeoffs[1].endswith(f"mAP50-95 {made.results[0].map50_95:.3f} -> {made.results[2].map50_95:.3f}")
    for result in (made.results[0], made.results[2]):  # a throughput with its interval, from interleaved blocks
        assert 0 < result.low_img_per_s <= result.img_per_s <= (result.high_img_per_s or math.inf)
        assert result.calls >= 3  # every precision gets a block of 3 calls at least, whatever the bound
    assert made.timing.startswith("fp32, int8 at batch 2 in ") and " interleaved blocks (" in made.timing


def test_report_json_round_trip(report) -> None:
    made, _, _ = report
    loaded = json.loads(json.dumps(made.to_dict()))
    rebuilt = PrecisionReport(**{**loaded, "results": tuple(PrecisionResult(**r) for r in loaded["results"]),
                                 "tradeoffs": tuple(loaded["tradeoffs"])})
    assert rebuilt == made


def test_head_decoding_stays_fp32(onnx_model: Path) -> None:
    import onnx

    model = onnx.load(str(onnx_model))
    kinds = {node.name: node.op_type for node in model.graph.node}
    kept = head_decoding_nodes(model)
    assert kept and "Conv" not in {kinds[name] for name in kept}
    assert {"Sigmoid", "Concat"} <= {kinds[name] for name in kept}  # class scores and the joined output


def test_tradeoff_line_compares_with_fp32_as_far_as_the_intervals_show() -> None:
    base = PrecisionResult("fp32", "m.onnx", 100.0, 0.41, 0.6, low_img_per_s=98.0, high_img_per_s=102.0, calls=30)

    def int8(img_per_s: float, low: float, high: float | None) -> PrecisionResult:
        return PrecisionResult("int8", "q.onnx", img_per_s, 0.39, 0.58, low_img_per_s=low, high_img_per_s=high,
                               calls=30)

    assert tradeoff_lines([base, int8(160.0, 155.0, 165.0)]) == (
        "int8: 1.60x the throughput (95% 1.52-1.68x), mAP50-95 0.410 -> 0.390",)
    # 1.05x on the point, but 101/102 < 1.03: not claimed
    assert tradeoff_lines([base, int8(105.0, 101.0, 109.0)]) == (
        "int8: not measurably faster (throughput 0.99-1.11x at 95%), mAP50-95 0.410 -> 0.390",)
    assert tradeoff_lines([base, int8(70.0, 60.0, None)]) == (
        "int8: not measurably faster (throughput 0.59-unbounded at 95%), mAP50-95 0.410 -> 0.390",)
    assert tradeoff_lines([base, int8(50.0, 48.0, 52.0)]) == (
        "int8: measurably slower: 0.50x the throughput (95% 0.47-0.53x), mAP50-95 0.410 -> 0.390",)
    # a result without an interval (an older report) is no evidence either way
    assert tradeoff_lines([base, PrecisionResult("int8", "q.onnx", 160.0, 0.39, 0.58)])[0].startswith(
        "int8: not measurably faster (throughput 0.00-unbounded at 95%)")


class FakeDevice:
    """Runners on a fake clock: a call of precision p takes `ms[p]` (or the next of `scatter[p]`, when given)."""

    def __init__(self, ms: dict[str, float], scatter: dict[str, list[float]] | None = None) -> None:
        self.now, self.ms, self.scatter = 0.0, ms, {k: list(v) for k, v in (scatter or {}).items()}
        self.calls: list[str] = []
        self.closed: list[str] = []

    def clock(self) -> float:
        return self.now

    def open(self, path: Path):
        device, precision = self, path.stem

        class Runner:
            def prepare(self, array):
                return array

            def infer(self, inputs):
                device.calls.append(precision)
                queue = device.scatter.get(precision)
                device.now += (queue.pop(0) if queue else device.ms[precision]) / 1000.0
                return [inputs]

            def synchronize(self):
                pass

            def close(self):
                device.closed.append(precision)

        return Runner()


def test_precisions_are_timed_in_interleaved_blocks_until_settled() -> None:
    device = FakeDevice({"fp32": 10.0, "int8": 5.0})
    speeds, timing = time_precisions({"fp32": Path("fp32.onnx"), "int8": Path("int8.onnx")}, 2, 8, seconds=1.0,
                                     open_runner=device.open, warmup_runs=1, clock=device.clock)
    assert speeds["fp32"].img_per_s == pytest.approx(200.0) and speeds["int8"].img_per_s == pytest.approx(400.0)
    assert speeds["int8"].low_img_per_s == pytest.approx(400.0)  # exact timings: a point
    # a warm-up call each, then blocks of 0.25 s (a quarter of `seconds`) in turn: exact timings settle it
    # as soon as each precision has stats.MIN_BLOCKS (3) blocks
    blocks = [(name, len(list(calls))) for name, calls in itertools.groupby(device.calls[2:])]
    assert device.calls[:2] == ["fp32", "int8"] and [name for name, _ in blocks] == ["fp32", "int8"] * 3
    assert all(count == 25 for name, count in blocks if name == "fp32")  # 10 ms calls for 0.25 s
    assert all(count in (50, 51) for name, count in blocks if name == "int8")  # 5 ms calls (float sums)
    assert sorted(device.closed) == ["fp32", "int8"]
    assert timing == "fp32, int8 at batch 2 in 6 interleaved blocks (1.5 s): every comparison with fp32 settled"


def test_precisions_whose_intervals_overlap_stop_at_the_bound_and_are_not_called_faster() -> None:
    device = FakeDevice({"fp32": 10.0, "int8": 9.0}, scatter={"int8": [6.0, 12.0, 9.0] * 400})
    speeds, timing = time_precisions({"fp32": Path("fp32.onnx"), "int8": Path("int8.onnx")}, 2, 8, seconds=0.5,
                                     open_runner=device.open, warmup_runs=0, clock=device.clock)
    assert timing.endswith("the 1 s bound passed: overlapping intervals count as equal")
    assert device.now <= 1.0 + 0.15  # no block starts that would end past the bound
    line = tradeoff_lines([PrecisionResult("fp32", "a", speeds["fp32"].img_per_s, None, None,
                                           low_img_per_s=speeds["fp32"].low_img_per_s,
                                           high_img_per_s=speeds["fp32"].high_img_per_s),
                           PrecisionResult("int8", "b", speeds["int8"].img_per_s, None, None,
                                           low_img_per_s=speeds["int8"].low_img_per_s,
                                           high_img_per_s=speeds["int8"].high_img_per_s)])
    assert line[0].startswith("int8: not measurably faster (throughput ")


def test_settled_against_fp32() -> None:
    base = SpeedEstimate(2, 100.0, 99.0, 101.0, 30)
    assert settled_against({"fp32": base})
    assert settled_against({"fp32": base, "int8": SpeedEstimate(2, 100.5, 99.5, 101.5, 30)})  # the same, shown
    assert settled_against({"fp32": base, "int8": SpeedEstimate(2, 60.0, 58.0, 62.0, 30)})  # slower, shown
    assert not settled_against({"fp32": base, "int8": SpeedEstimate(2, 103.0, 99.0, 107.0, 30)})


def test_pick_images_spreads_over_the_split() -> None:
    assert pick_images([str(i) for i in range(10)], 4) == ["0", "2", "5", "7"]


@pytest.mark.parametrize("value, words", [
    ("fp8", "precision=fp8 is not a precision visionbatch compares"),
    ("int4", "precision=int4 is not a precision"),
    ([], "precision= is not a list of precisions"),
    (" , ", "precision= ,  is not a list of precisions"),
])
def test_bad_precision_values(value, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        check_precisions(value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(precision="int8", data=None, calib_images=None), "precision=fp32,int8 needs data="),
    (dict(precision=None, data=SHAPES_YAML, calib_images=None), "data= is used by precision= only"),
    (dict(precision="int8", data="missing.yaml", calib_images=None), "data=missing.yaml: no such file"),
    (dict(precision="int8", data=SHAPES_YAML, calib_images=0), "calib_images=0 is impossible"),
    (dict(precision="int8", data=SHAPES_YAML, calib_images=None, backend="pytorch"), "not backend=pytorch"),
])
def test_bad_requests(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        check_request(**kwargs)


def test_cli_bad_precision_is_one_line_exit_2(capsys, workdir: Path) -> None:
    code = main(["infer", "yolo11n.yaml", "precision=fp32,fp4", f"data={SHAPES_YAML}"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("visionbatch infer: precision=fp4 is not a precision") and err.count("\n") == 1
    assert not (workdir / "runs").exists()


def test_cli_shows_the_tradeoff(capsys, workdir: Path, onnx_model: Path) -> None:
    code = main(["infer", str(onnx_model), "imgsz=64", "batch_sizes=1", "device=cpu", "threads=1", "warmup=0",
                 "runs=3", "seconds=0.01", "max_seconds=1", "precision=fp32,int8", f"data={SHAPES_YAML}",
                 "calib_images=4", "name=p", "target=t4"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "precisions at batch 1 on cpu" in out
    assert "\nint8: " in out and (" at 95%)" in out or "(95% " in out)
    assert "95% img/s" in out and "\ntiming: fp32, int8 at batch 1 in " in out
    plan = json.loads((workdir / "runs" / "infer" / "p" / "plan.json").read_text())
    assert [r["precision"] for r in plan["precisions"]["results"]] == ["fp32", "int8"]
    run_dir = workdir / "runs" / "infer" / "p"
    assert (run_dir / "yolo11n_int8.onnx").is_file()
    # configs for a GPU target carry TensorRT's INT8 settings, and a note says the cache is still to make
    nvinfer = (run_dir / "deepstream" / "config_infer_primary.txt").read_text()
    assert "network-mode=1" in nvinfer and f"int8-calib-file={INT8_CACHE_NAME}" in nvinfer
    assert not (run_dir / "deepstream" / INT8_CACHE_NAME).exists()
    assert any("needs TensorRT on the target" in note for note in plan["notes"])


INT8_SPEC = DeploymentSpec("yolo11n", "detect", 640, 8, "int8", 80, (("output0", "float32", (84, 8400)),),
                           int8_calibration_cache=INT8_CACHE_NAME)


def test_int8_configs_name_the_calibration_cache_where_nvinfer_and_trtexec_look(tmp_path: Path) -> None:
    files = write_deployment(INT8_SPEC, tmp_path, {0: "person"}, onnx_path=None)
    nvinfer = deepstream_keys.parse(files["deepstream_nvinfer"].read_text(), deepstream_keys.nvinfer_table)
    assert nvinfer["property"]["network-mode"] == 1
    paths = deepstream_keys.paths(files["deepstream_nvinfer"], deepstream_keys.nvinfer_table)
    assert paths["int8-calib-file"] == tmp_path / "deepstream" / INT8_CACHE_NAME
    assert paths["model-engine-file"].name == "yolo11n.onnx_b8_gpu0_int8.engine"
    assert not paths["int8-calib-file"].exists()  # only TensorRT makes one: never faked
    words = trtexec_command(INT8_SPEC, "yolo11n.onnx").split()
    assert words[-2:] == ["--int8", f"--calib={INT8_CACHE_NAME}"]  # trtexec.sh runs in deepstream/
    assert 'cd "$(dirname "$0")/../deepstream"' in files["trtexec"].read_text()


@pytest.mark.parametrize("precision, cache", [("int8", None), ("fp16", INT8_CACHE_NAME), ("int8", "a\nb.cache")])
def test_int8_and_its_cache_go_together(precision: str, cache) -> None:
    with pytest.raises(ConfigError):
        DeploymentSpec("m", "detect", 640, 8, precision, 80, (), int8_calibration_cache=cache)


def test_fp32_configs_carry_no_int8_settings(tmp_path: Path) -> None:
    spec = DeploymentSpec("yolo11n", "detect", 640, 8, "fp32", 80, (("output0", "float32", (84, 8400)),))
    files = write_deployment(spec, tmp_path, {0: "person"})
    assert "int8" not in files["deepstream_nvinfer"].read_text() and "--int8" not in files["trtexec"].read_text()
