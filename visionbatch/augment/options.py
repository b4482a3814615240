"""augcost's own arguments: defaults, help texts and checks (one ConfigError line each)."""

from __future__ import annotations

import math
from typing import Any

from visionbatch.augment.analysis import default_sizes, stride_multiple
from visionbatch.checks import MAX_COUNT, MAX_IMGSZ, finite_number, whole_number
from visionbatch.errors import ConfigError
from visionbatch.keys import visionbatch_keys
from visionbatch.text import shown
from visionbatch.ultralytics.offline import cpu_count
from visionbatch.values import as_list

DEFAULT_IMAGES = 64  # images per profiled phase: enough for a p95, a second or so at 640 px
DEFAULT_REPEATS = 2  # passes per phase; each image keeps its fastest
DEFAULT_SECONDS = 2.0  # timed seconds per loader setting, after warm-up
LOADER_IMAGES = 512  # images linked for the loader (a larger sample keeps small-sample reuse rare)
CACHES = ("none", "ram", "disk")
CACHE_LIMIT_BYTES = {"ram": 2 << 30, "disk": 1 << 30}  # the most augcost caches for one measurement
MAX_SIZES = 6
MAX_STEP_IMG_PER_S = 1e7  # step_img_per_s=: more images a second than any accelerator trains
_HIGHEST = {"step_img_per_s": MAX_STEP_IMG_PER_S}
# augcost's own keys (beyond Ultralytics' train keys), name -> help, from the one registry (visionbatch.keys).
AUGCOST_KEYS: dict[str, str] = visionbatch_keys("augcost")


def cache_mode(value: Any) -> str:
    """Ultralytics' cache value as one of CACHES: False/None -> none, True -> ram."""
    if value is True:
        return "ram"
    if value in (False, None) or str(value).lower() in {"false", "none", ""}:
        return "none"
    return str(value).lower()


def check_sizes(value: Any, imgsz: int) -> tuple[int, ...]:
    """The training size first, then the other sizes ascending, rounded up to multiples of 32.

    Examples:
        >>> check_sizes(None, 640), check_sizes("320,100", 640)
        ((640, 320, 1280), (640, 128, 320))
    """
    if value is None:
        listed = list(default_sizes(imgsz))
    else:
        listed = as_list(value)
        for size in listed:
            if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= MAX_IMGSZ:
                raise ConfigError(f"sizes={_show(value)}: '{_show(size)}' is not an image size: list integers from 32 "
                                  f"to {MAX_IMGSZ}, e.g. sizes=320,640,1280")
        if len(set(listed)) > MAX_SIZES:
            raise ConfigError(f"sizes={_show(value)}: at most {MAX_SIZES} sizes: each one is profiled in full")
        listed = [stride_multiple(size) for size in listed]  # as Ultralytics would train at them
    others = sorted(set(listed) - {imgsz})
    return (imgsz, *others)


def check_count(key: str, value: Any, low: int, high: int) -> int:
    return whole_number(value, key, example=f"{key}={low}", minimum=low, maximum=high,
                        fix=f"use an integer from {low} to {high}")


def check_positive(key: str, value: Any, high: float | None = None) -> float:
    """A finite number above 0 and at most `high` (default: the key's own ceiling, if it has one)."""
    high = _HIGHEST.get(key, math.inf) if high is None else high
    limit = f" and at most {high:g}" if math.isfinite(high) else ""
    return finite_number(value, key, example=f"{key}=2", above=0, maximum=high if math.isfinite(high) else None,
                         fix=f"use a number above 0{limit}, e.g. {key}=2")


def check_workers(value: Any) -> list[int]:
    if value is None:
        cpus = cpu_count()
        return sorted({0, cpus} | {2 ** k for k in range(8) if 2 ** k <= cpus})
    listed = as_list(value)
    for workers in listed:
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= MAX_COUNT:
            raise ConfigError(f"loader_workers={_show(value)}: '{_show(workers)}' is not a worker count: list "
                              f"integers from 0 to {MAX_COUNT}, e.g. loader_workers=0,2,4")
    return sorted(set(listed))


def check_caches(value: Any) -> list[str]:
    if value is None:
        return list(CACHES)
    modes = []
    for item in as_list(value):
        mode = cache_mode(item)
        if mode not in CACHES:
            raise ConfigError(f"loader_cache={_show(value)}: '{item}' is not a cache mode: list some of False, ram, "
                              f"disk, e.g. loader_cache=False,ram")
        modes.append(mode)
    return modes


def _show(value: Any) -> str:
    return shown(value)
