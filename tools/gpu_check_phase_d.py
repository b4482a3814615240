"""Phase D of tools/gpu_check.py: visionbatch's own out-of-memory recovery and plan cache, end to end on the device.

Two units, which gpu_check_worker.py runs on the gpu lane:

- `unit_oom`: `visionbatch.train.run.train` at a fixed batch (yolo11n, 3 epochs, close_mosaic 1). Callbacks
  added to Ultralytics' default list, in the worker process only, read what epoch 1's training step reserved.
  At epoch 2's start they cap the process's memory with torch's per-process memory fraction, so that about
  60% of the batch fits (`cap_bytes`). Epoch 2's first step then raises a real torch.OutOfMemoryError, and
  the run recovers as `visionbatch train` does (visionbatch/train/recovery.py). It resumes from last.pt at a
  smaller batch and raises accumulation to keep the effective batch. The unit records whether the run
  completed, each recovery, each epoch's batch and accumulation, and torch's own message next to what the
  step reserved.
- `unit_cache`: the plan cache's key (visionbatch/fit/cache.py) for the device, built twice, and a second fit
  of the same job, which must come back reused from the cache. XDG_CACHE_HOME points to a scratch folder,
  so the machine's own cache is never touched.

With --simulate the card is `LawMemory`: the training is real (Ultralytics on the CPU, tiny), the cap is
set on `simulated_step`'s law, and the step raises torch.OutOfMemoryError in torch's own wording when the
law exceeds the cap. The plan cache is keyed for a CPU budget, and its fit is the simulated device's planner.
The flow is exercised; its numbers are not measurements.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_check_devices import NullRunner, SimulatedDevice, simulated_step

CAP_SHARE = 0.6  # the share of the batch's own memory (above the fixed part) that fits under the cap
SIMULATED_BUDGET = "4GiB"  # --simulate: the CPU budget the plan cache's key names


def cap_bytes(fixed_bytes: int, peak_bytes: int, share: float = CAP_SHARE) -> int:
    """The memory cap under which about `share` of the batch fits: the fixed part plus that share of the rest.

    Examples:
        >>> cap_bytes(400, 1400), cap_bytes(400, 300)
        (1000, 400)
    """
    return int(fixed_bytes + share * max(peak_bytes - fixed_bytes, 0))


def torch_size(value: int) -> str:
    """A size as torch's allocator prints it in its messages (c10's format_size).

    Examples:
        >>> torch_size(512), torch_size(3 << 19), torch_size(5 << 30)
        ('512 bytes', '1.50 MiB', '5.00 GiB')
    """
    if value <= 1024:
        return f"{value} bytes"
    for unit, scale in (("KiB", 1 << 10), ("MiB", 1 << 20)):
        if value < scale << 10:
            return f"{value / scale:.2f} {unit}"
    return f"{value / (1 << 30):.2f} GiB"


def torch_oom_message(tried: int, total: int, free: int, in_use: int, allocated: int, reserved: int,
                      allowed: int | None) -> str:
    """torch 2.x's CUDA out-of-memory message (c10/cuda/CUDACachingAllocator.cpp) with these figures.

    Examples:
        >>> from visionbatch.devices.oom import read_oom
        >>> text = torch_oom_message(2 << 20, 8 << 30, 4 << 30, 3 << 30, 2 << 30, 2 << 30, 2 << 30)
        >>> reading = read_oom(RuntimeError(text))
        >>> reading.needed_bytes() == (3 << 30) + (2 << 20), reading.allowed_bytes == 2 << 30
        (True, True)
    """
    return (f"CUDA out of memory. Tried to allocate {torch_size(tried)}. GPU 0 has a total capacity of "
            f"{torch_size(total)} of which {torch_size(free)} is free. Including non-PyTorch memory, this process "
            f"has {torch_size(in_use)} memory in use. " + (f"{torch_size(allowed)} allowed; " if allowed else "")
            + f"Of the allocated memory {torch_size(allocated)} is allocated by PyTorch, and "
            f"{torch_size(reserved - allocated)} is reserved by PyTorch but unallocated. If reserved but unallocated "
            f"memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")


# -- the card the recovery runs on ----------------------------------------------------------------------


class CudaMemory:
    """CUDA device 0: torch's readings, and the cap as torch's per-process memory fraction."""

    simulated = False

    def __init__(self, device: Any) -> None:
        self.cuda, self.context_bytes = device.torch.cuda, int(device.context_bytes)
        self.total_bytes = int(self.cuda.get_device_properties(0).total_memory)

    def reset_peaks(self) -> None:
        self.cuda.synchronize(0)
        self.cuda.reset_peak_memory_stats(0)

    def peak_reserved(self, batch: int) -> int:
        self.cuda.synchronize(0)
        return int(self.cuda.max_memory_reserved(0))

    def fixed_reserved(self) -> int:
        """What stays reserved between steps (model, gradients' owners, optimizer state, EMA), cache emptied."""
        gc.collect()
        self.cuda.empty_cache()
        return int(self.cuda.memory_reserved(0))

    def cap(self, limit_bytes: int) -> None:
        self.cuda.set_per_process_memory_fraction(min(limit_bytes / self.total_bytes, 1.0), 0)
        gc.collect()
        self.cuda.empty_cache()  # else the blocks epoch 1 cached would serve epoch 2 past the cap

    def release(self) -> None:
        self.cuda.set_per_process_memory_fraction(1.0, 0)


class LawMemory:
    """--simulate: `simulated_step`'s law as the card, and torch's OutOfMemoryError past the cap."""

    simulated = True
    context_bytes = SimulatedDevice.context_bytes
    total_bytes = SimulatedDevice.total_bytes

    def __init__(self, model: str, imgsz: int) -> None:
        self.model, self.imgsz = model, imgsz
        self.limit_bytes: int | None = None

    def need(self, batch: int) -> int:
        return simulated_step(self.model, "detect", self.imgsz, batch, "train")[1]

    def reset_peaks(self) -> None:
        pass

    def peak_reserved(self, batch: int) -> int:
        return self.need(batch)

    def fixed_reserved(self) -> int:
        return self.need(0)

    def cap(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes

    def release(self) -> None:
        self.limit_bytes = None

    def step(self, batch: int) -> None:
        """Raise torch's error as a full allocator would: holding the cap, it asks for the rest of the step."""
        import torch

        need = self.need(batch)
        if self.limit_bytes is None or need <= self.limit_bytes:
            return
        held = self.limit_bytes
        in_use = held + self.context_bytes
        raise torch.OutOfMemoryError(torch_oom_message(need - held, self.total_bytes, self.total_bytes - in_use,
                                                       in_use, held, held, self.limit_bytes))


class EpochTwoCap:
    """Ultralytics callbacks: read epoch 1's training peak, and cap the memory from epoch 2 on."""

    def __init__(self, memory: CudaMemory | LawMemory) -> None:
        self.memory = memory
        self.batch: int | None = None
        self.peak_bytes: int | None = None
        self.fixed_bytes: int | None = None
        self.cap_bytes: int | None = None

    def callbacks(self) -> dict[str, Any]:
        # plain functions: Ultralytics deep-copies its default list, and a bound method would copy this object
        return {"on_train_epoch_start": lambda trainer: self.epoch_start(trainer),
                "on_train_epoch_end": lambda trainer: self.epoch_end(trainer)}

    def epoch_start(self, trainer: Any) -> None:
        if trainer.epoch == 0:
            self.memory.reset_peaks()
        elif self.peak_bytes is not None:  # epoch 2 on, in every attempt: the card stays the smaller one
            if self.cap_bytes is None:
                self.fixed_bytes = self.memory.fixed_reserved()
                self.cap_bytes = cap_bytes(self.fixed_bytes, self.peak_bytes)
            self.memory.cap(self.cap_bytes)

    def epoch_end(self, trainer: Any) -> None:
        if trainer.epoch == 0 and self.peak_bytes is None:
            self.batch = int(trainer.batch_size)
            self.peak_bytes = self.memory.peak_reserved(self.batch)


@contextlib.contextmanager
def added_callbacks(events: dict[str, Any]):
    """Add callbacks to Ultralytics' default list (every trainer made inside gets them), and take them out after."""
    from ultralytics.utils.callbacks import default_callbacks

    for event, callback in events.items():
        default_callbacks[event].append(callback)
    try:
        yield
    finally:
        for event, callback in events.items():
            default_callbacks[event].remove(callback)


@contextlib.contextmanager
def law_steps(memory: LawMemory):
    """--simulate: each training step asks the law first, as the tests' simulated card does (tests/test_oom_recovery.py)."""
    from visionbatch.ultralytics.trainers import AtomicDetectionTrainer

    own = "preprocess_batch" in vars(AtomicDetectionTrainer)
    original = AtomicDetectionTrainer.preprocess_batch

    def preprocess_batch(trainer: Any, batch: dict) -> Any:
        memory.step(len(batch["img"]))
        return original(trainer, batch)

    AtomicDetectionTrainer.preprocess_batch = preprocess_batch
    try:
        yield
    finally:
        if own:
            AtomicDetectionTrainer.preprocess_batch = original
        else:
            del AtomicDetectionTrainer.preprocess_batch


@contextlib.contextmanager
def oom_messages(found: list[str]):
    """Keep the whole text of each out-of-memory error the recovery reads (its record keeps the first 240 characters)."""
    from visionbatch.train import run as train_run

    original = train_run.read_oom

    def read_oom(exc: BaseException) -> Any:
        found.append(str(exc))
        return original(exc)

    train_run.read_oom = read_oom
    try:
        yield
    finally:
        train_run.read_oom = original


@contextlib.contextmanager
def scratch_cache(folder: Path):
    """visionbatch's cache folder (dataset mirrors, plan cache) in `folder` for the block."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before


# -- the units ------------------------------------------------------------------------------------------


def unit_oom(req: dict, ctx: Any) -> dict:
    """`visionbatch train` at a fixed batch, capped at epoch 2 below what the batch needs: does it recover?"""
    from visionbatch.devices.oom import read_oom
    from visionbatch.errors import VisionbatchError
    from visionbatch.train.run import SUMMARY_NAME, train
    from visionbatch.ultralytics.offline import offline

    case, batch = req["case"], int(req["batch"])
    device = ctx.device
    memory = LawMemory(case["model"], case["imgsz"]) if device.simulated else CudaMemory(device)
    cap = EpochTwoCap(memory)
    folder = Path(tempfile.mkdtemp(prefix="oom-", dir=ctx.tmp))
    messages: list[str] = []
    error, started = None, time.perf_counter()
    with scratch_cache(folder / "cache"), offline():
        try:
            steps = law_steps(memory) if memory.simulated else contextlib.nullcontext()  # CUDA raises by itself
            with added_callbacks(cap.callbacks()), steps, oom_messages(messages):
                train(ctx.data_for(case), model=case["model"], imgsz=ctx.imgsz(case), batch=batch,
                      epochs=int(req["epochs"]), close_mosaic=int(req["close_mosaic"]), device=device.train_device,
                      workers=device.workers, plots=False, project=str(folder / "runs"), name="train")
        except VisionbatchError as exc:  # the recovery gave up: its one line is the finding
            error = f"{type(exc).__name__}: {exc}"
        finally:
            memory.release()
    train_s = round(time.perf_counter() - started, 2)
    summaries = sorted((folder / "runs").glob(f"*/{SUMMARY_NAME}"))
    if not summaries:
        raise RuntimeError(f"no {SUMMARY_NAME} under {folder / 'runs'}: the run stopped before it started ({error})")
    summary = json.loads(summaries[-1].read_text())
    epochs = [{"epoch": e.get("epoch"), "batch": e.get("batch_size"), "accumulate": e.get("accumulate"),
               "mosaic": e.get("mosaic"), "peak_reserved_bytes": e.get("cuda_peak_reserved_bytes")}
              for e in summary.get("epochs", [])]
    effective = summary.get("effective_batch")
    kept = bool(epochs) and effective is not None and all(
        e["batch"] is not None and e["accumulate"] is not None and e["batch"] * e["accumulate"] == effective
        for e in epochs)
    recoveries = [{name: r.get(name) for name in ("phase", "epoch", "iteration", "mosaic", "old_batch", "new_batch",
                                                  "old_accumulate", "new_accumulate", "effective_batch", "peak_bytes",
                                                  "resumed_from", "error")}
                  for r in summary.get("recoveries", [])]
    readings = []
    for text in messages:
        reading = read_oom(RuntimeError(text))
        readings.append({"tried_bytes": reading.tried_bytes, "total_bytes": reading.total_bytes,
                         "free_bytes": reading.free_bytes, "in_use_bytes": reading.in_use_bytes,
                         "reserved_bytes": reading.reserved_bytes, "allowed_bytes": reading.allowed_bytes})
    return {"simulated": device.simulated, "model": case["model"], "imgsz": case["imgsz"],
            "trained_imgsz": ctx.imgsz(case), "batch": batch, "epochs_asked": int(req["epochs"]),
            "close_mosaic": int(req["close_mosaic"]), "status": summary.get("status"),
            "completed": summary.get("status") == "completed" and error is None, "error": error,
            "epoch1_batch": cap.batch, "epoch1_peak_reserved_bytes": cap.peak_bytes,
            "fixed_reserved_bytes": cap.fixed_bytes, "cap_bytes": cap.cap_bytes, "cap_share": CAP_SHARE,
            "context_bytes": memory.context_bytes, "total_bytes": memory.total_bytes,
            "effective_batch": effective, "effective_kept": kept, "epochs": epochs, "recoveries": recoveries,
            "oom_readings": readings, "train_s": train_s}


def unit_cache(req: dict, ctx: Any) -> dict:
    """The plan cache's key for this device, built twice, and a second fit of the same job reused from the cache."""
    from visionbatch.fit.api import FitOptions, fit_batch, resolve_device
    from visionbatch.fit.cache import (
        cached_fit,
        device_facts,
        key_hash,
        list_plans,
        plan_key,
    )
    from visionbatch.keys import visionbatch_keys
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    case, simulated = req["case"], ctx.device.simulated
    data, imgsz, max_probes = ctx.data_for(case), ctx.imgsz(case), int(req["max_probes"])
    asked = {"memory_budget": SIMULATED_BUDGET} if simulated else {"device": 0}
    folder = Path(tempfile.mkdtemp(prefix="plan-cache-", dir=ctx.tmp))
    with scratch_cache(folder):
        options = FitOptions.check(imgsz=imgsz, max_probes=max_probes, **asked)
        device = resolve_device(options.device, options.memory_budget)[0]
        with offline():  # the job as fit_batch prepares it, so that the key is the one it looks up
            job = prepare(data, {"model": case["model"], "imgsz": imgsz}, visionbatch_keys("fit"), command="fit")
            facts = [device_facts(device, options) for _ in range(2)]
            keys = [key_hash(plan_key(job, options, one)) for one in facts]
            key = plan_key(job, options, facts[0])

        def fit() -> Any:
            if not simulated:
                return fit_batch(data, model=case["model"], imgsz=imgsz, max_probes=max_probes, **asked)
            with offline():
                return cached_fit(job, options, device, lambda: simulated_plan(job, options, case))

        fits = []
        for _ in range(2):
            started = time.perf_counter()
            plan = fit()
            fits.append({"batch": plan.batch_size, "reused": plan.reused.describe() if plan.reused else None,
                         "reused_key": plan.reused.key if plan.reused else None, "planning_s": plan.planning_s,
                         "call_s": round(time.perf_counter() - started, 3)})
        entries = len(list_plans().entries)
    first, second = fits
    return {"simulated": simulated, "device": device, "device_key": facts[0], "keys": keys,
            "key_stable": keys[0] == keys[1] and facts[0] == facts[1],
            "key_parts": {"software": key["software"], "model_sha256": key["model"]["sha256"][:12],
                          "task": key["task"], "imgsz": key["imgsz"], "amp": key["amp"]},
            "fits": fits, "entries": entries,
            "reused": first["reused"] is None and second["reused"] is not None and second["batch"] == first["batch"]
            and second["reused_key"] == keys[0]}


def simulated_plan(job: Any, options: Any, case: dict) -> Any:
    """--simulate: the planner on the simulated device's law, against the CPU budget, for the job's step."""
    from visionbatch.fit.plan import WorkloadSummary
    from visionbatch.fit.planner import plan_batch
    from visionbatch.fit.probes.simulated import SimulatedProbe
    from visionbatch.ultralytics.spec import job_spec

    spec = job_spec(job, "cpu", "", options.labels_per_image, oom_risk=options.oom_risk)
    workload = WorkloadSummary(**spec.describe(), max_imgsz=spec.imgsz, data=job.dataset.yaml_path, device="cpu")
    law = lambda b, phase: simulated_step(case["model"], "detect", case["imgsz"], b, phase)[1]  # noqa: E731
    probe = SimulatedProbe(law, options.memory_budget_bytes, device="cpu")
    return plan_batch(probe, NullRunner(), options.memory_fraction, spec.dataset_images, workload,
                      max_probes=options.max_probes)
