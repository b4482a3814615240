"""Backends that run one batch: ONNX Runtime, PyTorch eager, TensorRT.

Each runner has `prepare(array) -> input` (the NCHW float32 batch moved to the runtime's device
and dtype, done once per batch size, outside the timing), `infer(input) -> outputs` (a list:
`output0`, and `output1` mask prototypes for segmentation) and `synchronize()` (waits for the
device, so a timed call is a finished call). Imports of onnxruntime, torch and tensorrt happen
when a runner is made, never at import time; onnxruntime through `visionbatch.infer.ort`, with its
telemetry off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from visionbatch.devices.oom import is_oom
from visionbatch.devices.parse import parse_device
from visionbatch.errors import ConfigError, ProbeError
from visionbatch.infer.export import ModelInfo, engine_header
from visionbatch.infer.ort import import_onnxruntime
from visionbatch.text import printable

BACKENDS = ("onnxruntime", "pytorch", "tensorrt")
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}

class OnnxRuntimeRunner:
    """An ONNX Runtime session on the CPU, or on CUDA / TensorRT execution providers when installed."""

    backend = "onnxruntime"

    def __init__(self, info: ModelInfo, device: str, threads: int | None = None, provider: str | None = None,
                 imgsz: int = 640, max_batch: int = 64, cache_dir: Path | None = None, half: bool = False) -> None:
        ort = import_onnxruntime()
        self.info = info
        self.device = device
        request = parse_device(device)
        kind = provider or ("cpu" if request.kind == "cpu" else "cuda")
        if kind not in ORT_PROVIDERS:
            raise ConfigError(f"provider={provider} is not an ONNX Runtime provider visionbatch drives: "
                              f"use provider=cpu, provider=cuda or provider=tensorrt")
        wanted = ORT_PROVIDERS[kind]
        available = ort.get_available_providers()
        if wanted not in available:
            raise ConfigError(
                f"provider={kind}: ONNX Runtime {ort.__version__} here has {', '.join(available)} only: "
                f"install onnxruntime-gpu for CUDA/TensorRT, or use device=cpu")
        if kind != "cpu" and request.kind == "cpu":
            raise ConfigError(f"provider={kind} runs on a GPU but device=cpu: give device=0")
        options = ort.SessionOptions()
        self.threads = None
        if kind == "cpu":
            self.threads = threads
            if threads:
                options.intra_op_num_threads = threads
        device_id = request.first or 0  # on device=cpu only the CPU provider runs: the id goes unused
        providers: list[Any] = []
        if kind == "tensorrt":
            shape = f"{info.input_name}:{{b}}x3x{imgsz}x{imgsz}"
            # one profile covering every batch swept, so the EP builds one engine, not one per shape
            providers.append((wanted, {
                "device_id": device_id, "trt_fp16_enable": half,
                "trt_engine_cache_enable": cache_dir is not None, "trt_engine_cache_path": str(cache_dir or ""),
                "trt_profile_min_shapes": shape.format(b=1), "trt_profile_opt_shapes": shape.format(b=max_batch),
                "trt_profile_max_shapes": shape.format(b=max_batch),
            }))
        if kind in {"cuda", "tensorrt"}:
            providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
        providers.append("CPUExecutionProvider")
        self._errors = onnxruntime_errors()
        try:
            self.session = ort.InferenceSession(str(info.path), options, providers=providers)
        except self._errors as exc:
            if is_oom(exc):
                raise ProbeError(f"model={printable(info.path)}: {wanted} ran out of memory loading it "
                                 f"({_reason(exc)}): free the device, or use a smaller model") from None
            raise ConfigError(f"model={printable(info.path)}: ONNX Runtime {ort.__version__} cannot load it "
                              f"({type(exc).__name__}: {_reason(exc)}): re-export it with standard ONNX operators "
                              f"and any external data files beside it") from None
        used = self.session.get_providers()[0]
        if used != wanted:  # ONNX Runtime falls back to the CPU silently: say it instead
            raise ConfigError(f"model={printable(info.path)}: ONNX Runtime could not start {wanted} (it fell back to "
                              f"{used}): check the CUDA/TensorRT libraries, or use device=cpu")
        self.provider = used
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtype = np.float16 if "float16" in self.session.get_inputs()[0].type else np.float32
        self.precision = "fp16" if self.input_dtype == np.float16 or (kind == "tensorrt" and half) else "fp32"

    def prepare(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=self.input_dtype)

    def infer(self, inputs: np.ndarray) -> list[np.ndarray]:
        try:
            return self.session.run(None, {self.input_name: inputs})
        except self._errors as exc:
            if is_oom(exc):
                raise  # the sweep keeps the batches that fitted
            raise ProbeError(f"model={printable(self.info.path)}: ONNX Runtime failed on a batch of "
                             f"{inputs.shape[0]} ({type(exc).__name__}: {_reason(exc)}): re-export it with a "
                             f"dynamic batch (dynamic=True), or give batch_sizes= it accepts") from None

    def synchronize(self) -> None:
        """session.run returns finished outputs on the host."""

    def close(self) -> None:
        self.session = None


def onnxruntime_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception types (Fail, InvalidGraph, NotImplemented, InvalidArgument, ...).

    Its C++ core raises these, not Python's built-ins, for a file it cannot load or run: a custom
    operator domain, external data outside the model's folder, a broken graph.
    """
    import_onnxruntime()
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(value for value in vars(state).values()
                 if isinstance(value, type) and issubclass(value, Exception))


