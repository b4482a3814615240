"""The one place that decides what counts as running out of memory: training, fitting and inference alike.

An out-of-memory error means "this batch is too big here": fit records a failed sample, the
inference sweep keeps the batches that fitted. Anything else is a real failure and propagates.
"""

from __future__ import annotations

import dataclasses
import re
import sys

# Message fragments (compared without case) of allocation failures that surface as a RuntimeError,
# or as ONNX Runtime's own exception types, rather than as torch's OutOfMemoryError. Each one means
# "no memory", not "bad program":
OOM_FRAGMENTS = (
    "out of memory",  # torch's CUDA allocator as RuntimeError, TensorRT's allocator, CUDA_ERROR_OUT_OF_MEMORY's text
    "cublas_status_alloc_failed",  # cuBLAS could not allocate its workspace
    "cudnn_status_alloc_failed",  # cuDNN could not allocate its workspace
    "cudnn_status_internal_error",  # cuDNN's usual report of a failed internal allocation (Ultralytics treats it so)
    "unable to find an engine",  # cuDNN found no algorithm whose workspace fits
    "not enough memory",  # torch's DefaultCPUAllocator
    "failed to allocate memory",  # ONNX Runtime's BFC arena (CPU and CUDA execution providers)
    "bad_alloc",  # C++ std::bad_alloc surfacing through ONNX Runtime
)

# Errors after which the device is unusable: never retry, never treat as "too big", whatever else
# the message says ("an illegal memory access was encountered (out of memory?)" is not an OOM).
FATAL_FRAGMENTS = ("illegal memory access", "device-side assert", "unspecified launch failure")


def is_oom(exc: BaseException) -> bool:
    """True when `exc` means the step or batch did not fit in memory (and nothing worse).

    torch's OutOfMemoryError and Python's MemoryError (numpy and the C allocator on the host) always
    count; a RuntimeError, or an exception of ONNX Runtime's C++ core (its Fail, RuntimeException,
    ... derive from Exception only), counts when its message has an OOM_FRAGMENTS fragment and no
    FATAL_FRAGMENTS one. Any other type never counts, whatever its message.

    Examples:
        >>> is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
        True
        >>> is_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
        False
        >>> is_oom(ValueError("out of memory")), is_oom(MemoryError())
        (False, True)
    """
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # not imported yet: the error cannot be one of torch's
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if not isinstance(exc, RuntimeError) and not _from_onnxruntime(exc):
        return False
    text = str(exc).lower()
    if any(fragment in text for fragment in FATAL_FRAGMENTS):
        return False
    return any(fragment in text for fragment in OOM_FRAGMENTS)


def _from_onnxruntime(exc: BaseException) -> bool:
    """An exception type of ONNX Runtime's pybind layer (onnxruntime.capi.onnxruntime_pybind11_state)."""
    return type(exc).__module__.startswith("onnxruntime.")


_SIZE = r"([0-9]+(?:\.[0-9]+)?) ?([KMGT]i?B|bytes)"
_UNIT_BYTES = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
               "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}  # torch prints binary sizes


