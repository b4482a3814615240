"""Fitting for DDP: the per-GPU batch on several GPUs, and one batch agreed across torchrun's machines.

One machine (`device=0,1`): every listed GPU is fitted on its own (`fit.api.fit_devices`) with what
a DDP rank holds beside each step set aside from its memory first (`DdpOverhead`): the reducer's
gradient buckets (a second copy of every trainable parameter's gradient, in its dtype: Ultralytics'
DDP does not use `gradient_as_bucket_view`), NCCL's communication buffers (an assumed constant,
`calibration.json`'s `ddp_nccl_buffer_bytes`), and the CUDA context the fitting process keeps on
each GPU it measured (CUDA frees a context only when its process exits, and the process that
fits goes on running while the ranks train). The smallest GPU's batch is every GPU's
(`combine_plans`): Ultralytics splits its `batch` evenly over the ranks, so it gets the total.

Several machines (torchrun): local rank 0 of each node fits its node; the ranks agree on the
smallest per-GPU batch with `all_reduce(MIN)` in a short-lived gloo group, and the node that set it
broadcasts its plan, so every rank records the same one (`agree_across_nodes`). The group has a
store prefix of its own and is destroyed before Ultralytics creates its NCCL group on the same
MASTER_PORT; the store is kept for the process's life, so rank 0's server (when torchrun's agent
does not host one) is still the one Ultralytics' store joins.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from visionbatch.devices.memory import Capacity
from visionbatch.errors import ConfigError, ProbeError, VisionbatchError
from visionbatch.fit.plan import BatchPlan
from visionbatch.results import to_jsonable
from visionbatch.text import error_line
from visionbatch.units import human_bytes

AGREEMENT_TIMEOUT = datetime.timedelta(minutes=30)  # other nodes wait this long for the slowest node's fit
NOT_FITTING = 2**62  # what a rank that does not fit (local rank > 0) offers to the MIN: never the smallest
FAILED = 0  # what a node whose fit failed offers: always the smallest, so every rank hears of the failure


@dataclasses.dataclass(frozen=True, slots=True)
class DdpOverhead:
    """What a DDP rank holds on its GPU beside what one training step needs.

    Attributes:
        gradient_bucket_bytes: the reducer's buckets: every trainable parameter's bytes once more.
        nccl_buffer_bytes: NCCL's communication buffers (assumed: `nccl_buffer_bytes()`).
        default_context_bytes: the fitting process's CUDA context where the GPU's reading has none
            (no NVML): calibration.json's default.
    """

    gradient_bucket_bytes: int
    nccl_buffer_bytes: int
    default_context_bytes: int = 0

    @property
    def bytes(self) -> int:
        """Buckets plus NCCL buffers: the same on every GPU of the run."""
        return self.gradient_bucket_bytes + self.nccl_buffer_bytes

    def set_aside(self, capacity: Capacity) -> tuple[int, str]:
        """Bytes to take off `capacity`'s usable memory before fitting it, and the plan's note saying so.

        The fitting process's CUDA context (`capacity.context_bytes`) stays on the GPU while a rank
        trains there, beside the rank's own (which the probe's readings already count).

        Examples:
            >>> overhead = DdpOverhead(gradient_bucket_bytes=10 << 20, nccl_buffer_bytes=512 << 20)
            >>> cap = Capacity("cuda:1", "GPU", 8 << 30, 0, context_bytes=300 << 20, usable_bytes=8 << 30)
            >>> overhead.set_aside(cap)[0] == (10 + 512 + 300) << 20
            True
        """
        context = capacity.context_bytes or (self.default_context_bytes if capacity.total_bytes else 0)
        held = self.bytes + context
        note = (f"{human_bytes(held)} of {capacity.device}'s memory set aside for DDP: gradient buckets "
                f"{human_bytes(self.gradient_bucket_bytes)}, NCCL buffers {human_bytes(self.nccl_buffer_bytes)} "
                f"(assumed, not measured), the fitting process's CUDA context {human_bytes(context)}")
        return held, note


def gradient_bucket_bytes(model: Any) -> int:
    """Bytes of DDP's gradient buckets for `model`: its trainable parameters' bytes, once more."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad))


