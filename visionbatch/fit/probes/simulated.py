"""A simulated CUDA device for tests and dry runs: a known memory law, real OOM errors.

It reaches the code paths a CPU cannot: out-of-memory failures, noisy and non-monotonic
readings, the CUDA context. It measures nothing; never use it to make a plan for training.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from visionbatch.devices.memory import Capacity
from visionbatch.fit.probes.base import Probe

MemoryLaw = Callable[[int, str], float]  # (batch size, phase) -> bytes the step would need at peak


class SimulatedProbe(Probe):
    """A device of `total_bytes` whose steps need `law(batch, phase)` bytes.

    A step raises torch.cuda.OutOfMemoryError (the real class) when its need exceeds
    `total_bytes - used_by_others_bytes - context_bytes`, as a full card would; otherwise the
    reading is the need plus the context, plus Gaussian noise of `noise_bytes`. Step time follows
    `seconds(batch)` (default: 10 ms + 1 ms per image).
    """

    def __init__(
        self,
        law: MemoryLaw,
        total_bytes: int,
        used_by_others_bytes: int = 0,
        context_bytes: int = 0,
        noise_bytes: float = 0.0,
        seconds: Callable[[int], float] | None = None,
        seed: int = 0,
        name: str = "Simulated GPU",
        noise_floor_bytes: float = 0.0,
        device: str = "cuda:0",
    ) -> None:
        self.law = law
        self.total_bytes = total_bytes
        self.used_by_others_bytes = used_by_others_bytes
        self.context_bytes = context_bytes
        self.noise_bytes = noise_bytes
        self.seconds = seconds or (lambda b: 0.010 + 0.001 * b)
        self.name = name
        self.device = device  # the name it reports (a DDP fit's second GPU is 'cuda:1')
        self.noise_floor_bytes = noise_floor_bytes
        self._random = random.Random(seed)
        self._current: tuple[int, str] = (0, "train")
        self.calls: list[tuple[int, str]] = []

    def capacity(self) -> Capacity:
        return Capacity(device=self.device, name=self.name, total_bytes=self.total_bytes,
                        used_by_others_bytes=self.used_by_others_bytes, context_bytes=self.context_bytes,
                        usable_bytes=self.total_bytes - self.used_by_others_bytes)

    def measure(self, step, batch_size: int, phase: str, persistent: Sequence[Any] = ()):
        self._current = (batch_size, phase)
        self.calls.append(self._current)

        def timed_step() -> float | None:
            step()
            return self.seconds(batch_size)

        return super().measure(timed_step, batch_size, phase, persistent)

    def _begin(self, persistent: Sequence[Any]) -> None:
        pass

    def _clean(self) -> None:
        pass  # nothing was allocated

    def _end(self) -> dict[str, int | None]:
        import torch

        batch_size, phase = self._current
        need = self.law(batch_size, phase)
        room = self.total_bytes - self.used_by_others_bytes - self.context_bytes
        if need > room:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {need - room:.0f} bytes (simulated, batch {batch_size})"
            )
        reading = need + (self._random.gauss(0.0, self.noise_bytes) if self.noise_bytes else 0.0)
        return {"peak_bytes": int(reading + self.context_bytes), "allocated_bytes": int(reading),
                "reserved_bytes": int(reading)}


class SimulatedBudget(SimulatedProbe):
    """A memory budget of `total_bytes` on a CPU, simulated: the capacity names no card (so Ultralytics'
    cache rule never applies) and readings carry no reserved memory; a need above the budget still
    fails as out of memory, leaving no reading."""

    def __init__(self, law: MemoryLaw, total_bytes: int, name: str = "simulated CPU", **kwargs: Any) -> None:
        super().__init__(law, total_bytes, name=name, device="cpu", **kwargs)

    def capacity(self) -> Capacity:
        return Capacity(device=self.device, name=self.name, total_bytes=None, used_by_others_bytes=0,
                        context_bytes=0, usable_bytes=self.total_bytes)

    def _end(self) -> dict[str, int | None]:
        return {**super()._end(), "reserved_bytes": None}


class UntimedRunner:
    """Steps that do nothing and cannot be timed: a simulated probe supplies the readings, and the plan's
    answer is the largest batch that fits (nothing to time, so no speed choice)."""

    def train_step(self, batch_size: int, boundary: Any = None) -> float:
        return 0.0

    def val_step(self, batch_size: int) -> float:
        return 0.0

    def time_steps(self, batch_size: int, steps: int = 3) -> None:
        return None

    def persistent(self) -> list[Any]:
        return []
