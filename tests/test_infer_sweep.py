"""visionbatch.infer.sweep: batch sizes, percentiles, stop rules, and the sweep on a simulated device."""

from __future__ import annotations

import pytest

from visionbatch.devices.oom import is_oom as is_out_of_memory
from visionbatch.infer.plan import Constraints, StreamLoad
from visionbatch.infer.sweep import (
    SweepPolicy,
    default_batch_sizes,
    run_sweep,
    stop_reason,
    summarize,
)

MIB = 2**20


class FakeDevice:
    """A simulated accelerator on a fake clock: a batch of b takes `fixed_ms + per_image_ms * b`,
    uses `base_mib + per_image_mib * b` of memory, and runs out of memory above `capacity` images
    with the CUDA allocator's message."""

    memory_source = "simulated"

    def __init__(self, fixed_ms: float = 5.0, per_image_ms: float = 10.0, base_mib: float = 100.0,
                 per_image_mib: float = 50.0, capacity: int | None = None) -> None:
        self.now = 0.0
        self.fixed_ms, self.per_image_ms = fixed_ms, per_image_ms
        self.base_mib, self.per_image_mib = base_mib, per_image_mib
        self.capacity = capacity
        self.batch = 0
        self.calls: list[int] = []

    def clock(self) -> float:
        return self.now

    def make_step(self, batch: int):
        self.batch = batch

        def step() -> None:
            if self.capacity is not None and batch > self.capacity:
                raise RuntimeError(f"CUDA out of memory. Tried to allocate {batch * 50} MiB")
            self.calls.append(batch)
            self.now += (self.fixed_ms + self.per_image_ms * batch) / 1000.0

        return step

    # probe
    def start(self) -> None:
        pass

    def stop(self) -> tuple[int, float]:
        return int((self.base_mib + self.per_image_mib * self.batch) * MIB), 7000.0


def sweep(device: FakeDevice, constraints: Constraints = Constraints(), memory_limit: int | None = None,
          **policy):
    return run_sweep(device.make_step, default_batch_sizes(64), SweepPolicy(warmup_runs=1, runs=5, **policy),
                     constraints, device, memory_limit_bytes=memory_limit, is_out_of_memory=is_out_of_memory,
                     clock=device.clock)


def test_default_batch_sizes() -> None:
    assert default_batch_sizes(1) == (1,)
    assert default_batch_sizes(48) == (1, 2, 4, 8, 16, 32, 48)


def test_summarize_percentiles_and_throughput() -> None:
    latencies = [10.0] * 99 + [20.0]
    m = summarize(2, latencies, memory_bytes=5, memory_source="x", power_mw=1234.56)
    assert (m.runs, m.latency_p50_ms, m.latency_p90_ms, m.latency_p99_ms, m.latency_max_ms) == (100, 10.0, 10.0, 10.1, 20.0)
    assert m.latency_mean_ms == 10.1 and m.per_image_ms == 5.05
    assert m.throughput_per_s == pytest.approx(2 * 100 / 1.010, abs=1e-3)
    assert (m.memory_bytes, m.memory_source, m.power_mw) == (5, "x", 1234.6)
    staged = summarize(1, [3.0, 5.0], stages_ms=[{"preprocess": 1.0}, {"preprocess": 2.0}], detections=[0, 3])
    assert staged.stages_ms == {"preprocess": 1.5} and staged.detections_per_image == 1.5


def test_sweep_plateau_stops_early_on_fake_clock() -> None:
    device = FakeDevice()  # throughput b / (5 + 10 b) ms: 66.7, 80, 88.9, 94.1, 97.0, 98.5 img/s
    result = sweep(device)
    assert [m.batch_size for m in result.measurements] == [1, 2, 4, 8, 16, 32]
    assert result.stop_reason == ("throughput plateaued: batches 16 and 32 gained less than 5% over the best "
                                  "before them")
    first = result.measurements[0]
    assert first.runs == 5 and first.latency_p50_ms == 15.0 and first.throughput_per_s == pytest.approx(66.667)
    assert first.memory_bytes == 150 * MIB and first.power_mw == 7000.0
    assert device.calls.count(1) == 6  # 1 warm-up + 5 timed


def test_out_of_memory_keeps_the_last_size_that_worked() -> None:
    device = FakeDevice(capacity=16)
    result = sweep(device)
    assert [m.batch_size for m in result.measurements] == [1, 2, 4, 8, 16]
    assert result.stop_reason == "memory: batch 32 ran out of memory (RuntimeError)"


