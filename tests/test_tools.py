"""The benchmark scripts run end to end (GPU ones through their simulated mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_augcost_overhead_reports_each_phase(small_shapes: Path) -> None:
    """The timing agreement the suite no longer asserts is a measurement here: one row per phase, figures unjudged."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_augcost.py"), "--overhead", "--data", str(small_shapes),
         "--tasks", "detect", "--imgsz", "64", "--attempts", "1", "--", "images=8", "repeats=1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # 1 if a timed output differed from its untimed twin
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith("| shapes |")]
    assert [(row[3], row[4], row[8]) for row in rows] == [("1", "mosaic", "yes"), ("1", "close_mosaic", "yes"),
                                                          ("1", "val", "yes")]
    assert all(float(row[5]) > 0 and float(row[6]) > 0 and row[7].endswith("%") for row in rows)
    assert "over 3 phases" in proc.stdout and "within +-5%" in proc.stdout


def _load_tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_staging_builds_reuses_and_rebuilds() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_staging.py"), "--images", "50", "--val", "10"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 60 ")]
    assert len(row) == 1 and row[0].rstrip().endswith("| 1 |")  # the older mirror was removed


def _bench_published():
    """tools/bench_published.py as a module, registered so that its dataclasses resolve their annotations."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_published", ROOT / "tools" / "bench_published.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_published", module)
    spec.loader.exec_module(sys.modules["bench_published"])
    return sys.modules["bench_published"]


def test_published_logs_rows_are_complete_and_consistent() -> None:
    """tools/published_logs.yaml: every row names its source, run and report, and a label estimate with its method."""
    import re

    import yaml

    from visionbatch.devices.catalog import find_target

    tool = _bench_published()
    rows = yaml.safe_load((ROOT / "tools" / "published_logs.yaml").read_text(encoding="utf-8"))["rows"]
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        source, data, labels = row["source"], row["dataset"], row["labels"]
        assert source["url"] or source.get("index_file_id"), row["id"]  # a link, or the index id and the log's quote
        assert source["url"] is None or source["url"].startswith("https://github.com/") and source["commit"] in source["url"]
        assert source["url"] or row["version"] in source["quote"] and row["gpu"]["name"] in source["quote"]
        assert row["unit"] == tool.gpu_mem_unit(row["version"]), row["id"]
        assert row["older"] == (tool.parse_version(row["version"]) < (8, 3, 0)), row["id"]
        assert find_target(row["gpu"]["target"]).key == row["gpu"]["target"]
        assert re.fullmatch(r"(yolov8|yolo11)[nslmx](-seg)?", row["model"]), row["id"]
        assert row["task"] == ("segment" if row["model"].endswith("-seg") else "detect"), row["id"]
        assert row["imgsz"] % 32 == 0 and row["batch"] >= 1 and isinstance(row["amp"], bool)
        card_bytes = row["gpu"]["memory_mib"] * 2**20  # reserved memory cannot exceed the card
        assert row["gpu_mem"] and all(0 < tool.printed_bytes(v, row["unit"]) < card_bytes for v in row["gpu_mem"])
        args = row["train_args"]
        assert row["mosaic_in_epoch_1"] == (tool.mosaic_epochs(row["version"], args) > 0), row["id"]
        assert 0 <= data["train_backgrounds"] < data["train_images"] and data["classes"] >= 1
        assert data["val_instances"] >= data["val_images"] - data["val_backgrounds"] > 0
        assert labels["mean_per_labelled_image"] >= 1 and len(labels["method"]) > 40
        assert labels["shape"] in ("estimated", "coco128")
    target = [row for row in rows if not row["older"]]
    assert len(target) >= 15 and sum(row["task"] == "segment" for row in target) >= 4


def test_bench_published_pure_parts() -> None:
    tool = _bench_published()
    assert [tool.gpu_mem_unit(v) for v in ("8.0.2", "8.3.75", "8.3.76", "8.4.190")] == ["GB", "GB", "GiB", "GiB"]
    assert tool.printed_bytes(2.0, "GiB") == 2 * 2**30 and tool.printed_bytes(2.43, "GB") == 2_430_000_000
    assert tool.error_fraction(2_300, 2_000) == 0.15 and tool.error_fraction(1_900, 2_000) == -0.05
    # the stand-in histogram: backgrounds first, then 1 + a negative binomial of mean (mean - 1) at evenly spaced
    # quantiles, coco128's variance / mean by default (a long tail), 1 + Poisson(mean - 1) at a ratio of 1
    assert tool.label_counts({"mean_per_labelled_image": 3.0}, 12, 2) == [0, 0, 1, 1, 1, 1, 1, 1, 2, 3, 5, 11]
    assert tool.label_counts({"mean_per_labelled_image": 3.0}, 12, 2, dispersion=1.0) == \
        [0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 6]
    assert tool.COUNT_DISPERSION == 9.386
    counts = tool.label_counts({"mean_per_labelled_image": 8.579}, 2285, 0)  # the stand-in keeps the row's mean
    assert abs(sum(counts) / len(counts) - 8.579) < 0.01 and max(counts) == 73
    assert all(0 <= v <= 1 for box in tool.box_layout(7) for v in box) and len(tool.box_layout(7)) == 7

    def result(row_id, task, predicted, version="8.3.40", val=None):
        return tool.Result(row_id, "Tesla T4", version, "yolo11n", task, 640, 16, 1.0, 4, 1000, predicted, 1200, val,
                           tool.parse_version(version) >= (8, 3, 0), 1.0)

    results = [result("a", "detect", 1040), result("b", "detect", 900, val=1300), result("c", "detect", 1010),
               result("d", "segment", 1200), result("e", "detect", 500, version="8.0.2")]
    summary = tool.summarize(results)
    assert summary["detect"] == tool.Summary(3, 0.04, -0.1, "b")
    assert summary["segment"] == tool.Summary(1, 0.2, 0.2, "d") and summary["all"].rows == 4
    assert summary["older"] == tool.Summary(1, 0.5, -0.5, "e")
    later = tool.summarize(results, later=True)  # the largest epoch (1200) against max(train, val)
    assert later["detect"] == tool.Summary(3, round(1 - 1040 / 1200, 6), round(1010 / 1200 - 1, 6), "c")
    # close_mosaic as the log's version ran it: `==` up to 8.3 (epochs < close_mosaic never closes), `>=` in 8.4.190
    short, long = {"epochs": 3, "close_mosaic": 10, "mosaic": 1.0}, {"epochs": 20, "close_mosaic": 10, "mosaic": 1.0}
    assert [tool.mosaic_epochs(v, a) for v in ("8.3.149", "8.4.190") for a in (short, long)] == [3, 10, 0, 10]
    assert tool.mosaic_epochs("8.3.57", {"epochs": 10, "close_mosaic": 10}) == 0
    assert tool.mosaic_epochs("8.3.57", short | {"mosaic": 0.0}) == 0
    assert tool.standin_train_args({"version": "8.3.149", "train_args": short}) == short | {"close_mosaic": 0}
    wheels = {(8, 3, 0): Path("a.whl"), (8, 3, 57): Path("b.whl"), (8, 4, 1): Path("c.whl")}
    assert [tool.assigner_wheel(v, wheels) for v in ("8.3.3", "8.3.149", "8.4.37", "8.2.3")] == \
        [Path("a.whl"), Path("b.whl"), None, None]
    rows = [{"id": "x"}, {"id": "y"}]
    assert tool.select_rows(rows, ["2", "x"]) == [{"id": "y"}, {"id": "x"}] and tool.select_rows(rows, None) == rows
    with pytest.raises(SystemExit, match="no such row"):
        tool.select_rows(rows, ["z"])


def test_bench_published_runs_the_log_versions_assigner(tmp_path: Path) -> None:
    """--wheels: inside the context the detection loss builds the wheel's TaskAlignedAssigner; after it, the installed one."""
    import zipfile

    import ultralytics.utils.loss as loss_module

    tool = _bench_published()
    wheel = tmp_path / "ultralytics-8.3.57-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:  # a stand-in for the old wheel: only its tal.py is read
        archive.writestr("ultralytics/utils/tal.py", "import torch.nn as nn\nfrom .checks import check_version\n"
                         "class TaskAlignedAssigner(nn.Module):\n"
                         "    def __init__(self, topk=13, num_classes=80, alpha=1.0, beta=6.0, eps=1e-9):\n"
                         "        super().__init__()\n        self.generation = ('8.3', topk, num_classes)\n")
    installed = loss_module.TaskAlignedAssigner
    assert tool.wheel_versions(tmp_path) == {(8, 3, 57): wheel}
    with tool.log_version_assigner(tool.assigner_wheel("8.3.149", tool.wheel_versions(tmp_path))) as used:
        assigner = loss_module.TaskAlignedAssigner(topk=10, num_classes=2, alpha=0.5, beta=6.0, stride=[8.0], topk2=10)
        assert used == wheel and assigner.generation == ("8.3", 10, 2)
    assert loss_module.TaskAlignedAssigner is installed
    with tool.log_version_assigner(None) as used:
        assert used is None and loss_module.TaskAlignedAssigner is installed


