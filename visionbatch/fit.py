"""fit_batch(): measure the real training step, fit its memory curve, verify the answer.

The schedule (`plan_batch`), with every probe a real step (training at b, then validation at 2b
with the training state alive):

1. batch 1 and batch 2: the fixed cost and a first slope;
2. one intermediate batch near a quarter of the predicted answer (to see curvature, and a first
   throughput reading), when the answer is far above 2;
3. the predicted answer itself; if it does not fit, the next guess comes from the refitted curve
   kept under the failure, and from interpolating between the largest batch that fitted and the
   smallest that did not.

It stops when the largest batch that fitted is the curve's answer, or is one below a batch that
did not fit. The answer is always a batch that was actually run; typical runs take 4 to 6 probes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from visionbatch.console import human_bytes
from visionbatch.curve import DEFAULT_SIGMAS, fit_memory_curve, interpolate_batch, monotonic_violations, solve_batch
from visionbatch.errors import BudgetError, ConfigError
from visionbatch.plans import BatchPlan, MemoryCurve, ProbeSample
from visionbatch.probes.base import Capacity, Probe

GROWTH_LIMIT = 16  # never extrapolate more than 16x past the largest batch that fitted
THROUGHPUT_TOLERANCE = 0.03  # a batch within 3% of the best throughput counts as saturated
MAX_PROBES = 8
TIMED_STEPS = 3
NOMINAL_BATCH = 64


class StepRunner(Protocol):
    """What the planner needs from a workload (see workload.Workload)."""

    def train_step(self, batch_size: int, boundary: Any = None) -> float: ...

    def val_step(self, batch_size: int) -> float: ...

    def time_steps(self, batch_size: int, steps: int = 3) -> float: ...

    def persistent(self) -> list[Any]: ...


@dataclass
class _Probing:
    """The planner's running state: every sample, and the bounds they set."""

    probe: Probe
    runner: StepRunner
    budget_bytes: int
    samples: list[ProbeSample]
    best: int = 0  # largest batch whose training and validation fitted
    upper: int | None = None  # smallest batch that did not fit
    misses: int = 0  # failed probes in a row

    def run(self, batch_size: int, timed: bool) -> bool:
        train = self.probe.measure(lambda: self.runner.train_step(batch_size, self.probe.pass_boundary),
                                   batch_size, "train", self.runner.persistent())
        # step_s from the measured step is one step under a tracker: timings come from untracked steps
        train = replace(train, step_s=self.runner.time_steps(batch_size, TIMED_STEPS) if train.ok and timed else None)
        self.samples.append(train)
        fits = train.ok and train.peak_bytes <= self.budget_bytes
        if train.ok:  # validation runs between epochs, at twice the batch, with the training state alive
            val = self.probe.measure(lambda: self.runner.val_step(2 * batch_size), 2 * batch_size, "val",
                                     self.runner.persistent())
            self.samples.append(replace(val, step_s=None))
            fits = fits and val.ok and val.peak_bytes <= self.budget_bytes
        if fits:
            self.best = max(self.best, batch_size)
            self.misses = 0
        else:
            self.upper = batch_size if self.upper is None else min(self.upper, batch_size)
            self.misses += 1
        return fits

    def readings(self, phase: str) -> list[ProbeSample]:
        return [s for s in self.samples if s.phase == phase and s.ok]

    def curve(self, phase: str) -> MemoryCurve | None:
        points = self.readings(phase)
        # readings that go down as the batch goes up (the allocator reusing cached blocks) would
        # bend the fit: leave both out while enough others remain; the answer is verified anyway
        bad = {b for pair in monotonic_violations([s.batch_size for s in points], [s.peak_bytes for s in points])
               for b in pair}
        if len({s.batch_size for s in points if s.batch_size not in bad}) >= 2:
            points = [s for s in points if s.batch_size not in bad]
        if len({s.batch_size for s in points}) < 2:
            return None
        return fit_memory_curve([s.batch_size for s in points], [s.peak_bytes for s in points],
                                self.probe.noise_floor_bytes)


