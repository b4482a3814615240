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
import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.files import atomic_copy, config_dir  # noqa: F401  config_dir: this module's callers use it

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


@contextlib.contextmanager
def offline() -> Iterator[Any]:
    """Import Ultralytics with every network path closed and safe model loading on; restore everything on exit.

    Inside: no DNS probe, downloads, pip installs, analytics or Platform sync; checkpoints and model
    YAMLs load through Ultralytics' restricted loader (`weights_only=True` with an allow-list of
    model classes, no `eval` of YAML strings) unless `trusted_checkpoints(True)` says otherwise;
    ONNX Runtime's telemetry is off for any ONNX Runtime first imported here; Ultralytics' settings
    folder and font are visionbatch's own. On exit the process is given back as it was
    (`process_state.kept_process_state`: environment, threads, RNGs, print options, warnings
    filters) and every Ultralytics global patched here is restored.

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
        import numpy  # noqa: F401  imported before the snapshot, so their state is part of it
        import torch  # noqa: F401

        from visionbatch.process_state import kept_process_state

        restore: list[Callable[[], None]] = []  # undo steps, run in reverse on exit
        with kept_process_state():
            try:
                os.environ["YOLO_OFFLINE"] = "1"
                os.environ["YOLO_AUTOINSTALL"] = "0"
                os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # DDP workers import Ultralytics afresh: safe there too
                os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # read once, when ONNX Runtime is first imported
                os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # else `import albumentations` asks PyPI for a version
                os.environ.setdefault("OMP_NUM_THREADS", "1")  # what Ultralytics' import sets, every call alike
                os.environ.pop("ULTRALYTICS_API_KEY", None)
                if not os.environ.get("YOLO_CONFIG_DIR"):
                    os.environ["YOLO_CONFIG_DIR"] = str(config_dir())
                with _first_import_quiet():
                    import ultralytics
                    import ultralytics.utils
                import ultralytics.engine.trainer
                import ultralytics.nn.tasks
                import ultralytics.utils.checks
                import ultralytics.utils.torch_utils

                _patch(restore, ultralytics.utils, "ONLINE", False)
                _patch(restore, ultralytics.utils, "AUTOINSTALL", False)
                _patch(restore, ultralytics.utils.checks, "ONLINE", False)
                _patch(restore, ultralytics.utils.checks, "AUTOINSTALL", False)
                _patch(restore, ultralytics.nn.tasks, "SAFE_LOAD", True)
                import torch.hub

                # torchvision's pretrained weights (a TorchVision layer in a model YAML or checkpoint) come through here
                _patch(restore, torch.hub, "download_url_to_file", _refuse_download)
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
                        restore.append(functools.partial(dict.__setitem__, settings, key, settings[key]))
                        dict.__setitem__(settings, key, value)  # in memory only: the user's file is untouched
                own = ultralytics_dir()
                _install_font(own)
                _redirect_config_dir(restore, Path(ultralytics.utils.USER_CONFIG_DIR), own)
                import cv2

                cv2.setNumThreads(0)  # what Ultralytics' import sets (given back on exit)
                _depth = 1
                yield ultralytics
            finally:
                _depth = 0
                for undo in reversed(restore):
                    undo()


def _refuse_download(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
    raise ConfigError(f"{url} would be downloaded (to {dst}): visionbatch never downloads; put that file there "
                      f"yourself to use it")


def offline_active() -> bool:
    """Whether this process is inside `offline()` now."""
    return _depth > 0


# Ultralytics' advice to someone training, which a dataset visionbatch builds only to time never needs
_TRAINING_ADVICE = ("cache='ram' may produce non-deterministic training results",)


def _first_import_quiet() -> contextlib.AbstractContextManager[None]:
    """Drop the "Creating new Ultralytics Settings" lines Ultralytics' import logs to stdout the first time.

    They would land in the middle of `--json` output, which starts on stdout before logs are redirected.
    """
    return ultralytics_lines_dropped("Ultralytics Settings")


@contextlib.contextmanager
def ultralytics_lines_dropped(*fragments: str) -> Iterator[None]:
    """Drop Ultralytics' log lines that contain any of `fragments` for the block, at every level; others pass.

    Examples:
        >>> with ultralytics_lines_dropped("netron"):
        ...     logging.getLogger("ultralytics").filter(logging.makeLogRecord({"msg": "see https://netron.app"}))
        False
    """

    def keep(record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not any(fragment in text for fragment in fragments)

    logger = logging.getLogger("ultralytics")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def quiet_internal_dataset() -> contextlib.AbstractContextManager[None]:
    """For a dataset visionbatch builds to measure, not to train on: drop Ultralytics' advice for a training run.

    Its other warnings (a corrupt image, a cache it refuses for space) still show.
    """
    return ultralytics_lines_dropped(*_TRAINING_ADVICE)


@contextlib.contextmanager
def quiet_ultralytics(level: int = logging.WARNING) -> Iterator[None]:
    """Silence Ultralytics' log lines below `level` for the block; the logger's level is restored on exit.

    The default drops its info lines (model summaries, optimizer banners, one line per dataset build)
    and keeps its warnings.

    Examples:
        >>> import logging
        >>> with quiet_ultralytics(logging.ERROR):
        ...     logging.getLogger("ultralytics").level
        40
    """
    logger = logging.getLogger("ultralytics")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def ultralytics_dir() -> Path:
    """Ultralytics' settings folder while visionbatch runs: `<visionbatch cache>/Ultralytics`."""
    return config_dir() / "Ultralytics"


def _redirect_config_dir(restore: list, theirs: Path, own: Path) -> None:
    """Point every loaded Ultralytics module's USER_CONFIG_DIR (font lookup, DDP scripts) at our folder.

    A caller who imported Ultralytics first has it pointing at their own ~/.config/Ultralytics; writing
    fonts or DDP files there would change their folder.
    """
    if theirs == own:
        return
    _repoint_config_dir(theirs, own)
    restore.append(functools.partial(_repoint_config_dir, own, theirs))  # also modules first imported inside


def _repoint_config_dir(old: Path, new: Path) -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith("ultralytics") and getattr(module, "USER_CONFIG_DIR", None) == old:
            module.USER_CONFIG_DIR = new


@contextlib.contextmanager
def trusted_checkpoints(trust: bool) -> Iterator[None]:
    """With `trust`, load checkpoints and model YAMLs with Ultralytics' unrestricted loader for the block.

    Only for files the user trusts: an unrestricted checkpoint load unpickles arbitrary objects, which
    can run any code. Without `trust` this changes nothing (offline() loads safely).
    """
    if not trust:
        yield
        return
    with offline():
        from ultralytics.nn import tasks

        before, env = tasks.SAFE_LOAD, os.environ.pop("ULTRALYTICS_SAFE_LOAD", None)
        tasks.SAFE_LOAD = False
        try:
            yield
        finally:
            tasks.SAFE_LOAD = before
            if env is not None:
                os.environ["ULTRALYTICS_SAFE_LOAD"] = env


def _patch(restore: list, owner: Any, name: str, value: Any) -> None:
    restore.append(functools.partial(setattr, owner, name, getattr(owner, name)))
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
            atomic_copy(source, target)


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


def versions() -> dict[str, str]:
    """Versions of the parts that decide a run's behaviour."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("visionbatch", "ultralytics", "torchvision", "opencv-python", "albumentations", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