def nccl_buffer_bytes() -> int:
    """NCCL's buffers per GPU, as calibration.json assumes them (`ddp_nccl_buffer_bytes`)."""
    from visionbatch.fit.probes.trace import calibration

    return int(calibration()["ddp_nccl_buffer_bytes"])


def default_context_bytes() -> int:
    """The CUDA context calibration.json assumes when NVML cannot say."""
    from visionbatch.fit.probes.trace import calibration

    return int(calibration()["context_bytes"]["default"])


@dataclasses.dataclass(frozen=True, slots=True)
class DistributedPlan:
    """The batch of a DDP run: one per-GPU batch for every rank, and the total Ultralytics is given.

    Attributes:
        per_gpu_batch: images each rank trains per step: the smallest fitted GPU's batch.
        total_batch: `batch=` for Ultralytics: per_gpu_batch x world_size (it splits it evenly).
        world_size: the ranks of the run (GPUs on this machine; torchrun's WORLD_SIZE across machines).
        devices: the GPUs fitted (on the node whose fit set the batch), in `device=` order.
        per_device: each GPU's own plan, in the same order (each fitted with `ddp_overhead_bytes`
            and the fitting process's CUDA context set aside; see each plan's warnings).
        ddp_overhead_bytes: gradient buckets plus NCCL buffers, per GPU.
        gradient_bucket_bytes: DDP's gradient buckets: the trainable parameters' bytes.
        nccl_buffer_bytes: NCCL's buffers (an assumed constant, not measured).
        accumulate: the gradient accumulation Ultralytics applies at total_batch.
        nominal_batch_size: Ultralytics' nbs.
        reason: why this batch, in one sentence.
        warnings: things to know (a cap to the training images).
        nodes: machines in the run (1 without torchrun).
        node: the node (torchrun's node rank) whose fit set the batch.
        save_dir: the run folder the plan was written to (absent from JSON when not saved).
    """

    JSON_OPTIONAL: ClassVar[tuple[str, ...]] = ("save_dir",)

    per_gpu_batch: int
    total_batch: int
    world_size: int
    devices: tuple[str, ...]
    per_device: tuple[BatchPlan, ...]
    ddp_overhead_bytes: int
    gradient_bucket_bytes: int
    nccl_buffer_bytes: int
    accumulate: int
    nominal_batch_size: int
    reason: str
    warnings: tuple[str, ...] = ()
    nodes: int = 1
    node: int = 0
    save_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @property
    def governing(self) -> BatchPlan:
        """The plan of the GPU that set the batch: the first with the smallest batch."""
        return min(self.per_device, key=lambda plan: plan.batch_size)


