"""visionbatch.files: written whole or not at all; a failing disk is one StorageError naming the file."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from visionbatch.errors import StorageError
from visionbatch.files import (
    atomic_path,
    atomic_write_text,
    is_disk_error,
    storage_error,
)


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    target.write_text("old, whole")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old, whole"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_a_full_disk_is_a_storage_error_naming_the_file(tmp_path: Path) -> None:
    target = tmp_path / "run" / "visionbatch.json"
    with pytest.raises(StorageError, match=r"no space left on the device of .*/run while writing visionbatch.json"):
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(target.parent.iterdir()) == []


def test_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """mkstemp makes 0600; a Triton server running as another user must read the configs."""
    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "config.pbtxt", "name: m\n")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("exc,expected", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EROFS, "Read-only file system"), True),
    (OSError(errno.ENOENT, "No such file"), False),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), True),
    (ValueError("unrelated"), False),
])
def test_disk_errors_are_told_from_others(exc: BaseException, expected: bool) -> None:
    assert is_disk_error(exc) is expected


def test_a_disk_error_raised_from_another_counts() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert is_disk_error(outer)
        assert "no space left on the device of /runs" in str(storage_error(outer, "/runs", "last.pt"))


def test_read_only_and_quota_are_worded_as_such() -> None:
    assert str(storage_error(OSError(errno.EROFS, "x"), "/r", "a")).startswith("read-only file system at /r")
    assert str(storage_error(OSError(errno.EDQUOT, "x"), "/r", "a")).startswith("disk quota exceeded at /r")
