"""`tune_inference()`: export, sweep batch sizes on the deployment backend, choose, write configs.

The flow: check the arguments (nothing is written before they pass), resolve the model to a file
the backend loads (exporting .pt/.yaml offline), open the runner and the memory/power probe for
the device, sweep, choose under the constraints, replay the choice, time one against two instances
at the chosen batch (Triton's instance count, `infer.instances`), then write plan.json, sweep.png and the
DeepStream / Triton / TensorRT settings next to each other. The run folder is made when the first
file goes in (an export, ONNX Runtime's TensorRT cache, else the results), so a model refused while
loading leaves none; a failed run that left its folder empty removes it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from visionbatch.devices import jetson as board
from visionbatch.devices.jetson import JetsonInfo
from visionbatch.devices.oom import is_oom
from visionbatch.errors import ConfigError, ProbeError, StorageError
from visionbatch.infer import deploy, probes
from visionbatch.infer.budget import memory_budget_for
from visionbatch.infer.choice import CHOSEN_AFRESH, choose, keep_earlier
from visionbatch.infer.export import (
    ModelInfo,
    engine_bytes,
    engine_info,
    export,
    onnx_info,
    source_task,
)
from visionbatch.infer.instances import (
    INSTANCE_SECONDS,
    InstanceSearch,
    for_latency,
    not_measured,
    search_instances,
)
from visionbatch.infer.kept import choice_key, load_choice, store_choice
from visionbatch.infer.options import InferenceOptions, check_options
from visionbatch.infer.pipeline import EndToEnd, model_step
from visionbatch.infer.plan import (
    BatchMeasurement,
    Choice,
    Constraints,
    InferencePlan,
    ReplayResult,
    StreamLoad,
)
from visionbatch.infer.precision import (
    SECONDS_PER_PRECISION,
    check_request,
    compare_precisions,
    int8_file_name,
)
from visionbatch.infer.replay import verify_choice
from visionbatch.infer.runners import OnnxRuntimeRunner, TensorRTRunner, TorchRunner
from visionbatch.infer.sweep import SweepResult, run_sweep
from visionbatch.keys import refuse_removed_keywords
from visionbatch.results import write_json
from visionbatch.rundir import new_run_dir
from visionbatch.text import identifier
from visionbatch.ultralytics.models import model_sha256
from visionbatch.ultralytics.offline import (
    cpu_count,
    offline,
    trusted_checkpoints,
    versions,
)
from visionbatch.units import human_bytes

SAFETY_SHARE = 0.9          # the sweep stops before a batch projected past this share of free memory


def tune_inference(model: str, *, imgsz: int | None = None, backend: str | None = None, provider: str | None = None,
                   batch_sizes: list[int] | tuple[int, ...] | None = None, max_batch: int = 64,
                   latency_ms: float | None = None, memory_budget: str | int | None = None,
                   memory_fraction: float | None = None, streams: int | None = None, fps: float | None = None,
                   half: bool = False, end_to_end: bool = False, warmup_runs: int = 3, runs: int | None = None,
                   seconds_per_batch: float = 1.0, max_seconds: float = 90.0, device: str | int | None = None,
                   threads: int | None = None, target: str | None = None, name: str | None = None,
                   project: str | None = None, trust_checkpoint: bool = False, precision: Any = None,
                   data: str | None = None, calib_images: int | None = None, remap_classes: bool = False,
                   keep_choice: bool = True, progress: Callable[[str], None] | None = None,
                   **removed: Any) -> InferencePlan:
    """Find the inference batch with the most throughput under latency, memory and stream-load limits.

    Args:
        model: a model YAML (yolo11n.yaml), a local .pt, an .onnx or a TensorRT .engine.
        imgsz: input size in pixels (default: the size the file was exported at, else 640).
        backend: 'onnxruntime', 'pytorch' or 'tensorrt' (default: from the file, else onnxruntime).
        provider: ONNX Runtime provider 'cpu', 'cuda' or 'tensorrt' (default: from device).
        batch_sizes: sizes to try (default: powers of two up to `max_batch`).
        max_batch: largest default batch size.
        latency_ms: budget for a frame's worst latency (fill wait + p99 batch latency).
        memory_budget: the memory to fit into instead of the device's, a size ('4GiB') or bytes:
            the budget for the device's reading (RSS on CPU, CUDA memory, Jetson unified memory).
        memory_fraction: the budget as a share of the memory this process may use: the device's
            (or the target's) less what other processes hold and, on a Jetson, what the OS keeps;
            default 0.9 with `target`, else no budget (see `memory_budget_for`).
        streams, fps: the camera load to keep up with; adds the fill wait (b - 1) / (streams x fps).
        half: fp16 (CUDA only).
        end_to_end: time letterbox pre-processing and NMS with the model.
        warmup_runs: untimed calls per batch first.
        runs: timed calls per batch, in one pass (default: at least 10 and at least
            `seconds_per_batch`, then interleaved rounds of every batch until each throughput's
            95% interval is within 3%, or `max_seconds`).
        seconds_per_batch: time each batch at least this long.
        max_seconds: time bound for the sweep, its interleaved rounds included.
        device: 'cpu', 0 or 'cuda:0' (default: the GPU if there is one).
        threads: CPU threads (default: every core).
        target: a device from the catalog to plan for ('orin-nano-8gb', 'rtx3060', '6GiB', ...):
            its memory (less what a Jetson's OS keeps) is what the plan must fit, and the configs
            are written for a GPU; the timings still come from this machine, and a note says so.
        name, project: the run folder (runs/infer/<name>).
        trust_checkpoint: load a .pt with Ultralytics' unrestricted loader, which can run code stored in
            the file (only for files you trust); default: the safe loader.
        precision: precisions to set against fp32 at the chosen batch, e.g. 'fp32,int8' or
            ['fp32', 'fp16', 'int8']: throughput and mAP of each (`infer.precision`); needs
            backend=onnxruntime and `data`. fp16 is measured on CUDA only.
        data: the data.yaml whose val split gives the mAP and whose train images calibrate INT8.
        calib_images: train images INT8 is calibrated on (default 64).
        remap_classes: `data`'s class ids do not run 0..N-1 (COCO's 1..90 with gaps): validate on labels
            renumbered 0..N-1 in the order of names, as a model trained with remap_classes=True predicts them.
        keep_choice: keep the policy an earlier run chose for the same model, device, load and budgets while
            this run's measurements still carry it (`infer.kept`, `choice.keep_earlier`), so that reruns agree
            on a device whose speed moves; False chooses afresh. The choice made is remembered either way.
        progress: receives a line per step of a long sweep.
        **removed: keywords that unifying the keys replaced (`memory_budget_bytes=`): a
            ConfigError names the new one.

    Returns:
        The plan, also written as plan.json in the run folder beside sweep.png and the configs.

    Raises:
        ConfigError: a bad argument, a model that would need a download, a backend not installed.

    Examples:
        >>> plan = tune_inference("yolo11n.yaml", imgsz=320, latency_ms=100)  # doctest: +SKIP
        >>> plan.batch_size, plan.chosen.throughput_per_s, plan.files["triton_config"]  # doctest: +SKIP
        (2, 101.3, '.../runs/infer/infer/triton/yolo11n/config.pbtxt')
    """
    refuse_removed_keywords("tune_inference", "infer", removed)
    started = time.perf_counter()
    opts = check_options(
        model, imgsz=imgsz, backend=backend, provider=provider, batch_sizes=batch_sizes, max_batch=max_batch,
        latency_ms=latency_ms, memory_budget=memory_budget, memory_fraction=memory_fraction,
        streams=streams, fps=fps, half=half, end_to_end=end_to_end, warmup_runs=warmup_runs, runs=runs,
        seconds_per_batch=seconds_per_batch, max_seconds=max_seconds, device=device, threads=threads,
        target=target, name=name, project=project, trust_checkpoint=trust_checkpoint, keep_choice=keep_choice)
    precision_request = check_request(precision, data, calib_images, opts.backend, remap_classes)
    say = progress or (lambda line: None)
    notes: list[str] = []
    ready = _ready_model(opts)  # a bad .onnx/.engine or a pose model is refused before anything is written
    run_folder = _RunFolder(opts)
    try:
        with trusted_checkpoints(opts.trust_checkpoint):  # the export and the PyTorch runner load the .pt
            run = _sweep(opts, ready, run_folder, say, notes)
    except BaseException:
        run_folder.remove_if_empty()
        raise
    run_dir = run_folder()
    measurements = run.result.measurements
    choice = run.choice
    notes += _measurement_notes(opts, run.jetson, run.device_name, measurements)
    chosen = next((m for m in measurements if m.batch_size == choice.batch_size), None)
    first = measurements[0]
    speedup = (round(chosen.throughput_per_s / first.throughput_per_s, 3)
               if chosen is not None and first.batch_size == 1 and first.throughput_per_s else None)
    files = {"plan": str(run_dir / "plan.json"), "plot": str(run_dir / "sweep.png")}
    if chosen is not None:
        files.update(_write_configs(opts, run, chosen, choice.reason, run_dir, notes, choice.queue_delay_ms,
                                    int8=precision_request is not None and "int8" in precision_request.precisions))
    else:
        notes.append("no deployment configs written: no batch met the constraints")
    plan = InferencePlan(
        model=opts.model, model_file=str(run.info.path), task=run.info.task, backend=opts.backend,
        provider=run.provider, device=opts.device, device_name=run.device_name, precision=run.precision,
        imgsz=run.imgsz, end_to_end=opts.end_to_end, cpu_threads=run.threads, constraints=run.constraints,
        measurements=measurements, verdicts=choice.verdicts, stop_reason=run.result.stop_reason,
        batch_size=choice.batch_size, reason=choice.reason, advice=choice.advice, speedup_vs_batch1=speedup,
        jetson=run.jetson, target=opts.target, files=files, run_dir=str(run_dir), versions=_versions(),
        wall_s=0.0, notes=tuple(notes), timing=run.result.timing, queue_delay_ms=choice.queue_delay_ms,
        simulated=choice.simulated, replayed=run.replays, instances=run.instances, earlier=choice.earlier,
    )
    if precision_request is not None:
        report = compare_precisions(run.info.path, precision_request, run_dir, imgsz=run.imgsz,
                                    batch_size=choice.batch_size or first.batch_size, device=opts.device,
                                    threads=run.threads, task=run.info.task,
                                    seconds=min(SECONDS_PER_PRECISION * opts.policy.seconds_per_batch,
                                                opts.policy.max_seconds / len(precision_request.precisions)),
                                    progress=say)
        plan = dataclasses.replace(plan, precisions=report)
    from visionbatch.infer.plot import plot_sweep

    plot_sweep(plan, run_dir / "sweep.png")
    remembered = choice.batch_size is not None and run.choice_key is not None and _remember(
        run.choice_key, choice, run_dir, say)
    plan = dataclasses.replace(plan, wall_s=round(time.perf_counter() - started, 3), remembered=remembered)
    write_json(run_dir / "plan.json", plan)
    return plan


def _remember(key: dict[str, Any], choice: Choice, run_dir: Path, say: Callable[[str], None]) -> bool:
    """Store the choice for the next run (`infer.kept`): a kept choice with the run and time that first made it.
    A cache that cannot be written costs only that (False)."""
    first = choice.earlier if choice.earlier is not None and choice.earlier.kept else None
    try:
        store_choice(key, choice.batch_size, choice.queue_delay_ms, first.run_dir if first else str(run_dir),
                     chosen_at=first.chosen_at if first else None)
    except (OSError, StorageError) as exc:
        say(f"the choice was not remembered for later runs ({exc})")
        return False
    return True


class _RunFolder:
    """runs/infer/<name>, made when first asked for: a run that fails before it needs one leaves none."""

    def __init__(self, opts: InferenceOptions) -> None:
        self.opts = opts
        self.path: Path | None = None

    def __call__(self) -> Path:
        if self.path is None:
            self.path = new_run_dir("infer", self.opts.name, self.opts.project)
        return self.path

    def remove_if_empty(self) -> None:
        """Remove the folder when the failed run left no file in it (only empty folders, no links)."""
        if self.path is None:
            return
        for root, dirs, files in os.walk(self.path):
            if files or any(os.path.islink(os.path.join(root, d)) for d in dirs):
                return
        shutil.rmtree(self.path, ignore_errors=True)


@dataclasses.dataclass(frozen=True, slots=True)
class _Run:
    """What the sweep ran on and measured, for the choice and the configs."""

    info: ModelInfo
    imgsz: int
    jetson: JetsonInfo | None
    device_name: str
    device_type: str  # 'cuda' (a GPU or a Jetson) or 'cpu'
    provider: str
    precision: str
    input_name: str
    input_dtype: str
    threads: int | None
    outputs: tuple[tuple[str, np.ndarray], ...]
    num_classes: int
    constraints: Constraints
    result: SweepResult
    choice: Choice | None = None  # made while the runner is open, for the replay
    replays: tuple[ReplayResult, ...] = ()
    choice_key: dict[str, Any] | None = None  # the question the choice answers (`infer.kept`)
    instances: InstanceSearch | None = None  # measured while the runner is open, for Triton's instance_group


def _sweep(opts: InferenceOptions, ready: tuple[ModelInfo, int] | str, run_folder: Callable[[], Path],
           say: Callable[[str], None], notes: list[str]) -> _Run:
    """Export if need be, open the runner and the probe, dry-run once, sweep; close what was opened."""
    with offline():
        import torch

        jetson = board.detect_jetson()
        info, imgsz = ready if isinstance(ready, tuple) else _export_model(opts, ready, run_folder(), say, notes)
        threads = None
        if opts.device == "cpu":
            threads = opts.threads or cpu_count()
            torch.set_num_threads(threads)  # offline() restores the caller's count
        runner = _open_runner(opts, info, imgsz, run_folder)
        probe = None
        try:
            probe = _probe(opts, jetson)
            outputs = _dry_run(runner, imgsz)
            constraints = _constraints(opts, jetson, notes)
            num_classes = len(info.names) or _classes_from_outputs(info.task, outputs)
            if opts.end_to_end:
                make_step = EndToEnd(runner, imgsz, info.task, num_classes).step
            else:
                def make_step(batch_size: int) -> Callable[[], None]:
                    return model_step(runner, batch_size, imgsz)
            sizes = _fit_sizes(opts.batch_sizes, runner, notes)
            say(f"sweeping batch sizes {', '.join(map(str, sizes))} on {opts.backend} "
                f"({runner.provider}, {runner.precision}, {opts.device})")
            result = run_sweep(make_step, sizes, opts.policy, constraints, probe,
                               memory_limit_bytes=_memory_limit(opts, jetson, constraints),
                               is_out_of_memory=is_oom, progress=say)
            device_name = _device_name(opts.device, jetson)
            device_type = "cuda" if opts.device.startswith("cuda") or jetson else "cpu"
            choice, replays, key = None, (), None
            if result.measurements:
                choice = choose(result.measurements, constraints, imgsz=imgsz, precision=runner.precision,
                                device_type=device_type, service_ms=result.service_ms)
                key = _choice_key(opts, runner, imgsz, device_name, threads, constraints)
                earlier = load_choice(key)
                if earlier is not None and opts.keep_choice:
                    choice = keep_earlier(choice, earlier, result.measurements, constraints, result.service_ms)
                    say(f"{'kept' if choice.earlier.kept else 'did not keep'} {earlier.describe()}: "
                        f"{choice.earlier.why}")
                elif earlier is not None:
                    choice = dataclasses.replace(choice, earlier=dataclasses.replace(
                        earlier, kept=False, why=CHOSEN_AFRESH, alone_batch_size=choice.batch_size,
                        alone_queue_delay_ms=choice.queue_delay_ms))
                choice, replays = verify_choice(choice, result.measurements, constraints, make_step, progress=say)
            instances = _instances(opts, info, imgsz, runner, choice, device_type, device_name, threads,
                                   run_folder, say)
        finally:
            getattr(probe, "close", lambda: None)()
            runner.close()
    if not result.measurements:
        raise ProbeError(f"model={opts.model}: not even batch {sizes[0]} could run ({result.stop_reason}): "
                         f"use a smaller imgsz or another device")
    return _Run(
        info=info, imgsz=imgsz, jetson=jetson, device_name=device_name,
        device_type=device_type, provider=runner.provider, precision=runner.precision,
        input_name=getattr(runner, "input_name", info.input_name),
        input_dtype="float16" if getattr(runner, "input_dtype", np.float32) == np.float16 else "float32",
        threads=threads, outputs=tuple(outputs), num_classes=num_classes, constraints=constraints, result=result,
        choice=choice, replays=replays, instances=instances, choice_key=key,
    )


def _instances(opts: InferenceOptions, info: ModelInfo, imgsz: int, runner: Any, choice: Choice | None,
               device_type: str, device_name: str, threads: int | None, run_folder: Callable[[], Path],
               say: Callable[[str], None]) -> InstanceSearch:
    """Triton's instance count for the chosen batch: 1 against 2 instances, timed here (`infer.instances`)."""
    if choice is None or choice.batch_size is None:
        return not_measured("no batch was chosen")
    if opts.target is not None and device_type == "cpu":
        return not_measured(f"the configs are for {opts.target.name} (KIND_GPU), and two instances on this "
                            f"machine's CPU say nothing about two there")
    if opts.backend == "pytorch" and device_type == "cpu":
        return not_measured("PyTorch's CPU threads are one pool for the whole process, so two instances here "
                            "cannot each get a share of the threads as two Triton instances do")
    bound_s = min(INSTANCE_SECONDS, opts.policy.max_seconds)
    threads_each = None if threads is None else max(1, threads // 2)
    say(f"timing 1 against 2 instances at batch {choice.batch_size}"
        + (f" ({threads} threads against 2 x {threads_each})" if threads else "") + f", up to {bound_s:g} s")
    found = search_instances(
        lambda share: _open_runner(opts, info, imgsz, run_folder, threads=share), runner, choice.batch_size,
        imgsz, threads=threads, bound_s=bound_s, warmup_runs=opts.policy.warmup_runs,
        fixed_calls=opts.policy.runs, measured_on=f"{opts.backend} ({runner.provider}) on {device_name}")
    found = for_latency(found, choice)
    say(found.reason)
    return found


def _write_configs(opts: InferenceOptions, run: _Run, chosen: BatchMeasurement, reason: str, run_dir: Path,
                   notes: list[str], queue_delay_ms: float | None = None, int8: bool = False) -> dict[str, str]:
    constraints = run.constraints
    slack = (None if constraints.latency_ms is None else
             constraints.latency_ms - constraints.fill_wait_ms(chosen.batch_size) - chosen.latency_p99_ms)
    gpu = run.device_type == "cuda" or opts.target is not None
    spec = deploy.DeploymentSpec(
        model_name=identifier(run.info.path.stem), task=run.info.task, imgsz=run.imgsz, batch_size=chosen.batch_size,
        precision="fp16" if run.precision.startswith("fp16") else "fp32", num_classes=run.num_classes,
        outputs=tuple((name, str(array.dtype), tuple(array.shape[1:])) for name, array in run.outputs),
        input_name=run.input_name, input_dtype=run.input_dtype, load=constraints.load, latency_slack_ms=slack,
        gpu=gpu, summary=reason, queue_delay_ms=queue_delay_ms, **_instance_settings(run, gpu),
    )
    if int8 and spec.gpu:  # precision= asked for INT8: the GPU configs build it, from TensorRT's calibration cache
        spec = dataclasses.replace(spec, precision="int8", int8_calibration_cache=deploy.INT8_CACHE_NAME)
        notes.append(deploy.INT8_CACHE_NOTE.format(cache=deploy.INT8_CACHE_NAME,
                                                   int8_onnx=int8_file_name(run.info.path)))
    info = run.info
    onnx_path = info.path if info.path.suffix == ".onnx" else _sibling_onnx(info.path)
    if onnx_path is None:
        notes.append(f"the configs name {spec.model_name}.onnx, which this run did not export: make it with "
                     f"visionbatch infer {opts.model} backend=onnxruntime (the ONNX lands in the run folder) "
                     f"and put it in deepstream/ under that name")
    plan_bytes = engine_bytes(info.path) if opts.backend == "tensorrt" else None
    external = info.external_data if onnx_path == info.path else ()
    written = deploy.write_deployment(spec, run_dir, info.names, onnx_path=onnx_path, engine_plan=plan_bytes,
                                      onnx_external_data=external)
    return {key: str(path) for key, path in written.items()}


def _instance_settings(run: _Run, gpu: bool) -> dict[str, Any]:
    """Triton's instance count, the note above it, and each instance's CPU threads, from the instance search."""
    found = run.instances or not_measured("no instance search ran")
    note = found.reason + (f"; measured with {found.measured_on}" if found.measured_on else "")
    share = found.threads_each if found.count == 2 else found.threads
    threads = None if gpu else (share or run.threads)
    return {"instances": found.count, "instances_note": note, "instance_threads": threads}


def _ready_model(opts: InferenceOptions) -> tuple[ModelInfo, int] | str:
    """(info, imgsz) of a ready .onnx/.engine, checked; for a .pt/.yaml, its task (export comes later)."""
    if opts.kind == "onnx":
        info = onnx_info(Path(opts.model))
        return info, _check_size(opts, info)
    if opts.kind == "engine":
        info = engine_info(Path(opts.model))
        return info, _check_size(opts, info)
    task = source_task(opts.model, opts.trust_checkpoint)
    if task not in {"detect", "segment"}:
        raise ConfigError(f"model={opts.model} is a {task} model: visionbatch infer tunes detect and segment models")
    return task


def _export_model(opts: InferenceOptions, task: str, run_dir: Path, say: Callable[[str], None],
                  notes: list[str]) -> tuple[ModelInfo, int]:
    """The .pt/.yaml exported into the run folder for the backend (PyTorch runs the source itself)."""
    imgsz = opts.imgsz or 640
    if opts.backend == "pytorch":
        return ModelInfo(path=Path(opts.model), task=task, names={}, imgsz=imgsz), imgsz
    fmt = "engine" if opts.backend == "tensorrt" else "onnx"
    say(f"exporting {opts.model} to {fmt} at imgsz={imgsz} with a dynamic batch (Ultralytics exporter, offline)")
    path = export(opts.model, fmt, run_dir, imgsz, half=opts.half, device=opts.device,
                  max_batch=max(opts.batch_sizes))
    exported = onnx_info(path) if fmt == "onnx" else engine_info(path)
    info = dataclasses.replace(exported, task=task, imgsz=imgsz)
    notes.append(f"exported {Path(opts.model).name} to {path.name} (dynamic batch) in the run folder")
    return info, _check_size(opts, info)


def _check_size(opts: InferenceOptions, info: ModelInfo) -> int:
    fixed = info.fixed_hw[0] if info.fixed_hw and info.fixed_hw[0] == info.fixed_hw[1] else None
    imgsz = opts.imgsz or info.imgsz or fixed or 640
    if info.fixed_hw is not None and info.fixed_hw != (imgsz, imgsz):
        raise ConfigError(f"imgsz={imgsz}: {info.path.name} takes {info.fixed_hw[0]}x{info.fixed_hw[1]} inputs only: "
                          f"use imgsz={info.fixed_hw[0]}, or re-export with dynamic=True")
    if info.fixed_batch is not None and any(b != info.fixed_batch for b in opts.batch_sizes):
        raise ConfigError(f"model={info.path}: the batch dimension is fixed at {info.fixed_batch}: re-export with "
                          f"dynamic=True (visionbatch does for .pt/.yaml models), or give "
                          f"batch_sizes={info.fixed_batch}")
    return imgsz


def _open_runner(opts: InferenceOptions, info: ModelInfo, imgsz: int, run_folder: Callable[[], Path],
                 threads: int | None = None) -> Any:
    """The backend's runner; `threads` (a CPU instance's share) in place of the run's own count."""
    if opts.backend == "pytorch":
        return TorchRunner(opts.model, opts.device, half=opts.half)
    if opts.backend == "tensorrt":
        return TensorRTRunner(info.path, opts.device)
    # only ONNX Runtime's TensorRT provider keeps files (its engine cache) in the run folder
    cache_dir = run_folder() / "ort_trt_cache" if opts.provider == "tensorrt" else None
    return OnnxRuntimeRunner(info, opts.device, threads=threads or opts.threads or cpu_count(), provider=opts.provider,
                             imgsz=imgsz, max_batch=max(opts.batch_sizes), cache_dir=cache_dir, half=opts.half)


def _fit_sizes(sizes: tuple[int, ...], runner: Any, notes: list[str]) -> tuple[int, ...]:
    limit = getattr(runner, "max_batch", None)
    if limit is None or max(sizes) <= limit:
        return sizes
    kept = tuple(b for b in sizes if b <= limit) or (limit,)
    notes.append(f"the engine's optimisation profile stops at batch {limit}: batches above it were not tried")
    return kept


def _dry_run(runner: Any, imgsz: int) -> list[tuple[str, np.ndarray]]:
    """One batch-1 call: proves the model runs and gives the output names, dtypes and shapes."""
    outputs = runner.infer(runner.prepare(np.zeros((1, 3, imgsz, imgsz), dtype=np.float32)))
    runner.synchronize()
    names = getattr(runner, "output_names", None) or [f"output{i}" for i in range(len(outputs))]
    found = []
    for name, raw in zip(names, outputs):
        half = str(getattr(raw, "dtype", "")).endswith("float16")
        array = raw.detach().cpu().numpy() if hasattr(raw, "detach") else np.asarray(raw)
        found.append((name, array.astype(np.float16 if half else np.float32)))
    return found


def _classes_from_outputs(task: str, outputs: list[tuple[str, np.ndarray]]) -> int:
    channels = outputs[0][1].shape[1]
    return channels - 4 - (outputs[1][1].shape[1] if task == "segment" and len(outputs) > 1 else 0)


def _probe(opts: InferenceOptions, jetson: JetsonInfo | None) -> Any:
    if jetson is not None:
        return probes.jetson_probe()
    if opts.device.startswith("cuda"):
        import torch

        return probes.cuda_probe(torch.device(opts.device), opts.backend)
    return probes.RssProbe()


def _constraints(opts: InferenceOptions, jetson: JetsonInfo | None, notes: list[str]) -> Constraints:
    budget, source = memory_budget_for(opts, jetson)
    if source:
        notes.append(f"memory budget: {human_bytes(budget)} = {source}")
    load = StreamLoad(opts.streams, opts.fps) if opts.streams is not None else None
    return Constraints(latency_ms=opts.latency_ms, memory_budget_bytes=budget, memory_budget_source=source, load=load)


def _memory_limit(opts: InferenceOptions, jetson: JetsonInfo | None, constraints: Constraints) -> int | None:
    """The reading past which the sweep stops: the budget, or most of what is free now."""
    limits = [constraints.memory_budget_bytes] if constraints.memory_budget_bytes else []
    if opts.device.startswith("cuda") and jetson is None:
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(opts.device))
        limits.append(int(SAFETY_SHARE * free + torch.cuda.memory_reserved(torch.device(opts.device))))
    else:
        meminfo = board.read_meminfo()
        available = meminfo.get("MemAvailable")
        if available is not None:
            from visionbatch.devices.memory import current_rss_bytes

            now = board.memory_used_bytes(meminfo) if jetson else current_rss_bytes()
            limits.append(int((now or 0) + SAFETY_SHARE * available))
    return min(limits) if limits else None


def _device_name(device: str, jetson: JetsonInfo | None) -> str:
    if jetson is not None:
        return jetson.model
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    from ultralytics.utils.torch_utils import get_cpu_info

    return get_cpu_info()


def _measurement_notes(opts: InferenceOptions, jetson: JetsonInfo | None, device_name: str,
                       measurements: tuple[BatchMeasurement, ...]) -> list[str]:
    notes = []
    if opts.target is not None and (jetson is None or jetson.module != opts.target):
        name = opts.target.name if opts.target.name.startswith("a ") else f"the {opts.target.name}"  # target=6GiB
        notes.append(f"timings are from {device_name}, not from {name}: the configs carry this "
                     f"machine's choice; run visionbatch infer on {name} for its own numbers")
    fewest = min(m.runs for m in measurements)
    if fewest < 100:
        notes.append(f"p99 from {fewest} runs (the fewest of any batch) is close to the slowest single run: give "
                     f"seconds= or runs= for a steadier tail")
    if opts.end_to_end and str(opts.model).endswith((".yaml", ".yml")):
        notes.append("weights are untrained (model from a YAML): NMS finds no candidates, so post-processing "
                     "times are a lower bound; use your trained .pt for real ones")
    return notes


def _sibling_onnx(path: Path) -> Path | None:
    candidate = path.with_suffix(".onnx")
    return candidate if candidate.is_file() else None


def _choice_key(opts: InferenceOptions, runner: Any, imgsz: int, device_name: str, threads: int | None,
                constraints: Constraints) -> dict[str, Any]:
    """The question this run's choice answers, for `infer.kept`."""
    target = opts.target
    return choice_key(
        model_sha256=model_sha256(opts.model), model=opts.model, backend=opts.backend, provider=runner.provider,
        precision=runner.precision, imgsz=imgsz, end_to_end=opts.end_to_end, device=opts.device,
        device_name=device_name, threads=threads, target=None if target is None else getattr(target, "key", str(target)),
        batch_sizes=opts.batch_sizes, latency_ms=constraints.latency_ms,
        memory_budget_bytes=opts.memory_budget_bytes, memory_fraction=opts.memory_fraction,
        streams=constraints.load.streams if constraints.load else None,
        fps=constraints.load.fps if constraints.load else None, software=_versions())


def _versions() -> dict[str, str]:
    found = versions()
    from importlib.metadata import PackageNotFoundError, version

    for name in ("onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