def _target(state: _Probing, limit: int, sigmas: float) -> int:
    """The next batch to verify: the curves' answer under every bound."""
    train_curve, val_curve = state.curve("train"), state.curve("val")
    if train_curve.per_image_bytes <= 0 and train_curve.quadratic_bytes <= 0:
        return min(state.best * 4, limit, (state.upper or limit + 1) - 1)  # readings not growing yet: explore
    target = solve_batch(train_curve, state.budget_bytes, sigmas, below=state.upper, cap=limit)
    if val_curve is not None:
        target = min(target, solve_batch(val_curve, state.budget_bytes, sigmas, cap=2 * limit) // 2)
    if state.upper is not None:
        # after a failure the curve may be what failed: step in from the bracket too, by the
        # readings on either side when both exist, and by halving after two misses in a row
        # (or when the failure was an OOM, which gives no reading)
        readings = {s.batch_size: s.peak_bytes for s in state.readings("train")}
        middle = (state.best + state.upper) // 2
        if state.misses >= 2 or state.upper not in readings:
            target = min(target, max(middle, state.best + 1))
        elif state.best in readings:
            target = min(target, interpolate_batch((state.best, readings[state.best]),
                                                   (state.upper, readings[state.upper]), state.budget_bytes))
    return min(target, limit)


def plan_batch(
    probe: Probe,
    runner: StepRunner,
    memory_fraction: float,
    dataset_images: int,
    workload: dict[str, Any] | None = None,
    nominal_batch: int = NOMINAL_BATCH,
    max_probes: int = MAX_PROBES,
    sigmas: float = DEFAULT_SIGMAS,
    capacity: Capacity | None = None,
) -> BatchPlan:
    """Find the largest batch that fits `memory_fraction` of the device, by measuring it.

    Args:
        probe: how a step is measured (CUDA, CPU budget, or a simulated device in tests).
        runner: the workload that runs the steps.
        memory_fraction: the share of usable memory to fit into.
        dataset_images: training images: no batch above it is considered.
        workload: a description of the step, stored in the plan.
        nominal_batch: Ultralytics' nbs, for the accumulation the plan reports.
        max_probes: the most training probes to run.
        sigmas: how many standard deviations of the curve's prediction must fit too.
        capacity: the device's memory, if already read (else the probe reads it).

    Returns:
        The verified `BatchPlan`.

    Raises:
        BudgetError: not even batch 1 fits.
    """
    started = time.perf_counter()
    capacity = capacity or probe.capacity()
    budget = int(memory_fraction * capacity.usable_bytes)
    state = _Probing(probe, runner, budget, [])
    limit = max(1, dataset_images)
    warnings: list[str] = []

    if not state.run(1, timed=False):
        raise BudgetError(_too_small(state, capacity, memory_fraction, workload or {}))
    probes = 1
    if limit >= 2:
        state.run(2, timed=False)
        probes += 1
    while probes < max_probes and state.best < limit and (state.upper is None or state.upper > state.best + 1):
        if state.curve("train") is None:
            break  # only one batch ran: 2 did not fit, and 1 did
        answer = _target(state, limit, sigmas)
        if answer <= state.best:
            curve, nxt = state.curve("train"), state.best + 1
            open_bracket = state.upper is not None and state.upper > nxt
            if not (open_bracket and curve.predict(nxt) - sigmas * curve.uncertainty(nxt) <= budget):
                break
            answer = max((state.best + state.upper) // 2, nxt)  # the curve cannot rule it out: bisect
        target = answer
        if state.upper is None and state.best <= 2 and answer // 4 > 4:
            target = answer // 4  # an intermediate reading before the long extrapolation
        target = min(target, state.best * GROWTH_LIMIT)
        state.run(target, timed=True)
        probes += 1
    if probes >= max_probes and state.upper != state.best + 1:
        warnings.append(f"stopped after {max_probes} probes: a batch between {state.best} and "
                        f"{state.upper or 'the curve answer'} might fit too")
    if not _timed(state, state.best):  # throughput at the answer, for the plan
        _time(state, state.best)
    return _plan(state, capacity, memory_fraction, limit, workload or {}, nominal_batch, sigmas, warnings,
                 time.perf_counter() - started)


def _timed(state: _Probing, batch_size: int) -> bool:
    return any(s.batch_size == batch_size and s.phase == "train" and s.step_s for s in state.samples)


def _time(state: _Probing, batch_size: int) -> None:
    seconds = state.runner.time_steps(batch_size, TIMED_STEPS)
    for i, s in enumerate(state.samples):
        if s.batch_size == batch_size and s.phase == "train" and s.ok:
            state.samples[i] = replace(s, step_s=seconds)


def _too_small(state: _Probing, capacity: Capacity, fraction: float, workload: dict[str, Any]) -> str:
    train = next(s for s in state.samples if s.phase == "train")
    val = next((s for s in state.samples if s.phase == "val"), None)
    what = f"{workload.get('model', 'the model')} at imgsz={workload.get('imgsz', '?')}"
    budget = f"{human_bytes(state.budget_bytes)} ({fraction:g} x {human_bytes(capacity.usable_bytes)} usable " \
             f"on {capacity.device})"
    if not train.ok:
        need = f"more than {human_bytes(capacity.usable_bytes)} (it ran out of memory)"
    elif train.peak_bytes > state.budget_bytes:
        need = human_bytes(train.peak_bytes)
    else:
        need = f"{human_bytes(val.peak_bytes) if val and val.ok else 'more than the budget'} to validate at batch 2"
    return (f"batch 1 does not fit {budget}: one image of {what} needs {need}: "
            f"raise the budget, lower imgsz or use a smaller model")


def _plan(state: _Probing, capacity: Capacity, fraction: float, limit: int, workload: dict[str, Any],
          nominal_batch: int, sigmas: float, warnings: list[str], seconds: float) -> BatchPlan:
    curve = state.curve("train")
    val_curve = state.curve("val")
    if curve is None:  # only batch 1 ran
        reading = state.readings("train")[0]
        curve = fit_memory_curve([1, 2], [reading.peak_bytes, reading.peak_bytes], state.probe.noise_floor_bytes)
        curve = replace(curve, points=1, batch_max=1, sxx=0.0)
    best = state.best
    train_at = {s.batch_size: s for s in state.readings("train")}
    val_at = {s.batch_size: s for s in state.readings("val")}
    verified = sorted(b for b in train_at if b <= best and train_at[b].peak_bytes <= state.budget_bytes
                      and 2 * b in val_at and val_at[2 * b].peak_bytes <= state.budget_bytes)
    speeds = {b: train_at[b].img_per_s for b in verified if train_at[b].img_per_s}
    chosen, reason = best, _reason_max(state, capacity, fraction, curve, limit)
    if speeds:
        top = max(speeds.values())
        saturated = min(b for b, v in speeds.items() if v >= (1 - THROUGHPUT_TOLERANCE) * top)
        if saturated < best and best in speeds:
            chosen = saturated
            reason = (f"throughput saturates: batch {saturated} trains {speeds[saturated]:.1f} img/s, within "
                      f"{THROUGHPUT_TOLERANCE:.0%} of the best measured ({top:.1f} img/s); the largest batch that "
                      f"fits is {best}")
    violations = monotonic_violations([s.batch_size for s in state.readings("train")],
                                      [s.peak_bytes for s in state.readings("train")])
    if violations:
        warnings.append("memory readings were not monotonic (" + ", ".join(f"{a} -> {b}" for a, b in violations) +
                        "): the allocator reused cached blocks; the answer was verified directly")
    if curve.kind == "quadratic":
        warnings.append("memory grows faster than linearly with the batch: a curved fit was used")
    if curve.points > 2 and curve.residual_bytes > 0.02 * max(curve.predict(best), 1):
        warnings.append(f"readings are noisy (residual {human_bytes(curve.residual_bytes)} around the fit)")
    if best >= limit:
        warnings.append(f"batch capped at the {limit} training images")
    val_max = solve_batch(val_curve, state.budget_bytes, sigmas) if val_curve else None
    if val_curve is not None and val_curve.extrapolates(2 * chosen):
        warnings.append("the validation prediction extrapolates beyond the measured batches")
    top_speed = max(speeds.values()) if speeds else None
    return BatchPlan(
        batch_size=chosen,
        max_batch_size=best,
        val_batch_size=2 * chosen,
        val_max_batch_size=val_max,
        accumulate=max(round(nominal_batch / chosen), 1),
        nominal_batch_size=nominal_batch,
        budget_bytes=state.budget_bytes,
        memory_fraction=fraction,
        device=capacity.device,
        device_name=capacity.name,
        total_bytes=capacity.total_bytes,
        usable_bytes=capacity.usable_bytes,
        context_bytes=capacity.context_bytes,
        predicted_bytes=int(curve.predict(chosen)),
        predicted_uncertainty_bytes=int(curve.uncertainty(chosen)),
        measured_bytes=train_at[chosen].peak_bytes if chosen in train_at else None,
        val_predicted_bytes=int(val_curve.predict(2 * chosen)) if val_curve else None,
        val_measured_bytes=val_at[2 * chosen].peak_bytes if 2 * chosen in val_at else None,
        img_per_s=speeds.get(chosen),
        best_img_per_s=top_speed,
        samples=tuple(state.samples),
        curve=curve,
        val_curve=val_curve,
        workload=workload,
        reason=reason,
        warnings=tuple(warnings),
        measured=True,
        planning_s=round(seconds, 3),
    )


def _reason_max(state: _Probing, capacity: Capacity, fraction: float, curve: MemoryCurve, limit: int) -> str:
    best = state.best
    budget = f"{fraction:g} x {human_bytes(capacity.usable_bytes)} = {human_bytes(state.budget_bytes)}"
    if best >= limit:
        return f"batch {best} uses every training image and fits {budget}"
    reading = next(s for s in state.readings("train") if s.batch_size == best)
    if state.upper is not None:
        over = next((s for s in state.samples if s.batch_size == state.upper and s.phase == "train"), None)
        why = "ran out of memory" if over is not None and not over.ok else "did not fit"
        if state.upper == best + 1:
            nxt = f"batch {state.upper} {why}"
        else:
            nxt = f"batch {best + 1} is predicted to need {human_bytes(curve.predict(best + 1))} (batch {state.upper} {why})"
    else:
        nxt = f"batch {best + 1} is predicted to need {human_bytes(curve.predict(best + 1))}"
    return f"batch {best} is the largest that fits {budget}: it measured {human_bytes(reading.peak_bytes)}; {nxt}"


# -- the public entry point -------------------------------------------------------------------------


@contextlib.contextmanager
def _trainer_globals(deterministic: bool, device_type: str) -> Iterator[None]:
    """Set what Ultralytics' trainer sets (init_seeds, threads) for the probes; restore it all after."""
    import torch

    from visionbatch.ultralytics_compat import cpu_count

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.get_num_threads(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    fill = torch.utils.deterministic.fill_uninitialized_memory
    devices = [torch.cuda.current_device()] if device_type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cudnn.benchmark = False
            if deterministic:
                torch.utils.deterministic.fill_uninitialized_memory = False
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
            if device_type == "cpu":
                torch.set_num_threads(cpu_count())
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        torch.set_num_threads(saved[4])
        torch.utils.deterministic.fill_uninitialized_memory = fill
        if saved[5] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[5]


def resolve_device(device: Any, memory_budget: Any) -> tuple[str, int | None]:
    """('cuda:N', None) or ('cpu', budget bytes) for the fit, or a ConfigError saying what works instead."""
    from visionbatch.config import check_device, parse_bytes
    from visionbatch.hardware import cuda_available

    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    text = "" if device is None else str(device).lower().replace("cuda:", "")
    if text in {"", "none"}:
        text = "0" if cuda_available() and budget is None else "cpu"
    if text == "cpu":
        if budget is None:
            raise ConfigError(
                "no CUDA device to fit the batch on here: pass memory_budget= (e.g. memory_budget=4GiB) to fit "
                "against a CPU memory budget with real CPU steps, or target=<gpu> to predict for a GPU you do "
                "not have (visionbatch fit --help lists the targets)"
            )
        return "cpu", budget
    check_device(text)
    parts = text.split(",")
    if len(parts) > 1:
        raise ConfigError(f"device={device}: fit one GPU at a time, e.g. device={parts[0]}; "
                          f"with DDP each GPU takes batch / {len(parts)} images")
    if budget is not None:
        raise ConfigError(f"memory_budget={memory_budget} is for CPU fits: on device={device} the GPU's own memory "
                          f"is the budget (use memory_fraction= to aim lower)")
    return f"cuda:{int(parts[0])}", None


def fit_batch(
    data: str | os.PathLike,
    model: str | None = None,
    imgsz: int = 640,
    device: Any = None,
    memory_fraction: float = 0.9,
    memory_budget: str | int | None = None,
    labels_per_image: int | None = None,
    max_probes: int = MAX_PROBES,
    **train_args: Any,
) -> BatchPlan:
    """Fit the training batch to the device by measuring the real training step.

    Args:
        data: the dataset's data.yaml (its densest image sets the label density).
        model: model YAML or local checkpoint (default: yolo11n for the task).
        imgsz: training image size.
        device: CUDA device (0, 'cuda:1') or 'cpu' (default: GPU 0 when there is one).
        memory_fraction: share of the usable memory to fill (0 < f <= 1).
        memory_budget: for CPU fits: the memory that plays the device's ('2GiB').
        labels_per_image: override the worst-case label density (default: densest image,
            x4 while mosaic is on).
        max_probes: the most training probes to run.
        **train_args: Ultralytics train arguments that shape the step (task, multi_scale, amp,
            optimizer, epochs, mosaic, close_mosaic, mask_ratio, overlap_mask, freeze, ...).

    Returns:
        A verified `BatchPlan`.

    Raises:
        ConfigError: an unknown or impossible argument; no device and no budget.
        DatasetError: a data.yaml problem.
        BudgetError: not even batch 1 fits.

    Examples:
        >>> plan = fit_batch("datasets/shapes/data.yaml", imgsz=64, memory_budget="256MiB")
        >>> plan.batch_size <= plan.max_batch_size, plan.measured_bytes <= plan.budget_bytes
        (True, True)
    """
    from visionbatch.config import check_fraction
    from visionbatch.training import prepare
    from visionbatch.ultralytics_compat import offline
    from visionbatch.workload import Workload, make_spec

    memory_fraction = check_fraction(memory_fraction)
    if labels_per_image is not None and (not isinstance(labels_per_image, int) or labels_per_image < 1):
        raise ConfigError(f"labels_per_image={labels_per_image} is impossible: give a count >= 1, e.g. 100")
    if not isinstance(max_probes, int) or max_probes < 2:
        raise ConfigError(f"max_probes={max_probes} is impossible: the planner needs at least 2 probes")
    overrides = {**train_args, "imgsz": imgsz}
    if model is not None:
        overrides["model"] = model
    overrides.pop("batch", None)
    with offline():
        job = prepare(data, overrides)
        device_name, budget = resolve_device(device, memory_budget)
        device_type = device_name.split(":")[0]
        if device_type == "cuda":
            import torch

            from visionbatch.probes.cuda import CudaProbe

            probe: Probe = CudaProbe(int(device_name.split(":")[1]))
            torch.cuda.set_device(probe.index)
            gpu = torch.cuda.get_device_name(probe.index)
        else:
            from visionbatch.probes.cpu import CpuProbe
            from visionbatch.telemetry import device_name as describe

            import torch

            probe = CpuProbe(budget, name=describe(torch.device("cpu")))
            gpu = ""
        spec = make_spec(job.model, job.task, job.dataset.names, job.dataset.train.images,
                         job.dataset.train.max_instances, job.dataset.val.max_instances, job.args, device_type, gpu,
                         labels_per_image)
        deterministic = bool(job.args.get("deterministic", True))
        with _trainer_globals(deterministic, device_type):
            workload = Workload(spec, device_name)
            try:
                capacity = probe.capacity()  # after the model is on the device: the context exists
                description = {**spec.describe(), "max_imgsz": workload.train_imgsz, "device": device_name,
                               "data": job.dataset.yaml_path}
                return plan_batch(probe, workload, memory_fraction, spec.dataset_images, description,
                                  nominal_batch=int(job.args.get("nbs", NOMINAL_BATCH)), max_probes=max_probes,
                                  capacity=capacity)
            finally:
                workload.close()