def test_bench_published_standin_follows_the_estimate(tmp_path: Path) -> None:
    """The stand-in dataset has the row's classes, image counts and label histogram, as boxes or polygons."""
    tool = _bench_published()
    row = {"task": "segment", "dataset": {"classes": 3, "train_images": 9, "train_backgrounds": 2, "val_images": 4,
                                          "val_backgrounds": 1},
           "labels": {"mean_per_labelled_image": 2.5, "shape": "estimated"}}
    data_yaml = tool.build_standin(row, tmp_path)
    train = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    lines = [[line.split() for line in path.read_text().splitlines()] for path in train]
    assert [len(image) for image in lines] == tool.label_counts(row["labels"], 9, 2)
    assert all(len(obj) == 17 and int(obj[0]) < 3 for image in lines for obj in image)  # class + 8 (x, y) points
    assert len(list((tmp_path / "images" / "val").glob("*.png"))) == 4
    assert "  2: class2" in data_yaml.read_text()
    # the density model's objects for the estimate are what the dataset reader takes from these files
    from visionbatch.dataset import load_dataset

    read = load_dataset(data_yaml).train.objects
    made = tool.standin_objects(2.5, 9, 2)
    assert [(o.width, o.height, o.count) for o in read] == [(o.width, o.height, o.count) for o in made]
    assert max(abs(a - b) for o, m in zip(read, made) for a, b in zip(o.boxes, m.boxes)) < 1e-5  # 5 decimals written