def _size(text: str, *patterns: str) -> int | None:
    """The size the first matching pattern reads (SIZE marks it), e.g. "1.50 GiB" -> 1610612736."""
    for pattern in patterns:
        match = re.search(pattern.replace("SIZE", _SIZE), text)
        if match:
            return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class OomReading:
    """What torch's CUDA out-of-memory message says about the device when it ran out.

    Attributes:
        tried_bytes: the allocation that failed.
        total_bytes: the card's total memory.
        free_bytes: what the driver still had free.
        in_use_bytes: everything this process held, the CUDA context included (torch 2.x messages).
        reserved_bytes: what torch's caching allocator held (allocated + reserved but unallocated).
        allowed_bytes: the cap `torch.cuda.set_per_process_memory_fraction` puts on the allocator.
    """

    tried_bytes: int | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    in_use_bytes: int | None = None
    reserved_bytes: int | None = None
    allowed_bytes: int | None = None

    def room_bytes(self) -> tuple[int | None, int | None]:
        """(what the step needed, what this process could have), both as memory in use (the CUDA
        context included): needed is in use + the failed allocation; the room is the per-process cap
        plus what lies outside the allocator (in use - reserved) when torch names a cap, else in use
        + free (other processes' share left out), else the card's total.

        Examples:
            >>> OomReading(tried_bytes=2, in_use_bytes=90, free_bytes=1, total_bytes=200).room_bytes()
            (92, 91)
            >>> OomReading(tried_bytes=2, in_use_bytes=90, reserved_bytes=80, allowed_bytes=81).room_bytes()
            (92, 91)
            >>> OomReading(tried_bytes=2, in_use_bytes=90, total_bytes=200).room_bytes()
            (92, 200)
        """
        if self.in_use_bytes is not None and self.allowed_bytes is not None and self.reserved_bytes is not None:
            room = self.allowed_bytes + self.in_use_bytes - self.reserved_bytes
        elif self.in_use_bytes is not None and self.free_bytes is not None:
            room = self.in_use_bytes + self.free_bytes
        else:
            room = self.total_bytes
        return self.needed_bytes(), room

    def needed_bytes(self, context_bytes: int = 0) -> int | None:
        """The least the step needed, in the plans' unit (reserved + CUDA context): what the process
        held when the allocation failed, plus that allocation.

        Examples:
            >>> OomReading(tried_bytes=2 << 30, in_use_bytes=10 << 30).needed_bytes() == 12 << 30
            True
            >>> OomReading(tried_bytes=1, reserved_bytes=5).needed_bytes(context_bytes=10)
            16
            >>> OomReading(total_bytes=8).needed_bytes() is None
            True
        """
        if self.tried_bytes is None:
            return None
        if self.in_use_bytes is not None:
            return self.in_use_bytes + self.tried_bytes
        if self.reserved_bytes is not None:
            return self.reserved_bytes + context_bytes + self.tried_bytes
        return None


def read_oom(exc: BaseException) -> OomReading:
    """The figures in an out-of-memory message (torch 2.x and 1.x wordings); None where absent.

    Examples:
        >>> message = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
        ...            "of which 1.50 GiB is free. Including non-PyTorch memory, this process has 77.68 GiB memory "
        ...            "in use. Of the allocated memory 75.00 GiB is allocated by PyTorch, and 1.00 GiB is reserved "
        ...            "by PyTorch but unallocated.")
        >>> reading = read_oom(RuntimeError(message))
        >>> reading.tried_bytes == 2 << 30, reading.reserved_bytes == 76 << 30, round(reading.in_use_bytes / 2**30, 2)
        (True, True, 77.68)
        >>> old = ("CUDA out of memory. Tried to allocate 36.00 MiB (GPU 0; 7.93 GiB total capacity; 130.35 MiB "
        ...        "already allocated; 47.06 MiB free; 188.00 MiB reserved in total by PyTorch)")
        >>> read_oom(RuntimeError(old)).reserved_bytes == 188 << 20
        True
        >>> read_oom(MemoryError())
        OomReading(tried_bytes=None, total_bytes=None, free_bytes=None, in_use_bytes=None, reserved_bytes=None, allowed_bytes=None)
    """
    text = str(exc)
    allocated = _size(text, r"Of the allocated memory SIZE is allocated by PyTorch")
    unallocated = _size(text, r"and SIZE is reserved by PyTorch but unallocated")
    reserved = (allocated + unallocated if allocated is not None and unallocated is not None
                else _size(text, r"SIZE reserved in total by PyTorch"))
    return OomReading(
        tried_bytes=_size(text, r"Tried to allocate SIZE"),
        total_bytes=_size(text, r"total capacity of SIZE", r"SIZE total capacity"),
        free_bytes=_size(text, r"of which SIZE is free", r"; SIZE free"),
        in_use_bytes=_size(text, r"this process has SIZE memory in use"),
        allowed_bytes=_size(text, r"SIZE allowed;"),
        reserved_bytes=reserved,
    )
