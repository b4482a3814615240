"""`device=` as users write it (`cpu`, `0`, `0,1`, `cuda:0`, `[0, 1]`, `mps`, `-1`): one parser for every command.

`parse_device` reads the value into a `DeviceRequest` without touching torch; `check_device` also
refuses CUDA indices that do not exist here. Each command then applies its own policy to the
request (fit measures one GPU, infer runs on one device, train hands several to Ultralytics' DDP).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.text import printable, shown

IDLE_GPU = -1  # Ultralytics replaces each -1 with the index of an idle GPU (none on a machine without one)


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A `device=` value, parsed.

    Attributes:
        kind: 'cpu', 'cuda', 'mps', or 'default' when none was given (Ultralytics then takes the
            current GPU when there is one, else the CPU).
        indices: the CUDA devices named, in order; `IDLE_GPU` (-1) asks Ultralytics for an idle
            GPU. Empty unless kind is 'cuda'.
        text: the value as typed (a list comma-joined), for messages.
    """

    kind: str
    indices: tuple[int, ...] = ()
    text: str = ""

    @property
    def first(self) -> int | None:
        """The first CUDA index named (-1 for an idle GPU), or None when no index is named.

        Examples:
            >>> parse_device("cuda:1").first, parse_device("2,3").first, parse_device("cpu").first
            (1, 2, None)
        """
        return self.indices[0] if self.indices else None

    @property
    def picks_idle(self) -> bool:
        """Whether Ultralytics is asked to choose a GPU (-1) instead of being told which."""
        return IDLE_GPU in self.indices

    @property
    def torch_name(self) -> str:
        """The torch device name of the first device: 'cpu', 'mps' or 'cuda:N'.

        Raises:
            ValueError: for a request Ultralytics still has to complete (nothing given, or -1):
                call `resolve()` first.

        Examples:
            >>> parse_device("0,1").torch_name, parse_device("CPU").torch_name, parse_device([2]).torch_name
            ('cuda:0', 'cpu', 'cuda:2')
        """
        if self.kind in {"cpu", "mps"}:
            return self.kind
        if self.kind == "cuda" and self.first is not None and self.first >= 0:
            return f"cuda:{self.first}"
        raise ValueError(f"device={self.text!r} names no device yet: call resolve() before torch_name")

    @property
    def ultralytics_name(self) -> str:
        """The value in Ultralytics' own form: '', 'cpu', 'mps', '0' or '0,1' ('-1' for an idle GPU).

        Examples:
            >>> parse_device("cuda:0").ultralytics_name, parse_device([0, 1]).ultralytics_name
            ('0', '0,1')
            >>> parse_device(None).ultralytics_name, parse_device("mps:0").ultralytics_name
            ('', 'mps')
        """
        if self.kind == "cuda":
            return ",".join(str(index) for index in self.indices)
        return "" if self.kind == "default" else self.kind

    def resolve(self, cuda_available: bool) -> DeviceRequest:
        """The request with Ultralytics' choice made now, for a command that runs on one device itself:
        no device, or only -1, becomes CUDA device 0 when `cuda_available` (GPU 0, not the idlest one
        Ultralytics would look for), else the CPU; -1 beside named GPUs is dropped.

        Examples:
            >>> parse_device("").resolve(cuda_available=True).torch_name
            'cuda:0'
            >>> parse_device("-1").resolve(cuda_available=False).torch_name
            'cpu'
            >>> parse_device("1,-1").resolve(cuda_available=True).indices
            (1,)
        """
        named = tuple(index for index in self.indices if index != IDLE_GPU)
        if self.kind == "default" or (self.kind == "cuda" and not named):
            return replace(self, kind="cuda", indices=(0,)) if cuda_available else replace(self, kind="cpu", indices=())
        return replace(self, indices=named)


