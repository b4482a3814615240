"""The chosen batching policy replayed against the real runner, in real time, for a bounded time.

Frames arrive on the load's schedule (the same arrivals the simulation used, cut to `seconds`),
the batcher of `visionbatch.infer.queueing` groups them (at most `max_batch`, the oldest waiting
at most `queue_delay_ms` while the runner is free), each batch runs on the runner, and every
frame's latency is its batch's end less its arrival. Unlike the simulation, the service times
are the runner's own, now, with whatever else the machine is doing.

The clock, the sleep and the batch call are arguments, so tests replay on a fake clock with a
fake runner and get the simulation's figures exactly.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

from visionbatch.infer.choice import policy_arrivals
from visionbatch.infer.plan import BatchMeasurement, Choice, Constraints, ReplayResult
from visionbatch.infer.queueing import QueueStats, percentile

REPLAY_SECONDS = 3.0  # the load replayed per policy: a few seconds, then the queue drains
MAX_REPLAYS = 3  # candidates replayed at most before the choice gives up


def replay(run_batch: Callable[[int], object], arrivals: Sequence[float], max_batch: int, queue_delay_ms: float,
           latency_budget_ms: float | None = None, clock: Callable[[], float] = time.perf_counter,
           sleep: Callable[[float], None] = time.sleep,
           expected_ms: Callable[[int], float] | None = None) -> ReplayResult:
    """Replay `arrivals` (seconds from the start, ascending) through the batcher on `run_batch`.

    Args:
        run_batch: runs one batch of the given size to completion (inputs prepared beforehand).
        arrivals: when each frame arrives, seconds after the replay starts.
        max_batch: the policy's largest batch.
        queue_delay_ms: the longest the oldest frame waits for the batch to fill while the runner is free.
        latency_budget_ms: the budget the p99 is held against.
        clock: seconds, monotonic.
        sleep: waits the given seconds.
        expected_ms: a batch of k frames -> its measured mean call time, for `service_ratio`.

    Examples:
        >>> now = [0.0]
        >>> def run(batch_size):
        ...     now[0] += 0.05  # 50 ms a batch, whatever its size
        >>> def wait(seconds):
        ...     now[0] += seconds
        >>> result = replay(run, [0.0, 0.1], 2, 150.0, clock=lambda: now[0], sleep=wait)
        >>> result.latency_max_ms, result.latency_p50_ms, result.batches
        (150.0, 100.0, 1)
    """
    if not arrivals:
        raise ValueError("replay() needs at least one arrival")
    delay_s = queue_delay_ms / 1000.0
    count = len(arrivals)
    latencies: list[float] = []
    served_s = expected_s = 0.0
    batches = 0
    head = 0
    start = clock()
    while head < count:
        oldest = arrivals[head]
        now = _wait_until(oldest, start, clock, sleep)
        waiting = bisect.bisect_right(arrivals, now, lo=head) - head
        if waiting < max_batch:
            full_at = arrivals[head + max_batch - 1] if head + max_batch - 1 < count else math.inf
            now = _wait_until(min(oldest + delay_s, full_at), start, clock, sleep)
            waiting = bisect.bisect_right(arrivals, now, lo=head) - head
        taken = min(waiting, max_batch)
        began = clock()
        run_batch(taken)
        finished = clock()
        end = finished - start
        served_s += finished - began
        if expected_ms is not None:
            expected_s += expected_ms(taken) / 1000.0
        latencies.extend(end - arrivals[i] for i in range(head, head + taken))
        head += taken
        batches += 1
    ordered = sorted(latencies)
    p99_ms = percentile(ordered, 99) * 1000.0
    over = None if latency_budget_ms is None else sum(t * 1000.0 > latency_budget_ms for t in ordered) / count
    return ReplayResult(
        batch_size=max_batch, queue_delay_ms=round(queue_delay_ms, 3), frames=count, batches=batches,
        latency_p50_ms=round(percentile(ordered, 50) * 1000.0, 3), latency_p99_ms=round(p99_ms, 3),
        latency_max_ms=round(ordered[-1] * 1000.0, 3), over_budget_share=None if over is None else round(over, 4),
        met=latency_budget_ms is None or p99_ms <= latency_budget_ms, wall_s=round(clock() - start, 3),
        service_ratio=round(served_s / expected_s, 3) if expected_s > 0 else None)


def _wait_until(due_s: float, start: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> float:
    """Sleep until `due_s` after `start`; the time since `start`, never before `due_s` (a sleep that
    wakes a hair early counts as on time)."""
    now = clock() - start
    if now < due_s:
        sleep(due_s - now)
        now = max(clock() - start, due_s)
    return now


def replay_arrivals(arrivals: Sequence[float], seconds: float = REPLAY_SECONDS) -> list[float]:
    """The arrivals of the first `seconds` (at least one frame).

    Examples:
        >>> replay_arrivals([0.0, 0.5, 1.0, 3.5], seconds=3.0)
        [0.0, 0.5, 1.0]
    """
    kept = [t for t in arrivals if t < seconds]
    return kept or list(arrivals[:1])


def verify_choice(choice: Choice, measurements: Sequence[BatchMeasurement], constraints: Constraints,
                  make_step: Callable[[int], Callable[[], object]], seconds: float = REPLAY_SECONDS,
                  clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                  progress: Callable[[str], None] | None = None) -> tuple[Choice, tuple[ReplayResult, ...]]:
    """Replay the chosen policy, then the next candidates while the replay misses the budget.

    A batch of k frames runs as the smallest measured batch >= k, as the simulation costs it,
    so every call is at a shape the sweep already warmed. Returns the choice (the first
    candidate whose replay met the budget; None when none of `MAX_REPLAYS` did) and every replay.

    Examples:
        Without a load there is nothing to replay:

        >>> choice = Choice(2, "batch 2", ())
        >>> verify_choice(choice, [], Constraints(), lambda b: (lambda: None)) == (choice, ())
        True
    """
    if constraints.load is None or not choice.candidates:
        return choice, ()
    measured = sorted(m.batch_size for m in measurements)
    mean_ms = {m.batch_size: m.latency_mean_ms for m in measurements}
    replays: list[ReplayResult] = []
    for policy in choice.candidates[:MAX_REPLAYS]:
        # the inputs of the sizes this policy can call, made (and run once) before the clock starts
        sizes = [b for b in measured if b <= policy.batch_size] or measured[:1]
        steps = {b: make_step(b) for b in sizes}
        for step in steps.values():
            step()

        def size_for(frames: int) -> int:
            return sizes[min(bisect.bisect_left(sizes, frames), len(sizes) - 1)]

        def run_batch(frames: int) -> None:
            steps[size_for(frames)]()

        arrivals = replay_arrivals(policy_arrivals(policy.batch_size, constraints), seconds)
        result = replay(run_batch, arrivals, policy.batch_size, policy.queue_delay_ms, constraints.latency_ms,
                        clock=clock, sleep=sleep, expected_ms=lambda frames: mean_ms[size_for(frames)])
        replays.append(result)
        if progress:
            progress(f"replayed batch {result.batch_size}, queue delay {result.queue_delay_ms:g} ms, "
                     f"{result.frames} frames: p50 {result.latency_p50_ms:.1f} / p99 {result.latency_p99_ms:.1f} ms"
                     f"{'' if result.met else ', over the budget'}{_slower(result)}")
        if result.met:
            return _replayed(choice, policy, result, replays), tuple(replays)
    missed = "; ".join(f"batch {r.batch_size} (delay {r.queue_delay_ms:g} ms) p99 {r.latency_p99_ms:.1f} ms"
                       f"{_slower(r)}" for r in replays)
    lowest = min(r.latency_p99_ms for r in replays)
    return dataclasses.replace(
        choice, batch_size=None, queue_delay_ms=None, simulated=None,
        reason=f"no policy met the {constraints.latency_ms:g} ms budget when replayed in real time ({missed})",
        advice=(f"a larger latency budget: latency_ms={math.ceil(lowest)} covers the best replayed p99",
                *choice.advice)), tuple(replays)


def _slower(result: ReplayResult) -> str:
    """', its batches ran 1.12x the time the sweep measured' when real-time serving was measurably slower (5%+)
    than the sweep measured: near saturation that alone can tip the queue over.

    Examples:
        >>> r = ReplayResult(4, 100.0, 120, 30, 60.0, 900.0, 950.0, 0.2, False, 3.4, service_ratio=1.124)
        >>> _slower(r), _slower(dataclasses.replace(r, service_ratio=1.01))
        (', its batches ran 1.12x the time the sweep measured', '')
    """
    if result.service_ratio is None or result.service_ratio < 1.05:
        return ""
    return f", its batches ran {result.service_ratio:.2f}x the time the sweep measured"


def _replayed(choice: Choice, policy: QueueStats, result: ReplayResult, replays: Sequence[ReplayResult]) -> Choice:
    """The choice moved to `policy` (when a replay before it missed), its reason ending with the replay."""
    line = (f"replayed in real time ({result.frames} frames): p50 {result.latency_p50_ms:.1f} / "
            f"p99 {result.latency_p99_ms:.1f} ms")
    if policy is choice.candidates[0]:
        return dataclasses.replace(choice, reason=f"{choice.reason}; {line}")
    missed = "; ".join(f"batch {r.batch_size} (delay {r.queue_delay_ms:g} ms) missed the budget in the replay "
                       f"(p99 {r.latency_p99_ms:.1f} ms)" for r in replays[:-1])
    reason = (f"batch {policy.batch_size} with a {policy.queue_delay_ms:g} ms queue delay: simulated frame latency "
              f"p50 {policy.latency_p50_ms:.1f} / p99 {policy.latency_p99_ms:.1f} ms, utilisation "
              f"{policy.utilisation:.0%} (headroom {policy.headroom:.0%}), {line}; {missed}")
    earlier = choice.earlier
    if earlier is not None and earlier.kept:  # the kept policy was the first candidate: its replay missed
        earlier = dataclasses.replace(earlier, kept=False, why=f"{earlier.why}, but its replay missed the budget")
    return dataclasses.replace(choice, batch_size=policy.batch_size, queue_delay_ms=policy.queue_delay_ms,
                               simulated=policy, reason=reason, earlier=earlier)
