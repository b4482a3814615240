"""Text that comes from model files and arguments, made safe for messages and deployment configs.

A model's file name, class names and tensor names are chosen by whoever made the file. They end up
in places with their own syntax: one-line error messages, DeepStream `key=value` files (a newline
starts a new key), `labels.txt` (one class per line), Triton's protobuf text (a quote ends a
string) and a shell script. Each function here fits text to one of those places.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

# Unicode categories that break or hide lines: controls (\n, \r, \x85, ...), format characters
# (bidi overrides, zero-width), lone surrogates, and the line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_.-]")
_PBTXT_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\", "'"}


def is_control(char: str) -> bool:
    """True for a character that breaks or hides a line (newline, tab, NUL, bidi override, ...).

    Examples:
        >>> is_control("\\n"), is_control("\\u202e"), is_control("é"), is_control(" ")
        (True, True, False, False)
    """
    return unicodedata.category(char) in _CONTROL_CATEGORIES


def printable(text: object, limit: int = 300) -> str:
    """`text` for a one-line message: control characters written as escapes, long text cut short.

    Examples:
        >>> print(printable("m\\ncustom-lib-path=x\\n#.onnx"))
        m\\ncustom-lib-path=x\\n#.onnx
        >>> printable("x" * 100, limit=10)
        'xxxxxxxxxx...(100 characters)'
    """
    raw = str(text)
    escaped = "".join(char.encode("unicode_escape").decode("ascii") if is_control(char) else char for char in raw)
    return escaped if len(escaped) <= limit else f"{escaped[:limit]}...({len(raw)} characters)"


def error_line(exc: BaseException, limit: int | None = 240) -> str:
    """The first line of an error's message (at most `limit` characters), or its type's name when it has none.

    Examples:
        >>> error_line(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB.\\nsee docs"))
        'CUDA out of memory. Tried to allocate 2.00 GiB.'
        >>> error_line(MemoryError()), error_line(ValueError("x" * 9), limit=5)
        ('MemoryError', 'xx...')
    """
    line = (str(exc).strip().splitlines() or [""])[0]
    if not line:
        return type(exc).__name__
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def one_line(text: object) -> str:
    """`text` with every control character replaced by a space: one line of a labels file or a comment.

    Examples:
        >>> one_line("traffic\\nlight"), one_line("a\\r\\nb\\x00")
        ('traffic light', 'a  b ')
    """
    return "".join(" " if is_control(char) else char for char in str(text))


def identifier(text: str, fallback: str = "model") -> str:
    """A name safe as a folder, a file stem and a config value: [A-Za-z0-9_.-], others as '_'.

    Leading dots become '_' too, so the name is never '.', '..' or a hidden file.

    Examples:
        >>> identifier("yolo11n-seg"), identifier("m;touch PWNED;"), identifier('q"x\\nmax'), identifier("..")
        ('yolo11n-seg', 'm_touch_PWNED_', 'q_x_max', '__')
        >>> identifier("")
        'model'
    """
    name = _NOT_IDENTIFIER.sub("_", text)
    stripped = name.lstrip(".")
    name = "_" * (len(name) - len(stripped)) + stripped
    return name or fallback


def config_hazard(text: str) -> str | None:
    """What in `text` a DeepStream key file, a Triton string or a comment line cannot hold, or None.

    Examples:
        >>> config_hazard("yolo v8 (final).onnx") is None
        True
        >>> config_hazard("m\\ncustom-lib-path=x.onnx"), config_hazard('q"x.onnx'), config_hazard("a\\\\b.onnx")
        ('a control character (\\\\n)', 'a quote (")', 'a backslash')
        >>> config_hazard(" m.onnx")  # a key file reads the value without it
        'a space at its start or end'
    """
    for char in text:
        if is_control(char):
            return f"a control character ({printable(char)})"
        if char in {'"', "'"}:
            return f"a quote ({char})"
        if char == "\\":
            return "a backslash"
    if text != text.strip():
        return "a space at its start or end"
    return None


def pbtxt_string(text: str) -> str:
    """`text` as a protobuf text-format string literal, quotes included: quotes, backslashes and
    anything outside printable ASCII escaped (octal UTF-8 bytes), so it can never end the string.

    Examples:
        >>> print(pbtxt_string("images"), pbtxt_string('q"x\\nmax_batch_size: 9'), pbtxt_string("é"))
        "images" "q\\"x\\012max_batch_size: 9" "\\303\\251"
    """
    parts = []
    for char in text:
        if char in _PBTXT_PLAIN:
            parts.append(char)
        elif char in {'"', "\\", "'"}:
            parts.append("\\" + char)
        else:
            parts.extend(f"\\{byte:03o}" for byte in char.encode("utf-8", "replace"))
    return '"' + "".join(parts) + '"'


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


def suggest(key: str, valid: Iterable[str]) -> str:
    """' (did you mean 'epochs'?)' for a misspelt key, else ''."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
