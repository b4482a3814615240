"""Model YAMLs and checkpoints: found, checked and loaded through Ultralytics' restricted loader."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

from visionbatch.errors import ConfigError
from visionbatch.ultralytics.offline import (
    offline,
    quiet_ultralytics,
    trusted_checkpoints,
)


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

    kind = SegmentationModel if task == "segment" else DetectionModel
    try:
        with quiet_ultralytics(logging.ERROR), torch.random.fork_rng(devices=[]):
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
        raise ConfigError(f"{name} is not a PyTorch checkpoint in torch.save's zip format (its format since torch 1.6; "
                          f"an older pickle cannot be checked before it runs): pass a .pt saved by Ultralytics training "
                          f"(weights/best.pt), a model YAML, or trust_checkpoint=True for a file you trust")
    with offline(), trusted_checkpoints(trust):
        from ultralytics.nn.tasks import _SafeLoad, guess_model_task, torch_safe_load

        if not trust and not _SafeLoad.SUPPORTED:
            raise ConfigError(f"{name}: this torch ({torch.__version__}) has no restricted checkpoint loading "
                              f"(torch 2.6 or newer does): upgrade torch, or pass trust_checkpoint=True for a file "
                              f"you trust")

        try:
            with quiet_ultralytics(logging.ERROR):  # its "improperly saved" warnings become our one line
                checkpoint, _ = torch_safe_load(str(path), safe_only=not trust)
        except ConfigError as exc:  # a download it would need (a TorchVision layer's pretrained weights)
            raise ConfigError(f"{name} cannot be loaded: {exc}") from None
        except Exception as exc:  # any failure to load a user's file is that file's problem: one line
            raise ConfigError(_checkpoint_problem(name, exc, trust)) from None
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
            # the YAML of the same name builds the model with random weights, where Ultralytics has one
            yaml_hint = f", or model={path.stem}.yaml for random weights" if find_model_yaml(f"{path.stem}.yaml") else ""
            raise ConfigError(
                f"model={text}: no such file, and visionbatch never downloads weights: "
                f"pass the path to a local .pt{yaml_hint}"
            )
        return
    raise ConfigError(f"model={text}: expected a model YAML (yolo11n.yaml) or a local checkpoint (.pt)")


def model_sha256(model: str) -> str:
    """SHA-256 of the model file's bytes: a local YAML or checkpoint, or the Ultralytics YAML a name resolves to.

    A scale letter in a built-in name (yolo11n.yaml reads yolo11.yaml at scale n) is in the key's
    model name; the hash covers the file Ultralytics builds it from.
    """
    path = Path(model).expanduser()
    if not path.is_file() and str(model).endswith((".yaml", ".yml")):
        path = find_model_yaml(str(model)) or path
    digest = hashlib.sha256()
    with open(path, "rb") as file:  # the caller checked it exists
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
