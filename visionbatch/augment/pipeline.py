"""A user's Albumentations pipeline, read from the file `A.save(compose, path)` wrote (YAML or JSON).

Every way such a file can be wrong becomes one `ConfigError` line that names the file, the problem
and the fix. The pipeline's transforms go to Ultralytics as its `augmentations` argument, which
replaces Ultralytics' default Albumentations transforms (Blur, MedianBlur, ToGray, CLAHE, ...).
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visionbatch.errors import ConfigError
from visionbatch.safeyaml import (
    MAX_YAML_BYTES,
    TAG_REFUSAL,
    YamlLimitError,
    parse_yaml,
    refused_tag,
)
from visionbatch.ultralytics.offline import offline

SAVE_HINT = "save it with A.save(compose, 'aug.yaml', data_format='yaml') (or .json)"


@dataclass(frozen=True)
class Pipeline:
    """A loaded pipeline: the file, its top-level transforms (for Ultralytics) and their names."""

    path: str
    transforms: tuple[Any, ...]
    names: tuple[str, ...]
    compose_p: float


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Read and check a serialized `A.Compose`; build its transforms.

    Raises:
        ConfigError: a missing file, a file that is not YAML or JSON, not a serialized Compose, naming
            an unknown transform, or with arguments the transform refuses.

    Examples:
        >>> import albumentations as A
        >>> A.save(A.Compose([A.Blur(p=0.5)]), "/tmp/aug.yaml", data_format="yaml")
        >>> load_pipeline("/tmp/aug.yaml").names
        ('Blur',)
    """
    file = Path(path).expanduser()
    label = f"pipeline={path}"
    if file.is_dir():
        raise ConfigError(f"{label} is a folder: pass the pipeline file, {SAVE_HINT}")
    if not file.is_file():
        raise ConfigError(f"{label}: no such file: pass the path to a serialized A.Compose ({SAVE_HINT})")
    try:
        if file.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{label}: {file.stat().st_size / 2**20:.1f} MiB is far too large for a pipeline file "
                              f"(limit {MAX_YAML_BYTES // 2**20} MiB): {SAVE_HINT}")
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot be read ({exc.__class__.__name__}): {SAVE_HINT}") from None
    try:
        raw = _parse(text, file, label)
    except YamlLimitError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested too deeply to be a pipeline: {SAVE_HINT}") from None
    if not isinstance(raw, dict) or "transform" not in raw:
        found = f"keys {', '.join(map(str, raw))}" if isinstance(raw, dict) else f"a {type(raw).__name__}"
        raise ConfigError(f"{label}: not a serialized A.Compose (no 'transform' key; found {found}): {SAVE_HINT}")
    top = raw["transform"]
    if not isinstance(top, dict) or "__class_fullname__" not in top:
        raise ConfigError(f"{label}: 'transform' holds no '__class_fullname__': {SAVE_HINT}")

    with offline():  # `import albumentations` asks PyPI for a newer version unless told not to
        import albumentations as A
        from albumentations.core.serialization import (
            NON_SERIALIZABLE_REGISTRY,
            SERIALIZABLE_REGISTRY,
        )

    known = set(SERIALIZABLE_REGISTRY) | set(NON_SERIALIZABLE_REGISTRY)
    _check_names(top, known, label, A.__version__)
    if not isinstance(top.get("transforms"), list):
        raise ConfigError(
            f"{label}: the top-level transform is {top['__class_fullname__']}, not a Compose of transforms: "
            f"wrap it, A.Compose([...]), and {SAVE_HINT}"
        )
    reading = _reads_files(top)
    if reading:
        raise ConfigError(f"{label}: {reading} reads files the pipeline names (reference images, fonts): visionbatch "
                          f"costs transforms that read nothing but the image: remove it")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # clamped or defaulted arguments are Albumentations' own business
            compose = A.from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{label}: Albumentations refuses it ({_brief(exc)}): fix that transform's arguments"
                          ) from None
    ignored = [str(w.message) for w in caught if "are not valid for transform" in str(w.message)]
    if ignored:  # Albumentations drops unknown arguments with a warning: a typo would cost another pipeline
        raise ConfigError(f"{label}: {ignored[0]} (Albumentations would ignore them): fix or remove them")
    if not isinstance(compose, A.BaseCompose):
        raise ConfigError(f"{label}: not a serialized A.Compose: {SAVE_HINT}")
    transforms = tuple(compose.transforms)
    return Pipeline(
        path=str(file.resolve()),
        transforms=transforms,
        names=tuple(type(t).__name__ for t in transforms),
        compose_p=float(getattr(compose, "p", 1.0)),
    )


def _brief(exc: Exception) -> str:
    """An exception in one short line: pydantic's report without its link and type tags.

    Examples:
        >>> _brief(ValueError("1 validation error for InitSchema\\np\\n  Input should be a number [type=x]\\n  For more"))
        'p: Input should be a number'
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) >= 3 and "validation error" in lines[0]:
        return f"{lines[1]}: {lines[2].split(' [type=')[0]}"
    return f"{exc.__class__.__name__}: {' '.join(lines)[:160]}"


def _parse(text: str, file: Path, label: str) -> Any:
    if file.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{label}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}): "
                              f"fix it, or {SAVE_HINT}") from None
    try:
        return parse_yaml(text)  # bounded: no alias bombs
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        tag = refused_tag(exc)
        if tag:
            raise ConfigError(f"{label}: the tag {tag} ({where.rstrip(': ')}) is refused: {TAG_REFUSAL}") from None
        raise ConfigError(f"{label}: not valid YAML or JSON ({where}{problem}): fix it, or {SAVE_HINT}") from None


# Albumentations transforms whose arguments name files they read when applied
FILE_READING = frozenset({"FDA", "HistogramMatching", "PixelDistributionAdaptation", "TextImage"})


def _reads_files(node: dict) -> str:
    """The first transform in the tree that reads files named in its arguments, or ''."""
    if str(node.get("__class_fullname__", "")).rpartition(".")[-1] in FILE_READING:
        return str(node["__class_fullname__"])
    for child in node.get("transforms") or []:
        found = _reads_files(child) if isinstance(child, dict) else ""
        if found:
            return found
    return ""


def _check_names(node: dict, known: set[str], label: str, version: str) -> None:
    """Name the first transform Albumentations does not know, with the closest one it does."""
    name = node.get("__class_fullname__")
    # older Albumentations saved module paths ('albumentations.augmentations.blur.transforms.Blur'); its
    # loader shortens any 'albumentations.' name to the class name, and so does this check
    short = str(name).rpartition(".")[-1] if str(name).startswith("albumentations.") else name
    if short not in known:
        close = difflib.get_close_matches(str(short), sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"{label}: unknown Albumentations transform '{name}' (albumentations {version}): {hint}"
            f"fix the name, or save the pipeline with the Albumentations version installed here"
        )
    children = node.get("transforms") or []
    if not isinstance(children, list):
        raise ConfigError(f"{label}: {name}'s transforms must be a list of transforms: {SAVE_HINT}")
    for child in children:
        if not isinstance(child, dict) or "__class_fullname__" not in child:
            raise ConfigError(f"{label}: {name} lists {str(child)[:40]!r}, not a serialized transform: {SAVE_HINT}")
        _check_names(child, known, label, version)
