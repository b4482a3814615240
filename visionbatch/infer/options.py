"""Arguments of `tune_inference` / `visionbatch infer`: checked before anything runs or is written."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from visionbatch.config import check_fraction, parse_bytes, suggest
from visionbatch.errors import ConfigError
from visionbatch.infer.edge import find_module
from visionbatch.infer.export import check_source
from visionbatch.infer.plan import JetsonModule
from visionbatch.infer.runners import BACKENDS, ORT_PROVIDERS
from visionbatch.infer.sweep import DEFAULT_MAX_BATCH, SweepPolicy, default_batch_sizes

STRIDE = 32
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
                  project: Any = None) -> InferenceOptions:
    """Check every argument; raise ConfigError naming the input and the fix."""
    kind = check_source(model)
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
        imgsz = _int(imgsz, "imgsz", "imgsz=640", low=STRIDE)
        if imgsz % STRIDE:
            lower = imgsz // STRIDE * STRIDE
            raise ConfigError(f"imgsz={imgsz} is not a multiple of the model's stride {STRIDE}: "
                              f"use imgsz={lower} or imgsz={lower + STRIDE}")
    max_batch = _int(max_batch, "max_batch", "max_batch=32")
    if batch_sizes is None:
        sizes = default_batch_sizes(max_batch)
    else:
        if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
            raise ConfigError(f"batch={batch_sizes} is not a list of batch sizes: use e.g. batch=1,2,4,8")
        sizes = tuple(sorted({_int(b, "batch", "batch=1,2,4,8") for b in batch_sizes}))
    latency_ms = None if latency_ms is None else _positive(latency_ms, "latency_ms",
                                                            "give the per-frame latency budget in milliseconds, "
                                                            "e.g. latency_ms=50")
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
        streams = _int(streams, "streams", "streams=4")
        fps = _positive(fps, "fps", "fps=25")
    policy = SweepPolicy(
        warmup_runs=_int(warmup_runs, "warmup", "warmup=3", low=0),
        runs=None if runs is None else _int(runs, "runs", "runs=50"),
        seconds_per_batch=_positive(seconds_per_batch, "seconds", "seconds=1.0"),
        max_seconds=_positive(max_seconds, "max_seconds", "max_seconds=90"),
    )
    threads = None if threads is None else _int(threads, "threads", "threads=4")
    module = None if target is None else find_module(str(target))
    return InferenceOptions(
        model=str(model), kind=kind, backend=backend, provider=provider, device=device, imgsz=imgsz,
        batch_sizes=sizes, latency_ms=latency_ms, memory_budget_bytes=memory_budget_bytes,
        memory_fraction=memory_fraction, streams=streams, fps=fps, half=half,
        end_to_end=_flag(end_to_end, "end_to_end"), policy=policy, threads=threads, target=module,
        name=None if name is None else str(name), project=None if project is None else str(project),
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
    import onnxruntime

    if kind != "cpu" and device == "cpu":
        raise ConfigError(f"provider={kind} runs on a GPU but device=cpu: give device=0")
    available = onnxruntime.get_available_providers()
    if ORT_PROVIDERS[kind] not in available:
        raise ConfigError(f"provider={kind}: ONNX Runtime {onnxruntime.__version__} here has {', '.join(available)} "
                          f"only: install onnxruntime-gpu for CUDA/TensorRT, or use device=cpu")


def _device(device: Any, backend: str) -> str:
    from visionbatch.config import check_device

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
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return True


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}={value} is not true or false: use {key}=True or leave it out")


def _int(value: Any, key: str, example: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"{key}={value} is not a whole number: use e.g. {example}")
    if value < low:
        raise ConfigError(f"{key}={value:g} is impossible: {key} must be >= {low}, e.g. {example}")
    return int(value)


def _positive(value: Any, key: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value} is not a number: {fix if ' ' in fix else 'use e.g. ' + fix}")
    if not value > 0:
        raise ConfigError(f"{key}={value:g} is impossible: {fix if ' ' in fix else 'use e.g. ' + fix}")
    return float(value)
