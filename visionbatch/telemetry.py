"""Memory and device readings taken while something runs: process RSS peaks, torch.cuda peaks.

Linux lets a process reset its peak-RSS mark (`/proc/self/clear_refs`, value 5), so peaks are
per phase (per epoch) rather than per process lifetime; elsewhere the lifetime peak is used.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window; False where the OS cannot (the peak is then the lifetime one)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last reset (or since start)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int:
    """Resident memory of this process now."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


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
