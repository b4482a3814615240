"""visionbatch.augment.analysis and the other pure helpers of augcost: exact numbers."""

from __future__ import annotations

import doctest
import math

import pytest

from visionbatch.augment import analysis, loader, options, step, timing
from visionbatch.augment.analysis import (
    decide,
    default_sizes,
    fit_line,
    growth_exponent,
    growth_words,
    mosaic_schedule,
    percentile,
    spread,
    stride_multiple,
    summarise,
)
from visionbatch.augment.loader import throughput
from visionbatch.augment.options import check_sizes
from visionbatch.augment.report import LoaderSample, PhaseProfile, TransformCost
from visionbatch.augment.step import images_per_s
from visionbatch.dataset import train_count
from visionbatch.errors import ConfigError


def test_summarise_rows_add_up_and_sort_by_cost() -> None:
    images = [{"load_image": 0.002, "Mosaic": 0.001, "collate": 0.0005},
              {"load_image": 0.004, "Mosaic": 0.003, "collate": 0.0005},
              {"load_image": 0.000, "Mosaic": 0.002}]
    rows, mean, p95 = summarise(images, {"load_image": 12, "Mosaic": 3, "collate": 1})
    assert [(r.name, r.mean_ms, r.calls_per_image) for r in rows] == [
        ("Mosaic", 2.0, 1.0), ("load_image", 2.0, 4.0), ("collate", pytest.approx(1 / 3), pytest.approx(1 / 3))]
    assert mean == pytest.approx(13 / 3)  # totals 3.5, 7.5, 2.0 ms
    assert p95 == pytest.approx(7.1)  # 3.5 + 0.9 * (7.5 - 3.5), linear interpolation
    assert sum(r.mean_ms for r in rows) == pytest.approx(mean)
    assert sum(r.share for r in rows) == pytest.approx(1.0, abs=1e-5)  # shares are rounded to 6 places
    assert rows[1].p95_ms == pytest.approx(3.8)  # load_image over 0, 2, 4 ms
    assert summarise([], {}) == ((), 0.0, 0.0)


def test_percentile() -> None:
    assert percentile([5.0], 95) == 5.0
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([], 95) == 0.0


@pytest.mark.parametrize("imgsz, sizes", [(640, (320, 640, 1280)), (320, (160, 320, 640)), (64, (32, 64, 128)),
                                          (32, (32, 64)), (96, (64, 96, 192))])
def test_default_sizes(imgsz: int, sizes: tuple) -> None:
    assert default_sizes(imgsz) == sizes


def test_sizes_put_the_training_size_first_and_refuse_nonsense() -> None:
    assert check_sizes(None, 640) == (640, 320, 1280)
    assert check_sizes("128,64", 64) == (64, 128)
    assert check_sizes((320, 640), 640) == (640, 320)
    assert check_sizes((100, 128, 300), 128) == (128, 320)  # rounded up to multiples of 32, as Ultralytics does
    assert stride_multiple(100) == 128 and stride_multiple(33) == 64 and stride_multiple(32) == 32
    with pytest.raises(ConfigError, match=r"sizes=0,640: '0' is not an image size"):
        check_sizes((0, 640), 640)


@pytest.mark.parametrize("n, k, expected", [(10, 4, [0, 3, 6, 9]), (5, 5, [0, 1, 2, 3, 4]), (3, 8, [0, 1, 2]),
                                            (100, 2, [0, 99]), (7, 1, [0]), (7, 0, [])])
def test_spread(n: int, k: int, expected: list) -> None:
    assert spread(n, k) == expected


def test_growth_exponent_and_line() -> None:
    assert growth_exponent([320, 640, 1280], [2.0, 8.0, 32.0]) == pytest.approx(1.0)
    assert growth_exponent([320, 640, 1280], [2.0, 4.0, 8.0]) == pytest.approx(0.5)
    assert growth_exponent([320, 640], [5.0, 5.0]) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(growth_exponent([640], [5.0]))
    fixed, per_mpx = fit_line([1000, 2000], [3.0, 9.0])  # 1 and 4 megapixels
    assert (fixed, per_mpx) == (pytest.approx(1.0), pytest.approx(2.0))


