"""Real (tiny) Ultralytics training through visionbatch: both tasks, offline, nothing overwritten."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import tree_digest

from visionbatch.errors import ConfigError
from visionbatch.train.run import SUMMARY_NAME, train
from visionbatch.ultralytics.job import prepare
from visionbatch.ultralytics.offline import cpu_count

pytestmark = pytest.mark.slow
TINY = {"epochs": 1, "imgsz": 64, "batch": 4, "plots": False, "val": True}


def _check_run(result, task: str, data_folder: Path, before: dict) -> dict:
    assert result.status == "completed"
    assert result.task == task
    save_dir = Path(result.save_dir)
    summary = json.loads((save_dir / SUMMARY_NAME).read_text())
    assert summary == result.to_dict()
    assert [e["epoch"] for e in summary["epochs"]] == list(range(1, result.args["epochs"] + 1))
    epoch = summary["epochs"][0]
    assert epoch["train_s"] > 0 and epoch["val_s"] > 0
    assert epoch["peak_rss_bytes"] > 100 * 2**20  # torch + a model: well over 100 MiB
    assert summary["batch_size"] == 4 and summary["batch_source"] == "batch=4"
    assert summary["cpu_threads"] == cpu_count()  # Ultralytics alone would use cpus - 1
    assert summary["versions"]["ultralytics"].startswith("8.4.")
    assert Path(result.best).is_file() and Path(result.last).is_file()
    assert tree_digest(data_folder) == before  # the dataset is untouched: not even a label cache appears
    return summary


def test_detect_trains_offline(small_shapes: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("ULTRALYTICS_API_KEY", "ul_user_key")  # hidden from Platform sync, then given back
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    touched = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "ULTRALYTICS_API_KEY")
    env = {k: os.environ.get(k) for k in touched}
    threads = torch.get_num_threads()
    before = tree_digest(small_shapes.parent)
    result = train(small_shapes, **{**TINY, "epochs": 2, "close_mosaic": 1})
    summary = _check_run(result, "detect", small_shapes.parent, before)
    assert [e["mosaic"] for e in summary["epochs"]] == [True, False]  # the last close_mosaic epochs drop it
    assert Path(result.save_dir) == workdir / "runs" / "detect" / "train"
    assert "metrics/mAP50-95(B)" in summary["final_metrics"]
    assert "train/box_loss" in summary["epochs"][0]["losses"]
    assert summary["args"]["model"] == "yolo11n.yaml"
    assert torch.get_num_threads() == threads  # restored after training
    assert {k: os.environ.get(k) for k in touched} == env


def test_segment_trains_offline(small_shapes: Path, workdir: Path) -> None:
    before = tree_digest(small_shapes.parent)
    result = train(small_shapes, task="segment", **TINY)
    summary = _check_run(result, "segment", small_shapes.parent, before)
    assert summary["args"]["model"] == "yolo11n-seg.yaml"
    assert "metrics/mAP50-95(M)" in summary["final_metrics"]
    assert "train/seg_loss" in summary["epochs"][0]["losses"]


def test_relative_path_beside_yaml_trains(small_shapes: Path, workdir: Path) -> None:
    """A `path:` Ultralytics would look up in its datasets_dir trains from a resolved copy."""
    folder = small_shapes.parent
    yaml_file = folder.parent / "moved.yaml"
    yaml_file.write_text(small_shapes.read_text() + f"path: {folder.name}\n")
    original = yaml_file.read_text()
    job = prepare(yaml_file, dict(TINY))
    assert job.dataset.root_from_yaml and any("resolved" in n for n in job.notes)
    result = train(yaml_file, **TINY)
    assert result.status == "completed"
    # Ultralytics read a copy in the run folder naming the mirror, whose links lead into the folder
    copy = yaml.safe_load((Path(result.save_dir) / "data.resolved.yaml").read_text())
    assert Path(copy["path"]).is_absolute() and Path(copy["train"]).is_relative_to(copy["path"])
    linked = [Path(line) for line in Path(copy["train"]).read_text().splitlines()]
    assert sorted(p.resolve() for p in linked) == sorted((folder / "images" / "train").resolve().iterdir())
    assert yaml_file.read_text() == original


def test_augcost_true_profiles_into_the_run_folder(small_shapes: Path, workdir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`augcost=True` profiles with the run's own arguments first; Ultralytics never sees the key."""
    import functools

    import visionbatch.augment

    quick = functools.partial(visionbatch.augment.training_callback, images=8, loader_workers=[0],
                              loader_cache="none", seconds=0.3, repeats=1, step_img_per_s=100.0)
    monkeypatch.setattr(visionbatch.augment, "training_callback", quick)
    before = tree_digest(small_shapes.parent)
    result = train(small_shapes, augcost=True, mosaic=0.5, **TINY)
    assert result.status == "completed" and "augcost" not in result.args
    save_dir = Path(result.save_dir)
    report = json.loads((save_dir / "augcost.json").read_text())
    assert report["save_dir"] == str(save_dir)
    assert (report["imgsz"], report["batch_size"], report["sizes"]) == (64, 4, [64, 32, 128])
    assert report["args"]["mosaic"] == 0.5 and report["args"]["epochs"] == 1
    assert [p["phase"] for p in report["phases"] if p["imgsz"] == 64] == ["close_mosaic", "val"]  # epochs <= 10
    assert report["step"]["source"] == "given"  # the CPU step is timed in test_augment.py
    assert report["verdict"]["bound"] in {"data", "compute"}
    assert (save_dir / "augcost.png").is_file()
    assert "augcost" not in yaml.safe_load((save_dir / "args.yaml").read_text())
    assert tree_digest(small_shapes.parent) == before


def test_augcost_must_be_a_switch(small_shapes: Path) -> None:
    with pytest.raises(ConfigError, match=r"augcost=3 is not a switch: use augcost=True or augcost=False"):
        prepare(small_shapes, {"augcost": 3})
