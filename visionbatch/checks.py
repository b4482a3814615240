"""Checks for one value: numbers, counts, image sizes, fractions and seeds, each a one-line ConfigError.

Every message names the key, the value as typed, what is valid and an example.
"""

from __future__ import annotations

import math
import re
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.text import shown

# The largest stride of a YOLO model: image sizes are multiples of it, and a smaller image has no
# feature map left at that stride.
STRIDE = MIN_IMGSZ = 32



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



_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # a number written as text (ASCII)


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
        >>> whole_number("16", "batch_size", example="batch_size=16")  # from Python; the command line reads a number
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: batch_size='16' is text, not a number: pass batch_size=16 without quotes
    """
    # The C-int limits are named only when crossed: most keys read better as 'an integer >= 1'.
    ceiling = None if maximum == MAX_COUNT else maximum
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):  # also NaN and the infinities
        finite = _non_finite_text(value) or (isinstance(value, float) and not math.isfinite(value))
        advice = fix or f"use {_bound_words(True, minimum, ceiling, None)}, e.g. {example}"
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()) and math.isfinite(float(value)):
            # '16' from Python (the command line reads 16 as a number): text, not 16. A number that would be
            # refused anyway ('-3', '16.5') gets that number's own message.
            number = float(value)
            number = int(number) if number.is_integer() and abs(number) < 2**63 else number
            whole_number(number, key, example=example, minimum=minimum, maximum=maximum, fix=fix)
            raise ConfigError(f"{key}={value!r} is text, not a number: pass {key}={value.strip()} without quotes")
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



def check_oom_risk(value: Any) -> float:
    """`oom_risk=`: the chance a batch of the run may carry more labels than planned, 0 < risk <= 0.5.

    Examples:
        >>> check_oom_risk(1e-3), check_oom_risk(0.01)
        (0.001, 0.01)
        >>> check_oom_risk(0)
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: oom_risk=0 is out of range: expected a probability 0 < oom_risk <= 0.5, e.g. oom_risk=0.001 (labels_per_image= forces a count instead)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 0.5:  # NaN fails too
        raise ConfigError(f"oom_risk={shown(value)} is out of range: expected a probability 0 < oom_risk <= 0.5, "
                          f"e.g. oom_risk=0.001 (labels_per_image= forces a count instead)")
    return float(value)


def check_labels_per_image(value: Any) -> int | None:
    """`labels_per_image=`: None (the dataset's worst case) or labels per training image, 1..100000.

    Examples:
        >>> check_labels_per_image(None), check_labels_per_image(100)
        (None, 100)
    """
    if value is None:
        return None
    return whole_number(value, "labels_per_image", example="labels_per_image=100", maximum=MAX_LABELS_PER_IMAGE)



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



def check_fraction(value: Any, key: str = "memory_fraction") -> float:
    """A share of memory: 0 < value <= 1.

    Examples:
        >>> check_fraction(0.9)
        0.9
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:  # NaN fails too
        raise ConfigError(f"{key}={shown(value)} is out of range: expected 0 < {key} <= 1, e.g. {key}=0.9")
    return float(value)
