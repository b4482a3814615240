"""Arguments: `key=value` tokens in, checked values out.

Ultralytics' own arguments keep Ultralytics' meaning and its own type and range checks
(`ultralytics.cfg.check_cfg`); on top of those, visionbatch refuses values that Ultralytics would
accept and then fail on, or silently change (`imgsz=0`, `batch=0`, `workers=-1`, a CUDA device
that is not there), and suggests the closest key for a misspelt one.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.ultralytics_compat import TASKS, offline

MIN_IMGSZ = 32  # the largest stride of a YOLO model: smaller images have no feature map left
# Fitting probes batch 1; below 2 strides the deepest feature map is 1x1 and BatchNorm cannot train one image.
MIN_PROBE_IMGSZ = 2 * MIN_IMGSZ
# Ceilings that keep hostile values from overflowing later (in torch, numpy, ONNX Runtime, C ints):
MAX_COUNT = 2**31 - 1  # any count (epochs, workers, streams, ...): the largest C int
MAX_IMGSZ = 16384  # at batch 1 the input (3 x s^2) and the first feature map (16 x (s/2)^2) stay under 2^31 elements
MAX_BATCH_SIZE = 65536  # far past any device's memory even at 32 px; larger only overflows tensor indexing
MAX_BYTES = 2**50  # 1024 TiB: more memory than any machine has
MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds 0..2^32-1; Ultralytics seeds it with `seed`
MAX_FREEZE_LAYERS = 1000  # freeze=N freezes layers 0..N-1; YOLO models have a few dozen
MAX_LABELS_PER_IMAGE = 100_000  # the assigner holds labels x anchors per image: 100k is GBs already


def smart_value(text: str) -> Any:
    """A `key=value` value as Python: None, bools, numbers, lists, else the string itself.

    Mirrors Ultralytics' `cfg.smart_value` so values mean the same in both tools, with one
    exception: numbers must be written in decimal (`16`, `0.85`, `1e3`, `-2`). `0x10`, `--5` and
    `1j` stay text, so the key's check refuses them by name instead of reading a surprise
    (Ultralytics reads `0x10` as 16 and `--5` as 5); a number too large for a float (`1e400`) stays
    text too, so messages echo what was typed rather than `inf`.

    Examples:
        >>> smart_value("16"), smart_value("0.85"), smart_value("true"), smart_value("auto")
        (16, 0.85, True, 'auto')
        >>> smart_value("0x10"), smart_value("--5"), smart_value("1e400"), smart_value("[1, -2.5]")
        ('0x10', '--5', '1e400', [1, -2.5])
    """
    lowered = text.lower()
    if lowered == "none":
        return None
    if lowered in {"true", "false"}:
        return lowered == "true"
    try:
        tree = ast.parse(text.strip(), mode="eval")
        value = ast.literal_eval(tree)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value if _decimal_numbers_only(tree, text.strip()) else text


_DECIMAL = re.compile(r"(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?")


def _decimal_numbers_only(tree: ast.AST, text: str) -> bool:
    """Whether every number in a parsed literal is a plain decimal with at most one sign."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):  # only complex literals (1+2j) get past literal_eval with one
            return False
        if isinstance(node, ast.UnaryOp) and not isinstance(node.operand, ast.Constant):  # --5, -+5
            return False
        if (isinstance(node, ast.Constant) and type(node.value) in (int, float, complex)
                and not _DECIMAL.fullmatch(ast.get_source_segment(text, node) or "")):  # 0x10, 0o7, 1j
            return False
    return True


def shown(value: Any) -> str:
    """A value as the user wrote it, for messages: lists comma-joined, very long text cut short.

    Examples:
        >>> shown([1, 2]), shown(10**40)
        ('1,2', '10000000000000000000...(41 characters)')
    """
    if isinstance(value, (list, tuple)):
        text = ",".join(shown(v) for v in value)
    else:
        try:
            text = str(value)
        except ValueError:  # an int past Python's digit limit for str()
            return "a number too long to print"
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _bound_words(integer: bool, minimum: float | None, maximum: float | None, above: float | None) -> str:
    """'an integer from 2 to 10000', 'a number > 0', 'a finite number', ...: what a check accepts."""
    kind = "an integer" if integer else "a number" if (minimum, maximum, above) != (None, None, None) else \
        "a finite number"

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    low = f"> {num(above)}" if above is not None else None
    if minimum is not None and maximum is not None:
        return f"{kind} from {num(minimum)} to {num(maximum)}"
    if minimum is not None:
        low = f">= {num(minimum)}"
    parts = [p for p in (low, None if maximum is None else f"<= {num(maximum)}") if p]
    return " ".join([kind, " and ".join(parts)]) if parts else kind


