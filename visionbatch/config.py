"""Arguments: `key=value` tokens in, checked values out.

Ultralytics' own arguments keep Ultralytics' meaning and its own type and range checks
(`ultralytics.cfg.check_cfg`); on top of those, visionbatch refuses values that Ultralytics would
accept and then fail on, or silently change (`imgsz=0`, `batch=0`, `workers=-1`, a CUDA device
that is not there), and suggests the closest key for a misspelt one.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.ultralytics_compat import TASKS, offline

MIN_IMGSZ = 32  # the largest stride of a YOLO model: smaller images have no feature map left


def smart_value(text: str) -> Any:
    """A `key=value` value as Python: None, bools, numbers, lists, else the string itself.

    Mirrors Ultralytics' `cfg.smart_value` so values mean the same in both tools.

    Examples:
        >>> smart_value("16"), smart_value("0.85"), smart_value("true"), smart_value("auto")
        (16, 0.85, True, 'auto')
    """
    lowered = text.lower()
    if lowered == "none":
        return None
    if lowered in {"true", "false"}:
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_pairs(tokens: Iterable[str]) -> dict[str, Any]:
    """Parse `key=value` tokens; `name` and `project` stay strings, as in Ultralytics.

    Raises:
        ConfigError: a token is not `key=value`, has no value, or repeats a key.

    Examples:
        >>> parse_pairs(["epochs=3", "imgsz=320", "name=007"])
        {'epochs': 3, 'imgsz': 320, 'name': '007'}
    """
    pairs: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"'{token}' is not a key=value argument: write it as key=value, e.g. epochs=3")
        if not value:
            raise ConfigError(f"'{key}=' has no value: give one, e.g. {key}=<value>, or leave the key out")
        if key in pairs:
            raise ConfigError(f"'{key}' is given twice ({key}={pairs[key]!r} and {token}): keep one")
        pairs[key] = value if key in {"name", "project"} else smart_value(value)
    return pairs


def suggest(key: str, valid: Iterable[str]) -> str:
    """' (did you mean 'epochs'?)' for a misspelt key, else ''."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def ultralytics_defaults() -> dict[str, Any]:
    """Ultralytics' default arguments (`cfg/default.yaml`)."""
    with offline():
        from ultralytics.cfg import DEFAULT_CFG_DICT

        return dict(DEFAULT_CFG_DICT)


def check_keys(args: Mapping[str, Any], valid: Iterable[str], command: str) -> None:
    """Refuse keys that neither Ultralytics nor `command` knows."""
    valid = set(valid)
    for key, value in args.items():
        if key not in valid:
            raise ConfigError(
                f"unknown argument '{key}={value}'{suggest(key, valid)}: "
                f"see 'visionbatch {command} --help' for visionbatch's keys; every Ultralytics train key works too"
            )


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """What `batch=` asked for: a fixed size, or a fit to a fraction of device memory.

    Attributes:
        batch_size: the fixed batch size, or None to fit one.
        memory_fraction: the share of device memory to fit into, when fitting.
        source: the user's words, for messages (`batch=auto`).
    """

    batch_size: int | None
    memory_fraction: float | None
    source: str

    @property
    def fit(self) -> bool:
        return self.batch_size is None


DEFAULT_MEMORY_FRACTION = 0.9
ULTRALYTICS_AUTOBATCH_FRACTION = 0.6  # what Ultralytics' batch=-1 aims at


def parse_batch(value: Any) -> BatchRequest:
    """Read `batch=`: an int >= 1, `auto`, a fraction in (0, 1), or Ultralytics' -1.

    Examples:
        >>> parse_batch(16).batch_size, parse_batch("auto").memory_fraction, parse_batch(-1).memory_fraction
        (16, 0.9, 0.6)
    """
    source = f"batch={value}"
    if isinstance(value, str) and value.lower() == "auto":
        return BatchRequest(None, DEFAULT_MEMORY_FRACTION, source)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source} is not a batch size: use an integer (batch=16), batch=auto, or a fraction (0.85)")
    if value == -1:
        return BatchRequest(None, ULTRALYTICS_AUTOBATCH_FRACTION, source)
    if isinstance(value, float) and 0 < value < 1:
        return BatchRequest(None, float(value), source)
    if float(value).is_integer() and value >= 1:
        return BatchRequest(int(value), None, source)
    raise ConfigError(
        f"{source} is impossible: use a batch size >= 1 (batch=16), batch=auto, a memory fraction "
        f"0 < batch < 1 (batch=0.85), or -1 for Ultralytics' AutoBatch"
    )