def _reason(exc: BaseException, limit: int = 300) -> str:
    """ONNX Runtime's message on one line, without its '[ONNXRuntimeError] : 1 : FAIL : ' prefix."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return printable(text, limit)


class TorchRunner:
    """The Ultralytics model in PyTorch eager mode (fused, eval), fp32, or fp16 on CUDA."""

    backend = "pytorch"

    def __init__(self, model: str, device: str, half: bool = False) -> None:
        import torch

        from visionbatch.ultralytics.offline import offline

        with offline():
            from ultralytics import YOLO

            network = YOLO(model).model
        network = network.fuse(verbose=False).eval()
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        self.torch_device = torch.device(device)
        network = network.to(self.torch_device)
        self.dtype = torch.float16 if half else torch.float32
        if half:
            network = network.half()
        self.network = network
        self.device = device
        self.precision = "fp16" if half else "fp32"
        self.provider = f"torch {torch.__version__} eager"

    def prepare(self, array: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(self.torch_device, self.dtype)

    def infer(self, inputs: Any) -> list[Any]:
        import torch

        with torch.inference_mode():
            out = self.network(inputs)
        head = out[0] if isinstance(out, (tuple, list)) else out
        return list(head) if isinstance(head, (tuple, list)) else [head]

    def synchronize(self) -> None:
        if self.torch_device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.torch_device)

    def close(self) -> None:
        self.network = None


class TensorRTRunner:
    """A serialized TensorRT engine (TensorRT >= 8.5 named-tensor API), buffers in torch CUDA memory."""

    backend = "tensorrt"

    def __init__(self, engine_path: Path, device: str, stream: Any = None) -> None:
        import tensorrt as trt
        import torch

        self.torch_device = torch.device(device)
        offset, _ = engine_header(engine_path)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(engine_path, "rb") as fh:
            fh.seek(offset)
            engine = runtime.deserialize_cuda_engine(fh.read())
        if engine is None:
            raise ConfigError(f"model={engine_path}: TensorRT {trt.__version__} could not load this engine (built "
                              f"by another TensorRT version or for another GPU): rebuild it on this device")
        if not hasattr(engine, "num_io_tensors"):
            raise ConfigError(f"TensorRT {trt.__version__} is too old: visionbatch needs TensorRT 8.5 or newer")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = sorted(n for n in names if n != self.input_name)
        self.dtypes = {n: _torch_dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.max_batch = int(engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self.stream = stream if stream is not None else torch.cuda.Stream(self.torch_device)
        self.device = device
        self.precision = "fp16" if self.dtypes[self.input_name] == torch.float16 else "fp32 I/O"
        self.provider = f"TensorRT {trt.__version__}"
        self._outputs: dict[tuple[int, ...], list[Any]] = {}

    def prepare(self, array: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(self.torch_device, self.dtypes[self.input_name])

    def infer(self, inputs: Any) -> list[Any]:
        import torch

        shape = tuple(inputs.shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise ConfigError(f"batch {shape[0]} is outside the engine's optimisation profile (max batch "
                              f"{self.max_batch}): rebuild the engine with a larger max batch")
        self.context.set_tensor_address(self.input_name, inputs.data_ptr())
        outputs = self._outputs.get(shape)
        if outputs is None:
            outputs = [torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n],
                                   device=self.torch_device) for n in self.output_names]
            self._outputs[shape] = outputs
        for name, tensor in zip(self.output_names, outputs):
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return outputs

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._outputs.clear()
        self.context = None
        self.engine = None


def _torch_dtype(np_dtype: Any) -> Any:
    import torch

    return {np.float16: torch.float16, np.float32: torch.float32, np.int32: torch.int32,
            np.int64: torch.int64, np.uint8: torch.uint8, np.bool_: torch.bool}.get(np.dtype(np_dtype).type,
                                                                                   torch.float32)
