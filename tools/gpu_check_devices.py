"""The devices tools/gpu_check_worker.py measures on: CUDA device 0 with a smaller card emulated, or a simulated one.

`CudaDevice.card()` emulates a card with torch's per-process memory fraction (the allocator then
raises a real out-of-memory error past it), and can make torch.cuda's totals read as that card's
for the code that sizes itself from them (AutoBatch, Ultralytics' trainer). `SimulatedDevice` is
the --simulate stand-in: `simulated_step`'s law in place of CUDA's counters. `TrainingMeter` reads
either device's peaks per epoch from Ultralytics' callbacks.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from typing import Any

GIB, MIB = 1 << 30, 1 << 20
# (major, minor) compute capability -> the architecture key of calibration.json
ARCHS = {(6,): "pascal", (7, 0): "volta", (7, 2): "volta", (7, 5): "turing", (8, 0): "ampere", (8, 6): "ampere",
         (8, 7): "orin", (8, 9): "ada", (9,): "hopper", (10,): "blackwell", (12,): "blackwell"}


def arch_of(major: int, minor: int) -> str:
    """calibration.json's architecture key for a compute capability.

    Examples:
        >>> arch_of(9, 0), arch_of(8, 6), arch_of(8, 9), arch_of(6, 1), arch_of(3, 5)
        ('hopper', 'ampere', 'ada', 'pascal', 'default')
    """
    return ARCHS.get((major, minor)) or ARCHS.get((major,)) or "default"


def simulated_step(model: str, task: str, imgsz: int, batch: int, phase: str) -> tuple[int, int]:
    """(allocated, reserved) bytes of one step on the simulated device: a fixed part plus a part per image.

    Examples:
        >>> simulated_step("yolo11n.yaml", "detect", 640, 10, "train")
        (2093796556, 2334633491)
    """
    size = 2.7 if "11s" in model else 1.0
    per_image = 0.16 * GIB * size * (1.35 if task == "segment" else 1.0) * (imgsz / 640) ** 2
    allocated = int(0.35 * GIB * size + per_image * batch * (0.3 if phase == "val" else 1.0))
    return allocated, int(1.1 * allocated + 30 * MIB)


class SimulatedDevice:
    """The gpu lane's device under --simulate: `simulated_step` for memory, a real OOM past the card."""

    simulated = True
    name = "SIMULATED device (a memory law, not a measurement)"
    total_bytes = 139 * GIB
    context_bytes = 520 * MIB
    train_device, workers = "cpu", 0
    batch_cap = 160

    def __init__(self) -> None:
        self.card_bytes: int | None = None
        self.growth = 0.04  # reserved memory grows 4% an epoch, as allocator fragmentation makes it grow

    def describe(self) -> dict[str, Any]:
        import torch

        return {"name": self.name, "total_bytes": self.total_bytes, "driver": "-", "torch": torch.__version__,
                "cuda": "-", "capability": "9.0", "arch": "hopper", "context_init_bytes": 300 * MIB,
                "context_bytes": self.context_bytes, "simulated": True}

    @contextlib.contextmanager
    def card(self, card_bytes: int | None, seen: bool = False):
        self.card_bytes = card_bytes
        try:
            yield
        finally:
            self.card_bytes = None

    def limit_bytes(self) -> int:
        return (self.card_bytes or self.total_bytes) - self.context_bytes

    def step(self, case: dict, batch: int, phase: str, epoch: int = 0) -> dict[str, int]:
        """A simulated step's peaks; a real torch OOM when it does not fit the card."""
        import torch

        allocated, reserved = simulated_step(case["model"], case["task"], case["imgsz"], batch, phase)
        reserved = int(reserved * (1 + self.growth * epoch))
        if reserved > self.limit_bytes():
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated: {phase} at batch {batch})")
        return {"allocated": allocated, "reserved": reserved}

    def reset_peaks(self) -> None:
        pass

    def clean(self) -> None:
        gc.collect()

    def allocated_now(self) -> int:
        return 0


