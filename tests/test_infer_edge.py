"""Jetson detection, the module table, tegrastats and the memory/power probes on simulated boards.

Samplers poll on threads: the tests wait for events (a reading taken, a line printed), never for a
length of time, and check values that do not depend on how often a thread ran.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from visionbatch.devices.catalog import JETSON_MODULES, find_module
from visionbatch.devices.jetson import (
    detect_jetson,
    memory_used_bytes,
    parse_meminfo,
    parse_tegrastats,
)
from visionbatch.errors import ConfigError
from visionbatch.infer import probes
from visionbatch.infer.probes import (
    jetson_probe,  # bound here: tests may monkeypatch probes.jetson_probe
)

GIB = 2**30
ORIN_NANO_RELEASE = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                     "DATE: Wed Jan  8 01:51:37 UTC 2025\n")


def make_board(root: Path, model: str | None, compatible: str | None = None, release: str | None = None,
               mem_total_kb: int = 7650336, mem_available_kb: int = 5123456) -> Path:
    """A fake root with the files a Jetson's OS shows."""
    tree = root / "proc" / "device-tree"
    tree.mkdir(parents=True, exist_ok=True)
    if model is not None:
        (tree / "model").write_bytes(model.encode() + b"\x00")
    if compatible is not None:
        (tree / "compatible").write_bytes(compatible.encode())
    if release is not None:
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "nv_tegra_release").write_text(release)
    (root / "proc" / "meminfo").write_text(f"MemTotal:       {mem_total_kb} kB\nMemFree:  1000 kB\n"
                                           f"MemAvailable:   {mem_available_kb} kB\n")
    return root


def test_orin_nano_devkit_by_part_number(tmp_path: Path) -> None:
    compatible = "nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234"
    board = make_board(tmp_path, "NVIDIA Jetson Orin Nano Developer Kit", compatible, ORIN_NANO_RELEASE)
    info = detect_jetson(board)
    assert info.model == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info.l4t_release == "36.4.3"
    assert info.memory_total_bytes == 7650336 * 1024
    assert info.module.key == "orin-nano-8gb" and info.module.dla_cores == 0


@pytest.mark.parametrize("model, mem_total_kb, key", [
    ("NVIDIA Jetson AGX Orin Developer Kit", 30_536_000, "agx-orin-32gb"),
    ("NVIDIA Jetson AGX Orin Developer Kit", 62_000_000, "agx-orin-64gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15_300_000, "orin-nx-16gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 7_400_000, "orin-nx-8gb"),
    ("NVIDIA Jetson Orin Nano Developer Kit", 3_500_000, "orin-nano-4gb"),
    ("NVIDIA Jetson Xavier NX Developer Kit", 7_600_000, "xavier-nx"),
])
def test_module_from_model_string_and_memory(tmp_path: Path, model: str, mem_total_kb: int, key: str) -> None:
    board = make_board(tmp_path, model, release="# R35 (release), REVISION: 5.0, GCID: 1\n", mem_total_kb=mem_total_kb)
    info = detect_jetson(board)
    assert info.module.key == key and info.l4t_release == "35.5.0"


def test_not_a_jetson(tmp_path: Path) -> None:
    assert detect_jetson(make_board(tmp_path, None)) is None
    assert detect_jetson(make_board(tmp_path / "pi", "Raspberry Pi 5 Model B Rev 1.0")) is None


def test_unknown_jetson_keeps_what_it_can(tmp_path: Path) -> None:
    info = detect_jetson(make_board(tmp_path, "NVIDIA Jetson TX2", release=ORIN_NANO_RELEASE))
    assert info.model == "NVIDIA Jetson TX2" and info.module is None and info.l4t_release == "36.4.3"