def finite_number(value: Any, key: str, *, example: str, minimum: float | None = None,
                  maximum: float | None = None, above: float | None = None, fix: str | None = None) -> float:
    """A real, finite number within bounds, as a float; anything else is a ConfigError naming `key`.

    Refuses bools, text, lists, None, NaN, infinities (`1e400` reads as inf) and integers too large
    for a float. `minimum`/`maximum` are inclusive, `above` exclusive. `fix` replaces the default
    advice ('use a number > 0, e.g. fps=25').

    Examples:
        >>> finite_number(25, "fps", example="fps=25", above=0)
        25.0
        >>> finite_number(float("inf"), "fps", example="fps=25", above=0)
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: fps=inf is not a finite number: use a number > 0, e.g. fps=25
    """
    advice = fix or f"use {_bound_words(False, minimum, maximum, above)}, e.g. {example}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "a finite number" if _non_finite_text(value) else "a number"
        raise ConfigError(f"{key}={shown(value)} is not {what}: {advice}")
    try:
        number = float(value)
    except OverflowError:  # an int past 1.8e308
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{key}={shown(value)} is not a finite number: {advice}")
    if ((minimum is not None and number < minimum) or (maximum is not None and number > maximum)
            or (above is not None and not number > above)):
        raise ConfigError(f"{key}={shown(value)} is impossible: {advice}")
    return number


def whole_number(value: Any, key: str, *, example: str, minimum: int | None = 1, maximum: int = MAX_COUNT,
                 fix: str | None = None) -> int:
    """An integer within [minimum, maximum] (integral floats such as 1e2 count, as in Ultralytics).

    Refuses bools, text, lists, None, fractions, NaN and infinities; `maximum` defaults to the
    largest C int, past which torch and numpy overflow.

    Examples:
        >>> whole_number(1e2, "epochs", example="epochs=100"), whole_number(-0.0, "warmup", example="warmup=3", minimum=0)
        (100, 0)
        >>> whole_number(10**30, "epochs", example="epochs=100")
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: epochs=1000000000000000000000000000000 is impossible: use an integer from 1 to 2147483647, e.g. epochs=100
    """
    # The C-int limits are named only when crossed: most keys read better as 'an integer >= 1'.
    ceiling = None if maximum == MAX_COUNT else maximum
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):  # also NaN and the infinities
        finite = _non_finite_text(value) or (isinstance(value, float) and not math.isfinite(value))
        advice = fix or f"use {_bound_words(True, minimum, ceiling, None)}, e.g. {example}"
        raise ConfigError(f"{key}={shown(value)} is not {'a finite number' if finite else 'a whole number'}: {advice}")
    floor = minimum if minimum is not None else -MAX_COUNT - 1  # a C int either way
    if floor <= value <= maximum:
        return int(value)
    low = floor if minimum is not None or value < floor else None
    high = maximum if value > maximum else ceiling
    advice = fix or f"use {_bound_words(True, low, high, None)}, e.g. {example}"
    raise ConfigError(f"{key}={shown(value)} is impossible: {advice}")


def _non_finite_text(value: Any) -> bool:
    """Whether `value` is text naming a number no float holds: '1e400', '-inf', 'nan'."""
    try:
        return isinstance(value, str) and not math.isfinite(float(value))
    except ValueError:
        return False


def check_seed(value: Any, key: str = "seed") -> int:
    """A random seed: an integer 0..2^32-1 (numpy's range; Ultralytics seeds numpy with it).

    Examples:
        >>> check_seed(0), check_seed(2**32 - 1)
        (0, 4294967295)
    """
    return whole_number(value, key, example=f"{key}=0", minimum=0, maximum=MAX_SEED)


