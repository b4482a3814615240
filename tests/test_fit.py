"""The batch planner: exact answers on a simulated CUDA device, and the real pipeline on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionbatch.devices.oom import is_oom
from visionbatch.errors import BudgetError, ConfigError
from visionbatch.fit.plan import WorkloadSummary
from visionbatch.fit.planner import plan_batch
from visionbatch.fit.probes.simulated import SimulatedBudget, SimulatedProbe

MIB = 1 << 20
GIB = 1 << 30


class NullRunner:
    """A workload that does nothing: the simulated probe supplies the readings."""

    def __init__(self) -> None:
        self.timed: list[int] = []

    def train_step(self, batch_size, boundary=None):
        return 0.0

    def val_step(self, batch_size):
        return 0.0

    def time_steps(self, batch_size, steps=3):
        self.timed.append(batch_size)
        return [self.seconds(batch_size)] * steps  # exact timings: every interval is a point

    seconds = staticmethod(lambda b: 0.010 + 0.001 * b)

    def persistent(self):
        return []


def linear(train_fixed, train_slope, val_fixed, val_slope, jump=None):
    """A memory law: bytes for (batch, phase); `jump=(batch, bytes)` adds bytes above that batch."""

    def law(batch: int, phase: str) -> float:
        if phase == "train":
            extra = jump[1] if jump and batch > jump[0] else 0
            return train_fixed + train_slope * batch + extra
        return val_fixed + val_slope * batch

    return law


def train_batches(probe: SimulatedProbe) -> list[int]:
    return [b for b, phase in probe.calls if phase == "train"]


def test_exact_answer_on_a_linear_device() -> None:
    # training 1 GiB + 100 MiB/image, validation 1 GiB + 20 MiB/image, 16 GiB card, aim at 90%:
    # budget 14745.6 MiB -> 1024 + 100 b <= 14745.6 -> b = 137
    probe = SimulatedProbe(linear(GIB, 100 * MIB, GIB, 20 * MIB), total_bytes=16 * GIB)
    runner = NullRunner()
    plan = plan_batch(probe, runner, 0.9, dataset_images=10_000)
    assert (plan.batch_size, plan.max_batch_size, plan.val_batch_size) == (137, 137, 274)
    # 4 probes: 1, 2, a quarter of the answer (capped at 16x the largest that fitted), the answer
    assert train_batches(probe) == [1, 2, 32, 137]
    assert plan.budget_bytes == int(0.9 * 16 * GIB)
    assert plan.measured_bytes == plan.predicted_bytes == GIB + 137 * 100 * MIB
    assert plan.val_measured_bytes == GIB + 274 * 20 * MIB
    assert plan.accumulate == 1 and plan.nominal_batch_size == 64
    assert plan.img_per_s == pytest.approx(137 / 0.147)
    assert plan.curve.per_image_bytes == 100 * MIB and plan.curve.fixed_bytes == GIB
    assert plan.val_max_batch_size == 686  # (14745.6 - 1024) MiB / 20 MiB
    assert plan.reason.startswith("batch 137 is the largest that fits 0.9 x 16.0 GiB = 14.4 GiB")
    assert "batch 138 is predicted to need 14.5 GiB" in plan.reason
    assert plan.warnings == () and plan.measured


def test_out_of_memory_above_the_curve_is_bisected() -> None:
    # a workspace jump of 1 GiB above batch 100 that the small probes cannot see; the card OOMs
    # before the budget is reached: 8 GiB, 1 GiB used by others, 500 MiB CUDA context
    law = linear(600 * MIB, 50 * MIB, 600 * MIB, 10 * MIB, jump=(100, GIB))
    probe = SimulatedProbe(law, total_bytes=8 * GIB, used_by_others_bytes=GIB, context_bytes=500 * MIB)
    plan = plan_batch(probe, NullRunner(), 1.0, dataset_images=10_000)
    # 1, 2, 30, then the curve's 121 runs out of memory; bisecting: 75, 98, 109 (OOM), 103 (OOM)
    assert train_batches(probe) == [1, 2, 30, 121, 75, 98, 109, 103]
    assert plan.max_batch_size == 98  # 98% of the true 100 in the 8 probes allowed, and said so
    assert plan.warnings == ("stopped after 8 probes: a batch between 98 and 103 might fit too",)
    failed = [s for s in plan.samples if not s.ok]
    assert [s.batch_size for s in failed] == [121, 109, 103]
    assert all(s.phase == "train" and "out of memory" in s.error for s in failed)
    at_98 = next(s for s in plan.samples if s.batch_size == 98 and s.phase == "train")
    assert at_98.peak_bytes == 500 * MIB + 600 * MIB + 98 * 50 * MIB  # the context counts
    assert plan.context_bytes == 500 * MIB and plan.usable_bytes == 7 * GIB
    assert plan.batch_size <= plan.max_batch_size


def test_validation_at_twice_the_batch_can_bind() -> None:
    # training (8 GiB + 100 MiB/image, over half the card: Ultralytics empties its cache between the phases)
    # would allow 65; validation at 2b needs 1 GiB + 200 MiB/image: 2b <= 68 -> b = 34
    probe = SimulatedProbe(linear(8 * GIB, 100 * MIB, GIB, 200 * MIB), total_bytes=16 * GIB)
    plan = plan_batch(probe, NullRunner(), 0.9, dataset_images=10_000)
    assert (plan.batch_size, plan.val_batch_size, plan.val_max_batch_size) == (34, 68, 68)
    assert plan.val_measured_bytes == GIB + 68 * 200 * MIB
    assert plan.after_validation_bytes == max(plan.measured_bytes, plan.val_measured_bytes)


def test_under_half_the_card_training_and_validation_must_fit_together() -> None:
    # training under half of 16 GiB: the cache stays, so 1 GiB + 100 MiB b plus 1 GiB + 400 MiB b <= 14.4 GiB -> 25
    # (each alone would allow 34), found without a miss: the planner solves for the two together
    probe = SimulatedProbe(linear(GIB, 100 * MIB, GIB, 200 * MIB), total_bytes=16 * GIB)
    plan = plan_batch(probe, NullRunner(), 0.9, dataset_images=10_000)
    assert (plan.batch_size, plan.max_batch_size) == (25, 25) and train_batches(probe) == [1, 2, 6, 25]
    assert plan.after_validation_bytes == plan.measured_bytes + plan.val_measured_bytes <= plan.budget_bytes


def test_throughput_saturation_picks_the_smallest_batch_within_3_percent() -> None:
    # probes 1, 2, 32, 137; 32 and 137 are timed (1 and 2 only start the curve) at 250 and 255 img/s.
    # The timings are exact, so the intervals are points: 32 is shown 2% below 137, within 3%
    # (tests/test_fit_speed.py has the noisy cases)
    runner = NullRunner()
    runner.seconds = lambda b: b / 255.0 if b > 100 else max(0.1, 0.004 * b)
    probe = SimulatedProbe(linear(GIB, 100 * MIB, GIB, 20 * MIB), total_bytes=16 * GIB)
    plan = plan_batch(probe, runner, 0.9, dataset_images=10_000)
    assert train_batches(probe) == [1, 2, 32, 137]
    assert (plan.batch_size, plan.max_batch_size) == (32, 137)
    assert plan.img_per_s == pytest.approx(250.0) and plan.best_img_per_s == pytest.approx(255.0)
    assert plan.reason == ("throughput saturates: batch 32 trains 250.0 img/s (95% interval 250.0-250.0, 9 steps), "
                           "within 3% of every other timed batch by their intervals; the largest batch that fits "
                           "is 137: 255.0 img/s (95% interval 255.0-255.0, 9 steps)")
    assert runner.timed == [32, 137] * 3  # three blocks each (stats.MIN_BLOCKS): exact timings settle it then
    assert plan.accumulate == 2  # round(64 / 32)


def test_non_monotonic_readings_warn_and_the_answer_is_still_verified() -> None:
    def law(batch: int, phase: str) -> float:
        dip = -300 * MIB if batch == 2 else 0  # the allocator reused a cached block at batch 2
        return GIB + 100 * MIB * batch + dip if phase == "train" else GIB

    probe = SimulatedProbe(law, total_bytes=16 * GIB)
    plan = plan_batch(probe, NullRunner(), 0.9, dataset_images=10_000)
    assert any("not monotonic (1 -> 2)" in w for w in plan.warnings)
    assert plan.measured_bytes <= plan.budget_bytes
    assert plan.max_batch_size == 137  # verified at the top: the dip only fooled the first fit


def test_noisy_readings_stay_under_budget_and_close_to_the_truth() -> None:
    probe = SimulatedProbe(linear(GIB, 100 * MIB, GIB, 20 * MIB), total_bytes=16 * GIB, noise_bytes=30 * MIB,
                           noise_floor_bytes=2 * MIB, seed=3)
    plan = plan_batch(probe, NullRunner(), 0.9, dataset_images=10_000)
    assert plan.measured_bytes <= plan.budget_bytes
    assert 0.9 * 137 <= plan.max_batch_size <= 137
    assert plan.predicted_uncertainty_bytes > 2 * MIB


def test_budget_below_batch_1() -> None:
    probe = SimulatedProbe(linear(3 * GIB, 500 * MIB, GIB, 0), total_bytes=4 * GIB)
    with pytest.raises(BudgetError) as info:
        plan_batch(probe, NullRunner(), 0.5, dataset_images=100, workload=WorkloadSummary(
                model="yolo11s.yaml", task="detect", nc=80, imgsz=1024, multi_scale=0.0, labels_per_image=10,
                val_labels_per_image=10, oom_risk=None, label_density="forced", amp=True, amp_dtype="float16", optimizer="AdamW", ema=True, dataset_images=100))
    message = str(info.value)
    assert message.startswith("batch 1 does not fit 2.00 GiB (0.5 x 4.00 GiB usable on cuda:0)")
    assert "one image of yolo11s.yaml at imgsz=1024 needs 3.49 GiB" in message
    assert "raise the budget, lower imgsz or use a smaller model" in message


def test_out_of_memory_at_batch_1() -> None:
    probe = SimulatedProbe(linear(5 * GIB, 0, 0, 0), total_bytes=4 * GIB)
    with pytest.raises(BudgetError, match=r"needs more than 4.00 GiB \(it ran out of memory\)"):
        plan_batch(probe, NullRunner(), 0.9, dataset_images=100)


def test_dataset_size_caps_the_batch() -> None:
    probe = SimulatedProbe(linear(GIB, 10 * MIB, GIB, 1 * MIB), total_bytes=80 * GIB)
    plan = plan_batch(probe, NullRunner(), 0.9, dataset_images=50)
    assert plan.max_batch_size == 50
    assert "batch capped at the 50 training images" in plan.warnings
    memory, speeds = plan.reason.split("; ")
    assert memory == "batch 50 uses every training image and fits 0.9 x 80.0 GiB = 72.0 GiB"
    # the probes 12 and 50 are timed (exact timings: point intervals); 12 is slower, so 50 stays
    assert speeds.startswith("no smaller batch is shown as fast: batch 12 545.5 img/s (95% interval 545.5-545.5, "
                             "9 steps), batch 50 833.3 img/s (95% interval 833.3-833.3, 9 steps) (6 interleaved "
                             "blocks in ") and speeds.endswith(" s, decided)")


def test_probe_limit_warns() -> None:
    # a curve far from the truth above batch 8: every guess from the curve fails
    law = linear(GIB, 10 * MIB, GIB, MIB, jump=(8, 13.5 * GIB))
    probe = SimulatedProbe(law, total_bytes=16 * GIB)
    plan = plan_batch(probe, NullRunner(), 0.9, dataset_images=10_000, max_probes=4)
    assert len(train_batches(probe)) == 4
    assert plan.max_batch_size <= 8 and any("stopped after 4 probes" in w for w in plan.warnings)


def test_other_errors_propagate() -> None:
    class Broken(SimulatedProbe):
        def _end(self):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    probe = Broken(linear(GIB, MIB, GIB, MIB), total_bytes=16 * GIB)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        plan_batch(probe, NullRunner(), 0.9, dataset_images=100)


@pytest.mark.parametrize("exc, expected", [
    ("cuda-oom", True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), True),
    (RuntimeError("GET was unable to find an engine to execute this computation"), True),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1000 bytes"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered (out of memory?)"), False),
    (RuntimeError("CUDA error: device-side assert triggered"), False),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),
    (MemoryError(), True),  # the host allocator failing, as DefaultCPUAllocator's "not enough memory"
])
def test_is_oom_is_narrow(exc, expected) -> None:
    import torch

    if exc == "cuda-oom":
        exc = torch.cuda.OutOfMemoryError("CUDA out of memory.")
    assert is_oom(exc) is expected


# -- the real pipeline on CPU -------------------------------------------------------------------


@pytest.mark.slow
def test_cpu_fit_verifies_the_batch_and_one_more_would_not_fit(shapes_yaml: Path) -> None:
    import torch

    from visionbatch.devices.memory import current_rss_bytes
    from visionbatch.fit.api import fit_batch
    from visionbatch.fit.curve import DEFAULT_SIGMAS
    from visionbatch.fit.probes.cpu import LABEL_PLOTS_BYTES, TRAINER_OBJECTS_BYTES

    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    # a CPU budget bounds the whole process: what batch 1 needs (this process's baseline, the trainer's
    # share, one step) is asked first, and the budget leaves ~150 MiB over it: batch 1 and 2 then the answer
    one = fit_batch(shapes_yaml, imgsz=64, memory_budget=16 * GIB, task="segment", epochs=50, batch_size=1)
    assert one.fits and one.train.peak_bytes > current_rss_bytes() // 2
    budget = int((one.train.peak_bytes + 150 * MIB) / 0.9)
    plan = fit_batch(shapes_yaml, imgsz=64, memory_budget=budget, task="segment", epochs=50)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic
    assert plan.device == "cpu" and plan.measured
    # the modelled density: the run's densest batch at oom_risk, below the old "densest image (90) x4 for mosaic"
    assert plan.workload.oom_risk == 1e-3 and 90 < plan.workload.labels_per_image < 360
    assert plan.workload.labels_per_batch > plan.workload.labels_per_image  # one image padded, the rest sharing
    assert plan.workload.optimizer == "AdamW" and not plan.workload.amp
    assert TRAINER_OBJECTS_BYTES + LABEL_PLOTS_BYTES < plan.context_bytes < plan.measured_bytes
    assert plan.measured_bytes <= plan.budget_bytes == int(0.9 * budget) and plan.usable_bytes == budget
    train = [s for s in plan.samples if s.phase == "train"]
    assert 3 <= len(train) <= 6 and all(s.ok for s in train)
    assert plan.max_batch_size == max(s.batch_size for s in train if s.peak_bytes <= plan.budget_bytes)
    assert abs(plan.predicted_bytes - plan.measured_bytes) <= 0.05 * plan.measured_bytes
    # one more image does not fit: it was probed and did not, or the curve puts it over the budget
    more = plan.max_batch_size + 1
    if plan.sample(more, "train") is not None:
        assert not plan.fits(more)
    else:
        assert plan.curve.predict(more) + DEFAULT_SIGMAS * plan.curve.uncertainty(more) > plan.budget_bytes


def test_fit_without_cuda_or_budget_says_what_it_can_do(small_shapes: Path, monkeypatch) -> None:
    import torch

    from visionbatch.fit.api import fit_batch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device to fit the batch on here: pass memory_budget="):
        fit_batch(small_shapes, imgsz=64)


# -- surfaces -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, words", [
    (["memory_fraction=1.5"], "memory_fraction=1.5 is out of range: expected 0 < memory_fraction <= 1"),
    (["memory_budget=lots"], "memory_budget=lots is not a memory size"),
    (["memory_fracton=0.8", "memory_budget=1GiB"], "(did you mean 'memory_fraction'?)"),
    (["memory_budget=1MiB"], "batch 1 does not fit 922 KiB (0.9 x 1.00 MiB usable on cpu): one image of yolo11n.yaml at imgsz=64 needs"),
    (["memory_budget=1GiB", "labels_per_image=0"], "labels_per_image=0 is impossible"),
    (["memory_budget=1GiB", "device=0,1"], "device=0,1"),
    (["memory_budget=1GiB", "batch=16", "batch_size=8"], "unknown argument 'batch_size=8'"),
    (["memory_budget=1GiB", "oom_risk=1"], "oom_risk=1 is out of range: expected a probability 0 < oom_risk <= 0.5"),
], ids=["fraction", "budget-words", "misspelt-key", "budget-below-batch-1", "labels", "multi-gpu", "batch-size-key",
        "oom-risk"])
def test_fit_cli_bad_input(capsys, small_shapes: Path, workdir: Path, extra, words, monkeypatch) -> None:
    import torch

    from visionbatch.cli import main

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # device=0,1 exists: refused for another reason
    code = main(["fit", str(small_shapes), "imgsz=64", *extra])
    err = capsys.readouterr().err
    assert code == 2
    *progress, error = err.splitlines()  # one line; a budget below batch 1 is found by a probe, said as it ran
    assert words in error and all(" probe " in line or "building the training step" in line for line in progress), err
    assert not (workdir / "runs").exists()


@pytest.mark.slow
def test_fit_cli_writes_plan_and_curve(capsys, small_shapes: Path, workdir: Path) -> None:
    import json

    from visionbatch.cli import main

    code = main(["fit", str(small_shapes), "imgsz=64", "memory_budget=8GiB", "name=cpu-fit"])
    out = capsys.readouterr().out
    assert code == 0
    folder = workdir / "runs" / "fit" / "cpu-fit"
    plan = json.loads((folder / "plan.json").read_text())
    assert (folder / "memory_curve.png").stat().st_size > 10_000
    assert plan["batch_size"] == plan["max_batch_size"] == 8  # the copy holds 8 training images
    assert "batch capped at the 8 training images" in plan["warnings"]
    # validation at twice the batch, but no validation batch holds more than the 4 validation images
    assert "plan: batch 8 (largest that fits 8; validation batch 4)" in out
    assert [s["batch_size"] for s in plan["samples"] if s["phase"] == "val"] == [2, 4, 4]
    assert "why: batch 8 uses every training image" in out


@pytest.mark.slow
def test_train_with_batch_auto_records_the_plan(small_shapes: Path, workdir: Path) -> None:
    import json

    from visionbatch.train.run import PLAN_NAME, SUMMARY_NAME, train

    result = train(small_shapes, batch="auto", memory_budget="8GiB", epochs=1, imgsz=64, plots=False)
    folder = Path(result.save_dir)
    assert result.status == "completed" and result.batch_size == 8 and result.batch_source == "batch=auto"
    plan = json.loads((folder / PLAN_NAME).read_text())
    assert plan["batch_size"] == 8 and (folder / "memory_curve.png").is_file()
    summary = json.loads((folder / SUMMARY_NAME).read_text())
    assert summary["batch_plan"]["batch_size"] == 8 and summary["args"]["batch"] == 8
    [row] = summary["memory_vs_plan"]
    assert row["epoch"] == 1 and row["predicted_bytes"] == plan["predicted_bytes"] and row["measured_bytes"] > 0
    assert any(note.startswith("batch 8 from the fit") for note in summary["notes"])


def test_train_batch_auto_on_cpu_needs_a_budget(capsys, small_shapes: Path, workdir: Path, monkeypatch) -> None:
    import torch

    from visionbatch.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", str(small_shapes), "batch=auto", "epochs=1"])
    err = capsys.readouterr().err
    assert code == 2 and "pass memory_budget=" in err and err.count("\n") == 1
    assert main(["train", str(small_shapes), "batch=8", "memory_budget=1GiB"]) == 2
    assert "only applies with batch=auto" in capsys.readouterr().err


def test_validation_is_measured_at_no_more_than_the_validation_split() -> None:
    """Ultralytics validates at twice the batch, but a batch never holds more than the split: with 40
    validation images, validation at 2b (1000 + 40 x 2b MiB) would stop the search at 25; at most 40
    images (2600 MiB) it never binds, and training's 1000 + 20 MiB/image decides: 100 of 3000 MiB."""
    mib = 1 << 20

    def law(batch: int, phase: str) -> int:
        return (1000 + (20 if phase == "train" else 40) * batch) * mib

    def plan_with(val_images):
        work = WorkloadSummary("yolo11n.yaml", "detect", 5, 640, 0.0, 8, 8, 1e-3, "", False, None, "SGD", True,
                               10_000, val_images=val_images)
        return plan_batch(SimulatedBudget(law, total_bytes=3000 * mib), NullRunner(), 1.0, dataset_images=10_000,
                          workload=work)

    unbounded, clamped = plan_with(None), plan_with(40)
    assert (unbounded.batch_size, unbounded.val_batch_size) == (25, 50)
    assert (clamped.batch_size, clamped.val_batch_size) == (100, 40)
    assert {s.batch_size for s in clamped.samples if s.phase == "val"} <= set(range(1, 41))
    assert clamped.val_sample(100).batch_size == 40 and clamped.fits(100) and clamped.max_batch_size == 100


