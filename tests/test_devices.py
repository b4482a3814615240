"""visionbatch.devices: the one device parser, the one OOM classifier, NVML found by UUID; and each
command's device policy on the parsed request. CPU only: torch.cuda and pynvml are replaced by fakes.
The docstring examples of visionbatch.devices run in tests/test_doctests.py."""

from __future__ import annotations

import sys
import types

import pytest

from visionbatch.devices.oom import is_oom
from visionbatch.devices.parse import DeviceRequest, check_device, parse_device
from visionbatch.errors import ConfigError

GIB = 1 << 30


# -- parse_device: what Ultralytics accepts, read without touching the machine -----------------------

@pytest.mark.parametrize("value, kind, indices", [
    (None, "default", ()),
    ("", "default", ()),
    ("none", "default", ()),
    ([], "default", ()),
    ("cpu", "cpu", ()),
    (" CPU ", "cpu", ()),
    ("mps", "mps", ()),
    ("mps:0", "mps", ()),
    (0, "cuda", (0,)),
    ("0", "cuda", (0,)),
    ("3", "cuda", (3,)),
    ("cuda", "cuda", (0,)),
    ("cuda:1", "cuda", (1,)),
    ("CUDA:1", "cuda", (1,)),
    ("0,1", "cuda", (0, 1)),
    ("0, 1", "cuda", (0, 1)),
    ("[0, 1]", "cuda", (0, 1)),
    ("(0, 1)", "cuda", (0, 1)),
    ("0,,01", "cuda", (0, 1)),  # as Ultralytics: empty parts dropped, leading zeros read as numbers
    ([0, 1], "cuda", (0, 1)),
    ((0, 1), "cuda", (0, 1)),  # what parse_pairs makes of device=0,1
    (["0", "1"], "cuda", (0, 1)),
    ("cuda:0,cuda:1", "cuda", (0, 1)),
    (-1, "cuda", (-1,)),
    ("-1", "cuda", (-1,)),
    ("-1,-1", "cuda", (-1, -1)),
    ([-1, 1], "cuda", (-1, 1)),
])
def test_parse_device_accepts(value, kind: str, indices: tuple[int, ...]) -> None:
    request = parse_device(value)
    assert (request.kind, request.indices) == (kind, indices)
    assert parse_device(request) is request


def test_parse_device_reads_a_torch_device() -> None:
    import torch

    assert parse_device(torch.device("cuda", 1)) == DeviceRequest("cuda", (1,), "cuda:1")
    assert parse_device(torch.device("cpu")) == DeviceRequest("cpu", (), "cpu")


def test_the_text_is_the_value_as_typed() -> None:
    assert parse_device("Cuda:1").text == "Cuda:1"
    assert parse_device((0, 1)).text == "0,1"
    assert parse_device(None).text == ""


