#!/usr/bin/env python3
"""One-command GPU calibration: CUDA constants, smaller cards emulated, reserved memory over epochs, OOM recovery.

On the GPU machine (the device tool's `run`, kind nvidia-h200), from the project root, with
carry [".whl", "runs/gpu_check"] and timeout_s 600:

    bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD YOLO_CONFIG_DIR=/tmp/yolo-config YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 PYTHONUNBUFFERED=1 && mkdir -p $OUT/gpu_check && { cp -r runs/gpu_check/. $OUT/gpu_check/ 2>/dev/null || true; } && python3 tools/gpu_check.py --out $OUT/gpu_check

.whl comes from `EXTRA_WHEELS=typing-extensions==4.16.0 ../shared/tools/gpu-wheels.sh` (the carried
pydantic needs typing-extensions 4.16, a version the machine's list does not give; hello's
"Packages" line in the report says what ran). runs/gpu_check is optional: an earlier call's
files, copied there from files_at, so that this call resumes where that one stopped.
tools/check_gpu_env.py checks all of this under Python 3.12 on a CPU machine first.

It ends within 8 minutes (`--deadline-s`, 450 s from its start, plus the GPU worker's start) and
writes into --out (no subfolders, 6 files, so that all of $OUT comes back):
- calibration.json: Phase A's CUDA constants in the package's format (visionbatch/data/
  calibration.json): allocation rounding and segments, the reserved/allocated ratio fitted over real
  training and validation steps, cuBLAS and cuDNN workspaces, the CUDA context as NVML sees it,
  with the device, driver, torch version and date;
- report.md: markdown tables for BENCHMARKS.md; results.json: the same, structured;
- state.json: every finished unit, written after each one: a rerun with the same --out skips them
  (and `--report-only` rewrites the report from it, here, without a GPU); gpu.log and cpu.log.
Phase B emulates 4, 8, 16 and 24 GiB cards with torch's per-process memory fraction. For yolo11n
and yolo11s, detection and segmentation, at 640 (and one case at 1024), most informative first, it
runs Ultralytics' AutoBatch, `visionbatch fit` measured (never from the plan cache), visionbatch's
CPU-trace prediction (on a CPU lane beside the GPU work), and real Ultralytics training (a mosaic
epoch and a close_mosaic epoch, each validated at 2x the batch) at each chosen batch and at the
true maximum, found by bisection. Phase C trains 6 short epochs at one batch and records reserved memory per epoch.
Phase D (gpu_check_phase_d.py) runs `visionbatch train` (yolo11n, imgsz 320, 3 epochs, close_mosaic
1, batch 32) with the memory capped at epoch 2's start so that about 60% of the batch fits: a real
CUDA out-of-memory error, and the recovery's records, per-epoch batch and accumulation, and torch's
message against the step's reserved peak. It then builds the plan cache's key for the GPU twice and
fits twice, the second fit reused from the cache (in a scratch XDG_CACHE_HOME).
Every phase has a time bound (`--phase-seconds A=75 B=225 C=60 D=60`); what does not fit is
skipped, the report says so, and the next call continues.

The data defaults to the shipped datasets/shapes (it travels with the tree; coco128, 22 MiB, and
the wheels, 48 MiB, together exceed the 64 MiB a call carries). `--simulate` runs the same flow on
a CPU against a simulated device (tools/gpu_check_worker.py says what is real there); the test
suite runs it. Without a GPU and without --simulate it refuses (exit 2).

The tool is six files: this one (the phases and their maths), gpu_check_runner.py (state, time
bounds, worker processes), gpu_check_worker.py (the units), gpu_check_phase_d.py (Phase D's units:
the OOM recovery and the plan cache), gpu_check_devices.py (the CUDA and simulated devices) and
gpu_check_report.py (the outputs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, as the other tools
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_report import bracket, case_key, trials_of, write_outputs  # noqa: E402
from gpu_check_runner import Budget, Clock, Lane, Runner, SettingsError, State, Unit  # noqa: E402

GIB = 1 << 30
WORKER = Path(__file__).resolve().parent / "gpu_check_worker.py"
STATE_VERSION = 1
MODELS = {("yolo11n", "detect"): "yolo11n.yaml", ("yolo11n", "segment"): "yolo11n-seg.yaml",
          ("yolo11s", "detect"): "yolo11s.yaml", ("yolo11s", "segment"): "yolo11s-seg.yaml"}
# Phase B's cases, most informative first: each model and task once on a common card, then the
# smallest and largest cards, the 1024 px case, and the rest of the grid
CASES = (("yolo11n", "detect", 640, 8), ("yolo11n", "segment", 640, 8), ("yolo11s", "detect", 640, 16),
         ("yolo11s", "segment", 640, 16), ("yolo11n", "detect", 640, 4), ("yolo11s", "segment", 640, 24),
         ("yolo11s", "segment", 1024, 24), ("yolo11n", "segment", 640, 4), ("yolo11s", "detect", 640, 8),
         ("yolo11s", "segment", 640, 8), ("yolo11n", "detect", 640, 16), ("yolo11n", "segment", 640, 16),
         ("yolo11s", "detect", 640, 24), ("yolo11n", "detect", 640, 24), ("yolo11n", "segment", 640, 24),
         ("yolo11s", "detect", 640, 4), ("yolo11s", "segment", 640, 4))
POINTS = (("yolo11n", "detect", 640, (1, 2, 4, 8, 16)), ("yolo11s", "segment", 640, (1, 2, 4, 8)))
EPOCHS_CASE = ("yolo11n", "detect", 640, 16)  # Phase C: a T4-sized card
RECOVERY_CASE = ("yolo11n", "detect", 320)  # Phase D: the whole GPU, capped by the unit itself at epoch 2
CACHE_MAX_PROBES = 4  # Phase D's fit for the plan cache: a short one, since only its reuse is checked
PHASE_S = {"A": 75.0, "B": 225.0, "C": 60.0, "D": 60.0}
DEADLINE_S = 450.0  # 7.5 minutes: the 8 the issue allows, less the start


@dataclass(frozen=True, slots=True)
class Settings:
    """What a run measures; a rerun resumes only into a folder made with the same settings."""

    data: str
    simulate: bool
    fraction: float
    bisect_trials: int
    points: tuple = POINTS
    epochs: int = 6
    close_mosaic: int = 2
    epochs_batch: int = 32
    recovery_batch: int = 32

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls.from_key({"data": str(Path(args.data).resolve()), "simulate": args.simulate,
                             "fraction": args.fraction}, args)

    @classmethod
    def from_key(cls, key: dict, args: argparse.Namespace) -> Settings:
        data = Path(key["data"]) if Path(key["data"]).is_absolute() else ROOT / key["data"]
        if key["simulate"]:  # the same flow at a size a CPU trains in seconds
            return cls(str(data), True, key["fraction"], args.bisect_trials,
                       points=(("yolo11n", "detect", 640, (1,)),), epochs=2, close_mosaic=1, epochs_batch=4,
                       recovery_batch=4)
        return cls(str(data), False, key["fraction"], args.bisect_trials)

    def key(self) -> dict:
        """What must match for a rerun to resume: the data (relative to the checkout when inside it, since each
        GPU machine may place the tree elsewhere), the simulation and the fraction."""
        data = Path(self.data)
        shown = str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data)
        return {"version": STATE_VERSION, "data": shown, "simulate": self.simulate, "fraction": self.fraction}


# -- pure maths ---------------------------------------------------------------------------------------


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares y = slope x + intercept.

    Examples:
        >>> fit_line([(1, 3.0), (2, 5.0), (4, 9.0)])
        (2.0, 1.0)
    """
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 1.0
    return slope, my - slope * mx


