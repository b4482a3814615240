"""visionbatch.config: key=value parsing, batch requests, and refusals with suggestions."""

from __future__ import annotations

import pytest

from visionbatch.config import (
    check_device,
    check_imgsz,
    check_train_args,
    parse_batch,
    parse_pairs,
    smart_value,
    suggest,
)
from visionbatch.errors import ConfigError


@pytest.mark.parametrize(
    "text, value",
    [("16", 16), ("0.85", 0.85), ("True", True), ("false", False), ("none", None), ("auto", "auto"),
     ("[0, 1]", [0, 1]), ("yolo11n.yaml", "yolo11n.yaml"), ("1e2", 100.0), ("cuda:0", "cuda:0")],
)
def test_smart_value_matches_ultralytics(text: str, value) -> None:
    from ultralytics.cfg import smart_value as ultralytics_smart_value

    assert smart_value(text) == value == ultralytics_smart_value(text)


def test_parse_pairs_keeps_names_as_strings() -> None:
    assert parse_pairs(["epochs=3", "name=007", "project=1e3", "device=0,1"]) == {
        "epochs": 3, "name": "007", "project": "1e3", "device": (0, 1)}


@pytest.mark.parametrize("tokens, words", [
    (["epochs"], "not a key=value"),
    (["epochs="], "has no value"),
    (["=3"], "not a key=value"),
    (["epochs=3", "epochs=4"], "given twice"),
])
def test_parse_pairs_refuses(tokens, words) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_pairs(tokens)


@pytest.mark.parametrize("value, batch_size, fraction", [
    (16, 16, None), (1, 1, None), (16.0, 16, None),
    ("auto", None, 0.9), ("AUTO", None, 0.9), (0.85, None, 0.85), (-1, None, 0.6),
])
def test_parse_batch(value, batch_size, fraction) -> None:
    request = parse_batch(value)
    assert (request.batch_size, request.memory_fraction) == (batch_size, fraction)
    assert request.fit == (batch_size is None)


@pytest.mark.parametrize("value", [0, -2, 1.5, 1.0000001, "big", True, None, [16]])
def test_parse_batch_refuses_impossible(value) -> None:
    with pytest.raises(ConfigError, match=f"batch={value}"):
        parse_batch(value)


@pytest.mark.parametrize("value", [0, -640, 16, 31.5, "large", [640, 480], True])
def test_imgsz_refused(value) -> None:
    with pytest.raises(ConfigError, match="imgsz="):
        check_imgsz(value)


def test_imgsz_accepted() -> None:
    assert check_imgsz(32) == 32 and check_imgsz(640.0) == 640


def test_suggest_closest_key() -> None:
    keys = ["epochs", "imgsz", "batch", "workers"]
    assert suggest("epoch", keys) == " (did you mean 'epochs'?)"
    assert suggest("imsz", keys) == " (did you mean 'imgsz'?)"
    assert suggest("zzzz", keys) == ""


@pytest.mark.parametrize("args, words", [
    ({"epoch": 3}, "unknown argument 'epoch=3' (did you mean 'epochs'?)"),
    ({"epochs": -1}, "epochs=-1"),
    ({"epochs": 0}, "epochs=0"),
    ({"epochs": "many"}, "epochs=many"),
    ({"imgsz": 0}, "imgsz=0 is impossible"),
    ({"lr0": 3.0}, "lr0=3.0"),
    ({"workers": -1}, "workers=-1 is impossible"),
    ({"close_mosaic": -2}, "close_mosaic=-2 is impossible"),
    ({"time": 0}, "time=0 is impossible"),
    ({"task": "pose"}, "task=pose"),
    ({"mode": "val"}, "mode=val"),
    ({"amp": "fp8"}, "amp=fp8"),
    ({"device": "gpu"}, "device=gpu is not a device"),
])
def test_check_train_args_refuses(args, words) -> None:
    with pytest.raises(ConfigError) as info:
        check_train_args(args)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_check_train_args_passes_ultralytics_keys_through() -> None:
    args = {"epochs": 3, "imgsz": 320, "lr0": 0.02, "mosaic": 0.5, "cos_lr": True, "optimizer": "AdamW"}
    assert check_train_args(args) == args


def test_missing_cuda_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        check_device(0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("0,1")
    check_device("cuda:1")
    with pytest.raises(ConfigError, match=r"CUDA device 2 does not exist \(2 visible: 0, 1\)"):
        check_device("1,2")
    check_device("cpu")
    check_device(None)
