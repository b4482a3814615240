"""tools/gpu_check.py's machinery: the state on disk, the clock, phase budgets, and the worker processes.

A unit is one piece of work (a trial, a fit, a trace) with a key; its answer goes into state.json as
soon as it comes, so a rerun with the same folder skips it. The gpu lane runs one unit at a time
and the caller waits for it; the cpu lane works through a queue beside it. A unit that overruns its
own limit is killed and recorded as over its limit; one stopped by its phase's end or the run's
deadline is not recorded, so a rerun does it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionbatch.files import atomic_write_text

UNIT_LIMIT_S = {"hello": 150, "constants": 60, "points": 120, "trace": 240, "autobatch": 90, "fit": 180,
                "predict": 300, "check": 180, "trial": 150, "epochs": 150, "oom": 180, "cache": 120}
# until a kind has run once in this run, the time it is expected to take, to decide whether it fits
UNIT_ESTIMATE_S = {"hello": 20, "constants": 5, "points": 20, "autobatch": 10, "fit": 30, "trial": 15, "epochs": 45,
                   "oom": 30, "cache": 15}
# --simulate: the GPU seconds each kind stands for, on the run's clock (exact, so the bounds are testable)
SIMULATED_S = {"hello": 10, "constants": 4, "points": 8, "autobatch": 6, "fit": 20, "trial": 8, "epochs": 30,
               "oom": 30, "cache": 10}
LEAK_BYTES = 256 << 20  # a GPU worker holding more than this after a unit is restarted before the next


class SettingsError(Exception):
    """A run that cannot start as asked (exit 2, one line)."""


class State:
    """Finished units by key (and the device's description), saved atomically after each unit."""

    def __init__(self, path: Path, settings: Any) -> None:
        self.path = path
        self.data = {"settings": settings.key() if settings else None, "hello": None, "units": {}}
        if path.exists():
            saved = json.loads(path.read_text())
            if settings is not None and saved.get("settings") != settings.key():
                raise SettingsError(f"{path} holds a run with other settings ({saved.get('settings')}): use another "
                                    f"--out, or delete that file to start again")
            self.data = saved

    @classmethod
    def saved(cls, path: Path) -> State:
        if not path.exists():
            raise SettingsError(f"{path} does not exist: --report-only reads the state of an earlier run")
        return cls(path, None)

    def get(self, key: str) -> dict | None:
        """A finished unit's record: done, or stopped at its own limit. A failure is kept for the report,
        and a rerun tries that unit again (the failure may have been a bug since fixed)."""
        record = self.data["units"].get(key)
        return record if record is not None and record["status"] != "error" else None

    def put(self, key: str, record: dict) -> None:
        self.data["units"][key] = record
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1))


class Clock:
    """Seconds since the run began: real ones, or under --simulate the GPU time the units stand for."""

    def __init__(self, simulated: bool) -> None:
        self.simulated, self.start, self.offset = simulated, time.monotonic(), 0.0

    def now(self) -> float:
        return self.offset if self.simulated else time.monotonic() - self.start

    def spend(self, kind: str) -> None:
        if self.simulated:
            self.offset += SIMULATED_S.get(kind, 0)


@dataclass
class Budget:
    """One phase's time: its own bound and the run's deadline, whichever comes first."""

    name: str
    clock: Clock
    bound_s: float
    deadline_s: float
    started_s: float = 0.0
    ended_s: float | None = None
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started_s = self.clock.now()

    def end(self) -> None:
        self.ended_s = self.clock.now()

    def remaining(self) -> float:
        now = self.clock.now()
        return max(min(self.started_s + self.bound_s, self.deadline_s) - now, 0.0)

    def summary(self) -> dict:
        end = self.clock.now() if self.ended_s is None else self.ended_s
        return {"bound_s": self.bound_s, "used_s": round(end - self.started_s, 1), "skipped": self.skipped}


@dataclass
class Unit:
    key: str
    kind: str
    lane: str
    request: dict
    order: int = 0  # CPU-lane queue position: the case's priority


# -- the worker processes -----------------------------------------------------------------------------


