"""The probe schedule: measure few real steps, fit the memory curve, verify the answer.

`plan_batch` runs, with every probe a real step (training at b, then validation at 2b with the
training state alive):

1. batch 1 and batch 2: the fixed cost and a first slope;
2. one intermediate batch near a quarter of the predicted answer (to see curvature, and a first
   throughput reading), when the answer is far above 2 (never more than 16x past what fitted);
3. the predicted answer itself; if it does not fit, the next guess comes from the refitted curve
   kept under the failure, from interpolating between the largest batch that fitted and the
   smallest that did not, and from halving after two misses in a row. Where the curve's band is
   wide (a step in the readings, or noise) its target creeps up a batch or two per probe; then
   the line through the last two readings that fitted steps to the budget instead: before any
   failure, and after one out-of-memory error (no reading; never past halfway to it). Where that
   line puts the next batch over the budget, the next batch is tried.

It stops when the largest batch that fitted is the curve's answer, or is one below a batch that
did not fit. The answer is always a batch that was actually run (or, for a target GPU, traced);
typical runs take 4 to 6 probes. The probe and the workload are passed in: a CUDA device, a CPU
budget, a CPU trace for a GPU elsewhere, or a simulated device in tests. The reason tells one story
with the readings: where the chosen batch's reading lies outside the curve's band it says the reading
decides, and batches the curve allows above the answer that no step ran are named as not measured.

Then the speed choice. The probed batches above 2 that fit, and the largest batch that fits, are
timed in interleaved blocks (one warm-up step and `TIMED_STEPS` timed steps each, round robin)
until the choice is settled or `TIMING_BOUND_S` of timing has passed (`stats.repeat_timings`).
The rule (`stats.smallest_as_fast`): **keep the largest batch that fits, unless a smaller batch is
shown, by the lower end of its 95% interval against the upper end of every other timed batch's,
to lose at most 3% (`SPEED_TOLERANCE`) to each; then the smallest such batch ("throughput
saturates").** Noise widens the intervals, and wider intervals can only keep the largest batch:
a difference smaller than the noise never moves the choice.

Both verbs say what they do as they go to a `progress` line sink (`console.Steps`): each step as it
starts, each probe's peaks and whether it fits, the time left over the probes planned, and each
timed block.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from visionbatch.console import Steps
from visionbatch.devices.memory import Capacity
from visionbatch.errors import BudgetError
from visionbatch.fit.curve import (
    DEFAULT_SIGMAS,
    extrapolate_batch,
    fit_memory_curve,
    interpolate_batch,
    monotonic_violations,
    solve_batch,
)
from visionbatch.fit.plan import (
    BatchCheck,
    BatchPlan,
    MemoryCurve,
    ProbeSample,
    WorkloadSummary,
    after_validation_bytes,
    batch_fits,
    held_after_validation,
    held_over_budget,
    held_predicted,
    val_batch_size,
)
from visionbatch.fit.probes.base import Probe
from visionbatch.stats import (
    SPEED_TOLERANCE,
    Timings,
    repeat_timings,
    smallest_as_fast,
    smallest_as_fast_settled,
)
from visionbatch.ultralytics.spec import NOMINAL_BATCH
from visionbatch.units import human_bytes

CREEP = 1.1  # a band's target under 1.1x the largest batch that fitted is creeping: take the secant step
GROWTH_LIMIT = 16  # never extrapolate more than 16x past the largest batch that fitted
MAX_PROBES = 8
TYPICAL_PROBES = 5  # the probes a search usually takes (4 to 6): the progress estimate's plan
TIMED_STEPS = 3  # timed steps per block, after one warm-up step
TIMING_BOUND_S = 20.0  # timing repeats at most this long (every candidate gets one block regardless)


class StepRunner(Protocol):
    """What the planner needs from a workload (see workload.Workload)."""

    def train_step(self, batch_size: int, boundary: Any = None) -> float: ...

    def val_step(self, batch_size: int) -> float: ...

    def time_steps(self, batch_size: int, steps: int = 3) -> Sequence[float] | None:
        """Seconds of each of `steps` steps after one warm-up step (None: nothing can be timed)."""

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
    total_bytes: int | None = None  # the card's size, for Ultralytics' cache rule (plan.after_validation_bytes)
    context_bytes: int = 0  # in every CUDA peak, counted once when training and validation are held together
    steps: Steps = field(default_factory=lambda: Steps(None, 1))  # the progress lines
    measured: bool = True  # False: the readings are traced estimates
    val_images: int | None = None  # the validation split: no validation batch holds more
    val_with: dict[int, ProbeSample] = field(default_factory=dict)  # training batch -> its validation probe

    def val_batch(self, batch_size: int) -> int:
        """Validation's batch with training at `batch_size` (`plan.val_batch_size`)."""
        return val_batch_size(batch_size, self.val_images)

    def run(self, batch_size: int) -> bool:
        self.steps.begin(f"batch {batch_size}: training step")
        train = self.probe.measure(lambda: self.runner.train_step(batch_size, self.probe.pass_boundary),
                                   batch_size, "train", self.runner.persistent())
        # the measured step ran under a tracker: speeds come from untracked, interleaved steps at the end
        train = replace(train, step_s=None)
        self.samples.append(train)
        val = None
        if train.ok:  # validation runs between epochs, at twice the batch, with the training state alive
            val_b = self.val_batch(batch_size)
            self.steps.begin(f"batch {batch_size}: validation step at batch {val_b}")
            val = replace(self.probe.measure(lambda: self.runner.val_step(val_b), val_b, "val",
                                             self.runner.persistent()), step_s=None)
            self.samples.append(val)
            self.val_with[batch_size] = val
        fits = batch_fits(train, val, self.budget_bytes, self.total_bytes)
        self.steps.end(probe_line(train, val, fits, self.budget_bytes, self.measured, self.total_bytes))
        if fits:
            self.best = max(self.best, batch_size)
            self.misses = 0
        else:
            self.upper = batch_size if self.upper is None else min(self.upper, batch_size)
            self.misses += 1
        return fits

    def readings(self, phase: str) -> list[ProbeSample]:
        return [s for s in self.samples if s.phase == phase and s.ok]

    def left_out(self, phase: str) -> set[int]:
        """Batches whose readings the curve leaves out: both sides of every reading that went down
        as the batch went up (the allocator reusing cached blocks), while two others remain."""
        points = self.readings(phase)
        bad = {b for pair in monotonic_violations([s.batch_size for s in points], [s.peak_bytes for s in points])
               for b in pair}
        return bad if len({s.batch_size for s in points if s.batch_size not in bad}) >= 2 else set()

    def curve(self, phase: str) -> MemoryCurve | None:
        # readings that go down as the batch goes up would bend the fit: leave both out; the answer
        # is verified anyway, and the plan says where a reading and the curve disagree
        bad = self.left_out(phase)
        points = [s for s in self.readings(phase) if s.batch_size not in bad]
        if len({s.batch_size for s in points}) < 2:
            return None
        return fit_memory_curve([s.batch_size for s in points], [s.peak_bytes for s in points],
                                self.probe.noise_floor_bytes)