def fit_calibration(base: dict, device: dict, constants: dict, rows: list[dict], today: str) -> dict:
    """The package's calibration.json from Phase A: base's layout, this device's measured constants.

    reserved = reserved_over_allocated x allocated + reserved_extra_bytes, fitted over the steps
    that ran; workspace = cuBLAS's (kept per handle) + cuDNN's largest transient; context for the
    device's architecture as NVML counts it.
    """
    points = [(r["allocated"], r["reserved"]) for r in rows if r.get("ok")]
    if len(points) < 2:
        raise ValueError("fewer than two steps ran: nothing to fit")
    ratio, extra = fit_line(points)
    data = json.loads(json.dumps(base))
    measured_context = constants.get("context_measured", True)  # False: NVML gave no per-process figure
    data.update(status="calibrated", measured_on=device["name"], date=today, driver=device.get("driver"),
                torch=device.get("torch"), cuda=device.get("cuda"),
                note=(f"measured by tools/gpu_check.py over {len(points)} training and validation steps on "
                      f"{device['name']}; " + (f"only the '{device['arch']}' context is measured, the other "
                                               "architectures' contexts are still assumptions" if measured_context
                                               else "NVML gave no per-process figure, so every context is still "
                                               "an assumption")),
                round_bytes=int(constants["round_bytes"]), reserved_over_allocated=round(ratio, 4),
                reserved_extra_bytes=int(max(extra, 0)),
                workspace_bytes=int((constants["cublas_workspace_bytes"] or 0) + constants["cudnn_workspace_bytes"]))
    if measured_context:
        data["context_bytes"][device["arch"]] = int(constants["context_bytes"])
    return data


