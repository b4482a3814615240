"""Runners and model files: ONNX inspection, engine headers, and TensorRT through a simulated runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from visionbatch.errors import ConfigError
from visionbatch.infer.export import check_source, engine_bytes, engine_info, onnx_info
from visionbatch.infer.runners import TensorRTRunner


def test_importing_infer_loads_no_framework() -> None:
    code = ("import json, os, sys; before = dict(os.environ); import visionbatch.infer.tune, visionbatch.cli.infer; "
            "print(json.dumps([dict(os.environ) == before] + [m in sys.modules for m in "
            "('torch', 'onnxruntime', 'onnx', 'ultralytics', 'tensorrt')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [True, False, False, False, False, False]


@pytest.mark.parametrize("kind, message, expected", [
    ("RuntimeException", "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
     "Conv node. Status Message: bfc_arena.cc:376 AllocateRawInternal Failed to allocate memory for requested "
     "buffer of size 1073741824", True),
    ("Fail", "[ONNXRuntimeError] : 1 : FAIL : std::bad_alloc", True),
    ("Fail", "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was encountered "
     "(out of memory?)", False),
    ("InvalidArgument", "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input", False),
])
def test_onnxruntime_errors_are_classified_by_message(kind: str, message: str, expected: bool) -> None:
    """ONNX Runtime raises its own types (subclasses of Exception only), so a RuntimeError-only rule would miss
    its OOMs: the runner keeps the batches that fitted only when these count."""
    from visionbatch.devices.oom import is_oom
    from visionbatch.infer.runners import onnxruntime_errors

    error_type = next(t for t in onnxruntime_errors() if t.__name__ == kind)
    assert not issubclass(error_type, RuntimeError)
    assert is_oom(error_type(message)) is expected


def ultralytics_engine(path: Path, engine: bytes, metadata: dict) -> Path:
    header = json.dumps(metadata).encode()
    path.write_bytes(len(header).to_bytes(4, "little") + header + engine)
    return path


def test_engine_header_is_stripped_for_deployment(tmp_path: Path) -> None:
    meta = {"task": "segment", "imgsz": [320, 320], "names": {"0": "person"}}
    path = ultralytics_engine(tmp_path / "m.engine", b"\x01ENGINEBYTES", meta)
    assert engine_bytes(path) == b"\x01ENGINEBYTES"
    info = engine_info(path)
    assert (info.task, info.imgsz, info.names) == ("segment", 320, {0: "person"})
    plain = tmp_path / "plain.engine"
    plain.write_bytes(b"\xff\xff\xff\x7fENGINE")  # a length past the end is no header
    assert engine_bytes(plain) == b"\xff\xff\xff\x7fENGINE" and engine_info(plain).task == "detect"


@pytest.mark.parametrize("name, words", [
    ("missing.onnx", "no such file"),
    ("http://example.com/m.onnx", "never downloads"),
    ("model.tflite", "expected a model YAML"),
    ("yolo11n.pt", "never downloads weights"),
])
def test_check_source_refuses(name: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        check_source(name)


def test_onnx_info_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a protobuf at all \x00\x01")
    with pytest.raises(ConfigError, match="not a readable ONNX file"):
        onnx_info(bogus)


class FakeTensorRT:
    """Just enough of the tensorrt module (10.x named-tensor API) for TensorRTRunner, on CPU tensors."""

    __version__ = "10.3.0"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    def __init__(self, expected: bytes, max_batch: int = 8) -> None:
        self.expected = expected
        self.max_batch = max_batch
        self.executed: list[tuple[int, ...]] = []
        fake = self

        class Context:
            def __init__(self) -> None:
                self.shape = None
                self.addresses: dict[str, int] = {}

            def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
                if not 1 <= shape[0] <= fake.max_batch:
                    return False
                self.shape = shape
                return True

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return (self.shape[0], 84, 84)

            def set_tensor_address(self, name: str, address: int) -> None:
                self.addresses[name] = address

            def execute_async_v3(self, stream: int) -> bool:
                assert set(self.addresses) == {"images", "output0"}
                fake.executed.append(self.shape)
                return True

        class Engine:
            num_io_tensors = 2

            def get_tensor_name(self, index: int) -> str:
                return ["images", "output0"][index]

            def get_tensor_mode(self, name: str) -> str:
                return fake.TensorIOMode.INPUT if name == "images" else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name: str) -> str:
                return "float32"

            def get_tensor_profile_shape(self, name: str, profile: int):
                return (1, 3, 64, 64), (fake.max_batch, 3, 64, 64), (fake.max_batch, 3, 64, 64)

            def create_execution_context(self) -> Context:
                return Context()

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                return Engine() if data == fake.expected else None

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype: str):
        return np.float32


def test_tensorrt_runner_on_a_simulated_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTensorRT(expected=b"SERIALIZED")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    path = ultralytics_engine(tmp_path / "m.engine", b"SERIALIZED", {"task": "detect"})
    stream = types.SimpleNamespace(cuda_stream=0, synchronize=lambda: None)
    runner = TensorRTRunner(path, "cpu", stream=stream)  # CPU tensors stand in for CUDA buffers
    assert (runner.max_batch, runner.provider, runner.precision) == (8, "TensorRT 10.3.0", "fp32 I/O")
    batch = runner.prepare(np.zeros((2, 3, 64, 64), dtype=np.float32))
    outputs = runner.infer(batch)
    runner.synchronize()
    assert [tuple(o.shape) for o in outputs] == [(2, 84, 84)]
    assert runner.infer(batch)[0] is outputs[0]  # output buffers are reused for a shape
    assert fake.executed == [(2, 3, 64, 64), (2, 3, 64, 64)]
    with pytest.raises(ConfigError, match="outside the engine's optimisation profile"):
        runner.infer(runner.prepare(np.zeros((16, 3, 64, 64), dtype=np.float32)))


def test_tensorrt_runner_refuses_a_foreign_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(expected=b"OTHER"))
    path = ultralytics_engine(tmp_path / "m.engine", b"SERIALIZED", {})
    with pytest.raises(ConfigError, match="could not load this engine"):
        TensorRTRunner(path, "cpu", stream=types.SimpleNamespace())
