"""Files visionbatch writes: whole or not at all, and a full disk named in one line.

Every file visionbatch writes itself (plans, JSON, plots, deployment configs, the resolved
data.yaml, exports) goes to a temporary name in the same folder and is renamed into place, so a
crash, Ctrl-C, SIGTERM or a full disk never leaves a half-written file under the real name.
A failure of the disk (no space, quota, read-only) while writing one becomes a `StorageError`
naming the folder and the file (`storage_error()`); other errors pass through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from visionbatch.errors import ConfigError, StorageError
from visionbatch.text import printable

# errno values that mean "the disk", not "the program"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
# what libraries say when a write failed for lack of space without an errno on the exception
DISK_MESSAGES = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                 "file write failed")  # the last: torch's PytorchStreamWriter on a full disk
LOCK_NAME = ".lock"  # a cache folder's lock file (`locked_folder`)
CACHE_ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.json")  # a cache entry: its key's SHA-256 (`results.json_sha256`)
CACHE_KEY_PREFIX = re.compile(r"[0-9a-f]{1,64}")  # what `visionbatch cache clear KEY` accepts


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on any failure delete it.

    Raises:
        StorageError: the disk failed (full, quota, read-only) while the file was written.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with atomic_path(folder / "a.txt") as tmp:
        ...     _ = tmp.write_text("whole")
        >>> sorted(p.name for p in folder.iterdir()), (folder / "a.txt").read_text()
        (['a.txt'], 'whole')
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a server running as another user must read it
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if is_disk_error(exc):
            raise storage_error(exc, path.parent, path.name) from None
        raise


def config_dir() -> Path:
    """visionbatch's own folder: Ultralytics' settings and font, dataset mirrors (`$XDG_CACHE_HOME/visionbatch`).

    Examples:
        >>> config_dir().name
        'visionbatch'
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "visionbatch"


