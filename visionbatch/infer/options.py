"""Arguments of `tune_inference` / `visionbatch infer`: checked before anything runs or is written.

The keys themselves (help lines, Python names, which other commands share them) are in the one
registry, `visionbatch.keys`; `from_cli` reads them through it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from visionbatch.checks import (
    MAX_BATCH_SIZE,
    MAX_IMGSZ,
    STRIDE,
    check_fraction,
    finite_number,
    whole_number,
)
from visionbatch.devices.catalog import JetsonModule, Target, find_module, find_target
from visionbatch.devices.memory import Capacity
from visionbatch.devices.parse import check_device, parse_device
from visionbatch.errors import ConfigError
from visionbatch.infer.export import check_source
from visionbatch.infer.ort import import_onnxruntime
from visionbatch.infer.runners import BACKENDS, ORT_PROVIDERS
from visionbatch.infer.sweep import DEFAULT_MAX_BATCH, SweepPolicy, default_batch_sizes
from visionbatch.keys import read_keys
from visionbatch.rundir import check_project, check_run_name
from visionbatch.text import printable, shown, suggest
from visionbatch.units import parse_bytes
from visionbatch.values import check_switch

MAX_RUNS = 100_000  # warm-up or timed calls per batch: past this a sweep never ends
MAX_SECONDS_PER_BATCH = 600.0  # as augcost's seconds=
MAX_SWEEP_SECONDS = 7 * 86400.0  # a week: a time bound past it bounds nothing
MAX_FPS = 1_000_000.0  # the fastest high-speed cameras; no video stream comes near
# The deployment configs hold waits in microseconds (DeepStream's batched-push-timeout is a 32-bit int):
MAX_LATENCY_MS = 1_000_000.0  # a budget above ~2147 s cannot be written there
MIN_FPS = 0.001  # a frame every ~17 minutes: slower is no live stream (near 1e-310, b / fps overflows to inf)
BACKEND_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "torch": "pytorch", "pt": "pytorch",
                   "trt": "tensorrt", "engine": "tensorrt"}

@dataclasses.dataclass(frozen=True, slots=True)
class InferenceOptions:
    """Checked arguments; see `tune_inference` for their meaning.

    `target` is what the plan records: the Jetson module (`JetsonModule`) for a Jetson, else the
    catalog's GPU (`Target`); `target_memory` is the memory the target offers this process
    (`Target.budget_bytes`: a Jetson's memory less what its OS keeps), which `memory_fraction` is a
    share of.
    """

    model: str
    kind: str  # 'source' (.pt/.yaml), 'onnx' or 'engine'
    backend: str
    provider: str | None
    device: str
    imgsz: int | None
    batch_sizes: tuple[int, ...]
    latency_ms: float | None
    memory_budget_bytes: int | None
    memory_fraction: float | None
    streams: int | None
    fps: float | None
    half: bool
    end_to_end: bool
    policy: SweepPolicy
    threads: int | None
    target: JetsonModule | Target | None
    name: str | None
    project: str | None
    trust_checkpoint: bool = False
    target_memory: Capacity | None = None
    keep_choice: bool = True


def from_cli(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """CLI `key=value` pairs -> `tune_inference` keyword arguments, through the key registry.

    Examples:
        >>> from_cli({"batch_sizes": (1, 2), "warmup": 0, "seconds": 0.5})
        {'batch_sizes': [1, 2], 'warmup_runs': 0, 'seconds_per_batch': 0.5}
    """
    return read_keys("infer", pairs)


def check_options(model: str, *, imgsz: Any = None, backend: str | None = None, provider: str | None = None,
                  batch_sizes: Sequence[Any] | None = None, max_batch: Any = DEFAULT_MAX_BATCH,
                  latency_ms: Any = None, memory_budget: Any = None, memory_fraction: Any = None,
                  streams: Any = None, fps: Any = None, half: Any = False, end_to_end: Any = False,
                  warmup_runs: Any = 3, runs: Any = None, seconds_per_batch: Any = 1.0, max_seconds: Any = 90.0,
                  device: Any = None, threads: Any = None, target: Any = None, name: Any = None,
                  project: Any = None, trust_checkpoint: Any = False, keep_choice: Any = True) -> InferenceOptions:
    """Check every argument; raise ConfigError naming the input and the fix."""
    kind = check_source(model)
    trust_checkpoint = check_switch(trust_checkpoint, "trust_checkpoint")
    keep_choice = check_switch(keep_choice, "keep_choice")
    backend = _backend(backend, kind, model)
    half = check_switch(half, "half")
    device = _device(device, backend)
    if half and device == "cpu":
        raise ConfigError("half=True needs a CUDA device (a CPU runs fp16 no faster than fp32): "
                          "leave half out, or give device=0 on a GPU machine")
    if provider is not None:
        if backend != "onnxruntime":
            raise ConfigError(f"provider={provider} is for backend=onnxruntime, not backend={backend}: leave it out")
        if str(provider).lower() not in ORT_PROVIDERS:
            raise ConfigError(f"provider={provider} is not one visionbatch drives: use cpu, cuda or tensorrt")
        provider = str(provider).lower()
    if backend == "onnxruntime":
        _check_provider(provider or ("cpu" if device == "cpu" else "cuda"), device)
    if imgsz is not None:
        imgsz = whole_number(imgsz, "imgsz", example="imgsz=640", minimum=STRIDE, maximum=MAX_IMGSZ)
        if imgsz % STRIDE:
            lower = imgsz // STRIDE * STRIDE
            raise ConfigError(f"imgsz={imgsz} is not a multiple of the model's stride {STRIDE}: "
                              f"use imgsz={lower} or imgsz={lower + STRIDE}")
    max_batch = whole_number(max_batch, "max_batch", example="max_batch=32", maximum=MAX_BATCH_SIZE)
    if batch_sizes is None:
        sizes = default_batch_sizes(max_batch)
    else:
        if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
            raise ConfigError(f"batch_sizes={shown(batch_sizes)} is not a list of batch sizes: use e.g. "
                              f"batch_sizes=1,2,4,8")
        sizes = tuple(sorted({whole_number(b, "batch_sizes", example="batch_sizes=1,2,4,8", maximum=MAX_BATCH_SIZE)
                              for b in batch_sizes}))
    if latency_ms is not None:
        latency_ms = finite_number(latency_ms, "latency_ms", example="latency_ms=50", above=0, maximum=MAX_LATENCY_MS,
                                   fix=f"give the per-frame latency budget in milliseconds, e.g. latency_ms=50 "
                                       f"(above 0, at most {MAX_LATENCY_MS:.0f})")
    memory_budget_bytes = None if memory_budget is None else parse_bytes(memory_budget, "memory_budget")
    if memory_fraction is not None:
        memory_fraction = check_fraction(memory_fraction)
    if (streams is None) != (fps is None):
        given = f"streams={streams}" if streams is not None else f"fps={fps}"
        raise ConfigError(f"{given} needs its partner: a stream load is streams=N fps=F, e.g. streams=4 fps=25")
    if streams is not None:
        streams = whole_number(streams, "streams", example="streams=4")
        fps = finite_number(fps, "fps", example="fps=25", minimum=MIN_FPS, maximum=MAX_FPS)
    policy = SweepPolicy(
        warmup_runs=whole_number(warmup_runs, "warmup", example="warmup=3", minimum=0, maximum=MAX_RUNS),
        runs=None if runs is None else whole_number(runs, "runs", example="runs=50", maximum=MAX_RUNS),
        seconds_per_batch=finite_number(seconds_per_batch, "seconds", example="seconds=1.0", above=0,
                                        maximum=MAX_SECONDS_PER_BATCH),
        max_seconds=finite_number(max_seconds, "max_seconds", example="max_seconds=90", above=0,
                                  maximum=MAX_SWEEP_SECONDS),
    )
    threads = None if threads is None else _threads(threads)
    planned, target_memory = _target(target)
    return InferenceOptions(
        model=str(model), kind=kind, backend=backend, provider=provider, device=device, imgsz=imgsz,
        batch_sizes=sizes, latency_ms=latency_ms, memory_budget_bytes=memory_budget_bytes,
        memory_fraction=memory_fraction, streams=streams, fps=fps, half=half,
        end_to_end=check_switch(end_to_end, "end_to_end"), policy=policy, threads=threads, target=planned,
        name=None if name is None else check_run_name(name, "infer"),
        project=None if project is None else check_project(project, "infer"),
        trust_checkpoint=trust_checkpoint, target_memory=target_memory, keep_choice=keep_choice,
    )


def _target(target: Any) -> tuple[JetsonModule | Target | None, Capacity | None]:
    """`target=` from the one catalog: what the plan records, and the memory it offers this process."""
    if target is None:
        return None, None
    found = find_target(str(target))
    planned = find_module(found.key) if found.unified else found
    return planned, dataclasses.replace(found.capacity(), name=planned.name)


def _backend(backend: str | None, kind: str, model: str) -> str:
    if backend is None:
        backend = {"engine": "tensorrt", "onnx": "onnxruntime"}.get(kind, "onnxruntime")
    name = BACKEND_ALIASES.get(str(backend).lower(), str(backend).lower())
    if name not in BACKENDS:
        raise ConfigError(f"backend={backend} is not a backend{suggest(name, BACKENDS)}: "
                          f"use backend=onnxruntime, backend=pytorch or backend=tensorrt")
    if kind == "engine" and name != "tensorrt":
        raise ConfigError(f"model={model} is a TensorRT engine: it runs with backend=tensorrt only")
    if kind == "onnx" and name == "pytorch":
        raise ConfigError(f"model={model} is an ONNX file: backend=pytorch needs the .pt or .yaml it came from, "
                          f"or use backend=onnxruntime")
    if name == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        raise ConfigError("backend=tensorrt needs the tensorrt package and an NVIDIA GPU (JetPack ships it on a "
                          "Jetson; elsewhere pip install tensorrt): here, use backend=onnxruntime")
    return name


def _check_provider(kind: str, device: str) -> None:
    onnxruntime = import_onnxruntime()
    if kind != "cpu" and device == "cpu":
        raise ConfigError(f"provider={kind} runs on a GPU but device=cpu: give device=0")
    available = onnxruntime.get_available_providers()
    if ORT_PROVIDERS[kind] not in available:
        raise ConfigError(f"provider={kind}: ONNX Runtime {onnxruntime.__version__} here has {', '.join(available)} "
                          f"only: install onnxruntime-gpu for CUDA/TensorRT, or use device=cpu")


def _device(device: Any, backend: str) -> str:
    """One device, as torch names it: 'cpu' or 'cuda:N'; nothing given (or -1) means the GPU if there is one."""
    try:
        request = parse_device(device)
    except ConfigError:
        request = None  # said below with the forms infer takes (one device, never a list)
    if request is None or request.kind == "mps" or len(request.indices) > 1:
        raise ConfigError(f"device={printable(shown(device))} is not one device: "
                          f"use device=cpu, device=0 or device=cuda:0") from None
    if request.kind == "default" or request.picks_idle:
        return request.resolve(_cuda_available(backend)).torch_name
    if request.kind == "cpu":
        if backend == "tensorrt":
            raise ConfigError("backend=tensorrt runs on an NVIDIA GPU, not device=cpu: give device=0")
        return "cpu"
    return check_device(request).torch_name


def _cuda_available(backend: str) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    if backend == "onnxruntime":
        return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    return True


def _threads(value: Any) -> int:
    """CPU threads: 1 up to the CPUs this process may use (more only oversubscribe, or overflow the pool)."""
    from visionbatch.ultralytics.offline import cpu_count

    cpus = cpu_count()
    return whole_number(value, "threads", example=f"threads={cpus}", maximum=cpus,
                        fix=f"use 1 to {cpus} (the CPUs this process may use), e.g. threads={cpus}")
