"""visionbatch.values and visionbatch.checks: key=value parsing, batch requests, and refusals with suggestions."""

from __future__ import annotations

import pytest

from visionbatch.checks import (
    MAX_BYTES,
    check_fraction,
    check_imgsz,
    check_labels_per_image,
    check_seed,
    finite_number,
    whole_number,
)
from visionbatch.devices.parse import check_device
from visionbatch.errors import ConfigError
from visionbatch.text import shown, suggest
from visionbatch.ultralytics.args import check_train_args
from visionbatch.units import parse_bytes
from visionbatch.values import parse_batch, parse_pairs, smart_value


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


# -- hostile numbers: one parse per value, one line per refusal -----------------------------------


@pytest.mark.parametrize("text, value", [
    ("0x10", "0x10"), ("0o17", "0o17"), ("0b1", "0b1"), ("--5", "--5"), ("-+5", "-+5"), ("1j", "1j"), ("1+2j", "1+2j"),
    ("(0x10, 2)", "(0x10, 2)"), ("1e400", "1e400"), ("-1e400", "-1e400"), ("1e", "1e"), ("nan", "nan"),
    ("-2", -2), ("+3", 3), ("1_000", 1000), (".5", 0.5), ("5.", 5.0), ("1e-400", 0.0), ("[1, -2.5]", [1, -2.5]),
    ("320,640", (320, 640)),
])
def test_smart_value_reads_decimal_numbers_only(text: str, value) -> None:
    """Ultralytics reads 0x10 as 16 and --5 as 5, and 1e400 as inf; here they stay text, to be refused by name."""
    assert smart_value(text) == value and type(smart_value(text)) is type(value)


def test_shown_keeps_messages_to_one_short_line() -> None:
    assert shown((320, 640)) == "320,640"
    assert shown(10**40) == "10000000000000000000...(41 characters)"
    assert shown(float("inf")) == "inf"


@pytest.mark.parametrize("value, kwargs, message", [
    (float("inf"), {"above": 0}, "fps=inf is not a finite number: use a number > 0, e.g. fps=25"),
    (float("nan"), {"above": 0}, "fps=nan is not a finite number: use a number > 0, e.g. fps=25"),
    ("1e400", {"above": 0}, "fps=1e400 is not a finite number: use a number > 0, e.g. fps=25"),
    (10**400, {}, "fps=10000000000000000000...(401 characters) is not a finite number: use a finite number, "
                  "e.g. fps=25"),
    (True, {"above": 0}, "fps=True is not a number: use a number > 0, e.g. fps=25"),
    ([25], {"above": 0}, "fps=25 is not a number: use a number > 0, e.g. fps=25"),
    ("25fps", {"above": 0}, "fps=25fps is not a number: use a number > 0, e.g. fps=25"),
    (None, {"above": 0}, "fps=None is not a number: use a number > 0, e.g. fps=25"),
    (-0.0, {"above": 0}, "fps=-0.0 is impossible: use a number > 0, e.g. fps=25"),
    (0.5, {"minimum": 1, "maximum": 60}, "fps=0.5 is impossible: use a number from 1 to 60, e.g. fps=25"),
    (61, {"above": 0, "maximum": 60}, "fps=61 is impossible: use a number > 0 and <= 60, e.g. fps=25"),
])
def test_finite_number_refuses(value, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        finite_number(value, "fps", example="fps=25", **kwargs)
    assert str(info.value) == message


def test_finite_number_accepts() -> None:
    assert finite_number(25, "fps", example="fps=25", above=0) == 25.0
    assert finite_number(10**30, "gain", example="gain=1") == 1e30  # finite: bounds are the caller's
    assert finite_number(60, "fps", example="fps=25", above=0, maximum=60) == 60.0


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {}, "epochs=0 is impossible: use an integer >= 1, e.g. epochs=100"),
    (-0.0, {}, "epochs=-0.0 is impossible: use an integer >= 1, e.g. epochs=100"),
    (10**30, {}, "epochs=1000000000000000000000000000000 is impossible: use an integer from 1 to 2147483647, "
                 "e.g. epochs=100"),
    (1e30, {}, "epochs=1e+30 is impossible: use an integer from 1 to 2147483647, e.g. epochs=100"),
    (1.5, {}, "epochs=1.5 is not a whole number: use an integer >= 1, e.g. epochs=100"),
    (float("inf"), {}, "epochs=inf is not a finite number: use an integer >= 1, e.g. epochs=100"),
    (float("nan"), {}, "epochs=nan is not a finite number: use an integer >= 1, e.g. epochs=100"),
    ("1e400", {}, "epochs=1e400 is not a finite number: use an integer >= 1, e.g. epochs=100"),
    ("0x10", {}, "epochs=0x10 is not a whole number: use an integer >= 1, e.g. epochs=100"),
    (False, {}, "epochs=False is not a whole number: use an integer >= 1, e.g. epochs=100"),
    ((1, 2), {}, "epochs=1,2 is not a whole number: use an integer >= 1, e.g. epochs=100"),
    (11, {"maximum": 10}, "epochs=11 is impossible: use an integer from 1 to 10, e.g. epochs=100"),
    (-(10**30), {"minimum": None}, "epochs=-1000000000000000000000000000000 is impossible: use an integer "
                                   ">= -2147483648, e.g. epochs=100"),
    (5, {"fix": "give one"}, None),
])
def test_whole_number(value, kwargs: dict, message: str | None) -> None:
    if message is None:
        assert whole_number(value, "epochs", example="epochs=100", **kwargs) == 5
        return
    with pytest.raises(ConfigError) as info:
        whole_number(value, "epochs", example="epochs=100", **kwargs)
    assert str(info.value) == message


