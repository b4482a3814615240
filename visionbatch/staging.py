"""What Ultralytics reads: a linked mirror of a checked dataset and a data.yaml that names only it.

Handing Ultralytics the user's own data.yaml and folders has two costs:
- it writes beside the data it reads: label caches (`labels/train.cache`) beside the labels, and
  with `cache=disk` an `.npy` file beside every image;
- it runs a data.yaml's `download:` (a URL, a shell line, or Python through `exec`) whenever it
  judges a split missing, and it resolves paths differently from visionbatch in places (no `~`,
  no `../` fallback for list entries), so "missing" can happen after our checks passed.

So `staged_dataset()` links every image visionbatch checked, and the label it checked with it, into
visionbatch's cache folder, and writes a data.yaml there with absolute paths into that mirror and
no `download:` key. Ultralytics' caches land in the mirror; the user's folders are only read.

Layout, per split: `<split>/images/<path>` links each image under its path relative to the folder
all the split's images share, and `<split>.txt` lists them, one line per entry of the user's
split. So Ultralytics, which sorts the list, meets the images in the order it would have met the
originals (`fraction=` picks the same ones), a `.txt` list keeps its repeats (oversampling), and
`label_path()` of each link finds the link of its label.

With `remap_classes=True` (`DatasetSummary.class_ids`), each label is not linked but written,
renumbered 0..N-1 (`dataset.remap_label_text`), atomically into the mirror, and the mirror's stamp
covers each label's size and modification time, so an edited label is renumbered again.

A mirror is keyed by the data.yaml's absolute path and a stamp of the file lists and the YAML's
content, and reused while they are unchanged. It is built in a temporary folder and renamed into
place, and removed by renaming it away first, so a mirror under its real name is always whole.
While a run uses a mirror it holds a shared lock (flock) on it; mirrors of other versions of the
same dataset are removed only when no run holds them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visionbatch.dataset import DatasetSummary, label_path, remap_label_text
from visionbatch.errors import DatasetError, StorageError
from visionbatch.files import atomic_write_text, config_dir

MIRROR_VERSION = 2  # bump when the layout changes: old mirrors are then rebuilt
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
        images: distinct images linked, over all splits.
    """

    yaml_path: Path
    root: Path
    content: dict[str, Any]
    reused: bool
    images: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a mirror holds: links (relative link path -> target), each split's list (relative links), and the
    links that are labels (written renumbered instead of linked when the summary remaps class ids)."""

    links: dict[str, str]
    lists: dict[str, list[str]]
    images: int
    labels: frozenset[str] = frozenset()


def mirrors_dir() -> Path:
    """Where dataset mirrors live: `<visionbatch cache>/datasets`."""
    return config_dir() / "datasets"


def ultralytics_yaml(summary: DatasetSummary, root: Path, splits: Mapping[str, str | list[str]]) -> dict[str, Any]:
    """The data.yaml mapping Ultralytics gets: the user's descriptive keys, checked names, absolute `splits`.

    Location keys (`path`, `train`, `val`, `test`, `download`, ...) never pass through.

    Examples:
        >>> from visionbatch.dataset import load_dataset
        >>> summary = load_dataset("datasets/shapes/data.yaml", check_images=False)
        >>> content = ultralytics_yaml(summary, Path("/m"), {"train": "/m/train.txt", "val": "/m/val.txt"})
        >>> content["path"], content["train"], "download" in content, content["names"][0]
        ('/m', '/m/train.txt', False, 'circle')
    """
    content = {k: v for k, v in summary.raw.items() if k not in REPLACED_KEYS}
    content.update(path=str(root), **dict(splits), names=dict(summary.names))
    return content


def _plan(summary: DatasetSummary) -> _Plan:
    links: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    labels: set[str] = set()
    for key, split in summary.splits().items():
        entries = [os.path.abspath(f) for f in split.files]
        base = os.path.commonpath([os.path.dirname(f) for f in entries])
        listed = []
        for image in entries:
            link = f"{key}/images/{os.path.relpath(image, base)}"
            if link not in links:
                links[link] = image
                label = label_path(image)
                if os.path.isfile(label):
                    links.setdefault(label_path(link), label)  # x.jpg and x.png share x.txt: one link
                    labels.add(label_path(link))
            listed.append(link)
        lists[key] = listed
    images = sum(1 for link in links if link not in labels)
    return _Plan(links, lists, images, frozenset(labels))


def _stamp(summary: DatasetSummary, plan: _Plan) -> str:
    described = {str(k): v for k, v in summary.raw.items() if k not in REPLACED_KEYS}
    written = [_file_stamp(plan.links[label]) for label in sorted(plan.labels)] if summary.remapped else []
    payload = json.dumps([MIRROR_VERSION, summary.yaml_path, summary.names, plan.lists, plan.links,
                          yaml.safe_dump(described, sort_keys=False), summary.class_ids, written],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _file_stamp(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a label the mirror holds a renumbered copy of: a change rebuilds the mirror."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def write_remapped_label(ids: Mapping[int, int], label: str | os.PathLike, path: str | os.PathLike) -> None:
    r"""Write `label` (a checked label file) to `path` with its class ids renumbered by `ids`, atomically.

    `ids` is `DatasetSummary.class_map()`, made once by the caller for all of a dataset's labels.

    Examples:
        >>> import tempfile
        >>> from visionbatch.dataset import load_dataset
        >>> summary = load_dataset("datasets/shapes/data.yaml", check_images=False)
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.txt").write_text("4 0.5 0.5 0.2 0.2\n")
        >>> write_remapped_label(summary.class_map(), folder / "a.txt", folder / "b.txt")  # nothing remapped
        >>> (folder / "b.txt").read_text()
        '4 0.5 0.5 0.2 0.2\n'
    """
    text = Path(label).read_text(encoding="utf-8-sig")
    try:
        renumbered = remap_label_text(text, ids)
    except (KeyError, ValueError) as exc:  # the file changed since the check read it
        raise DatasetError(f"{label}: a class id that is not in names ({exc}) appeared after the dataset was "
                           f"checked: fix the label and run again") from None
    atomic_write_text(path, renumbered)


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

    Examples:
        >>> import tempfile
        >>> from visionbatch.dataset import load_dataset
        >>> summary = load_dataset("datasets/shapes/data.yaml", check_images=False)
        >>> with staged_dataset(summary, Path(tempfile.mkdtemp())) as staged:
        ...     staged.images, staged.reused, sorted(staged.content)[:3]
        (200, False, ['names', 'path', 'train'])
    """
    base = Path(base) if base is not None else mirrors_dir()
    plan = _plan(summary)
    home = base / _key(summary)
    final = home / _stamp(summary, plan)
    lock = None
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock, reused = _reuse(final)
        if lock is None:
            lock = _build(summary, plan, home, final)
        os.utime(final)
        _prune(home, keep=final)
        content = yaml.safe_load((final / YAML_NAME).read_text())
    except OSError as exc:
        _unlock(lock)
        raise _cache_error(exc, home) from None
    try:
        yield StagedDataset(final / YAML_NAME, final, content, reused, plan.images)
    finally:
        _unlock(lock)


