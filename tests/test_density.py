"""The label-density model (ultralytics/density.py): exact geometry, exact distribution maths, the batch it plans."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from visionbatch.dataset import ImageLabels
from visionbatch.ultralytics import density as density_module
from visionbatch.ultralytics.density import LabelDensity, label_density

FIXED_GEOMETRY = {"scale": 0.0, "translate": 0.0, "epochs": 10, "close_mosaic": 0}


def image(*boxes: tuple[float, float, float, float], size: tuple[int, int] = (640, 640)) -> ImageLabels:
    return ImageLabels(size[0], size[1], array("f", [v for box in boxes for v in box]))


def mean(pmf) -> float:
    return sum(k * p for k, p in enumerate(pmf))


def test_an_image_alone_without_crop_keeps_every_box() -> None:
    whole = image((0.0, 0.0, 1.0, 1.0), (0.2, 0.2, 0.4, 0.4))
    density = label_density([whole] * 4, {**FIXED_GEOMETRY, "mosaic": 0.0}, 4, segments=False)
    assert density.plain_pmf == (0.0, 0.0, 1.0) and density.mosaic_pmf == () and density.mosaic_draws == 0
    assert density.labels_per_image == 2 and density.batch_counts(3) == (2, 2, 2)


def test_mosaic_keeps_a_tile_by_its_visible_area_as_ultralytics_filters_boxes() -> None:
    """Boxes that cover their whole image, no scale and no shift: the mosaic centre (xc, yc) is uniform in
    [s/2, 3s/2]^2, the canvas clips the top-left tile to [0, xc] (its box then spans min(xc, s)), and the s x s
    window around the canvas centre shows xc - s/2 of it. Ultralytics keeps the box when the shown area is more
    than 10% of the clipped box's (1% for polygons); the other tiles are its mirror images."""
    whole = image((0.0, 0.0, 1.0, 1.0))
    u = (np.arange(4000) + 0.5) / 4000 + 0.5  # xc / s on a fine grid
    shown = (u - 0.5) / np.minimum(u, 1.0)
    for segments, threshold in ((False, 0.10), (True, 0.01)):
        expected = 4 * np.mean(np.outer(shown, shown) > threshold)
        density = label_density([whole] * 8, FIXED_GEOMETRY, 8, segments=segments)
        assert mean(density.mosaic_pmf) == pytest.approx(expected, abs=0.03)
        assert len(density.mosaic_pmf) == 5 and density.labels_per_image == 4  # 4 tiles of one box: never more


def test_small_boxes_at_the_image_centre_survive_where_the_window_reaches_them() -> None:
    """A tile's centre point lies in the window exactly when the mosaic centre is past it by s/2: P = 1/2 per axis."""
    dot = image((0.49, 0.49, 0.51, 0.51))
    density = label_density([dot] * 8, FIXED_GEOMETRY, 8, segments=False)
    assert mean(density.mosaic_pmf) == pytest.approx(4 * 0.25, abs=0.03)


def test_mixup_adds_a_second_image_and_copy_paste_grows_polygons_only() -> None:
    dense = [image(*[(0.1 * i, 0.1 * i, 0.1 * i + 0.05, 0.1 * i + 0.05) for i in range(9)])] * 6
    base = label_density(dense, {"epochs": 10, "close_mosaic": 2}, 6, segments=True)
    mixed = label_density(dense, {"epochs": 10, "close_mosaic": 2, "mixup": 1.0}, 6, segments=True)
    assert mean(mixed.mosaic_pmf) == pytest.approx(2 * mean(base.mosaic_pmf), rel=1e-9)
    assert mixed.plain_pmf == base.plain_pmf  # close_mosaic turns mixup off with mosaic
    pasted = label_density(dense, {"epochs": 10, "close_mosaic": 2, "copy_paste": 0.5}, 6, segments=True)
    boxes_only = label_density(dense, {"epochs": 10, "close_mosaic": 2, "copy_paste": 0.5}, 6, segments=False)
    assert mean(pasted.mosaic_pmf) > mean(base.mosaic_pmf)
    assert boxes_only.mosaic_pmf == label_density(dense, {"epochs": 10, "close_mosaic": 2}, 6, False).mosaic_pmf


