"""`device=` as users write it (`cpu`, `0`, `0,1`, `cuda:0`): one parser for every command."""

from __future__ import annotations

from typing import Any

from visionbatch.errors import ConfigError


def check_device(value: Any) -> None:
    """Refuse CUDA devices that do not exist, before Ultralytics fails on them."""
    if value is None or value == "" or str(value).lower() in {"cpu", "mps", "-1"}:
        return
    text = str(value).lower().replace("cuda:", "").replace("[", "").replace("]", "").replace(" ", "")
    parts = [p for p in text.split(",") if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"device={value} is not a device: use device=cpu, device=0, device=0,1 or device=cuda:0")
    import torch

    count = torch.cuda.device_count()
    missing = [int(p) for p in parts if int(p) >= count]
    if missing and count == 0:
        raise ConfigError(f"device={value}: no CUDA GPU is visible to torch on this machine: use device=cpu")
    if missing:
        raise ConfigError(
            f"device={value}: CUDA device {missing[0]} does not exist ({count} visible: "
            f"{', '.join(str(i) for i in range(count))}): pick one of those"
        )