def _together(state: _Probing, train: MemoryCurve, val: MemoryCurve, target: int) -> int:
    """`target`, or less where training and validation must fit together (`plan.after_validation_bytes`).

    Below half the card Ultralytics keeps its CUDA cache, so training's peak plus validation's
    reserved memory must fit; above it each phase alone must. Batches in between the largest that
    fits together and the last one under half the card are out.
    """
    def together(b: int) -> bool:  # nothing held (None: above half the card, or no card size) fits too
        held = held_predicted(train, val, b, state.val_batch(b), state.context_bytes, state.total_bytes)
        return held is None or held <= state.budget_bytes

    if together(target):
        return target
    # training under half the card at target is under it below too: `together` is monotonic there
    low, high = 0, target  # together(low) holds (or low is 0); together(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if together(middle) else (low, middle)
    return max(low, 1)


def _local_step(state: _Probing) -> int | None:
    """Where the line through the two largest batches that fitted (in the curve's readings) meets
    the budget: the bracketed search's secant step (None with fewer than two, or no growth)."""
    bad = state.left_out("train")
    fitted = sorted((s.batch_size, s.peak_bytes) for s in state.readings("train")
                    if s.batch_size <= state.best and s.batch_size not in bad)
    return extrapolate_batch(fitted[-2], fitted[-1], state.budget_bytes) if len(fitted) >= 2 else None


