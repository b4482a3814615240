"""visionbatch.augment.timing: exclusive timers on a simulated clock, wrappers that leave no trace."""

from __future__ import annotations

import pytest

from visionbatch.augment.timing import Recorder, _Timed, instrument, transform_name
from visionbatch.ultralytics_compat import offline


class FakeClock:
    """Time moves only when the code under test says it works: every duration is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


def _fake_dataset(clock: FakeClock):
    """A dataset shaped like Ultralytics': a chain whose first transform pulls three more images through
    `get_image_and_label` -> `load_image`, as Mosaic does, nested in an inner Compose."""
    with offline():
        from ultralytics.data.augment import BaseTransform, Compose

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
            return labels

    class Dataset:
        cache = None

        def __init__(self) -> None:
            self.buffer, self.ims, self.im_hw0, self.im_hw = [], [None] * 4, [None] * 4, [None] * 4
            self.transforms = Compose([Compose([Pull(self)]), Stamp()])

        def load_image(self, index):
            clock.work(0.002)
            return index

        def get_image_and_label(self, index):
            clock.work(0.0005)
            return {"img": self.load_image(index)}

        def __getitem__(self, index):
            clock.work(0.0001)
            return self.transforms(self.get_image_and_label(index))

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


def test_instrument_restores_everything() -> None:
    clock = FakeClock()
    dataset, pull_type = _fake_dataset(clock)
    inner = dataset.transforms.transforms[0]
    originals = [inner.transforms[0], dataset.transforms.transforms[1]]
    with instrument(dataset, Recorder(clock)):
        wrapped = inner.transforms[0]
        assert type(wrapped) is _Timed and isinstance(wrapped, pull_type)  # isinstance still holds
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
    assert all(type(t) is not _Timed for t in dataset.transforms.transforms[0].transforms)
    assert "load_image" not in vars(dataset)


def test_albumentations_still_seeds_wrapped_transforms() -> None:
    """Albumentations propagates seeds only to instances of its own classes: the proxy must pass as one."""
    import albumentations as A

    blur = A.Blur(p=1.0)
    compose = A.Compose([blur])
    compose.transforms[0] = _Timed(blur, "Albumentations: Blur", Recorder())
    compose.set_random_seed(123)
    reference = A.Blur(p=1.0)
    reference.set_random_seed(123)
    assert blur.py_random.random() == reference.py_random.random()


def test_transform_names() -> None:
    with offline():
        from ultralytics.data.augment import RandomFlip, RandomHSV

    assert transform_name(RandomFlip(direction="vertical", p=0.0)) == "RandomFlip(vertical)"
    assert transform_name(RandomHSV()) == "RandomHSV"