def _published_row(**changes):
    row = {"id": "r", "version": "8.3.149", "task": "detect", "imgsz": 640, "batch": 16,
           "train_args": {"epochs": 3, "close_mosaic": 10, "mosaic": 1.0},
           "dataset": {"train_images": 878, "train_backgrounds": 15},
           "instances_last_batch": [20, 28, 20], "labels": {"mean_per_labelled_image": 1.081, "shape": "estimated"}}
    return row | changes


def test_bench_published_label_estimate_pure_parts() -> None:
    """The last-batch rule: images in the last batch, the observed mean per mosaic image, the solved mean."""
    tool = _bench_published()
    assert [tool.last_batch_images(n, b) for n, b in ((878, 16), (92, 16), (64, 16), (4, 16), (12861, 20))] == \
        [14, 12, 16, 4, 1]
    row = _published_row()
    assert tool.mosaic_last_batches(row) == [20, 28, 20]
    # 8.3.58, epochs 15, close_mosaic 10: mosaic in epochs 1-5 only; epochs = close_mosaic: never
    assert tool.mosaic_last_batches(row | {"version": "8.3.58", "train_args": {"epochs": 15, "close_mosaic": 10},
                                           "instances_last_batch": [9, 8, 7, 6, 5, 4, 3]}) == [9, 8, 7, 6, 5]
    assert tool.mosaic_last_batches(row | {"train_args": {"epochs": 10, "close_mosaic": 10}}) == []
    assert tool.observed_per_image([20, 28, 20], 14) == 68 / 42
    assert tool.observed_per_image([428, 342, 360], 12) == 1130 / 36
    assert tool.solve_mean(lambda m: 2 * m, 3.0, 1.0) == 1.5  # one proportional step lands on it
    assert abs(tool.solve_mean(lambda m: 1.5 * m + 0.25, 7.0, 9.0) - 4.5) <= 0.005 * 4.5  # from above, bisection
    assert tool.solve_mean(lambda m: 4 * m, 2.0, 1.5) == 1.0  # floor: a labelled image carries at least one

    # a model giving 2 labels per mosaic image per labelled image's label: 878 mod 8 = 6 images, 60 / 12 = 5 -> 2.5
    estimate = tool.estimate_labels(row | {"batch": 8, "instances_last_batch": [30, 30]}, modelled=lambda m: 2 * m)
    assert (estimate.mean, estimate.rule) == (2.5, "last batches")
    assert "60 instances in 2 mosaic epochs x 6 images = 5.000 per mosaic image" in estimate.how
    estimate = tool.estimate_labels(row | {"instances_last_batch": [21, 21, 21]}, modelled=lambda m: 2 * m)
    assert estimate.mean == 1.0  # 63 / 42 = 1.5 per image would need 0.75: a labelled image carries at least one
    for kept in (row | {"train_args": {"epochs": 10, "close_mosaic": 10}},  # mosaic off in every listed epoch
                 row | {"labels": {"mean_per_labelled_image": 3.25, "shape": "coco128"}},  # real labels
                 row | {"instances_last_batch": []}):
        estimate = tool.estimate_labels(kept, modelled=lambda m: 1 / 0)
        assert estimate.rule == "validation line" and estimate.mean == kept["labels"]["mean_per_labelled_image"]


