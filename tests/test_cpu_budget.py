"""A CPU memory budget bounds the training process: baseline + trainer's share + each step's growth.

Exact accounting with a fake RSS reader: no test here reads a clock or depends on this machine's
memory figures, except the last two, which check only that the real readers move the right way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from visionbatch.fit.plan import WorkloadSummary
from visionbatch.fit.planner import plan_batch
from visionbatch.fit.probes.cpu import (
    EPOCH_HEAP_SHARE,
    LABEL_PLOTS_BYTES,
    TRAINER_OBJECTS_BYTES,
    CpuProbe,
    TrainerShare,
    model_bytes,
    plots_bytes,
    trainer_share,
)

MIB = 1 << 20
GIB = 1 << 30


class FakeRss:
    """The process's resident memory, scripted: `grow(by)` is what a step does to the peak."""

    def __init__(self, now_bytes: int, resettable: bool = True) -> None:
        self.now_bytes = now_bytes
        self.high = now_bytes
        self.resettable = resettable
        self.windows = 0

    def now(self) -> int:
        return self.now_bytes

    def peak(self) -> int:
        return self.high

    def start_window(self) -> bool:
        self.windows += 1
        if self.resettable:
            self.high = self.now_bytes
        return self.resettable

    def grow(self, by_bytes: int) -> None:
        self.high = max(self.high, self.now_bytes + by_bytes)


class GrowthRunner:
    """A workload whose steps grow the fake RSS by a linear law (train and validation)."""

    def __init__(self, rss: FakeRss, train: tuple[int, int], val: tuple[int, int]) -> None:
        self.rss, self.train, self.val = rss, train, val

    def train_step(self, batch_size, boundary=None):
        self.rss.grow(self.train[0] + self.train[1] * batch_size)
        return 0.0

    def val_step(self, batch_size):
        self.rss.grow(self.val[0] + self.val[1] * batch_size)
        return 0.0

    def time_steps(self, batch_size, steps=3):
        return [0.010 + 0.001 * batch_size] * steps  # exact: the largest batch is the fastest

    def persistent(self):
        return []


def summary() -> WorkloadSummary:
    return WorkloadSummary(model="yolo11n.yaml", task="detect", nc=5, imgsz=320, multi_scale=0.0, labels_per_image=10,
                           val_labels_per_image=10, oom_risk=None, label_density="forced", amp=False,
                           amp_dtype="float16", optimizer="AdamW", ema=True, dataset_images=10_000)


SHARE = TrainerShare(objects_bytes=70 * MIB, validation_bytes=0, plots_bytes=90 * MIB, model_bytes=10 * MIB,
                     train_images=160, aspect=0.75, imgsz=320)


def test_the_baseline_is_the_measured_rss_plus_the_trainers_share() -> None:
    rss = FakeRss(700 * MIB)
    probe = CpuProbe(2 * GIB, name="Test CPU", trainer=SHARE, rss=rss)
    capacity = probe.capacity()
    assert probe.baseline_rss == 700 * MIB and rss.windows == 1  # read after a collect and trim
    assert capacity.context_bytes == (700 + 70 + 90 + 10) * MIB
    assert (capacity.device, capacity.total_bytes, capacity.used_by_others_bytes, capacity.usable_bytes) == (
        "cpu", None, 0, 2 * GIB)