def test_whole_number_accepts_integral_floats_as_ultralytics_does() -> None:
    assert whole_number(1e2, "epochs", example="epochs=100") == 100
    assert whole_number(2**31 - 1, "epochs", example="epochs=100") == 2**31 - 1
    assert whole_number(-5, "save_period", example="save_period=-1", minimum=None) == -5


@pytest.mark.parametrize("value, message", [
    ("1e400", "memory_budget=1e400 is not a finite memory size: use e.g. memory_budget=4GiB or memory_budget=512MiB"),
    ("1e999GiB", "memory_budget=1e999GiB is not a finite memory size: use e.g. memory_budget=4GiB or "
                 "memory_budget=512MiB"),
    (float("nan"), "memory_budget=nan is not a finite memory size: use e.g. memory_budget=4GiB or "
                   "memory_budget=512MiB"),
    ("1e308GiB", "memory_budget=1e308GiB is impossible: more memory than any machine has (at most 1024TiB), "
                 "e.g. memory_budget=4GiB"),
    (10**30, "memory_budget=1000000000000000000000000000000 is impossible: more memory than any machine has "
             "(at most 1024TiB), e.g. memory_budget=4GiB"),
    (10**400, "memory_budget=10000000000000000000...(401 characters) is impossible: more memory than any "
              "machine has (at most 1024TiB), e.g. memory_budget=4GiB"),
    ("1025TiB", "memory_budget=1025TiB is impossible: more memory than any machine has (at most 1024TiB), "
                "e.g. memory_budget=4GiB"),
    ("-5GiB", "memory_budget=-5GiB is not a memory size: use e.g. memory_budget=4GiB, memory_budget=512MiB or bytes"),
    ("-1e400", "memory_budget=-1e400 is not a memory size: use e.g. memory_budget=4GiB, memory_budget=512MiB or "
               "bytes"),
    ("1e-400GiB", "memory_budget=1e-400GiB is impossible: a memory budget must be positive, e.g. memory_budget=4GiB"),
    (-0.0, "memory_budget=-0.0 is impossible: a memory budget must be positive, e.g. memory_budget=4GiB"),
    (True, "memory_budget=True is not a memory size: use e.g. memory_budget=4GiB or memory_budget=512MiB"),
    ([4, 2], "memory_budget=4,2 is not a memory size: use e.g. memory_budget=4GiB, memory_budget=512MiB or bytes"),
])
def test_parse_bytes_refuses(value, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bytes(value)
    assert str(info.value) == message


def test_parse_bytes_edges() -> None:
    assert parse_bytes("1024TiB") == MAX_BYTES == parse_bytes(MAX_BYTES)
    assert parse_bytes("1e-3GiB") == 1073741 and parse_bytes("2.GiB") == 2 * 2**30 and parse_bytes("1E3") == 1000
    with pytest.raises(ConfigError, match="target=1e400GiB is not a finite memory size"):
        parse_bytes("1e400GiB", key="target")


@pytest.mark.parametrize("value", [10**30, 65537, 1e30, float("inf"), float("nan"), 10**400, "0x10", -0.0],
                         ids=["1e30-int", "65537", "1e30", "inf", "nan", "400-digits", "hex", "-0.0"])
def test_parse_batch_refuses_huge_and_non_finite(value) -> None:
    with pytest.raises(ConfigError, match=r"^batch=.+? is (impossible: use a batch size|not a batch size: use an integer)"):
        parse_batch(value)


def test_parse_batch_edges() -> None:
    assert parse_batch(65536).batch_size == 65536 and parse_batch(-1.0).memory_fraction == 0.6


@pytest.mark.parametrize("value, message", [
    (16385, "imgsz=16385 is impossible: image size must be at most 16384 pixels (larger tensors overflow 32-bit "
            "indexing), e.g. imgsz=640"),
    (float("inf"), "imgsz=inf is not an image size: training uses one integer size in pixels, e.g. imgsz=640"),
    (10**400, "imgsz=10000000000000000000...(401 characters) is impossible: image size must be at most 16384 pixels "
              "(larger tensors overflow 32-bit indexing), e.g. imgsz=640"),
    (-(10**400), "imgsz=-1000000000000000000...(402 characters) is impossible: image size must be at least 32 "
                 "pixels (the model's largest stride), e.g. imgsz=640"),
])
def test_imgsz_bounds(value, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_imgsz(value)
    assert str(info.value) == message
    assert check_imgsz(16384) == 16384


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, "0.5", True])
def test_fraction_refuses_non_finite(value) -> None:
    with pytest.raises(ConfigError, match="is out of range: expected 0 < memory_fraction <= 1"):
        check_fraction(value)


