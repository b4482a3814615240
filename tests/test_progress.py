"""Live progress of the long commands (fit, sweep): a line per probe on stderr, a bar on a terminal, never stdout."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from visionbatch.console import Progress, Steps
from visionbatch.fit.planner import check_batch, plan_batch
from visionbatch.fit.probes.simulated import SimulatedProbe

MIB = 1 << 20
GIB = 1 << 30


class Tty(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    """Simulated seconds: each step of the runner below takes 10."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TenSecondRunner:
    """A workload whose training step takes 10 simulated seconds; nothing is timed afterwards."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def train_step(self, batch_size, boundary=None):
        self.clock.now += 10.0

    def val_step(self, batch_size):
        return None

    def time_steps(self, batch_size, steps=3):
        return None

    def persistent(self):
        return []


def law(batch: int, phase: str) -> float:
    # training 1 GiB + 100 MiB/image, validation 1 GiB + 20 MiB/image: on a 16 GiB card at 90% batch 137 fits
    return GIB + (100 if phase == "train" else 20) * MIB * batch


# -- the helper ------------------------------------------------------------------------------------


def test_steps_count_the_plan_and_say_the_time_left_by_the_slower_of_the_mean_and_last_step() -> None:
    lines: list[str] = []
    clock = Clock()
    steps = Steps(lines.append, 4, "probe", exact=False, clock=clock)
    steps.begin("batch 1")
    clock.now = 6.0
    steps.end("batch 1 fits")
    clock.now = 20.0
    steps.end("batch 2 fits")
    steps.expect(6)  # more than planned: the time left grows with it
    clock.now = 30.0
    steps.end("batch 3 fits")
    steps.finish()
    assert lines == ["probe 1/~4: batch 1...",
                     "probe 1/~4: batch 1 fits; about 18 s left for the probes",  # 6 s a step, 3 to go
                     "probe 2/~4: batch 2 fits; about 28 s left for the probes",  # the last took 14 s, 2 to go
                     "probe 3/~6: batch 3 fits; about 30 s left for the probes"]  # mean 10 s (last 10), 3 to go
    assert steps.total == 3  # finished after 3: the plan shrinks to what ran


def test_steps_past_the_plan_grow_it_and_say_no_time_left() -> None:
    lines: list[str] = []
    steps = Steps(lines.append, 1, "step", clock=Clock())
    steps.end("one")
    steps.end("two")
    assert lines == ["step 1/1: one", "step 2/2: two"]
    Steps(None, 3).end("nothing is said")  # None: silence, no error


def test_progress_off_a_terminal_writes_plain_lines_and_no_bar() -> None:
    stream = io.StringIO()
    with Progress("visionbatch fit", stream) as progress:
        steps = Steps(progress, 2, "probe", clock=Clock())
        steps.begin("batch 1: training step")
        steps.end("batch 1: training peak 1.00 GiB: fits")
    assert stream.getvalue() == ("visionbatch fit: probe 1/2: batch 1: training step...\n"
                                 "visionbatch fit: probe 1/2: batch 1: training peak 1.00 GiB: fits\n")
    assert progress.bar is None


def test_progress_on_a_terminal_draws_a_bar_under_the_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.utils import tqdm

    monkeypatch.setattr(tqdm, "is_noninteractive_console", lambda: False)  # as on a developer's terminal
    stream = Tty()
    with Progress("visionbatch fit", stream) as progress:
        steps = Steps(progress, 3, "probe", clock=Clock())
        steps.begin("batch 1: training step")
        assert progress.bar is not None and progress.bar.total == 3
        steps.end("batch 1 fits")
        steps.finish()
        assert progress.bar.total == 1 and progress.bar.n == 1
    assert progress.bar is None  # closed with the block
    text = stream.getvalue()
    assert "visionbatch fit: probe 1/3: batch 1: training step...\n" in text
    assert "visionbatch fit: probe 1/3: batch 1 fits\n" in text
    frames = [f for f in text.split("\r\033[K") if "1/3" in f]  # the bar's redraws in place, fitted to the width
    assert frames and frames[-1].startswith("visionbatch fit: batch 1") and "33%" in frames[-1], frames


# -- the planner's lines, on a simulated device --------------------------------------------------------


def test_each_probe_is_said_as_it_starts_and_ends_with_its_peaks_and_the_time_left() -> None:
    lines: list[str] = []
    clock = Clock()
    probe = SimulatedProbe(law, total_bytes=16 * GIB)
    plan = plan_batch(probe, TenSecondRunner(clock), 0.9, dataset_images=10_000, progress=lines.append, clock=clock)
    assert plan.batch_size == 137
    assert lines == [
        "probe 1/~5: batch 1: training step...",
        "probe 1/~5: batch 1: validation step at batch 2...",
        "probe 1/~5: batch 1: training peak 1.10 GiB, validation at 2 1.04 GiB, held together after validation "
        "2.14 GiB: fits the 14.4 GiB budget; about 40 s left for the probes",
        "probe 2/~5: batch 2: training step...",
        "probe 2/~5: batch 2: validation step at batch 4...",
        "probe 2/~5: batch 2: training peak 1.20 GiB, validation at 4 1.08 GiB, held together after validation "
        "2.27 GiB: fits the 14.4 GiB budget; about 30 s left for the probes",
        "probe 3/~5: batch 32: training step...",
        "probe 3/~5: batch 32: validation step at batch 64...",
        "probe 3/~5: batch 32: training peak 4.12 GiB, validation at 64 2.25 GiB, held together after validation "
        "6.38 GiB: fits the 14.4 GiB budget; about 20 s left for the probes",
        "probe 4/~5: batch 137: training step...",
        "probe 4/~5: batch 137: validation step at batch 274...",
        "probe 4/~5: batch 137: training peak 14.4 GiB, validation at 274 6.35 GiB: fits the 14.4 GiB budget; "
        "about 10 s left for the probes",
        "timing batch 32, 137 for the speed choice: interleaved blocks of a warm-up and 3 timed steps, up to 20 s",
    ]


def test_a_probe_that_runs_out_of_memory_is_said_not_to_fit() -> None:
    lines: list[str] = []
    probe = SimulatedProbe(law, total_bytes=16 * GIB)
    check = check_batch(probe, TenSecondRunner(Clock()), 200, 0.9, None, progress=lines.append, clock=Clock())
    assert not check.fits
    assert lines == ["step 1/2: batch 200: training step...",
                     "step 1/1: batch 200: training ran out of memory: does not fit the 14.4 GiB budget"]
    lines.clear()
    clock = Clock()
    check_batch(probe, TenSecondRunner(clock), 16, 0.9, None, progress=lines.append, clock=clock)
    assert lines == ["step 1/2: batch 16: training step...",
                     "step 1/2: batch 16: training peak 2.56 GiB; about 10 s left for the steps",
                     "step 2/2: batch 16: validation step at batch 32...",
                     "step 2/2: batch 16: training peak 2.56 GiB, validation at 32 1.62 GiB, held together after "
                     "validation 4.19 GiB: fits the 14.4 GiB budget"]


# -- through the command line: stderr gets the probes, stdout the JSON alone -------------------------------


class FakeEstimator:
    """Stands in for the CPU trace in a sweep: an exact surface, and no model to build."""

    stride = 32

    def __init__(self, spec, device, progress=None) -> None:
        self.imgsz = self.train_imgsz = spec.imgsz
        self.device = device

    def at_imgsz(self, imgsz: int) -> FakeEstimator:
        other = FakeEstimator.__new__(FakeEstimator)
        other.imgsz, other.device = imgsz, self.device
        return other

    def _estimate(self, batch_size: int, phase: str):
        from visionbatch.fit.probes.trace import TraceEstimate

        need = int(600 * MIB + 0.5 * self.imgsz**2 + batch_size * (2 * MIB + 400 * self.imgsz**2))
        return TraceEstimate(batch_size, phase, need, need, need, {})

    def train(self, batch_size: int):
        return self._estimate(batch_size, "train")

    def val(self, batch_size: int):
        return self._estimate(batch_size, "val")


def test_fit_cli_says_each_probe_on_stderr_and_keeps_json_clean(capsys, monkeypatch: pytest.MonkeyPatch, make_shapes,
                                                                 workdir: Path) -> None:
    from visionbatch.cli import main
    from visionbatch.fit.probes import trace

    monkeypatch.setattr(trace, "TraceEstimator", FakeEstimator)  # the trace's stages: test_trace_says_its_stages
    data = make_shapes(4, 2)  # four training images: probes at 1, 2 and 4 (every image); validation at most 2
    code = main(["fit", str(data), "imgsz=64", "target=gtx1050", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)  # the JSON alone: no progress text in stdout
    assert result["plan"]["batch_size"] == 4
    err = captured.err
    for batch in (1, 2, 4):
        assert f"visionbatch fit: probe {[1, 2, 4].index(batch) + 1}/~5: batch {batch}: training step...\n" in err
        assert f"batch {batch}: validation step at batch 2...\n" in err  # twice the batch, at most the 2 images
        assert re.search(rf"batch {batch}: training traced peak [\d.]+ MiB, validation at 2 [\d.]+ MiB, held "
                         rf"together after validation [\d.]+ GiB: fits the [\d.]+ GiB budget", err), err
    assert ("visionbatch fit: probe 1/~5: batch 1: training traced peak 604 MiB, validation at 2 607 MiB, held "
            "together after validation 1.18 GiB: fits") in err
    assert re.search(r"visionbatch fit: probe 2/~5: .*; about \d+ (s|min) left for the probes\n", err), err
    assert "\r" not in err  # a captured stream is not a terminal: lines, no bar


def test_sweep_says_each_planned_probe_on_stderr(capsys, monkeypatch: pytest.MonkeyPatch, small_shapes: Path,
                                                 workdir: Path) -> None:
    from visionbatch.cli import main
    from visionbatch.fit.probes import trace

    monkeypatch.setattr(trace, "TraceEstimator", FakeEstimator)
    code = main(["sweep", str(small_shapes), "sizes=64,128", "imgsz=96", "target=gtx1050", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [row["imgsz"] for row in json.loads(captured.out)["sweep"]["rows"]] == [64, 96, 128]
    said = [line for line in captured.err.splitlines() if line.startswith("visionbatch sweep: probe ")]
    # batch 1 and 2 (validation at 2 and 4) at 64 and 128, then the check at 96: nine probes, known ahead
    assert said[0] == "visionbatch sweep: probe 1/9: imgsz 64: training at batch 1..."
    assert re.fullmatch(r"visionbatch sweep: probe 1/9: imgsz 64: training at batch 1: traced peak 604 MiB; "
                        r"about \d+ (s|min) left for the probes", said[1]), said[1]
    assert said[2] == "visionbatch sweep: probe 2/9: imgsz 64: validation at batch 2..."
    assert said[-2:] == ["visionbatch sweep: probe 9/9: imgsz 96: training at batch 2...",
                         "visionbatch sweep: probe 9/9: imgsz 96: training at batch 2: traced peak 611 MiB"]
    assert len(said) == 18 and all(re.search(r"; about \d+ (s|min) left for the probes$", line) for line in said[1:-1:2])


def test_the_library_says_its_progress_on_stderr_by_default(capsys, monkeypatch: pytest.MonkeyPatch,
                                                            small_shapes: Path) -> None:
    from visionbatch.fit.probes import trace
    from visionbatch.fit.sweep import sweep_resolution

    monkeypatch.setattr(trace, "TraceEstimator", FakeEstimator)
    sweep_resolution(small_shapes, sizes=(64, 128), target="gtx1050")
    captured = capsys.readouterr()
    assert "probe 8/8: imgsz 128: validation at batch 4: traced peak" in captured.err and captured.out == ""
    sweep_resolution(small_shapes, sizes=(64, 128), target="gtx1050", progress=None)
    assert capsys.readouterr().err == ""


def test_trace_says_its_stages(small_shapes: Path) -> None:
    from visionbatch.fit.probes.trace import DeviceModel, TraceEstimator
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline
    from visionbatch.ultralytics.spec import job_spec

    lines: list[str] = []
    with offline():
        spec = job_spec(prepare(small_shapes, {"imgsz": 64}), "cpu", "", 3)  # three labels in every image
        estimator = TraceEstimator(spec, DeviceModel.cpu(), progress=lines.append)
        estimator.train(2)
    assert lines == [
        "trace: building yolo11n.yaml on the CPU and its optimizer state (one real optimizer step)",
        "trace: training step at batch 2, imgsz 64: forward and backward under fake tensors",
        "trace: training loss at batch 2 (6 labels), run for real on the CPU",
    ]


def test_fit_says_the_train_command_with_the_size_and_model_it_fitted(capsys, monkeypatch: pytest.MonkeyPatch,
                                                                      make_shapes, workdir: Path) -> None:
    # "train with it: ... batch=4 ..." pasted as it was trained at the default imgsz=640, where batch 4 was never
    # fitted: the line carries the model and the size
    from visionbatch.cli import main
    from visionbatch.fit.probes import trace

    monkeypatch.setattr(trace, "TraceEstimator", FakeEstimator)
    data = make_shapes(4, 2)
    assert main(["fit", str(data), "imgsz=64", "target=gtx1050"]) == 0
    out = capsys.readouterr().out
    assert f"train with it: visionbatch train {data} model=yolo11n.yaml imgsz=64 batch=4   (on the " in out


def test_fit_suggests_commands_that_carry_the_users_arguments(capsys, monkeypatch: pytest.MonkeyPatch, make_shapes,
                                                              workdir: Path) -> None:
    # "find the largest that fits: visionbatch fit DATA (without batch=)" dropped target= and imgsz=: run as printed
    # on a CPU it failed; and "train with it" dropped epochs=, which the label model depends on
    from visionbatch.cli import main
    from visionbatch.fit.probes import trace

    monkeypatch.setattr(trace, "TraceEstimator", FakeEstimator)
    data = make_shapes(4, 2)
    code = main(["fit", str(data), "batch=4", "target=gtx1050", "memory_fraction=0.1", "imgsz=64", "epochs=1",
                 "name=a b"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert (f"find the largest that fits: visionbatch fit {data} target=gtx1050 memory_fraction=0.1 imgsz=64 "
            f"epochs=1 'name=a b' (without batch=)") in out.splitlines()
    # train takes neither target= (the batch was fitted for the target: the line says so) nor memory_fraction=;
    # it gets the fitted batch, and the model fitted where the user named none
    assert main(["fit", str(data), "target=gtx1050", "memory_fraction=0.9", "imgsz=64", "epochs=1"]) == 0
    assert (f"train with it: visionbatch train {data} model=yolo11n.yaml imgsz=64 epochs=1 batch=4   (on the "
            f"gtx1050)") in capsys.readouterr().out.splitlines()


def test_the_trace_says_why_it_runs_the_loss_at_a_smaller_batch() -> None:
    # "trace: validation loss at batch 8 (221 labels)" in a check of validation batch 32 read like another batch
    from types import SimpleNamespace

    from visionbatch.fit.probes.trace import TraceEstimator

    lines: list[str] = []
    estimator = TraceEstimator.__new__(TraceEstimator)  # no model: the loss's bytes come from a stand-in
    estimator.say, estimator._extras = lines.append, {}
    estimator.spec = SimpleNamespace(val_batch_labels=lambda b: (20,) + (9,) * (b - 1), batch_labels=None)
    estimator._measure_loss = lambda phase, counts: 1000 * sum(counts)
    assert estimator._extra("val", 32) == 1000 * (155 + 9 * 16 * 2 - 9 * 16)  # 16's plus the 8 -> 16 step per image
    assert estimator._extra("val", 48) == 1000 * (155 + 9 * 32)  # measured already: no new line
    assert estimator._extra("val", 8) == 83_000  # measured already for the extension: no line
    assert lines == ["trace: validation loss measured at batch 8 and 16 (83 and 155 labels) for real on the CPU, "
                     "extended to 32"]
    estimator._extra("val", 4)
    assert lines[-1] == "trace: validation loss at batch 4 (47 labels), run for real on the CPU"
