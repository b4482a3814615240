"""CUDA readings on a CPU machine: torch.cuda and NVML replaced by fakes with known values."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from visionbatch.devices.memory import Capacity

MIB = 1 << 20
GIB = 1 << 30


class FakeCuda:
    """torch.cuda's memory API with scripted readings."""

    def __init__(self) -> None:
        self.reserved_now = 300 * MIB
        self.fraction = 1.0  # torch.cuda.set_per_process_memory_fraction's, as read back
        self.peak_allocated = 0
        self.peak_reserved = 0
        self.calls: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import torch

        cuda = torch.cuda
        monkeypatch.setattr(cuda, "synchronize", lambda *a: self.calls.append("sync"))
        monkeypatch.setattr(cuda, "empty_cache", lambda: self.calls.append("empty"))
        monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda *a: self.calls.append("reset"))
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda *a: self.peak_allocated)
        monkeypatch.setattr(cuda, "max_memory_reserved", lambda *a: self.peak_reserved)
        monkeypatch.setattr(cuda, "memory_reserved", lambda *a: self.reserved_now)
        monkeypatch.setattr(cuda, "mem_get_info", lambda *a: (10 * GIB, 16 * GIB))
        monkeypatch.setattr(cuda, "get_device_name", lambda *a: "NVIDIA Fake 16GB")
        props = types.SimpleNamespace(uuid="1234abcd", total_memory=16 * GIB, name="NVIDIA Fake 16GB")
        monkeypatch.setattr(cuda, "get_device_properties", lambda *a: props)
        monkeypatch.setattr(cuda, "get_per_process_memory_fraction", lambda *a: self.fraction)


def fake_pynvml(monkeypatch: pytest.MonkeyPatch, process_bytes: int | None, used: int = 6 * GIB) -> list[str]:
    """A pynvml module whose GPU 'GPU-1234abcd' reports `used` bytes and this process at `process_bytes`."""
    import os

    seen: list[str] = []
    module = types.ModuleType("pynvml")
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: None

    def by_uuid(uuid: str):
        seen.append(uuid)
        if uuid != "GPU-1234abcd":
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return "handle"

    module.nvmlDeviceGetHandleByUUID = by_uuid
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=16 * GIB, used=used, free=16 * GIB - used)
    processes = [types.SimpleNamespace(pid=1, usedGpuMemory=2 * GIB)]
    if process_bytes is not None:
        processes.append(types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=process_bytes))
    module.nvmlDeviceGetComputeRunningProcesses = lambda h: processes
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return seen


def test_cuda_capacity_counts_the_context_with_nvml(monkeypatch) -> None:
    from visionbatch.devices.memory import cuda_capacity

    FakeCuda().install(monkeypatch)
    seen = fake_pynvml(monkeypatch, process_bytes=800 * MIB)
    capacity = cuda_capacity(0)
    assert seen == ["GPU-1234abcd"]  # matched by UUID, not by index
    assert capacity == Capacity(device="cuda:0", name="NVIDIA Fake 16GB", total_bytes=16 * GIB,
                                used_by_others_bytes=16 * GIB - (10 * GIB + 800 * MIB),
                                context_bytes=800 * MIB - 300 * MIB, usable_bytes=10 * GIB + 800 * MIB)


def test_cuda_capacity_is_the_card_a_memory_fraction_leaves(monkeypatch) -> None:
    """An emulated 4 GiB card (tools/gpu_check.py): fraction x total for torch's allocator, plus the context."""
    from visionbatch.devices.memory import cuda_capacity
    from visionbatch.fit.probes.cuda import CudaProbe

    fake = FakeCuda()
    fake.fraction = 0.25 - 500 * MIB / (16 * GIB)  # 4 GiB less the 500 MiB context, of the 16 GiB board
    fake.install(monkeypatch)
    fake_pynvml(monkeypatch, process_bytes=800 * MIB)  # 300 MiB reserved: a 500 MiB context
    capacity = cuda_capacity(0)
    assert capacity.context_bytes == 500 * MIB
    assert capacity.total_bytes == capacity.usable_bytes == 4 * GIB  # not the 10.8 GiB free on the board
    assert capacity.used_by_others_bytes == 0 and "limited to 0.2195" in capacity.name
    assert CudaProbe(0).capacity() == capacity  # what fit's probe budgets against


