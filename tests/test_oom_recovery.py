"""Out-of-memory recovery in `visionbatch train`: real Ultralytics training on this CPU, on a simulated
card that raises torch's real OutOfMemoryError at a chosen epoch, step and phase.

The card's law is exact (a step at batch b needs FIXED + PER_IMAGE x b), and its error message is
torch's own wording, so the recovery re-plans from the reading as it would on a GPU.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from visionbatch.devices.oom import read_oom
from visionbatch.errors import TrainingOutOfMemoryError
from visionbatch.train.recovery import batch_after_oom, keep_effective
from visionbatch.train.run import SUMMARY_NAME, train
from visionbatch.ultralytics.offline import offline

MIB = 1 << 20
FIXED, PER_IMAGE, TOTAL, TRIED = 100 * MIB, 60 * MIB, 300 * MIB, 50 * MIB
TINY = {"imgsz": 64, "batch": 4, "plots": False, "val": True, "workers": 0}


def torch_message(batch: int) -> str:
    """torch 2.x's CUDA out-of-memory message for a step at `batch` on the simulated card."""
    in_use = FIXED + PER_IMAGE * batch - TRIED
    return (f"CUDA out of memory. Tried to allocate {TRIED / MIB:.2f} MiB. GPU 0 has a total capacity of "
            f"{TOTAL / MIB:.2f} MiB of which 0 bytes is free. Including non-PyTorch memory, this process has "
            f"{in_use / MIB:.2f} MiB memory in use. Of the allocated memory {(in_use - 20 * MIB) / MIB:.2f} MiB is "
            f"allocated by PyTorch, and 4.00 MiB is reserved by PyTorch but unallocated. If reserved but unallocated "
            f"memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")


class SimulatedCard:
    """Raises torch.OutOfMemoryError once at each (phase, epoch, step) in `events` (epochs 1-based)."""

    def __init__(self, events: list[tuple[str, int, int]]) -> None:
        self.pending = list(events)
        self.epoch = 0
        self.steps: dict[tuple[int, int], int] = {}
        self.raised: list[tuple[str, int, int, int]] = []

    def step(self, phase: str, owner: object, epoch: int, batch: int) -> None:
        import torch

        key = (id(owner), epoch)
        step = self.steps[key] = self.steps.get(key, -1) + 1
        if (phase, epoch, step) in self.pending:
            self.pending.remove((phase, epoch, step))
            self.raised.append((phase, epoch, step, batch))
            raise torch.OutOfMemoryError(torch_message(batch))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with offline():
            from ultralytics.models.yolo.detect import DetectionValidator

            from visionbatch.ultralytics.trainers import AtomicDetectionTrainer
        card = self
        train_step, val_step = AtomicDetectionTrainer.preprocess_batch, DetectionValidator.preprocess

        def preprocess_batch(trainer, batch):
            card.epoch = trainer.epoch + 1
            card.step("train", trainer, card.epoch, len(batch["img"]))
            return train_step(trainer, batch)

        def preprocess(validator, batch):
            card.step("val", validator.dataloader, card.epoch, len(batch["img"]))
            return val_step(validator, batch)

        monkeypatch.setattr(AtomicDetectionTrainer, "preprocess_batch", preprocess_batch)
        monkeypatch.setattr(DetectionValidator, "preprocess", preprocess)


def test_the_simulated_message_reads_as_the_card_law() -> None:
    reading = read_oom(RuntimeError(torch_message(4)))
    assert reading.needed_bytes() == FIXED + PER_IMAGE * 4
    assert reading.total_bytes == TOTAL and reading.tried_bytes == TRIED and reading.free_bytes == 0


def test_the_recovery_arithmetic_on_the_card() -> None:
    # no plan: the default memory fraction of what the process could have, in use + free = 290 MiB at batch 4
    needed, room = read_oom(RuntimeError(torch_message(4))).room_bytes()
    assert (needed, room) == (FIXED + PER_IMAGE * 4, FIXED + PER_IMAGE * 4 - TRIED)
    # 340 MiB needed at 4: 85 MiB per image (no fixed part known) -> 3 fit 0.9 x 290 = 261 MiB
    assert batch_after_oom(4, needed, int(0.9 * room)) == 3
    assert batch_after_oom(3, FIXED + PER_IMAGE * 3, int(0.9 * 230 * MIB)) == 2  # 280 MiB at 3: 93.3 per image -> 2
    assert keep_effective(24, 3) == (3, 8) and keep_effective(24, 2) == (2, 12)
    # a known fixed part changes the slope: (261 - 100) / 60 = 2.7 -> 2
    assert batch_after_oom(4, FIXED + PER_IMAGE * 4, int(0.9 * room), fixed_bytes=FIXED) == 2