class Lane:
    """One worker process (gpu or cpu lane), started when first needed and killed when a unit overruns."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.proc: subprocess.Popen | None = None
        self.unit: Unit | None = None
        self.deadline = 0.0
        self.starts = 0

    def send(self, unit: Unit, limit_s: float) -> None:
        if self.proc is not None and self.proc.poll() is not None:  # it died between units
            self.proc = None
        if self.proc is None:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                             env=self.env, start_new_session=True)
            self.starts += 1
        self.proc.stdin.write((json.dumps({"kind": unit.kind, **unit.request}) + "\n").encode())
        self.proc.stdin.flush()
        self.unit, self.deadline = unit, time.monotonic() + limit_s

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:  # the worker died (a crash in native code, killed by the OS)
            self.stop(kill=True)
            return {"ok": False, "error": f"the {self.name} worker exited; see {self.log.name}"}
        return json.loads(line)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and its data-loader processes
        else:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class Runner:
    """Runs units on the lanes, reuses finished ones from the state, and keeps phases within their time."""

    def __init__(self, state: State, clock: Clock, lanes: dict[str, Lane], log: Any = sys.stderr) -> None:
        self.state, self.clock, self.lanes, self.log = state, clock, lanes, log
        self.queue: list[Unit] = []
        self.counts = {"run": 0, "reused": 0, "failed": 0, "timeout": 0, "cut": 0}
        self.durations: dict[str, list[float]] = {}
        self.baseline_bytes: int | None = None
        self.answer: dict = {}
        self.counts["reused"] = sum(state.get(key) is not None for key in state.data["units"])  # earlier runs

    def estimate(self, kind: str) -> float:
        if self.clock.simulated:
            return SIMULATED_S.get(kind, 0)
        seen = self.durations.get(kind)
        return sum(seen) / len(seen) if seen else UNIT_ESTIMATE_S.get(kind, 30)

    def run(self, unit: Unit, budget: Budget) -> dict | None:
        """The unit's result: from the state, or run now on the gpu lane; None if it failed or did not fit."""
        record = self.state.get(unit.key)
        if record is not None:
            return record.get("result")
        remaining = budget.remaining()
        if self.estimate(unit.kind) > remaining:
            budget.skipped.append(unit.key)
            return None
        limit = UNIT_LIMIT_S[unit.kind] if self.clock.simulated else min(UNIT_LIMIT_S[unit.kind], remaining)
        lane = self.lanes[unit.lane]
        lane.send(unit, limit)
        cut = not self.clock.simulated and limit < UNIT_LIMIT_S[unit.kind]
        while lane.unit is unit:
            self._service(cut_is_final=not cut)
        record = self.state.get(unit.key)
        return record.get("result") if record else None

    def call(self, unit: Unit) -> dict:
        """Run a unit that is not recorded (the worker's start) and return its answer."""
        lane = self.lanes[unit.lane]
        lane.send(unit, UNIT_LIMIT_S[unit.kind])
        while lane.unit is unit:
            self._service()
        return self.answer

    def submit(self, unit: Unit) -> None:
        """Queue a CPU-lane unit (by its order); it runs beside the GPU work."""
        if self.state.get(unit.key) is None and all(u.key != unit.key for u in self.queue):
            self.queue.append(unit)
            self.queue.sort(key=lambda u: u.order)
            self._pump()

    def drain(self, seconds: float) -> None:
        """Give the CPU lane up to `seconds` to finish its queue (what is left is cut, and a rerun does it)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._pump()
            if not any(lane.unit for lane in self.lanes.values()):
                return
            self._service(until=end)

    def close(self) -> None:
        for lane in self.lanes.values():
            if lane.unit is not None:  # cut by the deadline: not recorded, so a rerun does it
                self._note(f"{lane.unit.key}: stopped at the deadline")
                self.counts["cut"] += 1
                lane.unit = None
                lane.stop(kill=True)
            lane.stop()

    def _pump(self) -> None:
        lane = self.lanes["cpu"]
        if lane.unit is None and self.queue:
            unit = self.queue.pop(0)
            lane.send(unit, UNIT_LIMIT_S[unit.kind])

    def _service(self, cut_is_final: bool = True, until: float | None = None) -> None:
        busy = [lane for lane in self.lanes.values() if lane.unit is not None]
        if not busy:
            return
        now = time.monotonic()
        wake = min(lane.deadline for lane in busy)
        timeout = max(min(wake, until if until is not None else wake) - now, 0.0)
        ready, _, _ = select.select([lane.proc.stdout for lane in busy], [], [], timeout)
        for lane in busy:
            if lane.proc.stdout in ready:
                self._finish(lane, lane.read())
            elif time.monotonic() >= lane.deadline:
                unit = lane.unit
                lane.stop(kill=True)
                if lane.name == "gpu" and not cut_is_final:  # stopped by the phase's end: a rerun does it
                    self._note(f"{unit.key}: stopped at the phase's time bound")
                    self.counts["cut"] += 1
                    lane.unit = None
                else:
                    self._finish(lane, {"ok": False, "status": "timeout",
                                        "error": f"over its {UNIT_LIMIT_S[unit.kind]} s limit"})
        self._pump()

    def _finish(self, lane: Lane, answer: dict) -> None:
        unit, lane.unit = lane.unit, None
        status = answer.get("status") or ("done" if answer.get("ok") else "error")
        record = {"status": status, "kind": unit.kind, "seconds": answer.get("seconds")}
        if answer.get("ok"):
            record["result"] = answer["result"]
        else:
            record["error"] = answer.get("error")
            self._note(f"{unit.key}: {status}: {answer.get('error')}")
        self.counts["run" if status == "done" else "failed" if status == "error" else "timeout"] += 1
        self.durations.setdefault(unit.kind, []).append(float(answer.get("seconds") or 0.0))
        if lane.name == "gpu":
            self.clock.spend(unit.kind)
            held = answer.get("allocated_after")
            if self.baseline_bytes is None:
                self.baseline_bytes = held
            elif held is not None and held > self.baseline_bytes + LEAK_BYTES:  # a leak would shrink every card
                self._note(f"{unit.key} left {held >> 20} MiB allocated: restarting the GPU worker")
                lane.stop()
            if status == "error" and lane.proc is not None:  # after an illegal access, say, CUDA is unusable
                lane.stop()
        if unit.kind == "hello":
            self.answer = answer
        else:
            self.state.put(unit.key, record)

    def _note(self, text: str) -> None:
        print(f"gpu_check: {text}", file=self.log, flush=True)
