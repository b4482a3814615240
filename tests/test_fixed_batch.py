"""The fixed-batch question: "will batch b fit?" answered without a search (fit_batch(batch_size=b), fit batch=b)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_fit import NullRunner, linear

from visionbatch.fit.plan import BatchCheck
from visionbatch.fit.planner import check_batch, plan_batch
from visionbatch.fit.probes.simulated import SimulatedProbe
from visionbatch.units import GIB, MIB, human_bytes


def test_a_batch_that_fits_reports_both_peaks_and_the_exact_margin() -> None:
    probe = SimulatedProbe(linear(GIB, 100 * MIB, 512 * MIB, 10 * MIB), total_bytes=8 * GIB)
    check = check_batch(probe, NullRunner(), 16, 0.9, workload=None)
    assert isinstance(check, BatchCheck) and check.fits and check.measured
    assert (check.batch_size, check.val_batch_size) == (16, 32)
    assert (check.train.batch_size, check.train.phase, check.val.batch_size, check.val.phase) == (16, "train", 32, "val")
    assert check.train.peak_bytes == GIB + 16 * 100 * MIB and check.val.peak_bytes == 512 * MIB + 32 * 10 * MIB
    assert check.budget_bytes == int(0.9 * 8 * GIB)
    # training stays under half the card, so Ultralytics keeps its cache: validation's blocks stay beside training's
    assert check.after_validation_bytes == check.train.peak_bytes + check.val.reserved_bytes
    assert check.margin_bytes == check.budget_bytes - check.after_validation_bytes
    assert check.reason.startswith("batch 16 fits 0.9 x 8.00 GiB = 7.20 GiB: training measured 2.56 GiB, validation "
                                   "at 32 832 MiB, together 3.38 GiB once validation has run")


def test_above_half_the_card_ultralytics_empties_its_cache_between_phases() -> None:
    probe = SimulatedProbe(linear(GIB, 200 * MIB, GIB, 40 * MIB), total_bytes=8 * GIB)
    check = check_batch(probe, NullRunner(), 16, 0.9, workload=None)  # training 4.1 GiB: above half of 8
    assert check.after_validation_bytes == max(check.train.peak_bytes, check.val.peak_bytes)
    assert check.margin_bytes == check.budget_bytes - check.peak_bytes and check.fits
    below = check_batch(SimulatedProbe(linear(GIB, 100 * MIB, 5 * GIB, 10 * MIB), total_bytes=8 * GIB),
                        NullRunner(), 16, 0.9, workload=None)  # each fits alone; together 8.9 GiB do not
    assert below.train.peak_bytes < below.budget_bytes and below.val.peak_bytes < below.budget_bytes
    assert not below.fits and below.margin_bytes == below.budget_bytes - below.after_validation_bytes < 0


def test_validation_at_twice_the_batch_can_be_what_does_not_fit() -> None:
    probe = SimulatedProbe(linear(GIB, 10 * MIB, GIB, 300 * MIB), total_bytes=16 * GIB)
    check = check_batch(probe, NullRunner(), 16, 0.5, workload=None)  # budget 8 GiB; validation at 32 needs 10.4
    assert not check.fits and check.train.peak_bytes < check.budget_bytes < check.val.peak_bytes
    assert check.margin_bytes == check.budget_bytes - max(check.val.peak_bytes, check.after_validation_bytes) < 0
    assert "does not fit" in check.reason and "over" in check.reason


@pytest.mark.parametrize("train_per_image, fits, words", [
    (101 * MIB, True, "a rerun can answer no; leave at least that much room to be sure"),
    (103 * MIB, False, "a rerun can answer yes"),
])
def test_a_margin_within_the_rerun_spread_says_so(train_per_image: int, fits: bool, words: str) -> None:
    """Where the probe's readings move between identical runs (a CPU's resident memory), a yes or no closer to the
    budget than that says it can flip on a rerun; a wide margin says nothing."""
    probe = SimulatedProbe(linear(0, train_per_image, 0, MIB), total_bytes=2 * GIB)
    probe.rerun_spread_bytes = 32 * MIB
    budget = int(0.8 * 2 * GIB)  # 1638.4 MiB; training at 16 needs 1616 or 1648 MiB
    check = check_batch(probe, NullRunner(), 16, 0.8, workload=None)
    assert check.fits is fits and abs(check.margin_bytes) < 32 * MIB and check.budget_bytes == budget
    assert len(check.warnings) == 1 and check.warnings[0].startswith(
        f"the margin, {human_bytes(check.margin_bytes)}, is within the 32.0 MiB that the same step's reading moves")
    assert check.warnings[0].endswith(words)
    wide = check_batch(probe, NullRunner(), 8, 0.8, workload=None)
    assert wide.fits and wide.warnings == ()
    assert check_batch(SimulatedProbe(linear(0, train_per_image, 0, MIB), total_bytes=2 * GIB), NullRunner(), 16,
                       0.8, workload=None).warnings == ()  # readings that repeat exactly: nothing to say


@pytest.mark.parametrize("train_need, val_need, words", [
    (20 * GIB, 0, "training ran out of memory"),
    (GIB, 20 * GIB, "validation at 8 ran out of memory"),
])
def test_an_out_of_memory_step_is_a_no_without_a_margin(train_need: int, val_need: int, words: str) -> None:
    probe = SimulatedProbe(lambda b, phase: train_need if phase == "train" else val_need, total_bytes=8 * GIB)
    check = check_batch(probe, NullRunner(), 4, 0.9, workload=None)
    assert not check.fits and check.margin_bytes is None and check.peak_bytes is None and words in check.reason
    assert (check.val is None) == (train_need > 8 * GIB)  # no validation after training ran out


def test_the_check_agrees_with_the_search_on_every_batch() -> None:
    """The largest batch the planner verifies is the largest the check calls a yes: one rule, `batch_fits`."""
    law = linear(900 * MIB, 37 * MIB, 300 * MIB, 21 * MIB)
    plan = plan_batch(SimulatedProbe(law, total_bytes=6 * GIB), NullRunner(), 0.8, dataset_images=10_000)
    answers = {b: check_batch(SimulatedProbe(law, total_bytes=6 * GIB), NullRunner(), b, 0.8, workload=None).fits
               for b in (1, plan.max_batch_size - 1, plan.max_batch_size, plan.max_batch_size + 1)}
    assert answers == {1: True, plan.max_batch_size - 1: True, plan.max_batch_size: True,
                       plan.max_batch_size + 1: False}


def test_fit_batch_size_answers_on_a_cpu_budget(small_shapes: Path) -> None:
    """Real CPU steps: the check measures training at b and validation at 2b, as the search's probes do."""
    from visionbatch.fit.api import fit_batch

    yes = fit_batch(small_shapes, imgsz=64, memory_budget="4GiB", batch_size=2)
    assert isinstance(yes, BatchCheck) and yes.fits and yes.measured and yes.device == "cpu"
    assert yes.train.ok and yes.val.ok and yes.val.batch_size == 4 and 0 < yes.margin_bytes < yes.budget_bytes
    assert yes.workload.labels_per_batch >= yes.workload.labels_per_image >= 1
    assert yes.warnings == () and yes.after_validation_bytes is None  # no CUDA cache on a CPU
    # what the yes rests on goes with it, in Python and in the JSON: the whole process, its baseline measured
    assert yes.counted.startswith(f"the training process's resident memory: a measured baseline of "
                                  f"{human_bytes(yes.context_bytes)} (")
    assert yes.to_dict()["counted"] == yes.counted
    no = fit_batch(small_shapes, imgsz=64, target="2GiB", batch_size=16, model="yolo11x.yaml")
    assert not no.fits and no.margin_bytes < 0
    assert no.warnings[0] == ("batch 16 is more than the 8 training images: the run's batches hold 8, and that is "
                              "what was measured")
    assert (no.train.batch_size, no.val.batch_size) == (8, 4)  # the 8 training and 4 validation images