def test_growth_words() -> None:
    assert growth_words(1.0) == "~linear in pixels (x4.0 per doubling of imgsz)"
    assert growth_words(0.5) == "~linear in imgsz (x2.0 per doubling of imgsz)"
    assert growth_words(0.0) == "~flat: fixed costs dominate (x1.0 per doubling of imgsz)"
    assert growth_words(1.5) == "~pixels^1.50 (x8.0 per doubling of imgsz)"
    assert growth_words(math.nan) == "-"


def test_throughput_skips_warm_up_batches() -> None:
    arrivals = [(10.0, 16), (10.5, 16), (11.0, 16), (12.0, 16), (13.0, 8)]
    assert throughput(arrivals, skip=2) == (pytest.approx(40 / 2.5), 40, 2.5)
    assert throughput(arrivals, skip=0) == throughput(arrivals, skip=1) == (pytest.approx(56 / 3.0), 56, 3.0)
    assert throughput(arrivals[:2], skip=2) == (None, 0, 0.0)


def test_train_count_follows_ultralytics_fraction() -> None:
    assert [train_count(160, f) for f in (1.0, 1, 0.5, 0.001, 40, 500, [0.25, 1.0])] == [160, 160, 80, 1, 40, 160, 40]


def test_schedule_follows_the_trainer() -> None:
    """BaseTrainer closes mosaic when epoch >= epochs - close_mosaic (0-based), once."""
    assert mosaic_schedule(100, 10) == [("mosaic", 90), ("close_mosaic", 10)]
    assert mosaic_schedule(11, 10) == [("mosaic", 1), ("close_mosaic", 10)]
    assert mosaic_schedule(10, 10) == [("close_mosaic", 10)]  # epoch 0 >= 0: closed before the first epoch
    assert mosaic_schedule(3, 10) == [("close_mosaic", 3)]
    assert mosaic_schedule(50, 0) == [("mosaic", 50)]  # close_mosaic=0 never closes


def test_step_images_per_s_amortises_the_optimizer() -> None:
    # 4 images in 400 ms, optimizer 64 ms once per 4 batches of 16: 100 + 1 ms per image
    assert images_per_s(400.0, 64.0, 4, 16, 4) == pytest.approx(1000 / 101)


def _profile(total_ms: float, rows: dict[str, float], imgsz: int = 640) -> PhaseProfile:
    costs = tuple(TransformCost(n, ms, ms, ms / total_ms, 1.0) for n, ms in rows.items())
    return PhaseProfile("mosaic", imgsz, "default", 64, 90, costs, total_ms, total_ms, total_ms, total_ms, True)


def _loader(cache: str, workers: int, rate: float | None) -> LoaderSample:
    return LoaderSample(cache, workers, workers, rate, 100, 2.0, 0.0)


PROFILE = _profile(10.0, {"RandomPerspective": 4.0, "load_image": 3.0, "RandomHSV": 2.0, "Format": 1.0})
LOADER = [_loader("none", 0, 100.0), _loader("none", 2, 180.0), _loader("none", 4, 300.0),
          _loader("ram", 0, 150.0), _loader("ram", 4, 420.0)]


def test_compute_bound() -> None:
    verdict = decide(LOADER, 120.0, workers=4, cache="none", profile=PROFILE)
    assert (verdict.bound, verdict.loader_images_per_s, verdict.idle_share, verdict.serial) == ("compute", 300.0, 0.0, False)
    assert verdict.message == (
        "compute-bound: the step takes 120 img/s and the loader delivers 300 img/s (workers=4, cache=none), "
        "2.5x what the step needs; the data pipeline is not the bottleneck (workers=2 would still keep up): "
        "a faster step (smaller imgsz or model, AMP on a GPU) helps most")


def test_data_bound_fixed_by_a_loader_setting() -> None:
    verdict = decide(LOADER, 400.0, workers=4, cache="none", profile=PROFILE)
    assert verdict.bound == "data"
    assert verdict.idle_share == pytest.approx(0.25)
    assert verdict.change == "use workers=4 cache=ram (420 img/s measured)"
    assert verdict.message.startswith("data-bound: the loader delivers 300 img/s (workers=4, cache=none) but the "
                                      "step takes 400 img/s, so the GPU waits 25% of the time; ")