def _val_bound(state: _Probing, val_curve: MemoryCurve, limit: int, sigmas: float) -> int:
    """The largest training batch whose validation the curve allows: half its validation batch, or
    every batch when validation fits at the whole split (no validation batch holds more)."""
    top = solve_batch(val_curve, state.budget_bytes, sigmas, cap=2 * limit)
    return limit if state.val_images and top >= state.val_images else top // 2


def _target(state: _Probing, limit: int, sigmas: float) -> int:
    """The next batch to verify: the curves' answer under every bound."""
    train_curve, val_curve = state.curve("train"), state.curve("val")
    if train_curve.per_image_bytes <= 0 and train_curve.quadratic_bytes <= 0:
        return min(state.best * 4, limit, (state.upper or limit + 1) - 1)  # readings not growing yet: explore
    target = solve_batch(train_curve, state.budget_bytes, sigmas, below=state.upper, cap=limit)
    if state.upper is None and target < CREEP * state.best:
        # nothing failed yet, and the band (wide where the readings carry a step or noise) lets the
        # target creep up a batch or two per probe: the last readings' slope steps to the budget
        target = max(target, _local_step(state) or 0)
    if val_curve is not None:
        target = min(target, _val_bound(state, val_curve, limit, sigmas))
        target = _together(state, train_curve, val_curve, target)
    if state.upper is not None:
        # after a failure the curve may be what failed: step in from the bracket too, by the
        # readings on either side when both exist, and by halving after two misses in a row
        # (or when the failure was an OOM, which gives no reading)
        readings = {s.batch_size: s.peak_bytes for s in state.readings("train")}
        middle = (state.best + state.upper) // 2
        if state.misses >= 2 or state.upper not in readings:
            if state.misses < 2:
                # an out-of-memory error far above: the band's target alone creeps up a batch or two
                # per probe; the slope of the last two readings that fitted steps to the budget
                target = max(target, _local_step(state) or 0)
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
    workload: WorkloadSummary | None = None,
    nominal_batch: int = NOMINAL_BATCH,
    max_probes: int = MAX_PROBES,
    sigmas: float = DEFAULT_SIGMAS,
    capacity: Capacity | None = None,
    measured: bool = True,
    timing_bound_s: float = TIMING_BOUND_S,
    clock: Callable[[], float] = time.perf_counter,
    progress: Callable[[str], None] | None = None,
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
        measured: False when the probe estimates instead of measuring (a trace for a target).
        timing_bound_s: seconds the speed timings may repeat for.
        clock: seconds now, for the timing bound, `planning_s` and the time left (tests pass a simulated clock).
        progress: receives a line as each step starts, one per probe (its peaks, whether it fits, the
            time left) and one per timed block (`console.Progress` also draws a bar); None for silence.

    Returns:
        The verified `BatchPlan`.

    Raises:
        BudgetError: not even batch 1 fits.
    """
    started = clock()
    capacity = capacity or probe.capacity()
    budget = int(memory_fraction * capacity.usable_bytes)
    limit = max(1, dataset_images)
    steps = Steps(progress, min(TYPICAL_PROBES, max_probes) if limit >= 2 else 1, "probe", exact=limit < 2,
                  clock=clock)
    state = _Probing(probe, runner, budget, [], total_bytes=capacity.total_bytes,
                     val_images=workload.val_images if workload is not None else None,
                     context_bytes=capacity.context_bytes, steps=steps, measured=measured)
    warnings: list[str] = []

    if not state.run(1):
        steps.finish()
        raise BudgetError(_too_small(state, capacity, memory_fraction, workload))
    probes = 1
    if limit >= 2:
        state.run(2)
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
            # the curve cannot rule it out: bisect, or try the next batch where the last readings'
            # slope puts it over the budget (a step that would close the bracket)
            local = _local_step(state)
            answer = nxt if local is not None and local < nxt else max((state.best + state.upper) // 2, nxt)
        target = answer
        if state.upper is None and state.best <= 2 and answer // 4 > 4:
            target = answer // 4  # an intermediate reading before the long extrapolation
        target = min(target, state.best * GROWTH_LIMIT)
        if probes >= steps.total:  # more than the typical search: plan for the most it may take
            steps.expect(max_probes)
        state.run(target)
        probes += 1
    steps.finish()
    if probes >= max_probes and state.upper != state.best + 1:
        warnings.append(f"stopped after {max_probes} probes: a batch between {state.best} and "
                        f"{state.upper or 'the curve answer'} might fit too")
    timings = _time_candidates(state, timing_bound_s, clock, measured)
    return _plan(state, capacity, memory_fraction, limit, workload, nominal_batch, sigmas, warnings, timings,
                 clock() - started, measured, max_probes if probes >= max_probes else None)


def _time_candidates(state: _Probing, bound_s: float, clock: Callable[[], float],
                     measured: bool = True) -> Timings | None:
    """Time the batches the speed choice is between, interleaved; each one's step_s becomes its mean step."""
    fitted = {s.batch_size for s in state.readings("train")
              if s.batch_size <= state.best and batch_fits(s, state.val_with.get(s.batch_size), state.budget_bytes,
                                                                state.total_bytes)}
    candidates = sorted({b for b in fitted if b > 2} | {state.best})  # batches 1 and 2 only start the curve
    if measured:  # a trace has nothing to time
        state.steps.note(f"timing batch {', '.join(map(str, candidates))} for the speed choice: interleaved "
                         f"blocks of a warm-up and {TIMED_STEPS} timed steps, up to {bound_s:g} s")

    def block(batch_size: int) -> Sequence[float] | None:
        seconds = state.runner.time_steps(batch_size, TIMED_STEPS)
        if seconds:
            state.steps.note(f"timed batch {batch_size}: {len(seconds) * batch_size / sum(seconds):.1f} img/s "
                             f"over {len(seconds)} steps")
        return seconds

    timings = repeat_timings(block, candidates, smallest_as_fast_settled, bound_s, clock)
    for i, s in enumerate(state.samples):
        speed = timings.speed(s.batch_size) if timings and s.phase == "train" and s.ok else None
        if speed is not None:
            state.samples[i] = replace(s, step_s=s.batch_size / speed.img_per_s)
    return timings