def _cache_error(exc: OSError, home: Path) -> StorageError:
    what = f"{exc.__class__.__name__}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space there, or set XDG_CACHE_HOME to a folder on another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "set XDG_CACHE_HOME to a folder you can write"
    else:
        fix = f"remove {home} (visionbatch rebuilds it), or set XDG_CACHE_HOME to another folder"
    return StorageError(f"cannot write visionbatch's dataset mirror in {home} ({what}): {fix}")


def _reuse(final: Path) -> tuple[Any, bool]:
    """(shared lock, True) on a whole mirror at `final`; (None, False) when there is none to reuse."""
    if not (final / YAML_NAME).is_file():
        return None, False
    try:
        lock = _lock(final, shared=True)
    except FileNotFoundError:
        return None, False  # removed between the check and the lock
    if not (final / YAML_NAME).is_file():  # renamed away by a prune between the check and the lock
        _unlock(lock)
        return None, False
    return lock, True


def _build(summary: DatasetSummary, plan: _Plan, home: Path, final: Path) -> Any:
    """Build the mirror in a temporary folder, lock it, and rename it into place; return the lock."""
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=home))
    lock = _lock(building, shared=True)
    try:
        made: set[str] = set()
        ids = summary.class_map()
        for link, target in plan.links.items():
            parent = os.path.dirname(link)
            if parent not in made:
                os.makedirs(building / parent, exist_ok=True)
                made.add(parent)
            if summary.remapped and link in plan.labels:
                write_remapped_label(ids, target, building / link)  # a renumbered copy, never the original
            else:
                _link(target, building / link)
        splits = {}
        for key, listed in plan.lists.items():
            (building / f"{key}.txt").write_text("".join(f"{final / link}\n" for link in listed))
            splits[key] = str(final / f"{key}.txt")
        content = ultralytics_yaml(summary, final, splits)
        (building / YAML_NAME).write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
        if final.exists() and not (final / YAML_NAME).is_file():
            _remove(final)  # something not whole under the real name (tampered with): out of the way
        try:
            os.rename(building, final)
        except OSError:
            reused_lock, reused = _reuse(final)
            if not reused:
                raise
            _unlock(lock)  # another process built the same mirror first: use that one
            lock = reused_lock
            _remove(building)
        return lock
    except BaseException:
        _unlock(lock)
        _remove(building)
        raise


def _link(target: str, link: Path) -> None:
    try:
        os.symlink(target, link)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        os.link(target, link)  # no symlinks here (Windows without the privilege): a hard link reads the same


def _lock(folder: Path, shared: bool) -> Any:
    """An open lock file on `folder` (flock; shared for users, exclusive to remove). None where flock is missing."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(folder / LOCK_NAME, "a+")  # noqa: SIM115  held open while the lock is held
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB * (not shared))
    except OSError:
        handle.close()
        raise
    return handle


def _unlock(handle: Any) -> None:
    if handle is not None:
        handle.close()  # closing releases the flock


def _remove(folder: Path) -> None:
    """Rename `folder` away (atomic: never half-deleted under its name), then delete it."""
    doomed = folder.with_name(f".removing-{uuid.uuid4().hex}")
    try:
        os.rename(folder, doomed)
    except OSError:
        doomed = folder
    shutil.rmtree(doomed, ignore_errors=True)


def _prune(home: Path, keep: Path) -> None:
    """Remove mirrors of other versions of this dataset that no run holds, and leftovers of crashed runs."""
    for folder in home.iterdir():
        if folder == keep or not folder.is_dir():
            continue
        if folder.name.startswith(".removing-"):
            shutil.rmtree(folder, ignore_errors=True)
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
            _remove(folder)
        finally:
            _unlock(handle)