class CudaDevice:
    """CUDA device 0, with the CUDA context and libraries loaded up front so that every reading has them."""

    simulated = False
    train_device, workers = 0, 8

    def __init__(self) -> None:
        import torch

        self.torch = torch
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what Ultralytics' deterministic init sets
        torch.zeros(1, device="cuda:0")
        self.total_bytes = torch.cuda.mem_get_info(0)[1]
        self.context_init_bytes = self._context()
        with torch.autocast("cuda", dtype=torch.float16):  # load cuBLAS and cuDNN: the context grows with them
            x = torch.randn(2, 8, 32, 32, device="cuda:0", requires_grad=True)
            torch.nn.functional.conv2d(x, torch.randn(8, 8, 3, 3, device="cuda:0")).sum().backward()
            (x.flatten(1) @ x.flatten(1).T).sum().item()
        del x
        self.clean()
        measured = self._context()
        self.context_bytes = measured if measured is not None else 550 * MIB  # no NVML: calibration.json's hopper
        self.context_measured = measured is not None
        self.card_bytes: int | None = None

    def _context(self) -> int | None:
        from visionbatch.devices.memory import nvml_reading

        reading = nvml_reading(0)
        if reading is None or reading.process_bytes is None:
            return None
        return max(reading.process_bytes - self.torch.cuda.memory_reserved(0), 0)

    def describe(self) -> dict[str, Any]:
        torch = self.torch
        props = torch.cuda.get_device_properties(0)
        driver = "-"
        with contextlib.suppress(Exception):  # the driver's version is a label: NVML may not say it
            import pynvml

            pynvml.nvmlInit()
            driver = str(pynvml.nvmlSystemGetDriverVersion())
            pynvml.nvmlShutdown()
        return {"name": props.name, "total_bytes": self.total_bytes, "driver": driver, "torch": torch.__version__,
                "cuda": str(torch.version.cuda), "cudnn": torch.backends.cudnn.version(),
                "capability": f"{props.major}.{props.minor}", "arch": arch_of(props.major, props.minor),
                "context_init_bytes": self.context_init_bytes, "context_bytes": self.context_bytes,
                "context_measured": self.context_measured, "simulated": False}

    @contextlib.contextmanager
    def card(self, card_bytes: int | None, seen: bool = False):
        """Emulate a card of `card_bytes` (None: the whole GPU). The allocator refuses to reserve past
        card - context; with `seen`, torch.cuda's total and free memory also read as that card's, since
        AutoBatch and Ultralytics' trainer (its clear-the-cache threshold) size themselves from those.
        The emulated total is the nominal size: a real "16 GB" board reports a little less."""
        cuda = self.torch.cuda
        self.clean()
        self.card_bytes = card_bytes
        limit = (card_bytes or self.total_bytes) - self.context_bytes
        cuda.set_per_process_memory_fraction(min(limit / self.total_bytes, 1.0) if card_bytes else 1.0, 0)
        saved = (cuda.get_device_properties, cuda.mem_get_info)
        if seen and card_bytes:
            props = EmulatedProperties(saved[0](0), card_bytes)
            cuda.get_device_properties = lambda device=None: props
            cuda.mem_get_info = lambda device=None: (max(limit - cuda.memory_reserved(0), 0), card_bytes)
        try:
            yield
        finally:
            cuda.get_device_properties, cuda.mem_get_info = saved
            cuda.set_per_process_memory_fraction(1.0, 0)
            self.card_bytes = None
            self.clean()

    def step(self, case: dict, batch: int, phase: str, epoch: int = 0) -> dict[str, int]:
        cuda = self.torch.cuda
        return {"allocated": cuda.max_memory_allocated(0), "reserved": cuda.max_memory_reserved(0)}

    def reset_peaks(self) -> None:
        self.torch.cuda.synchronize(0)
        self.torch.cuda.reset_peak_memory_stats(0)

    def clean(self) -> None:
        gc.collect()
        self.torch.cuda.empty_cache()
        self.torch.cuda.reset_peak_memory_stats(0)

    def allocated_now(self) -> int:
        return self.torch.cuda.memory_allocated(0)


