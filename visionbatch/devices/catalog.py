"""The devices visionbatch can plan for without having them: GPUs users train on and Jetson modules.

One catalog serves every command's `target=`: `fit` and `sweep` predict a training batch for any
entry, `infer` plans deployment for any entry (the memory the plan must fit; on a Jetson module,
which it can also read on the board itself, the configs too). A size (`target=6GiB`) is a generic
CUDA GPU of that memory.

Memory is the board's nominal size (a "12 GB" card is 12 GiB here; torch reports a few percent
less as total_memory, and the CUDA context takes its share, which the prediction models
separately). Jetson modules share one memory between CPU and GPU: their budget is what the OS
leaves free, `os_reserved_bytes` less than the total. The Jetson table is NVIDIA's module data;
part numbers follow the device-tree names that jetson-stats (jtop) also keys on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from visionbatch.devices.memory import Capacity
from visionbatch.errors import ConfigError
from visionbatch.units import GIB


@dataclass(frozen=True, slots=True)
class JetsonModule:
    """A Jetson module, for memory budgets and for planning from another machine.

    Attributes:
        key: the name `target=` takes, e.g. 'orin-nano-8gb'.
        name: NVIDIA's name.
        memory_bytes: unified memory (CPU and GPU share it).
        gpu: the GPU in words.
        dla_cores: deep-learning accelerator cores (TensorRT can place layers there).
        part_numbers: module part numbers as in the device tree's `compatible`/dtb names.
    """

    key: str
    name: str
    memory_bytes: int
    gpu: str
    dla_cores: int
    part_numbers: tuple[str, ...] = ()


JETSON_MODULES: tuple[JetsonModule, ...] = (
    JetsonModule("orin-nano-4gb", "Jetson Orin Nano 4GB", 4 * GIB, "512-core Ampere, 16 Tensor Cores", 0,
                 ("p3767-0004",)),
    JetsonModule("orin-nano-8gb", "Jetson Orin Nano 8GB", 8 * GIB, "1024-core Ampere, 32 Tensor Cores", 0,
                 ("p3767-0003", "p3767-0005")),
    JetsonModule("orin-nx-8gb", "Jetson Orin NX 8GB", 8 * GIB, "1024-core Ampere, 32 Tensor Cores", 1,
                 ("p3767-0001",)),
    JetsonModule("orin-nx-16gb", "Jetson Orin NX 16GB", 16 * GIB, "1024-core Ampere, 32 Tensor Cores", 2,
                 ("p3767-0000",)),
    JetsonModule("agx-orin-32gb", "Jetson AGX Orin 32GB", 32 * GIB, "1792-core Ampere, 56 Tensor Cores", 2,
                 ("p3701-0004",)),
    JetsonModule("agx-orin-64gb", "Jetson AGX Orin 64GB", 64 * GIB, "2048-core Ampere, 64 Tensor Cores", 2,
                 ("p3701-0005",)),
    JetsonModule("xavier-nx", "Jetson Xavier NX 8GB", 8 * GIB, "384-core Volta, 48 Tensor Cores", 2,
                 ("p3668-0000", "p3668-0001")),
    JetsonModule("xavier-nx-16gb", "Jetson Xavier NX 16GB", 16 * GIB, "384-core Volta, 48 Tensor Cores", 2,
                 ("p3668-0003",)),
)



# words in /proc/device-tree/model -> the table's family prefix
JETSON_FAMILIES = (("agx orin", "agx-orin"), ("orin nano", "orin-nano"), ("orin nx", "orin-nx"), ("xavier nx", "xavier-nx"))



def find_module(key: str) -> JetsonModule:
    """The module named by `target=`; case and '_' vs '-' do not matter.

    Raises:
        ConfigError: an unknown name, listing the known ones.

    Examples:
        >>> find_module("Orin_Nano_8GB").memory_bytes // 2**30
        8
    """
    wanted = str(key).strip().lower().replace("_", "-").replace(" ", "-")
    for module in JETSON_MODULES:
        if module.key == wanted:
            return module
    from visionbatch.text import suggest

    known = ", ".join(m.key for m in JETSON_MODULES)
    hint = suggest(wanted, [m.key for m in JETSON_MODULES])
    raise ConfigError(f"target={key} is not a Jetson module visionbatch knows{hint}: use one of {known}")


@dataclass(frozen=True, slots=True)
class Target:
    """A GPU to predict for.

    Attributes:
        key: the name to pass (`target=rtx3060`).
        name: the product name.
        total_bytes: memory on the board.
        arch: GPU architecture (decides the CUDA context size in the calibration data).
        amp: whether Ultralytics trains with AMP there (False on GTX 16xx: its check_amp blocklist).
        bf16: whether the GPU has native bfloat16 (Ampere and newer).
        unified: CPU and GPU share the memory (Jetson).
        os_reserved_bytes: memory the OS and desktop keep on a unified-memory device.
        note: anything a user should know about this entry.
    """

    key: str
    name: str
    total_bytes: int
    arch: str
    amp: bool = True
    bf16: bool = False
    unified: bool = False
    os_reserved_bytes: int = 0
    note: str = ""

    @property
    def budget_bytes(self) -> int:
        """Memory a training process can have before the fraction: total, less the OS on Jetson."""
        return self.total_bytes - self.os_reserved_bytes

    def capacity(self, memory_budget_bytes: int | None = None, context_bytes: int = 0) -> Capacity:
        """The memory this target offers a process, as every command sees it: `budget_bytes` usable
        (or `memory_budget_bytes` when given), the rest held by others (a Jetson's OS).

        Examples:
            >>> find_target("gtx1050").capacity(memory_budget_bytes=3 << 30).used_by_others_bytes
            1073741824
            >>> find_target("orin-nano-8gb").capacity().usable_bytes / (1 << 30)
            6.5
        """
        usable = self.budget_bytes if memory_budget_bytes is None else memory_budget_bytes
        return Capacity(device=f"target:{self.key}", name=self.name, total_bytes=self.total_bytes,
                        used_by_others_bytes=self.total_bytes - usable, context_bytes=context_bytes,
                        usable_bytes=usable)


def _gib(value: float) -> int:
    return int(value * GIB)


TARGETS: tuple[Target, ...] = (
    Target("gtx1050", "NVIDIA GeForce GTX 1050 (4 GB)", _gib(4), "pascal",
           note="laptop and 4 GB desktop boards; the 2 GB desktop board is gtx1050-2gb"),
    Target("gtx1050-2gb", "NVIDIA GeForce GTX 1050 (2 GB)", _gib(2), "pascal"),
    Target("gtx1050ti", "NVIDIA GeForce GTX 1050 Ti", _gib(4), "pascal"),
    Target("gtx1060", "NVIDIA GeForce GTX 1060 (6 GB)", _gib(6), "pascal"),
    Target("gtx1080ti", "NVIDIA GeForce GTX 1080 Ti", _gib(11), "pascal"),
    Target("gtx1650", "NVIDIA GeForce GTX 1650", _gib(4), "turing", amp=False,
           note="Ultralytics disables AMP on GTX 16xx (NaN losses), so training runs in FP32"),
    Target("gtx1660", "NVIDIA GeForce GTX 1660 / Ti / Super", _gib(6), "turing", amp=False,
           note="Ultralytics disables AMP on GTX 16xx (NaN losses), so training runs in FP32"),
    Target("rtx2060", "NVIDIA GeForce RTX 2060", _gib(6), "turing"),
    Target("rtx2080ti", "NVIDIA GeForce RTX 2080 Ti", _gib(11), "turing"),
    Target("rtx3050", "NVIDIA GeForce RTX 3050", _gib(8), "ampere", bf16=True),
    Target("rtx3060", "NVIDIA GeForce RTX 3060 (12 GB)", _gib(12), "ampere", bf16=True),
    Target("rtx3070", "NVIDIA GeForce RTX 3070", _gib(8), "ampere", bf16=True),
    Target("rtx3080", "NVIDIA GeForce RTX 3080 (10 GB)", _gib(10), "ampere", bf16=True),
    Target("rtx3090", "NVIDIA GeForce RTX 3090", _gib(24), "ampere", bf16=True),
    Target("rtx4060", "NVIDIA GeForce RTX 4060", _gib(8), "ada", bf16=True),
    Target("rtx4070", "NVIDIA GeForce RTX 4070", _gib(12), "ada", bf16=True),
    Target("rtx4080", "NVIDIA GeForce RTX 4080", _gib(16), "ada", bf16=True),
    Target("rtx4090", "NVIDIA GeForce RTX 4090", _gib(24), "ada", bf16=True),
    Target("rtx5090", "NVIDIA GeForce RTX 5090", _gib(32), "blackwell", bf16=True),
    Target("t4", "NVIDIA Tesla T4", _gib(16), "turing"),
    Target("v100-16gb", "NVIDIA Tesla V100 (16 GB)", _gib(16), "volta"),
    Target("v100-32gb", "NVIDIA Tesla V100 (32 GB)", _gib(32), "volta"),
    Target("a10", "NVIDIA A10", _gib(24), "ampere", bf16=True),
    Target("l4", "NVIDIA L4", _gib(24), "ada", bf16=True),
    Target("a100-40gb", "NVIDIA A100 (40 GB)", _gib(40), "ampere", bf16=True),
    Target("a100-80gb", "NVIDIA A100 (80 GB)", _gib(80), "ampere", bf16=True),
    Target("h100", "NVIDIA H100 (80 GB)", _gib(80), "hopper", bf16=True),
    Target("h200", "NVIDIA H200 (141 GB)", _gib(141), "hopper", bf16=True),
)



def _jetson_targets() -> tuple[Target, ...]:
    """The Jetson modules of visionbatch.infer.edge (one table for both commands), as training targets.

    The OS and desktop keep part of the unified memory; the amounts are assumptions, stated per module.
    """
    targets = []
    for module in JETSON_MODULES:
        kept = 1.0 if module.memory_bytes <= 4 * GIB else 1.5 if module.memory_bytes <= 8 * GIB else 2.0
        ampere = "Ampere" in module.gpu
        targets.append(Target(
            module.key, f"NVIDIA {module.name}", module.memory_bytes, "orin" if ampere else "volta", bf16=ampere,
            unified=True, os_reserved_bytes=_gib(kept),
            note=f"unified memory: the budget is what the OS leaves (assumed {kept:g} GiB kept)"))
    return tuple(targets)


TARGETS = TARGETS + _jetson_targets()

_ALIASES = {"1050": "gtx1050", "3060": "rtx3060", "4090": "rtx4090", "a100": "a100-40gb", "v100": "v100-16gb",
            "orin-nano": "orin-nano-8gb", "jetson-orin-nano": "orin-nano-8gb", "agx-orin": "agx-orin-64gb",
            "orin-nx": "orin-nx-16gb", "h100-80gb": "h100"}


def _normal(text: str) -> str:
    text = re.sub(r"^(nvidia|geforce|jetson|tesla)[\s_-]*", "", text.strip().lower())
    text = re.sub(r"^(geforce|jetson)[\s_-]*", "", text)
    return re.sub(r"[\s_]+", "-", text).replace("-ti", "ti").replace("rtx-", "rtx").replace("gtx-", "gtx")


def find_target(name: str) -> Target:
    """The target called `name` (case, spaces and 'NVIDIA'/'GeForce'/'Jetson' prefixes ignored), or a
    generic CUDA GPU of a given size (`6GiB`: AMP on, the default CUDA context, all of it usable).

    Raises:
        ConfigError: naming the known targets, or why a size is impossible.

    Examples:
        >>> find_target("GTX 1050").key, find_target("Jetson Orin Nano 8GB").key, find_target("rtx-3060").key
        ('gtx1050', 'orin-nano-8gb', 'rtx3060')
        >>> find_target("6GiB").key, find_target("6GiB").budget_bytes // 2**30
        ('cuda-6gib', 6)
    """
    text = str(name)
    if text[:1].isdigit():  # no catalog key starts with a digit: a size
        from visionbatch.units import parse_bytes

        size = parse_bytes(text, key="target")
        return Target(f"cuda-{text.lower()}", f"a CUDA GPU with {text}", size, "default",
                      note="a generic GPU: AMP on, the default CUDA context")
    key = _normal(text)
    key = _ALIASES.get(key, key)
    for target in TARGETS:
        if target.key == key or _normal(target.key) == key:
            return target
    from visionbatch.text import suggest

    known = ", ".join(t.key for t in TARGETS)
    raise ConfigError(f"target={name} is not a GPU visionbatch knows{suggest(key, [t.key for t in TARGETS])}: "
                      f"use one of {known}; or give the memory directly, e.g. target=6GiB or memory_budget=6GiB")


