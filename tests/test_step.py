"""One training step for fit and augcost: the step augcost times is the one fit measures (issue 10).

On CPU with yolo11n at 64 px and batch 2 over the shipped dataset (160 training images, so
optimizer=auto sees ceil(160 / 64) x epochs iterations): the optimizer Ultralytics' rule picks,
the frozen `.dfl` layer, AMP off on a CPU, and the AMP switch given as a value, never as a device
name. The step's timing runs on a clock that moves one second per reading, so its fields are exact.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SHAPES_YAML

from visionbatch.ultralytics.density import LabelDensity
from visionbatch.ultralytics.spec import make_spec, resolve_optimizer

NAMES = {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "cross"}
TRAIN_IMAGES = 160  # datasets/shapes/images/train


class TickClock:
    """One second per reading: each timed part of the step (two readings) takes exactly 1000 ms."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return float(self.readings)


def _job(**overrides: Any) -> Any:
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    with offline():
        return prepare(SHAPES_YAML, {"model": "yolo11n.yaml", "imgsz": 64, "batch": 2, **overrides})


def _samples(count: int = 2, labels: int = 3) -> list[dict]:
    """Dataset items in Ultralytics' format (what the augmentation pipeline yields), 64 px."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return [{
        "im_file": f"image{i}.jpg", "ori_shape": (64, 64), "resized_shape": (64, 64),
        "img": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=generator),
        "cls": torch.tensor([[0.0], [1.0], [2.0]][:labels]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2], [0.5, 0.2, 0.1, 0.1]][:labels]),
        "batch_idx": torch.zeros(labels),
    } for i in range(count)]


def _time_step(monkeypatch: pytest.MonkeyPatch, job: Any) -> tuple[Any, dict[str, Any]]:
    """augcost's `measure_step` on CPU, with the Workload it steps recorded just before it is closed."""
    import torch

    from visionbatch.augment.step import measure_step
    from visionbatch.ultralytics import step
    from visionbatch.ultralytics.offline import offline

    seen: dict[str, Any] = {}

    class Recorded(step.Workload):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.before = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            self.steps = 0

        def optimizer_step(self) -> None:
            self.steps += 1
            super().optimizer_step()

        def close(self) -> None:
            params = dict(self.model.named_parameters())
            seen.update(
                spec=self.spec, optimizer=type(self.optimizer).__name__, steps=self.steps,
                scaler=self.scaler.is_enabled(),
                frozen={n for n, p in params.items() if not p.requires_grad},
                changed={n for n, p in params.items() if not torch.equal(p, self.before[n])},
            )
            super().close()

    monkeypatch.setattr(step, "Workload", Recorded)
    with offline():
        from ultralytics.data.dataset import YOLODataset

        timing = measure_step(job, _samples(), YOLODataset.collate_fn, "cpu", job.batch_size, budget_s=0.0,
                              clock=TickClock())
    return timing, seen


@pytest.mark.parametrize("overrides, optimizer", [
    ({}, "AdamW"),  # 3 x 100 = 300 iterations
    ({"epochs": 3400}, "MuSGD"),  # 3 x 3400 = 10200 > 10000
    ({"optimizer": "SGD", "batch": 8}, "SGD"),
])
def test_augcost_times_the_step_fit_measures(monkeypatch: pytest.MonkeyPatch, overrides: dict, optimizer: str
                                             ) -> None:
    job = _job(**overrides)
    epochs = int(overrides.get("epochs", 100))
    assert resolve_optimizer(str(overrides.get("optimizer", "auto")), TRAIN_IMAGES, epochs, 64)[0] == optimizer
    timing, seen = _time_step(monkeypatch, job)
    assert seen["spec"].optimizer == optimizer and seen["optimizer"] == optimizer
    # Ultralytics always freezes the DFL layer: its weights stay the fixed 0..15 projection
    assert seen["frozen"] and all(".dfl" in name for name in seen["frozen"])
    assert not seen["changed"] & seen["frozen"]
    assert "model.0.conv.weight" in seen["changed"]  # and the rest trained
    assert seen["steps"] == 3  # one warm-up, then MIN_STEPS timed
    # AMP is off on a CPU, in the spec, the scaler and the report
    assert (seen["spec"].amp, seen["spec"].amp_dtype, seen["scaler"], timing.amp) == (False, "float32", False, False)
    measured = min(job.batch_size, 4)  # augment.step.CPU_BATCH
    accumulate = 64 // job.batch_size
    assert (timing.source, timing.batch_size, timing.measured_batch_size, timing.accumulate) == \
        ("cpu", job.batch_size, measured, accumulate)
    assert (timing.forward_backward_ms, timing.optimizer_ms) == (1000.0, 1000.0)
    assert timing.images_per_s == round(1000 / (1000 / measured + 1000 / (job.batch_size * accumulate)), 3)