@contextlib.contextmanager
def locked_folder(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock (an exclusive `flock` on `folder/.lock`, made with the folder) for the block:
    one writer at a time among processes sharing a cache folder."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def cache_entry_files(folder: Path) -> list[Path]:
    """The entry files in a cache folder (`CACHE_ENTRY_NAME`), sorted; none when the folder is not there."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if CACHE_ENTRY_NAME.fullmatch(p.name) and p.is_file())


def cache_entry_size(path: Path) -> int:
    """An entry file's size in bytes; 0 when it cannot be read (removed while listed, say)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def remove_cache_entries(folder: Path, prefix: str | None = None) -> tuple[str, ...]:
    """Remove every entry of a cache folder, or the one whose key hash starts with `prefix`, under the folder's
    lock; return the key hashes removed. Leftovers of killed writers go too when every entry is removed.

    Raises:
        ConfigError: `prefix` is not hex digits, or it starts more than one entry's key (nothing is removed).

    Examples:
        >>> remove_cache_entries(Path("/nonexistent"), "3fa2"), remove_cache_entries(Path("/nonexistent"))
        ((), ())
        >>> remove_cache_entries(Path("/nonexistent"), "xyz")
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: xyz: a key is hex digits (0-9, a-f), as 'visionbatch cache list' shows them
    """
    check_cache_key_prefix(prefix)
    if not folder.is_dir():
        return ()
    with locked_folder(folder):
        chosen = cache_entries_starting(folder, prefix)
        for path in chosen:
            path.unlink(missing_ok=True)
        if prefix is None:  # under the lock no writer is mid-write: a temporary file left is a killed writer's
            for leftover in folder.glob(".*.partial"):
                leftover.unlink(missing_ok=True)
    return tuple(p.stem for p in chosen)


def cache_entries_starting(folder: Path, prefix: str | None) -> list[Path]:
    """A cache folder's entry files whose key hash starts with `prefix` (all of them for None): at most one.

    Raises:
        ConfigError: `prefix` is not hex digits, or it starts more than one entry's key.
    """
    check_cache_key_prefix(prefix)
    chosen = [p for p in cache_entry_files(folder) if prefix is None or p.stem.startswith(prefix)]
    if prefix is not None and len(chosen) > 1:
        listed = ", ".join(p.stem[:12] for p in chosen[:4]) + (", ..." if len(chosen) > 4 else "")
        raise ConfigError(f"{prefix}: {len(chosen)} entries' keys start with it ({listed}): give more of the key")
    return chosen


def check_cache_key_prefix(prefix: str | None) -> None:
    """Refuse a KEY that cannot start an entry's name (`CACHE_KEY_PREFIX`); None (every entry) passes.

    Examples:
        >>> check_cache_key_prefix("3fa2"), check_cache_key_prefix(None)
        (None, None)
        >>> check_cache_key_prefix("3FA2")
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: 3FA2: a key is hex digits (0-9, a-f), as 'visionbatch cache list' shows them
    """
    if prefix is not None and not CACHE_KEY_PREFIX.fullmatch(prefix):
        raise ConfigError(f"{printable(prefix, 80)}: a key is hex digits (0-9, a-f), as 'visionbatch cache list' shows them")


def entry_field(mapping: Any, name: str) -> Any:
    """`mapping[name]` of a cache entry's JSON when `mapping` is an object, else None: an entry read from disk
    may hold anything where an object was written.

    Examples:
        >>> entry_field({"a": 1}, "a"), entry_field([1], "a"), entry_field(None, "a")
        (1, None, None)
    """
    return mapping.get(name) if isinstance(mapping, dict) else None


class UnusableEntry(ValueError):
    """A cache entry that is there but cannot be one (`read_json_entry`); the message says why."""


def read_json_entry(path: Path, max_bytes: int) -> Any:
    """The JSON in a cache entry visionbatch wrote itself: a regular file, not a link, of at most `max_bytes`.

    Nothing in the cache folder is trusted: a link (to /dev/zero, say), a FIFO, a huge file or JSON nested
    deep enough to exhaust the parser is refused without reading more than `max_bytes + 1` bytes and
    without blocking.

    Raises:
        FileNotFoundError: no entry.
        UnusableEntry: anything else that is not a whole JSON file, with why.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "a.json").write_text('{"x": 1}')
        8
        >>> read_json_entry(folder / "a.json", 100)
        {'x': 1}
        >>> (folder / "b.json").write_text("[" * 100000)
        100000
        >>> read_json_entry(folder / "b.json", 1 << 20)
        Traceback (most recent call last):
        visionbatch.files.UnusableEntry: unreadable (RecursionError)
    """
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: a link
        raise UnusableEntry("a link, not an entry" if exc.errno == errno.ELOOP
                            else f"unreadable ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(handle, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise UnusableEntry("not a regular file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnusableEntry(f"larger than {max_bytes} bytes: not an entry")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: not JSON
        raise UnusableEntry(f"unreadable ({type(exc).__name__})") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy `source` to `path` atomically; return the path."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Let `write(tmp)` produce the file at a temporary path, then rename it to `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def is_disk_error(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, is the disk failing (full, quota, read-only).

    Examples:
        >>> is_disk_error(OSError(errno.ENOSPC, "No space left on device"))
        True
        >>> is_disk_error(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
        True
        >>> is_disk_error(ValueError("bad"))
        False
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_ERRNOS:
            return True
        if any(text in str(current) for text in DISK_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def storage_error(exc: BaseException, folder: str | os.PathLike, what: str) -> StorageError:
    """One line for a disk failure while writing `what` into `folder`.

    Examples:
        >>> str(storage_error(OSError(errno.ENOSPC, "No space left on device"), "runs/detect/train", "checkpoints"))
        'no space left on the device of runs/detect/train while writing checkpoints: free space there, or write the run elsewhere with project=<folder on another disk>'
    """
    reason = "no space left on the device of"
    for current in (exc, exc.__cause__, exc.__context__):
        if isinstance(current, OSError) and current.errno == errno.EROFS:
            reason = "read-only file system at"
        elif isinstance(current, OSError) and current.errno == errno.EDQUOT:
            reason = "disk quota exceeded at"
    if Path(folder).resolve().is_relative_to(config_dir().resolve()):  # visionbatch's cache, not the run
        fix = "free space there, or set XDG_CACHE_HOME to a folder on another disk"
    else:
        fix = "free space there, or write the run elsewhere with project=<folder on another disk>"
    return StorageError(f"{reason} {folder} while writing {what}: {fix}")
