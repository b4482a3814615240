"""The CPU trace of the training step: exact for the proxy step, close to the real CPU step, fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionbatch.errors import BudgetError, ConfigError

MIB = 1 << 20


@pytest.fixture(scope="module")
def detect_spec(shapes_yaml_module):
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline
    from visionbatch.ultralytics.spec import job_spec

    with offline():
        job = prepare(shapes_yaml_module, {"imgsz": 64})
        # a forced density (every image at 360 labels): these tests are about the trace's mechanics,
        # which a fixed count per image keeps exactly linear in the batch
        return job_spec(job, "cpu", "", 360)


@pytest.fixture(scope="module")
def shapes_yaml_module() -> Path:
    from conftest import SHAPES_YAML

    return SHAPES_YAML


@pytest.fixture(scope="module")
def cpu_estimator(detect_spec):
    """One estimator for the tests that only trace with it: it caches the loss readings, in the same order for all."""
    from visionbatch.fit.api import trainer_globals
    from visionbatch.fit.probes.trace import DeviceModel, TraceEstimator
    from visionbatch.ultralytics.offline import offline

    with offline(), trainer_globals(True, "cpu"):
        return TraceEstimator(detect_spec, DeviceModel.cpu())


@pytest.fixture(scope="module")
def detection_model():
    """yolo11n in training mode; proxy_step_peak leaves no gradients behind, so the cases can share it."""
    from visionbatch.ultralytics.offline import offline, quiet_ultralytics

    with offline():
        from ultralytics.nn.tasks import DetectionModel

        with quiet_ultralytics():
            return DetectionModel("yolo11n.yaml", nc=5, verbose=False).train()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_proxy_step_trace_equals_real_cpu_tensors_to_the_byte(batch_size: int, detection_model) -> None:
    from visionbatch.fit.probes.trace import proxy_step_peak
    from visionbatch.ultralytics.offline import offline

    with offline():
        traced = proxy_step_peak(detection_model, batch_size, 128, fake=True)
        real = proxy_step_peak(detection_model, batch_size, 128, fake=False)
    assert traced == real
    assert traced > 20 * MIB
    assert all(p.grad is None for p in detection_model.parameters())  # nothing left for the next case


@pytest.mark.slow
def test_full_step_trace_is_within_3_percent_of_the_real_cpu_step(detect_spec, cpu_estimator) -> None:
    from visionbatch.fit.api import trainer_globals
    from visionbatch.fit.probes.cpu import TensorProbe
    from visionbatch.ultralytics.offline import offline
    from visionbatch.ultralytics.step import Workload

    estimator = cpu_estimator
    with offline(), trainer_globals(True, "cpu"):
        workload = Workload(detect_spec, "cpu")
        probe = TensorProbe(1 << 32)
        for b in (1, 4):
            traced = estimator.train(b).allocated_bytes
            real = probe.measure(lambda: workload.train_step(b, probe.pass_boundary), b, "train",
                                 workload.persistent()).peak_bytes
            assert abs(traced - real) <= 0.03 * real, (b, traced, real)
            traced_val = estimator.val(2 * b).allocated_bytes
            real_val = probe.measure(lambda: workload.val_step(2 * b), 2 * b, "val", workload.persistent()).peak_bytes
            assert real_val <= traced_val <= 1.15 * real_val  # validation errs on the safe side
        workload.close()


def test_cuda_device_model_rounds_and_adds_overheads() -> None:
    from visionbatch.fit.probes.trace import DeviceModel, calibration

    cpu = DeviceModel.cpu()
    assert cpu.device_bytes(1000) == (1000, 1000) and cpu.rounded(1000) == 1000
    gpu = DeviceModel.for_arch("RTX 3060", "ampere")
    data = calibration()
    assert gpu.rounded(1) == 512 and gpu.rounded(513) == 1024
    reserved, device = gpu.device_bytes(1000 * MIB)
    assert reserved == int(1000 * MIB * data["reserved_over_allocated"] + data["reserved_extra_bytes"]
                           + data["workspace_bytes"])
    assert device == reserved + data["context_bytes"]["ampere"]
    assert gpu.calibrated == (data["status"] == "calibrated")


def test_estimates_are_linear_in_the_batch_and_cheap(cpu_estimator) -> None:
    """Tensors per image are the same at every batch: traced training memory is exactly linear."""
    from visionbatch.fit.api import trainer_globals
    from visionbatch.ultralytics.offline import offline

    with offline(), trainer_globals(True, "cpu"):
        m1, m2, m64 = (cpu_estimator.train(b).allocated_bytes for b in (1, 2, 64))
    assert abs((m64 - m1) - 63 * (m2 - m1)) <= 0.002 * m64


def test_unknown_target_lists_the_known_ones(small_shapes: Path) -> None:
    from visionbatch.fit.api import fit_batch

    with pytest.raises(ConfigError) as info:
        fit_batch(small_shapes, imgsz=64, target="gtx9999")
    message = str(info.value)
    assert message.startswith("target=gtx9999 is not a GPU visionbatch knows: use one of gtx1050, gtx1050-2gb")
    assert "orin-nano-8gb" in message and "memory_budget=6GiB" in message


@pytest.mark.parametrize("kwargs, error, words", [
    ({"target": "0GiB"}, ConfigError, "target=0GiB is impossible"),
    ({"target": "rtx3060", "device": 0}, ConfigError, "a prediction runs on this CPU"),
    ({"target": "gtx1050", "memory_budget": "200MiB"}, BudgetError, "batch 1 does not fit 180 MiB"),
])
def test_impossible_predictions(small_shapes: Path, kwargs, error, words) -> None:
    from visionbatch.fit.api import fit_batch

    with pytest.raises(error, match=words):
        fit_batch(small_shapes, imgsz=64, **kwargs)


@pytest.mark.slow
def test_target_prediction_is_marked_predicted(shapes_yaml: Path) -> None:
    from visionbatch.fit.api import fit_batch

    plan = fit_batch(shapes_yaml, imgsz=320, target="gtx1650")
    assert not plan.measured and plan.measured_bytes is None and plan.val_measured_bytes is None
    assert plan.device == "target:gtx1650" and plan.total_bytes == 4 << 30
    assert plan.workload.amp is False  # Ultralytics trains GTX 16xx in FP32
    assert plan.predicted_bytes <= plan.budget_bytes
    assert any("predicted for NVIDIA GeForce GTX 1650" in w for w in plan.warnings)
    assert any("Ultralytics disables AMP on GTX 16xx" in w for w in plan.warnings)
    assert "is estimated at" in plan.reason
    trained = [s for s in plan.samples if s.phase == "train"]
    assert trained[-1].batch_size == plan.max_batch_size  # the answer itself was traced, not extrapolated