def held_together_law(batch: int, phase: str) -> float:
    """Training 200 MiB + 10 MiB/image; validation 100 MiB + 1 MiB/image, 150 MiB more above batch 160."""
    if phase == "train":
        return (200 + 10 * batch) * MIB
    return (100 + batch + (150 if batch > 160 else 0)) * MIB


class UntimedRunner(NullRunner):
    """Nothing to time: the answer is the largest batch that fits, and the reason the memory one."""

    def time_steps(self, batch_size, steps=3):
        return None


def plan_failing_only_after_validation():
    """A 16 GiB card with 1700 MiB usable and a 300 MiB CUDA context (the issue's memory_budget=2GB on a
    T4): training stays far under half the card, so Ultralytics keeps its cache and the two steps are
    held together after validation. Batch 81 peaks at 1310 MiB in training and 712 MiB in validation at
    162, each under the 1700 MiB budget, but 1310 + 412 reserved = 1722 MiB held together is over it."""
    probe = SimulatedProbe(held_together_law, total_bytes=16 * GIB, used_by_others_bytes=16 * GIB - 1700 * MIB,
                           context_bytes=300 * MIB, name="Simulated T4")
    work = WorkloadSummary("yolo11n.yaml", "detect", 5, 160, 0.0, 8, 8, 1e-3, "", True, "float16", "AdamW", True,
                           10_000)
    plan = plan_batch(probe, UntimedRunner(), 1.0, dataset_images=10_000, workload=work)
    assert train_batches(probe) == [1, 2, 22, 91, 81, 51, 80]
    assert (plan.batch_size, plan.max_batch_size, plan.budget_bytes) == (80, 80, 1700 * MIB)
    return plan