def check_labels_per_image(value: Any) -> int | None:
    """`labels_per_image=`: None (the dataset's worst case) or labels per training image, 1..100000.

    Examples:
        >>> check_labels_per_image(None), check_labels_per_image(100)
        (None, 100)
    """
    if value is None:
        return None
    return whole_number(value, "labels_per_image", example="labels_per_image=100", maximum=MAX_LABELS_PER_IMAGE)


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
                f"unknown argument '{key}={shown(value)}'{suggest(key, valid)}: "
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
    source = f"batch={shown(value)}"
    if isinstance(value, str) and value.lower() == "auto":
        return BatchRequest(None, DEFAULT_MEMORY_FRACTION, source)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source} is not a batch size: use an integer (batch=16), batch=auto, or a fraction (0.85)")
    if value == -1:
        return BatchRequest(None, ULTRALYTICS_AUTOBATCH_FRACTION, source)
    if isinstance(value, float) and 0 < value < 1:
        return BatchRequest(None, float(value), source)
    if (isinstance(value, int) or value.is_integer()) and 1 <= value <= MAX_BATCH_SIZE:  # is_integer: not NaN, inf
        return BatchRequest(int(value), None, source)
    raise ConfigError(
        f"{source} is impossible: use a batch size from 1 to {MAX_BATCH_SIZE} (batch=16), batch=auto, a memory "
        f"fraction 0 < batch < 1 (batch=0.85), or -1 for Ultralytics' AutoBatch"
    )


def check_imgsz(value: Any, key: str = "imgsz") -> int:
    """A square training size in pixels: at least the model's largest stride, at most MAX_IMGSZ.

    Examples:
        >>> check_imgsz(640), check_imgsz(320.0)
        (640, 320)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):  # also NaN and the infinities
        raise ConfigError(f"{key}={shown(value)} is not an image size: training uses one integer size in pixels, "
                          f"e.g. {key}=640")
    if value < MIN_IMGSZ:
        raise ConfigError(
            f"{key}={shown(value)} is impossible: image size must be at least {MIN_IMGSZ} pixels "
            f"(the model's largest stride), e.g. {key}=640"
        )
    if value > MAX_IMGSZ:
        raise ConfigError(
            f"{key}={shown(value)} is impossible: image size must be at most {MAX_IMGSZ} pixels "
            f"(larger tensors overflow 32-bit indexing), e.g. {key}=640"
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
        from ultralytics.cfg import CFG_FLOAT_KEYS, CFG_FRACTION_KEYS, CFG_INT_KEYS, CFG_INT_MIN

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
    text = shown(value)
    if isinstance(value, bool):
        raise ConfigError(f"{key}={text} is not a memory size: use e.g. {key}=4GiB or {key}=512MiB")
    if isinstance(value, (int, float)):
        number, unit = value, "b"
    else:
        match = re.fullmatch(r"\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not match or (match.group(2) and match.group(2).lower() not in _BYTE_UNITS):
            raise ConfigError(f"{key}={text} is not a memory size: use e.g. {key}=4GiB, {key}=512MiB or bytes")
        number, unit = float(match.group(1)), (match.group(2) or "b").lower()
    if isinstance(number, float) and not math.isfinite(number):  # 1e400 reads as inf
        raise ConfigError(f"{key}={text} is not a finite memory size: use e.g. {key}=4GiB or {key}=512MiB")
    if number * _BYTE_UNITS[unit] > MAX_BYTES:  # int * int stays exact; a float may reach inf, still > MAX_BYTES
        raise ConfigError(f"{key}={text} is impossible: more memory than any machine has (at most 1024TiB), "
                          f"e.g. {key}=4GiB")
    size = int(number * _BYTE_UNITS[unit])
    if size <= 0:
        raise ConfigError(f"{key}={text} is impossible: a memory budget must be positive, e.g. {key}=4GiB")
    return size


def check_fraction(value: Any, key: str = "memory_fraction") -> float:
    """A share of memory: 0 < value <= 1.

    Examples:
        >>> check_fraction(0.9)
        0.9
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:  # NaN fails too
        raise ConfigError(f"{key}={shown(value)} is out of range: expected 0 < {key} <= 1, e.g. {key}=0.9")
    return float(value)