def test_seed_and_labels_bounds() -> None:
    assert check_seed(2**32 - 1) == 2**32 - 1 and check_labels_per_image(100_000) == 100_000
    with pytest.raises(ConfigError, match="seed=4294967296 is impossible: use an integer from 0 to 4294967295"):
        check_seed(2**32)
    with pytest.raises(ConfigError, match="labels_per_image=100001 is impossible: use an integer from 1 to 100000"):
        check_labels_per_image(100_001)
    with pytest.raises(ConfigError, match="labels_per_image=True is not a whole number"):
        check_labels_per_image(True)


@pytest.mark.parametrize("args, message", [
    ({"epochs": True}, "epochs=True is not a whole number: use an integer >= 1, e.g. epochs=100"),
    ({"epochs": 1e30}, "epochs=1e+30 is impossible: use an integer from 1 to 2147483647, e.g. epochs=100"),
    ({"seed": float("nan")}, "seed=nan is not a finite number: use an integer from 0 to 4294967295, e.g. seed=0"),
    ({"lr0": float("inf")}, "lr0=inf is not a finite number: use a number from 0 to 1, e.g. lr0=0.01"),
    ({"cls": 1e30}, "cls=1e+30 is impossible: use a number from 0 to 1000, e.g. cls=0.5"),
    ({"warmup_epochs": -1}, "warmup_epochs=-1 is impossible: use a number from 0 to 2147483647, "
                            "e.g. warmup_epochs=3.0"),
    ({"shear": 90.5}, "shear=90.5 is impossible: use a number from -90 to 90, e.g. shear=0.0"),
    ({"time": 10**30}, "time=1000000000000000000000000000000 is impossible: time is the training budget in hours, "
                       "above 0 and at most 100000, e.g. time=0.5"),
    ({"freeze": 1.5}, "freeze=1.5 is not a whole number: use freeze=10 (the first 10 layers) or freeze=0,1,2 "
                      "(those layers), each from 0 to 1000"),
    ({"fraction": True}, "fraction=True is not a number: use a ratio 0 < fraction <= 1 (fraction=0.5), an image "
                         "count up to 2147483647 (fraction=100), or a list of those per split (fraction=0.5,0.5)"),
    ({"scale": (0.5, -1)}, "scale=-1 is impossible: scale is a fraction 0..1 (gain 1 +/- scale) or two gains >= 0, "
                           "e.g. scale=0.5 or scale=0.5,1.5"),
    ({"workers": float("-inf")}, "workers=-inf is not a finite number: use an integer >= 0, e.g. workers=8"),
])
def test_check_train_args_refuses_what_check_cfg_lets_through(args: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_train_args(args)
    assert str(info.value) == message
