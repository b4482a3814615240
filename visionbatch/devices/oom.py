"""The one place that decides what counts as running out of memory, for training and inference alike."""

from __future__ import annotations

# Message fragments of allocation failures that surface as RuntimeError rather than
# torch.cuda.OutOfMemoryError. Each one means "no memory", not "bad program":
OOM_FRAGMENTS = (
    "out of memory",  # CUDA (and other accelerators') allocator failures raised as RuntimeError
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS could not allocate its workspace
    "CUDNN_STATUS_ALLOC_FAILED",  # cuDNN could not allocate its workspace
    "CUDNN_STATUS_INTERNAL_ERROR",  # cuDNN's usual report of a failed internal allocation (Ultralytics treats it so)
    "unable to find an engine",  # cuDNN found no algorithm whose workspace fits
    "not enough memory",  # torch's DefaultCPUAllocator
)



# Errors after which the device is unusable: never retry, never treat as "too big".
FATAL_FRAGMENTS = ("illegal memory access", "device-side assert", "unspecified launch failure")



def is_oom(exc: BaseException) -> bool:
    """True when `exc` means the step did not fit in memory (and nothing worse).

    Examples:
        >>> is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
        True
        >>> is_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
        False
        >>> is_oom(ValueError("out of memory"))
        False
    """
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    if any(fragment in text for fragment in FATAL_FRAGMENTS):
        return False
    return any(fragment in text for fragment in OOM_FRAGMENTS)
