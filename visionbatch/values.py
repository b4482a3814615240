"""Values of `key=value` arguments: command-line text in, Python values out.

`smart_value` reads a value as Ultralytics does (decimal numbers only), `parse_pairs` reads the
tokens of a command line, `parse_batch` reads `batch=` (the training batch size, or a request
to fit it), `check_switch` reads a True/False key. The table of keys that use them is
`visionbatch.keys`.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from visionbatch.checks import MAX_BATCH_SIZE
from visionbatch.errors import ConfigError
from visionbatch.text import shown


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
        >>> parse_batch("16").batch_size, parse_batch("0.85").memory_fraction  # as the command line reads them
        (16, 0.85)
    """
    source = f"batch={shown(value)}"
    if isinstance(value, str) and value.strip().lower() == "auto":
        return BatchRequest(None, DEFAULT_MEMORY_FRACTION, source)
    if isinstance(value, str):  # from Python, '16' means what batch=16 does on the command line
        value = smart_value(value.strip())
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


def check_switch(value: Any, key: str) -> bool:
    """A True/False key (`trust_checkpoint=True`); anything else is one line naming the key.

    Examples:
        >>> check_switch(True, "half")
        True
        >>> check_switch("yes", "half")
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: half=yes is not a switch: use half=True or half=False
    """
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}={shown(value)} is not a switch: use {key}=True or {key}=False")


def as_list(value: Any) -> list:
    """A list value as a list: `1,2,4` (a tuple once read, or text) or `[1, 2]`; one value as a list of one.

    Text items are read as `key=value` values are.

    Examples:
        >>> as_list((1, 2, 4)), as_list("320,640"), as_list(4), as_list([8])
        ([1, 2, 4], [320, 640], [4], [8])
    """
    if isinstance(value, str):
        return [smart_value(v.strip()) for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
