"""Edge awareness: which Jetson this is, the common Jetson modules, and what the OS reports.

A Jetson's CPU and GPU share one memory, so a model's footprint there is what the OS reports as
used (`/proc/meminfo`, or `tegrastats`' RAM figure), not torch's CUDA counters or the process RSS.
Every reader takes its file paths (a `root`) so tests can build a board out of files.

The module table is NVIDIA's module data; part numbers follow the device-tree names that
jetson-stats (jtop) also keys on (its `MODULE_NAME_TABLE`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from visionbatch.devices.catalog import JETSON_FAMILIES, JETSON_MODULES, JetsonModule


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per key.

    Examples:
        >>> parse_meminfo("MemTotal:        7650336 kB\\nMemAvailable:    5123456 kB\\n")["MemTotal"]
        7833944064
    """
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return values


def memory_used_bytes(meminfo: dict[str, int]) -> int | None:
    """Memory in use system-wide: MemTotal - MemAvailable (on a Jetson, CPU and GPU together)."""
    if "MemTotal" in meminfo and "MemAvailable" in meminfo:
        return meminfo["MemTotal"] - meminfo["MemAvailable"]
    return None


def read_meminfo(root: Path = Path("/")) -> dict[str, int]:
    try:
        return parse_meminfo((root / "proc" / "meminfo").read_text())
    except OSError:
        return {}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode(errors="replace").replace("\x00", "\n").strip()
    except OSError:
        return None


def parse_l4t_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, ...' -> '36.4.3'.

    Examples:
        >>> parse_l4t_release("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref")
        '35.5.0'
    """
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match[1]}.{match[2]}" if match else None


def detect_jetson(root: Path = Path("/")) -> JetsonInfo | None:
    """The Jetson this runs on, from /etc/nv_tegra_release and /proc/device-tree; None elsewhere.

    The module is told by its part number in the device tree's `compatible` list when present,
    else by the family named in the model string and the memory the OS reports (the developer
    kits' model strings do not say how much memory the module has).
    """
    release_text = _read_text(root / "etc" / "nv_tegra_release")
    model = _read_text(root / "proc" / "device-tree" / "model") or ""
    compatible = _read_text(root / "proc" / "device-tree" / "compatible") or ""
    if release_text is None and "jetson" not in model.lower() and "tegra" not in compatible.lower():
        return None
    total = read_meminfo(root).get("MemTotal")
    module = _module_from_parts(compatible) or _module_from_model(model, total)
    return JetsonInfo(
        model=model or "unknown Jetson",
        l4t_release=parse_l4t_release(release_text or ""),
        memory_total_bytes=total,
        module=module,
    )


def _module_from_parts(compatible: str) -> JetsonModule | None:
    for module in JETSON_MODULES:
        if any(part in compatible for part in module.part_numbers):
            return module
    return None


def _module_from_model(model: str, total_bytes: int | None) -> JetsonModule | None:
    lowered = model.lower()
    family = next((prefix for words, prefix in JETSON_FAMILIES if words in lowered), None)
    if family is None:
        return None
    candidates = [m for m in JETSON_MODULES if m.key.startswith(family)]
    if total_bytes is None:
        return candidates[0] if len(candidates) == 1 else None
    # the OS reports a little less than the module's memory (firmware and carve-outs): the
    # smallest module at least as large as what the OS reports
    fitting = [m for m in candidates if m.memory_bytes >= total_bytes]
    return min(fitting, key=lambda m: m.memory_bytes) if fitting else max(candidates, key=lambda m: m.memory_bytes)


_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")


def parse_tegrastats(line: str) -> dict[str, float]:
    """One tegrastats line: RAM used/total (bytes) and power (mW) where it reports it.

    Power is the module input rail (VDD_IN) when listed (Orin NX/Nano, Xavier NX), else the sum of
    the rails listed (AGX Orin lists VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, ...).

    Examples:
        >>> parse_tegrastats("RAM 2735/7620MB (lfb 3x4MB) SWAP 0/3810MB (cached 0MB) "
        ...                  "GR3D_FREQ 0%@[305] VDD_IN 4849mW/4849mW VDD_CPU_GPU_CV 476mW/476mW")
        {'ram_used_bytes': 2867855360.0, 'ram_total_bytes': 7990149120.0, 'power_mw': 4849.0}
    """
    reading: dict[str, float] = {}
    ram = _RAM.search(line)
    if ram:
        reading["ram_used_bytes"] = float(int(ram[1]) * 2**20)
        reading["ram_total_bytes"] = float(int(ram[2]) * 2**20)
    rails = {name: float(now) for name, now, _avg in _RAIL.findall(line) if name not in {"RAM", "SWAP"}}
    if "VDD_IN" in rails:
        reading["power_mw"] = rails["VDD_IN"]
    elif rails:
        reading["power_mw"] = sum(rails.values())
    return reading


@dataclasses.dataclass(frozen=True, slots=True)
class JetsonInfo:
    """The Jetson this process runs on, as the OS describes it.

    Attributes:
        model: /proc/device-tree/model, e.g. 'NVIDIA Jetson Orin Nano Developer Kit'.
        l4t_release: from /etc/nv_tegra_release, e.g. '36.4.3'.
        memory_total_bytes: MemTotal from /proc/meminfo.
        module: the module from the table, when it could be told.
    """

    model: str
    l4t_release: str | None
    memory_total_bytes: int | None
    module: JetsonModule | None