@pytest.mark.parametrize("value, shown", [
    ("gpu", "gpu"),
    ("npu:0", "npu:0"),  # Ultralytics knows Ascend NPUs; visionbatch measures CUDA and CPU only
    ("mps:1", "mps:1"),
    ("cpu,0", "cpu,0"),
    ("-2", "-2"),
    (-2, "-2"),
    ("0.5", "0.5"),
    (0.0, "0.0"),
    (True, "True"),
    ([0, None], "0,None"),
    ("a\nb", "a\\nb"),  # one line, whatever was typed
    ("\u0663", "\u0663"),  # a digit, but not an ASCII one
    pytest.param("9" * 5000, "99999999999999999999...(5000 characters)", id="5000-digits"),
    pytest.param(10**5000, "a number too long to print", id="huge-int"),
])
def test_parse_device_refuses(value, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_device(value)
    assert str(info.value) == (f"device={shown} is not a device: use device=cpu, device=0, device=0,1 "
                               f"or device=cuda:0")


@pytest.mark.parametrize("value, torch_name, ultralytics_name, first", [
    ("cpu", "cpu", "cpu", None),
    ("mps:0", "mps", "mps", None),
    ("cuda:2", "cuda:2", "2", 2),
    ("[1, 0]", "cuda:1", "1,0", 1),
    ((0, 1), "cuda:0", "0,1", 0),
])
def test_request_names(value, torch_name: str, ultralytics_name: str, first: int | None) -> None:
    request = parse_device(value)
    assert (request.torch_name, request.ultralytics_name, request.first) == (torch_name, ultralytics_name, first)


def test_a_request_ultralytics_completes_has_no_torch_name_until_resolved() -> None:
    assert parse_device(None).ultralytics_name == "" and parse_device("-1").ultralytics_name == "-1"
    for value in (None, "-1", "-1,-1"):
        with pytest.raises(ValueError, match="call resolve"):
            parse_device(value).torch_name


@pytest.mark.parametrize("value, cuda_available, kind, indices", [
    (None, True, "cuda", (0,)),
    (None, False, "cpu", ()),
    ("-1", True, "cuda", (0,)),
    ("-1,-1", False, "cpu", ()),
    ("1,-1", True, "cuda", (1,)),
    ("cuda:1", False, "cuda", (1,)),  # a named GPU stays named: check_device says it is missing
    ("cpu", True, "cpu", ()),
    ("mps", True, "mps", ()),
])
def test_resolve(value, cuda_available: bool, kind: str, indices: tuple[int, ...]) -> None:
    resolved = parse_device(value).resolve(cuda_available)
    assert (resolved.kind, resolved.indices) == (kind, indices)
    assert resolved.text == parse_device(value).text


def test_check_device_parses_then_checks_the_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert check_device("cpu") == DeviceRequest("cpu", (), "cpu")
    assert check_device(-1).picks_idle  # Ultralytics drops -1 where there is no GPU: nothing to refuse
    with pytest.raises(ConfigError) as info:
        check_device("0,-1")
    assert str(info.value) == "device=0,-1: no CUDA GPU is visible to torch on this machine: use device=cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device((0, 1)).indices == (0, 1)
    with pytest.raises(ConfigError) as info:
        check_device("cuda:5")
    assert str(info.value) == "device=cuda:5: CUDA device 5 does not exist (2 visible: 0, 1): pick one of those"
    with pytest.raises(ConfigError, match="is not a device"):
        check_device("gpu")  # parsed first: the count is never asked


def test_check_device_refuses_mps_without_an_mps_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ultralytics trains on the CPU without a word when device=mps has no MPS device (Linux, an Intel Mac)."""
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        check_device("mps")
    assert str(info.value) == ("device=mps: no Apple MPS device is available to torch on this machine: "
                               "use device=cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert check_device("mps:0") == DeviceRequest("mps", (), "mps:0")


# -- each command's policy, on the parsed request -----------------------------------------------------

@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_fit_measures_one_device_it_can_name(two_gpus) -> None:
    from visionbatch.fit.api import resolve_device

    assert resolve_device("0", None) == ("cuda:0", None)
    assert resolve_device([1], None) == ("cuda:1", None)
    assert resolve_device("CPU", "1GiB") == ("cpu", GIB)
    with pytest.raises(ConfigError) as info:
        resolve_device((0, 1), None)
    assert str(info.value) == "device=0,1: fit one GPU at a time, e.g. device=0; with DDP each GPU takes batch / 2 images"
    with pytest.raises(ConfigError, match=r"^device=-1: Ultralytics picks the idle GPU only when training starts"):
        resolve_device(-1, None)
    with pytest.raises(ConfigError, match=r"^device=mps: fit measures a CUDA GPU, or CPU steps against a budget"):
        resolve_device("mps", None)
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device("gpu", None)


def test_infer_runs_on_one_device(two_gpus) -> None:
    from visionbatch.infer.options import check_options

    def device(value) -> str:
        return check_options("yolo11n.yaml", device=value, backend="pytorch").device

    assert (device("cuda:1"), device(1), device("cpu"), device(None), device("-1")) == (
        "cuda:1", "cuda:1", "cpu", "cuda:0", "cuda:0")
    for value in ("0,1", [0, 1], "mps", "gpu"):
        with pytest.raises(ConfigError) as info:
            device(value)
        assert str(info.value).endswith(" is not one device: use device=cpu, device=0 or device=cuda:0")
    with pytest.raises(ConfigError, match=r"CUDA device 2 does not exist \(2 visible: 0, 1\)"):
        device(2)


def test_infer_without_a_gpu_takes_the_cpu_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from visionbatch.infer.options import check_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_options("yolo11n.yaml", device=None, backend="pytorch").device == "cpu"
    assert check_options("yolo11n.yaml", device=-1, backend="pytorch").device == "cpu"


def test_augcost_steps_on_the_first_device_named(two_gpus) -> None:
    from visionbatch.augment.step import step_device

    assert [str(step_device(v)) for v in ("cpu", "mps", "1", (1, 0), None, "-1")] == [
        "cpu", "mps", "cuda:1", "cuda:1", "cuda:0", "cuda:0"]
    with pytest.raises(ConfigError, match="device=gpu is not a device"):
        step_device("gpu")


# -- one OOM classifier ---------------------------------------------------------------------------------

@pytest.mark.parametrize("exc, expected", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), True),
    (RuntimeError("GET was unable to find an engine to execute this computation"), True),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1000 bytes"), True),
    (RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer"), True),
    (RuntimeError("std::bad_alloc"), True),
    (MemoryError(), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered (out of memory?)"), False),
    (RuntimeError("CUDA error: device-side assert triggered (out of memory?)"), False),
    (RuntimeError("CUDA error: unspecified launch failure; out of memory"), False),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),  # only allocation errors' types count, whatever the message
    (KeyError("bad_alloc"), False),
])
def test_is_oom(exc: BaseException, expected: bool) -> None:
    assert is_oom(exc) is expected


def test_is_oom_knows_torch_oom_class() -> None:
    import torch

    assert is_oom(torch.cuda.OutOfMemoryError("no room")) is True


# -- NVML, found by UUID ---------------------------------------------------------------------------------

class FakeNvml(types.ModuleType):
    """pynvml on a board of two GPUs; NVML's index 1 is the GPU torch calls 0 (CUDA_VISIBLE_DEVICES=1,0)."""

    class NVMLError(Exception):
        pass

    GPUS = {"GPU-aaaa": (2 * GIB, 100_000), "GPU-bbbb": (7 * GIB, 250_000)}  # used bytes, power mW
    BY_INDEX = ["GPU-aaaa", "GPU-bbbb"]

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return self.BY_INDEX[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.GPUS:
            raise self.NVMLError("NVML_ERROR_NOT_FOUND")
        return uuid

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(total=16 * GIB, used=self.GPUS[handle][0])

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        return self.GPUS[handle][1]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list:
        return []


@pytest.fixture
def reordered(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """torch's GPU 0 is NVML's second GPU (bbbb), torch's GPU 1 NVML's first (aaaa), as torch reports uuids."""
    import torch

    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    uuids = {0: "bbbb", 1: "aaaa", 2: "cccc"}  # torch prints the UUID without NVML's 'GPU-' prefix
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(uuid=uuids[index]))
    return nvml


def test_nvml_reading_follows_the_uuid(reordered: FakeNvml) -> None:
    from visionbatch.devices.memory import nvml_handle, nvml_reading

    assert nvml_handle(reordered, 0) == "GPU-bbbb" and nvml_handle(reordered, 1) == "GPU-aaaa"
    reading = nvml_reading(0)
    assert reading is not None and reading.used_bytes == 7 * GIB
    assert reordered.inits == 0  # shut down again


def test_infer_sampler_reads_the_gpu_torch_runs_on(reordered: FakeNvml) -> None:
    from visionbatch.infer.probes import nvml_readers

    readers = nvml_readers(0)
    assert readers is not None
    memory, power = readers
    assert (memory(), power()) == (7 * GIB, 250_000.0)  # bbbb's, not NVML index 0's (aaaa)
    memory, power = nvml_readers(1)
    assert (memory(), power()) == (2 * GIB, 100_000.0)


def test_infer_sampler_without_the_gpu_reads_nothing(reordered: FakeNvml) -> None:
    from visionbatch.infer.probes import nvml_readers

    assert nvml_readers(2) is None  # cccc is not on NVML's board
    assert reordered.inits == 0  # the init it made is undone