def test_a_reading_is_baseline_plus_the_steps_growth_plus_the_mosaic_buffer() -> None:
    rss = FakeRss(700 * MIB)
    probe = CpuProbe(2 * GIB, trainer=SHARE, rss=rss)
    context = probe.capacity().context_bytes
    image = 3 * 320 * 240  # long side 320, aspect 0.75, uint8 HWC
    assert EPOCH_HEAP_SHARE == 0.2  # what the heap gains over epochs, on top of a lone step's growth
    train = probe.measure(lambda: rss.grow(300 * MIB), 4, "train")
    assert train.allocated_bytes == 300 * MIB
    assert train.peak_bytes == context + 360 * MIB + 32 * image  # 8 x batch 4 images buffered
    # validation runs at twice the training batch: the buffer is the training batch's
    val = probe.measure(lambda: rss.grow(100 * MIB), 8, "val")
    assert val.peak_bytes == context + 120 * MIB + 32 * image and val.allocated_bytes == 100 * MIB
    # the buffer never holds more than the training images (nor 1000)
    big = probe.measure(lambda: rss.grow(300 * MIB), 64, "train")
    assert big.peak_bytes == context + 360 * MIB + 160 * image
    assert probe.exact_peaks and rss.windows == 4  # a new peak window before every step


def test_a_peak_the_os_cannot_reset_is_flagged() -> None:
    rss = FakeRss(700 * MIB, resettable=False)
    probe = CpuProbe(2 * GIB, trainer=TrainerShare(validation_bytes=0, plots_bytes=0), rss=rss)
    probe.measure(lambda: rss.grow(MIB), 1, "train")  # reads the capacity itself when not yet read
    assert probe.baseline_rss == 700 * MIB and not probe.exact_peaks


def test_cache_ram_holds_every_image_and_no_mosaic_buffer() -> None:
    share = TrainerShare(objects_bytes=0, validation_bytes=0, plots_bytes=0, train_images=160, cached_images=200,
                         aspect=1.0, imgsz=320)
    assert share.fixed_bytes() == 200 * 3 * 320 * 320
    assert share.buffer_bytes(16) == 0
    assert share.fixed_bytes(640) == 200 * 3 * 640 * 640  # a sweep's size


def test_a_cpu_fit_shrinks_by_the_baseline() -> None:
    """aim 0.9 x 4 GiB = 3686.4 MiB; steps grow 100 MiB + 50 MiB/image, budgeted x1.2: (3686.4 / 1.2 - 100)
    / 50 -> b = 59 with no baseline; with a 1000 MiB process and a 369 MiB trainer share (objects 72,
    validation 192, plots 95, model 10), ((3686.4 - 1369) / 1.2 - 100) / 50 -> b = 36."""
    law = dict(train=(100 * MIB, 50 * MIB), val=(50 * MIB, 10 * MIB))
    none = TrainerShare(objects_bytes=0, validation_bytes=0, plots_bytes=0)  # no training images: no mosaic buffer
    bare = FakeRss(0)
    plan = plan_batch(CpuProbe(4 * GIB, trainer=none, rss=bare), GrowthRunner(bare, **law), 0.9, 10_000, summary())
    assert plan.max_batch_size == plan.batch_size == 59 and plan.context_bytes == 0

    rss = FakeRss(1000 * MIB)
    share = TrainerShare(objects_bytes=72 * MIB, validation_bytes=192 * MIB, plots_bytes=95 * MIB, model_bytes=10 * MIB)
    plan = plan_batch(CpuProbe(4 * GIB, trainer=share, rss=rss), GrowthRunner(rss, **law), 0.9, 10_000, summary())
    assert plan.max_batch_size == plan.batch_size == 36
    assert plan.context_bytes == 1369 * MIB and plan.usable_bytes == 4 * GIB
    assert plan.measured_bytes == (1369 + 1.2 * (100 + 50 * 36)) * MIB <= plan.budget_bytes
    assert plan.val_measured_bytes == (1369 + 1.2 * (50 + 10 * 72)) * MIB
    assert plan.sample(36, "train").allocated_bytes == (100 + 50 * 36) * MIB  # the step's own growth


