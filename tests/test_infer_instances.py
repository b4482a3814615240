"""Triton's instance count (`visionbatch.infer.instances`): one instance against two at once, on fakes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import infer_models
import numpy as np
import pytest
import triton_model_config

from visionbatch.errors import ConfigError
from visionbatch.infer.instances import (
    FIXED_BLOCKS,
    InstanceSearch,
    compare_instances,
    concurrent_block,
    not_measured,
    search_instances,
)
from visionbatch.infer.tune import tune_inference
from visionbatch.stats import SPEED_TOLERANCE, measurably_faster


class SimulatedInstances:
    """A device on a fake clock: a call of the batch takes `one_ms` on one instance, and `two_ms` on each of
    two instances running at once (the blocks listed in `two_ms_by_block` take those instead, for noise).
    It stands in for `concurrent_block`: each thread makes `calls` calls, and the clock moves by the block."""

    def __init__(self, one_ms: float, two_ms: float, calls: int = 10, two_ms_by_block: list[float] | None = None,
                 one_ms_by_block: list[float] | None = None) -> None:
        self.now = 0.0
        self.one_ms, self.two_ms, self.calls = one_ms, two_ms, calls
        self.two_by_block, self.one_by_block = list(two_ms_by_block or []), list(one_ms_by_block or [])
        self.blocks: list[int] = []  # the instance count of each block, in order

    def clock(self) -> float:
        return self.now

    def run_block(self, steps, min_calls: int, min_seconds: float, clock) -> tuple[int, float]:
        self.blocks.append(len(steps))
        if len(steps) == 1:
            per_call_ms = self.one_by_block.pop(0) if self.one_by_block else self.one_ms
        else:
            per_call_ms = self.two_by_block.pop(0) if self.two_by_block else self.two_ms
        calls_each = max(min_calls, self.calls)
        wall = calls_each * per_call_ms / 1000.0
        self.now += wall
        return calls_each * len(steps), wall


def compare(device: SimulatedInstances, bound_s: float = 2.0, **kwargs) -> InstanceSearch:
    return compare_instances(None, [None, None], 4, bound_s, clock=device.clock, run_block=device.run_block,
                             **kwargs)


def test_two_instances_measurably_faster_are_written_with_both_throughputs() -> None:
    device = SimulatedInstances(one_ms=10.0, two_ms=15.0)  # one: 4 img / 10 ms; two: 2 x 4 img / 15 ms
    found = compare(device, threads=2, threads_each=1, measured_on="onnxruntime (CPUExecutionProvider) on cpu")
    assert found.count == 2 and found.measured and found.batch_size == 4
    assert found.one.img_per_s == pytest.approx(400.0) and found.two.img_per_s == pytest.approx(8000 / 15)
    assert found.one.low_img_per_s == pytest.approx(400.0) and found.two.high_img_per_s == pytest.approx(8000 / 15)
    assert device.blocks == [1, 2, 1, 2, 1, 2]  # interleaved; three blocks each (stats.MIN_BLOCKS), and it settles
    assert found.reason.startswith("2 instances, measurably faster than 1: 2 instances (1 thread each) ran batch 4 "
                                   "at 533.3 img/s (95% 533.3-533.3) against 400.0 img/s (95% 400.0-400.0) for 1 "
                                   "(2 threads), a ratio of 1.33-1.33 at 95%")
    assert found.timing == "6 interleaved blocks of 1 and 2 instances in 0.8 s: the decision settled"


def test_two_instances_no_faster_leave_one() -> None:
    device = SimulatedInstances(one_ms=10.0, two_ms=20.0)  # the same throughput: two only share the device
    found = compare(device)
    assert found.count == 1 and found.measured
    assert found.two.img_per_s == pytest.approx(found.one.img_per_s)
    assert found.reason.startswith(f"1 instance: 2 were not measurably faster (by more than {SPEED_TOLERANCE:.0%})")
    assert "settled" in found.timing and device.blocks == [1, 2, 1, 2, 1, 2]


def test_overlapping_intervals_leave_one_when_the_bound_passes() -> None:
    # two instances 13% faster on average, but the blocks scatter by +-20%: never shown beyond 3%
    device = SimulatedInstances(one_ms=10.0, two_ms=0.0, two_ms_by_block=[14.0, 22.0, 15.0, 21.8] * 10,
                                one_ms_by_block=[8.0, 12.0] * 20)
    found = compare(device, bound_s=2.0)
    assert found.count == 1 and found.measured
    assert not measurably_faster(found.two, found.one)
    assert found.two.high_img_per_s > found.one.high_img_per_s  # it might be faster: the interval says so
    assert found.timing.endswith("the 2 s bound passed: overlapping intervals count as equal")
    assert found.two.img_per_s > 1.1 * found.one.img_per_s
    assert device.now <= 2.1  # no block starts that would end past the bound, were it as long as its last
    assert device.blocks[:6] == [1, 2, 1, 2, 1, 2]


def test_fixed_runs_time_a_fixed_number_of_blocks() -> None:
    device = SimulatedInstances(one_ms=10.0, two_ms=0.0, two_ms_by_block=[13.6, 18.2, 12.0, 20.0])
    found = compare(device, bound_s=60.0, max_blocks=FIXED_BLOCKS, min_calls=3, block_seconds=0.0)
    assert device.blocks == [1, 2] * FIXED_BLOCKS and found.one.samples == FIXED_BLOCKS


def test_a_block_counts_every_image_both_threads_completed_over_the_wall_time() -> None:
    """The two steps run at once, in two threads: each waits for the other inside its call (a barrier that
    breaks after 5 s when the calls are not concurrent), and the clock counts calls (10 ms each)."""
    together = threading.Barrier(2, timeout=5)
    lock = threading.Lock()
    made: list[int] = []
    idents: set[int] = set()

    def step_of(instance: int):
        def step() -> None:
            together.wait()
            with lock:
                made.append(instance)
                idents.add(threading.get_ident())
        return step

    def clock() -> float:
        with lock:
            return len(made) * 0.010

    calls, wall = concurrent_block([step_of(1), step_of(2)], min_calls=4, min_seconds=0.0, clock=clock)
    assert calls == len(made) == 8 and sorted(made) == [1] * 4 + [2] * 4
    assert len(idents) == 2 and threading.get_ident() not in idents
    assert wall == pytest.approx(0.080)  # 8 calls counted by the clock from the start to the last thread's end


def test_a_block_runs_until_min_calls_and_min_seconds() -> None:
    now = [0.0]
    lock = threading.Lock()

    def step() -> None:
        with lock:
            now[0] += 0.1

    calls, wall = concurrent_block([step], min_calls=2, min_seconds=0.45, clock=lambda: now[0])
    assert calls == 5 and wall == pytest.approx(0.5)


def test_an_error_in_one_instance_stops_both_and_is_raised() -> None:
    made = []

    def fine() -> None:
        made.append(1)

    def broken() -> None:
        raise ConfigError("instance 2 failed")

    with pytest.raises(ConfigError, match="instance 2 failed"):
        concurrent_block([fine, broken], min_calls=10**6, min_seconds=0.0)
    assert len(made) < 10**6  # stopped, not run to min_calls


class FakeRunner:
    """A runner whose calls are instant; it records what it was opened with and whether it was closed."""

    def __init__(self, threads: int | None = None, fail: BaseException | None = None) -> None:
        self.threads, self.fail, self.closed, self.calls = threads, fail, False, 0

    def prepare(self, array: np.ndarray) -> np.ndarray:
        return array

    def infer(self, inputs: np.ndarray) -> list[np.ndarray]:
        if self.fail is not None:
            raise self.fail
        self.calls += 1
        return [inputs]

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_search_opens_two_runners_with_half_the_threads_each_and_closes_them() -> None:
    opened: list[FakeRunner] = []

    def factory(threads):
        opened.append(FakeRunner(threads))
        return opened[-1]

    main = FakeRunner(4)
    found = search_instances(factory, main, 2, 8, threads=4, bound_s=60.0, warmup_runs=1, fixed_calls=3,
                             measured_on="fake")
    assert [r.threads for r in opened] == [2, 2] and all(r.closed for r in opened) and not main.closed
    assert found.measured and (found.threads, found.threads_each, found.measured_on) == (4, 2, "fake")
    # warm-up, then FIXED_BLOCKS blocks of 3 calls on each: the one instance alone, the two together
    assert main.calls == 1 + 3 * FIXED_BLOCKS and [r.calls for r in opened] == [1 + 3 * FIXED_BLOCKS] * 2
    assert found.count in (1, 2) and found.one.samples == found.two.samples == FIXED_BLOCKS


def test_search_with_one_thread_gives_each_instance_one() -> None:
    threads = []
    found = search_instances(lambda t: threads.append(t) or FakeRunner(t), FakeRunner(1), 1, 8, threads=1,
                             bound_s=60.0, fixed_calls=2)
    assert threads == [1, 1] and found.threads_each == 1 and found.measured


def test_a_backend_that_opens_once_leaves_one_instance_with_the_reason() -> None:
    opened: list[FakeRunner] = []

    def factory(threads):
        if opened:
            raise ConfigError("provider=tensorrt: the device holds one engine")
        opened.append(FakeRunner(threads))
        return opened[-1]

    found = search_instances(factory, FakeRunner(), 2, 8, threads=None, bound_s=1.0)
    assert (found.count, found.measured, found.one) == (1, False, None)
    assert found.reason == ("1 instance, not measured: a second instance of the backend would not open "
                            "(provider=tensorrt: the device holds one engine)")
    assert opened[0].closed


def test_two_instances_out_of_memory_leave_one() -> None:
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    runners = iter([FakeRunner(), FakeRunner(fail=oom)])
    found = search_instances(lambda t: next(runners), FakeRunner(), 8, 8, threads=None, bound_s=1.0)
    assert found.count == 1 and not found.measured
    assert found.reason.startswith("1 instance, not measured: two instances ran out of memory at batch 8 (CUDA out")


def test_another_error_in_an_instance_is_raised() -> None:
    runners = iter([FakeRunner(), FakeRunner(fail=ValueError("bad input"))])
    with pytest.raises(ValueError, match="bad input"):
        search_instances(lambda t: next(runners), FakeRunner(), 8, 8, threads=None, bound_s=1.0)


def test_not_measured_is_one_instance() -> None:
    assert not_measured("why") == InstanceSearch(1, "1 instance, not measured: why")


# --- through tune_inference: the plan reports it, Triton's config carries it ---

FAST = dict(batch_sizes=[1, 2], runs=3, warmup_runs=1)


def fixed_batch_onnx(path: Path) -> Path:
    """A 1x1 Conv (3 -> 6 channels) at 32 px whose input's batch is fixed at 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((6, 3, 1, 1), 0.1, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["output0"])], "fixed",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 32, 32])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return infer_models.tiny_onnx(tmp_path_factory)


