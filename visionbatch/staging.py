"""What Ultralytics reads: a linked mirror of a checked dataset and a data.yaml that names only it.

Handing Ultralytics the user's own data.yaml and folders has two costs:
- it writes beside the data it reads: label caches (`labels/train.cache`) beside the labels, and
  with `cache=disk` an `.npy` file beside every image;
- it runs a data.yaml's `download:` (a URL, a shell line, or Python through `exec`) whenever it
  judges a split missing, and it resolves paths differently from visionbatch in places (no `~`,
  no beside-the-YAML fallback for list entries), so "missing" can happen after our checks passed.

So `staged_dataset()` links every image visionbatch checked, and the label it checked with it, into
visionbatch's cache folder, and writes a data.yaml there with absolute paths into that mirror and
no `download:` key. Ultralytics' caches land in the mirror; the user's folders are only read. The
mirror is keyed by the data.yaml's absolute path and a stamp of the file lists and YAML content,
reused while they are unchanged, and built in a temporary folder that is renamed into place, so a
crash never leaves a half-built mirror that looks complete. While a run uses a mirror it holds a
shared lock on it; a mirror of an older version of the same dataset is removed only when no run
holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visionbatch.dataset import DatasetSummary, label_path, source_images
from visionbatch.errors import StorageError

MIRROR_VERSION = 1  # bump when the layout changes: old mirrors are then rebuilt
YAML_NAME = "data.yaml"
LOCK_NAME = ".lock"
# data.yaml keys that never pass through: where the data is or how to fetch it (replaced by the mirror's own
# paths), and the classes (replaced by the checked names)
REPLACED_KEYS = frozenset({"path", "train", "val", "test", "minival", "download", "yaml_file", "nc", "names"})


@dataclass(frozen=True, slots=True)
class StagedDataset:
    """A dataset as Ultralytics will read it.

    Attributes:
        yaml_path: the data.yaml to hand Ultralytics (absolute paths into `root`, no download:).
        root: the mirror folder.
        content: that YAML's mapping.
        reused: the mirror existed already (its label caches are warm).
        images: images linked, over all splits.
    """

    yaml_path: Path
    root: Path
    content: dict[str, Any]
    reused: bool
    images: int


def mirrors_dir() -> Path:
    """Where dataset mirrors live: `<visionbatch cache>/datasets`."""
    from visionbatch.ultralytics_compat import config_dir

    return config_dir() / "datasets"


def ultralytics_yaml(summary: DatasetSummary, root: Path, splits: Mapping[str, str | list[str]]) -> dict[str, Any]:
    """The data.yaml mapping Ultralytics gets: the user's descriptive keys, checked names, absolute `splits`.

    Location keys (`path`, `train`, `val`, `test`, `download`, ...) never pass through.

    Examples:
        >>> from visionbatch.dataset import load_dataset
        >>> summary = load_dataset("datasets/shapes/data.yaml", check_images=False)
        >>> content = ultralytics_yaml(summary, Path("/m"), {"train": "/m/train", "val": "/m/val"})
        >>> content["path"], content["train"], "download" in content, content["names"][0]
        ('/m', '/m/train', False, 'circle')
    """
    content = {k: v for k, v in summary.raw.items() if k not in REPLACED_KEYS}
    content.update(path=str(root), **dict(splits), names=dict(summary.names))
    return content


def _link_plan(summary: DatasetSummary) -> tuple[dict[str, list[str]], list[tuple[str, str]], int]:
    """Per split, the mirror's image folders (relative); every (link, target) pair; the number of images."""
    splits: dict[str, list[str]] = {}
    links: list[tuple[str, str]] = []
    images_linked = 0
    seen: set[str] = set()
    for key, split in summary.splits().items():
        sources = sorted(split.sources)  # Ultralytics sorts the whole list: keep the sources in path order
        width = len(str(len(sources) - 1))
        folders = []
        for number, source in enumerate(sources):
            images = sorted(os.path.abspath(f) for f in source_images(Path(source)))
            if not images:
                continue
            base = source if os.path.isdir(source) else os.path.commonpath([os.path.dirname(f) for f in images])
            folder = f"{key}/{number:0{width}d}/images"
            folders.append(folder)
            for image in images:
                link = f"{folder}/{os.path.relpath(image, base)}"
                if link in seen:
                    continue  # a list file naming one image twice
                seen.add(link)
                links.append((link, image))
                images_linked += 1
                label = label_path(image)
                if os.path.isfile(label):
                    links.append((label_path(link), label))
        splits[key] = folders
    return splits, links, images_linked