def test_the_fit_output_says_what_a_cpu_budget_counts() -> None:
    from visionbatch.cli.fit import FitRun, show
    from visionbatch.fit.probes.simulated import SimulatedProbe

    rss = FakeRss(1000 * MIB)
    share = TrainerShare(objects_bytes=72 * MIB, validation_bytes=192 * MIB, plots_bytes=95 * MIB, model_bytes=10 * MIB)
    plan = plan_batch(CpuProbe(4 * GIB, trainer=share, rss=rss),
                      GrowthRunner(rss, (100 * MIB, 50 * MIB), (50 * MIB, 10 * MIB)), 0.9, 10_000, summary())
    text = show(FitRun(plan, "runs/fit/x", ("runs/fit/x/plan.json",)))
    [line] = [x for x in text.splitlines() if x.startswith("counted:")]
    assert line.startswith("counted: the training process's resident memory: a measured baseline of 1.34 GiB "
                           "(Python, torch, Ultralytics, model, optimizer; with the trainer, its loader and what "
                           "validation leaves), plus each step's measured growth (+20% for the heap over epochs) "
                           "and the mosaic buffer")
    assert "workers=0" in line and plan.to_dict()["counted"] == line.removeprefix("counted: ")
    gpu = plan_batch(SimulatedProbe(lambda b, phase: GIB + b * MIB, total_bytes=16 * GIB),
                     GrowthRunner(rss, (0, 0), (0, 0)), 0.9, 100, summary())
    assert "counted:" not in show(FitRun(gpu, "runs/fit/y", ("runs/fit/y/plan.json",)))


def test_help_says_what_a_cpu_budget_counts() -> None:
    from visionbatch.keys import help_block

    text = " ".join(help_block("fit").split())
    assert "on a CPU it bounds the whole training process's resident memory: a measured baseline" in text


def test_the_trainers_share_follows_plots_cache_and_the_images(small_shapes: Path) -> None:
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    with offline():
        default = trainer_share(prepare(small_shapes, {"imgsz": 64}))
        bare = trainer_share(prepare(small_shapes, {"imgsz": 96, "plots": False, "cache": "ram"}))
        half = trainer_share(prepare(small_shapes, {"imgsz": 64, "fraction": 0.5}))
    assert (default.objects_bytes, default.plots_bytes, default.model_bytes) == (TRAINER_OBJECTS_BYTES,
                                                                                 plots_bytes(5), 0)
    assert plots_bytes(5) > LABEL_PLOTS_BYTES and plots_bytes(80) > plots_bytes(5)  # validation plots per class
    assert default.train_images == 8 and default.cached_images == 0 and default.imgsz == 64
    assert 0.5 < default.aspect < 1.0  # the shipped images are 4:3 and square
    assert default.buffer_bytes(1) == 8 * default.image_bytes() and default.buffer_bytes(2) == 8 * default.image_bytes()
    assert bare.plots_bytes == 0 and bare.cached_images == 12 and bare.buffer_bytes(4) == 0 and bare.imgsz == 96
    assert half.train_images == 4


def test_the_model_copy_counts_weights_and_buffers() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.BatchNorm1d(5))
    # weights 50 + 5, BatchNorm 5 + 5 and running mean and variance 5 + 5 (float32), batches seen (int64)
    assert model_bytes(model) == (55 + 10 + 10) * 4 + 8
    probe = CpuProbe(GIB, trainer=TrainerShare(objects_bytes=0, validation_bytes=0, plots_bytes=0), rss=FakeRss(0))
    probe.count_model(model)
    assert probe.capacity().context_bytes == 308


def test_the_real_rss_reader_sees_a_step_and_starts_a_new_window() -> None:
    from visionbatch.devices.memory import ProcessRss, trim_heap

    rss = ProcessRss()
    if not rss.start_window():
        pytest.skip("this OS cannot reset the peak RSS")
    before = rss.now()
    block = bytearray(64 * MIB)
    block[:: 4096] = b"x" * len(range(0, len(block), 4096))  # touch every page
    assert rss.peak() >= before + 60 * MIB
    del block
    assert rss.start_window() and rss.peak() < before + 32 * MIB  # the freed block is not this window's
    assert isinstance(trim_heap(), bool)
