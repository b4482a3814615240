"""The memory an inference plan must fit: `memory_budget=`, or `memory_fraction` of what this process may use.

`memory_fraction` means the same as in `fit`: a share of the memory this process may use, the
device's (or the target's) less what other processes hold and, on a Jetson, what the OS keeps.
"""

from __future__ import annotations

from visionbatch.devices import jetson as board
from visionbatch.devices import memory
from visionbatch.devices.jetson import JetsonInfo
from visionbatch.devices.memory import Capacity
from visionbatch.infer.options import InferenceOptions
from visionbatch.units import human_bytes
from visionbatch.values import DEFAULT_MEMORY_FRACTION


def memory_budget_for(opts: InferenceOptions, jetson: JetsonInfo | None) -> tuple[int | None, str]:
    """The memory budget the plan must fit, and where it comes from in words.

    As in `fit`: `memory_fraction` (default 0.9) of `memory_budget=` when one is given, which
    stands in for the device's memory; else `memory_fraction` (default 0.9 with `target=`) of the
    memory this process may use (`usable_memory`); else no budget.

    Examples:
        >>> from visionbatch.infer.options import check_options
        >>> memory_budget_for(check_options("yolo11n.yaml", device="cpu", target="agx-orin-32gb",
        ...                                 memory_fraction=0.5), None)
        (16106127360, "50% of Jetson AGX Orin 32GB's 30.0 GiB usable (32.0 GiB less 2.00 GiB the OS keeps)")
    """
    share = opts.memory_fraction if opts.memory_fraction is not None else DEFAULT_MEMORY_FRACTION
    if opts.memory_budget_bytes is not None:
        given = f"memory_budget={human_bytes(opts.memory_budget_bytes).replace(' ', '')}"
        return int(share * opts.memory_budget_bytes), f"{share:.0%} of {given}"
    if opts.memory_fraction is None and opts.target is None:
        return None, ""
    usable, held_by = usable_memory(opts, jetson)
    if usable is None:
        return None, ""
    source = f"{share:.0%} of {usable.name}'s {human_bytes(usable.usable_bytes)} usable"
    if usable.used_by_others_bytes and usable.total_bytes:
        source += f" ({human_bytes(usable.total_bytes)} less {human_bytes(usable.used_by_others_bytes)} {held_by})"
    if opts.memory_fraction is None:
        source += ", the default memory_fraction"
    return int(share * usable.usable_bytes), source


def usable_memory(opts: InferenceOptions, jetson: JetsonInfo | None) -> tuple[Capacity | None, str]:
    """The memory this process may use, which `memory_fraction` is a share of in every command, and
    who holds the rest of the device's ('other processes hold', 'the OS keeps').

    - `target=`: the catalog's memory for it, less what a Jetson's OS keeps (`Target.budget_bytes`);
    - a CUDA GPU: free memory plus what this process holds, read as `fit` reads it (`cuda_capacity`);
    - this CPU, or this Jetson's unified memory: available memory plus this process's resident
      memory (the OS and other processes hold the rest). None where the OS does not say.
    """
    if opts.target_memory is not None:
        return opts.target_memory, "the OS keeps"
    if opts.device.startswith("cuda") and jetson is None:
        return memory.cuda_capacity(int(opts.device.split(":")[1])), "other processes hold"
    meminfo = board.read_meminfo()
    total, available = meminfo.get("MemTotal"), meminfo.get("MemAvailable")
    if total is None or available is None:
        return None, ""
    usable = min(available + memory.current_rss_bytes(), total)
    name = jetson.model if jetson is not None else "this machine"
    held_by = "the OS and other processes hold" if jetson is not None else "other processes hold"
    return Capacity(device=opts.device, name=name, total_bytes=total, used_by_others_bytes=total - usable,
                    context_bytes=0, usable_bytes=usable), held_by
