"""Measure a step on CPU tensors with torch's MemTracker, against a memory budget.

MemTracker (torch.distributed._tools.mem_tracker) follows every tensor storage created or
registered while it is active, so its peak is the step's real tensor memory: parameters,
gradients, optimizer state, the EMA copy, activations and temporaries. It counts tensors, not
the process's RSS (no allocator caching, no Python heap), which is what a batch-size budget is
about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visionbatch.devices.memory import Capacity
from visionbatch.fit.probes.base import Probe


class _Unhooked:
    """Stands in for a hook handle on a frozen parameter (nothing to remove)."""

    def remove(self) -> None:
        pass


def memory_tracker() -> Any:
    """A MemTracker that tolerates frozen parameters and repeated forward passes.

    MemTracker hooks every parameter's gradient, which fails on frozen ones (Ultralytics always
    freezes the DFL layer); those are marked as hooked already. A second forward of the root
    module inside one context is refused unless module stats are reset in between: see
    `pass_boundary()`.
    """
    from copy import deepcopy

    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker

    class Tracker(MemTracker):
        def _update_peak_stats(self, peak_state):  # type: ignore[override]
            # Only the global peak: MemTracker also walks every module's stats on every op,
            # which made a YOLO step 4x slower and is not needed here.
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                    self._peak_mem[dev] = snap[_TOTAL_KEY]
                    self._peak_mem_snap[dev] = deepcopy(snap)

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):  # type: ignore[override]
            if install_grad_hooks:
                for param in module.parameters():
                    if not param.requires_grad:
                        self._param_to_grad_hook_handles.setdefault(param, (_Unhooked(), _Unhooked()))
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

    return Tracker()


class CpuProbe(Probe):
    """Peak tensor bytes of a step on the CPU; `budget_bytes` plays the device's memory."""

    device = "cpu"

    def __init__(self, budget_bytes: int, name: str = "CPU") -> None:
        self.budget_bytes = int(budget_bytes)
        self.name = name
        self.tracker: Any = None

    def capacity(self) -> Capacity:
        return Capacity(device="cpu", name=self.name, total_bytes=None, used_by_others_bytes=0, context_bytes=0,
                        usable_bytes=self.budget_bytes)

    def _begin(self, persistent: Sequence[Any]) -> None:
        self.tracker = memory_tracker()
        if persistent:
            self.tracker.track_external(*persistent)
        self.tracker.__enter__()

    def pass_boundary(self) -> None:
        """Between two forward passes of one step: forget per-module stats, keep the running peak."""
        if self.tracker is not None:
            self.tracker.reset_mod_stats()

    def _end(self) -> dict[str, int | None]:
        tracker, self.tracker = self.tracker, None
        tracker.__exit__(None, None, None)
        peak = sum(snapshot.get("Total", 0) for snapshot in tracker.get_tracker_snapshot("peak").values())
        return {"peak_bytes": int(peak), "allocated_bytes": int(peak), "reserved_bytes": None}

    def _clean(self) -> None:
        if self.tracker is not None:  # the step failed while tracking
            self.tracker.__exit__(None, None, None)
            self.tracker = None
        super()._clean()
