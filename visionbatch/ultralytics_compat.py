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
import os
import pickle
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


@contextlib.contextmanager
def _first_import_quiet() -> Iterator[None]:
    """Drop the "Creating new Ultralytics Settings" lines Ultralytics' import logs to stdout the first time.

    They would land in the middle of `--json` output, which starts on stdout before logs are redirected.
    """
    import logging

    def drop(record: logging.LogRecord) -> bool:
        return "Ultralytics Settings" not in str(record.msg)

    logger = logging.getLogger("ultralytics")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


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


def model_task(model: str, trust: bool = False) -> str:
    """The task of a model YAML (from its head) or checkpoint (from the model inside it).

    Args:
        model: a model YAML or a local .pt.
        trust: load a checkpoint with Ultralytics' unrestricted loader (`trust_checkpoint=True`).

    Raises:
        ConfigError: the model cannot be found locally, or cannot be loaded safely.
    """
    check_model(model)
    if str(model).endswith((".yaml", ".yml")):
        with offline(), trusted_checkpoints(trust):
            from ultralytics.nn.tasks import guess_model_task

            definition = model_yaml(model)
            task = guess_model_task(definition)
            if Path(str(model)).expanduser().is_file():  # the user's own YAML (Ultralytics' are known good)
                _build_once(model, definition, task)
            return task
    return inspect_checkpoint(model, trust)


def _build_once(model: str, definition: dict, task: str) -> None:
    """Build a user's model YAML on the CPU now, so a problem in it is one line before any work starts."""
    import torch
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel
    from ultralytics.utils import LOGGER

    kind = SegmentationModel if task == "segment" else DetectionModel
    level = LOGGER.level
    LOGGER.setLevel("ERROR")
    try:
        with torch.random.fork_rng(devices=[]):
            kind(definition, verbose=False)
    except ConfigError as exc:  # a download it would need
        raise ConfigError(f"model={model} cannot be built: {exc}") from None
    except Exception as exc:  # a user's YAML that cannot be built, for whatever reason: that file's problem
        text = " ".join(str(exc).encode("ascii", "ignore").decode().split())[:200]
        hint = ("" if "restricted" not in text else
                " (restricted loading: only torch.nn activations and Ultralytics layers; trust_checkpoint=True "
                "lifts that, only for files you trust)")
        raise ConfigError(f"model={model} cannot be built ({exc.__class__.__name__}: {text}){hint}: fix the "
                          f"model YAML, or start from one of Ultralytics' (model=yolo11n.yaml)") from None
    finally:
        LOGGER.setLevel(level)


def model_yaml(model: str) -> dict:
    """A model YAML as a mapping, read with visionbatch's bounded loader (no alias bombs), and checked.

    Raises:
        ConfigError: not found, not valid YAML, or not a model definition.
    """
    from visionbatch.safeyaml import load_yaml

    with offline():
        from ultralytics.nn.tasks import yaml_model_load

        path = find_model_yaml(str(model)) or Path(str(model)).expanduser()
        content = load_yaml(path, ConfigError, f"model={model}")
        if not isinstance(content, dict) or not {"backbone", "head"} <= set(content):
            raise ConfigError(f"model={model}: not a model definition (no backbone: and head:): pass an "
                              f"Ultralytics model YAML such as yolo11n.yaml")
        return yaml_model_load(str(model))  # Ultralytics' own reading (scale from the name), now known safe


def inspect_checkpoint(path: str | os.PathLike, trust: bool = False, key: str = "model") -> str:
    """Load a checkpoint the way training will (safely unless trusted) and return its model's task.

    Nothing in it runs: Ultralytics' restricted loader unpickles only tensors, containers and an
    allow-list of model classes, and never pip-installs a module a checkpoint names.

    Raises:
        ConfigError: one line naming the file (as `key=path`), what is wrong with it and what to do.
    """
    return str(load_checkpoint_safely(path, trust, key)["task"])


