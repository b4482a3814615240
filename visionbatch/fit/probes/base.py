"""The probe interface: run a step, read its peak, and turn running out of memory (as
`visionbatch.devices.oom.is_oom` decides it) into a failed sample."""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from visionbatch.devices.memory import Capacity
from visionbatch.devices.oom import is_oom
from visionbatch.fit.plan import ProbeSample


class Probe(ABC):
    """Runs a step and reads its peak memory.

    Subclasses implement `_begin` (reset counters, start tracking), `_end` (return the sample's
    memory fields) and `_clean` (free what the step left, also after a failure).
    """

    device: str = "cpu"
    noise_floor_bytes: float = 0.0  # the smallest uncertainty a reading carries
    rerun_spread_bytes: float = 0.0  # how far the same step's reading moves between identical runs (processes)

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
