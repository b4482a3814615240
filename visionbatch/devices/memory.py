"""What devices exist and what memory they offer: torch.cuda and NVML readings.

NVML (the `pynvml` module from nvidia-ml-py) sees what torch cannot: other processes' memory
and this process's CUDA context. Device handles are matched by UUID, so CUDA_VISIBLE_DEVICES
reordering cannot pair a torch index with the wrong GPU. Without NVML the readings fall back to
torch.cuda.mem_get_info and the context is reported as unknown (0).
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def nvml_handle(nvml: Any, device_index: int) -> Any:
    """NVML's handle for torch's CUDA device `device_index`, found by the GPU's UUID.

    torch numbers the GPUs CUDA_VISIBLE_DEVICES leaves, in its order; NVML numbers every GPU on
    the board. Only the UUID names the same GPU in both. `nvml` is the initialised pynvml module.

    Raises:
        Exception: whatever torch or NVML raise (no such device, no UUID, no permission).
    """
    import torch

    uuid = str(torch.cuda.get_device_properties(device_index).uuid)
    # torch prints the bare UUID; NVML wants it with the 'GPU-' (or 'MIG-') prefix nvidia-smi shows
    return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")


def nvml_reading(device_index: int) -> NvmlReading | None:
    """NVML memory figures for torch's CUDA device `device_index`, or None without NVML."""
    try:
        with _nvml() as nvml:
            handle = nvml_handle(nvml, device_index)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            process = None
            for entry in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if entry.pid == os.getpid() and entry.usedGpuMemory is not None:
                    process = int(entry.usedGpuMemory)
            return NvmlReading(int(info.total), int(info.used), process)
    except Exception:  # NVML missing, no permission, MIG without process accounting: fall back to torch
        return None


def gpu_identity(device_index: int) -> dict[str, Any]:
    """What names torch's CUDA device `device_index` and the software under it (the plan cache's key).

    The UUID (as NVML and nvidia-smi write it) names the board whatever CUDA_VISIBLE_DEVICES does to
    the index; the driver comes from NVML (None without it); `memory_limit` is the per-process
    fraction torch's allocator enforces (1.0: none; tools/gpu_check.py emulates a smaller card with it).
    """
    import torch

    props = torch.cuda.get_device_properties(device_index)
    uuid = str(props.uuid)
    driver = None
    try:
        with _nvml() as nvml:
            driver = nvml.nvmlSystemGetDriverVersion()
    except Exception:  # NVML missing or not permitted: the CUDA version below still names the stack
        driver = None
    return {
        "name": torch.cuda.get_device_name(device_index),
        "uuid": uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}",
        "total_bytes": int(props.total_memory),
        "driver": driver.decode() if isinstance(driver, bytes) else driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "memory_limit": per_process_fraction(device_index),
    }


def cuda_capacity(device_index: int) -> Capacity:
    """Memory the CUDA device offers this process now.

    usable = free now + what this process already holds (NVML's per-process figure, or torch's
    reserved bytes when NVML cannot say); context = this process's NVML figure minus torch's
    reserved bytes: the CUDA context and libraries outside torch's allocator. Under
    `torch.cuda.set_per_process_memory_fraction` the allocator reserves at most fraction x total,
    so the process can hold that plus its context: the device is then that smaller card (how
    tools/gpu_check.py emulates one).
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
    name = torch.cuda.get_device_name(device_index)
    fraction = per_process_fraction(device_index)
    if fraction < 1.0:
        total = int(fraction * total) + context
        usable = min(usable, total)
        name = f"{name} (limited to {fraction:.4g} of its memory)"
    return Capacity(
        device=f"cuda:{device_index}",
        name=name,
        total_bytes=int(total),
        used_by_others_bytes=int(max(total - usable, 0)),
        context_bytes=int(context),
        usable_bytes=int(usable),
    )


def per_process_fraction(device_index: int) -> float:
    """The per-process memory fraction torch's caching allocator enforces on the device (1.0: none)."""
    import torch

    reader = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch 2.5 and later
    return 1.0 if reader is None else float(reader(device_index))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


_STATUS = Path("/proc/self/status")


_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window; False where the OS cannot (the peak is then the lifetime one)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status ('VmHWM', 'VmRSS') in bytes, or None where there is none."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last reset (or since start)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int:
    """Resident memory of this process now."""
    now = _status_bytes("VmRSS")
    return now if now is not None else peak_rss_bytes()


def trim_heap() -> bool:
    """Hand the heap's free pages back to the OS (glibc's `malloc_trim`); False where there is no glibc.

    glibc keeps what a step freed for later allocations, so without a trim the next reading of
    resident memory would still hold an earlier, larger step's memory.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc's soname on every Linux it runs on
    except (OSError, AttributeError):  # musl, macOS, Windows: no malloc_trim
        return None


class ProcessRss:
    """This process's resident memory, as a CPU memory budget reads it (tests pass a fake).

    `start_window()` collects garbage, trims the heap and starts a new peak window (True when the
    OS could reset the peak; otherwise `peak()` is the process's lifetime peak).
    """

    def now(self) -> int:
        return current_rss_bytes()

    def peak(self) -> int:
        return peak_rss_bytes()

    def start_window(self) -> bool:
        import gc

        gc.collect()
        trim_heap()
        return reset_peak_rss()


def cuda_reset_peaks(device) -> None:
    """Reset torch.cuda's peak counters for `device` (a torch.device of type cuda)."""
    import torch

    torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks(device) -> tuple[int, int]:
    """(peak allocated, peak reserved) bytes on `device` since the last reset."""
    import torch

    return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)


def device_name(device) -> str:
    """A readable name for a torch.device: the GPU model, or the CPU model."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    from ultralytics.utils.torch_utils import get_cpu_info

    return get_cpu_info()


@dataclass(frozen=True, slots=True)
class Capacity:
    """What memory a device offers this process.

    Attributes:
        device: 'cuda:0', 'cpu', or a target name.
        name: the GPU or CPU model, or the target's name.
        total_bytes: the device's memory (None for a CPU budget).
        used_by_others_bytes: memory other processes hold (NVML; 0 when unknown).
        context_bytes: memory this process holds outside torch's allocator (the CUDA context); for a
            CPU budget, the training process's baseline: what it holds before any step's tensors
            (`fit.probes.cpu`).
        usable_bytes: what this process may use: total minus others, or the budget given.
    """

    device: str
    name: str
    total_bytes: int | None
    used_by_others_bytes: int
    context_bytes: int
    usable_bytes: int
