"""Output folders under ./runs, named like Ultralytics' (fit, fit-2, fit-3, ...): never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

from visionbatch.errors import ConfigError


def new_run_dir(kind: str, name: str | None = None, project: str | os.PathLike | None = None) -> Path:
    """Create and return a fresh folder `runs/<kind>/<name>` (or `<project>/<name>`).

    An existing folder is never reused: the name gets -2, -3, ... as Ultralytics' run folders do.

    Examples:
        >>> new_run_dir("fit").relative_to(Path.cwd()).as_posix()  # doctest: +SKIP
        'runs/fit/fit'
    """
    base = Path(project).expanduser() if project else Path.cwd() / "runs" / kind
    if not base.is_absolute():
        base = Path.cwd() / "runs" / kind / base
    stem = check_run_name(name) if name is not None else kind
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"project={project}: {base} is (or is under) a file, not a folder: pass a folder for the "
                          f"runs") from None
    for index in range(1, 10_000):
        folder = base / (stem if index == 1 else f"{stem}-{index}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder.resolve()
    raise ConfigError(f"{base}: 10,000 runs named {stem}: pick another name=")


def check_run_name(name: object) -> str:
    """A run name is one folder name: no separators, no '..', no control characters.

    Examples:
        >>> check_run_name("exp1")
        'exp1'
        >>> check_run_name("../../x")
        Traceback (most recent call last):
        ...
        visionbatch.errors.ConfigError: name=../../x: a run name is one folder name: use e.g. name=exp1, and project= for another parent folder
    """
    text = str(name)
    if (not text or text in {".", ".."} or "/" in text or "\\" in text or Path(text).is_absolute()
            or any(ord(c) < 32 for c in text)):
        shown = text.encode("unicode_escape").decode()
        raise ConfigError(f"name={shown}: a run name is one folder name: use e.g. name=exp1, and project= for "
                          f"another parent folder")
    return text
