"""The `visionbatch` command: argv -> arguments -> library call -> table or JSON.

One module per command in this package (`train.py`, ...), each with `SUMMARY`, `USAGE`,
`run(tokens) -> result` and `show(result) -> str`; `CLI_COMMANDS` lists them in help order: the
key registry's commands, then `cache` (the plan cache: no keys). Every key-taking
command takes Ultralytics-style `key=value` arguments; `--json` prints the result as JSON on
stdout (logs go to stderr). Exit codes: 0 done, 2 bad input (one line on stderr), 74 the disk failed
(full, read-only, over quota; one line on stderr), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM
(what `kill`, `docker stop` and job schedulers send). SIGTERM is handled like Ctrl-C: it is passed
on to the processes visionbatch started (DDP workers), the run records status `interrupted`,
temporary folders are removed, and no half-written file is left.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from visionbatch import __version__
from visionbatch.console import err, logs_to
from visionbatch.errors import StorageError, VisionbatchError
from visionbatch.files import is_disk_error, storage_error
from visionbatch.keys import (
    COMMANDS,  # modules of this package, in the order `visionbatch --help` lists them
)
from visionbatch.results import to_jsonable

CLI_COMMANDS = (*COMMANDS, "cache")  # cache (list, clear) takes no key=value keys: it is not in the key registry
# 74 is sysexits' EX_IOERR: apart from 1, which an unexpected error (a bug, with its traceback) exits with.
# EXIT_NO is a question answered "no" (`fit batch=16`: it does not fit), so scripts can branch on it.
EXIT_OK, EXIT_BAD_INPUT, EXIT_NO, EXIT_STORAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 3, 74, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C's KeyboardInterrupt would be, so the same cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    forward_to_children(signum)
    raise Terminated()


def forward_to_children(signum: int) -> None:
    """Pass a signal on to every process this one started, and theirs.

    A multi-GPU run's workers are torchrun's children in sessions of their own: SIGTERM sent to
    visionbatch alone would leave them training on the GPUs after visionbatch exits.
    """
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.send_signal(signum)
        except psutil.Error:
            continue  # already gone


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` for the block (main thread only); the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)



def command(name: str) -> ModuleType:
    return importlib.import_module(f"visionbatch.cli.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionbatch",
        description="Fit the training batch to the GPU, cost the data pipeline, tune inference batching: "
                    "for Ultralytics YOLO detection and segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"visionbatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in CLI_COMMANDS:
        module = command(name)
        cmd = sub.add_parser(name, help=module.SUMMARY, description=module.USAGE,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("tokens", nargs="*", metavar="ARG", help="the positional argument and key=value pairs")
        cmd.add_argument("--json", action="store_true", help="print the result as JSON on stdout; logs go to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    module = command(args.command)
    try:
        with sigterm_as_interrupt():
            if args.json:
                from visionbatch.ultralytics.offline import offline

                with offline(), logs_to(sys.stderr):
                    result = module.run(args.tokens)
                print(json.dumps(to_jsonable(result), indent=2))
            else:
                with logs_to(sys.stderr):  # stdout holds the result alone, `> report.txt` included
                    result = module.run(args.tokens)
                print(module.show(result))
            if getattr(module, "answered_no", None) and module.answered_no(result):
                return EXIT_NO
    except StorageError as exc:
        err(f"visionbatch {args.command}: {exc}")
        return EXIT_STORAGE
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        folder = Path(exc.filename).parent if exc.filename else Path.cwd() / "runs"
        err(f"visionbatch {args.command}: {storage_error(exc, folder, exc.filename or 'the output')}")
        return EXIT_STORAGE
    except VisionbatchError as exc:
        err(f"visionbatch {args.command}: {exc}")
        return EXIT_BAD_INPUT
    except Terminated:
        err(f"visionbatch {args.command}: stopped by SIGTERM")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        err(f"visionbatch {args.command}: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        # A signal landing inside C code (an import, a native callback) can come back wrapped in
        # another error (a RuntimeError whose context is Terminated): it is still the same stop.
        stop = _stop_in_chain(exc)
        if stop is None:
            raise
        err(f"visionbatch {args.command}: {'stopped by SIGTERM' if stop is Terminated else 'interrupted'}")
        return EXIT_TERMINATED if stop is Terminated else EXIT_INTERRUPTED
    return EXIT_OK


def entry(argv: Sequence[str] | None = None) -> None:
    """The `visionbatch` console script and `python -m visionbatch`: `main`, then exit with its code.

    After a Ctrl-C or SIGTERM the cleanup has already run inside `main` (temporary folders removed,
    the run recorded as interrupted, workers signalled). The process then ends at once with
    `os._exit`, skipping the interpreter's finalization: a native thread still running there (a
    data loader's or a runtime's pool) can abort it ("PyThreadState_Get: ... GIL is released")
    and turn exit 143 into a crash. `main` itself only returns, so it stays callable in-process.
    """
    code = main(argv)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _stop_in_chain(exc: BaseException) -> type[BaseException] | None:
    """Terminated or KeyboardInterrupt when one of them caused `exc` (its __cause__/__context__ chain).

    Examples:
        >>> try:
        ...     try:
        ...         raise Terminated()
        ...     except Terminated:
        ...         raise RuntimeError("wrapped")
        ... except RuntimeError as exc:
        ...     _stop_in_chain(exc).__name__
        'Terminated'
        >>> _stop_in_chain(ValueError("plain")) is None
        True
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (Terminated, KeyboardInterrupt)):
            return Terminated if isinstance(link, Terminated) else KeyboardInterrupt
        link = link.__cause__ or link.__context__
    return None
