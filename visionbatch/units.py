"""Memory sizes: `4GiB` in, bytes out, and bytes back to `1.5 GiB` for people."""

from __future__ import annotations

import math
import re
from typing import Any

from visionbatch.checks import MAX_BYTES
from visionbatch.errors import ConfigError
from visionbatch.text import shown

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

_BYTE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}


DECIMAL_UNITS = frozenset({"kb", "mb", "gb", "tb"})  # powers of 1000; every figure visionbatch prints is binary
_SIZE = re.compile(r"\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*")  # number, unit


def size_unit(value: Any) -> str:
    """The unit of a size as typed, lower case ('' for plain bytes or anything that is not a size).

    Examples:
        >>> size_unit("2GB"), size_unit(" 1.5 GiB "), size_unit(4096), size_unit("lots")
        ('gb', 'gib', '', '')
    """
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    return match.group(2).lower() if match else ""


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
        match = _SIZE.fullmatch(str(value))
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


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")



def human_bytes(value: float | None) -> str:
    """Bytes in binary units with three significant figures.

    Examples:
        >>> human_bytes(1536), human_bytes(3 * 2**30), human_bytes(None)
        ('1.50 KiB', '3.00 GiB', '-')
    """
    if value is None:
        return "-"
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            if unit == "B" or size >= 100:
                return f"{size:.0f} {unit}"
            return f"{size:.1f} {unit}" if size >= 10 else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
