"""visionbatch.ultralytics (offline set-up that restores everything, models, tasks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from visionbatch.errors import ConfigError
from visionbatch.ultralytics.models import check_model, model_task
from visionbatch.ultralytics.offline import amp_supported, cpu_count, offline


def test_import_changes_nothing() -> None:
    """`import visionbatch` sets no environment variable and imports neither torch nor Ultralytics."""
    code = (
        "import json, os, sys; before = dict(os.environ); import visionbatch; "
        "print(json.dumps([dict(os.environ) == before, 'torch' in sys.modules, 'ultralytics' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [True, False, False]


def test_offline_patches_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    with offline():
        import ultralytics.utils as utils
        import ultralytics.utils.checks as checks
        import ultralytics.utils.torch_utils as torch_utils
    # a caller who imported Ultralytics online, with sync on and a Platform key in the environment
    monkeypatch.setattr(utils, "ONLINE", True)
    monkeypatch.setattr(checks, "AUTOINSTALL", True)
    monkeypatch.setitem(utils.SETTINGS, "sync", True)
    monkeypatch.setenv("ULTRALYTICS_API_KEY", "ul_key")
    settings_file = utils.SETTINGS.file.read_text()
    with offline():
        inside = (utils.ONLINE, checks.AUTOINSTALL, torch_utils.NUM_THREADS, utils.SETTINGS["sync"],
                  os.environ.get("ULTRALYTICS_API_KEY"), os.environ["YOLO_OFFLINE"])
        with offline():  # re-entrant: the inner exit restores nothing early
            pass
        assert utils.ONLINE is False
    assert inside == (False, False, cpu_count(), False, None, "1")
    after = (utils.ONLINE, checks.AUTOINSTALL, torch_utils.NUM_THREADS, utils.SETTINGS["sync"],
             os.environ.get("ULTRALYTICS_API_KEY"))
    assert after == (True, True, min(8, max(1, (os.cpu_count() or 1) - 1)), True, "ul_key")
    assert utils.SETTINGS.file.read_text() == settings_file  # settings changed in memory only


def test_offline_restores_after_an_error() -> None:
    import torch

    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), offline():
        torch.set_num_threads(1)
        raise RuntimeError("boom")
    assert torch.get_num_threads() == threads
    import ultralytics.engine.trainer as trainer

    assert trainer.check_amp.__module__ == "ultralytics.utils.checks"


@pytest.mark.parametrize("model, task", [
    ("yolo11n.yaml", "detect"), ("yolo11s-seg.yaml", "segment"), ("yolov8m-seg.yaml", "segment"),
    ("yolo11n-pose.yaml", "pose"),
])
def test_model_task(model: str, task: str) -> None:
    assert model_task(model) == task


@pytest.mark.parametrize("model, words", [
    ("yolo11n.pt", "never downloads weights: pass the path to a local .pt, or model=yolo11n.yaml for random weights$"),
    ("nope.pt", "never downloads weights: pass the path to a local .pt$"),  # no nope.yaml to point at
    ("nope/yolo11n.yaml", "no such model YAML"),
    ("http://example.com/x.pt", "never downloads"),
    ("model.onnx", "expected a model YAML"),
])
def test_check_model_refuses(model: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        check_model(model)


def test_local_checkpoint_accepted(tmp_path) -> None:
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"x")
    check_model(str(weights))


def test_amp_blocklist_matches_ultralytics() -> None:
    assert not amp_supported("NVIDIA GeForce GTX 1650")
    assert not amp_supported("Tesla T4".replace("T4", "T1000"))
    assert amp_supported("NVIDIA GeForce RTX 3060")
    assert amp_supported("Tesla T4")