def test_tune_measures_the_instances_and_the_triton_config_carries_the_count(workdir: Path, tiny_onnx: Path) -> None:
    plan = tune_inference(str(tiny_onnx), threads=2, **FAST)
    found = plan.instances
    assert found.measured and found.batch_size == plan.batch_size
    assert (found.threads, found.threads_each) == (2, 1)
    assert found.measured_on.startswith("onnxruntime (CPUExecutionProvider) on ")
    assert found.one.samples == found.two.samples == FIXED_BLOCKS  # runs= fixed the blocks
    assert found.count == (2 if measurably_faster(found.two, found.one) else 1)
    text = Path(plan.files["triton_config"]).read_text()
    config = triton_model_config.parse(text)
    assert config.instance_group[0].count == found.count and config.instance_group[0].kind == 2  # KIND_CPU
    threads = found.threads_each if found.count == 2 else found.threads
    assert config.parameters["intra_op_thread_count"].string_value == str(threads)
    assert f"# instance_group: {found.reason}; measured with {found.measured_on}" in text
    saved = json.loads((Path(plan.run_dir) / "plan.json").read_text())["instances"]
    assert saved["count"] == found.count and saved["one"]["img_per_s"] == pytest.approx(found.one.img_per_s)
    assert saved["two"]["low_img_per_s"] == pytest.approx(found.two.low_img_per_s)