def next_batch(low: int, high: int | None, guess: int | None, cap: int) -> int | None:
    """The next batch to train while searching for the largest that fits, or None when it is known.

    The guess (from fit's measured curve at the whole card) goes first while it lies inside the
    bracket; then the bracket is halved, or grown by a quarter while nothing has failed.

    Examples:
        >>> next_batch(20, 40, 33, 128), next_batch(33, 40, 33, 128), next_batch(20, None, None, 128)
        (33, 36, 25)
        >>> next_batch(20, 21, None, 128), next_batch(128, None, None, 128), next_batch(100, None, 300, 128)
        (None, None, 128)
    """
    if low >= cap or (high is not None and high - low <= 1):
        return None
    top = cap + 1 if high is None else high
    if guess is not None and min(guess, top - 1) > low:
        return min(guess, top - 1)
    if high is None:
        return min(cap, max(low + 1, math.ceil(low * 1.25)))
    return (low + high) // 2


def curve_guess(plan: dict, usable_bytes: int) -> int | None:
    """The largest batch fit's measured curves allow on the whole card (no fraction), or None.

    Examples:
        >>> curve_guess({"curve": [1e9, 1e8, 0.0], "val_curve": [1e9, 2e7, 0.0]}, 5e9)
        40
    """
    def solve(coefficients: list[float], scale: int) -> float:
        fixed, per_image, quadratic = coefficients
        room = usable_bytes - fixed
        if quadratic > 0:
            return (-per_image + math.sqrt(per_image**2 + 4 * quadratic * room)) / (2 * quadratic) / scale
        return room / per_image / scale if per_image > 0 else math.inf

    if not plan.get("curve"):
        return None
    best = solve(plan["curve"], 1)
    if plan.get("val_curve"):
        best = min(best, solve(plan["val_curve"], 2))  # validation runs at twice the batch
    return int(best) if math.isfinite(best) and best >= 1 else None


# -- state, clock, budgets ----------------------------------------------------------------------------


# -- the phases ---------------------------------------------------------------------------------------


def case_request(case: tuple, hello: dict, settings: Settings) -> dict:
    model, task, imgsz, card_gib = case
    return {"case": {"model": MODELS[(model, task)], "task": task, "imgsz": imgsz,
                     "data": hello["segment_data"] if task == "segment" else None},
            "card_bytes": card_gib * GIB, "fraction": settings.fraction, "train_images": hello["batch_cap"],
            "max_labels": hello["max_labels"], "nc": hello["nc"]}


def phase_a(runner: Runner, budget: Budget, hello: dict, settings: Settings, calibration: dict | None) -> None:
    points = [(f"{model}-{task}-{imgsz}", case_request((model, task, imgsz, 0), hello, settings)["case"], batches)
              for model, task, imgsz, batches in settings.points]
    for name, case, batches in points:  # first in the CPU lane's queue, beside the GPU phases; the report waits
        runner.submit(Unit(f"A/trace/{name}", "trace", "cpu",
                           {"case": case, "batches": batches, "gpu_name": hello["device"]["name"]}, order=-1))
    runner.run(Unit("A/constants", "constants", "gpu", {}), budget)
    for name, case, batches in points:
        runner.run(Unit(f"A/points/{name}", "points", "gpu", {"case": case, "batches": batches}), budget)


def measured_calibration(state: State, hello: dict) -> dict | None:
    """Phase A's constants in calibration.json's format, or None when Phase A has not got that far."""
    import datetime
    from importlib import resources

    shipped = json.loads(resources.files("visionbatch").joinpath("data/calibration.json").read_text())
    constants = (state.get("A/constants") or {}).get("result")
    rows = [row for key, record in state.data["units"].items() if key.startswith("A/points/")
            for row in (record.get("result") or {}).get("rows", [])]
    if not constants or sum(r.get("ok", False) for r in rows) < 2:
        return None
    return fit_calibration(shipped, hello["device"], constants, rows, datetime.date.today().isoformat())


