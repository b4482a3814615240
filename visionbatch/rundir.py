"""Output folders under ./runs, named like Ultralytics' (fit, fit-2, fit-3, ...): never overwritten."""

from __future__ import annotations

import os
from pathlib import Path


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
    stem = name or kind
    base.mkdir(parents=True, exist_ok=True)
    for index in range(1, 10_000):
        folder = base / (stem if index == 1 else f"{stem}-{index}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder.resolve()
    raise RuntimeError(f"{base}: 10,000 runs named {stem}: pick another name=")