@pytest.mark.slow
def test_no_epoch_is_lost_in_training_validation_or_after_close_mosaic(
        make_shapes, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_shapes(n_train=8, n_val=8)  # validation at 2 x 4 = 8 images: one batch of 8
    card = SimulatedCard([("val", 1, 0), ("train", 2, 1), ("train", 3, 0)])
    card.install(monkeypatch)
    result = train(data, epochs=3, close_mosaic=1, **TINY)  # mosaic is off in epoch 3

    assert result.status == "completed"
    assert card.pending == [] and [r[3] for r in card.raised] == [8, 4, 3]
    # 8 images at batch 4: 2 steps an epoch, so Ultralytics caps accumulate 16 at 2 x 3 epochs = 6: 24 a step
    assert result.effective_batch == 24
    assert [(e.epoch, e.batch_size, e.accumulate, e.mosaic) for e in result.epochs] == \
        [(1, 4, 6, True), (2, 3, 8, True), (3, 2, 12, False)]
    assert all(e.batch_size * e.accumulate == 24 for e in result.epochs)
    assert all(math.isfinite(v) for e in result.epochs for v in e.losses.values()) and result.epochs[2].losses

    val, mid_epoch, after_close = result.recoveries
    assert (val.phase, val.epoch, val.old_batch, val.new_batch, val.resumed_from) == \
        ("val", 1, 8, 4, "validation again")
    assert val.peak_bytes == FIXED + PER_IMAGE * 8
    assert (mid_epoch.phase, mid_epoch.epoch, mid_epoch.iteration, mid_epoch.mosaic) == ("train", 2, 1, True)
    assert (mid_epoch.old_batch, mid_epoch.new_batch, mid_epoch.old_accumulate, mid_epoch.new_accumulate) == (4, 3, 6, 8)
    assert mid_epoch.peak_bytes == FIXED + PER_IMAGE * 4 and mid_epoch.effective_batch == 24
    assert mid_epoch.resumed_from == "weights/last.pt (epoch 1 complete)"
    assert (after_close.epoch, after_close.iteration, after_close.mosaic) == (3, 0, False)
    assert (after_close.old_batch, after_close.new_batch, after_close.new_accumulate) == (3, 2, 12)
    assert after_close.resumed_from == "weights/last.pt (epoch 2 complete)"

    save_dir = Path(result.save_dir)
    with open(save_dir / "results.csv", newline="") as handle:  # Ultralytics' own history: each epoch once
        rows = list(csv.DictReader(handle))
    assert [int(float(row["epoch"])) for row in rows] == [1, 2, 3]
    assert all(math.isfinite(float(row["train/box_loss"])) for row in rows)
    summary = json.loads((save_dir / SUMMARY_NAME).read_text())
    assert [r["phase"] for r in summary["recoveries"]] == ["val", "train", "train"]
    assert summary["batch_size"] == 2 and summary["effective_batch"] == 24
    assert sorted(p.name for p in (save_dir / "weights").iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.slow
def test_an_oom_before_any_epoch_restarts_and_the_retries_are_bounded(
        small_shapes, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = SimulatedCard([("train", 1, 0), ("train", 2, 0)])
    card.install(monkeypatch)
    with pytest.raises(TrainingOutOfMemoryError) as raised:
        train(small_shapes, epochs=2, oom_retries=1, **TINY)
    message = str(raised.value)
    assert "\n" not in message and "after 1 recoveries (oom_retries=1)" in message and "epoch 2, step 1" in message
    summary = json.loads((workdir / "runs" / "detect" / "train" / SUMMARY_NAME).read_text())
    assert summary["status"] == "failed"
    (first,) = summary["recoveries"]
    # 3 would fit, but 16 = 4 x 4 (accumulate capped at 2 steps x 2 epochs) is kept exactly by 2 x 8
    assert (first["epoch"], first["iteration"], first["old_batch"], first["new_batch"]) == (1, 0, 4, 2)
    assert (first["new_accumulate"], first["effective_batch"], summary["effective_batch"]) == (8, 16, 16)
    assert first["resumed_from"] == "the start (no epoch was complete)"
    assert [e["epoch"] for e in summary["epochs"]] == [1]  # the restarted run's epoch 1 completed, in the same folder
    assert not (workdir / "runs" / "detect" / "train2").exists()


@pytest.mark.slow
def test_other_errors_are_not_recovered(small_shapes, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with offline():
        from visionbatch.ultralytics.trainers import AtomicDetectionTrainer

    def broken(trainer, batch):
        raise RuntimeError("CUDA error: an illegal memory access was encountered (out of memory?)")

    monkeypatch.setattr(AtomicDetectionTrainer, "preprocess_batch", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        train(small_shapes, epochs=1, **TINY)
    summary = json.loads((workdir / "runs" / "detect" / "train" / SUMMARY_NAME).read_text())
    assert summary["recoveries"] == [] and summary["status"] == "failed"


@pytest.mark.slow
def test_a_fitted_run_replans_from_the_reading_and_forgets_its_cached_plan(
        small_shapes, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from test_plan_cache import simulated_plan

    from visionbatch.fit import api, cache

    plan = simulated_plan(dataset_images=8)  # a plan that believes more fits than the card below allows
    monkeypatch.setattr(api, "fit_job", lambda job, options, progress=None: plan)
    forgotten: list = []
    monkeypatch.setattr(cache, "discard_plan", lambda job, options, device: forgotten.append(device) or True)
    card = SimulatedCard([("train", 1, 0)])
    card.install(monkeypatch)
    result = train(small_shapes, epochs=1, memory_budget="2GiB", **{**TINY, "batch": "auto"})

    assert result.status == "completed" and forgotten == [plan.device]
    (recovery,) = result.recoveries
    old = min(plan.batch_size, 8)  # Ultralytics' batch never exceeds the training images
    assert recovery.old_batch == plan.batch_size
    needed = FIXED + PER_IMAGE * old  # what the card's message says the failed step needed
    fits = batch_after_oom(plan.batch_size, needed, plan.budget_bytes, plan.curve.fixed_bytes)
    assert (recovery.new_batch, recovery.new_accumulate) == keep_effective(result.effective_batch, fits)
    assert recovery.peak_bytes == needed and result.batch_size == recovery.new_batch
    assert dataclasses.asdict(result.batch_plan)["batch_size"] == plan.batch_size  # the plan as fitted stays on record