def check_imgsz(value: Any, key: str = "imgsz") -> int:
    """A square training size in pixels, at least the model's largest stride."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"{key}={value} is not an image size: training uses one integer size in pixels, e.g. {key}=640")
    if value < MIN_IMGSZ:
        raise ConfigError(
            f"{key}={value:g} is impossible: image size must be at least {MIN_IMGSZ} pixels "
            f"(the model's largest stride), e.g. {key}=640"
        )
    return int(value)


def check_device(value: Any) -> None:
    """Refuse CUDA devices that do not exist, before Ultralytics fails on them."""
    if value is None or value == "" or str(value).lower() in {"cpu", "mps", "-1"}:
        return
    text = str(value).lower().replace("cuda:", "").replace("[", "").replace("]", "").replace(" ", "")
    parts = [p for p in text.split(",") if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"device={value} is not a device: use device=cpu, device=0, device=0,1 or device=cuda:0")
    import torch

    count = torch.cuda.device_count()
    missing = [int(p) for p in parts if int(p) >= count]
    if missing and count == 0:
        raise ConfigError(f"device={value}: no CUDA GPU is visible to torch on this machine: use device=cpu")
    if missing:
        raise ConfigError(
            f"device={value}: CUDA device {missing[0]} does not exist ({count} visible: "
            f"{', '.join(str(i) for i in range(count))}): pick one of those"
        )


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
    for key, low in (("workers", 0), ("close_mosaic", 0)):
        value = checked.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            raise ConfigError(f"{key}={value} is impossible: {key} must be >= {low}")
    if checked.get("time") is not None and (not isinstance(checked["time"], (int, float)) or checked["time"] <= 0):
        raise ConfigError(f"time={checked['time']} is impossible: time is the training budget in hours, e.g. time=0.5")
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


def _plain(message: str) -> str:
    """Ultralytics' message without emoji and quotes around key=value."""
    return message.encode("ascii", "ignore").decode().strip().replace("'", "")


_BYTE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}


def parse_bytes(value: Any, key: str = "memory_budget") -> int:
    """A memory size: bytes as a number, or a number with a unit (GiB, GB, MiB, MB, ...).

    Binary units (GiB) are powers of 1024, decimal ones (GB) powers of 1000; a bare G means GiB,
    as in `free -g`.

    Examples:
        >>> parse_bytes("2GiB"), parse_bytes("1.5 GB"), parse_bytes(4096), parse_bytes("512m")
        (2147483648, 1500000000, 4096, 536870912)
    """
    import re

    if isinstance(value, bool):
        raise ConfigError(f"{key}={value} is not a memory size: use e.g. {key}=4GiB or {key}=512MiB")
    if isinstance(value, (int, float)):
        number, unit = float(value), "b"
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not match or (match.group(2) and match.group(2).lower() not in _BYTE_UNITS):
            raise ConfigError(f"{key}={value} is not a memory size: use e.g. {key}=4GiB, {key}=512MiB or bytes")
        number, unit = float(match.group(1)), (match.group(2) or "b").lower()
    size = int(number * _BYTE_UNITS[unit])
    if size <= 0:
        raise ConfigError(f"{key}={value} is impossible: a memory budget must be positive, e.g. {key}=4GiB")
    return size


def check_fraction(value: Any, key: str = "memory_fraction") -> float:
    """A share of memory: 0 < value <= 1.

    Examples:
        >>> check_fraction(0.9)
        0.9
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{key}={value} is out of range: expected 0 < {key} <= 1, e.g. {key}=0.9")
    return float(value)
