"""The sweep plot: every line drawn stays inside its axis, whatever the load and the budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from visionbatch.infer.choice import choose
from visionbatch.infer.plan import (
    BatchMeasurement,
    Constraints,
    InferencePlan,
    StreamLoad,
)
from visionbatch.infer.plot import plot_sweep, sweep_figure

SWEEP = tuple(BatchMeasurement(b, 10, p99 * 0.9, p99 * 0.95, p99, p99 * 0.9, p99, p99 * 0.9 / b, per_s)
              for b, p99, per_s in [(1, 70.0, 16.4), (2, 145.0, 15.4), (4, 250.0, 17.6)])


def plan_for(constraints: Constraints) -> InferencePlan:
    choice = choose(SWEEP, constraints, imgsz=320)
    given = {"model": "yolo11n.yaml", "model_file": "yolo11n.onnx", "task": "detect", "backend": "onnxruntime",
             "provider": "CPUExecutionProvider", "device": "cpu", "device_name": "test CPU", "precision": "fp32",
             "imgsz": 320, "end_to_end": False, "cpu_threads": 2, "constraints": constraints, "measurements": SWEEP,
             "verdicts": choice.verdicts, "stop_reason": "all 3 batch sizes measured", "batch_size": choice.batch_size,
             "reason": choice.reason, "advice": choice.advice, "speedup_vs_batch1": None, "jetson": None,
             "target": None, "files": {}, "run_dir": "", "versions": {}, "wall_s": 0.0, "notes": ()}
    fields = {field.name for field in dataclasses.fields(InferencePlan)}  # later fields have defaults
    return InferencePlan(**{name: value for name, value in given.items() if name in fields})


def lines(axes) -> dict[str, float]:
    """Label -> y of every horizontal line on `axes`."""
    return {line.get_label(): line.get_ydata()[0] for line in axes.get_lines() if len(set(line.get_ydata())) == 1}


@pytest.mark.parametrize(("streams", "fps", "budget_ms"), [(8, 25, 400), (2, 5, 400), (2, 5, 2000), (1, 1, 5)])
def test_the_load_and_the_budget_stay_on_their_axes(streams: int, fps: float, budget_ms: float) -> None:
    plan = plan_for(Constraints(latency_ms=budget_ms, load=StreamLoad(streams, fps)))
    throughput_axis, latency_axis = sweep_figure(plan).axes
    load = lines(throughput_axis)[f"load {streams * fps:g} img/s"]
    assert load == streams * fps and throughput_axis.get_ylim()[0] == 0 < load < throughput_axis.get_ylim()[1]
    assert max(m.throughput_per_s for m in SWEEP) < throughput_axis.get_ylim()[1]
    budget = lines(latency_axis)[f"latency budget {budget_ms:g} ms (right axis)"]
    assert latency_axis.get_ylim()[0] == 0 < budget < latency_axis.get_ylim()[1]
    assert max(v.worst_latency_ms for v in plan.verdicts) < latency_axis.get_ylim()[1]


def test_a_load_above_every_throughput_is_drawn(tmp_path: Path) -> None:
    # 8 x 25 fps = 200 img/s against at most 17.6 measured: the line used to fall off the top
    plan = plan_for(Constraints(load=StreamLoad(8, 25), latency_ms=400))
    assert plan.batch_size is None
    throughput_axis, latency_axis = sweep_figure(plan).axes
    assert throughput_axis.get_ylim() == (0.0, pytest.approx(216.0))
    # both lines top their axes; the latency axis has more headroom, so they are not drawn on top of each other
    assert latency_axis.get_ylim() == (0.0, pytest.approx(500.0))
    load_height = lines(throughput_axis)["load 200 img/s"] / throughput_axis.get_ylim()[1]
    budget_height = lines(latency_axis)["latency budget 400 ms (right axis)"] / latency_axis.get_ylim()[1]
    assert load_height - budget_height > 0.1
    path = plot_sweep(plan, tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