def test_bench_published_label_estimate_through_the_density_model() -> None:
    """A tiny stand-in (8 images, 1 background) through visionbatch's own density model: the solved mean makes the
    modelled labels per mosaic image meet the observed 27 / (3 x 2) = 4.5 (the model's steps on 7 labelled images
    leave it at 4.470; 4.469 with session 4's Poisson stand-in)."""
    tool = _bench_published()
    assert [round(tool.modelled_mosaic_mean(m, 8, 1, 640, False), 4) for m in (1.0, 2.0)] == [2.0422, 2.8518]
    assert round(tool.modelled_mosaic_mean(2.0, 8, 1, 640, False, dispersion=1.0), 4) == 3.2285
    row = _published_row(batch=3, dataset={"train_images": 8, "train_backgrounds": 1}, instances_last_batch=[9, 8, 10],
                         labels={"mean_per_labelled_image": 1.5, "shape": "estimated"})
    estimate = tool.estimate_labels(row)
    assert (estimate.mean, estimate.rule) == (3.461, "last batches")
    assert "the density model gives 4.470 at mean 3.461" in estimate.how and "modelled 2.392" in estimate.how
    estimate = tool.estimate_labels(row, dispersion=1.0)
    assert "the density model gives 4.469 at mean 3.188" in estimate.how and "modelled 2.663" in estimate.how


# -- tools/gpu_check.py: the GPU calibration, exercised on its simulated device ------------------------


