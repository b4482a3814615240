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
    assert "batch 8 measured 121.0 img/s, within 3%: the smaller batch wins" in tie.reason


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
        "more devices: 2 of these carry 8 x 25 fps (one keeps up with 4 streams at 121.0 img/s, batch 8)",
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
    assert advice[0] == ("more devices: 6 of these carry 2 x 30 fps (one cannot keep up with a single 30 fps "
                         "stream at 11.0 img/s, batch 2)")
    assert advice[1].startswith("a smaller input: imgsz=256 ")


def test_choose_needs_measurements() -> None:
    with pytest.raises(ValueError, match="at least one"):
        choose([], Constraints())