def probe_line(train: ProbeSample, val: ProbeSample | None, fits: bool, budget_bytes: int,
               measured: bool = True, total_bytes: int | None = None) -> str:
    """One probe in a progress line: its batch, each phase's peak (or out of memory), what the two
    hold together after validation where Ultralytics keeps its CUDA cache (on a card of
    `total_bytes`: `plan.held_after_validation`), and whether it fits.

    Examples:
        >>> probe_line(ProbeSample(8, "train", True, 3 << 30), ProbeSample(16, "val", True, 2 << 30), True, 4 << 30)
        'batch 8: training peak 3.00 GiB, validation at 16 2.00 GiB: fits the 4.00 GiB budget'
        >>> probe_line(ProbeSample(64, "train", False, None), None, False, 4 << 30)
        'batch 64: training ran out of memory: does not fit the 4.00 GiB budget'
        >>> probe_line(ProbeSample(8, "train", True, 3 << 30, reserved_bytes=3 << 30),
        ...            ProbeSample(16, "val", True, 2 << 30, reserved_bytes=2 << 30), False, 4 << 30, total_bytes=16 << 30)
        'batch 8: training peak 3.00 GiB, validation at 16 2.00 GiB, held together after validation 5.00 GiB: does not fit the 4.00 GiB budget'
    """
    peak = "peak" if measured else "traced peak"
    parts = [f"training {peak} {human_bytes(train.peak_bytes)}" if train.ok else "training ran out of memory"]
    if val is not None:
        parts.append(f"validation at {val.batch_size} {human_bytes(val.peak_bytes)}" if val.ok
                     else f"validation at {val.batch_size} ran out of memory")
    held = held_after_validation(train, val, total_bytes)
    if held is not None:  # what batch_fits weighs too: say it, or a "does not fit" under the budget reads wrong
        parts.append(f"held together after validation {human_bytes(held)}")
    verdict = "fits" if fits else "does not fit"
    return f"batch {train.batch_size}: {', '.join(parts)}: {verdict} the {human_bytes(budget_bytes)} budget"


