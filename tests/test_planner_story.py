"""The plan tells one story: the chosen batch's reading against the curve, batches the curve allows
that no step ran, and the picture of both (issue 11's follow-up: 'predicted 2.49 GiB ± 26 MiB',
measured 2.66; batch 48 predicted under the budget, 47 called the largest).

A simulated CPU budget (`SimulatedBudget`: no card size, so no cache rule; a need above the budget
runs out of memory) and a workload with nothing to time (`UntimedRunner`), so the answer is the
largest batch that fits and the reason is the memory one.
"""

from __future__ import annotations

from visionbatch.fit.planner import plan_batch
from visionbatch.fit.plot import batch_plan_figure, outside_band
from visionbatch.fit.probes.simulated import SimulatedBudget, UntimedRunner

MIB = 1 << 20
GIB = 1 << 30


def step_above_the_curve(batch: int, phase: str) -> float:
    """Training 1000 MiB + 30 MiB/image, with a real step of 170 MiB from batch 40 to 63 (above it the
    readings fall back: batch 65 reads less than 62); validation fails from batch 130 (65 x 2)."""
    if phase == "train":
        return (1000 + 30 * batch + (170 if 40 <= batch <= 63 else 0)) * MIB
    return (1000 + 10 * batch + (1000 if batch >= 130 else 0)) * MIB


def plan_with_a_step_above_the_curve():
    probe = SimulatedBudget(step_above_the_curve, total_bytes=4 * GIB, noise_floor_bytes=4 * MIB)
    plan = plan_batch(probe, UntimedRunner(), 0.75, dataset_images=10_000, max_probes=6)
    assert [s.batch_size for s in plan.samples if s.phase == "train"] == [1, 2, 17, 68, 62, 65]
    return plan


def test_a_reading_off_the_curve_is_said_to_decide() -> None:
    plan = plan_with_a_step_above_the_curve()
    assert (plan.batch_size, plan.max_batch_size) == (62, 62)
    # the curve leaves 62 and 65 out (65 read less): it predicts 2.79 GiB ± 4 MiB where 2.96 GiB was read
    assert plan.measured_bytes == (1000 + 30 * 62 + 170) * MIB
    assert (plan.predicted_bytes, plan.predicted_uncertainty_bytes) == ((1000 + 30 * 62) * MIB, 4 * MIB)
    assert plan.reason.startswith(
        "batch 62 is the largest that fits 0.75 x 4.00 GiB = 3.00 GiB: it measured 2.96 GiB, 170 MiB above the "
        "curve's 2.79 GiB ± 8.00 MiB (2σ), a reading the curve leaves out (a larger batch read less): "
        "the reading decides; ")


def test_a_batch_the_curve_allows_but_no_step_ran_is_named_unmeasured_never_chosen() -> None:
    plan = plan_with_a_step_above_the_curve()
    # 63 and 64 lie between the largest that fitted (62) and the failure (65): the probes ran out;
    # every ± is the 2σ margin, as the plot's band and the printed prediction say
    assert plan.reason.endswith(
        "batch 63 is predicted to need 2.82 GiB ± 8.00 MiB (2σ) in training and 2.80 GiB ± 919 MiB (2σ) in "
        "validation at 126, too close to the 3.00 GiB budget to count on, and was not measured (the search stopped "
        "after max_probes=6 probes); 62 is the largest measured to fit, and batch 65 did not fit")


def late_step(batch: int, phase: str) -> float:
    """900 MiB + 20 MiB/image, with 300 MiB more above batch 45; validation 900 MiB + 8 MiB/image."""
    if phase == "train":
        return (900 + 20 * batch + (300 if batch > 45 else 0)) * MIB
    return (900 + 8 * batch) * MIB


def test_batches_predicted_to_fit_but_not_measured_are_named_as_such() -> None:
    probe = SimulatedBudget(late_step, total_bytes=3 * GIB, noise_floor_bytes=4 * MIB)  # 94 runs out of memory
    plan = plan_batch(probe, UntimedRunner(), 1.0, dataset_images=10_000, max_probes=5)
    assert [s.batch_size for s in plan.samples if s.phase == "train"] == [1, 2, 27, 108, 67]
    assert (plan.batch_size, plan.max_batch_size) == (67, 67)  # never an unmeasured batch above a measured one
    assert plan.reason == (
        "batch 67 is the largest that fits 1 x 3.00 GiB = 3.00 GiB: it measured 2.48 GiB; batches 68-82 are "
        "predicted to fit but were not measured (the search stopped after max_probes=5 probes); 67 is the largest "
        "measured to fit, and batch 108 ran out of memory")