def _gpu_check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def gpu_check_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One --simulate run (real CPU trace and real Ultralytics training, a memory law for the GPU), with
    Phase B bounded to 60 of the simulated GPU seconds its units stand for."""
    from conftest import copy_shapes

    folder = tmp_path_factory.mktemp("gpu_check")
    data = copy_shapes(folder / "shapes", dense=False)
    proc = _gpu_check("--simulate", "--data", str(data), "--out", str(folder / "out"), "--phase-seconds", "B=60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 failed, 0 over their limit, 0 cut" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    return folder / "out"


def _gpu_check_tools():
    """tools/gpu_check*.py as modules, registered so that their dataclasses resolve their annotations."""
    import importlib

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return tuple(importlib.import_module(name) for name in ("gpu_check", "gpu_check_report", "gpu_check_runner",
                                                                "gpu_check_devices"))
    finally:
        sys.path.remove(str(ROOT / "tools"))


def _gpu_check_phase_d():
    import importlib

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module("gpu_check_phase_d")
    finally:
        sys.path.remove(str(ROOT / "tools"))


def test_gpu_check_simulated_run_measures_every_phase(gpu_check_run: Path) -> None:
    import json

    tool, _, runner, devices = _gpu_check_tools()
    calibration = json.loads((gpu_check_run / "calibration.json").read_text())
    shipped = json.loads((ROOT / "visionbatch" / "data" / "calibration.json").read_text())
    # the simulated device's allocator: reserved = 1.1 x allocated + 30 MiB; 8 + 48 MiB of workspaces; 520 MiB context
    assert calibration["status"] == "calibrated" and calibration["measured_on"].startswith("SIMULATED")
    assert calibration["reserved_over_allocated"] == 1.1 and abs(calibration["reserved_extra_bytes"] - 30 * 2**20) < 8  # int() rounding
    assert calibration["workspace_bytes"] == 56 * 2**20 and calibration["round_bytes"] == 512
    assert calibration["context_bytes"] == {**shipped["context_bytes"], "hopper": 520 * 2**20}
    results = json.loads((gpu_check_run / "results.json").read_text())
    assert [p["config"] for p in results["points"]] == ["yolo11n-detect-640"] * 2
    assert all(p["traced_allocated"] > 0 for p in results["points"])  # the CPU trace ran for real
    # Phase C trained for real (Ultralytics on the CPU): a mosaic epoch, then close_mosaic's, each validated
    epochs = results["epochs"]["epochs"]
    assert [(e["epoch"], e["mosaic"]) for e in epochs] == [(1, True), (2, False)]
    reserved = devices.simulated_step("yolo11n.yaml", "detect", 640, 4, "train")[1]
    assert [e["train"]["reserved"] for e in epochs] == [reserved, int(reserved * 1.04)]
    assert epochs[0]["val"]["reserved"] == devices.simulated_step("yolo11n.yaml", "detect", 640, 8, "val")[1]
    report = (gpu_check_run / "report.md").read_text()
    assert report.startswith("# GPU check: SIMULATED") and "never record them" in report
    assert "| 1 | on |" in report and "| 2 | off |" in report


def test_gpu_check_phase_b_stops_at_its_time_bound(gpu_check_run: Path) -> None:
    """The bound is checked against the GPU seconds each unit stands for: what ran fits in 60, the next did not."""
    import json

    tool, report, runner, _ = _gpu_check_tools()
    results = json.loads((gpu_check_run / "results.json").read_text())
    state = json.loads((gpu_check_run / "state.json").read_text())["units"]
    gpu_units = [record["kind"] for key, record in state.items() if key.startswith("B/")
                 and record["kind"] in ("fit", "autobatch", "trial")]
    used = sum(runner.SIMULATED_S[kind] for kind in gpu_units)
    phase = results["phases"]["B"]
    assert phase["used_s"] == used <= 60 and phase["skipped"]
    first_skipped = phase["skipped"][0].split("/")[1]
    assert runner.SIMULATED_S[first_skipped] > 60 - used
    first = results["cases"][0]
    assert first["case"] == report.case_key(tool.CASES[0]) and first["fit"] and first["autobatch"]
    trained = {t["batch"] for t in first["trials"]}
    assert {first["fit"]["batch"], first["autobatch"]["batch"]} <= trained and len(trained) >= 3
    low, high = first["true_max"]["low"], first["true_max"]["high"]
    assert all((t["batch"] <= low) != t["oom"] for t in first["trials"]) and low < (high or 10**6)
    assert "stopped at its time bound" in (gpu_check_run / "report.md").read_text()


def test_gpu_check_phase_d_recovers_from_out_of_memory_and_reuses_the_plan(gpu_check_run: Path) -> None:
    """Phase D on the simulated card: real Ultralytics training capped at epoch 2 below its batch recovers with the
    effective batch kept, and the plan cache's second fit is reused under a key built the same twice."""
    import json

    phase_d = _gpu_check_phase_d()
    results = json.loads((gpu_check_run / "results.json").read_text())
    run, law = results["recovery"], phase_d.LawMemory("yolo11n.yaml", 320)
    assert run["simulated"] and run["completed"] and run["error"] is None
    assert run["cap_bytes"] == phase_d.cap_bytes(law.need(0), law.need(4)) and run["epoch1_peak_reserved_bytes"] == law.need(4)
    # 8 images at batch 4, 3 epochs: accumulate 6 (Ultralytics' cap), effective 24. The message names the whole
    # card, so each recovery steps down by one to a divisor of 24: 4 -> 3 (needs more than the cap) -> 2 (fits)
    assert [(r["epoch"], r["iteration"], r["old_batch"], r["new_batch"], r["new_accumulate"], r["effective_batch"])
            for r in run["recoveries"]] == [(2, 0, 4, 3, 8, 24), (2, 0, 3, 2, 12, 24)]
    assert all(r["resumed_from"] == "weights/last.pt (epoch 1 complete)" for r in run["recoveries"])
    for recovery, reading in zip(run["recoveries"], run["oom_readings"]):  # torch's 2-decimal sizes: within 1%
        assert abs(recovery["peak_bytes"] / (law.need(recovery["old_batch"]) + law.context_bytes) - 1) < 0.01
        assert abs(reading["allowed_bytes"] / run["cap_bytes"] - 1) < 0.01 and reading["total_bytes"] > 100 << 30
    assert [(e["epoch"], e["batch"], e["accumulate"], e["mosaic"]) for e in run["epochs"]] == \
        [(1, 4, 6, True), (2, 2, 12, True), (3, 2, 12, False)]
    assert run["effective_batch"] == 24 and run["effective_kept"]
    cache = results["plan_cache"]
    assert cache["key_stable"] and cache["keys"][0] == cache["keys"][1] and cache["device_key"]["kind"] == "cpu"
    first, second = cache["fits"]
    assert first["reused"] is None and second["reused_key"] == cache["keys"][0] and second["batch"] == first["batch"]
    assert cache["reused"] and cache["entries"] == 1
    state = json.loads((gpu_check_run / "state.json").read_text())["units"]
    assert sorted(key for key in state if key.startswith("D/")) == ["D/cache/yolo11n-detect-320",
                                                                     "D/oom/yolo11n-detect-320/b4"]
    report = (gpu_check_run / "report.md").read_text()
    assert "## Out-of-memory recovery on the device (Phase D)" in report and "| 2 | on | 2 | 12 | 24 |" in report
    assert "## The plan cache on the device (Phase D)" in report and "reused, same batch, same key" in report


