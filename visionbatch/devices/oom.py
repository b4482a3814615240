"""The one place that decides what counts as running out of memory: training, fitting and inference alike.

An out-of-memory error means "this batch is too big here": fit records a failed sample, the
inference sweep keeps the batches that fitted. Anything else is a real failure and propagates.
"""

from __future__ import annotations

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