def test_data_bound_beyond_any_loader_setting_picks_the_biggest_projection() -> None:
    # best setting 420 img/s < 1000: dropping RandomPerspective projects 420 * 10 / 6 = 700 img/s
    verdict = decide(LOADER, 1000.0, workers=2, cache="none", profile=PROFILE)
    assert verdict.change == ("drop or cheapen RandomPerspective (4.0 of 10.0 ms per image): ~700 img/s "
                              "with workers=4 cache=ram")
    # a smaller imgsz at 2.5 ms per image projects 420 * 4 = 1680 img/s: that wins
    smaller = _profile(2.5, {"RandomPerspective": 1.0, "load_image": 1.5}, imgsz=320)
    verdict = decide(LOADER, 1000.0, workers=2, cache="none", profile=PROFILE, smaller=smaller)
    assert verdict.change == ("train at imgsz=320 (2.5 instead of 10.0 ms per image): ~1680 img/s "
                              "with workers=4 cache=ram")
    assert verdict.idle_share == pytest.approx(0.82)


def test_serial_on_cpu() -> None:
    # workers=0: 100 img/s = 10 ms of pipeline per image against a 40 ms step
    verdict = decide(LOADER, 25.0, workers=0, cache="none", profile=PROFILE, serial=True)
    assert (verdict.bound, verdict.serial, verdict.idle_share) == ("compute", True, pytest.approx(0.2))
    assert verdict.change == "dropping RandomPerspective saves 4.0 ms per image (8% of training time)"
    # cache=ram at workers=0 saves 10 - 6.67 = 3.33 ms: less than the transform, so the transform is named
    verdict = decide(LOADER, 500.0, workers=0, cache="none", profile=PROFILE, serial=True)
    assert verdict.bound == "data"
    assert "the pipeline is 83% of the time" in verdict.message


def test_serial_step_dominates() -> None:
    verdict = decide(LOADER, 2.0, workers=0, cache="none", profile=PROFILE, serial=True)
    assert verdict.change == ("the step dominates: a smaller imgsz or model (or a GPU) helps most; tuning the "
                              "pipeline can win at most 2%")


def test_no_loader_measured() -> None:
    assert decide([_loader("none", 0, None)], 100.0, workers=0, cache="none", profile=PROFILE) is None


@pytest.mark.parametrize("module", [analysis, options, loader, step, timing], ids=lambda m: m.__name__)
def test_docstring_examples_hold(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_the_pipeline_comparison_carries_a_95_percent_interval() -> None:
    """Welch's interval over the two passes' per-image totals, at the smaller pass's degrees of freedom; one that
    holds 0 is 'not measurably different' (a few images of noise must not read as a fact)."""
    from visionbatch.augment.analysis import pipeline_deltas
    from visionbatch.stats import t_quantile

    def phase(chain: str, total_ms: float, sem_ms: float, images: int = 10) -> PhaseProfile:
        return PhaseProfile("mosaic", 640, chain, images, 90, (), total_ms, total_ms, total_ms, total_ms, True, sem_ms)

    [delta] = pipeline_deltas([phase("default", 4.0, 0.3), phase("pipeline", 5.0, 0.4)], 640)
    assert (delta.added_ms, delta.added_share) == (1.0, 0.25)
    half = t_quantile(9) * 0.5  # hypot(0.3, 0.4) = 0.5
    assert (delta.added_low_ms, delta.added_high_ms) == (round(1.0 - half, 6), round(1.0 + half, 6))
    assert not delta.measured  # 2.262 x 0.5 = 1.13 > 1.0: the interval holds 0
    [clear] = pipeline_deltas([phase("default", 4.0, 0.03), phase("pipeline", 5.0, 0.04, images=4)], 640)
    assert clear.measured and clear.added_high_ms - clear.added_low_ms == pytest.approx(2 * t_quantile(3) * 0.05)
    [one] = pipeline_deltas([phase("default", 4.0, 0.0, images=1), phase("pipeline", 5.0, 0.0, images=1)], 640)
    assert not one.measured and one.added_low_ms == -float("inf")  # one image says nothing about the noise