def _too_small(state: _Probing, capacity: Capacity, fraction: float, workload: WorkloadSummary | None) -> str:
    train = next(s for s in state.samples if s.phase == "train")
    val = next((s for s in state.samples if s.phase == "val"), None)
    what = f"{workload.model} at imgsz={workload.imgsz}" if workload else "the model"
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


def _plan(state: _Probing, capacity: Capacity, fraction: float, limit: int, workload: WorkloadSummary | None,
          nominal_batch: int, sigmas: float, warnings: list[str], timings: Timings | None, seconds: float,
          measured: bool, probes_spent: int | None = None) -> BatchPlan:
    curve = state.curve("train")
    val_curve = state.curve("val")
    if curve is None:  # only batch 1 ran
        reading = state.readings("train")[0]
        curve = fit_memory_curve([1, 2], [reading.peak_bytes, reading.peak_bytes], state.probe.noise_floor_bytes)
        curve = replace(curve, points=1, batch_max=1, sxx=0.0)
    best = state.best
    train_at = {s.batch_size: s for s in state.readings("train")}
    val_at = {b: s for b, s in state.val_with.items() if s.ok}  # by the training batch it ran with
    chosen = best
    reason = _reason_max(state, capacity, fraction, curve, val_curve, limit, sigmas, measured, probes_spent)
    speeds = timings.speeds if timings else ()
    if len(speeds) > 1:
        pick = smallest_as_fast(speeds)
        if pick.batch_size < best:
            chosen = pick.batch_size
            reason = (f"throughput saturates: batch {chosen} trains {pick.describe()}, within "
                      f"{SPEED_TOLERANCE:.0%} of every other timed batch by their intervals; the largest batch "
                      f"that fits is {best}: {timings.speed(best).describe()}")
        else:
            stop = "decided" if timings.settled else f"undecided at the {timings.bound_s:g} s bound"
            reason += ("; no smaller batch is shown as fast: " + ", ".join(f"batch {s.batch_size} {s.describe()}"
                                                                          for s in speeds)
                       + f" ({timings.blocks} interleaved blocks in {timings.elapsed_s:.1f} s, {stop})")
    if chosen != best and chosen in train_at:  # the largest batch's reading is in _reason_max's words already
        off = _off_curve(curve, train_at[chosen].peak_bytes, chosen, sigmas, chosen in state.left_out("train"),
                         measured)
        reason += f"; batch {chosen} {off}" if off else ""
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
    if val_curve is not None and val_curve.extrapolates(state.val_batch(chosen)):
        warnings.append("the validation prediction extrapolates beyond the measured batches")
    top_speed = max((s.img_per_s for s in speeds), default=None)
    return BatchPlan(
        batch_size=chosen,
        max_batch_size=best,
        val_batch_size=state.val_batch(chosen),
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
        measured_bytes=train_at[chosen].peak_bytes if chosen in train_at and measured else None,
        val_predicted_bytes=int(val_curve.predict(state.val_batch(chosen))) if val_curve else None,
        val_measured_bytes=val_at[chosen].peak_bytes if chosen in val_at and measured else None,
        img_per_s=timings.speed(chosen).img_per_s if timings and timings.speed(chosen) else None,
        best_img_per_s=top_speed,
        samples=tuple(state.samples),
        curve=curve,
        val_curve=val_curve,
        workload=workload,
        reason=reason,
        warnings=tuple(warnings),
        measured=measured,
        planning_s=round(seconds, 3),
        after_validation_bytes=after_validation_bytes(train_at.get(chosen), val_at.get(chosen),
                                                      capacity.total_bytes),
        timings=timings,
    )


