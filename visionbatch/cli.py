"""The `visionbatch` command: argv -> arguments -> library call -> table or JSON.

Every command takes Ultralytics-style `key=value` arguments; `--json` prints the result as JSON
on stdout (logs go to stderr). Exit codes: 0 done, 2 bad input (one line on stderr), 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from visionbatch import __version__
from visionbatch.config import parse_pairs
from visionbatch.console import err, human_bytes, logs_to, table
from visionbatch.errors import ConfigError, VisionbatchError
from visionbatch.plans import to_jsonable

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


def split_tokens(tokens: Sequence[str], command: str, positional: str) -> tuple[str | None, dict[str, Any]]:
    """The one positional argument (DATA or MODEL) and the key=value pairs, in any order."""
    bare = [t for t in tokens if "=" not in t]
    if len(bare) > 1:
        raise ConfigError(
            f"visionbatch {command} takes one {positional} and key=value arguments, got {', '.join(bare)}: "
            f"write options as key=value, e.g. epochs=3"
        )
    pairs = parse_pairs(t for t in tokens if "=" in t)
    return (bare[0] if bare else None), pairs


# -- train -------------------------------------------------------------------------------------

def _train(tokens: Sequence[str]) -> Any:
    from visionbatch.training import train

    data, pairs = split_tokens(tokens, "train", "DATA")
    if data is None:
        data = pairs.pop("data", None)
    if data is None:
        raise ConfigError("visionbatch train needs a dataset: visionbatch train path/to/data.yaml [key=value ...]")
    return train(data, **pairs)


def _show_train(result: Any) -> str:
    rows = []
    for e in result.epochs:
        metric = e.metrics.get("metrics/mAP50-95(M)", e.metrics.get("metrics/mAP50-95(B)"))
        loss = sum(v for k, v in e.losses.items())
        rows.append([e.epoch, e.train_s, e.val_s, human_bytes(e.peak_rss_bytes),
                     human_bytes(e.cuda_peak_reserved_bytes), loss, metric])
    lines = [
        "",
        table(["epoch", "train s", "val s", "peak RSS", "CUDA reserved", "train loss", "mAP50-95"], rows,
              title=f"visionbatch train: {result.task} {result.model}, batch {result.batch_size} "
                    f"({result.batch_source}), {result.device} ({result.cpu_threads} CPU threads)"),
    ]
    if result.final_metrics:
        keys = [k for k in result.final_metrics if k.startswith("metrics/")]
        lines.append("final: " + ", ".join(f"{k.removeprefix('metrics/')} {result.final_metrics[k]:.4f}" for k in keys))
    lines.append(f"setup {result.setup_s:.1f} s, total {result.wall_s:.1f} s")
    lines.append(f"run folder: {result.save_dir}  (summary: visionbatch.json, weights: weights/best.pt)")
    return "\n".join(lines)


COMMANDS: dict[str, tuple[str, str, Callable[[Sequence[str]], Any], Callable[[Any], str]]] = {
    "train": (
        "train a detection or segmentation model with Ultralytics, offline",
        "visionbatch train DATA.yaml [key=value ...]\n\n"
        "Any Ultralytics train argument works with Ultralytics' meaning: model=yolo11s.yaml, epochs=50,\n"
        "imgsz=640, device=0, task=segment, batch=32, workers=8, ... Defaults that work offline:\n"
        "model=yolo11n.yaml (yolo11n-seg.yaml for task=segment); task from model=, else detect.\n"
        "Output: runs/<task>/<name>/ (Ultralytics' run folder) with visionbatch.json.",
        _train,
        _show_train,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionbatch",
        description="Fit the training batch to the GPU, cost the data pipeline, tune inference batching: "
                    "for Ultralytics YOLO detection and segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"visionbatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (summary, usage, _, _) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=usage, formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("tokens", nargs="*", metavar="ARG", help="the positional argument and key=value pairs")
        cmd.add_argument("--json", action="store_true", help="print the result as JSON on stdout; logs go to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    _, _, run, show = COMMANDS[args.command]
    try:
        if args.json:
            from visionbatch.ultralytics_compat import offline

            with offline(), logs_to(sys.stderr):
                result = run(args.tokens)
            print(json.dumps(to_jsonable(result), indent=2))
        else:
            result = run(args.tokens)
            print(show(result))
    except VisionbatchError as exc:
        err(f"visionbatch {args.command}: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err(f"visionbatch {args.command}: interrupted")
        return EXIT_INTERRUPTED
    return EXIT_OK
