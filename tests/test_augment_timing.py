"""visionbatch.augment.timing: exclusive timers on a simulated clock, wrappers that leave no trace.

Every duration here is simulated, so the assertions are exact whatever else the machine runs; how the
timed pass compares with the untimed one in real time is measured by `tools/bench_augcost.py --overhead`.
"""

from __future__ import annotations

import random

import pytest

from visionbatch.augment.timing import (
    Recorder,
    Timed,
    instrument,
    profile_pass,
    transform_name,
)
from visionbatch.ultralytics.offline import offline


class FakeClock:
    """Time moves only when the code under test says it works: every duration is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


def _fake_dataset(clock: FakeClock, bursts: dict[int, float] | None = None, offset: float = 0.0):
    """A dataset shaped like Ultralytics': a chain whose first transform pulls three more images through
    `get_image_and_label` -> `load_image`, as Mosaic does, nested in an inner Compose.

    Its last transform draws from Python's, NumPy's and torch's generators, so two such datasets give
    the same tensors only on the same random states; `offset` is added to every image (a changed
    output). `bursts` {index: seconds} delays the first `load_image(index)` once, as another
    process's burst would. Collating a batch takes 0.4 ms.
    """
    import numpy as np
    import torch

    with offline():
        from ultralytics.data.augment import BaseTransform, Compose

    pending = dict(bursts or {})

    class Pull(BaseTransform):
        def __init__(self, dataset) -> None:
            self.dataset = dataset

        def __call__(self, labels):
            for index in (1, 2, 3):
                self.dataset.get_image_and_label(index)
            clock.work(0.003)
            return labels

    class Stamp(BaseTransform):
        def __call__(self, labels):
            clock.work(0.001)
            labels["img"] = labels["img"] + random.random() + float(np.random.rand()) + float(torch.rand(())) + offset
            return labels

    class Dataset:
        cache = None

        def __init__(self) -> None:
            self.buffer, self.ims, self.im_hw0, self.im_hw = [], [None] * 4, [None] * 4, [None] * 4
            self.transforms = Compose([Compose([Pull(self)]), Stamp()])

        def load_image(self, index):
            clock.work(0.002 + pending.pop(index, 0.0))
            return index

        def get_image_and_label(self, index):
            clock.work(0.0005)
            return {"img": torch.full((2, 2), float(self.load_image(index)))}

        def __getitem__(self, index):
            clock.work(0.0001)
            return self.transforms(self.get_image_and_label(index))

        def collate_fn(self, batch):
            clock.work(0.0004)
            return {"img": torch.stack([sample["img"] for sample in batch])}

    return Dataset(), Pull


def test_recorder_charges_nested_time_once() -> None:
    clock = FakeClock()
    recorder = Recorder(clock)

    def outer():
        clock.work(1.0)
        recorder.call("inner", clock.work, 2.0)
        recorder.call("inner", clock.work, 0.5)

    recorder.image(recorder.call, "outer", outer)
    recorder.image(clock.work, 4.0)
    assert recorder.images == [{"outer": 1.0, "inner": 2.5, "other": 0.0}, {"other": 4.0}]
    assert dict(recorder.calls) == {"outer": 1, "inner": 2, "other": 2}
    recorder.add("collate", 0.6, images=2)
    assert [image["collate"] for image in recorder.images] == [0.3, 0.3]
    assert recorder.calls["collate"] == 1


def test_mosaic_like_pulls_are_load_not_double_counted() -> None:
    clock = FakeClock()
    dataset, _ = _fake_dataset(clock)
    recorder = Recorder(clock)
    with instrument(dataset, recorder):
        recorder.image(dataset.__getitem__, 0)
    image = recorder.images[0]
    assert image == {"load_image": pytest.approx(0.008), "labels": pytest.approx(0.002), "Pull": pytest.approx(0.003),
                     "Stamp": pytest.approx(0.001), "other": pytest.approx(0.0001)}
    assert sum(image.values()) == pytest.approx(clock.now)  # every second once
    assert dict(recorder.calls) == {"load_image": 4, "labels": 4, "Pull": 1, "Stamp": 1, "other": 1}


# One image's work on the fake dataset: __getitem__ 0.1 ms, four images through labels (0.5 ms) and
# load_image (2 ms), Pull 3 ms, Stamp 1 ms.
IMAGE_S = 0.0001 + 4 * (0.0005 + 0.002) + 0.003 + 0.001
ROWS = {"load_image": 0.008, "labels": 0.002, "Pull": 0.003, "Stamp": 0.001, "other": 0.0001}
EXACT = 1e-12  # float rounding of sums of simulated seconds, nothing else


def _profile(bursts: tuple[dict[int, float], dict[int, float]] = ({}, {}), repeats: int = 1, offset: float = 0.0):
    """`profile_pass` over six images in batches of 4, on twins sharing one simulated clock."""
    clock = FakeClock()
    plain, _ = _fake_dataset(clock, bursts[0])
    timed, _ = _fake_dataset(clock, bursts[1], offset)
    return profile_pass((plain, timed), range(6), batch_size=4, seed=0, repeats=repeats, clock=clock)


def test_profile_pass_adds_up_to_the_untimed_loop_exactly() -> None:
    """Time moves only while the twins work: the timed rows of each image sum to its untimed time, to the
    last simulated second (nothing lost, nothing counted twice), and the outputs match bit for bit
    (each twin draws from its own copy of the random states)."""
    result = _profile()
    assert result.identical
    assert result.unprofiled_s == pytest.approx([IMAGE_S] * 6, abs=EXACT)
    for image, untimed in zip(result.images, result.unprofiled_s):
        assert sum(seconds for row, seconds in image.items() if row != "collate") == pytest.approx(untimed, abs=EXACT)
    # collation (0.4 ms a batch) is shared by the images of its batch: 4, then the last 2
    assert [image["collate"] for image in result.images] == pytest.approx([0.0001] * 4 + [0.0002] * 2, abs=EXACT)
    assert all(image == pytest.approx({**ROWS, "collate": image["collate"]}, abs=EXACT) for image in result.images)
    assert dict(result.calls) == {"load_image": 24, "labels": 24, "Pull": 6, "Stamp": 6, "other": 6, "collate": 2}


def test_profile_pass_keeps_each_images_fastest_pass() -> None:
    """A burst of another process only adds time: with a second pass, each image keeps its burst-free run."""
    bursts = ({4: 0.3}, {5: 0.5})  # once in the untimed twin's image 4, once in the timed twin's image 5
    once, twice = _profile(bursts, repeats=1), _profile(bursts, repeats=2)
    assert once.unprofiled_s[4] == pytest.approx(IMAGE_S + 0.3, abs=EXACT)
    assert once.images[5]["load_image"] == pytest.approx(0.508, abs=EXACT)
    assert twice.unprofiled_s == pytest.approx([IMAGE_S] * 6, abs=EXACT)
    assert [image["load_image"] for image in twice.images] == pytest.approx([0.008] * 6, abs=EXACT)
    assert twice.identical and dict(twice.calls) == dict(once.calls)  # the calls of one pass, not of both


def test_profile_pass_notices_a_changed_output() -> None:
    assert not _profile(offset=0.5).identical


def test_instrument_restores_everything() -> None:
    clock = FakeClock()
    dataset, pull_type = _fake_dataset(clock)
    inner = dataset.transforms.transforms[0]
    originals = [inner.transforms[0], dataset.transforms.transforms[1]]
    with instrument(dataset, Recorder(clock)):
        wrapped = inner.transforms[0]
        assert type(wrapped) is Timed and isinstance(wrapped, pull_type)  # isinstance still holds
        assert wrapped.dataset is dataset  # attributes pass through
        assert "load_image" in vars(dataset)
    assert [inner.transforms[0], dataset.transforms.transforms[1]] == originals
    assert dataset.transforms.transforms[0] is inner
    assert "load_image" not in vars(dataset) and "get_image_and_label" not in vars(dataset)
    before = clock.now
    dataset[0]
    assert clock.now - before == pytest.approx(0.0141)  # the same work, now untimed


def test_instrument_restores_after_an_error() -> None:
    clock = FakeClock()
    dataset, _ = _fake_dataset(clock)
    with pytest.raises(RuntimeError, match="boom"), instrument(dataset, Recorder(clock)):
        raise RuntimeError("boom")
    assert all(type(t) is not Timed for t in dataset.transforms.transforms[0].transforms)
    assert "load_image" not in vars(dataset)


def test_albumentations_still_seeds_wrapped_transforms() -> None:
    """Albumentations propagates seeds only to instances of its own classes: the proxy must pass as one."""
    import albumentations as A

    blur = A.Blur(p=1.0)
    compose = A.Compose([blur])
    compose.transforms[0] = Timed(blur, "Albumentations: Blur", Recorder())
    compose.set_random_seed(123)
    reference = A.Blur(p=1.0)
    reference.set_random_seed(123)
    assert blur.py_random.random() == reference.py_random.random()


def test_transform_names() -> None:
    with offline():
        from ultralytics.data.augment import RandomFlip, RandomHSV

    assert transform_name(RandomFlip(direction="vertical", p=0.0)) == "RandomFlip(vertical)"
    assert transform_name(RandomHSV()) == "RandomHSV"