def _total(per_gpu: int, world_size: int, plan: BatchPlan) -> tuple[int, int, tuple[str, ...]]:
    """(per-GPU batch, accumulation, warnings) for `world_size` ranks: no more images per step than the
    training set has, and Ultralytics' accumulation at the total."""
    images = plan.workload.dataset_images
    cap = max(images // world_size, 1)
    warnings: tuple[str, ...] = ()
    if per_gpu > cap:
        warnings = (f"per-GPU batch capped at {cap}: {world_size} ranks x {cap} images already cover the "
                    f"{images} training images",)
        per_gpu = cap
    return per_gpu, max(round(plan.nominal_batch_size / (per_gpu * world_size)), 1), warnings


def combine_plans(plans: Sequence[BatchPlan], overhead: DdpOverhead) -> DistributedPlan:
    """One machine's DDP plan from its GPUs' plans (each fitted with `overhead` set aside): the smallest wins.

    Examples:
        >>> from dataclasses import replace
        >>> from visionbatch.fit.plan import WorkloadSummary
        >>> work = WorkloadSummary("m", "detect", 1, 64, 0.0, 1, 1, None, "", False, None, "SGD", True, 1000)
        >>> plan = BatchPlan(14, 14, 28, None, 5, 64, 0, 0.9, "cuda:0", "GPU", None, 0, 0, 0, 0, None, None,
        ...                  None, None, None, (), None, None, work, "", (), True, 0.0)
        >>> both = combine_plans([plan, replace(plan, device="cuda:1", batch_size=12)], DdpOverhead(10, 20))
        >>> both.per_gpu_batch, both.total_batch, both.accumulate, both.governing.device
        (12, 24, 3, 'cuda:1')
    """
    smallest = min(plans, key=lambda plan: plan.batch_size)
    world_size = len(plans)
    per_gpu, accumulate, warnings = _total(smallest.batch_size, world_size, smallest)
    fits = ", ".join(f"{plan.device} {plan.batch_size}" for plan in plans)
    why = (f"per-GPU batch {per_gpu}: the smallest of the {world_size} GPUs' fits ({fits})" if world_size > 1
           else f"per-GPU batch {per_gpu}: {smallest.device}'s fit")
    aside = (f", each fitted with DDP's gradient buckets and NCCL buffers ({human_bytes(overhead.bytes)}) and the "
             f"fitting process's CUDA context set aside" if overhead.bytes else "")
    reason = (f"{why}{aside}; Ultralytics trains batch={per_gpu * world_size}, {per_gpu} on each of {world_size} "
              f"{'GPUs' if world_size > 1 else 'device'}")
    return DistributedPlan(per_gpu, per_gpu * world_size, world_size, tuple(plan.device for plan in plans),
                           tuple(plans), overhead.bytes, overhead.gradient_bucket_bytes, overhead.nccl_buffer_bytes,
                           accumulate, smallest.nominal_batch_size, reason, warnings)


def across_nodes(plan: DistributedPlan, world_size: int, nodes: int, node: int) -> DistributedPlan:
    """The run's plan from the governing node's plan: its per-GPU batch on all `world_size` ranks.

    Examples:
        >>> from visionbatch.fit.plan import WorkloadSummary
        >>> work = WorkloadSummary("m", "detect", 1, 64, 0.0, 1, 1, None, "", False, None, "SGD", True, 1000)
        >>> plan = BatchPlan(12, 12, 24, None, 5, 64, 0, 0.9, "cuda:0", "GPU", None, 0, 0, 0, 0, None, None,
        ...                  None, None, None, (), None, None, work, "", (), True, 0.0)
        >>> run = across_nodes(combine_plans([plan, plan], DdpOverhead(1, 2)), world_size=4, nodes=2, node=1)
        >>> run.per_gpu_batch, run.total_batch, run.accumulate, run.nodes, run.node
        (12, 48, 1, 2, 1)
    """
    per_gpu, accumulate, warnings = _total(plan.per_gpu_batch, world_size, plan.governing)
    reason = (f"per-GPU batch {per_gpu}: the smallest of the {nodes} nodes' fits, node {node}'s ({plan.reason}); "
              f"Ultralytics trains batch={per_gpu * world_size}, {per_gpu} on each of {world_size} ranks")
    return dataclasses.replace(plan, per_gpu_batch=per_gpu, total_batch=per_gpu * world_size, world_size=world_size,
                               accumulate=accumulate, reason=reason, warnings=plan.warnings + warnings,
                               nodes=nodes, node=node)


def several_gpus(device: Any, memory_budget: Any = None) -> tuple[int, ...]:
    """The CUDA indices of `device=` when it names several GPUs (a DDP run), else ().

    Raises:
        ConfigError: several GPUs with -1 or with memory_budget=, or GPUs this machine does not have.

    Examples:
        >>> several_gpus("cpu"), several_gpus("0")
        ((), ())
        >>> several_gpus("0,1", memory_budget="4GiB")
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: memory_budget=4GiB is for CPU fits: on device=0,1 each GPU's own memory is the budget (use memory_fraction= to aim lower)
    """
    from visionbatch.devices.parse import check_device, parse_device

    request = parse_device(device)
    if len(request.indices) < 2:
        return ()
    if request.picks_idle:
        raise ConfigError(f"device={request.text}: Ultralytics picks idle GPUs only when training starts, so they "
                          f"cannot be fitted first: name the GPUs, e.g. device=0,1")
    if memory_budget is not None:
        raise ConfigError(f"memory_budget={memory_budget} is for CPU fits: on device={request.text} each GPU's own "
                          f"memory is the budget (use memory_fraction= to aim lower)")
    if len(set(request.indices)) < len(request.indices):
        raise ConfigError(f"device={request.text} names a GPU twice: list each GPU once, e.g. device=0,1")
    return check_device(request).indices


# -- several machines: torchrun ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TorchrunEnv:
    """Where this process sits in a torchrun launch (read from the environment torchrun sets).

    Attributes:
        rank, world_size: this process's global rank and the number of processes in the run.
        local_rank, local_world_size: its rank and the number of processes on its node.
        node: the node's rank (GROUP_RANK; rank // local_world_size without it).
        nodes: the number of nodes.
        master_addr, master_port: where the run's store is.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: int
    nodes: int
    master_addr: str
    master_port: int


TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """This process's place in a torchrun launch, or None when no launcher started several processes.

    Raises:
        ConfigError: WORLD_SIZE says several processes but a variable torchrun sets is missing or not a number.

    Examples:
        >>> torchrun_env({}) is None, torchrun_env({"WORLD_SIZE": "1"}) is None
        (True, True)
        >>> env = torchrun_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
        ...                     "MASTER_ADDR": "node0", "MASTER_PORT": "29500"})
        >>> env.node, env.nodes, env.local_rank
        (1, 2, 1)
    """
    environ = os.environ if environ is None else environ
    try:
        world_size = int(environ.get("WORLD_SIZE") or 1)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={environ.get('WORLD_SIZE')} is not a number: launch with torchrun, which "
                          f"sets it") from None
    if world_size <= 1:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if not environ.get(name)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world_size} is set but {missing[0]} is not: launch with torchrun (it sets "
                          f"{', '.join(TORCHRUN_VARIABLES)}), or unset WORLD_SIZE")
    try:
        rank, local_rank, local_size, port = (int(environ[name]) for name in
                                              ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"))
        node = int(environ.get("GROUP_RANK") or rank // max(local_size, 1))
    except ValueError:
        raise ConfigError("RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK and MASTER_PORT must be whole numbers: "
                          "launch with torchrun, which sets them") from None
    nodes = max(world_size // max(local_size, 1), 1)
    return TorchrunEnv(rank, world_size, local_rank, local_size, node, nodes, environ["MASTER_ADDR"], port)


def node_gpus(device: Any, env: TorchrunEnv) -> tuple[int, ...]:
    """This node's GPUs in a torchrun run: one per process on the node (each rank takes devices[LOCAL_RANK]).

    Raises:
        ConfigError: no GPU named (Ultralytics trains DDP on CUDA GPUs only), -1, or as many GPUs as
            torchrun's processes per node.

    Examples:
        >>> env = TorchrunEnv(0, 4, 0, 2, 0, 2, "node0", 29500)
        >>> node_gpus("0,1", env)
        (0, 1)
        >>> node_gpus("0", env)
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: device=0 lists 1 GPU but torchrun started 2 processes on this node (--nproc-per-node 2): list one GPU per process, e.g. device=0,1
    """
    from visionbatch.devices.parse import parse_device

    request = parse_device(device)
    example = ",".join(str(i) for i in range(env.local_world_size))
    if request.kind != "cuda" or request.picks_idle:
        raise ConfigError(f"device={request.text or '(none)'} under torchrun: Ultralytics trains DDP on CUDA GPUs "
                          f"named in device=, one per process: use device={example}")
    if len(request.indices) == env.local_world_size:
        return request.indices
    count = len(request.indices)
    raise ConfigError(f"device={request.text} lists {count} GPU{'s' if count != 1 else ''} but torchrun started "
                      f"{env.local_world_size} processes on this node (--nproc-per-node {env.local_world_size}): "
                      f"list one GPU per process, e.g. device={example}")


def offered_batch(plan: DistributedPlan | None, failed: bool, env: TorchrunEnv) -> int:
    """What this rank offers to the all_reduce(MIN): its node's per-GPU batch (local rank 0), `FAILED`
    when its fit failed, `NOT_FITTING` for the other local ranks.

    Examples:
        >>> env = TorchrunEnv(1, 4, 1, 2, 0, 2, "node0", 29500)
        >>> offered_batch(None, False, env) == NOT_FITTING, offered_batch(None, True, env)
        (True, 0)
    """
    if failed:
        return FAILED
    return plan.per_gpu_batch if plan is not None and env.local_rank == 0 else NOT_FITTING


def source_candidate(offered: int, smallest: int, env: TorchrunEnv) -> int:
    """This rank in the second all_reduce(MIN), which finds the lowest rank holding the smallest offer;
    world_size (never a rank) when it does not hold it.

    Examples:
        >>> [source_candidate(b, 12, TorchrunEnv(r, 4, r % 2, 2, r // 2, 2, "h", 1))
        ...  for r, b in enumerate([14, NOT_FITTING, 12, NOT_FITTING])]
        [4, 4, 2, 4]
    """
    return env.rank if offered == smallest else env.world_size


_STORES: list[Any] = []  # the agreement's stores, kept for the process's life (see the module's docstring)
_AGREEMENTS = itertools.count()  # each agreement in a process gets a store prefix of its own


def _agreement_group(env: TorchrunEnv, timeout: datetime.timedelta) -> None:
    """Join the short-lived gloo group of every rank (the caller destroys it)."""
    import torch.distributed as dist

    # the store env:// makes, as Ultralytics' init_process_group will: a client of torchrun's agent store, or
    # rank 0's multi-tenant server, which Ultralytics' store then shares while this one is alive
    store, _, _ = next(dist.rendezvous("env://", rank=env.rank, world_size=env.world_size, timeout=timeout))
    _STORES.append(store)
    # keys of their own: torchrun's agent store outlives a restarted attempt, and Ultralytics' group uses it after
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"visionbatch/batch-agreement/{attempt}/{next(_AGREEMENTS)}"
    dist.init_process_group("gloo", store=dist.PrefixStore(prefix, store), rank=env.rank,
                            world_size=env.world_size, timeout=timeout)


def agree_across_nodes(fit_node: Callable[[], DistributedPlan], env: TorchrunEnv,
                       timeout: datetime.timedelta = AGREEMENT_TIMEOUT) -> DistributedPlan:
    """Every rank's plan for a torchrun run: local rank 0 of each node fits (`fit_node`), the smallest per-GPU
    batch wins (all_reduce MIN), and the node that fitted it broadcasts its plan to every rank.

    Call it on every rank of the run, before anything else creates a process group. The other local
    ranks do not call `fit_node`. The gloo group it uses is destroyed before it returns.

    Args:
        fit_node: fits this node's GPUs (or its CPU budget) and returns the node's plan.
        env: this process's place in the run (`torchrun_env()`).
        timeout: how long the ranks wait for each other (the slowest node's fit included).

    Returns:
        The same `DistributedPlan` on every rank: the governing node's GPUs and plans, the per-GPU
        batch on all `env.world_size` ranks, `nodes` and the governing `node`.

    Raises:
        VisionbatchError: a node's fit failed (the failing node raises its own error; the others a
            ProbeError, or the same kind of error, naming that node).
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # every rank runs the same code, so every rank stops here
        raise ProbeError("a torch.distributed process group is already running in this process: agree on the "
                         "batch before one is created (visionbatch train batch=auto does)")
    plan: DistributedPlan | None = None
    failure: BaseException | None = None
    if env.local_rank == 0:
        try:
            plan = dataclasses.replace(fit_node(), nodes=env.nodes, node=env.node)
        except Exception as exc:  # noqa: BLE001 - every rank must still hear of it, or they wait for the timeout
            failure = exc
    offered = offered_batch(plan, failure is not None, env)
    _agreement_group(env, timeout)
    try:
        value = torch.tensor([offered], dtype=torch.int64)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        smallest = int(value.item())
        value = torch.tensor([source_candidate(offered, smallest, env)], dtype=torch.int64)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        source = int(value.item())
        payload: list[Any] = [None]
        if env.rank == source:
            payload = [plan if failure is None else _failure_message(failure, env)]
        dist.broadcast_object_list(payload, src=source)
    finally:
        dist.destroy_process_group()
    if failure is not None:
        raise failure
    received = payload[0]
    if isinstance(received, tuple):  # (error class name, message) from the node whose fit failed
        kind, message = received
        error = {cls.__name__: cls for cls in VisionbatchError.__subclasses__()}.get(kind, ProbeError)
        raise error(message)
    return across_nodes(received, env.world_size, env.nodes, received.node)


def _failure_message(failure: BaseException, env: TorchrunEnv) -> tuple[str, str]:
    """What the other ranks raise when this node's fit failed: the same kind of error for a user's problem."""
    text = error_line(failure, limit=None)
    if isinstance(failure, VisionbatchError):
        return type(failure).__name__, f"node {env.node} (rank {env.rank}) could not fit its batch: {text}"
    return "ProbeError", (f"node {env.node} (rank {env.rank}) failed while fitting its batch "
                          f"({type(failure).__name__}: {text}): see that node's log")