def test_the_planned_count_follows_the_risk_and_the_run_length() -> None:
    rng = np.random.default_rng(1)
    objects = [image(*[tuple(sorted(rng.random(2))) * 2 for _ in range(int(n))]) for n in rng.integers(0, 20, 64)]
    objects = [ImageLabels(o.width, o.height, array("f", _xyxy(o.boxes))) for o in objects]
    args = {"epochs": 30, "close_mosaic": 5}
    counts = [label_density(objects, args, 64, False, risk).labels_per_image for risk in (0.5, 0.1, 1e-3, 1e-6)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    short = label_density(objects, {"epochs": 2, "close_mosaic": 1}, 64, False).labels_per_image
    assert short <= counts[2]
    densest = max(o.count for o in objects)
    assert densest <= counts[2] <= 4 * densest  # every image is drawn in the plain epochs; 4 tiles at most


def _xyxy(flat) -> list[float]:
    out = []
    for i in range(0, len(flat), 4):
        x1, x2, y1, y2 = flat[i], flat[i + 1], flat[i + 2], flat[i + 3]
        out += [min(x1, x2), min(y1, y2), max(x1, x2) + 0.01, max(y1, y2) + 0.01]
    return out


def test_risk_quantile_is_exact_for_a_known_distribution() -> None:
    """Uniform counts 0..9, 10 independent draws: P(max <= k) = ((k + 1) / 10)^10."""
    pmf = np.full(10, 0.1)
    for risk in (0.5, 0.1, 0.01):
        k = _quantile(pmf, 10, risk)
        assert ((k + 1) / 10) ** 10 >= 1 - risk > (k / 10) ** 10


def _quantile(pmf, draws: int, risk: float) -> int:
    return LabelDensity((), tuple(pmf), 0, draws, risk, 0).batch_max_quantile(draws, 1 - risk, "plain")


def test_batch_counts_put_the_padding_in_one_image_and_share_the_total() -> None:
    density = LabelDensity((0.2, 0.3, 0.3, 0.2), (0.5, 0.5), mosaic_draws=1000, plain_draws=100, oom_risk=1e-3,
                           labels_per_image=3)
    for b in (1, 2, 5, 16, 64):
        counts = density.batch_counts(b)
        assert len(counts) == b and counts[0] == 3 and max(counts) == 3
        assert sum(counts) == max(density.batch_total(b), 3) <= 3 * b
    # the total of b draws: exact by convolution; at b=64 the mosaic mean is 1.5 per image
    assert 64 * 1.5 < density.batch_total(64) < 64 * 3
    assert LabelDensity.fixed(7).batch_counts(3) == (7, 7, 7)


def test_many_images_are_modelled_from_the_densest_plus_a_weighted_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(density_module, "MAX_MODEL_IMAGES", 20)
    monkeypatch.setattr(density_module, "KEPT_DENSEST", 5)
    objects = [image(*[(0.1, 0.1, 0.3, 0.3)] * (i % 7)) for i in range(100)] + [image(*[(0.1, 0.1, 0.3, 0.3)] * 30)]
    chosen, weights = density_module._sample(objects)
    assert len(chosen) == 20 and chosen[0].count == 30  # the densest are always kept
    assert weights.sum() == pytest.approx(1.0) and weights[0] == pytest.approx(1 / 101)
    whole = label_density(objects, {**FIXED_GEOMETRY, "mosaic": 0.0}, 101, False)
    assert whole.labels_per_image == 30  # the densest image is drawn in every epoch


def test_the_spec_measures_the_modelled_batch_unless_a_count_is_forced(shapes_yaml) -> None:
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline
    from visionbatch.ultralytics.spec import job_spec

    with offline():
        job = prepare(shapes_yaml, {"imgsz": 64})
    modelled, forced = job_spec(job, "cpu"), job_spec(job, "cpu", labels_per_image=5)
    densest = job.dataset.train.max_instances
    assert densest < modelled.labels_per_image < 4 * densest and not modelled.density.forced
    assert modelled.batch_labels(8)[0] == modelled.labels_per_image and forced.batch_labels(3) == (5, 5, 5)
    val = sorted((o.count for o in job.dataset.val.objects), reverse=True)
    assert modelled.val_batch_labels(4) == tuple(val[:4])  # the densest validation images together
    assert modelled.describe()["oom_risk"] == 1e-3 and forced.describe()["oom_risk"] is None


def test_the_synthetic_batch_carries_each_images_count(shapes_yaml) -> None:
    import torch

    from visionbatch.ultralytics.density import LabelDensity
    from visionbatch.ultralytics.spec import make_spec
    from visionbatch.ultralytics.step import synthetic_batch

    spec = make_spec("yolo11n-seg.yaml", "segment", {0: "a"}, 10, LabelDensity.fixed(3), [3], {}, "cpu")
    batch = synthetic_batch(spec, 3, 64, (300, 2, 0), 4, True, torch.Generator().manual_seed(0))
    assert torch.bincount(batch["batch_idx"].long(), minlength=3).tolist() == [300, 2, 0]
    assert batch["masks"].dtype == torch.int32  # past 255 objects in one image, as polygons2masks_overlap
    assert [int(batch["masks"][i].max()) <= c for i, c in enumerate((300, 2, 0))] == [True, True, True]
    assert int(batch["masks"][2].max()) == 0


def test_the_sentence_names_only_the_augmentations_the_run_uses_and_calls_the_padding_a_quantile() -> None:
    # epochs=1 with close_mosaic=10 never runs mosaic (nor the mixing that stops with it), yet the sentence said
    # "through mosaic, the affine crop and mixing"; and at oom_risk=0.1 the padding is a quantile, not "the most"
    two = image((0.4, 0.4, 0.6, 0.6), (0.1, 0.1, 0.2, 0.2))
    short = label_density([two] * 8, {"epochs": 1, "mixup": 0.5}, 8, False, oom_risk=0.1)
    assert short.mixing == () and short.describe() == (
        "modelled from the dataset's labels through the affine crop alone (mosaic does not run in this run): 1.9 per "
        "image on average; the batch is padded to 2 labels: at most a 0.05 chance that any of the 8 images drawn "
        "carries more (half of oom_risk=0.1)")
    mixed = label_density([two] * 8, {"epochs": 20, "mixup": 0.5, "copy_paste": 0.3}, 8, True, oom_risk=0.1)
    assert mixed.describe() == (
        "modelled from the dataset's labels through mosaic, the affine crop, mixup and copy-paste: 4.1 per image on "
        "average; the batch is padded to 20 labels: at most a 0.05 chance that any of the 160 images drawn carries "
        "more (half of oom_risk=0.1)")
    boxes = label_density([two] * 8, {"epochs": 20, "mixup": 0.5, "copy_paste": 0.3}, 8, False)  # no CopyPaste
    assert boxes.mixing == ("mixup",) and "through mosaic, the affine crop and mixup: " in boxes.describe()
    assert "(half of oom_risk=0.001)" in boxes.describe()
