"""Helpers every command shares: the positional argument and the key=value pairs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.values import parse_pairs


def split_tokens(tokens: Sequence[str], command: str, positional: str) -> tuple[str | None, dict[str, Any]]:
    """The one positional argument (DATA or MODEL) and the key=value pairs, in any order.

    Examples:
        >>> split_tokens(["data.yaml", "epochs=3"], "train", "DATA")
        ('data.yaml', {'epochs': 3})
    """
    bare = [t for t in tokens if not _is_pair(t)]
    if len(bare) > 1:
        raise ConfigError(
            f"visionbatch {command} takes one {positional} and key=value arguments, got {', '.join(bare)}: "
            f"write options as key=value, e.g. epochs=3"
        )
    pairs = parse_pairs(t for t in tokens if _is_pair(t))
    return (bare[0] if bare else None), pairs


def read_batch(pairs: dict[str, Any]) -> dict[str, Any]:
    """`batch=` for fit and sweep: a fit request sets memory_fraction (an explicit key wins), a size is batch_size.

    Examples:
        >>> read_batch({"batch": 16}), read_batch({"batch": 0.5, "memory_fraction": 0.8})
        ({'batch_size': 16}, {'memory_fraction': 0.8})
    """
    from visionbatch.values import parse_batch

    pairs = dict(pairs)
    if "batch" in pairs:
        request = parse_batch(pairs.pop("batch"))
        if request.fit:
            pairs.setdefault("memory_fraction", request.memory_fraction)
        else:
            pairs["batch_size"] = request.batch_size
    return pairs


def typed_pairs(tokens: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The `key=value` arguments as the user typed them (key, value text), for the commands a result suggests.

    Examples:
        >>> typed_pairs(["data.yaml", "memory_budget=2GiB", "epochs=1"])
        (('memory_budget', '2GiB'), ('epochs', '1'))
    """
    return tuple((key.strip(), value.strip()) for key, _, value in
                 (token.partition("=") for token in tokens if _is_pair(token)))


def suggested_command(command: str, positional: str, typed: Sequence[tuple[str, str]], *,
                      first: Sequence[tuple[str, object]] = (), last: Sequence[tuple[str, object]] = (),
                      drop: Sequence[str] = (), ultralytics_keys: Sequence[str] = ()) -> str:
    """A `visionbatch COMMAND` line to paste into a shell: the user's own arguments carried over.

    `typed` (`typed_pairs`) are kept in their order when `command` takes them (`keys.accepts`) and
    are not in `drop`; `first` and `last` (what the result chose: the fitted model and size, the
    batch) go around them and replace the user's value of the same key. Every word is quoted
    for a POSIX shell.

    Examples:
        >>> suggested_command("fit", "my data.yaml", [("batch", "16"), ("target", "gtx1050"), ("name", "a b")],
        ...                   drop=["batch"], ultralytics_keys=["name"])
        "visionbatch fit 'my data.yaml' target=gtx1050 'name=a b'"
        >>> suggested_command("train", "d.yaml", [("imgsz", "320"), ("target", "t4"), ("epochs", "1")],
        ...                   first=[("imgsz", 320)], last=[("batch", 4)], ultralytics_keys=["epochs"])
        'visionbatch train d.yaml imgsz=320 epochs=1 batch=4'
    """
    from shlex import quote

    from visionbatch.keys import accepts

    chosen = {key for key, _ in (*first, *last)}
    kept = [(key, value) for key, value in typed
            if key not in chosen and key not in drop and accepts(command, key, ultralytics_keys)]
    words = [f"{key}={value}" for key, value in (*first, *kept, *last)]
    return " ".join(quote(word) for word in ("visionbatch", command, positional, *words))


def _is_pair(token: str) -> bool:
    """key=value, unless it is a path: a file that exists, or a '/' before the '=' (keys have none)."""
    key, sep, _ = token.partition("=")
    return bool(sep) and "/" not in key and not os.path.exists(token)


def positional(tokens: Sequence[str], command: str, name: str, key: str, example: str) -> tuple[str, dict[str, Any]]:
    """The positional argument (or its `key=` form) and the remaining pairs; refuse when missing."""
    value, pairs = split_tokens(tokens, command, name)
    if value is None:
        value = pairs.pop(key, None)
    if value is None:
        raise ConfigError(f"visionbatch {command} needs {name}: {example}")
    return str(value), pairs
