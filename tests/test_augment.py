"""profile_augmentation on the real Ultralytics pipeline over copies of the shipped dataset.

No assertion here reads a real duration: tests that check what the profiler measures run its passes on
`TickClock`. How the timed pass compares with an untimed loop in real time is a measurement, made by
`tools/bench_augcost.py --overhead`.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import random
import tempfile
from pathlib import Path

import pytest
from conftest import tree_digest

from visionbatch.augment import AugmentationReport, profile_augmentation, timing
from visionbatch.errors import ConfigError

# Small and quick: one size, 16 images, workers=0 only, the step's rate given.
FAST = {"imgsz": 96, "sizes": [96], "images": 16, "loader_workers": [0], "loader_cache": "none", "seconds": 0.3,
        "step_img_per_s": 50.0, "progress": None}
TICK_MS = 1000.0  # one reading of TickClock, in the report's milliseconds


class TickClock:
    """A clock that moves one second per reading, however busy the machine is.

    Each timer reads it twice, so a row's exclusive time is one tick plus one per timer directly inside
    it, and an image whose `__getitem__` runs n timers takes exactly 2n + 1 ticks; an untimed
    `__getitem__` takes one.
    """

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return float(self.readings)


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """profile_augmentation's per-transform passes on a TickClock (the loader and the step keep real time).

    profile.py calls `timing.profile_pass` through the module, so the patch reaches it; were that to change,
    the exact tick counts below would fail rather than pass on real time.
    """
    monkeypatch.setattr(timing, "profile_pass", functools.partial(timing.profile_pass, clock=TickClock()))


def _rows_add_up(report: AugmentationReport) -> None:
    for phase in report.phases:
        assert sum(t.mean_ms for t in phase.transforms) == pytest.approx(phase.total_ms, abs=1e-4)
        collate = phase.cost("collate").mean_ms
        assert phase.getitem_ms + collate == pytest.approx(phase.total_ms, abs=1e-4)
        assert all(t.p95_ms >= 0 and 0 <= t.share <= 1 for t in phase.transforms)


@pytest.mark.slow
def test_profiler_changes_nothing_and_counts_every_tick_once(make_shapes, ticks) -> None:
    """Same tensors bit for bit as an untimed loop (same seed, every pass), and on the tick clock every
    image's rows add up to exactly 2n + 1 ticks for its n nested timers: the real chain's nesting (Mosaic
    pulling images, MixUp's and CutMix's shared pre-transform, Albumentations inside Ultralytics' chain)
    loses no time and counts none twice."""
    data = make_shapes(n_train=32)
    report = profile_augmentation(data, **{**FAST, "imgsz": 192, "sizes": [192], "images": 32, "repeats": 2})
    assert [p.phase for p in report.phases] == ["mosaic", "close_mosaic", "val"]
    for phase in report.phases:
        assert phase.identical_output, phase.phase
        nested = sum(t.calls_per_image for t in phase.transforms if t.name not in {"other", "collate"})
        assert phase.getitem_ms == pytest.approx(TICK_MS * (2 * nested + 1), abs=1e-6), phase.phase
        assert phase.unprofiled_ms == TICK_MS
    _rows_add_up(report)


def test_mosaic_and_close_mosaic_phases_differ_as_they_should(small_shapes: Path, ticks) -> None:
    report = profile_augmentation(small_shapes, epochs=30, close_mosaic=5, **FAST)
    mosaic, closed, val = report.phase("mosaic"), report.phase("close_mosaic"), report.phase("val")
    assert (mosaic.epochs, closed.epochs, val.epochs) == (25, 5, None)
    # Mosaic pulls three more images through load_image (and their labels): 4 per image, counted as load
    assert mosaic.cost("load_image").calls_per_image == 4.0
    assert mosaic.cost("labels").calls_per_image == 4.0
    # close_mosaic() rebuilt the chain with mosaic=0: Mosaic still sits in it but returns at once
    assert closed.cost("load_image").calls_per_image == 1.0
    assert closed.cost("Mosaic").calls_per_image == 1.0
    # on the tick clock: Mosaic and the three images it pulls, against Mosaic alone
    assert (mosaic.cost("Mosaic").mean_ms, closed.cost("Mosaic").mean_ms) == (4 * TICK_MS, TICK_MS)
    # the training chain against the validation chain
    names = {t.name for t in mosaic.transforms}
    assert {"RandomPerspective", "RandomHSV", "RandomFlip(horizontal)", "RandomFlip(vertical)", "Format", "MixUp",
            "CutMix", "CopyPaste", "Albumentations", "Albumentations: Blur", "collate"} <= names
    assert "LetterBox" not in names
    assert {t.name for t in val.transforms} == {"load_image", "labels", "LetterBox", "Format", "collate", "other"}
    assert val.cost("collate").calls_per_image == pytest.approx(1 / 4)  # 4 val images, batch 2 x 16
    _rows_add_up(report)


def test_mosaic_never_runs_when_epochs_within_close_mosaic(small_shapes: Path) -> None:
    report = profile_augmentation(small_shapes, epochs=10, close_mosaic=10, **FAST)
    assert [p.phase for p in report.phases] == ["close_mosaic", "val"]
    assert report.phases[0].cost("load_image").calls_per_image == 1.0
    assert any("mosaic never runs" in note for note in report.notes)


def test_custom_albumentations_pipeline_is_costed(small_shapes: Path, tmp_path: Path) -> None:
    import albumentations as A

    path = tmp_path / "aug.yaml"
    A.save(A.Compose([A.GaussianBlur(blur_limit=(7, 9), p=1.0), A.ToGray(p=1.0)]), str(path), data_format="yaml")
    report = profile_augmentation(small_shapes, pipeline=path, **FAST)
    assert report.pipeline == str(path.resolve())
    ours, default = report.phase("mosaic"), report.phase("mosaic", chain="default")
    assert ours.chain == "pipeline" and default.chain == "default"
    ours_names, default_names = {t.name for t in ours.transforms}, {t.name for t in default.transforms}
    assert {"Albumentations: GaussianBlur", "Albumentations: ToGray"} <= ours_names
    assert "Albumentations: Blur" not in ours_names and "Albumentations: Blur" in default_names
    blur = ours.cost("Albumentations: GaussianBlur")
    assert blur.calls_per_image == 1.0 and blur.mean_ms > 0
    # close_mosaic() rebuilds the chain from the trainer's arguments: the pipeline must survive it
    closed = report.phase("close_mosaic")
    assert closed.cost("Albumentations: GaussianBlur").calls_per_image == 1.0
    assert closed.cost("Albumentations: Blur") is None
    assert [d.phase for d in report.pipeline_delta] == ["mosaic", "close_mosaic"]
    for delta in report.pipeline_delta:
        base, mine = report.phase(delta.phase, chain="default"), report.phase(delta.phase)
        assert (delta.default_ms, delta.pipeline_ms) == (base.total_ms, mine.total_ms)
        assert delta.added_ms == pytest.approx(mine.total_ms - base.total_ms, abs=1e-5)
        assert delta.added_low_ms < delta.added_ms < delta.added_high_ms  # the images vary: a real interval
        assert base.total_sem_ms > 0 and mine.total_sem_ms > 0
    assert any("replaces Ultralytics' default Albumentations" in note for note in report.notes)


def test_dataset_untouched_by_every_cache_mode(small_shapes: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """cache=disk writes .npy beside the images it reads: augcost reads a linked sample, never the dataset."""
    before = tree_digest(small_shapes.parent)  # not even a label cache may appear
    scratch = tmp_path / "scratch"  # this test's own temporary folder: another augcost on the machine is not seen
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    report = profile_augmentation(small_shapes, workers=1, batch=4,  # the training's own workers are timed too
                                  **{**FAST, "loader_cache": "False,ram,disk", "loader_workers": [0]})
    assert tree_digest(small_shapes.parent) == before
    assert not glob.glob(os.path.join(str(scratch), "visionbatch-augcost-*"))  # its temporary folder is gone
    measured = {(s.cache, s.workers): s for s in report.loader}
    assert set(measured) == {(c, w) for c in ("none", "ram", "disk") for w in (0, 1)}
    assert all(s.images_per_s > 0 and s.images > 0 for s in measured.values())
    assert [measured[("none", w)].workers_used for w in (0, 1)] == [0, 1]
    assert measured[("ram", 0)].cache_fill_s >= 0


@pytest.mark.slow
def test_step_timed_on_cpu_and_caller_state_kept(small_shapes: Path) -> None:
    import numpy as np
    import torch

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    threads, environ = torch.get_num_threads(), dict(os.environ)
    report = profile_augmentation(small_shapes, **{**FAST, "imgsz": 64, "sizes": [64], "step_img_per_s": None,
                                                   "batch": 8})
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2]) and torch.initial_seed() == 7
    assert torch.get_num_threads() == threads
    assert {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} == \
        {k: v for k, v in environ.items() if k != "OMP_NUM_THREADS"}
    step = report.step
    assert (step.source, step.batch_size, step.measured_batch_size, step.accumulate) == ("cpu", 8, 4, 8)
    assert step.images_per_s > 0 and step.forward_backward_ms > 0 and step.optimizer_ms > 0
    assert report.verdict.serial and "workers=0 on CPU" in report.verdict.message


def test_given_step_and_resolution(small_shapes: Path) -> None:
    report = profile_augmentation(small_shapes, **{**FAST, "imgsz": 64, "sizes": [128, 64], "step_img_per_s": 1e6})
    assert report.sizes == (64, 128)
    assert [(f.phase, f.sizes) for f in report.resolution] == [("mosaic", (64, 128)), ("close_mosaic", (64, 128))]
    assert all(math.isfinite(f.exponent) and f.growth.startswith("~") for f in report.resolution)
    assert report.step.source == "given" and report.step.images_per_s == 1e6
    verdict = report.verdict
    assert (verdict.bound, verdict.serial) == ("data", False)
    assert verdict.message.startswith("data-bound: the loader delivers")


@pytest.mark.parametrize("overrides, words", [
    ({"imgsz": [320, 640]}, "imgsz=320,640: imgsz is the training size (one integer); list the sizes to profile with "
                            "sizes=320,640"),
    ({"batch": "auto"}, "batch=auto: augcost profiles a fixed batch: pass a batch size, e.g. batch=16"),
    ({"images": 1}, "images=1 is impossible: use an integer from 2 to 10000"),
    ({"step_img_per_s": 0}, "step_img_per_s=0 is impossible: use a number above 0"),
    ({"loader_cache": "ram,ssd"}, "loader_cache=ram,ssd: 'ssd' is not a cache mode"),
    ({"loader_workers": [-1]}, "loader_workers=-1: '-1' is not a worker count"),
    ({"sizes": [64, 20]}, "sizes=64,20: '20' is not an image size"),
    ({"size": 64}, "unknown argument 'size=64' (did you mean 'sizes'?): see 'visionbatch augcost --help'"),
    ({"task": "segment", "pipeline": "missing.yaml"}, "pipeline=missing.yaml: no such file"),
])
def test_bad_arguments(small_shapes: Path, overrides: dict, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        profile_augmentation(small_shapes, progress=None, **overrides)
    assert words in str(info.value)
