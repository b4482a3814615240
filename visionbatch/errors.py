"""Errors that reach the user: each message names the input, what is wrong and the fix.

The CLI prints `visionbatch: <message>` and exits with code 2 for every `VisionbatchError`
(code 74 for a `StorageError`: the input was fine, the disk was not); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class VisionbatchError(Exception):
    """Base class: a problem the user can fix, explained in one line."""


class ConfigError(VisionbatchError, ValueError):
    """A bad argument: unknown key, wrong type or impossible value."""


class DatasetError(VisionbatchError):
    """A data.yaml, image folder, image or label file that cannot be trained on."""


class ProbeError(VisionbatchError):
    """A memory or speed measurement that could not be made."""


class BudgetError(VisionbatchError):
    """A memory budget too small for the smallest possible workload."""


class StorageError(VisionbatchError):
    """A file visionbatch must write could not be written: a full disk, a read-only or missing folder."""


class TrainingOutOfMemoryError(VisionbatchError):
    """Training ran out of memory and visionbatch's recovery could not go on (`train/recovery.py`)."""