def test_fit_cli_batch_is_a_yes_or_no_with_its_exit_code(capsys, small_shapes: Path, workdir: Path) -> None:
    from visionbatch.cli import main

    assert main(["fit", str(small_shapes), "imgsz=64", "batch=2", "target=gtx1050", "name=yes"]) == 0
    out = capsys.readouterr().out
    assert "batch 2 fits: YES (margin " in out and "PREDICTED, not measured" in out
    check = json.loads((workdir / "runs" / "fit" / "yes" / "plan.json").read_text())
    assert check["fits"] is True and check["batch_size"] == 2 and check["val"]["batch_size"] == 4
    assert check["train"]["reserved_bytes"] < check["train"]["peak_bytes"]  # reserved leaves the context out
    assert not (workdir / "runs" / "fit" / "yes" / "memory_curve.png").exists()  # no curve: two readings

    assert main(["fit", str(small_shapes), "imgsz=640", "batch=8", "model=yolo11x.yaml", "target=gtx1050-2gb",
                 "--json"]) == 3
    result = json.loads(capsys.readouterr().out)
    assert result["plan"]["fits"] is False and result["plan"]["margin_bytes"] < 0
    assert result["plan"]["counted"].startswith("torch's reserved memory at each step's peak, traced on this "
                                                "machine's CPU for the target, plus a CUDA context of ")
    assert check["counted"].startswith("torch's reserved memory")  # plan.json says it too
