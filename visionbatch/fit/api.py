"""fit_batch(): fit the training batch to a device by measuring the real step, or predict it.

`fit_batch` checks the arguments and the dataset, builds the workload Ultralytics would train
(workload.py) and a probe for the device (CUDA, a CPU budget, or a CPU trace for a `target` GPU),
sets what Ultralytics' trainer sets for the probes (deterministic algorithms, threads, RNG; all
restored after), and hands them to the schedule in planner.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from visionbatch.devices.memory import Capacity
from visionbatch.errors import ConfigError
from visionbatch.fit.planner import MAX_PROBES, NOMINAL_BATCH, plan_batch
from visionbatch.fit.probes.base import Probe
from visionbatch.results import BatchPlan

# -- the public entry point -------------------------------------------------------------------------


@contextlib.contextmanager
def trainer_globals(deterministic: bool, device_type: str) -> Iterator[None]:
    """Set what Ultralytics' trainer sets (init_seeds, threads) for the probes; restore it all after."""
    import torch

    from visionbatch.ultralytics.offline import cpu_count

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.get_num_threads(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    fill = torch.utils.deterministic.fill_uninitialized_memory
    devices = [torch.cuda.current_device()] if device_type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cudnn.benchmark = False
            if deterministic:
                torch.utils.deterministic.fill_uninitialized_memory = False
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
            if device_type == "cpu":
                torch.set_num_threads(cpu_count())
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        torch.set_num_threads(saved[4])
        torch.utils.deterministic.fill_uninitialized_memory = fill
        if saved[5] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[5]


def resolve_device(device: Any, memory_budget: Any) -> tuple[str, int | None]:
    """('cuda:N', None) or ('cpu', budget bytes) for the fit, or a ConfigError saying what works instead."""
    from visionbatch.devices.memory import cuda_available
    from visionbatch.devices.parse import check_device
    from visionbatch.units import parse_bytes

    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    text = "" if device is None else str(device).lower().replace("cuda:", "")
    if text in {"", "none"}:
        text = "0" if cuda_available() and budget is None else "cpu"
    if text == "cpu":
        if budget is None:
            raise ConfigError(
                "no CUDA device to fit the batch on here: pass memory_budget= (e.g. memory_budget=4GiB) to fit "
                "against a CPU memory budget with real CPU steps, or target=<gpu> to predict for a GPU you do "
                "not have (visionbatch fit --help lists the targets)"
            )
        return "cpu", budget
    check_device(text)
    parts = text.split(",")
    if len(parts) > 1:
        raise ConfigError(f"device={device}: fit one GPU at a time, e.g. device={parts[0]}; "
                          f"with DDP each GPU takes batch / {len(parts)} images")
    if budget is not None:
        raise ConfigError(f"memory_budget={memory_budget} is for CPU fits: on device={device} the GPU's own memory "
                          f"is the budget (use memory_fraction= to aim lower)")
    return f"cuda:{int(parts[0])}", None


def fit_batch(
    data: str | os.PathLike,
    model: str | None = None,
    imgsz: int = 640,
    device: Any = None,
    memory_fraction: float = 0.9,
    memory_budget: str | int | None = None,
    target: str | None = None,
    labels_per_image: int | None = None,
    max_probes: int = MAX_PROBES,
    **train_args: Any,
) -> BatchPlan:
    """Fit the training batch to the device by measuring the real training step, or predict it.

    Args:
        data: the dataset's data.yaml (its densest image sets the label density).
        model: model YAML or local checkpoint (default: yolo11n for the task).
        imgsz: training image size.
        device: CUDA device (0, 'cuda:1') or 'cpu' (default: GPU 0 when there is one).
        memory_fraction: share of the usable memory to fill (0 < f <= 1).
        memory_budget: the memory to fit into instead of a GPU's ('2GiB'): real CPU steps against
            it; with `target`, the memory the target leaves to training.
        target: a GPU you do not have (`'gtx1050'`, `'rtx3060'`, `'orin-nano-8gb'`, or a size
            such as `'6GiB'`): the plan is predicted from a CPU trace of the step, not measured.
        labels_per_image: override the worst-case label density (default: densest image,
            x4 while mosaic is on).
        max_probes: the most training probes to run.
        **train_args: Ultralytics train arguments that shape the step (task, multi_scale, amp,
            optimizer, epochs, mosaic, close_mosaic, mask_ratio, overlap_mask, freeze, ...).

    Returns:
        A verified `BatchPlan` (`plan.measured` is False for a target's prediction).

    Raises:
        ConfigError: an unknown or impossible argument; no device and no budget; an unknown target.
        DatasetError: a data.yaml problem.
        BudgetError: not even batch 1 fits.

    Examples:
        >>> plan = fit_batch("datasets/shapes/data.yaml", imgsz=64, memory_budget="256MiB")
        >>> plan.batch_size <= plan.max_batch_size, plan.measured_bytes <= plan.budget_bytes
        (True, True)
        >>> fit_batch("datasets/shapes/data.yaml", model="yolo11s.yaml", imgsz=1024, target="gtx1050").measured
        False
    """
    from visionbatch.checks import (
        MIN_IMGSZ,
        MIN_PROBE_IMGSZ,
        check_fraction,
        check_labels_per_image,
        whole_number,
    )
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline, trusted_checkpoints
    from visionbatch.units import parse_bytes

    memory_fraction = check_fraction(memory_fraction)
    labels_per_image = check_labels_per_image(labels_per_image)
    max_probes = whole_number(max_probes, "max_probes", example="max_probes=8", minimum=2)  # the planner needs 2
    if memory_budget is not None:
        parse_bytes(memory_budget)  # refused before the dataset is read; the plan reads it where it needs it
    if isinstance(imgsz, int) and not isinstance(imgsz, bool) and MIN_IMGSZ <= imgsz < MIN_PROBE_IMGSZ:
        raise ConfigError(f"imgsz={imgsz}: fitting probes batch 1, and below {MIN_PROBE_IMGSZ} pixels the model's "
                          f"deepest feature map is 1x1, where BatchNorm cannot train one image: use "
                          f"imgsz={MIN_PROBE_IMGSZ} or more")
    overrides = {**train_args, "imgsz": imgsz}
    if model is not None:
        overrides["model"] = model
    overrides.pop("batch", None)
    with offline():
        if target is not None:
            gpu = resolve_target(target)
            if device is not None:
                raise ConfigError(f"device={device} with target={target}: a prediction runs on this CPU; "
                                  f"drop device= (or drop target= to measure on the device)")
            job = prepare(data, overrides)
            with trusted_checkpoints(bool(job.options.get("trust_checkpoint"))):
                return _predicted_plan(job, gpu, memory_fraction, memory_budget, labels_per_image, max_probes)
        job = prepare(data, overrides)
        with trusted_checkpoints(bool(job.options.get("trust_checkpoint"))):
            return _measured_plan(job, device, memory_fraction, memory_budget, labels_per_image, max_probes)


def resolve_target(target: Any) -> Any:
    """A known GPU by name, or a generic CUDA GPU of a given size ('6GiB')."""
    from visionbatch.devices.catalog import Target, find_target
    from visionbatch.units import parse_bytes

    text = str(target)
    if text[:1].isdigit():
        size = parse_bytes(text, key="target")
        return Target(f"cuda-{text.lower()}", f"a CUDA GPU with {text}", size, "default",
                      note="a generic GPU: AMP on, the default CUDA context")
    return find_target(text)


def workload_spec(job: Any, device_type: str, device_name: str, labels_per_image: int | None) -> Any:
    from visionbatch.ultralytics.step import make_spec

    return make_spec(job.model, job.task, job.dataset.names, job.dataset.train.images, job.dataset.train.max_instances,
                     job.dataset.val.max_instances, job.args, device_type, device_name, labels_per_image)


def _measured_plan(job: Any, device: Any, fraction: float, memory_budget: Any, labels_per_image: int | None,
                   max_probes: int) -> BatchPlan:
    import torch

    from visionbatch.ultralytics.step import Workload

    device_name, budget = resolve_device(device, memory_budget)
    device_type = device_name.split(":")[0]
    if device_type == "cuda":
        from visionbatch.fit.probes.cuda import CudaProbe

        probe: Probe = CudaProbe(int(device_name.split(":")[1]))
        torch.cuda.set_device(probe.index)
        gpu = torch.cuda.get_device_name(probe.index)
    else:
        from visionbatch.devices.memory import device_name as describe
        from visionbatch.fit.probes.cpu import CpuProbe

        probe = CpuProbe(budget, name=describe(torch.device("cpu")))
        gpu = ""
    spec = workload_spec(job, device_type, gpu, labels_per_image)
    with trainer_globals(bool(job.args.get("deterministic", True)), device_type):
        workload = Workload(spec, device_name)
        try:
            capacity = probe.capacity()  # after the model is on the device: the context exists
            description = {**spec.describe(), "max_imgsz": workload.train_imgsz, "device": device_name,
                           "data": job.dataset.yaml_path}
            return plan_batch(probe, workload, fraction, spec.dataset_images, description,
                              nominal_batch=int(job.args.get("nbs", NOMINAL_BATCH)), max_probes=max_probes,
                              capacity=capacity)
        finally:
            workload.close()


def _predicted_plan(job: Any, gpu: Any, fraction: float, memory_budget: Any, labels_per_image: int | None,
                    max_probes: int) -> BatchPlan:
    from visionbatch.fit.probes.trace import (
        DeviceModel,
        TraceEstimator,
        TraceProbe,
        TraceRunner,
    )
    from visionbatch.units import parse_bytes

    device_model = DeviceModel.for_arch(gpu.name, gpu.arch)
    usable = parse_bytes(memory_budget) if memory_budget is not None else gpu.budget_bytes
    capacity = Capacity(device=f"target:{gpu.key}", name=gpu.name, total_bytes=gpu.total_bytes,
                        used_by_others_bytes=gpu.total_bytes - usable, context_bytes=device_model.context_bytes,
                        usable_bytes=usable)
    spec = workload_spec(job, "cuda", gpu.name if gpu.amp else f"{gpu.name} GTX 1650", labels_per_image)
    with trainer_globals(bool(job.args.get("deterministic", True)), "cpu"):
        estimator = TraceEstimator(spec, device_model)
        probe = TraceProbe(estimator, capacity)
        description = {**spec.describe(), "max_imgsz": estimator.train_imgsz, "device": capacity.device,
                       "data": job.dataset.yaml_path, "target": gpu.key}
        plan = plan_batch(probe, TraceRunner(), fraction, spec.dataset_images, description,
                          nominal_batch=int(job.args.get("nbs", NOMINAL_BATCH)), max_probes=max_probes,
                          capacity=capacity, measured=False)
    calibration = "calibrated" if device_model.calibrated else "uncalibrated defaults (see calibration.json)"
    notes = [f"predicted for {gpu.name} from a CPU trace of the step, not measured on it; CUDA overheads: "
             f"{calibration}"]
    if gpu.note:
        notes.append(gpu.note)
    return replace(plan, warnings=plan.warnings + tuple(notes))