def test_module_table_and_target_names() -> None:
    keys = [m.key for m in JETSON_MODULES]
    for wanted in ("orin-nano-4gb", "orin-nano-8gb", "orin-nx-8gb", "orin-nx-16gb", "agx-orin-32gb",
                   "agx-orin-64gb", "xavier-nx"):
        assert wanted in keys
    assert find_module("AGX_Orin_64GB").memory_bytes == 64 * GIB
    with pytest.raises(ConfigError) as info:
        find_module("orin-nano-16gb")
    message = str(info.value)
    assert "(did you mean 'orin-nano-8gb'?)" in message and "agx-orin-32gb" in message and "\n" not in message


def test_meminfo() -> None:
    values = parse_meminfo("MemTotal:  2000 kB\nMemAvailable:  500 kB\nHugePages_Total:  0\n")
    assert values == {"MemTotal": 2048000, "MemAvailable": 512000, "HugePages_Total": 0}
    assert memory_used_bytes(values) == 1536000
    assert memory_used_bytes({"MemTotal": 1}) is None


@pytest.mark.parametrize("line, expected", [
    # Orin Nano / NX, JetPack 6: the module input rail VDD_IN
    ("11-14-2025 10:11:12 RAM 2735/7620MB (lfb 3x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729] "
     "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] cpu@48.5C VDD_IN 4849mW/4849mW VDD_CPU_GPU_CV 476mW/476mW "
     "VDD_SOC 1427mW/1427mW", {"ram_used_bytes": 2735 * 2**20, "ram_total_bytes": 7620 * 2**20, "power_mw": 4849}),
    # Xavier NX, JetPack 4: no units on the rails
    ("RAM 2163/7772MB (lfb 1x4MB) SWAP 0/3886MB (cached 0MB) CPU [5%@1190] VDD_IN 4424/4424 "
     "VDD_CPU_GPU_CV 558/558 VDD_SOC 1393/1393", {"ram_used_bytes": 2163 * 2**20, "ram_total_bytes": 7772 * 2**20,
                                                   "power_mw": 4424}),
    # AGX Orin: no VDD_IN, the rails are summed
    ("RAM 4000/30536MB SWAP 0/15268MB VDD_GPU_SOC 2000mW/2000mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 1600mW/1600mW",
     {"ram_used_bytes": 4000 * 2**20, "ram_total_bytes": 30536 * 2**20, "power_mw": 4000}),
    ("garbage", {}),
])
def test_parse_tegrastats(line: str, expected: dict) -> None:
    assert parse_tegrastats(line) == expected


def fake_tegrastats(tmp_path: Path, power_mw: int = 5000) -> list[str]:
    script = tmp_path / "tegrastats.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        for i in range(400):
            print(f"RAM {{3000 + i}}/7620MB (lfb 3x4MB) VDD_IN {power_mw}mW/{power_mw}mW VDD_SOC 1mW/1mW", flush=True)
            time.sleep(0.01)
    """))
    return [sys.executable, str(script)]


LIVENESS_S = 60.0  # how long a test waits for a line or a reading before calling it a hang; never a measurement


def wait_for(condition: Callable[[], object], timeout_s: float = LIVENESS_S) -> None:
    """Poll until `condition()` holds; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout_s:g} s"
        time.sleep(0.01)


def ready_jetson_probe(root: Path, tegrastats_command: Sequence[str], interval_s: float) -> probes.SampledProbe:
    """`jetson_probe` once its tegrastats has printed a line, however long the process took to start."""
    probe = jetson_probe(root, tegrastats_command=tegrastats_command, interval_s=interval_s)
    wait_for(lambda: probe.power.read() is not None)
    return probe


def test_tegrastats_reader_runs_and_stops_its_process(tmp_path: Path) -> None:
    reader = probes.TegrastatsReader(fake_tegrastats(tmp_path)).open(first_line_timeout_s=LIVENESS_S)
    try:
        assert reader.power_mw() == 5000.0
        assert reader.ram_used_bytes() >= 3000 * 2**20
        process = reader._proc
    finally:
        reader.close()
    assert process.poll() is not None  # ended by close()


