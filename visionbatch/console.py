"""Plain-text output: aligned tables and human units. No colours, so logs and pipes stay clean."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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


# -- live progress of long commands (fit, sweep, train's batch=auto) --------------------------------


class Progress:
    """A long command's progress on stderr: a line per event and, on a terminal, a bar over the planned steps.

    Call it with a line, like `err`: a library verb takes it as its `progress=` line sink. `plan`,
    `status`, `advance` and `resize` drive the bar, Ultralytics' tqdm-style `TQDM` (the bar its own
    training shows, with the time left), which stays under the lines. Off a terminal (a log, a pipe,
    a captured stream) there is no bar and no carriage return: the lines alone, each flushed.

    Examples:
        >>> import io
        >>> stream = io.StringIO()
        >>> with Progress("visionbatch fit", stream) as progress:
        ...     progress.plan(2, "probe")
        ...     progress("probe 1/2: batch 1 fits")
        >>> print(stream.getvalue(), end="")
        visionbatch fit: probe 1/2: batch 1 fits
    """

    def __init__(self, prefix: str = "", stream: IO[str] | None = None) -> None:
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr  # looked up now: --json's redirection is in place
        self.bar: Any = None

    def __call__(self, line: str) -> None:
        text = f"{self.prefix}: {line}" if self.prefix else line
        if self.bar is None:
            print(text, file=self.stream, flush=True)
            return
        self.bar.clear()  # the line goes above the bar, which is drawn again under it
        self.stream.write(text + "\n")
        self.bar.refresh()

    def interactive(self) -> bool:
        """Whether the stream is a terminal, where a bar redraws in place."""
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            return False

    def plan(self, total: int, unit: str = "step") -> None:
        """Start a bar over `total` steps (a terminal only), replacing the one before."""
        self.close()
        if not self.interactive():
            return
        from ultralytics.utils import TQDM

        # mininterval 0: steps are seconds apart, and a redraw after each line must not be skipped
        self.bar = TQDM(total=max(total, 1), desc=self.prefix, unit=unit, file=self.stream, mininterval=0,
                        disable=False, leave=False)

    def status(self, text: str) -> None:
        """What runs now, beside the bar."""
        if self.bar is not None:
            self.bar.set_description(f"{self.prefix}: {text}" if self.prefix else text)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def resize(self, total: int) -> None:
        """A new planned total (the run takes more steps, or ends early)."""
        if self.bar is not None:
            self.bar.total = max(total, 1)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Steps:
    """The planned steps of a long run, counted for its progress lines: 'probe 3/~5' and the time left.

    `total` is the plan; when it is an estimate (`exact=False`, shown as '~5') it grows if the run
    takes more steps. The time left is the slower of the mean step and the last one, times the steps
    still planned: a fit's later probes run larger batches near the answer and cost more than its
    first, so the mean alone under-counts. Rough all the same, and said as 'about'. A `Progress` sink
    also gets its bar driven; any other callable gets the lines; None gets nothing.

    Examples:
        >>> lines, now = [], iter([0.0, 10.0, 30.0])
        >>> steps = Steps(lines.append, 3, "probe", clock=lambda: next(now))
        >>> steps.begin("batch 1")
        >>> steps.end("batch 1 fits")
        >>> steps.end("batch 2 fits")
        >>> for line in lines:
        ...     print(line)
        probe 1/3: batch 1...
        probe 1/3: batch 1 fits; about 20 s left for the probes
        probe 2/3: batch 2 fits; about 20 s left for the probes
    """

    def __init__(self, progress: Callable[[str], None] | None, total: int, unit: str = "step", exact: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.say = progress or (lambda line: None)
        self.bar = progress if isinstance(progress, Progress) else None
        self.total, self.unit, self.exact, self.clock = max(total, 1), unit, exact, clock
        self.done = 0
        self.started = self.last_end = clock()
        self.last_s = 0.0
        if self.bar is not None:
            self.bar.plan(self.total, unit)

    def _counter(self) -> str:
        return f"{self.unit} {self.done + 1}/{'' if self.exact else '~'}{self.total}"

    def begin(self, what: str) -> None:
        """The next step (or a part of it) starts: a line, and the bar's status."""
        self.say(f"{self._counter()}: {what}...")
        if self.bar is not None:
            self.bar.status(what)

    def note(self, line: str) -> None:
        """A line that is not a step."""
        self.say(line)

    def end(self, what: str) -> None:
        """The step ends: its line, with the time left while more are planned."""
        if self.done + 1 > self.total:
            self.expect(self.done + 1)
        counter = self._counter()
        self.done += 1
        now = self.clock()
        self.last_s, self.last_end = now - self.last_end, now
        left = self.left_s(now)
        self.say(f"{counter}: {what}" + (f"; about {duration(left)} left for the {self.unit}s" if left is not None
                                          else ""))
        if self.bar is not None:
            self.bar.advance()

    def left_s(self, now: float | None = None) -> float | None:
        """Seconds the planned steps still need at the slower of the mean pace and the last step's (None: no
        pace yet, or none left)."""
        elapsed = (self.clock() if now is None else now) - self.started
        if not self.done or self.done >= self.total or elapsed <= 0:
            return None
        return max(elapsed / self.done, self.last_s) * (self.total - self.done)

    def expect(self, total: int) -> None:
        """Plan `total` steps in all now (more than planned, or the run ends after the ones done)."""
        self.total = max(total, self.done, 1)
        if self.bar is not None:
            self.bar.resize(self.total)

    def finish(self) -> None:
        """No more steps: the plan shrinks to the steps done, and a bar shows them complete."""
        self.expect(self.done)


def duration(seconds: float) -> str:
    """A rough span for a person: whole seconds up to 90 s, then minutes.

    Examples:
        >>> duration(0.2), duration(42.4), duration(95), duration(3600)
        ('1 s', '42 s', '2 min', '60 min')
    """
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    return f"{round(seconds / 60)} min"
