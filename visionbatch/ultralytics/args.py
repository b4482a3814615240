"""Ultralytics' train arguments: its defaults, and the checks its own `check_cfg` leaves out.

Ultralytics' own arguments keep Ultralytics' meaning and its own type and range checks
(`ultralytics.cfg.check_cfg`); on top of those, visionbatch refuses values that Ultralytics would
accept and then fail on, or silently change (`imgsz=0`, `batch=0`, `workers=-1`, a CUDA device
that is not there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from visionbatch.checks import (
    MAX_BYTES,
    MAX_COUNT,
    MAX_FREEZE_LAYERS,
    check_imgsz,
    check_seed,
    finite_number,
    whole_number,
)
from visionbatch.devices.parse import check_device
from visionbatch.errors import ConfigError
from visionbatch.keys import check_keys
from visionbatch.ultralytics.offline import TASKS, offline


def ultralytics_defaults() -> dict[str, Any]:
    """Ultralytics' default arguments (`cfg/default.yaml`)."""
    with offline():
        from ultralytics.cfg import DEFAULT_CFG_DICT

        return dict(DEFAULT_CFG_DICT)



def check_train_args(args: Mapping[str, Any], extra_keys: Sequence[str] = (), command: str = "train") -> dict[str, Any]:
    """Check Ultralytics train arguments (plus `extra_keys` of visionbatch's) and return a copy.

    `batch` is checked by `parse_batch` and left out of Ultralytics' check; `task` must be one
    visionbatch trains.

    Raises:
        ConfigError: naming the argument, what is wrong and a valid example.
    """
    defaults = ultralytics_defaults()
    check_keys(args, set(defaults) | set(extra_keys), command)
    checked = dict(args)
    if "mode" in checked and checked["mode"] != "train":
        raise ConfigError(f"mode={checked['mode']}: visionbatch {command} trains; leave mode out")
    if "task" in checked and checked["task"] not in TASKS:
        raise ConfigError(f"task={checked['task']}: visionbatch trains {' or '.join(TASKS)}: use task=detect or task=segment")
    if "imgsz" in checked:
        checked["imgsz"] = check_imgsz(checked["imgsz"])
    _check_ultralytics_numbers(checked, defaults)
    if "device" in checked:
        check_device(checked["device"])
    ultralytics_part = {k: v for k, v in checked.items() if k in defaults and k != "batch"}
    with offline():
        from ultralytics.cfg import check_cfg

        try:
            check_cfg(ultralytics_part, hard=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError(_plain(str(exc))) from None
    checked.update(ultralytics_part)
    return checked



MAX_LOSS_GAIN = 1000.0  # ~100x Ultralytics' largest default gain (pose=12); far beyond, the loss turns inf/NaN



MAX_TIME_HOURS = 100_000.0  # `time=` budget: over eleven years of training



# Ultralytics' float keys that check_cfg gives no range: (minimum, maximum), both inclusive.
_FLOAT_RANGES: dict[str, tuple[float, float]] = {
    **{key: (0.0, MAX_LOSS_GAIN) for key in ("box", "cls", "dfl", "pose", "kobj", "dis", "rle", "angle", "dlog",
                                             "dgrad")},
    "warmup_epochs": (0.0, float(MAX_COUNT)),
    "degrees": (-360.0, 360.0),  # rotations drawn from +/- degrees: a turn covers them all
    "shear": (-90.0, 90.0),  # tan(shear) warps the image; at 90 degrees it is degenerate
    "workspace": (0.0, float(MAX_BYTES >> 30)),  # TensorRT workspace in GiB
}



_EXAMPLES = {"time": "time=0.5", "workspace": "workspace=4", "opset": "opset=17", "line_width": "line_width=2",
             "conf": "conf=0.25", "freeze": "freeze=10"}



def _check_ultralytics_numbers(args: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    """Refuse numbers Ultralytics' check_cfg lets through and then fails on, or silently misreads.

    check_cfg takes bools as numbers (`epochs=True`), NaN and infinities for keys without a range
    (`box=inf`), integers that overflow later (`seed=10**30` in numpy, `epochs=1e30`), and has no
    check for `freeze` (`freeze=10**30` builds a list that long) or a `mask_ratio` past the image.
    None is left to check_cfg, which knows the keys that allow it. `freeze=1,2` and
    `fraction=0.8,0.2` become the lists Ultralytics reads (its trainer ignores a tuple freeze,
    check_cfg refuses a tuple fraction).
    """
    with offline():
        from ultralytics.cfg import (
            CFG_FLOAT_KEYS,
            CFG_FRACTION_KEYS,
            CFG_INT_KEYS,
            CFG_INT_MIN,
        )

    minimums = {"workers": 0, "close_mosaic": 0, **CFG_INT_MIN}
    for key, value in args.items():
        if value is None or key in {"batch", "imgsz"}:
            continue
        default = defaults.get(key)
        example = _EXAMPLES.get(key, f"{key}={default}")
        if key == "seed":
            check_seed(value)
        elif key == "mask_ratio":
            imgsz = args.get("imgsz", defaults.get("imgsz", 640))
            whole_number(value, key, example="mask_ratio=4", maximum=imgsz,
                         fix=f"masks are imgsz / mask_ratio pixels: use an integer from 1 to imgsz ({imgsz}), "
                             f"e.g. mask_ratio=4")
        elif key == "freeze":
            args[key] = _check_freeze(value)
        elif key == "time":
            finite_number(value, key, example=example, above=0, maximum=MAX_TIME_HOURS,
                          fix=f"time is the training budget in hours, above 0 and at most {MAX_TIME_HOURS:.0f}, "
                              f"e.g. time=0.5")
        elif key == "fraction":
            args[key] = _check_dataset_fraction(value)
        elif key == "scale" and isinstance(value, (list, tuple)):
            for gain in value:
                finite_number(gain, key, example="scale=0.5", minimum=0,
                              fix="scale is a fraction 0..1 (gain 1 +/- scale) or two gains >= 0, e.g. scale=0.5 "
                                  "or scale=0.5,1.5")
        elif key in CFG_INT_KEYS:
            whole_number(value, key, example=example, minimum=minimums.get(key))
        elif key in CFG_FRACTION_KEYS or key == "scale":
            finite_number(value, key, example=example, minimum=0, maximum=1)
        elif key in CFG_FLOAT_KEYS:
            low, high = _FLOAT_RANGES.get(key, (None, None))
            finite_number(value, key, example=example, minimum=low, maximum=high)



def _check_freeze(value: Any) -> int | list[int]:
    """`freeze=N` (the first N layers) or `freeze=0,3` (those layers), as Ultralytics' trainer reads it."""
    fix = f"use freeze=10 (the first 10 layers) or freeze=0,1,2 (those layers), each from 0 to {MAX_FREEZE_LAYERS}"
    if isinstance(value, (list, tuple)):
        return [whole_number(v, "freeze", example="freeze=10", minimum=0, maximum=MAX_FREEZE_LAYERS,
                             fix=fix) for v in value]
    return whole_number(value, "freeze", example="freeze=10", minimum=0, maximum=MAX_FREEZE_LAYERS, fix=fix)



def _check_dataset_fraction(value: Any) -> Any:
    """Ultralytics' `fraction=`: a ratio 0 < f <= 1, an image count > 1, or [train, val(, test)] of those."""
    fix = (f"use a ratio 0 < fraction <= 1 (fraction=0.5), an image count up to {MAX_COUNT} (fraction=100), "
           f"or a list of those per split (fraction=0.5,0.5)")
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, int) and not isinstance(item, bool):
            whole_number(item, "fraction", example="fraction=100", minimum=0, fix=fix)
        else:
            finite_number(item, "fraction", example="fraction=0.5", minimum=0, maximum=1, fix=fix)
    return list(value) if isinstance(value, tuple) else value



def _plain(message: str) -> str:
    """Ultralytics' message without emoji and quotes around key=value."""
    return message.encode("ascii", "ignore").decode().strip().replace("'", "")