def phase_b(runner: Runner, budget: Budget, hello: dict, settings: Settings, calibration: dict | None) -> None:
    for order, case in enumerate(CASES):
        request = {**case_request(case, hello, settings), "calibration": calibration}
        runner.submit(Unit(f"B/predict/{case_key(case)}", "predict", "cpu", request, order))
    for order, case in enumerate(CASES):
        request = case_request(case, hello, settings)
        fit = runner.run(Unit(f"B/fit/{case_key(case)}", "fit", "gpu", request), budget)
        autobatch = runner.run(Unit(f"B/autobatch/{case_key(case)}", "autobatch", "gpu", request), budget)
        for plan in (fit, autobatch):
            if plan and plan["batch"] >= 1:  # 0: not even batch 1 fits, by that planner's reckoning
                trial(runner, budget, case, plan["batch"], request, calibration, order)
        guess = curve_guess(fit, case[3] * GIB) if fit else None
        for _ in range(settings.bisect_trials):
            low, high = bracket(trials_of(runner.state.data["units"], case), case[3])
            batch = next_batch(low, high, guess, hello["batch_cap"])
            if batch is None or trial(runner, budget, case, batch, request, calibration, order) is None:
                break


def trial(runner: Runner, budget: Budget, case: tuple, batch: int, request: dict, calibration: dict | None,
          order: int) -> dict | None:
    key = f"B/trial/{case_key(case)}/b{batch}"
    # law_only: under --simulate a trial follows the law (Phase C trains for real); a GPU ignores it
    result = runner.run(Unit(key, "trial", "gpu", {**request, "batch": batch, "epochs": 2, "close_mosaic": 1,
                                                   "law_only": True}), budget)
    if result is not None:  # the fixed-batch prediction at the same batch, on the CPU lane
        runner.submit(Unit(f"B/check/{case_key(case)}/b{batch}", "check", "cpu",
                           {**request, "batch": batch, "calibration": calibration}, order))
    return result


def phase_c(runner: Runner, budget: Budget, hello: dict, settings: Settings, calibration: dict | None) -> None:
    case = EPOCHS_CASE
    request = {**case_request(case, hello, settings), "batch": settings.epochs_batch, "epochs": settings.epochs,
               "close_mosaic": settings.close_mosaic}
    runner.run(Unit(f"C/epochs/{case_key(case)}/b{settings.epochs_batch}", "epochs", "gpu", request), budget)


def phase_d(runner: Runner, budget: Budget, hello: dict, settings: Settings, calibration: dict | None) -> None:
    """visionbatch's own training recovering from a real out-of-memory error, then the plan cache on this device."""
    model, task, imgsz = RECOVERY_CASE
    case, name = case_request((model, task, imgsz, 0), hello, settings)["case"], f"{model}-{task}-{imgsz}"
    runner.run(Unit(f"D/oom/{name}/b{settings.recovery_batch}", "oom", "gpu",
                    {"case": case, "batch": settings.recovery_batch, "epochs": 3, "close_mosaic": 1}), budget)
    runner.run(Unit(f"D/cache/{name}", "cache", "gpu", {"case": case, "max_probes": CACHE_MAX_PROBES}), budget)