def _reason_max(state: _Probing, capacity: Capacity, fraction: float, curve: MemoryCurve,
                val_curve: MemoryCurve | None, limit: int, sigmas: float, measured: bool = True,
                probes_spent: int | None = None) -> str:
    """Why the largest batch that fits is `state.best`: its reading, and what is known of the batch above it.

    The reading decides: where it lies outside the curve's band the sentence says so, and batches
    above it that the curve allows but no step ran are named as unmeasured, never as fitting.
    """
    best = state.best
    verb = "measured" if measured else "is estimated at"
    budget = f"{fraction:g} x {human_bytes(capacity.usable_bytes)} = {human_bytes(state.budget_bytes)}"
    if best >= limit:
        return f"batch {best} uses every training image and fits {budget}"
    reading = next(s for s in state.readings("train") if s.batch_size == best)
    off = _off_curve(curve, reading.peak_bytes, best, sigmas, best in state.left_out("train"), measured)
    said = f"it {off}" if off else f"it {verb} {human_bytes(reading.peak_bytes)}"
    return f"batch {best} is the largest that fits {budget}: {said}; " + \
        _above_best(state, curve, val_curve, limit, sigmas, measured, probes_spent)


def _off_curve(curve: MemoryCurve, peak_bytes: int, batch_size: int, sigmas: float, left_out: bool,
               measured: bool = True) -> str | None:
    """A reading that lies outside the curve's ±`sigmas` band, in words (None when inside it).

    Examples:
        >>> from visionbatch.fit.curve import fit_memory_curve
        >>> curve = fit_memory_curve([1, 2, 4], [1 << 30, (1 << 30) + (10 << 20), (1 << 30) + (30 << 20)], 2 << 20)
        >>> _off_curve(curve, (1 << 30) + (200 << 20), 4, 2.0, False)
        "measured 1.20 GiB, 170 MiB above the curve's 1.03 GiB ± 4.00 MiB (2σ): the reading decides"
        >>> _off_curve(curve, (1 << 30) + (31 << 20), 4, 2.0, False) is None
        True
    """
    predicted, band = curve.predict(batch_size), sigmas * curve.uncertainty(batch_size)
    gap = peak_bytes - predicted
    if abs(gap) <= band:
        return None
    verb = "measured" if measured else "is estimated at"
    why = ", a reading the curve leaves out (a larger batch read less)" if left_out else ""
    return (f"{verb} {human_bytes(peak_bytes)}, {human_bytes(abs(gap))} {'above' if gap > 0 else 'below'} the "
            f"curve's {human_bytes(predicted)} ± {human_bytes(band)} ({sigmas:g}σ){why}: the reading decides")