def test_gpu_check_rerun_resumes_where_the_last_one_stopped(gpu_check_run: Path, tmp_path: Path) -> None:
    import json
    import shutil

    out = tmp_path / "out"
    shutil.copytree(gpu_check_run, out)
    before = json.loads((out / "state.json").read_text())
    data = before["settings"]["data"]
    proc = _gpu_check("--simulate", "--data", data, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((out / "state.json").read_text())
    assert all(after["units"][key] == record for key, record in before["units"].items())  # nothing ran twice
    assert f"{len(before['units'])} reused" in proc.stdout
    new = set(after["units"]) - set(before["units"])
    assert any(key.startswith("B/fit/") for key in new) and not any(key[0] in "ACD" for key in new)
    assert _gpu_check("--simulate", "--fraction", "0.8", "--data", data, "--out", str(out)).returncode == 2


def test_gpu_check_refuses_without_a_gpu(tmp_path: Path) -> None:
    """Asserted on every machine: a GPU machine hides its GPUs from the script (CUDA_VISIBLE_DEVICES empty)."""
    proc = _gpu_check("--out", str(tmp_path / "out"), env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gpu_check: no CUDA GPU here")
    assert not (tmp_path / "out").exists()


def test_gpu_check_fits_the_allocator_law_exactly() -> None:
    tool = _gpu_check_tools()[0]
    rows = [{"ok": True, "allocated": a, "reserved": int(1.1 * a) + 30 * 2**20} for a in (1 << 30, 2 << 30, 5 << 30)]
    rows.append({"ok": False, "allocated": None, "reserved": None})  # a step that ran out of memory
    device = {"name": "NVIDIA H200", "arch": "hopper", "driver": "580.1", "torch": "2.11.0", "cuda": "13.0"}
    constants = {"round_bytes": 512, "cublas_workspace_bytes": 8 << 20, "cudnn_workspace_bytes": 40 << 20,
                 "context_bytes": 505 << 20}
    base = {"status": "uncalibrated", "context_bytes": {"hopper": 1, "ampere": 2}, "workspace_bytes": 0}
    fitted = tool.fit_calibration(base, device, constants, rows, "2026-11-30")
    assert fitted["reserved_over_allocated"] == 1.1 and abs(fitted["reserved_extra_bytes"] - 30 * 2**20) <= 1
    assert fitted["context_bytes"] == {"hopper": 505 << 20, "ampere": 2} and fitted["workspace_bytes"] == 48 << 20
    assert (fitted["status"], fitted["measured_on"], fitted["date"], fitted["driver"], fitted["torch"]) == (
        "calibrated", "NVIDIA H200", "2026-11-30", "580.1", "2.11.0")
    with pytest.raises(ValueError, match="fewer than two"):
        tool.fit_calibration(base, device, constants, rows[:1], "2026-11-30")


@pytest.mark.parametrize("true_max, first, guess", [(37, (35, 52), 36), (37, (35, 52), None), (160, (100,), 300),
                                                     (0, (4,), None), (90, (12, 150), 12), (59, (60,), 58)])
def test_gpu_check_search_finds_the_true_maximum(true_max: int, first: tuple, guess: int | None) -> None:
    """The true-max search on a card where batches up to `true_max` fit: after the planners' own batches
    (`first`), a trial at fit's curve's guess, then halving, to the exact batch in few trials."""
    tool, report, _, _ = _gpu_check_tools()
    bracket = report.bracket

    trials = [{"card_gib": 8, "batch": b, "oom": b > true_max} for b in first]
    while (batch := tool.next_batch(*bracket(trials, 8), guess, 160)) is not None:
        assert batch not in {t["batch"] for t in trials}
        trials.append({"card_gib": 8, "batch": batch, "oom": batch > true_max})
    low, high = bracket(trials, 8)
    assert low == true_max and high == (None if true_max == 160 else true_max + 1)
    assert len(trials) <= len(first) + 1 + 8  # log2(160) halvings, and the guess


def test_gpu_check_examples_run() -> None:
    import doctest

    for module in (*_gpu_check_tools(), _gpu_check_phase_d()):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_bench_infer_repeat_rows_and_policies() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_infer_repeat", ROOT / "tools" / "bench_infer_repeat.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    plan = {"batch_size": 1, "queue_delay_ms": 0.0, "bench_wall_s": 31.2,
            "measurements": [{"batch_size": 1, "throughput_per_s": 49.0, "throughput_low_per_s": 47.9,
                              "throughput_high_per_s": 50.3}],
            "simulated": {"latency_p99_ms": 61.04, "utilisation": 0.816}, "replayed": [{"latency_p99_ms": 70.0}],
            "earlier": {"kept": True, "why": "84% busy", "alone_batch_size": 2, "alone_queue_delay_ms": 25.0}}
    assert tool.policy(plan) == "1 (0 ms)" and tool.policy({"batch_size": None}) == "none"
    assert tool.row("kept", 4, plan) == ("| 4 | kept | 1 (0 ms) | 49.0 (47.9-50.3) | 61.0 (82%) | 70.0 | "
                                         "2 (25 ms); kept: 84% busy | 31 s |")
    assert tool.row("alone", 1, {**plan, "earlier": None}).endswith("| 70.0 | - | 31 s |")
    assert tool.row("kept", 1, {"error": ["boom"], "wall_s": 1}) == "| 1 | kept | error: boom | | | | | |"
