"""The one place that knows Ultralytics internals: offline set-up, models, arguments.

Ultralytics reaches for the network in several places (DESIGN.md lists them): a DNS probe at
import, the Arial.ttf font check, pip auto-install of missing requirements, analytics and
Platform sync, weight downloads for `*.pt` names and for the AMP check. `offline()` closes every
one of them for the duration of a call and restores what it changed, so importing visionbatch
changes nothing and a caller's own Ultralytics use afterwards is as they left it.

Everything that imports Ultralytics does so inside `offline()`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visionbatch.errors import ConfigError

TASKS = ("detect", "segment")
DEFAULT_MODELS = {"detect": "yolo11n.yaml", "segment": "yolo11n-seg.yaml"}
# Settings whose integrations would talk to a server; off while visionbatch runs.
NETWORK_SETTINGS = {"sync": False, "api_key": "", "clearml": False, "comet": False, "dvc": False,
                    "mlflow": False, "raytune": False, "wandb": False}
# GPUs on which Ultralytics' check_amp disables AMP (ultralytics/utils/checks.py).
AMP_UNSAFE_GPU = re.compile(
    r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)", re.IGNORECASE
)

_lock = threading.RLock()
_depth = 0


def cpu_count() -> int:
    """CPUs this process may run on (affinity and cgroup aware where the OS says)."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def config_dir() -> Path:
    """Where visionbatch keeps Ultralytics' settings and font, unless YOLO_CONFIG_DIR is set."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "visionbatch"


@contextlib.contextmanager
def offline() -> Iterator[Any]:
    """Import Ultralytics with every network path closed; restore everything on exit.

    Yields:
        The `ultralytics` module.

    Examples:
        >>> with offline() as ultralytics:
        ...     ultralytics.utils.ONLINE
        False
    """
    global _depth
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield sys.modules["ultralytics"]
            finally:
                _depth -= 1
            return
        restore: list[tuple[Any, str, Any]] = []
        env_before = {k: os.environ.get(k) for k in
                      ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "ULTRALYTICS_API_KEY", "OMP_NUM_THREADS")}
        import torch

        threads_before = torch.get_num_threads()
        try:
            os.environ["YOLO_OFFLINE"] = "1"
            os.environ["YOLO_AUTOINSTALL"] = "0"
            os.environ.pop("ULTRALYTICS_API_KEY", None)
            if not os.environ.get("YOLO_CONFIG_DIR"):
                os.environ["YOLO_CONFIG_DIR"] = str(config_dir())
            import ultralytics
            import ultralytics.engine.trainer
            import ultralytics.utils
            import ultralytics.utils.checks
            import ultralytics.utils.torch_utils

            _patch(restore, ultralytics.utils, "ONLINE", False)
            _patch(restore, ultralytics.utils, "AUTOINSTALL", False)
            _patch(restore, ultralytics.utils.checks, "ONLINE", False)
            _patch(restore, ultralytics.utils.checks, "AUTOINSTALL", False)
            events = sys.modules.get("ultralytics.utils.events")
            if events is not None:
                _patch(restore, events, "ONLINE", False)
                _patch(restore, events.events, "enabled", False)
            # Ultralytics trains on cpus - 1 threads (1 of 2); a CPU run here uses every core.
            _patch(restore, ultralytics.utils.torch_utils, "NUM_THREADS", cpu_count())
            _patch(restore, ultralytics.engine.trainer, "check_amp", check_amp_offline)
            settings = ultralytics.utils.SETTINGS
            for key, value in NETWORK_SETTINGS.items():
                if key in settings:
                    restore.append((settings, "[" + key, settings[key]))
                    dict.__setitem__(settings, key, value)  # in memory only: the user's file is untouched
            _install_font(Path(ultralytics.utils.checks.USER_CONFIG_DIR))
            _depth = 1
            yield ultralytics
        finally:
            _depth = 0
            for owner, name, value in reversed(restore):
                if name.startswith("["):
                    dict.__setitem__(owner, name[1:], value)
                else:
                    setattr(owner, name, value)
            for key, value in env_before.items():
                if key == "OMP_NUM_THREADS" and value is None:
                    continue  # Ultralytics sets it at import; dataloader workers started later rely on it
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            torch.set_num_threads(threads_before)


def _patch(restore: list, owner: Any, name: str, value: Any) -> None:
    restore.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def _install_font(folder: Path) -> None:
    """Ultralytics' check_font downloads Arial.ttf when missing; any TTF satisfies it."""
    targets = [folder / "Arial.ttf", folder / "Arial.Unicode.ttf"]
    if all(t.exists() for t in targets):
        return
    import matplotlib

    source = next(Path(matplotlib.get_data_path()).rglob("DejaVuSans.ttf"))
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        if not target.exists():
            shutil.copyfile(source, target)


def check_amp_offline(model: Any) -> bool:
    """Ultralytics' check_amp without its yolo26n.pt download: the GPU blocklist only."""
    import torch
    from ultralytics.utils import LOGGER

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    name = torch.cuda.get_device_name(device)
    if AMP_UNSAFE_GPU.search(name):
        LOGGER.warning(f"AMP: disabled on {name}, as Ultralytics does (NaN losses or zero mAP on this GPU).")
        return False
    LOGGER.info("AMP: enabled (visionbatch skips Ultralytics' downloaded-weights AMP check offline).")
    return True


def amp_supported(device_name: str) -> bool:
    """False for the GPUs on which Ultralytics turns AMP off."""
    return not AMP_UNSAFE_GPU.search(device_name)


def model_task(model: str) -> str:
    """The task of a model YAML or checkpoint, from its head (YAML) or its file name (`-seg`).

    Raises:
        ConfigError: the model cannot be found locally.
    """
    check_model(model)
    with offline():
        from ultralytics.nn.tasks import guess_model_task, yaml_model_load

        if str(model).endswith((".yaml", ".yml")):
            return guess_model_task(yaml_model_load(model))
        return guess_model_task(model)


def check_model(model: str) -> None:
    """Refuse a model that would need a download, with the offline alternative."""
    text = str(model)
    if "://" in text:
        raise ConfigError(f"model={text}: visionbatch never downloads models: pass a local .pt or a model YAML")
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")):
        if path.is_file():
            return
        with offline():
            from ultralytics.utils.checks import check_yaml

            unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", text)  # yolo11n.yaml -> yolo11.yaml
            found = check_yaml(text, hard=False) or check_yaml(unified, hard=False)
        if not found:
            raise ConfigError(
                f"model={text}: no such model YAML, locally or among Ultralytics' configs: "
                f"use e.g. model=yolo11n.yaml or model=yolo11s-seg.yaml"
            )
        return
    if path.suffix == ".pt":
        if not path.is_file():
            raise ConfigError(
                f"model={text}: no such file, and visionbatch never downloads weights: "
                f"pass the path to a local .pt, or model={path.stem}.yaml to train from scratch"
            )
        return
    raise ConfigError(f"model={text}: expected a model YAML (yolo11n.yaml) or a local checkpoint (.pt)")


def versions() -> dict[str, str]:
    """Versions of the parts that decide a run's behaviour."""
    import platform

    import torch
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("visionbatch", "ultralytics", "torchvision", "opencv-python", "albumentations", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
