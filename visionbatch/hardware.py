"""What devices exist and what memory they offer: torch.cuda and NVML readings.

NVML (the `pynvml` module from nvidia-ml-py) sees what torch cannot: other processes' memory
and this process's CUDA context. Device handles are matched by UUID, so CUDA_VISIBLE_DEVICES
reordering cannot pair a torch index with the wrong GPU. Without NVML the readings fall back to
torch.cuda.mem_get_info and the context is reported as unknown (0).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from visionbatch.probes.base import Capacity


@dataclass(frozen=True, slots=True)
class NvmlReading:
    """NVML's view of one GPU.

    Attributes:
        total_bytes: memory on the board.
        used_bytes: memory in use by every process (and the driver).
        process_bytes: memory used by this process (context + torch's reserved + other libraries).
    """

    total_bytes: int
    used_bytes: int
    process_bytes: int | None


@contextlib.contextmanager
def _nvml() -> Iterator[Any]:
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def nvml_reading(device_index: int) -> NvmlReading | None:
    """NVML memory figures for torch's CUDA device `device_index`, or None without NVML."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        with _nvml() as nvml:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            process = None
            for entry in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if entry.pid == os.getpid() and entry.usedGpuMemory is not None:
                    process = int(entry.usedGpuMemory)
            return NvmlReading(int(info.total), int(info.used), process)
    except Exception:  # NVML missing, no permission, MIG without process accounting: fall back to torch
        return None


def cuda_capacity(device_index: int) -> Capacity:
    """Memory the CUDA device offers this process now.

    usable = free now + what this process already holds (NVML's per-process figure, or torch's
    reserved bytes when NVML cannot say); context = this process's NVML figure minus torch's
    reserved bytes: the CUDA context and libraries outside torch's allocator.
    """
    import torch

    free, total = torch.cuda.mem_get_info(device_index)
    reserved = torch.cuda.memory_reserved(device_index)
    reading = nvml_reading(device_index)
    if reading is not None and reading.process_bytes is not None:
        held = reading.process_bytes
        context = max(held - reserved, 0)
    else:
        held, context = reserved, 0
    usable = free + held
    return Capacity(
        device=f"cuda:{device_index}",
        name=torch.cuda.get_device_name(device_index),
        total_bytes=int(total),
        used_by_others_bytes=int(max(total - usable, 0)),
        context_bytes=int(context),
        usable_bytes=int(usable),
    )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0