class EmulatedProperties:
    """torch's device properties with the emulated card's total memory (everything else is the real GPU's)."""

    def __init__(self, real: Any, total_memory: int) -> None:
        self._real, self.total_memory = real, total_memory

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class TrainingMeter:
    """Ultralytics callbacks that read the device's peaks per epoch: the training part, then validation."""

    def __init__(self, device: Any, case: dict, batch: int, epochs: int, close_mosaic: int) -> None:
        self.device, self.case, self.batch = device, case, batch
        self.epochs, self.close_mosaic = epochs, close_mosaic
        self.records: list[dict] = []
        self.current: dict[str, Any] = {}
        self.phase, self.oom = "setup", None

    def callbacks(self) -> dict[str, Any]:
        return {"on_pretrain_routine_start": self.setup, "on_train_epoch_start": self.epoch_start,
                "on_train_epoch_end": self.train_end, "on_fit_epoch_end": self.val_end}

    def setup(self, trainer: Any) -> None:
        trainer.final_eval = lambda: None  # it validates best.pt once more: time, and no new memory figure

    def epoch_start(self, trainer: Any) -> None:
        # from 8.4.13 an OOM in the first epoch halves the batch and retries up to 3 times: with the
        # retries used up it raises at once, and the trial records where it ran out
        trainer._oom_retries = 3
        epoch = int(trainer.epoch)
        mosaic = not (self.close_mosaic and epoch >= self.epochs - self.close_mosaic)
        self.current, self.phase = {"epoch": epoch + 1, "mosaic": mosaic}, "train"
        self.device.reset_peaks()

    def train_end(self, trainer: Any) -> None:
        epoch = self.current["epoch"] - 1
        self.current["train"] = self.device.step(self.case, self.batch, "train", epoch)
        self.current["reserved_end"] = self.current["train"]["reserved"] if self.device.simulated else \
            self.device.torch.cuda.memory_reserved(0)  # what GPU_mem shows at the epoch's last batch
        self.device.reset_peaks()
        self.phase = "val"

    def val_end(self, trainer: Any) -> None:
        if self.phase != "val":
            return  # final_eval's call, or a second call for the same epoch
        self.current["val"] = self.device.step(self.case, 2 * self.batch, "val", self.current["epoch"] - 1)
        self.records.append(self.current)
        self.phase = "between"

    def out_of_memory(self, message: str) -> None:
        self.oom = {"oom_phase": self.phase, "oom_epoch": self.current.get("epoch"), "error": message}

    def result(self) -> dict:
        return {"oom": self.oom is not None, **(self.oom or {}), "epochs": self.records}


class NvmlPeak:
    """This process's memory as NVML sees it (context included), sampled every 50 ms in a thread."""

    def __init__(self) -> None:
        self.peak, self._done = 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            import pynvml

            from visionbatch.devices.memory import nvml_handle

            pynvml.nvmlInit()
        except Exception:  # no NVML: no sampled figure (the torch peaks remain)
            return
        try:
            handle = nvml_handle(pynvml, 0)
            while not self._done.is_set():
                for entry in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if entry.pid == os.getpid() and entry.usedGpuMemory:
                        self.peak = max(self.peak, int(entry.usedGpuMemory))
                self._done.wait(0.05)
        except Exception:  # MIG or a VM without per-process accounting
            pass
        finally:
            pynvml.nvmlShutdown()

    def stop(self) -> int | None:
        self._done.set()
        self._thread.join(timeout=5)
        return self.peak or None


def conv_workspace(torch: Any, device: CudaDevice) -> int:
    """Transient bytes beyond the tensors in a typical YOLO convolution's forward and backward (fp16,
    3x3, 64 channels, 16 images of 160 px), with the trainer's settings (deterministic, no benchmark)."""
    cuda = torch.cuda
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).to("cuda:0", torch.float16)
        x = torch.randn(16, 64, 160, 160, device="cuda:0", dtype=torch.float16, requires_grad=True)
        device.reset_peaks()
        y = conv(x)
        cuda.synchronize(0)
        forward = cuda.max_memory_allocated(0) - cuda.memory_allocated(0)
        grad = torch.ones_like(y)
        device.reset_peaks()
        y.backward(grad)
        cuda.synchronize(0)
        backward = cuda.max_memory_allocated(0) - cuda.memory_allocated(0)
        del conv, x, y, grad
        return max(forward, backward, 0)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


class NullRunner:
    """The simulated device's workload: nothing runs; a step takes 10 ms + 1 ms per image."""

    def train_step(self, batch_size: int, boundary: Any = None) -> float:
        return 0.0

    def val_step(self, batch_size: int) -> float:
        return 0.0

    def time_steps(self, batch_size: int, steps: int = 3) -> list[float]:
        return [0.01 + 0.001 * batch_size] * steps

    def persistent(self) -> list[Any]:
        return []


def simulated_trial(device: SimulatedDevice, case: dict, batch: int, epochs: int, card: int) -> dict:
    device.card_bytes, records = card, []
    try:
        for epoch in range(epochs):
            record = {"epoch": epoch + 1}
            for phase, size in (("train", batch), ("val", 2 * batch)):
                try:  # real runs hold a little more than one step: the loader's batch in flight
                    record[phase] = device.step(case, size, phase, epoch)
                except Exception as exc:
                    return {"oom": True, "oom_phase": phase, "oom_epoch": epoch + 1, "error": str(exc),
                            "epochs": records}
            records.append(record)
    finally:
        device.card_bytes = None
    return {"oom": False, "epochs": records}
