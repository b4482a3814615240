"""Memory and power readings around a batch's timed calls, one probe per kind of device.

  CPU           process peak RSS (the window is reset per batch where Linux allows it)
  CUDA, torch   torch.cuda peak reserved (what the caching allocator holds), NVML power
  CUDA, other   NVML used memory, sampled (ONNX Runtime and TensorRT allocate outside torch)
  Jetson        unified memory in use system-wide (/proc/meminfo, sampled), power from
                tegrastats (VDD_IN) or jtop when present

Each probe's `start()` opens a window and `stop()` returns (memory bytes, mean power mW).
Samplers are threads polling a reader every `interval_s`; the reader is injectable for tests.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from visionbatch.devices.jetson import memory_used_bytes, parse_tegrastats, read_meminfo
from visionbatch.devices.memory import (
    cuda_peaks,
    cuda_reset_peaks,
    nvml_handle,
    peak_rss_bytes,
    reset_peak_rss,
)


class Sampler:
    """Poll `read()` every `interval_s` on a thread between start() and stop(); keep the values.

    `read()` returning None is skipped; one exception stops the sampler and is re-raised by stop().
    """

    def __init__(self, read: Callable[[], float | None], interval_s: float = 0.02) -> None:
        self.read = read
        self.interval_s = interval_s
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        self.values = []
        self._error = None
        self._stop.clear()
        self._take()
        self._thread = threading.Thread(target=self._loop, name="visionbatch-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._take()
        if self._error is not None:
            raise self._error
        return self.values

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._take()
            except BaseException as exc:  # handed to the caller by stop()
                self._error = exc
                return

    def _take(self) -> None:
        value = self.read()
        if value is not None:
            self.values.append(float(value))


class RssProbe:
    """Peak resident memory of this process over the window (CPU inference)."""

    memory_source = "process peak RSS"

    def start(self) -> None:
        reset_peak_rss()

    def stop(self) -> tuple[int | None, float | None]:
        return peak_rss_bytes(), None


class TorchCudaProbe:
    """torch.cuda's peak reserved memory over the window, and NVML power if it reports it."""

    memory_source = "CUDA peak reserved (torch)"

    def __init__(self, device: Any, power: Sampler | None = None) -> None:
        self.device = device
        self.power = power

    def start(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        cuda_reset_peaks(self.device)
        if self.power:
            self.power.start()

    def stop(self) -> tuple[int | None, float | None]:
        import torch

        torch.cuda.synchronize(self.device)
        _allocated, reserved = cuda_peaks(self.device)
        return reserved, _mean(self.power.stop()) if self.power else None


class SampledProbe:
    """Peak of a sampled memory reading and mean of a sampled power reading (NVML, Jetson)."""

    def __init__(self, memory_source: str, memory: Sampler | None, power: Sampler | None = None,
                 closers: Sequence[Callable[[], None]] = ()) -> None:
        self.memory_source = memory_source
        self.memory = memory
        self.power = power
        self.closers = list(closers)

    def start(self) -> None:
        for sampler in (self.memory, self.power):
            if sampler:
                sampler.start()

    def stop(self) -> tuple[int | None, float | None]:
        memory = self.memory.stop() if self.memory else []
        power = self.power.stop() if self.power else []
        return (int(max(memory)) if memory else None), _mean(power)

    def close(self) -> None:
        for close in self.closers:
            close()


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def nvml_readers(index: int) -> tuple[Callable[[], float | None], Callable[[], float | None]] | None:
    """(used memory bytes, power mW) readers for torch's CUDA device `index` through NVML; None without NVML.

    The GPU is found by UUID (`nvml_handle`), so CUDA_VISIBLE_DEVICES cannot pair torch's index with
    another GPU's readings. NVML stays initialised while the readers live (pynvml counts the inits).
    """
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library or no driver: readings are optional
        return None
    try:
        handle = nvml_handle(pynvml, index)
    except Exception:  # no such GPU, or NVML cannot see it: readings are optional
        pynvml.nvmlShutdown()
        return None

    def memory() -> float:
        return float(pynvml.nvmlDeviceGetMemoryInfo(handle).used)

    def power() -> float | None:
        try:
            return float(pynvml.nvmlDeviceGetPowerUsage(handle))
        except pynvml.NVMLError:  # not supported on every board
            return None

    return memory, power


class TegrastatsReader:
    """Runs `tegrastats --interval MS` and keeps its latest parsed line; stops only what it started."""

    def __init__(self, command: Sequence[str] | None = None, interval_ms: int = 100) -> None:
        self.command = list(command) if command else ["tegrastats", "--interval", str(interval_ms)]
        self.latest: dict[str, float] = {}
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()

    @staticmethod
    def available() -> bool:
        return shutil.which("tegrastats") is not None

    def open(self, first_line_timeout_s: float = 3.0) -> TegrastatsReader:
        """Start tegrastats and wait for its first reading, so the first batch's window has one."""
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._loop, name="visionbatch-tegrastats", daemon=True)
        self._thread.start()
        self._first.wait(first_line_timeout_s)
        return self

    def _loop(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parsed = parse_tegrastats(line)
            if parsed:
                self.latest = parsed
                self._first.set()

    def power_mw(self) -> float | None:
        return self.latest.get("power_mw")

    def ram_used_bytes(self) -> float | None:
        return self.latest.get("ram_used_bytes")

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class JtopReader:
    """Power and memory through jetson-stats (`jtop`), when its service and package are there."""

    def __init__(self) -> None:
        from jtop import jtop

        self._jetson = jtop()
        self._jetson.start()

    @staticmethod
    def available() -> bool:
        import importlib.util

        return importlib.util.find_spec("jtop") is not None

    def power_mw(self) -> float | None:
        total = (self._jetson.power or {}).get("tot", {})
        return float(total["power"]) if "power" in total else None

    def close(self) -> None:
        self._jetson.close()


def jetson_probe(root: Path = Path("/"), tegrastats_command: Sequence[str] | None = None,
                 interval_s: float = 0.05) -> SampledProbe:
    """Unified memory from /proc/meminfo (sampled) and power from tegrastats, else jtop, else none."""
    memory = Sampler(lambda: memory_used_bytes(read_meminfo(root)), interval_s)
    power_reader: Any = None
    if tegrastats_command is not None or TegrastatsReader.available():
        power_reader = TegrastatsReader(tegrastats_command).open()
    elif JtopReader.available():
        try:
            power_reader = JtopReader()
        except Exception:  # the jtop service is not running: power stays unread
            power_reader = None
    power = Sampler(power_reader.power_mw, interval_s) if power_reader else None
    closers = [power_reader.close] if power_reader else []
    return SampledProbe("unified memory used (/proc/meminfo)", memory, power, closers)


def cuda_probe(device: Any, backend: str) -> Any:
    """The probe for a CUDA device: torch's counters for PyTorch, NVML for the others."""
    readers = nvml_readers(device.index or 0)
    power = Sampler(readers[1], 0.05) if readers else None
    if backend == "pytorch":
        return TorchCudaProbe(device, power)
    memory = Sampler(readers[0], 0.02) if readers else None
    return SampledProbe("GPU memory used (NVML, whole device)", memory, power)
