"""visionbatch.infer.replay: the chosen policy replayed in real time, here on a fake clock and runner."""

from __future__ import annotations

from visionbatch.infer.choice import choose
from visionbatch.infer.plan import Constraints, StreamLoad
from visionbatch.infer.queueing import arrivals_s, simulate
from visionbatch.infer.replay import replay, replay_arrivals, verify_choice
from visionbatch.infer.sweep import summarize


class FakeRunner:
    """A fake clock, its sleep, and batches that take `service_ms[b]` of it."""

    def __init__(self, service_ms: dict[int, float]) -> None:
        self.now = 0.0
        self.service_ms = service_ms
        self.batches: list[int] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def make_step(self, batch: int):
        def step() -> None:
            self.batches.append(batch)
            self.now += self.service_ms[batch] / 1000.0

        return step


def test_replay_on_a_fake_clock_gives_the_simulation_exactly() -> None:
    arrivals = arrivals_s(2, 5, 60, jitter_ms=20, random_phases=True)
    runner = FakeRunner({4: 300.0})
    result = replay(lambda frames: runner.make_step(4)(), arrivals, 4, 300.0, 1000.0, clock=runner.clock,
                    sleep=runner.sleep)
    simulated = simulate(arrivals, {4: [300.0]}, 4, 300.0, 1000.0)
    assert (result.latency_p50_ms, result.latency_p99_ms, result.latency_max_ms) == (
        simulated.latency_p50_ms, simulated.latency_p99_ms, simulated.latency_max_ms)
    assert result.frames == 60 and result.batches == 15 and result.met and result.over_budget_share == 0.0


def test_replay_arrivals_are_cut_to_the_bound() -> None:
    assert replay_arrivals(arrivals_s(1, 10, 100), seconds=0.35) == [0.0, 0.1, 0.2, 0.3]


LOAD = Constraints(latency_ms=1000, load=StreamLoad(2, 5))
SERVICE = {1: [120.0] * 4, 2: [150.0] * 4, 4: [250.0] * 4, 8: [420.0] * 4}
SWEEP = [summarize(b, times) for b, times in SERVICE.items()]


def test_the_chosen_policy_met_in_the_replay_stays() -> None:
    choice = choose(SWEEP, LOAD, service_ms=SERVICE)  # batch 4, 300 ms delay (see test_infer_choice)
    runner = FakeRunner({b: times[0] for b, times in SERVICE.items()})
    verified, replays = verify_choice(choice, SWEEP, LOAD, runner.make_step, clock=runner.clock, sleep=runner.sleep)
    assert verified.batch_size == 4 and len(replays) == 1 and replays[0].met
    assert runner.batches[:3] == [1, 2, 4]  # each size the policy can call, run once before the clock starts
    assert set(runner.batches[3:-1]) == {4}  # full batches, but the last: the 3 s replay ends part-way
    assert verified.reason == choice.reason + (f"; replayed in real time ({replays[0].frames} frames): "
                                               f"p50 {replays[0].latency_p50_ms:.1f} / p99 "
                                               f"{replays[0].latency_p99_ms:.1f} ms")


def test_a_replay_that_misses_moves_the_choice_to_the_next_candidate() -> None:
    choice = choose(SWEEP, LOAD, service_ms=SERVICE)
    # the machine is busier now: batch 4 takes 1.2 s, so frames wait past the budget
    runner = FakeRunner({1: 120.0, 2: 150.0, 4: 1200.0, 8: 420.0})
    verified, replays = verify_choice(choice, SWEEP, LOAD, runner.make_step, clock=runner.clock, sleep=runner.sleep)
    assert [(r.batch_size, r.queue_delay_ms, r.met) for r in replays] == [(4, 300.0, False), (2, 100.0, True)]
    assert (verified.batch_size, verified.queue_delay_ms) == (2, 100.0)
    # full batches of 4 ran 4.8x their measured 250 ms; batch 2's replay served as measured
    assert replays[0].service_ratio > 4.0 and replays[1].service_ratio == 1.0
    assert verified.simulated == choice.candidates[1]
    assert verified.reason.endswith(f"batch 4 (delay 300 ms) missed the budget in the replay "
                                    f"(p99 {replays[0].latency_p99_ms:.1f} ms)")


def test_no_candidate_met_in_the_replay_means_no_choice() -> None:
    choice = choose(SWEEP, LOAD, service_ms=SERVICE)
    runner = FakeRunner({1: 2000.0, 2: 2000.0, 4: 2000.0, 8: 2000.0})
    verified, replays = verify_choice(choice, SWEEP, LOAD, runner.make_step, clock=runner.clock, sleep=runner.sleep)
    assert len(replays) == 3 and not any(r.met for r in replays)
    # every call took 2000 ms against 120 to 420 measured: each miss says how much slower it served
    assert all(r.service_ratio >= 2000 / 420 for r in replays)
    assert verified.reason.count("x the time the sweep measured") == 3
    assert verified.batch_size is None and verified.reason.startswith(
        "no policy met the 1000 ms budget when replayed in real time (batch 4 (delay 300 ms) p99 ")
    assert verified.advice[0].startswith("a larger latency budget: latency_ms=")