def test_other_errors_propagate() -> None:
    def make_step(batch: int):
        def step() -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (out of memory?)")
        return step

    with pytest.raises(RuntimeError, match="illegal memory access"):
        run_sweep(make_step, (1, 2), SweepPolicy(runs=1), Constraints(), FakeDevice(), is_out_of_memory=is_out_of_memory)


def test_latency_budget_stops_after_the_first_batch_over_it() -> None:
    result = sweep(FakeDevice(), Constraints(latency_ms=50))
    assert [m.batch_size for m in result.measurements] == [1, 2, 4, 8]
    assert result.stop_reason.startswith("latency: batch 8 takes 85.0 ms at the median, over the 50 ms budget")


def test_fill_wait_alone_can_stop_the_sweep() -> None:
    # 2 x 10 fps = 20 img/s: batch 4 waits 150 ms to fill, over a 120 ms budget
    result = sweep(FakeDevice(per_image_ms=1.0), Constraints(latency_ms=120, load=StreamLoad(2, 10)))
    assert [m.batch_size for m in result.measurements] == [1, 2]
    assert result.stop_reason == "latency: batch 4 would wait 150.0 ms to fill at 20 img/s, over the 120 ms budget"


def test_memory_projected_past_the_limit() -> None:
    # 100 MiB + 50 MiB per image: 16 reads 900 MiB, 32 is projected at 1700 MiB > 1 GiB
    result = sweep(FakeDevice(), memory_limit=1024 * MIB, plateau_patience=10)
    assert [m.batch_size for m in result.measurements] == [1, 2, 4, 8, 16]
    assert result.stop_reason == "memory: batch 32 is projected at 1.66 GiB, over the 1.00 GiB limit"


def test_time_bound() -> None:
    # seconds_per_batch=1 makes each batch at least 1 s of fake time; the bound is 2.5 s
    device = FakeDevice()
    result = run_sweep(device.make_step, (1, 2, 4, 8), SweepPolicy(warmup_runs=0, seconds_per_batch=1.0,
                                                                   min_runs=1, max_seconds=2.5),
                       Constraints(), device, clock=device.clock)
    assert [m.batch_size for m in result.measurements] == [1, 2]
    assert result.stop_reason.startswith("time: batch 4 would take about 1.0 s, past the 2.5 s bound")
    assert result.measurements[0].runs == 67  # ceil(1 s / 15 ms)


def test_stop_reason_none_while_throughput_grows() -> None:
    rows = [summarize(b, [t]) for b, t in [(1, 10.0), (2, 12.0), (4, 16.0)]]
    assert stop_reason(rows, 8, Constraints(latency_ms=100), SweepPolicy()) is None