def test_a_batch_failing_only_after_validation_says_so_in_the_reason_and_the_table() -> None:
    from visionbatch.cli.fit import FitRun, show

    plan = plan_failing_only_after_validation()
    # was "...; batch 81 did not fit", with nothing shown over the budget
    assert plan.reason == (
        "batch 80 is the largest that fits 1 x 1.66 GiB = 1.66 GiB: it measured 1.27 GiB; batch 81 did not fit: "
        "training's 1.28 GiB and validation's 412 MiB reserved (its 712 MiB peak less the CUDA context), held "
        "together after the first validation, need 1.68 GiB > the 1.66 GiB budget")
    text = show(FitRun(plan, "runs/fit/x", ("runs/fit/x/plan.json",))).splitlines()
    assert text[3:6] == ["batch  train peak  val batch  val peak  held after val  img/s (95% interval)  fits",
                         "-----  ----------  ---------  --------  --------------  --------------------  ----",
                         "    1     510 MiB          2   402 MiB         612 MiB                     -  yes"]
    rows = {line.split()[0]: line for line in text[5:12]}
    assert rows["81"] == "   81    1.28 GiB        162   712 MiB        1.68 GiB                     -  no"
    assert rows["80"] == "   80    1.27 GiB        160   560 MiB        1.52 GiB                     -  yes"
    assert text[13].startswith("held after val: training's peak plus validation's reserved memory, held together "
                               "once validation has run")
    assert "memory at batch 80: predicted 1.27 GiB ± 0 B (2σ), measured 1.27 GiB; validation 560 MiB" in text


