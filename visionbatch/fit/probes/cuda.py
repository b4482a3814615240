"""Measure a step on a CUDA device: torch.cuda peaks plus the CUDA context NVML sees."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visionbatch.devices.memory import Capacity
from visionbatch.fit.probes.base import Probe
from visionbatch.units import MIB


class CudaProbe(Probe):
    """Peak reserved and allocated memory of a step, from torch.cuda's counters.

    The fitted reading is peak reserved + the CUDA context: what NVML would show for this process
    at the step's peak, and what has to fit on the card.
    """

    noise_floor_bytes = 2 * MIB  # the caching allocator hands out large blocks in 2 MiB steps

    def __init__(self, device_index: int = 0) -> None:
        import torch

        self.index = device_index
        self.device = f"cuda:{device_index}"
        self._torch = torch
        self._capacity: Capacity | None = None

    def capacity(self) -> Capacity:
        from visionbatch.devices.memory import cuda_capacity

        self._capacity = cuda_capacity(self.index)
        return self._capacity

    def _begin(self, persistent: Sequence[Any]) -> None:
        cuda = self._torch.cuda
        cuda.synchronize(self.index)
        cuda.empty_cache()
        cuda.reset_peak_memory_stats(self.index)

    def _end(self) -> dict[str, int | None]:
        cuda = self._torch.cuda
        cuda.synchronize(self.index)
        allocated = cuda.max_memory_allocated(self.index)
        reserved = cuda.max_memory_reserved(self.index)
        context = self._capacity.context_bytes if self._capacity else 0
        return {"peak_bytes": reserved + context, "allocated_bytes": allocated, "reserved_bytes": reserved}

    def _clean(self) -> None:
        super()._clean()
        self._torch.cuda.empty_cache()