def test_cuda_capacity_without_nvml_falls_back_to_torch(monkeypatch) -> None:
    from visionbatch.devices.memory import cuda_capacity

    FakeCuda().install(monkeypatch)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    capacity = cuda_capacity(0)
    assert capacity.context_bytes == 0
    assert capacity.usable_bytes == 10 * GIB + 300 * MIB  # free + torch's reserved


def test_cuda_probe_reads_peaks_and_adds_the_context(monkeypatch) -> None:
    from visionbatch.fit.probes.cuda import CudaProbe

    fake = FakeCuda()
    fake.install(monkeypatch)
    fake_pynvml(monkeypatch, process_bytes=800 * MIB)
    probe = CudaProbe(0)
    probe.capacity()

    def step() -> float:
        fake.peak_allocated, fake.peak_reserved = 3 * GIB, 3 * GIB + 128 * MIB
        return 0.25

    sample = probe.measure(step, 16, "train")
    assert (sample.ok, sample.batch_size, sample.step_s) == (True, 16, 0.25)
    assert sample.allocated_bytes == 3 * GIB and sample.reserved_bytes == 3 * GIB + 128 * MIB
    assert sample.peak_bytes == 3 * GIB + 128 * MIB + 500 * MIB
    assert fake.calls[:3] == ["sync", "empty", "reset"] and fake.calls[-1] == "empty"


def test_cuda_probe_turns_oom_into_a_failed_sample_and_frees_memory(monkeypatch) -> None:
    import torch

    from visionbatch.fit.probes.cuda import CudaProbe

    fake = FakeCuda()
    fake.install(monkeypatch)
    fake_pynvml(monkeypatch, process_bytes=None)
    probe = CudaProbe(0)

    def step() -> float:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    sample = probe.measure(step, 64, "train")
    assert not sample.ok and sample.peak_bytes is None
    assert sample.error == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert fake.calls[-1] == "empty"  # the cache is freed even after the failure


def test_resolve_device_on_a_gpu_machine(monkeypatch) -> None:
    import torch

    from visionbatch.errors import ConfigError
    from visionbatch.fit.api import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None, None) == ("cuda:0", None)
    assert resolve_device("cuda:1", None) == ("cuda:1", None)
    assert resolve_device("cpu", "2GiB") == ("cpu", 2 * GIB)
    assert resolve_device(None, "2GiB") == ("cpu", 2 * GIB)  # a budget means a CPU fit
    with pytest.raises(ConfigError, match="memory_budget=2GiB is for CPU fits"):
        resolve_device(0, "2GiB")
    with pytest.raises(ConfigError, match="CUDA device 3 does not exist"):
        resolve_device(3, None)


class Mosaic:
    """Stands in for ultralytics.data.augment.Mosaic: the telemetry reads its class name and p."""

    def __init__(self, p: float) -> None:
        self.p = p


def test_training_telemetry_reads_cuda_peaks_per_epoch(monkeypatch) -> None:
    """The epoch callback on a (fake) CUDA trainer records torch.cuda's peaks for that epoch."""
    import torch

    import visionbatch.train.run as run_module
    from visionbatch.train.run import EpochTelemetry

    resets: list[object] = []
    monkeypatch.setattr(run_module, "cuda_reset_peaks", lambda device: resets.append(device))
    monkeypatch.setattr(run_module, "cuda_peaks", lambda device: (5 * GIB, 6 * GIB))
    trainer = types.SimpleNamespace(
        device=torch.device("cuda", 0), epoch=0, tloss=None, metrics={"metrics/mAP50(B)": 0.5},
        train_loader=types.SimpleNamespace(dataset=types.SimpleNamespace(transforms=types.SimpleNamespace(
            transforms=[types.SimpleNamespace(transforms=[Mosaic(0.5)])]))),
        save_dir=Path("/nonexistent"),
    )
    probe = EpochTelemetry(None)
    probe.on_train_epoch_start(trainer)
    probe.on_train_epoch_end(trainer)
    probe.on_fit_epoch_end(trainer)
    probe.on_fit_epoch_end(trainer)  # final_eval fires it again: not a new epoch
    [record] = probe.records.values()
    assert resets == [trainer.device]
    assert (record.cuda_peak_allocated_bytes, record.cuda_peak_reserved_bytes) == (5 * GIB, 6 * GIB)
    assert record.mosaic and record.metrics == {"metrics/mAP50(B)": 0.5}