def parse_phase_seconds(values: list[str]) -> dict[str, float]:
    """--phase-seconds A=75 B=225 C=60 D=60 (any of them) over the defaults.

    Examples:
        >>> parse_phase_seconds(["B=40"])["B"], parse_phase_seconds([])["A"]
        (40.0, 75.0)
    """
    bounds = dict(PHASE_S)
    for value in values:
        name, _, seconds = value.partition("=")
        if name not in bounds or not seconds.replace(".", "", 1).isdigit():
            raise SettingsError(f"--phase-seconds {value}: expected A=, B=, C= or D= seconds, e.g. B=225")
        bounds[name] = float(seconds)
    return bounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder; a rerun with the same one resumes")
    parser.add_argument("--data", default=str(ROOT / "datasets" / "shapes" / "data.yaml"))
    parser.add_argument("--simulate", action="store_true", help="no GPU: the same flow on a simulated device")
    parser.add_argument("--fraction", type=float, default=0.9, help="memory fraction for AutoBatch and fit")
    parser.add_argument("--deadline-s", type=float, default=DEADLINE_S)
    parser.add_argument("--phase-seconds", nargs="*", default=[], metavar="PHASE=S")
    parser.add_argument("--bisect-trials", type=int, default=5, help="most trials per case in the true-max search")
    parser.add_argument("--report-only", action="store_true",
                        help="write report.md, results.json and calibration.json from --out's state.json; run nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        bounds = parse_phase_seconds(args.phase_seconds)
        if args.report_only:
            state = State.saved(out / "state.json")
            return report(out, state, Settings.from_key(state.data["settings"], args), None, {})
        if not args.simulate:
            import torch

            if not torch.cuda.is_available():
                raise SettingsError("no CUDA GPU here: run it on a machine with one, or pass --simulate to run the "
                                    "flow on a simulated device")
        settings = Settings.from_args(args)
        out.mkdir(parents=True, exist_ok=True)
        state = State(out / "state.json", settings)
    except SettingsError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    clock = Clock(settings.simulate)
    runner = Runner(state, clock, make_lanes(settings, out, Path(tempfile.mkdtemp(prefix="gpu_check-"))))
    budgets: dict[str, Budget] = {}
    try:
        answer = runner.call(Unit("hello", "hello", "gpu", {}))
        if not answer.get("ok"):
            print(f"gpu_check: the GPU worker did not start: {answer.get('error')}; see {out / 'gpu.log'}",
                  file=sys.stderr)
            return 1
        hello, earlier = answer["result"], state.data.get("hello")
        if earlier and earlier["device"]["name"] != hello["device"]["name"]:
            print(f"gpu_check: {out} holds results from {earlier['device']['name']}, and this is "
                  f"{hello['device']['name']}: use another --out", file=sys.stderr)
            return 2
        state.data["hello"] = hello
        for name, phase in (("A", phase_a), ("B", phase_b), ("C", phase_c), ("D", phase_d)):
            budgets[name] = Budget(name, clock, bounds[name], args.deadline_s)
            phase(runner, budgets[name], hello, settings, measured_calibration(state, hello))
            budgets[name].end()
        runner.drain(max(args.deadline_s - clock.now(), 0.0))  # the CPU lane may finish in the time left
    finally:
        runner.close()
    return report(out, state, settings, runner.counts, {name: b.summary() for name, b in budgets.items()})


def report(out: Path, state: State, settings: Settings, counts: dict | None, phases: dict) -> int:
    hello = state.data.get("hello")
    if hello is None:
        print(f"gpu_check: {out / 'state.json'} has no device yet: nothing to report", file=sys.stderr)
        return 1
    counts = counts or {"run": 0, "reused": len(state.data["units"]), "failed": 0, "timeout": 0, "cut": 0}
    written = write_outputs(out, state.data, hello, settings, measured_calibration(state, hello), phases, counts,
                            CASES)
    print(f"gpu_check: {counts['run']} units run, {counts['reused']} reused from {out / 'state.json'}, "
          f"{counts['failed']} failed, {counts['timeout']} over their limit, {counts['cut']} cut; wrote "
          + ", ".join(p.name for p in written))
    return 0


def make_lanes(settings: Settings, out: Path, tmp: Path) -> dict[str, Lane]:
    """The gpu and cpu workers; on a machine of 8 or more cores the CPU lane gets a third of them."""
    cores = sorted(os.sched_getaffinity(0))
    common = [sys.executable, str(WORKER), "--data", settings.data, "--tmp", str(tmp)]
    if settings.simulate:
        common.append("--simulate")
    gpu, cpu = list(common) + ["--lane", "gpu"], list(common) + ["--lane", "cpu"]
    if len(cores) >= 8:
        share = len(cores) // 3
        cpu += ["--cores", ",".join(map(str, cores[:share]))]
        gpu += ["--cores", ",".join(map(str, cores[share:]))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cpu_env = {**env, "CUDA_VISIBLE_DEVICES": ""}  # the trace needs no GPU, and takes no context on it
    return {"gpu": Lane("gpu", gpu, out / "gpu.log", env), "cpu": Lane("cpu", cpu, out / "cpu.log", cpu_env)}


if __name__ == "__main__":
    sys.exit(main())