def _typed(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(_typed(v) if v is not None else "None" for v in value)
    return shown(value)


def _refuse(value: Any) -> ConfigError:
    return ConfigError(f"device={printable(_typed(value))} is not a device: "
                       f"use device=cpu, device=0, device=0,1 or device=cuda:0")


def _items(value: Any) -> list[str]:
    """The comma-separated parts of `value`, lower case, without spaces, brackets, quotes or 'cuda:';
    '?' stands for a part of a type no device is written as."""
    if type(value).__module__ == "torch" and type(value).__name__ == "device":
        value = str(value)  # torch.device('cuda', 1) reads as 'cuda:1'
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [part for item in value for part in (_items(item) if item is not None else ["?"])]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ["?"]
    if isinstance(value, int):
        return [str(value)] if value.bit_length() < 64 else ["?"]  # str() of a huge int raises
    parts = value.lower().split(",")
    for noise in (" ", "[", "]", "(", ")", "'", '"'):
        parts = [part.replace(noise, "") for part in parts]
    parts = [part.removeprefix("cuda:") for part in parts]
    return [part for part in parts if part not in {"", "none"}]


def parse_device(value: Any) -> DeviceRequest:
    """Read `device=` as Ultralytics does, without looking at the machine.

    Accepts `cpu`, `mps` (or `mps:0`), CUDA indices (`0`, `0,1`, `cuda:0`, `cuda`, `[0, 1]`, a tuple
    of ints, a torch.device), `-1` (an idle GPU, Ultralytics' choice) and None or '' (the default).
    Case and spaces do not matter; a DeviceRequest is returned unchanged.

    Raises:
        ConfigError: anything else, with the forms that work.

    Examples:
        >>> parse_device("cuda:1")
        DeviceRequest(kind='cuda', indices=(1,), text='cuda:1')
        >>> parse_device((0, 1))
        DeviceRequest(kind='cuda', indices=(0, 1), text='0,1')
        >>> parse_device(" CPU "), parse_device(None)
        (DeviceRequest(kind='cpu', indices=(), text=' CPU '), DeviceRequest(kind='default', indices=(), text=''))
        >>> parse_device("-1")
        DeviceRequest(kind='cuda', indices=(-1,), text='-1')
        >>> parse_device("gpu")
        Traceback (most recent call last):
        ...
        visionbatch.errors.ConfigError: device=gpu is not a device: use device=cpu, device=0, device=0,1 or device=cuda:0
    """
    if isinstance(value, DeviceRequest):
        return value
    text = _typed(str(value) if type(value).__module__ == "torch" else value)
    parts = _items(value)
    if not parts:
        return DeviceRequest("default", (), text)
    if len(parts) == 1 and parts[0] in {"cpu", "mps", "mps:0"}:
        return DeviceRequest(parts[0].removesuffix(":0"), (), text)
    parts = ["0" if part == "cuda" else part for part in parts]
    # ASCII digits only, and few of them: int() refuses thousands of digits, and no machine has 10^18 GPUs
    if not all(part.isascii() and part.isdecimal() and len(part) < 19 or part == str(IDLE_GPU) for part in parts):
        raise _refuse(value)
    return DeviceRequest("cuda", tuple(int(part) for part in parts), text)


def check_device(value: Any) -> DeviceRequest:
    """`parse_device`, then refuse CUDA devices that do not exist, before Ultralytics fails on them.

    Raises:
        ConfigError: not a device, no CUDA GPU, an index past the GPUs torch sees, or mps without an MPS device.

    Examples:
        >>> check_device("cpu").kind, check_device("-1").picks_idle  # -1 is left to Ultralytics
        ('cpu', True)
    """
    request = parse_device(value)
    if request.kind == "mps":
        import torch

        if not torch.backends.mps.is_available():  # Ultralytics would train on the CPU without a word
            raise ConfigError(f"device={request.text}: no Apple MPS device is available to torch on this machine: "
                              f"use device=cpu")
        return request
    named = [index for index in request.indices if index != IDLE_GPU]
    if not named:
        return request
    import torch

    count = torch.cuda.device_count()
    missing = [index for index in named if index >= count]
    if missing and count == 0:
        raise ConfigError(f"device={request.text}: no CUDA GPU is visible to torch on this machine: use device=cpu")
    if missing:
        raise ConfigError(
            f"device={request.text}: CUDA device {shown(missing[0])} does not exist ({count} visible: "
            f"{', '.join(str(i) for i in range(count))}): pick one of those"
        )
    return request