def test_the_plot_crosses_a_batch_failing_after_validation_at_its_held_figure_on_a_budget_scale() -> None:
    from visionbatch.fit.plot import batch_plan_figure

    plan = plan_failing_only_after_validation()
    fig = batch_plan_figure(plan)
    ax = fig.axes[0]
    marks = {c.get_label(): [tuple(xy) for xy in c.get_offsets()] for c in ax.collections}
    # crossed where the held figure passes the budget line, not at the training peaks under it
    assert marks["did not fit (at the figure over the budget)"] == [(91, 1842 * MIB / GIB), (81, 1722 * MIB / GIB)]
    held = dict(marks["held together after validation (measured)"])
    assert held[80] == (1300 + 260) * MIB / GIB and held[81] == 1722 * MIB / GIB
    assert dict(marks["validation at 2x batch (measured)"])[81] == 712 * MIB / GIB  # at its training batch
    # the axis is scaled to the budget and the readings: the 16 GiB card is named in the legend, not drawn
    assert ax.get_ylim()[1] == 1842 * MIB / GIB * 1.08
    assert [line.get_ydata()[0] for line in ax.get_lines() if len(set(line.get_ydata())) == 1] == [1700 * MIB / GIB]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "device total 16.00 GiB (above the axis)" in labels
    assert "held together after validation (fit)" in labels
