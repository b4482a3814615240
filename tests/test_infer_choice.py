"""visionbatch.infer.choice: the batch chosen under latency, stream-load and memory limits, exactly."""

from __future__ import annotations

import pytest

from visionbatch.infer.choice import advise, choose, judge
from visionbatch.infer.plan import BatchMeasurement, Constraints, StreamLoad

MIB = 2**20


def measured(batch: int, p99_ms: float, per_s: float, memory_mib: float | None = None) -> BatchMeasurement:
    return BatchMeasurement(batch_size=batch, runs=100, latency_p50_ms=p99_ms * 0.9, latency_p90_ms=p99_ms * 0.95,
                            latency_p99_ms=p99_ms, latency_mean_ms=p99_ms * 0.9, latency_max_ms=p99_ms,
                            per_image_ms=p99_ms * 0.9 / batch, throughput_per_s=per_s,
                            memory_bytes=None if memory_mib is None else int(memory_mib * MIB))


# A CPU-like sweep: throughput rises then flattens, latency roughly doubles with the batch.
SWEEP = [measured(1, 12, 90, 100), measured(2, 20, 105, 120), measured(4, 36, 118, 160),
         measured(8, 70, 121, 240), measured(16, 140, 120, 400), measured(32, 290, 118, 720)]


def test_fill_wait_is_b_minus_1_frames_at_the_total_rate() -> None:
    load = StreamLoad(streams=4, fps=25)
    assert [load.fill_wait_ms(b) for b in (1, 2, 8)] == [0.0, 10.0, 70.0]
    assert Constraints().fill_wait_ms(8) == 0.0


@pytest.mark.parametrize("constraints, expected", [
    # no limits: 121 img/s at batch 8 is best; 4, 16 and 32 are within 3% of it, so the smallest, 4
    (Constraints(), 4),
    (Constraints(latency_ms=50), 4),              # batches 1-4 fit (p99 36 ms)
    (Constraints(latency_ms=30), 2),              # batches 1-2 fit
    (Constraints(latency_ms=12), 1),              # exactly on the budget still fits
    # 4 x 25 fps = 100 img/s: batch 1 cannot keep up (90), fill waits 10/30/70 ms: 2 (30 ms) and 4 (66 ms) fit
    (Constraints(latency_ms=100, load=StreamLoad(4, 25)), 4),
    (Constraints(latency_ms=60, load=StreamLoad(4, 25)), 2),   # batch 4 waits 30 + 36 = 66 ms
    (Constraints(memory_budget_bytes=200 * MIB), 4),
    (Constraints(memory_budget_bytes=130 * MIB), 2),
    (Constraints(memory_budget_bytes=130 * MIB, latency_ms=15), 1),
])
def test_choose_exact(constraints: Constraints, expected: int) -> None:
    assert choose(SWEEP, constraints).batch_size == expected


def test_tolerance_zero_takes_the_strict_maximum() -> None:
    assert choose(SWEEP, Constraints(), tolerance=0.0).batch_size == 8


def test_reason_names_the_numbers() -> None:
    choice = choose(SWEEP, Constraints(latency_ms=60, load=StreamLoad(4, 25)))
    assert choice.reason == (
        "batch 2: 105.0 img/s (1.17x batch 1), worst frame latency 30.0 ms (fill wait 10.0 + p99 20.0) "
        "within the 60 ms budget, keeps up with 4 x 25 fps = 100 img/s; "
        "batch 4 is out: latency 66.0 ms (fill wait 30.0 + p99 36.0) > 60 ms budget")
    assert choice.advice == ()
    tie = choose(SWEEP, Constraints())
    assert "batch 8 measured 121.0 img/s, not measurably faster (its interval's low end is not 3% above the other's " \
           "high end): the smaller batch wins" in tie.reason


def test_verdicts_list_every_broken_constraint() -> None:
    verdict = judge(SWEEP[3], Constraints(latency_ms=100, memory_budget_bytes=200 * MIB, load=StreamLoad(8, 25)))
    assert verdict.batch_size == 8 and not verdict.feasible
    assert verdict.fill_wait_ms == 35.0 and verdict.worst_latency_ms == 105.0
    assert verdict.violations == ("latency 105.0 ms (fill wait 35.0 + p99 70.0) > 100 ms budget",
                                  "throughput 121.0 img/s < 200 img/s needed",
                                  "memory 240 MiB > 200 MiB budget")


