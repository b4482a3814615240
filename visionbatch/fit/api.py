"""fit_batch(): fit the training batch to a device by measuring the real step, or predict it.

`fit_batch` checks the options (`FitOptions`) and the dataset (`ultralytics.job.prepare`), then
`fit_job` builds the step Ultralytics would train (`ultralytics.step`) and a probe for the device
(CUDA, a CPU budget, or a CPU trace for a `target` GPU), sets what Ultralytics' trainer sets for
the probes (deterministic algorithms, threads, RNG; all restored after), and hands them to the
schedule in planner.py. `visionbatch train batch=auto` prepares its job once and calls `fit_job`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionbatch.console import err
from visionbatch.devices.memory import Capacity
from visionbatch.errors import ConfigError
from visionbatch.fit.distributed import (
    DdpOverhead,
    DistributedPlan,
    combine_plans,
    default_context_bytes,
    gradient_bucket_bytes,
    nccl_buffer_bytes,
    several_gpus,
)
from visionbatch.fit.plan import BatchCheck, BatchPlan, WorkloadSummary
from visionbatch.fit.planner import MAX_PROBES, StepRunner, check_batch, plan_batch
from visionbatch.fit.probes.base import Probe
from visionbatch.ultralytics.density import DEFAULT_OOM_RISK
from visionbatch.ultralytics.spec import NOMINAL_BATCH
from visionbatch.values import DEFAULT_MEMORY_FRACTION

if TYPE_CHECKING:  # types only: the modules load when a fit runs
    from visionbatch.devices.catalog import Target
    from visionbatch.fit.probes.trace import DeviceModel
    from visionbatch.ultralytics.job import TrainingJob
    from visionbatch.ultralytics.spec import WorkloadSpec

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
    """('cuda:N', None) or ('cpu', budget bytes) for the fit, or a ConfigError saying what works instead.

    A fit measures one device it can name: several GPUs, -1 (the idle GPU Ultralytics picks when
    training starts) and mps are refused. Nothing given means GPU 0 when there is one and no budget.
    """
    from visionbatch.devices.memory import cuda_available
    from visionbatch.devices.parse import check_device, parse_device
    from visionbatch.units import parse_bytes

    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    request = parse_device(device)
    if request.picks_idle:
        raise ConfigError(f"device={request.text}: Ultralytics picks the idle GPU only when training starts, so fit "
                          f"cannot measure it: name the GPU, e.g. device=0, or fit on the CPU with memory_budget=")
    if request.kind == "mps":
        raise ConfigError(f"device={request.text}: fit measures a CUDA GPU, or CPU steps against a budget: "
                          f"use device=0, or device=cpu with memory_budget= (e.g. memory_budget=4GiB)")
    if request.kind == "default":
        request = request.resolve(cuda_available() and budget is None)
    if request.kind == "cpu":
        if budget is None:
            raise ConfigError(
                "no CUDA device to fit the batch on here: pass memory_budget= (e.g. memory_budget=4GiB) to fit "
                "against a CPU memory budget with real CPU steps, or target=<gpu> to predict for a GPU you do "
                "not have (visionbatch fit --help lists the targets)"
            )
        return "cpu", budget
    check_device(request)
    if len(request.indices) > 1:
        raise ConfigError(f"device={request.text}: fit one GPU at a time, e.g. device={request.first}; "
                          f"with DDP each GPU takes batch / {len(request.indices)} images")
    if budget is not None:
        raise ConfigError(f"memory_budget={memory_budget} is for CPU fits: on device={request.text} the GPU's own "
                          f"memory is the budget (use memory_fraction= to aim lower)")
    return request.torch_name, None


def fit_batch(
    data: str | os.PathLike,
    model: str | None = None,
    imgsz: int = 640,
    device: Any = None,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    memory_budget: str | int | None = None,
    target: str | None = None,
    labels_per_image: int | None = None,
    max_probes: int = MAX_PROBES,
    save: bool = False,
    batch_size: int | None = None,
    oom_risk: float = DEFAULT_OOM_RISK,
    plan_cache: bool = True,
    progress: Callable[[str], None] | None = err,
    **train_args: Any,
) -> BatchPlan | BatchCheck | DistributedPlan:
    """Fit the training batch to the device by measuring the real training step, or predict it.

    With `batch_size` it answers one question instead, without searching: will this batch fit?
    (a `BatchCheck`: training at the batch and validation at twice it, the peaks, the margin).

    Args:
        data: the dataset's data.yaml (its labels set the label density).
        model: model YAML or local checkpoint (default: yolo11n for the task).
        imgsz: training image size.
        device: CUDA device (0, 'cuda:1') or 'cpu' (default: GPU 0 when there is one); several
            GPUs ('0,1') fit the per-GPU batch of a DDP run on each (a `DistributedPlan`).
        memory_fraction: share of the usable memory to fill (0 < f <= 1).
        memory_budget: the memory to fit into instead of a GPU's ('2GiB'): real CPU steps against
            it, where it bounds the whole training process's resident memory (a measured baseline:
            Python, torch, Ultralytics, model, optimizer, trainer and loader; plus each step's growth);
            with `target`, the memory the target leaves to training.
        target: a GPU you do not have (`'gtx1050'`, `'rtx3060'`, `'orin-nano-8gb'`, or a size
            such as `'6GiB'`): the plan is predicted from a CPU trace of the step, not measured.
        labels_per_image: force this many labels into every training image of the measured
            batch (default: the run's label counts modelled from the dataset, at `oom_risk`).
        oom_risk: the chance, at most, that any batch of the run carries more labels than the
            measured batch (`ultralytics.density`).
        max_probes: the most training probes to run.
        save: write `plan.json` and `memory_curve.png` into a new run folder, `runs/fit/<name>/`
            (`name=` and `project=` as in Ultralytics); `plan.save_dir` says where.
        batch_size: check this one batch instead of searching (`batch=16` means the same).
        plan_cache: reuse a plan fitted before for the same device, software, model, data and
            arguments (`fit.cache`; `plan.reused` says so), and store a new one; False fits
            without reading or writing the cache.
        progress: receives a line as each step starts, one per probe (batch, peaks, whether it fits,
            the time left), the trace's stages and the timing (default: stderr); None for silence.
            A `console.Progress` also draws a bar over the planned probes on a terminal.
        **train_args: Ultralytics train arguments that shape the step (task, multi_scale, amp,
            optimizer, epochs, mosaic, close_mosaic, mask_ratio, overlap_mask, freeze, ...).

    Returns:
        A verified `BatchPlan` (`plan.measured` is False for a target's prediction), or with
        `batch_size` a `BatchCheck`; for several GPUs a `DistributedPlan` (`fit_devices`).

    Raises:
        ConfigError: an unknown or impossible argument; no device and no budget; an unknown target.
        DatasetError: a data.yaml problem.
        BudgetError: not even batch 1 fits.

    Examples:
        >>> plan = fit_batch("datasets/shapes/data.yaml", imgsz=64, memory_budget="256MiB")  # doctest: +SKIP
        >>> plan.batch_size <= plan.max_batch_size, plan.measured_bytes <= plan.budget_bytes  # doctest: +SKIP
        (True, True)
        >>> fit_batch("datasets/shapes/data.yaml", model="yolo11s.yaml", imgsz=1024, target="gtx1050").measured  # doctest: +SKIP
        False
        >>> fit_batch("datasets/shapes/data.yaml", batch_size=16, target="gtx1050").fits  # doctest: +SKIP
        True
    """
    if "batch" in train_args:  # batch= keeps its one meaning here too: a size asks, a fit request sets the fraction
        from visionbatch.values import parse_batch

        request = parse_batch(train_args.pop("batch"))
        if request.fit:
            memory_fraction = request.memory_fraction
        elif batch_size is not None and batch_size != request.batch_size:
            raise ConfigError(f"{request.source} and batch_size={batch_size} disagree: give one of them")
        else:
            batch_size = request.batch_size
    options = FitOptions.check(device=device, memory_fraction=memory_fraction, memory_budget=memory_budget,
                               target=target, labels_per_image=labels_per_image, max_probes=max_probes, imgsz=imgsz,
                               batch_size=batch_size, oom_risk=oom_risk, plan_cache=plan_cache)
    gpus = several_gpus(options.device, options.memory_budget)  # a DDP run's GPUs, refused here when absent
    if gpus and options.batch_size is not None:
        raise ConfigError(f"batch_size={options.batch_size} with device={','.join(map(str, gpus))}: the one-batch "
                          f"check measures one GPU: ask it of each, e.g. device={gpus[0]} batch="
                          f"{max(options.batch_size // len(gpus), 1)} (each of the {len(gpus)} GPUs trains batch / "
                          f"{len(gpus)}), or drop batch= to fit the per-GPU batch on all of them")
    overrides = {**train_args, "imgsz": imgsz}
    if model is not None:
        overrides["model"] = model
    overrides.pop("batch", None)
    from visionbatch.keys import visionbatch_keys
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    with offline():
        job = prepare(data, overrides, visionbatch_keys("fit"), command="fit")  # name=, project= checked here
        plan = (fit_devices(job, options, gpus, progress=progress) if gpus else
                fit_job(job, options, progress=progress))
    return save_plan(plan, train_args.get("name"), train_args.get("project")) if save else plan


PLAN_JSON = "plan.json"
CURVE_PNG = "memory_curve.png"


def curve_names(plan: BatchPlan | BatchCheck | DistributedPlan) -> tuple[str, ...]:
    """The memory-curve pictures `write_plan` draws: one for a plan, one per GPU for a DDP plan, none for a check.

    Examples:
        >>> curve_names(DistributedPlan(4, 8, 2, ("cuda:0", "cuda:1"), (), 0, 0, 0, 8, 64, ""))
        ('memory_curve_cuda0.png', 'memory_curve_cuda1.png')
    """
    if isinstance(plan, DistributedPlan):
        return tuple(f"{Path(CURVE_PNG).stem}_{device.replace(':', '')}.png" for device in plan.devices)
    return () if isinstance(plan, BatchCheck) else (CURVE_PNG,)


def write_plan(plan: BatchPlan | BatchCheck | DistributedPlan, folder: str | os.PathLike,
               json_name: str = PLAN_JSON) -> tuple[Path, ...]:
    """Write the plan's JSON and its memory-curve plots (`curve_names`) into `folder`."""
    from visionbatch.fit.plot import plot_batch_plan
    from visionbatch.results import write_json

    folder = Path(folder)
    written = write_json(folder / json_name, plan)
    plans = plan.per_device if isinstance(plan, DistributedPlan) else () if isinstance(plan, BatchCheck) else (plan,)
    return (written, *(plot_batch_plan(one, folder / name) for one, name in zip(plans, curve_names(plan))))


def save_plan(plan: BatchPlan | BatchCheck | DistributedPlan, name: str | None = None,
              project: str | os.PathLike | None = None) -> BatchPlan | BatchCheck | DistributedPlan:
    """Write the plan (or check) into a new run folder, `runs/fit/<name>/`; return it with `save_dir` set."""
    from visionbatch.rundir import new_run_dir

    plan = replace(plan, save_dir=str(new_run_dir("fit", name, project)))
    write_plan(plan, plan.save_dir)
    return plan


@dataclass(frozen=True, slots=True)
class FitOptions:
    """How to fit, checked before any data is read (see `fit_batch` for each option's meaning).

    Attributes:
        device: the device as given (resolved when the fit runs: 'cuda:N' or 'cpu').
        memory_fraction: share of the usable memory to fill.
        memory_budget_bytes: the memory to fit into instead of the device's, or None.
        memory_budget: that budget as the user wrote it ('2GiB'), for messages.
        target: the GPU to predict for (a `devices.catalog.Target`), or None to measure.
        labels_per_image: forced label density, or None for the dataset's worst case.
        max_probes: the most training probes to run.
        batch_size: the one batch to check instead of searching, or None to search.
        oom_risk: the chance, at most, that a batch of the run carries more labels than measured.
        plan_cache: reuse and store searched plans (`fit.cache`).
    """

    device: Any = None
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    memory_budget_bytes: int | None = None
    target: Target | None = None
    labels_per_image: int | None = None
    max_probes: int = MAX_PROBES
    memory_budget: Any = None
    batch_size: int | None = None
    oom_risk: float = DEFAULT_OOM_RISK
    plan_cache: bool = True

    @classmethod
    def check(cls, *, device: Any = None, memory_fraction: Any = DEFAULT_MEMORY_FRACTION, memory_budget: Any = None, target: Any = None,
              labels_per_image: Any = None, max_probes: Any = MAX_PROBES, imgsz: Any = None,
              batch_size: Any = None, oom_risk: Any = DEFAULT_OOM_RISK, plan_cache: Any = True) -> FitOptions:
        """Check every option; a problem is a one-line ConfigError naming it.

        Examples:
            >>> FitOptions.check(memory_budget="2GiB", max_probes=4).memory_budget_bytes
            2147483648
            >>> FitOptions.check(max_probes=1)
            Traceback (most recent call last):
            visionbatch.errors.ConfigError: max_probes=1 is impossible: use an integer >= 2, e.g. max_probes=8
        """
        from visionbatch.checks import (
            MAX_BATCH_SIZE,
            check_fraction,
            check_labels_per_image,
            check_oom_risk,
            whole_number,
        )
        from visionbatch.devices.catalog import find_target
        from visionbatch.units import parse_bytes
        from visionbatch.values import check_switch

        fraction = check_fraction(memory_fraction)
        labels = check_labels_per_image(labels_per_image)
        probes = whole_number(max_probes, "max_probes", example="max_probes=8", minimum=2)  # the planner needs 2
        budget = parse_bytes(memory_budget) if memory_budget is not None else None
        gpu = find_target(target) if target is not None else None  # a catalog name, or a size ('6GiB')
        if gpu is not None and device is not None:
            raise ConfigError(f"device={device} with target={target}: a prediction runs on this CPU; "
                              f"drop device= (or drop target= to measure on the device)")
        check_probe_imgsz(imgsz)
        batch = (whole_number(batch_size, "batch_size", example="batch_size=16", maximum=MAX_BATCH_SIZE)
                 if batch_size is not None else None)
        return cls(device, fraction, budget, gpu, labels, probes, memory_budget, batch, check_oom_risk(oom_risk),
                   check_switch(plan_cache, "plan_cache"))


def check_probe_imgsz(imgsz: Any) -> None:
    """Refuse sizes a probe at batch 1 cannot train (anything else is left to the size check proper).

    Examples:
        >>> check_probe_imgsz(640)
        >>> check_probe_imgsz(32)
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: imgsz=32: fitting probes batch 1, and below 64 pixels the model's deepest feature map is 1x1, where BatchNorm cannot train one image: use imgsz=64 or more
    """
    from visionbatch.checks import MIN_IMGSZ, MIN_PROBE_IMGSZ

    if isinstance(imgsz, int) and not isinstance(imgsz, bool) and MIN_IMGSZ <= imgsz < MIN_PROBE_IMGSZ:
        raise ConfigError(f"imgsz={imgsz}: fitting probes batch 1, and below {MIN_PROBE_IMGSZ} pixels the model's "
                          f"deepest feature map is 1x1, where BatchNorm cannot train one image: use "
                          f"imgsz={MIN_PROBE_IMGSZ} or more")


def fit_job(job: TrainingJob, options: FitOptions,
            progress: Callable[[str], None] | None = None) -> BatchPlan | BatchCheck:
    """Fit the batch for a prepared training job (`ultralytics.job.prepare`): the dataset is read once.

    Args:
        job: the prepared `TrainingJob`; its model, task, dataset and train arguments shape the step.
        options: how to fit (`FitOptions.check`).
        progress: receives a line per step as it goes (see `fit_batch`); None for silence.

    Returns:
        A verified `BatchPlan` (`plan.measured` is False for a target's prediction), or a
        `BatchCheck` when `options.batch_size` asks about one batch. With `options.plan_cache` a
        search stored for the same key (`fit.cache.plan_key`) is reused (`plan.reused` says so).
    """
    from visionbatch.ultralytics.offline import offline, trusted_checkpoints

    check_probe_imgsz(job.args.get("imgsz"))
    with offline(), trusted_checkpoints(bool(job.options.get("trust_checkpoint"))):  # the probes load the model
        if options.plan_cache and options.batch_size is None:  # a search is cached; the one-batch check is not
            plan = _cached_search(job, options, progress)
            if plan.reused is not None and progress is not None:
                progress(f"{plan.reused.describe()}: no probes run (plan_cache=False fits again)")
            return plan
        if options.target is not None:
            return _predicted_plan(job, options, progress)
        return _measured_plan(job, options, progress=progress)


def _cached_search(job: TrainingJob, options: FitOptions,
                   progress: Callable[[str], None] | None = None) -> BatchPlan | BatchCheck:
    """The plan cache's plan for this job and device when one is stored and still fits; else the search, stored."""
    from visionbatch.fit.cache import cached_fit

    if options.target is not None:
        return cached_fit(job, options, "target", lambda: _predicted_plan(job, options, progress))
    device = resolve_device(options.device, options.memory_budget)[0]  # a bad device= is one line before any work
    return cached_fit(job, options, device, lambda: _measured_plan(job, options, progress=progress))


def fit_devices(job: TrainingJob, options: FitOptions, gpus: Sequence[int], probes: Mapping[int, Probe] | None = None,
                runner: StepRunner | None = None, progress: Callable[[str], None] | None = None) -> DistributedPlan:
    """Fit the per-GPU batch of a DDP run on each of `gpus`: the smallest GPU's batch is every GPU's.

    Each GPU is fitted on its own, as `fit_job` fits one, after what a DDP rank holds beside each
    step is set aside from its memory (`fit.distributed.DdpOverhead`: DDP's gradient buckets,
    NCCL's buffers, the fitting process's CUDA context). These fits are not cached: the plan
    cache keeps one device's search.

    Args:
        job: the prepared job (`ultralytics.job.prepare`).
        options: how to fit (`FitOptions.check`); its device is replaced by each GPU in turn.
        gpus: the CUDA indices, in `device=` order.
        probes: a probe for an index, in place of that GPU's own (a simulated GPU in tests); its
            steps run on the CPU.
        runner: what runs the steps, in place of the job's real step (tests: a runner that does nothing).
        progress: receives a line per step as it goes, GPU after GPU (see `fit_batch`); None for silence.

    Returns:
        The `DistributedPlan`: the per-GPU batch, the total for Ultralytics, each GPU's plan.

    Examples:
        >>> plan = fit_devices(job, FitOptions.check(), (0, 1))  # doctest: +SKIP
        >>> plan.total_batch == 2 * plan.per_gpu_batch == 2 * plan.governing.batch_size  # doctest: +SKIP
        True
    """
    from visionbatch.ultralytics.offline import offline, trusted_checkpoints

    check_probe_imgsz(job.args.get("imgsz"))
    with offline(), trusted_checkpoints(bool(job.options.get("trust_checkpoint"))):  # the probes load the model
        overhead = DdpOverhead(_trainable_bytes(job, options), nccl_buffer_bytes(), default_context_bytes())
        plans = []
        for number, index in enumerate(gpus, 1):
            if progress is not None:
                progress(f"GPU {number} of {len(gpus)}: fitting cuda:{index}")
            plans.append(_measured_plan(job, replace(options, device=f"cuda:{index}"), given=(probes or {}).get(index),
                                        runner=runner, set_aside=overhead.set_aside, progress=progress))
    return combine_plans(plans, overhead)


def _trainable_bytes(job: TrainingJob, options: FitOptions) -> int:
    """DDP's gradient buckets for the job's model as the trainer builds it (frozen layers left out), on the CPU."""
    import torch

    from visionbatch.ultralytics.spec import job_spec
    from visionbatch.ultralytics.step import build_model, training_cfg

    spec = job_spec(job, "cpu", "", options.labels_per_image, oom_risk=options.oom_risk)
    with torch.random.fork_rng(devices=[]):  # building initialises weights from the caller's random stream
        return gradient_bucket_bytes(build_model(spec, training_cfg(spec), "cpu"))


def _measured_plan(job: TrainingJob, options: FitOptions, given: Probe | None = None, runner: StepRunner | None = None,
                   set_aside: Callable[[Capacity], tuple[int, str]] | None = None,
                   progress: Callable[[str], None] | None = None) -> BatchPlan | BatchCheck:
    """Measure the plan on the device. `given` replaces the device's probe (a simulated GPU: the steps run on the
    CPU), and with it `runner` the real step (none is built); `set_aside` takes what the run holds beside every
    step (DDP's) off the usable memory first."""
    from visionbatch.ultralytics.spec import job_spec
    from visionbatch.ultralytics.step import Workload

    if given is not None:  # a simulated GPU in tests: its readings, the steps on the CPU
        probe, device_name, gpu = given, "cpu", ""
    else:
        device_name, budget = resolve_device(options.device, options.memory_budget)
        probe, gpu = _device_probe(job, device_name, budget)
    device_type = device_name.split(":")[0]
    spec = job_spec(job, device_type, gpu, options.labels_per_image, oom_risk=options.oom_risk)
    with trainer_globals(bool(job.args.get("deterministic", True)), device_type):
        if (runner is None or given is None) and progress is not None:
            progress(f"building the training step on {device_name}: {spec.model}, its loss, optimizer and EMA")
        workload = Workload(spec, device_name) if runner is None or given is None else None
        steps = workload or runner
        try:
            if device_type == "cpu" and given is None:
                probe.count_model(workload.model)  # type: ignore[attr-defined]  # the trainer builds its own copy
            capacity = probe.capacity()  # after the model is built: the CUDA context, or the CPU baseline, exists
            notes: tuple[str, ...] = ()
            if set_aside is not None:
                held, note = set_aside(capacity)
                capacity, notes = replace(capacity, usable_bytes=capacity.usable_bytes - held), (note,)
            description = WorkloadSummary(**spec.describe(), max_imgsz=workload.train_imgsz if workload else spec.imgsz,
                                          data=job.dataset.yaml_path, device=given.device if given else device_name,
                                          val_images=_images(job, spec)[1])
            if options.batch_size is not None:
                plan = check_batch(probe, steps, options.batch_size, options.memory_fraction, description,
                                   capacity=capacity, images=_images(job, spec), progress=progress)
            else:
                plan = plan_batch(probe, steps, options.memory_fraction, spec.dataset_images, description,
                                  nominal_batch=int(job.args.get("nbs", NOMINAL_BATCH)),
                                  max_probes=options.max_probes, capacity=capacity, progress=progress)
            plan = _counted(plan, spec)
            return replace(plan, warnings=plan.warnings + notes) if notes else plan
        finally:
            if workload is not None:
                workload.close()


def _device_probe(job: TrainingJob, device_name: str, budget: int | None) -> tuple[Probe, str]:
    """The probe for 'cuda:N' (made the current device) or the CPU against `budget`, and the GPU's name."""
    import torch

    if device_name.startswith("cuda"):
        from visionbatch.fit.probes.cuda import CudaProbe

        probe = CudaProbe(int(device_name.split(":")[1]))
        torch.cuda.set_device(probe.index)
        return probe, torch.cuda.get_device_name(probe.index)
    from visionbatch.devices.memory import device_name as describe
    from visionbatch.fit.probes.cpu import CpuProbe, trainer_share

    # the budget bounds the training process: a measured baseline, the trainer's share, each step
    return CpuProbe(budget, name=describe(torch.device("cpu")), trainer=trainer_share(job)), ""


def target_capacity(gpu: Target, memory_budget_bytes: int | None = None) -> tuple[Capacity, DeviceModel]:
    """The memory a target GPU offers training, and the CUDA overheads (`DeviceModel`) to predict it with.

    Usable memory is the target's budget (its memory, less what the OS keeps on a Jetson), or
    `memory_budget_bytes` when given.

    Examples:
        >>> from visionbatch.devices.catalog import find_target
        >>> capacity, _ = target_capacity(find_target("gtx1050"), memory_budget_bytes=3 << 30)
        >>> capacity.device, capacity.usable_bytes, capacity.used_by_others_bytes
        ('target:gtx1050', 3221225472, 1073741824)
    """
    from visionbatch.fit.probes.trace import DeviceModel

    device_model = DeviceModel.for_arch(gpu.name, gpu.arch)
    return gpu.capacity(memory_budget_bytes, context_bytes=device_model.context_bytes), device_model


def _predicted_plan(job: TrainingJob, options: FitOptions,
                    progress: Callable[[str], None] | None = None) -> BatchPlan | BatchCheck:
    from visionbatch.fit.probes.trace import TraceEstimator, TraceProbe, TraceRunner
    from visionbatch.ultralytics.spec import job_spec, trainer_amp

    gpu = options.target
    capacity, device_model = target_capacity(gpu, options.memory_budget_bytes)
    spec = job_spec(job, "cuda", gpu.name, options.labels_per_image, amp=trainer_amp(job.args, gpu.amp),
                    oom_risk=options.oom_risk)
    with trainer_globals(bool(job.args.get("deterministic", True)), "cpu"):
        estimator = TraceEstimator(spec, device_model, progress=progress)
        probe = TraceProbe(estimator, capacity)
        description = WorkloadSummary(**spec.describe(), max_imgsz=estimator.train_imgsz, device=capacity.device,
                                      data=job.dataset.yaml_path, target=gpu.key, val_images=_images(job, spec)[1])
        if options.batch_size is not None:
            plan = check_batch(probe, TraceRunner(), options.batch_size, options.memory_fraction, description,
                               capacity=capacity, measured=False, images=_images(job, spec), progress=progress)
        else:
            plan = plan_batch(probe, TraceRunner(), options.memory_fraction, spec.dataset_images, description,
                              nominal_batch=int(job.args.get("nbs", NOMINAL_BATCH)), max_probes=options.max_probes,
                              capacity=capacity, measured=False, progress=progress)
    calibration = "calibrated" if device_model.calibrated else "uncalibrated defaults (see calibration.json)"
    notes = [f"predicted for {gpu.name} from a CPU trace of the step, not measured on it; CUDA overheads: "
             f"{calibration}"]
    if gpu.note:
        notes.append(gpu.note)
    return _counted(replace(plan, warnings=plan.warnings + tuple(notes)), spec)


def _images(job: TrainingJob, spec: WorkloadSpec) -> tuple[int, int]:
    """Training images (after fraction) and validation images: no batch of the run holds more."""
    return spec.dataset_images, max(job.dataset.val.images, 1)


def _counted(plan: BatchPlan | BatchCheck, spec: WorkloadSpec) -> BatchPlan | BatchCheck:
    """The plan with the labels its answer's training batch was measured with (and, for a check of a
    batch larger than the training set, the batch Ultralytics really trains with)."""
    measured = plan.train.batch_size if isinstance(plan, BatchCheck) else plan.batch_size
    plan = replace(plan, workload=replace(plan.workload, labels_per_batch=sum(spec.batch_labels(measured))))
    if isinstance(plan, BatchCheck) and plan.batch_size > spec.dataset_images:
        plan = replace(plan, warnings=(f"batch {plan.batch_size} is more than the {spec.dataset_images} training "
                                       f"images: the run's batches hold {spec.dataset_images}, and that is what was "
                                       f"measured",) + plan.warnings)
    return plan