def test_a_gpu_target_planned_on_a_cpu_is_not_measured(workdir: Path, tiny_onnx: Path) -> None:
    plan = tune_inference(str(tiny_onnx), target="t4", **FAST)
    assert not plan.instances.measured and plan.instances.count == 1
    assert "(KIND_GPU), and two instances on this machine's CPU say nothing about two there" in plan.instances.reason
    config = triton_model_config.parse(Path(plan.files["triton_config"]).read_text())
    assert config.instance_group[0].count == 1 and "intra_op_thread_count" not in config.parameters


def test_a_model_with_a_fixed_batch_of_1_is_measured_too(workdir: Path) -> None:
    # batch 1 is where a second instance helps most: one call leaves a 2-core CPU part idle
    model = fixed_batch_onnx(workdir / "fixed.onnx")
    plan = tune_inference(str(model), batch_sizes=[1], runs=2, warmup_runs=0, threads=2)
    found = plan.instances
    assert found.measured and found.batch_size == 1 and (found.threads, found.threads_each) == (2, 1)
    assert found.one.samples == found.two.samples == FIXED_BLOCKS
    assert found.count == (2 if measurably_faster(found.two, found.one) else 1)
    text = Path(plan.files["triton_config"]).read_text()
    assert f"# instance_group: {found.reason}; measured with {found.measured_on}" in text
    config = triton_model_config.parse(text)
    assert config.instance_group[0].count == found.count
    threads = found.threads_each if found.count == 2 else found.threads
    assert config.parameters["intra_op_thread_count"].string_value == str(threads)


def test_the_cli_shows_the_instance_count_and_why(capsys, workdir: Path, tiny_onnx: Path) -> None:
    from visionbatch.cli import main

    code = main(["infer", str(tiny_onnx), "batch_sizes=2", "runs=2", "warmup=0", "threads=2", "name=i"])
    out, err = capsys.readouterr()
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("triton instances: "))
    saved = json.loads((workdir / "runs" / "infer" / "i" / "plan.json").read_text())["instances"]
    assert line == f"triton instances: {saved['reason']} [{saved['timing']}]"
    assert "visionbatch infer: timing 1 against 2 instances at batch 2 (2 threads against 2 x 1), up to 4 s" in err