def test_load_too_heavy_says_what_would_carry_it() -> None:
    choice = choose(SWEEP, Constraints(load=StreamLoad(8, 25)), imgsz=320)
    assert choice.batch_size is None
    assert choice.reason == ("no batch keeps up with 8 streams x 25 fps = 200 img/s: the most measured is "
                             "121.0 img/s (batch 8)")
    assert choice.advice == (
        "more devices: 2 of these carry 8 x 25 fps, 4 streams each (one keeps up with 4 streams at 121.0 img/s, "
        "batch 8: 83% busy)",
        "a smaller input: imgsz=224 has 0.49x the pixels of imgsz=320 (work must shrink 1.65x; compute scales "
        "roughly with pixels: measure it)",
        "fp16 on a GPU: a CPU gains nothing from fp16; on a Jetson or CUDA GPU measure backend=tensorrt half=True",
    )


def test_latency_too_tight_even_at_batch_1() -> None:
    choice = choose(SWEEP, Constraints(latency_ms=10), imgsz=320, device_type="cuda")
    assert choice.batch_size is None
    assert choice.reason.startswith("no measured batch meets the constraints (batch 1: latency 12.0 ms > 10 ms budget;")
    assert choice.advice == (
        "a larger latency budget: latency_ms=12 admits batch 1",
        "a smaller input: imgsz=288 has 0.81x the pixels of imgsz=320 (work must shrink 1.20x; compute scales "
        "roughly with pixels: measure it)",
        "fp16: measure again with half=True (TensorRT or PyTorch on this GPU)",
    )


def test_load_met_only_by_batches_over_the_latency_budget() -> None:
    # 100 img/s needs batch >= 2, whose fill wait + p99 is 30 ms: a 25 ms budget admits nothing
    choice = choose(SWEEP, Constraints(latency_ms=25, load=StreamLoad(4, 25)), imgsz=320, precision="fp16")
    assert choice.batch_size is None
    assert choice.advice == ("a larger latency budget: latency_ms=30 admits batch 2",)


def test_memory_budget_below_batch_1() -> None:
    choice = choose(SWEEP, Constraints(memory_budget_bytes=50 * MIB), imgsz=640, precision="fp16")
    assert choice.batch_size is None
    assert choice.advice == ("a larger memory budget: 100 MiB admits batch 1",)
    assert "batch 1: memory 100 MiB > 50.0 MiB budget;" in choice.reason


def test_a_device_too_slow_for_one_stream() -> None:
    advice = advise([measured(1, 100, 8), measured(2, 180, 11)], Constraints(load=StreamLoad(2, 30)), imgsz=640)
    assert advice[0] == ("more devices: 6 of these carry 2 x 30 fps, 3 per stream with its frames dealt round-robin "
                         "(one cannot keep up with a single 30 fps stream at 11.0 img/s, batch 2)")
    assert advice[1].startswith("a smaller input: imgsz=256 ")


def test_more_devices_adds_up_when_a_stream_does_not_divide() -> None:
    # the issue's case: 15 img/s carries one 10 fps stream, not 1.5; 4 streams need 4 devices, not 3
    advice = advise([measured(1, 80, 12), measured(2, 130, 15)], Constraints(load=StreamLoad(4, 10)), imgsz=640)
    assert advice[0] == ("more devices: 4 of these carry 4 x 10 fps, 1 stream each (one keeps up with 1 stream at "
                         "15.0 img/s, batch 2: 67% busy)")