def _stamp(summary: DatasetSummary, splits: Mapping[str, list[str]], links: list[tuple[str, str]]) -> str:
    described = {k: v for k, v in summary.raw.items() if k not in REPLACED_KEYS}
    payload = json.dumps([MIRROR_VERSION, summary.yaml_path, summary.names, splits, links, described],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _key(summary: DatasetSummary) -> str:
    """One folder per data.yaml: its parent folder's name (readable) and a hash of its absolute path."""
    path = Path(summary.yaml_path)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.parent.name)[:40] or "dataset"
    return f"{name}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def staged_dataset(summary: DatasetSummary, base: Path | None = None) -> Iterator[StagedDataset]:
    """Link `summary`'s checked splits into a mirror and yield it, holding a shared lock while in use.

    Raises:
        StorageError: the cache folder cannot be written (names the folder and the fix).
    """
    base = Path(base) if base is not None else mirrors_dir()
    splits, links, images = _link_plan(summary)
    stamp = _stamp(summary, splits, links)
    home = base / _key(summary)
    final = home / stamp
    lock = None
    try:
        home.mkdir(parents=True, exist_ok=True)
        reused = (final / YAML_NAME).is_file()
        if reused:
            lock = _lock(final, shared=True)
            if not (final / YAML_NAME).is_file():  # pruned between the check and the lock: build it again
                _unlock(lock)
                lock, reused = None, False
        if not reused:
            lock = _build(summary, home, final, splits, links)
        os.utime(final)
        _prune(home, keep=final)
        content = yaml.safe_load((final / YAML_NAME).read_text())
    except OSError as exc:
        if lock is not None:
            _unlock(lock)
        raise StorageError(
            f"cannot write visionbatch's dataset mirror in {home} ({exc.__class__.__name__}: {exc.strerror or exc}): "
            f"free space there, or set XDG_CACHE_HOME to a writable folder"
        ) from None
    try:
        yield StagedDataset(final / YAML_NAME, final, content, reused, images)
    finally:
        _unlock(lock)


def _build(summary: DatasetSummary, home: Path, final: Path, splits: Mapping[str, list[str]],
           links: list[tuple[str, str]]) -> Any:
    """Build the mirror in a temporary folder, lock it, and rename it into place; return the lock."""
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=home))
    lock = _lock(building, shared=True)
    try:
        made: set[str] = set()
        for link, target in links:
            parent = os.path.dirname(link)
            if parent not in made:
                os.makedirs(building / parent, exist_ok=True)
                made.add(parent)
            _link(target, building / link)
        absolute = {k: [str(final / f) for f in v] for k, v in splits.items()}
        content = ultralytics_yaml(summary, final, {k: v[0] if len(v) == 1 else v for k, v in absolute.items()})
        (building / YAML_NAME).write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
        try:
            os.rename(building, final)
        except OSError:
            if not (final / YAML_NAME).is_file():
                raise
            _unlock(lock)  # another process built the same mirror first: use that one
            lock = _lock(final, shared=True)
            shutil.rmtree(building, ignore_errors=True)
        return lock
    except BaseException:
        _unlock(lock)
        shutil.rmtree(building, ignore_errors=True)
        raise


def _link(target: str, link: Path) -> None:
    try:
        os.symlink(target, link)
    except OSError:
        os.link(target, link)  # no symlinks here (Windows without the privilege): a hard link reads the same


def _lock(folder: Path, shared: bool) -> Any:
    """An open lock file on `folder` (flock; shared for users, exclusive to remove). None where flock is missing."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(folder / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if shared else fcntl.LOCK_NB))
    except OSError:
        handle.close()
        raise
    return handle


def _unlock(handle: Any) -> None:
    if handle is not None:
        handle.close()  # closing releases the flock


def _prune(home: Path, keep: Path) -> None:
    """Remove the mirrors of older versions of this dataset that no run holds (and stale half-builds)."""
    for folder in home.iterdir():
        if folder == keep or not folder.is_dir():
            continue
        if not (folder / LOCK_NAME).exists():
            continue  # not a mirror of ours
        try:
            handle = _lock(folder, shared=False)
        except OSError:
            continue  # in use by a running job (or a build in progress)
        if handle is None:
            return  # no flock on this platform: whether a run uses it cannot be told, so keep everything
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            _unlock(handle)