def test_jetson_probe_reads_unified_memory_and_power(tmp_path: Path) -> None:
    board = make_board(tmp_path / "board", "NVIDIA Jetson Orin Nano Developer Kit",
                       mem_total_kb=8_000_000, mem_available_kb=6_000_000)
    # a poll an hour apart never comes: start() and stop() take the only readings, so they are known exactly
    probe = ready_jetson_probe(board, fake_tegrastats(tmp_path, power_mw=6500), interval_s=3600)
    try:
        (board / "proc" / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 5000000 kB\n")  # a peak
        probe.start()
        (board / "proc" / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 5500000 kB\n")
        memory, power = probe.stop()
    finally:
        probe.close()
    assert probe.memory_source == "unified memory used (/proc/meminfo)"
    assert memory == 3_000_000 * 1024  # the peak, not the last reading (2_500_000 kB) nor the mean
    assert power == 6500.0


def test_sampler_polls_on_its_thread_and_skips_empty_readings() -> None:
    polled = threading.Event()
    calls = itertools.count(1)

    def read() -> float | None:
        call = next(calls)
        if call == 4:  # start() took reading 1; the thread took 2 and 3 and is at 4
            polled.set()
        return None if call == 2 else float(call)

    sampler = probes.Sampler(read, interval_s=0.001)
    sampler.start()
    assert polled.wait(LIVENESS_S)
    values = sampler.stop()
    # every reading in order, however many the thread took; None skipped; stop() took the last
    assert len(values) >= 4 and values == [1.0] + [float(call) for call in range(3, len(values) + 2)]


def test_sampler_reraises_a_reader_error() -> None:
    """An error on the thread ends its polling and comes back from stop(), though stop's own reading works."""
    failed = threading.Event()
    calls = itertools.count(1)

    def read() -> float:
        call = next(calls)
        if call == 2:  # the thread's first reading: start() took the first
            failed.set()
            raise RuntimeError("sensor gone")
        return float(call)

    sampler = probes.Sampler(read, interval_s=0.001)
    sampler.start()
    assert failed.wait(LIVENESS_S)
    with pytest.raises(RuntimeError, match="sensor gone"):
        sampler.stop()
    assert sampler.values == [1.0, 3.0]  # no reading after the error but stop's own


def test_nvml_probe_through_a_fake_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path for ONNX Runtime/TensorRT: NVML used memory (peak) and power (mean).

    start() reads 1 GiB and the next reading is 3 GiB, whether the thread or stop() takes it; every later
    one is 2 GiB: the peak is 3 GiB however often the thread ran."""
    used = itertools.chain([1 * GIB, 3 * GIB], itertools.repeat(2 * GIB))

    class NVMLError(Exception):
        pass

    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: uuid,  # found by UUID: see tests/test_devices.py
        nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(used=next(used)),
        nvmlDeviceGetPowerUsage=lambda handle: 150_000,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(uuid="GPU-0"))
    probe = probes.cuda_probe(types.SimpleNamespace(index=0), "onnxruntime")
    probe.start()
    memory, power = probe.stop()
    assert probe.memory_source == "GPU memory used (NVML, whole device)"
    assert memory == 3 * GIB and power == 150_000.0


def test_rss_probe_sees_an_allocation() -> None:
    import mmap

    import numpy as np

    from visionbatch.devices.memory import current_rss_bytes

    probe = probes.RssProbe()
    seen = []
    for _ in range(3):  # on a shared machine other pages of this process can leave RSS in the same window
        probe.start()
        before = current_rss_bytes()  # the window's start (the peak before it may have been freed since)
        # 64 MiB of fresh pages, touched: a private mapping, since malloc may hand back resident heap pages
        block = mmap.mmap(-1, 64 * 2**20)
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        after, power = probe.stop()
        block.close()
        seen.append(after - before)
        assert power is None
        if seen[-1] >= 60 * 2**20:
            break
    assert seen[-1] >= 60 * 2**20, f"RSS growth seen in each window: {seen}"