@pytest.mark.parametrize(("streams", "fps", "throughput", "devices"), [
    (4, 10, 15.0, 4), (5, 10, 25.0, 3), (8, 25, 121.0, 2), (3, 30, 29.0, 6), (1, 25, 10.0, 3), (7, 5, 12.0, 4),
])
def test_more_devices_carry_every_stream(streams: int, fps: int, throughput: float, devices: int) -> None:
    text = advise([measured(1, 100, throughput)], Constraints(load=StreamLoad(streams, fps)))[0]
    assert text.startswith(f"more devices: {devices} of these carry {streams} x {fps} fps")
    per_device = int(throughput // fps)
    if per_device:  # whole streams: the devices hold them all, and none holds more than it keeps up with
        assert devices * per_device >= streams and (devices - 1) * per_device < streams
        assert per_device * fps <= throughput
    else:  # each stream's frames dealt to enough devices to keep up with it
        assert (devices // streams) * throughput >= fps


def test_choose_needs_measurements() -> None:
    with pytest.raises(ValueError, match="at least one"):
        choose([], Constraints())


def timed(batch: int, latencies_ms: list[float]) -> BatchMeasurement:
    """A measured batch from its calls, with its throughput interval (as the sweep makes it)."""
    from visionbatch.infer.sweep import summarize

    return summarize(batch, latencies_ms)


def test_overlapping_intervals_count_as_equal_and_the_smaller_wins() -> None:
    # batch 8 looks 20% faster than batch 4 on its means, but three noisy calls each leave both intervals wide
    noisy = [timed(4, [40.0, 60.0, 50.0]), timed(8, [60.0, 90.0, 50.0])]
    assert noisy[1].throughput_per_s > 1.2 * noisy[0].throughput_per_s
    assert choose(noisy, Constraints()).batch_size == 4
    # the same means, timed exactly: 8 is measurably faster, and wins
    steady = [timed(4, [50.0] * 3), timed(8, [200 / 3] * 3)]
    assert choose(steady, Constraints()).batch_size == 8
    assert choose(steady, Constraints()).reason == "batch 8: 120.0 img/s [95% 120.0-120.0], worst frame latency 66.7 ms"


ISSUE_LOAD = Constraints(latency_ms=1000, load=StreamLoad(2, 5))


def test_the_issue_case_is_refused_once_queueing_is_simulated() -> None:
    """2 x 5 fps within 1000 ms: batch 4 at 94% utilisation passed the old rule (fill wait 300 + p99 604
    = 904 ms) and misses the budget for 18% of frames once queueing is simulated."""
    service = {1: [120.0] * 4, 2: [235.0] * 4, 4: [300.0, 300.0, 300.0, 604.0]}
    sweep = [timed(b, times) for b, times in service.items()]
    assert choose(sweep, ISSUE_LOAD).batch_size == 4  # without the service times: the old rule
    choice = choose(sweep, ISSUE_LOAD, service_ms=service)
    assert choice.batch_size is None and choice.simulated is None and choice.candidates == ()
    verdict = choice.verdicts[2]
    assert verdict.queue_delay_ms == 300.0 and verdict.worst_latency_ms == 1581.179
    assert verdict.violations == ("simulated p99 1581.2 ms (queue delay 300 ms, 18.2% of frames over) "
                                  "> 1000 ms budget",)
    assert choice.verdicts[0].violations[1] == "throughput 8.3 img/s < 10 img/s needed"
    # the advice reads the simulated p99 too: fill wait + p99 (904 ms) would say the budget is already enough
    assert "a larger latency budget: latency_ms=1582 admits batch 4" in choice.advice


def test_the_queue_delay_and_batch_with_the_most_headroom() -> None:
    # batch 8 has the most full-batch throughput (19 img/s) but at 10 img/s it goes out part-full
    # (4.75 frames a batch within a 1000 ms budget): batch 4, full, carries more (16 against 13.2 img/s)
    service = {1: [120.0] * 4, 2: [150.0] * 4, 4: [250.0] * 4, 8: [420.0] * 4}
    choice = choose([timed(b, times) for b, times in service.items()], ISSUE_LOAD, service_ms=service)
    assert (choice.batch_size, choice.queue_delay_ms) == (4, 300.0)
    sim = choice.simulated
    assert (sim.latency_p50_ms, sim.latency_p99_ms, sim.utilisation, sim.mean_batch) == (360.64, 494.342, 0.6253, 4.0)
    assert [(p.batch_size, p.queue_delay_ms) for p in choice.candidates] == [(4, 300.0), (2, 100.0), (8, 400.0)]
    assert choice.reason == (
        "batch 4: 16.0 img/s [95% 16.0-16.0] (1.92x batch 1), queue delay 300 ms: simulated frame latency "
        "p50 360.6 / p99 494.3 ms with queueing within the 1000 ms budget, keeps up with 2 x 5 fps = 10 img/s "
        "at 63% utilisation (headroom 37%); batch 4 is at most 70% busy even at the low end of its interval, "
        "so the lowest simulated p99 wins over capacity")
    assert choice.verdicts[0].violations == (
        "simulated p99 39742.9 ms (queue delay 0 ms, 97.9% of frames over) > 1000 ms budget",
        "throughput 8.3 img/s < 10 img/s needed")


def test_headroom_enough_takes_the_lowest_latency_a_heavy_load_the_most_capacity() -> None:
    from visionbatch.infer.choice import choose
    from visionbatch.infer.plan import BatchMeasurement, Constraints, StreamLoad

    # 2 x 5 fps = 10 img/s against ~90-100 img/s: every batch is ~10% busy. Batch 4 carries the most,
    # but waits for 4 frames; batch 1 serves each frame as it comes.
    rows = [(1, 11.0, 90.0), (2, 21.0, 95.0), (4, 40.0, 100.0)]
    ms = [BatchMeasurement(b, 50, lat, lat, lat, lat, lat, lat / b, thr, throughput_low_per_s=thr * 0.99,
                           throughput_high_per_s=thr * 1.01) for b, lat, thr in rows]
    service = {b: [lat] * 50 for b, lat, _ in rows}
    choice = choose(ms, Constraints(latency_ms=400, load=StreamLoad(2, 5)), service_ms=service)
    assert choice.batch_size == 1 and choice.queue_delay_ms == 0
    # its own 11 ms, or 22 ms when the other camera's frame arrived just before (random phases, jitter)
    assert choice.simulated.latency_p50_ms == 11.0 and choice.simulated.latency_p99_ms <= 22.0
    # 4 x 10 = 40 img/s: batch 1 is 44% busy (45% at the low end of its interval), still comfortable
    moderate = choose(ms, Constraints(latency_ms=400, load=StreamLoad(4, 10)), service_ms=service)
    assert moderate.batch_size == 1 and moderate.simulated.utilisation < 0.7
    assert "at most 70% busy" in moderate.reason and "the lowest simulated p99 wins" in moderate.reason
    # 7 x 10 = 70 img/s: batch 1 is 78% busy, nothing is at most 70%: capacity decides, and batch 4's
    # interval clears batch 2's by more than 3%
    heavy = choose(ms, Constraints(latency_ms=400, load=StreamLoad(7, 10)), service_ms=service)
    assert all(v.simulated.utilisation > 0.7 for v in heavy.verdicts)
    assert heavy.batch_size == 4 and "at most 70% busy" not in heavy.reason
    assert moderate.by_latency and choice.by_latency and not heavy.by_latency  # Triton's instance count reads it


def test_comfort_is_judged_on_the_sizes_a_policy_runs_at() -> None:
    # a slow spell (a run of BENCHMARKS' 5): batch 1 at 60.2 img/s, its interval down to 56.2. Batch 4 with
    # no queue delay sends single frames under 4 x 10 fps, exactly as batch 1 does (66% busy): judged on
    # batch 4's narrower interval it looked comfortable and won; on batch 1's it is not (0.66 x 60.2/56.2).
    from visionbatch.infer.choice import choose, comfortable, simulate_policies
    from visionbatch.infer.plan import BatchMeasurement, Constraints, StreamLoad

    rows = [(1, 60.2, 56.2, 64.7), (2, 71.7, 67.9, 76.1), (4, 75.0, 71.3, 79.0)]
    ms = [BatchMeasurement(b, 50, 1000 * b / t, 1000 * b / t, 1000 * b / t, 1000 * b / t, 1000 * b / t, 1000 / t, t,
                           throughput_low_per_s=low, throughput_high_per_s=high) for b, t, low, high in rows]
    service = {m.batch_size: [m.latency_mean_ms] * 50 for m in ms}
    load = Constraints(latency_ms=500, load=StreamLoad(4, 10))
    choice = choose(ms, load, service_ms=service)
    assert all(not (v.batch_size == 4 and v.queue_delay_ms == 0) for v in choice.verdicts)
    single = next(p for p in simulate_policies(ms[2], load, service) if p.queue_delay_ms == 0)
    assert single.mean_batch == 1.0 and comfortable(ms[2], single) and not comfortable(ms[2], single, ms)
    assert (choice.batch_size, choice.queue_delay_ms) == (2, 25.0) and choice.simulated.utilisation < 0.6