def _above_best(state: _Probing, curve: MemoryCurve, val_curve: MemoryCurve | None, limit: int, sigmas: float,
                measured: bool, probes_spent: int | None) -> str:
    """What is known of the batches above the largest that fits: failed, predicted over, or not measured."""
    best, upper = state.best, state.upper
    why = ""
    if upper is not None:
        over = next((s for s in state.samples if s.batch_size == upper and s.phase == "train"), None)
        why = f"batch {upper} {'ran out of memory' if over is not None and not over.ok else 'did not fit'}"
        held = _held_words(over, state.val_with.get(upper), state.budget_bytes, state.total_bytes)
        why += f": {held}" if held else ""
        if upper == best + 1:
            return why
    nxt = best + 1
    sure = _predicted_top(state, curve, val_curve, limit, sigmas)  # fit with the margin
    maybe = _predicted_top(state, curve, val_curve, limit, 0.0)  # predicted to fit, but not by the margin
    stop = (f" (the search stopped after max_probes={probes_spent} probes)" if probes_spent
            else "")
    largest = f"{best} is the largest {'measured' if measured else 'traced'} to fit" + (f", and {why}" if why else "")
    if sure > best:
        span = f"batch {nxt} is" if sure == nxt else f"batches {nxt}-{sure} are"
        return f"{span} predicted to fit but {'was' if sure == nxt else 'were'} not measured{stop}; {largest}"
    need = f"batch {nxt} is predicted to need {human_bytes(curve.predict(nxt))}"
    if maybe > best:  # the ± figures are the margin asked for (sigmas σ), as the plot's band and _off_curve
        need += f" ± {human_bytes(sigmas * curve.uncertainty(nxt))} ({sigmas:g}σ)"
        if val_curve is not None:
            val_b = state.val_batch(nxt)
            need += (f" in training and {human_bytes(val_curve.predict(val_b))} ± "
                     f"{human_bytes(sigmas * val_curve.uncertainty(val_b))} ({sigmas:g}σ) in validation at {val_b}")
            held = held_predicted(curve, val_curve, nxt, val_b, state.context_bytes, state.total_bytes)
            if held is not None:  # the figure that is close to the budget where Ultralytics keeps its cache: say it
                need += f", {human_bytes(held)} held together after the first validation"
        return (f"{need}, too close to the {human_bytes(state.budget_bytes)} budget to count on, "
                f"and was not measured{stop}; {largest}")
    return f"{need}, over the budget" + (f" ({why})" if why else "")


def _held_words(train: ProbeSample | None, val: ProbeSample | None, budget_bytes: int,
                total_bytes: int | None) -> str | None:
    """Why a batch whose two peaks are within the budget did not fit: what training and validation
    hold together after the first validation (`plan.held_over_budget`), in words; None otherwise.

    Examples:
        >>> train = ProbeSample(86, "train", True, 1340 << 20, reserved_bytes=1040 << 20)
        >>> val = ProbeSample(172, "val", True, 728 << 20, reserved_bytes=428 << 20)
        >>> _held_words(train, val, 1720 << 20, 16 << 30)
        "training's 1.31 GiB and validation's 428 MiB reserved (its 728 MiB peak less the CUDA context), held together after the first validation, need 1.73 GiB > the 1.68 GiB budget"
    """
    held = held_over_budget(train, val, budget_bytes, total_bytes)
    if held is None:
        return None
    # the sum quotes validation's reserved memory, so the figures add up: the context is counted once
    less = "" if val.reserved_bytes == val.peak_bytes else \
        f" (its {human_bytes(val.peak_bytes)} peak less the CUDA context)"
    return (f"training's {human_bytes(train.peak_bytes)} and validation's {human_bytes(val.reserved_bytes)} "
            f"reserved{less}, held together after the first validation, need {human_bytes(held)} > the "
            f"{human_bytes(budget_bytes)} budget")


def _predicted_top(state: _Probing, curve: MemoryCurve, val_curve: MemoryCurve | None, limit: int,
                   sigmas: float) -> int:
    """The largest batch below the smallest that did not fit that the curves allow with `sigmas`
    standard deviations of margin (0: by the predictions alone)."""
    top = solve_batch(curve, state.budget_bytes, sigmas, below=state.upper, cap=limit)
    if val_curve is not None:
        top = min(top, _val_bound(state, val_curve, limit, sigmas))
        if sigmas > 0:
            top = _together(state, curve, val_curve, top)
    return top


