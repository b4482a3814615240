"""The `visionbatch` command: argv -> arguments -> library call -> table or JSON.

One module per command in this package (`train.py`, ...), each with `SUMMARY`, `USAGE`,
`run(tokens) -> result` and `show(result) -> str`; `COMMANDS` lists them in help order. Every
command takes Ultralytics-style `key=value` arguments; `--json` prints the result as JSON on
stdout (logs go to stderr). Exit codes: 0 done, 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from types import ModuleType

from visionbatch import __version__
from visionbatch.console import err, logs_to
from visionbatch.errors import VisionbatchError
from visionbatch.plans import to_jsonable

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130

COMMANDS = ("train", "fit", "sweep", "augcost", "infer")  # modules of this package, in the order `visionbatch --help` lists them


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
    for name in COMMANDS:
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
        if args.json:
            from visionbatch.ultralytics_compat import offline

            with offline(), logs_to(sys.stderr):
                result = module.run(args.tokens)
            print(json.dumps(to_jsonable(result), indent=2))
        else:
            result = module.run(args.tokens)
            print(module.show(result))
    except VisionbatchError as exc:
        err(f"visionbatch {args.command}: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err(f"visionbatch {args.command}: interrupted")
        return EXIT_INTERRUPTED
    return EXIT_OK
