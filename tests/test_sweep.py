"""The memory surface over batch and image size, and the sweep command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionbatch.errors import ConfigError
from visionbatch.fit.curve import (
    fit_memory_surface,
    surface_max_batch,
    surface_max_imgsz,
)

MIB = 1 << 20


def law(b: int, s: int) -> float:
    """fixed 600 MiB + 0.5 B/px^2, per image 2 MiB + 400 B per pixel"""
    return 600 * MIB + 0.5 * s * s + b * (2 * MIB + 400 * s * s)


def test_surface_recovers_an_exact_law_and_predicts_held_out_points() -> None:
    surface = fit_memory_surface([(b, s, law(b, s)) for b in (1, 2) for s in (320, 1280)])
    assert (surface.fixed_bytes, surface.fixed_per_pixel_bytes) == pytest.approx((600 * MIB, 0.5))
    assert (surface.per_image_bytes, surface.per_image_per_pixel_bytes) == pytest.approx((2 * MIB, 400))
    for b, s in ((8, 640), (33, 1024), (3, 800)):  # held out of the fit
        assert surface.predict(b, s) == pytest.approx(law(b, s), rel=1e-9)
    assert surface.extrapolates(8, 640) and not surface.extrapolates(2, 640) and surface.extrapolates(1, 2048)


def test_largest_batch_and_largest_size_are_inverse_answers() -> None:
    surface = fit_memory_surface([(b, s, law(b, s)) for b in (1, 2) for s in (320, 1280)])
    budget = 12 * 1024 * MIB
    b = surface_max_batch(surface, 640, budget)
    assert law(b, 640) <= budget < law(b + 1, 640)
    side = surface_max_imgsz(surface, 16, budget, stride=32)
    assert side % 32 == 0 and law(16, side) <= budget < law(16, side + 32)
    assert surface_max_batch(surface, 640, 100 * MIB) == 0
    assert surface_max_imgsz(surface, 16, 100 * MIB) == 0


def test_surface_needs_two_sizes_and_two_batches() -> None:
    with pytest.raises(ValueError, match="two or more batch sizes and two or more image sizes"):
        fit_memory_surface([(1, 320, 1.0), (2, 320, 2.0), (4, 320, 3.0), (8, 320, 5.0)])


@pytest.mark.parametrize("sizes, words", [((640,), "two or more sizes"), ((16, 640), "at least 64"),
                                          (("big", 640), "image sizes in pixels")])
def test_sweep_refuses_bad_sizes(small_shapes: Path, sizes, words) -> None:
    from visionbatch.fit.sweep import sweep_resolution

    with pytest.raises(ConfigError, match=words):
        sweep_resolution(small_shapes, sizes=sizes, target="t4")


@pytest.mark.slow
def test_traced_surface_reproduces_held_out_traces(capsys, small_shapes: Path, workdir: Path) -> None:
    from visionbatch.cli import main

    code = main(["sweep", str(small_shapes), "sizes=64,128", "imgsz=96", "target=gtx1050", "batch=16", "name=s"])
    out = capsys.readouterr().out
    assert code == 0, out
    sweep = json.loads((workdir / "runs" / "sweep" / "s" / "sweep.json").read_text())
    assert (workdir / "runs" / "sweep" / "s" / "sweep.png").stat().st_size > 10_000
    rows = {row["imgsz"]: row for row in sweep["rows"]}
    middle = rows[96]  # held out of the fit (probed at 64 and 128), probed once as a check
    assert middle["check_bytes"] and abs(middle["check_predicted_bytes"] - middle["check_bytes"]) <= 0.01 * middle[
        "check_bytes"]
    assert rows[64]["max_batch_size"] >= rows[96]["max_batch_size"] >= rows[128]["max_batch_size"] >= 1
    assert rows[64]["per_image_bytes"] < rows[128]["per_image_bytes"]
    assert sweep["max_imgsz"] % 32 == 0 and sweep["measured"] is False
    assert "largest imgsz at batch 16:" in out and "[predicted]" in out


def test_the_sweep_validates_at_no_more_than_the_validation_split() -> None:
    """Validation runs at twice the batch but never at more than the split: validation at 3/4 of
    training's cost per image limits every size at 2b; with 40 validation images it limits none."""
    from visionbatch.devices.memory import Capacity
    from visionbatch.fit.plan import ProbeSample
    from visionbatch.fit.sweep import sweep_points

    class Points:
        stride = 32

        def read(self, b, s, phase):
            peak = law(b, s) if phase == "train" else 600 * MIB + b * 0.75 * (2 * MIB + 400 * s * s)
            return ProbeSample(b, phase, ok=True, peak_bytes=int(peak))

    class Spec:
        def describe(self):
            return {"model": "yolo11n.yaml", "task": "detect", "nc": 5, "imgsz": 320, "multi_scale": 0.0,
                    "labels_per_image": 8, "val_labels_per_image": 8, "oom_risk": None, "label_density": "",
                    "amp": False, "amp_dtype": None, "optimizer": "SGD", "ema": True, "dataset_images": 160}

    capacity = Capacity(device="cpu", name="simulated", total_bytes=None, used_by_others_bytes=0, context_bytes=0,
                        usable_bytes=4 << 30)

    def sweep(val_images):
        return sweep_points(Points(), capacity, [320, 400, 480], 1.0, 24, Spec(), measured=True, val_images=val_images)

    at_2b, at_split = sweep(None), sweep(40)
    assert [r.limited_by for r in at_2b.rows] == ["val", "val", "val"]
    assert [r.limited_by for r in at_split.rows] == ["train", "train", "train"]
    for row in at_split.rows:  # training alone decides: its largest batch under the budget
        assert law(row.max_batch_size, row.imgsz) <= 4 << 30 < law(row.max_batch_size + 1, row.imgsz)
    assert at_split.max_imgsz > at_2b.max_imgsz  # batch 24's validation at 40 images, not 48