def load_checkpoint_safely(path: str | os.PathLike, trust: bool = False, key: str = "model") -> dict[str, Any]:
    """A checkpoint's contents, loaded safely unless trusted, with its model's task under "task".

    Raises:
        ConfigError: one line naming the file, what is wrong with it and what to do.
    """
    import zipfile

    import torch

    name = f"{key}={path}"
    if zipfile.is_zipfile(path):
        _check_archive(path, name)
    elif not trust:  # trusted, a legacy (pre-zip) pickle may still load
        raise ConfigError(f"{name} is not a PyTorch checkpoint (not a torch.save archive): pass a .pt "
                          f"saved by Ultralytics training (weights/best.pt), or a model YAML")
    with offline(), trusted_checkpoints(trust):
        from ultralytics.nn.tasks import _SafeLoad, guess_model_task, torch_safe_load
        from ultralytics.utils import LOGGER

        if not trust and not _SafeLoad.SUPPORTED:
            raise ConfigError(f"{name}: this torch ({torch.__version__}) has no restricted checkpoint loading "
                              f"(torch 2.6 or newer does): upgrade torch, or pass trust_checkpoint=True for a file "
                              f"you trust")

        level = LOGGER.level
        LOGGER.setLevel("ERROR")  # its "improperly saved" warnings become our one line
        try:
            checkpoint, _ = torch_safe_load(str(path), safe_only=not trust)
        except ConfigError as exc:  # a download it would need (a TorchVision layer's pretrained weights)
            raise ConfigError(f"{name} cannot be loaded: {exc}") from None
        except Exception as exc:  # any failure to load a user's file is that file's problem: one line
            raise ConfigError(_checkpoint_problem(name, exc, trust)) from None
        finally:
            LOGGER.setLevel(level)
        model = checkpoint.get("ema") or checkpoint.get("model") if isinstance(checkpoint, dict) else None
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(f"{name} holds no model (a state dict or other data?): pass a checkpoint saved by "
                              f"Ultralytics training (weights/best.pt), or a model YAML")
        task = getattr(model, "task", None) or guess_model_task(model)
    return {**checkpoint, "task": str(task)}


MAX_EXPANSION = 100  # torch.save stores entries uncompressed; a zip entry that inflates 100x is not a checkpoint's
MAX_PICKLE_BYTES = 256 * 2**20  # a checkpoint's pickle holds structure, not tensors: a few MiB at most


def _check_archive(path: str | os.PathLike, name: str) -> None:
    """Refuse a zip that only pretends to be a checkpoint: entries that inflate (a zip bomb), a giant pickle."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ConfigError(f"{name} is not a readable archive ({exc.__class__.__name__}): copy it again") from None
    for info in entries:
        inflates = info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_EXPANSION * max(
            info.compress_size, 1)
        if inflates or (info.filename.endswith(".pkl") and info.file_size > MAX_PICKLE_BYTES):
            raise ConfigError(f"{name}: its entry {info.filename[:60]} expands to {info.file_size / 2**20:.0f} MiB "
                              f"from {info.compress_size / 2**20:.1f} MiB, which torch.save never writes: not a "
                              f"checkpoint")


def _checkpoint_problem(name: str, exc: BaseException, trust: bool) -> str:
    text = " ".join(str(exc).encode("ascii", "ignore").decode().split())
    if isinstance(exc, ModuleNotFoundError):
        module = exc.name or text
        return (f"{name} needs the Python module '{module}', which is not installed (visionbatch installs "
                f"nothing): install it yourself if you trust the file, or pass an Ultralytics checkpoint")
    if "outside the supported" in text or "Weights only load failed" in text:
        return (f"{name} was refused by the safe loader: it names Python objects outside Ultralytics' checkpoint "
                f"format, which could run code when loaded. If you trust this file, pass trust_checkpoint=True "
                f"(only for files you trust)")
    if "TorchScript" in text:
        return f"{name} is a TorchScript archive, not an Ultralytics checkpoint: pass the original .pt weights"
    if "not a loadable checkpoint" in text or isinstance(exc, (EOFError, pickle.UnpicklingError)):
        return f"{name} is empty, truncated or corrupted: copy or export the checkpoint again"
    first = text[:160] or exc.__class__.__name__
    hint = "" if trust else " (or trust_checkpoint=True, only for files you trust)"
    return (f"{name} cannot be loaded ({exc.__class__.__name__}: {first}): pass a checkpoint saved by Ultralytics "
            f"training{hint}")


def find_model_yaml(model: str) -> Path | None:
    """A model YAML on disk, or among Ultralytics' configs (yolo11n.yaml is yolo11.yaml at scale n); None if neither."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    with offline():
        from ultralytics.utils.checks import check_yaml

        unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", model)  # yolo11n.yaml -> yolo11.yaml
        found = check_yaml(model, hard=False) or check_yaml(unified, hard=False)
    return Path(found) if found else None


def check_model(model: str) -> None:
    """Refuse a model that would need a download, with the offline alternative."""
    text = str(model)
    if "://" in text:
        raise ConfigError(f"model={text}: visionbatch never downloads models: pass a local .pt or a model YAML")
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")):
        if find_model_yaml(text) is None:
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
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("visionbatch", "ultralytics", "torchvision", "opencv-python", "albumentations", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