@pytest.mark.parametrize("exc, expected", [
    (MemoryError(), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer"), True),
    (RuntimeError("std::bad_alloc"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
    (ValueError("input size is outside the profile"), False),
])
def test_is_out_of_memory_is_narrow(exc: BaseException, expected: bool) -> None:
    assert is_out_of_memory(exc) is expected


def test_torch_oom_class() -> None:
    import torch

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("no room"))


class NoisyDevice(FakeDevice):
    """FakeDevice whose calls take `pattern[i]` times the nominal time, the pattern cycling over
    every call in order (a shared machine's slow and fast spells, exactly reproducible)."""

    def __init__(self, pattern: tuple[float, ...] = (1.0, 1.3, 0.8, 1.1), **kwargs) -> None:
        super().__init__(**kwargs)
        self.pattern = pattern
        self.index = 0

    def make_step(self, batch: int):
        self.batch = batch

        def step() -> None:
            self.calls.append(batch)
            factor = self.pattern[self.index % len(self.pattern)]
            self.index += 1
            self.now += (self.fixed_ms + self.per_image_ms * batch) * factor / 1000.0

        return step


ROUND_ROBIN = dict(warmup_runs=0, min_runs=4, seconds_per_batch=0.0, block_runs=4, block_seconds=0.0)


def test_second_pass_interleaves_the_batches_until_every_interval_is_narrow() -> None:
    device = NoisyDevice()
    result = run_sweep(device.make_step, (1, 2, 4), SweepPolicy(max_seconds=1e6, **ROUND_ROBIN), Constraints(),
                       device, clock=device.clock)
    # first pass: a block of each in turn; then round-robin blocks of 4 calls
    assert device.calls[:24] == [1] * 4 + [2] * 4 + [4] * 4 + [1] * 4 + [2] * 4 + [4] * 4
    assert (result.rounds, result.settled) == (32, True)
    assert [m.runs for m in result.measurements] == [132, 132, 132]
    assert [len(result.service_ms[b]) for b in (1, 2, 4)] == [132, 132, 132]
    first = result.measurements[0]
    assert (first.throughput_per_s, first.throughput_low_per_s, first.throughput_high_per_s) == (63.492, 61.662, 65.434)
    assert result.timing == ("timed in 32 interleaved rounds after the first pass (11.8 s in all): every 95% "
                             "interval, over at least 3 blocks, within 3%; widest interval +-3.0%")


def test_second_pass_stops_at_the_time_bound_with_the_intervals_it_has() -> None:
    device = NoisyDevice()
    result = run_sweep(device.make_step, (1, 2, 4), SweepPolicy(max_seconds=2.0, **ROUND_ROBIN), Constraints(),
                       device, clock=device.clock)
    assert device.now <= 2.0  # no round started that would end past the bound
    assert not result.settled and result.rounds == 4
    assert result.timing.endswith("the 2 s time bound (max_seconds=) passed; widest interval +-8.3%: batches "
                                  "whose intervals overlap count as equal")


def test_exact_timings_settle_after_the_fewest_blocks() -> None:
    # one block cannot show how much the machine moves between blocks: even exact timings get min_blocks
    device = FakeDevice()
    result = run_sweep(device.make_step, (1, 2), SweepPolicy(max_seconds=1e6, **ROUND_ROBIN), Constraints(),
                       device, clock=device.clock)
    assert result.rounds == 2 and result.settled and len(device.calls) == 24
    single = run_sweep(device.make_step, (1, 2), SweepPolicy(max_seconds=1e6, min_blocks=1, **ROUND_ROBIN),
                       Constraints(), device, clock=device.clock)
    assert single.rounds == 0 and single.settled


def test_noise_keeps_the_plateau_rule_from_stopping_early() -> None:
    # the means flatten as in test_sweep_plateau_stops_early_on_fake_clock, but 3 noisy calls a batch leave
    # each interval wide enough that a larger batch could still win by more than 5%: every size is measured
    result = sweep(NoisyDevice(pattern=(1.0, 1.2, 0.9)))
    assert [m.batch_size for m in result.measurements] == [1, 2, 4, 8, 16, 32, 64]
    assert result.stop_reason == "all 7 batch sizes measured"
    assert result.timing.startswith("runs=5 fixed the calls per batch: one pass, no interleaved repetition")


def test_second_pass_leaves_out_batches_already_over_the_budget() -> None:
    # batch 4 takes 45 ms at the median (nominal), over a 40 ms budget: only 1 and 2 are timed again
    device = NoisyDevice()
    result = run_sweep(device.make_step, (1, 2, 4), SweepPolicy(max_seconds=1e6, **ROUND_ROBIN),
                       Constraints(latency_ms=40), device, clock=device.clock)
    assert device.calls[12:20] == [1] * 4 + [2] * 4 and device.calls.count(4) == 4
    assert [m.runs for m in result.measurements][2] == 4 and result.settled


def test_intervals_count_blocks_not_calls_when_the_machine_changes_speed_between_blocks() -> None:
    # every call of a block runs at one speed, and the speed changes from block to block (slow spells of a
    # shared machine): the calls alone would claim a narrow interval, the blocks do not, so more rounds run
    from visionbatch.stats import estimate_speed, estimate_speed_blocks

    device = NoisyDevice(pattern=(1.0,) * 4 + (1.3,) * 4)
    result = run_sweep(device.make_step, (1, 2, 4), SweepPolicy(max_seconds=1e6, **ROUND_ROBIN), Constraints(),
                       device, clock=device.clock)
    first = result.measurements[0]
    calls = [ms / 1000.0 for ms in result.service_ms[1]]
    blocks = [calls[i:i + 4] for i in range(0, len(calls), 4)]
    assert all(len(set(block)) == 1 for block in blocks)  # each block exact, the blocks alternate
    by_blocks, by_calls = estimate_speed_blocks(1, blocks), estimate_speed(1, calls)
    assert (first.throughput_low_per_s, first.throughput_high_per_s) == (
        round(by_blocks.low_img_per_s, 3), round(by_blocks.high_img_per_s, 3))
    assert by_blocks.relative_half_width > 1.5 * by_calls.relative_half_width
    assert result.settled and by_blocks.relative_half_width <= 0.03
    assert by_calls.relative_half_width < 0.015  # where the calls alone would have stopped long before


class SlowSpellDevice(FakeDevice):
    """FakeDevice whose first `spell_calls` calls of some batches run `slow[b]` times slower: a busy
    neighbour during those batches' first-pass blocks, gone by the second pass."""

    def __init__(self, slow: dict[int, float], spell_calls: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.slow, self.spell_calls = slow, spell_calls

    def make_step(self, batch: int):
        self.batch = batch

        def step() -> None:
            factor = self.slow.get(batch, 1.0) if self.calls.count(batch) < self.spell_calls else 1.0
            self.calls.append(batch)
            self.now += (self.fixed_ms + self.per_image_ms * batch) * factor / 1000.0

        return step


def test_a_plateau_seen_in_a_slow_spell_is_checked_again_and_the_sweep_goes_on() -> None:
    # 20 ms + 2 ms an image: throughput grows all the way (45, 83, 143, 222, 308 img/s). A slow spell
    # during the first blocks of 4 and 8 makes them look flat against batch 2 (71 and 74 img/s), so the
    # first pass stops; timed again, their intervals reach past the plateau rule, and 16 is measured.
    device = SlowSpellDevice({4: 2.0, 8: 3.0}, fixed_ms=20.0, per_image_ms=2.0)
    lines: list[str] = []
    result = run_sweep(device.make_step, (1, 2, 4, 8, 16), SweepPolicy(max_seconds=1e6, **ROUND_ROBIN),
                       Constraints(), device, clock=device.clock, progress=lines.append)
    assert "the plateau did not hold once the batches were timed again: measuring batch 16 too" in lines
    assert [m.batch_size for m in result.measurements] == [1, 2, 4, 8, 16]
    assert result.stop_reason == "all 5 batch sizes measured"
    assert device.calls.index(16) > device.calls.index(8) + 4  # after the second pass's blocks of 8


def test_a_plateau_that_holds_when_timed_again_stops_the_sweep() -> None:
    # 10 ms an image and no fixed cost: 100 img/s at every batch, a real plateau from the start
    device = NoisyDevice(pattern=(1.0,), fixed_ms=0.0, per_image_ms=10.0)  # 100 img/s at every batch
    result = run_sweep(device.make_step, (1, 2, 4, 8, 16), SweepPolicy(max_seconds=1e6, **ROUND_ROBIN),
                       Constraints(), device, clock=device.clock)
    assert result.stop_reason.startswith("throughput plateaued: batches 2 and 4")
    assert 8 not in device.calls


def test_a_plateau_that_did_not_hold_says_so_when_the_time_bound_ends_the_sweep() -> None:
    device = SlowSpellDevice({4: 2.0, 8: 3.0}, fixed_ms=20.0, per_image_ms=2.0)
    result = run_sweep(device.make_step, (1, 2, 4, 8, 16), SweepPolicy(max_seconds=3.0, **ROUND_ROBIN),
                       Constraints(), device, clock=device.clock)
    assert 16 not in device.calls and result.rounds == 4
    assert result.stop_reason == ("time: batch 16 would take about 0.4 s, past the 3 s bound for the sweep "
                                  "(max_seconds=) (the plateau before it did not hold once the batches were timed "
                                  "again)")
    assert result.timing.startswith("timed in 4 interleaved rounds after the first pass")  # kept, not overwritten


def test_a_full_batch_over_the_budget_is_named_as_full() -> None:
    # 2 x 5 fps = 10 img/s, 300 ms budget: a full batch 4 waits 300 ms to fill and takes 45 ms, over it; the
    # batch itself is still a candidate (part-full after a shorter delay), so the line says "a full batch"
    result = sweep(FakeDevice(), Constraints(latency_ms=300, load=StreamLoad(2, 5)))
    assert [m.batch_size for m in result.measurements] == [1, 2, 4]
    assert result.stop_reason == (
        "latency: a full batch 4 waits 300.0 ms to fill at 10 img/s and takes 45.0 ms at the median, over the "
        "300 ms budget; larger batches only wait longer (batches sent part-full after a shorter queue delay are "
        "simulated with the rest)")
