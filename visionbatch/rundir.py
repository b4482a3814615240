"""Output folders under ./runs, named as Ultralytics names its own (fit, fit-2, fit-3, ...): never overwritten."""

from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath

from visionbatch.errors import ConfigError


def new_run_dir(kind: str, name: str | None = None, project: str | os.PathLike | None = None) -> Path:
    """Create and return a fresh folder `runs/<kind>/<name>` (or `<project>/<name>`).

    An existing folder is never reused: the name gets -2, -3, ... as Ultralytics' `increment_path` names
    the run folders of `yolo train` and `visionbatch train` (train, train-2; dashed since Ultralytics
    8.4.39, which visionbatch requires; `exp2` is YOLOv5's and older Ultralytics' naming).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as project:
        ...     [new_run_dir("fit", project=project).name for _ in range(3)]
        ['fit', 'fit-2', 'fit-3']
    """
    base = Path(project).expanduser() if project else Path.cwd() / "runs" / kind
    if not base.is_absolute():
        base = Path.cwd() / "runs" / kind / base
    stem = check_run_name(name, kind) if name is not None else kind
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"project={project}: {base} is (or is under) a file, not a folder: pass a folder for the "
                          f"runs") from None
    for index in range(1, 10_000):
        folder = base / (stem if index == 1 else f"{stem}-{index}")  # Ultralytics' increment_path, sep="-"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder.resolve()
    raise ConfigError(f"{base}: 10,000 runs named {stem}: pick another name=")


def check_run_name(value: object, default: str = "run") -> str:
    """A run folder's name: one folder under the project, never a path that leads elsewhere.

    `default` is the name suggested when nothing of `value` is usable (`name=..`).

    Examples:
        >>> check_run_name("exp1")
        'exp1'
        >>> check_run_name("../../x")
        Traceback (most recent call last):
        ...
        visionbatch.errors.ConfigError: name=../../x: a run name is one folder name, without '/', '\\', '..' or control characters: use name=x, or project= for another parent folder
    """
    from visionbatch.text import identifier, is_control, printable

    text = str(value)
    if re.search(r"[\\/]", text) or text in {".", ".."} or PureWindowsPath(text).drive \
            or any(is_control(char) for char in text):
        parts = [part for part in re.split(r"[\\/]", text) if part.strip(".")]
        suggestion = identifier(parts[-1]) if parts else default
        raise ConfigError(f"name={printable(text)}: a run name is one folder name, without '/', '\\', '..' or "
                          f"control characters: use name={suggestion}, or project= for another parent folder")
    return text


def check_project(value: object, kind: str) -> str:
    """The parent folder of the run folders: refused when it, or a folder above it, is a file.

    A relative `project=` lands under `runs/<kind>/`, as `new_run_dir` (and Ultralytics' trainer) put it.
    """
    from visionbatch.text import is_control, printable

    text = str(value)
    if any(is_control(char) for char in text):
        raise ConfigError(f"project={printable(text)}: a folder path has no control characters: "
                          f"give a plain folder path, or leave project= out")
    if not text:
        return text
    try:
        base = Path(text).expanduser()
    except RuntimeError:  # ~someone with no home folder here
        raise ConfigError(f"project={printable(text)}: no home folder for {printable(text.split('/')[0])} here: "
                          f"give the folder's full path") from None
    if not base.is_absolute():
        base = Path.cwd() / "runs" / kind / base
    for folder in (base, *base.parents):
        if folder.is_dir():
            break
        if folder.exists() or folder.is_symlink():
            raise ConfigError(f"project={printable(text)}: {printable(folder)} is a file, not a folder: give a "
                              f"folder (existing, or one to create) for the run folders, or leave project= out")
    return text
