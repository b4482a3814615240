"""What `visionbatch train` ran and measured: per-epoch records and the run's result (`visionbatch.json`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from visionbatch.fit.distributed import DistributedPlan
from visionbatch.fit.plan import BatchPlan
from visionbatch.results import to_jsonable
from visionbatch.train.recovery import Recovery


@dataclasses.dataclass(frozen=True, slots=True)
class EpochRecord:
    """One training epoch as measured by visionbatch's callbacks.

    Attributes:
        epoch: 1-based epoch number.
        train_s: wall seconds of the training loop.
        val_s: wall seconds of validation (0 when validation was off).
        peak_rss_bytes: the process's peak resident memory during the epoch (CPU memory).
        cuda_peak_allocated_bytes: torch.cuda peak allocated during the epoch, None on CPU.
        cuda_peak_reserved_bytes: torch.cuda peak reserved during the epoch, None on CPU.
        losses: mean training losses by name.
        metrics: validation metrics by Ultralytics' names.
        mosaic: whether mosaic augmentation was on.
        batch_size: the batch the epoch trained with (smaller after an out-of-memory recovery).
        accumulate: the gradient accumulation it trained with (warm-up ramps up to it).
    """

    epoch: int
    train_s: float
    val_s: float
    peak_rss_bytes: int | None
    cuda_peak_allocated_bytes: int | None
    cuda_peak_reserved_bytes: int | None
    losses: dict[str, float]
    metrics: dict[str, float]
    mosaic: bool
    batch_size: int | None = None
    accumulate: int | None = None



@dataclasses.dataclass(frozen=True, slots=True)
class TrainResult:
    """What `visionbatch train` ran and what it measured; written as `visionbatch.json`.

    Attributes:
        status: 'completed', 'interrupted' or 'failed'.
        save_dir: Ultralytics' run folder.
        task: 'detect' or 'segment'.
        model: the model argument that was trained.
        data: the data.yaml trained on.
        device: the torch device used, e.g. 'cpu' or 'cuda:0'.
        device_name: the CPU or GPU model.
        cpu_threads: torch threads during training.
        batch_size: the batch size trained with.
        batch_source: how it was chosen, e.g. 'batch=16', 'default', 'fit (plan.json)'.
        args: the arguments passed to Ultralytics, after visionbatch's defaults.
        versions: package versions.
        epochs: per-epoch measurements.
        setup_s: seconds from the call to the first epoch's start (checks, model build, loaders).
        wall_s: seconds for the whole call.
        final_metrics: metrics of the final validation of best.pt.
        best: path of best.pt, if saved.
        last: path of last.pt, if saved.
        error: the error message when status is 'failed'.
        notes: things the user should know (resolved paths, refused defaults).
        batch_plan: the fitted plan's key figures when the batch was fitted (batch_plan.json has it all).
        memory_vs_plan: per epoch, the measured peak next to the plan's prediction.
        effective_batch: batch x gradient accumulation the run started with; out-of-memory
            recoveries keep it (`recoveries` shows each one's).
        recoveries: every out-of-memory error the run survived, in order (`train/recovery.py`).
        distributed_plan: a DDP run's fitted batch (several GPUs, or torchrun's ranks): the per-GPU
            batch, the total, each GPU's batch (ddp_plan.json has every GPU's plan).
        remapped_classes: whether the run trained on labels renumbered 0..N-1 (`remap_classes=True`).
    """

    status: str
    save_dir: str
    task: str
    model: str
    data: str
    device: str
    device_name: str
    cpu_threads: int
    batch_size: int
    batch_source: str
    args: dict[str, Any]
    versions: dict[str, str]
    epochs: tuple[EpochRecord, ...]
    setup_s: float
    wall_s: float
    final_metrics: dict[str, float]
    best: str | None
    last: str | None
    error: str | None = None
    notes: tuple[str, ...] = ()
    batch_plan: PlanSummary | None = None
    memory_vs_plan: tuple[PlanCheck, ...] = ()
    effective_batch: int | None = None
    recoveries: tuple[Recovery, ...] = ()
    distributed_plan: DistributedSummary | None = None
    remapped_classes: bool = False

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @property
    def epoch_s(self) -> float | None:
        """Mean wall seconds per epoch (train + validation)."""
        if not self.epochs:
            return None
        return sum(e.train_s + e.val_s for e in self.epochs) / len(self.epochs)



@dataclasses.dataclass(frozen=True, slots=True)
class PlanSummary:
    """A fitted plan's key figures, as `visionbatch.json` records them (`file` holds the whole plan)."""

    batch_size: int
    max_batch_size: int
    val_batch_size: int
    budget_bytes: int
    memory_fraction: float
    device: str
    device_name: str
    predicted_bytes: int
    predicted_uncertainty_bytes: int
    measured_bytes: int | None
    context_bytes: int
    img_per_s: float | None
    reason: str
    warnings: tuple[str, ...]
    planning_s: float
    file: str

    @classmethod
    def of(cls, plan: BatchPlan, file: str) -> PlanSummary:
        """The summary of `plan`, whose full JSON is in `file`."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "file"]
        return cls(**{name: getattr(plan, name) for name in names}, file=file)



@dataclasses.dataclass(frozen=True, slots=True)
class DistributedSummary:
    """A DDP run's fitted batch, as `visionbatch.json` records it (`file` holds every GPU's plan).

    Attributes:
        per_gpu_batch: images each rank trains per step.
        total_batch: the batch Ultralytics was given (per_gpu_batch x world_size).
        world_size: the ranks of the run.
        nodes: machines in the run; node: the one whose fit set the batch.
        devices: the GPUs fitted (on that node); device_batches: each one's own fitted batch.
        ddp_overhead_bytes: DDP's gradient buckets and NCCL buffers, set aside on each GPU.
        reason: why this batch.
        file: the DDP plan's file in the run folder.
    """

    per_gpu_batch: int
    total_batch: int
    world_size: int
    nodes: int
    node: int
    devices: tuple[str, ...]
    device_batches: tuple[int, ...]
    ddp_overhead_bytes: int
    reason: str
    file: str

    @classmethod
    def of(cls, plan: DistributedPlan, file: str) -> DistributedSummary:
        """The summary of `plan`, whose full JSON is in `file`."""
        return cls(plan.per_gpu_batch, plan.total_batch, plan.world_size, plan.nodes, plan.node, plan.devices,
                   tuple(one.batch_size for one in plan.per_device), plan.ddp_overhead_bytes, plan.reason, file)



@dataclasses.dataclass(frozen=True, slots=True)
class PlanCheck:
    """One epoch's measured peak next to the plan's prediction.

    Attributes:
        epoch: the epoch (0-based, as Ultralytics counts).
        predicted_bytes: the plan's training peak at the batch trained with.
        measured_bytes: what the epoch peaked at, in the unit `measured` names.
        measured_over_predicted: the ratio, 4 decimals (None without a reading).
        measured: which reading: CUDA peak reserved + context, or the process's peak RSS.
    """

    epoch: int
    predicted_bytes: int
    measured_bytes: int | None
    measured_over_predicted: float | None
    measured: str
