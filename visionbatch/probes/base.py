"""The probe interface and the one place that decides what counts as running out of memory."""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from visionbatch.plans import ProbeSample

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


@dataclass(frozen=True, slots=True)
class Capacity:
    """What memory a device offers this process.

    Attributes:
        device: 'cuda:0', 'cpu', or a target name.
        name: the GPU or CPU model, or the target's name.
        total_bytes: the device's memory (None for a CPU budget).
        used_by_others_bytes: memory other processes hold (NVML; 0 when unknown).
        context_bytes: memory this process holds outside torch's allocator (the CUDA context).
        usable_bytes: what this process may use: total minus others, or the budget given.
    """

    device: str
    name: str
    total_bytes: int | None
    used_by_others_bytes: int
    context_bytes: int
    usable_bytes: int


class Probe(ABC):
    """Runs a step and reads its peak memory.

    Subclasses implement `_begin` (reset counters, start tracking), `_end` (return the sample's
    memory fields) and `_clean` (free what the step left, also after a failure).
    """

    device: str = "cpu"
    noise_floor_bytes: float = 0.0  # the smallest uncertainty a reading carries

    @abstractmethod
    def capacity(self) -> Capacity: ...

    @abstractmethod
    def _begin(self, persistent: Sequence[Any]) -> None: ...

    @abstractmethod
    def _end(self) -> dict[str, int | None]: ...

    def _clean(self) -> None:
        gc.collect()

    def pass_boundary(self) -> None:
        """Called by a workload between the forward passes of one measured step (a no-op here)."""

    def measure(
        self, step: Callable[[], float | None], batch_size: int, phase: str, persistent: Sequence[Any] = ()
    ) -> ProbeSample:
        """Run `step` (which returns seconds per step, or None) and return its sample.

        An out-of-memory error becomes a failed sample; any other error propagates.
        """
        try:
            self._begin(persistent)
            seconds = step()
            memory = self._end()
        except Exception as exc:
            if not is_oom(exc):
                raise
            message = str(exc).strip().splitlines()[0][:300]
            return ProbeSample(batch_size, phase, ok=False, peak_bytes=None, error=message)
        finally:
            self._clean()
        return ProbeSample(batch_size, phase, ok=True, step_s=seconds, **memory)
