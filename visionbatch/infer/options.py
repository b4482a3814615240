"""Arguments of `tune_inference` / `visionbatch infer`: checked before anything runs or is written."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from visionbatch.checks import (
    MAX_BATCH_SIZE,
    MAX_IMGSZ,
    check_fraction,
    finite_number,
    whole_number,
)
from visionbatch.devices.catalog import JetsonModule, find_module
from visionbatch.errors import ConfigError
from visionbatch.infer.export import check_source
from visionbatch.infer.ort import import_onnxruntime
from visionbatch.infer.runners import BACKENDS, ORT_PROVIDERS
from visionbatch.infer.sweep import DEFAULT_MAX_BATCH, SweepPolicy, default_batch_sizes
from visionbatch.rundir import check_project, check_run_name
from visionbatch.text import shown, suggest
from visionbatch.units import parse_bytes

STRIDE = 32
MAX_RUNS = 100_000  # warm-up or timed calls per batch: past this a sweep never ends
MAX_SECONDS_PER_BATCH = 600.0  # as augcost's seconds=
MAX_SWEEP_SECONDS = 7 * 86400.0  # a week: a time bound past it bounds nothing
MAX_FPS = 1_000_000.0  # the fastest high-speed cameras; no video stream comes near
# The deployment configs hold waits in microseconds (DeepStream's batched-push-timeout is a 32-bit int):
MAX_LATENCY_MS = 1_000_000.0  # a budget above ~2147 s cannot be written there
MIN_FPS = 0.001  # a frame every ~17 minutes: slower is no live stream (near 1e-310, b / fps overflows to inf)
BACKEND_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "torch": "pytorch", "pt": "pytorch",
                   "trt": "tensorrt", "engine": "tensorrt"}

# CLI key -> (tune_inference parameter, help)
CLI_KEYS: dict[str, tuple[str, str]] = {
    "imgsz": ("imgsz", "input size in pixels, a multiple of 32 (default: the model's export size, else 640)"),
    "backend": ("backend", "onnxruntime, pytorch or tensorrt (default: from the model file, else onnxruntime)"),
    "provider": ("provider", "ONNX Runtime provider: cpu, cuda or tensorrt (default: from device)"),
    "batch": ("batch_sizes", "batch sizes to try, e.g. batch=1,2,4,8 (default: powers of two up to max_batch)"),
    "max_batch": ("max_batch", f"largest default batch size (default {DEFAULT_MAX_BATCH})"),
    "latency_ms": ("latency_ms", "budget for a frame's worst latency: fill wait + p99 batch latency"),
    "memory_budget": ("memory_budget_bytes", "memory budget for the reading taken (RSS, CUDA, Jetson unified memory): "
                      "4GiB, 512MiB"),
    "memory_fraction": ("memory_fraction", "memory budget as a fraction of the device's (or target's) memory"),
    "streams": ("streams", "camera streams to serve (with fps=)"),
    "fps": ("fps", "frames per second of each stream (with streams=)"),
    "half": ("half", "fp16 (CUDA devices only)"),
    "end_to_end": ("end_to_end", "time letterbox pre-processing and NMS with the model"),
    "warmup": ("warmup_runs", "untimed runs per batch first (default 3)"),
    "runs": ("runs", "timed runs per batch (default: at least 10, for seconds=)"),
    "seconds": ("seconds_per_batch", "time each batch at least this long (default 1.0)"),
    "max_seconds": ("max_seconds", "time bound for the whole sweep (default 90)"),
    "device": ("device", "cpu, 0 or cuda:0 (default: the GPU if there is one)"),
    "threads": ("threads", "CPU threads (default: every core)"),
    "target": ("target", "a Jetson module to plan for, e.g. orin-nano-8gb"),
    "name": ("name", "run folder name under runs/infer/"),
    "project": ("project", "parent folder of the run folder"),
    "trust_checkpoint": ("trust_checkpoint", "trust_checkpoint=True loads model=*.pt with Ultralytics' unrestricted "
                         "loader, which can run code stored in the file: only for files you trust"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class InferenceOptions:
    """Checked arguments; see `tune_inference` for their meaning."""

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
    target: JetsonModule | None
    name: str | None
    project: str | None
    trust_checkpoint: bool = False


def from_cli(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """CLI `key=value` pairs -> `tune_inference` keyword arguments; refuses unknown keys."""
    kwargs: dict[str, Any] = {}
    for key, value in pairs.items():
        if key not in CLI_KEYS:
            raise ConfigError(f"unknown argument '{key}={value}'{suggest(key, CLI_KEYS)}: "
                              f"see 'visionbatch infer --help' for the keys")
        parameter = CLI_KEYS[key][0]
        if key == "memory_budget":
            kwargs[parameter] = parse_bytes(value, "memory_budget")
        elif key == "batch":
            kwargs[parameter] = value if isinstance(value, (list, tuple)) else [value]
        else:
            kwargs[parameter] = value
    return kwargs


def check_options(model: str, *, imgsz: Any = None, backend: str | None = None, provider: str | None = None,
                  batch_sizes: Sequence[Any] | None = None, max_batch: Any = DEFAULT_MAX_BATCH,
                  latency_ms: Any = None, memory_budget_bytes: Any = None, memory_fraction: Any = None,
                  streams: Any = None, fps: Any = None, half: Any = False, end_to_end: Any = False,
                  warmup_runs: Any = 3, runs: Any = None, seconds_per_batch: Any = 1.0, max_seconds: Any = 90.0,
                  device: Any = None, threads: Any = None, target: Any = None, name: Any = None,
                  project: Any = None, trust_checkpoint: Any = False) -> InferenceOptions:
    """Check every argument; raise ConfigError naming the input and the fix."""
    kind = check_source(model)
    trust_checkpoint = _flag(trust_checkpoint, "trust_checkpoint")
    backend = _backend(backend, kind, model)
    half = _flag(half, "half")
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
            raise ConfigError(f"batch={shown(batch_sizes)} is not a list of batch sizes: use e.g. batch=1,2,4,8")
        sizes = tuple(sorted({whole_number(b, "batch", example="batch=1,2,4,8", maximum=MAX_BATCH_SIZE)
                              for b in batch_sizes}))
    if latency_ms is not None:
        latency_ms = finite_number(latency_ms, "latency_ms", example="latency_ms=50", above=0, maximum=MAX_LATENCY_MS,
                                   fix=f"give the per-frame latency budget in milliseconds, e.g. latency_ms=50 "
                                       f"(above 0, at most {MAX_LATENCY_MS:.0f})")
    if memory_budget_bytes is not None:
        memory_budget_bytes = parse_bytes(memory_budget_bytes, "memory_budget")
    if memory_fraction is not None:
        memory_fraction = check_fraction(memory_fraction)
        if memory_budget_bytes is not None:
            raise ConfigError("memory_budget= and memory_fraction= both set a memory budget: give one")
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
    module = None if target is None else find_module(str(target))
    return InferenceOptions(
        model=str(model), kind=kind, backend=backend, provider=provider, device=device, imgsz=imgsz,
        batch_sizes=sizes, latency_ms=latency_ms, memory_budget_bytes=memory_budget_bytes,
        memory_fraction=memory_fraction, streams=streams, fps=fps, half=half,
        end_to_end=_flag(end_to_end, "end_to_end"), policy=policy, threads=threads, target=module,
        name=None if name is None else check_run_name(name, "infer"),
        project=None if project is None else check_project(project, "infer"),
        trust_checkpoint=trust_checkpoint,
    )


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
    from visionbatch.devices.parse import check_device

    if device is None or str(device).strip() == "":
        return "cuda:0" if _cuda_available(backend) else "cpu"
    text = str(device).strip().lower()
    if text in {"cpu", "-1"}:
        if backend == "tensorrt":
            raise ConfigError("backend=tensorrt runs on an NVIDIA GPU, not device=cpu: give device=0")
        return "cpu"
    index = text.removeprefix("cuda:")
    if not index.isdigit():
        raise ConfigError(f"device={device} is not one device: use device=cpu, device=0 or device=cuda:0")
    check_device(index)
    return f"cuda:{int(index)}"


def _cuda_available(backend: str) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    if backend == "onnxruntime":
        return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    return True


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}={shown(value)} is not true or false: use {key}=True or leave it out")


def _threads(value: Any) -> int:
    """CPU threads: 1 up to the CPUs this process may use (more only oversubscribe, or overflow the pool)."""
    from visionbatch.ultralytics.offline import cpu_count

    cpus = cpu_count()
    return whole_number(value, "threads", example=f"threads={cpus}", maximum=cpus,
                        fix=f"use 1 to {cpus} (the CPUs this process may use), e.g. threads={cpus}")