def test_after_a_far_out_of_memory_error_the_last_readings_slope_closes_the_bracket() -> None:
    """Session 4's creep: after 108 ran out of memory, the curve's 2σ target (the readings carry a
    300 MiB step, so the band is wide) moved 82, 83, 85, 86, 87 and the default 8 probes ended at 87
    of the true 93. The line through the last two readings that fitted goes 67 -> 86 -> 93, and 94
    (over by one batch) closes the bracket."""
    probe = SimulatedBudget(late_step, total_bytes=3 * GIB, noise_floor_bytes=4 * MIB)
    plan = plan_batch(probe, UntimedRunner(), 1.0, dataset_images=10_000)
    assert [s.batch_size for s in plan.samples if s.phase == "train"] == [1, 2, 27, 108, 67, 86, 93, 94]
    # 93 is the true largest: (900 + 20 x 93 + 300) MiB = 3060 MiB of 3072; 94 needs 3080
    assert (plan.batch_size, plan.max_batch_size) == (93, 93)
    assert plan.reason == ("batch 93 is the largest that fits 1 x 3.00 GiB = 3.00 GiB: it measured 2.99 GiB; "
                           "batch 94 ran out of memory")
    assert not any(w.startswith("stopped after") for w in plan.warnings)


def test_the_next_batch_over_the_budget_is_said_to_be_over() -> None:
    probe = SimulatedBudget(lambda b, phase: (900 + (20 if phase == "train" else 8) * b) * MIB,
                            total_bytes=3 * GIB, noise_floor_bytes=4 * MIB)
    plan = plan_batch(probe, UntimedRunner(), 1.0, dataset_images=10_000)
    assert plan.reason == ("batch 108 is the largest that fits 1 x 3.00 GiB = 3.00 GiB: it measured 2.99 GiB; "
                           "batch 109 is predicted to need 3.01 GiB, over the budget")


def test_the_plot_marks_a_reading_outside_the_band_it_draws() -> None:
    plan = plan_with_a_step_above_the_curve()
    assert outside_band(plan) == [62]  # 65 reads 1000 + 30 x 65 MiB, on the curve
    fig = batch_plan_figure(plan)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "training fit ±2σ (±8.00 MiB at batch 62)"
    assert "training step outside the ±2σ band" in labels and "did not fit (training or validation)" in labels
    marked = [c for c in fig.axes[0].collections if c.get_label() == "training step outside the ±2σ band"]
    assert [tuple(xy) for xy in marked[0].get_offsets()] == [(62, (1000 + 30 * 62 + 170) * MIB / GIB)]


def test_the_plot_marks_nothing_when_every_reading_is_inside_the_band() -> None:
    probe = SimulatedBudget(late_step, total_bytes=3 * GIB, noise_floor_bytes=4 * MIB)
    plan = plan_batch(probe, UntimedRunner(), 1.0, dataset_images=10_000, max_probes=7)
    assert outside_band(plan) == []
    labels = [t.get_text() for t in batch_plan_figure(plan).legends[0].get_texts()]
    assert not any("outside" in label for label in labels)


def step_at_14(batch: int, phase: str) -> float:
    """742 MiB + 11 MiB/image, with 453 MiB more from batch 14; validation 742 MiB + 6 MiB/image."""
    if phase == "train":
        return (742 + 11 * batch + (453 if batch >= 14 else 0)) * MIB
    return (742 + 6 * batch) * MIB


def test_with_no_failure_yet_a_wide_band_does_not_leave_the_search_creeping() -> None:
    """The step at 14 widens the curve's band (residual 154 MiB): its 2σ target crept 44, 47, 49, 51 and
    the default 8 probes ended at 51 of the true 77. The slope of the last readings steps to 77."""
    probe = SimulatedBudget(step_at_14, total_bytes=2 * GIB, noise_floor_bytes=4 * MIB)
    plan = plan_batch(probe, UntimedRunner(), 1.0, dataset_images=10_000)
    assert [s.batch_size for s in plan.samples if s.phase == "train"] == [1, 2, 27, 37, 44, 77]
    # 77 is the true largest: 742 + 11 x 77 + 453 = 2042 MiB of 2048; 78 needs 2053
    assert (plan.batch_size, plan.max_batch_size) == (77, 77)
    assert plan.reason.startswith("batch 77 is the largest that fits 1 x 2.00 GiB = 2.00 GiB: it measured 1.99 GiB")