def check_batch(
    probe: Probe,
    runner: StepRunner,
    batch_size: int,
    memory_fraction: float,
    workload: WorkloadSummary,
    capacity: Capacity | None = None,
    measured: bool = True,
    images: tuple[int, int] | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BatchCheck:
    """Answer "will `batch_size` fit?" with one training step at it and validation at twice it.

    No search and no curve: the two steps Ultralytics will run, measured (or traced for a target),
    against `memory_fraction` of the usable memory. Validation is skipped when training already
    ran out of memory. With `images` (training and validation images), a batch larger than a split
    is measured at the split's size: no batch of the run holds more. `progress` receives a line as
    each of the two steps starts and ends, the last with the answer; `clock` times it (tests pass
    a simulated one).

    Returns:
        The `BatchCheck`: the peaks, the margin and the yes or no.
    """
    started = clock()
    capacity = capacity or probe.capacity()
    budget = int(memory_fraction * capacity.usable_bytes)
    train_b = min(batch_size, images[0]) if images else batch_size
    val_b = val_batch_size(batch_size, images[1] if images else None)
    steps = Steps(progress, 2, "step", clock=clock)
    steps.begin(f"batch {train_b}: training step")
    train = probe.measure(lambda: runner.train_step(train_b, probe.pass_boundary), train_b, "train",
                          runner.persistent())
    train = replace(train, step_s=None)  # one step under a tracker is no timing
    val = None
    if train.ok:  # validation runs between epochs, at twice the batch, with the training state alive
        steps.end(f"batch {train_b}: training {'peak' if measured else 'traced peak'} {human_bytes(train.peak_bytes)}")
        steps.begin(f"batch {train_b}: validation step at batch {val_b}")
        val = replace(probe.measure(lambda: runner.val_step(val_b), val_b, "val", runner.persistent()), step_s=None)
    else:
        steps.expect(1)  # out of memory: there is no validation step
    fits = batch_fits(train, val, budget, capacity.total_bytes)
    steps.end(probe_line(train, val, fits, budget, measured, capacity.total_bytes))
    after = after_validation_bytes(train, val, capacity.total_bytes)
    peaks = [s.peak_bytes for s in (train, val) if s is not None and s.ok] + ([after] if after else [])
    margin = budget - max(peaks) if len(peaks) >= 2 else None
    warnings = []
    if margin is not None and abs(margin) < probe.rerun_spread_bytes:
        warnings.append(f"the margin, {human_bytes(margin)}, is within the {human_bytes(probe.rerun_spread_bytes)} "
                        f"that the same step's reading moves between identical runs here: a rerun can answer "
                        + ("no; leave at least that much room to be sure" if fits else "yes"))
    return BatchCheck(
        batch_size=batch_size, val_batch_size=val_b, fits=fits, train=train, val=val,
        budget_bytes=budget, margin_bytes=margin, memory_fraction=memory_fraction, device=capacity.device,
        device_name=capacity.name, total_bytes=capacity.total_bytes, usable_bytes=capacity.usable_bytes,
        context_bytes=capacity.context_bytes, workload=workload,
        reason=_check_reason(batch_size, train, val, budget, memory_fraction, capacity, measured, after),
        warnings=tuple(warnings), measured=measured, planning_s=round(clock() - started, 3),
        after_validation_bytes=after,
    )


def _check_reason(batch_size: int, train: ProbeSample, val: ProbeSample | None, budget: int, fraction: float,
                  capacity: Capacity, measured: bool, after: int | None) -> str:
    verb = "measured" if measured else "predicted"
    budget_text = f"{fraction:g} x {human_bytes(capacity.usable_bytes)} = {human_bytes(budget)}"
    if not train.ok:
        return f"batch {batch_size} does not fit: training ran out of memory on {capacity.device}"
    if val is not None and not val.ok:
        return (f"batch {batch_size} does not fit: training {verb} {human_bytes(train.peak_bytes)}, but validation "
                f"at {val.batch_size} ran out of memory")
    peaks = (f"training {verb} {human_bytes(train.peak_bytes)}, validation at {val.batch_size} "
             f"{human_bytes(val.peak_bytes)}")
    worst = max(train.peak_bytes, val.peak_bytes, after or 0)
    if after is not None and after > max(train.peak_bytes, val.peak_bytes):
        peaks += (f", together {human_bytes(after)} once validation has run (Ultralytics keeps its CUDA cache "
                  f"below half the card)")
    if worst <= budget:
        return f"batch {batch_size} fits {budget_text}: {peaks}; {human_bytes(budget - worst)} to spare"
    return f"batch {batch_size} does not fit {budget_text}: {peaks}; {human_bytes(worst - budget)} over"
