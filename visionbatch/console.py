"""Plain-text output: aligned tables and human units. No colours, so logs and pipes stay clean."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: None as '-', floats to `digits` decimals, the rest as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """An aligned text table; numbers right-aligned, text left-aligned.

    Examples:
        >>> print(table(["batch", "GiB"], [[8, "1.50"], [16, "2.90"]]))
        batch   GiB
        -----  ----
            8  1.50
           16  2.90
    """
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(_looks_numeric(r[i]) for r in cells) and bool(cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("%x")
    try:
        float(head)
        return True
    except ValueError:
        return text == "-"


@contextlib.contextmanager
def logs_to(stream: IO[str]) -> Iterator[None]:
    """Send Ultralytics' log lines and progress bars to `stream` (stderr under --json)."""
    logger = logging.getLogger("ultralytics")
    # only Ultralytics' own console handler: others (pytest's log capture, a user's file handler) stay
    handlers = [h for h in logger.handlers if h.get_name() == "ultralytics.utils.set_logging"]
    before = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = stream  # not setStream(): that flushes the old stream, which may be closed
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        for handler, old in zip(handlers, before):
            handler.stream = old


def err(message: str) -> None:
    """A line on stderr."""
    print(message, file=sys.stderr, flush=True)