def _spec(args: dict, device_type: str = "cuda", device_name: str = "", amp: bool | None = None) -> Any:
    return make_spec("yolo11n.yaml", "detect", NAMES, TRAIN_IMAGES, LabelDensity.fixed(360), [40], args, device_type,
                     device_name, amp=amp)


@pytest.mark.parametrize("args, device_type, device_name, amp, expected", [
    ({}, "cpu", "", None, (False, "float32")),
    ({"amp": "bf16"}, "cpu", "", None, (False, "float32")),
    ({}, "cuda", "NVIDIA H100 80GB HBM3", None, (True, "float16")),
    ({}, "cuda", "NVIDIA GeForce GTX 1650", None, (False, "float32")),  # check_amp's blocklist
    ({"amp": "bf16"}, "cuda", "NVIDIA GeForce GTX 1650", None, (True, "bfloat16")),  # bf16 skips check_amp
    ({"amp": False}, "cuda", "NVIDIA H100 80GB HBM3", None, (False, "float32")),
    ({}, "cuda", "NVIDIA GeForce GTX 1650", True, (True, "float16")),  # the override wins over the name
    ({}, "cuda", "NVIDIA H100 80GB HBM3", False, (False, "float32")),
    ({"amp": "bf16"}, "cuda", "", True, (True, "bfloat16")),
])
def test_amp_follows_the_rule_or_the_override(args: dict, device_type: str, device_name: str, amp: bool | None,
                                              expected: tuple[bool, str]) -> None:
    spec = _spec(args, device_type, device_name, amp)
    assert (spec.amp, spec.amp_dtype) == expected


class _SpecMade(Exception):
    """Raised by the spy once the spec exists: the trace that would follow is not needed here."""


@pytest.mark.parametrize("command", ["fit", "sweep"])
@pytest.mark.parametrize("target, args, expected", [
    ("gtx1650", {}, (False, "float32")),  # the catalog says Ultralytics turns AMP off there
    ("rtx3060", {}, (True, "float16")),
    ("gtx1650", {"amp": "bf16"}, (True, "bfloat16")),  # Ultralytics skips check_amp for bf16
])
def test_a_target_sets_amp_by_value_not_by_name(monkeypatch: pytest.MonkeyPatch, command: str, target: str,
                                                 args: dict, expected: tuple[bool, str]) -> None:
    from visionbatch.devices.catalog import find_target
    from visionbatch.ultralytics import spec as spec_module

    made: list[tuple[str, Any]] = []
    real = spec_module.make_spec

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append((args[8], real(*args, **kwargs)))  # device_name, the spec
        raise _SpecMade

    monkeypatch.setattr(spec_module, "make_spec", spy)
    with pytest.raises(_SpecMade):
        if command == "fit":
            from visionbatch.fit.api import fit_batch

            fit_batch(SHAPES_YAML, imgsz=64, target=target, **args)
        else:
            from visionbatch.fit.sweep import sweep_resolution

            sweep_resolution(SHAPES_YAML, (64, 128), target=target, **args)  # the sizes to sweep
    [(device_name, spec)] = made
    assert device_name == find_target(target).name  # the GPU's own name, no suffix to trip a rule
    assert (spec.amp, spec.amp_dtype) == expected


@pytest.mark.parametrize("fraction, images", [(1.0, 160), (0.5, 80), (40, 40), (500, 160), ([0.25, 1.0], 40)])
def test_the_step_counts_the_images_ultralytics_trains_on(fraction: object, images: int) -> None:
    """fraction= as Ultralytics reads it (dataset.train_count): a ratio, a count capped at the set, or per split."""
    spec = make_spec("yolo11n.yaml", "detect", {0: "a"}, 160, LabelDensity.fixed(3), [3], {"fraction": fraction}, "cpu")
    assert spec.dataset_images == images
