"""The plan cache: a fitted plan is reused while nothing that shapes memory has changed.

A search's plan (a `BatchPlan`; never the one-batch `BatchCheck`) is stored under
`$XDG_CACHE_HOME/visionbatch/plans/`, one JSON file per key, named by the key's SHA-256. The key
(`plan_key`) is a readable dict of everything the plan depends on:

- the device: a CUDA GPU's name, UUID, memory, driver, CUDA and cuDNN versions and torch's memory
  limit; a CPU budget fit's CPU model, RAM and budget; a target's catalog entry, budget and the
  calibration data it is predicted with;
- the software: torch, Ultralytics and visionbatch versions;
- the model file's content (a local file's bytes, or the Ultralytics YAML a name like
  yolo11n.yaml resolves to);
- the step: task, imgsz, AMP, optimizer, classes, the label density (its distribution, the
  validation counts, oom_risk, a forced labels_per_image), the train arguments the step reads
  (`STEP_ARGS`, with Ultralytics' defaults filled in) and the dataset's image counts;
- how the fit was asked: memory_fraction and max_probes.

Any part that differs is another hash, hence a miss: the fit runs and its plan is stored. Building
the key probes nothing (`plan_key` is a function of the job, the options and the device facts).

Entries are written atomically under a file lock (`fcntl.flock` on `plans/.lock`), so processes
fitting at once leave one whole entry. An entry that cannot be read, parsed or rebuilt is a miss,
and the next fit replaces it. Entries are plain JSON rebuilt field by field into the plan's
dataclasses (`plan_from_dict`): nothing loaded from the cache can run code. On a CUDA GPU a stored
plan is reused only while it still fits what the card offers now (`reuse_problem`): another
process may hold memory it did not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionbatch.errors import VisionbatchError
from visionbatch.files import (
    UnusableEntry,
    atomic_write_text,
    cache_entry_files,
    cache_entry_size,
    config_dir,
    entry_field,
    locked_folder,
    read_json_entry,
    remove_cache_entries,
)
from visionbatch.fit.plan import BatchCheck, BatchPlan, PlanReuse
from visionbatch.results import json_sha256, to_jsonable, utc_timestamp
from visionbatch.text import printable
from visionbatch.ultralytics.models import model_sha256
from visionbatch.units import human_bytes

if TYPE_CHECKING:
    from visionbatch.fit.api import FitOptions
    from visionbatch.ultralytics.job import TrainingJob
    from visionbatch.ultralytics.spec import WorkloadSpec

FORMAT = 1  # the entry layout; another value is a miss
MAX_ENTRY_BYTES = 16 << 20  # a plan is tens of KiB: anything this large is not one
MORE_MEMORY_SHARE = 0.05  # a card offering this much more than when fitted may fit a larger batch: fit again
# The Ultralytics train arguments the fitted step depends on (`ultralytics.spec`, `density`, `step`,
# `fit.probes.cpu`); each is keyed with Ultralytics' default when not given.
STEP_ARGS = ("epochs", "optimizer", "nbs", "deterministic", "fraction", "amp", "multi_scale", "freeze", "compile",
             "channels_last", "single_cls", "classes", "rect", "overlap_mask", "mask_ratio", "close_mosaic", "mosaic",
             "mixup", "cutmix", "copy_paste", "copy_paste_mode", "scale", "translate", "cache", "plots", "val",
             "distill_model")


# -- the key ----------------------------------------------------------------------------------------------


def device_facts(device: str, options: FitOptions) -> dict[str, Any] | None:
    """What names the device a fit runs on, for the key: read from the hardware, probing nothing.

    Args:
        device: 'cuda:N', 'cpu' (a CPU budget fit) or 'target' (`options.target`'s prediction).
        options: the fit's options (the budget, the target).

    Returns:
        The facts, or None for a device the cache does not serve (several GPUs at once).
    """
    if device == "target":
        from visionbatch.fit.probes.trace import calibration

        calibration_text = json.dumps(calibration(), sort_keys=True, separators=(",", ":"))
        return {"kind": "target", **dataclasses.asdict(options.target),
                "budget_bytes": options.memory_budget_bytes,
                "calibration_sha256": hashlib.sha256(calibration_text.encode()).hexdigest()}
    if device == "cpu":
        import psutil

        from visionbatch.devices.memory import device_name

        return {"kind": "cpu", "cpu": device_name("cpu"), "ram_bytes": int(psutil.virtual_memory().total),
                "budget_bytes": options.memory_budget_bytes}
    kind, _, index = device.partition(":") if isinstance(device, str) else ("", "", "")
    if kind != "cuda" or not index.isdigit():  # several GPUs, or a device named another way
        return None
    from visionbatch.devices.memory import gpu_identity

    return {"kind": "cuda", **gpu_identity(int(index))}


def plan_key(job: TrainingJob, options: FitOptions, device: Mapping[str, Any]) -> dict[str, Any]:
    """The cache key of a search: everything its plan depends on, as a readable dict.

    A function of the prepared job, the options and the device's facts (`device_facts`): the same
    three give the same key, on any day. It reads the model file (for its hash) and models the
    label density (as the fit itself does), and probes nothing.

    Examples:
        >>> from visionbatch.fit.api import FitOptions
        >>> from visionbatch.ultralytics.job import prepare
        >>> job = prepare("datasets/shapes/data.yaml", {"imgsz": 64}, command="fit")  # doctest: +SKIP
        >>> key = plan_key(job, FitOptions.check(memory_budget="2GiB"),
        ...                {"kind": "cpu", "cpu": "x", "ram_bytes": 1, "budget_bytes": 2 << 30})  # doctest: +SKIP
        >>> key["imgsz"], key["images"], key["fit"]  # doctest: +SKIP
        (64, {'train': 160, 'val': 40}, {'memory_fraction': 0.9, 'max_probes': 8})
    """
    from visionbatch.ultralytics.args import ultralytics_defaults

    spec = _key_spec(job, options, device)
    defaults = ultralytics_defaults()
    return {
        "format": FORMAT,
        "device": {k: _canonical(v) for k, v in device.items()},
        "software": software_versions(),
        "model": {"name": job.model, "sha256": model_sha256(job.model)},
        "task": spec.task,
        "imgsz": spec.imgsz,
        "amp": spec.amp,
        "amp_dtype": spec.amp_dtype,
        "optimizer": spec.optimizer,
        "nc": spec.nc,
        "channels": spec.channels,
        "images": {"train": spec.dataset_images, "val": max(job.dataset.val.images, 1)},
        "labels": density_signature(spec),
        "train_args": {name: _canonical(job.args.get(name, defaults.get(name))) for name in STEP_ARGS},
        "fit": {"memory_fraction": _canonical(options.memory_fraction), "max_probes": options.max_probes},
    }


def key_hash(key: Mapping[str, Any]) -> str:
    """The key's SHA-256 (of its canonical JSON, `results.json_sha256`): the entry's file name.

    Examples:
        >>> key_hash({"b": 1, "a": [1, 2]}) == key_hash({"a": [1, 2], "b": 1})
        True
    """
    return json_sha256(dict(key))


def software_versions() -> dict[str, str]:
    """torch, Ultralytics and visionbatch versions: a new one may change a step's memory."""
    import torch
    import ultralytics

    from visionbatch import __version__

    return {"torch": str(torch.__version__), "ultralytics": str(ultralytics.__version__), "visionbatch": __version__}


def density_signature(spec: WorkloadSpec) -> dict[str, Any]:
    """The label counts the plan was measured for: the readable figures, and a hash of the whole distribution.

    The hash covers the training distribution in both phases (with mosaic, and after close_mosaic),
    the images drawn in each, and the validation images' counts; probabilities are rounded to 12
    significant digits so the last bit of a sum cannot split a key.
    """
    density = spec.density
    signature = {"mosaic": [_rounded(p) for p in density.mosaic_pmf], "plain": [_rounded(p) for p in density.plain_pmf],
                 "draws": [density.mosaic_draws, density.plain_draws], "val": list(spec.val_counts)}
    text = json.dumps(signature, separators=(",", ":"))
    return {"labels_per_image": spec.labels_per_image, "val_labels_per_image": spec.val_labels_per_image,
            "oom_risk": None if density.forced else density.oom_risk, "forced": density.forced,
            "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _key_spec(job: TrainingJob, options: FitOptions, device: Mapping[str, Any]) -> WorkloadSpec:
    """The step's spec as the fit builds it on this device (AMP follows the GPU's name, or the target's rule)."""
    from visionbatch.ultralytics.spec import job_spec, trainer_amp

    if device["kind"] == "target":
        return job_spec(job, "cuda", options.target.name, options.labels_per_image,
                        amp=trainer_amp(job.args, options.target.amp), oom_risk=options.oom_risk)
    if device["kind"] == "cuda":
        return job_spec(job, "cuda", device["name"], options.labels_per_image, oom_risk=options.oom_risk)
    return job_spec(job, "cpu", "", options.labels_per_image, oom_risk=options.oom_risk)


def _canonical(value: Any) -> Any:
    """A value as the key holds it: a whole number as an int (mosaic=1 and mosaic=1.0 are one key).

    Examples:
        >>> _canonical(1.0), _canonical(0.5), _canonical(True), _canonical((0, 1.0)), _canonical(None)
        (1, 0.5, True, [0, 1], None)
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return int(value) if math.isfinite(value) and float(value).is_integer() else float(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    return str(value)


def _rounded(probability: float) -> float:
    return float(f"{probability:.12g}")


# -- entries ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CachedPlan:
    """One entry of the plan cache, as `visionbatch cache list` shows it.

    Attributes:
        key_hash: the key's SHA-256 (the file's name).
        fitted_at: when the plan was fitted (UTC, ISO 8601); None when the entry is unreadable.
        device: the device in a few words ('NVIDIA H200 GPU-5a1c...', 'CPU budget 2.00 GiB', 'target t4').
        model, task, imgsz: what was fitted.
        batch_size: the plan's batch.
        size_bytes: the entry file's size.
        path: the entry file.
        key: the whole key (None when unreadable).
        problem: why the entry cannot be used (None when it can): the next fit of its key replaces it.
    """

    key_hash: str
    fitted_at: str | None
    device: str | None
    model: str | None
    task: str | None
    imgsz: int | None
    batch_size: int | None
    size_bytes: int
    path: str
    key: dict[str, Any] | None = None
    problem: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PlanCache:
    """The plan cache's entries, newest first (`visionbatch cache list`).

    Attributes:
        folder: where the entries live.
        entries: one `CachedPlan` per entry file.
        kept_choices: how many choices infer keeps for later runs (`infer.kept`, apart from the plans).
        choices: those choices, one `infer.kept.KeptChoice` each, newest first (typed loosely: fit sits below infer).
        choices_folder: where they live (`infer.kept.choices_dir`); None when not asked.
    """

    folder: str
    entries: tuple[CachedPlan, ...]
    kept_choices: int = 0
    choices: tuple[Any, ...] = ()
    choices_folder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


@dataclasses.dataclass(frozen=True, slots=True)
class ClearedPlans:
    """What `visionbatch cache clear` removed.

    Attributes:
        folder: the plan cache's folder.
        removed: the key hashes of the entries removed.
        prefix: the key prefix asked for (None: every entry).
        kept_choices_removed: how many of infer's kept choices went with them (`infer.kept`: every one, or the
            one whose key starts with `prefix`).
        choices_folder: where those choices live; None when not asked (left out of the JSON then).
    """

    JSON_OPTIONAL = ("choices_folder",)

    folder: str
    removed: tuple[str, ...]
    prefix: str | None = None
    kept_choices_removed: int = 0
    choices_folder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def plans_dir() -> Path:
    """The plan cache's folder: `$XDG_CACHE_HOME/visionbatch/plans` (made by the first entry written)."""
    return config_dir() / "plans"


def store_plan(digest: str, key: Mapping[str, Any], plan: BatchPlan, fitted_at: str | None = None) -> Path:
    """Write the entry for `digest` (whole, under the lock); return its path.

    Raises:
        StorageError: the disk failed while the entry was written (`files.atomic_path`).
        OSError: the folder cannot be made or locked.
    """
    fitted_at = fitted_at or utc_timestamp()
    stored = dataclasses.replace(plan, save_dir=None, reused=None)
    text = json.dumps({"format": FORMAT, "key_hash": digest, "fitted_at": fitted_at, "key": to_jsonable(key),
                       "plan": plan_to_dict(stored)}, indent=1, allow_nan=False) + "\n"
    folder = plans_dir()
    with locked_folder(folder):
        return atomic_write_text(folder / f"{digest}.json", text)


def load_plan(digest: str) -> tuple[BatchPlan, str] | None:
    """The stored plan for `digest` and when it was fitted, or None: no entry, or one that cannot be used."""
    entry, plan, _ = _read_entry(plans_dir() / f"{digest}.json", digest)
    return None if plan is None else (plan, entry["fitted_at"])


def _read_entry(path: Path, digest: str) -> tuple[dict[str, Any] | None, BatchPlan | None, str | None]:
    """(the entry's JSON, its plan, None) when it is whole; else (what was read or None, None, why not)."""
    try:
        entry = read_json_entry(path, MAX_ENTRY_BYTES)
    except FileNotFoundError:
        return None, None, "no entry"
    except UnusableEntry as exc:
        return None, None, str(exc)
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None, None, f"not an entry of format {FORMAT}"
    if entry.get("key_hash") != digest or not isinstance(entry.get("key"), dict) or key_hash(entry["key"]) != digest:
        return entry, None, "its key does not hash to its name"
    if not isinstance(entry.get("fitted_at"), str):
        return entry, None, "no fitting time"
    try:
        plan = plan_from_dict(BatchPlan, entry.get("plan"))
    except (TypeError, ValueError) as exc:
        return entry, None, f"its plan does not rebuild ({exc})"
    return entry, plan, None


def reuse_problem(plan: BatchPlan, usable_bytes: int) -> str | None:
    """Why a stored CUDA plan cannot be reused on a card that offers `usable_bytes` now; None when it can.

    The plan still has to fit memory_fraction x what the card offers now (another process may hold
    memory it did not), and a card offering clearly more than when fitted may take a larger batch.

    Examples:
        >>> from visionbatch.fit.plan import MemoryCurve, WorkloadSummary
        >>> curve = MemoryCurve(100, 10, 0, 0, 0, 2, 1, 8, 4.0, 1.0)
        >>> work = WorkloadSummary("m", "detect", 1, 64, 0.0, 1, 1, None, "", False, None, "SGD", True, 8)
        >>> plan = BatchPlan(8, 8, 16, None, 8, 64, 900, 0.9, "cuda:0", "GPU", 1000, 1000, 0, 180, 0, 180, 120, 120,
        ...                  None, None, (), curve, None, work, "", (), True, 1.0)
        >>> reuse_problem(plan, 1000) is None, reuse_problem(plan, 1040) is None
        (True, True)
        >>> reuse_problem(plan, 150)
        'batch 8 needs 180 B, more than the budget of 0.9 x the 150 B the card offers now (1000 B when fitted)'
        >>> reuse_problem(plan, 1100)
        'the card offers 1.07 KiB now, more than the 1000 B when fitted: a larger batch may fit'
    """
    peaks = (plan.measured_bytes if plan.measured_bytes is not None else plan.predicted_bytes,
             plan.val_measured_bytes if plan.val_measured_bytes is not None else plan.val_predicted_bytes,
             plan.after_validation_bytes)
    needed = max(p for p in peaks if p is not None)
    if needed > int(plan.memory_fraction * usable_bytes):
        return (f"batch {plan.batch_size} needs {human_bytes(needed)}, more than the budget of "
                f"{plan.memory_fraction:g} x the {human_bytes(usable_bytes)} the card offers now "
                f"({human_bytes(plan.usable_bytes)} when fitted)")
    if usable_bytes > (1 + MORE_MEMORY_SHARE) * plan.usable_bytes:
        return (f"the card offers {human_bytes(usable_bytes)} now, more than the {human_bytes(plan.usable_bytes)} "
                f"when fitted: a larger batch may fit")
    return None


def cached_fit(job: TrainingJob, options: FitOptions, device: str,
               fit: Callable[[], BatchPlan | BatchCheck],
               clock: Callable[[], float] = time.perf_counter) -> BatchPlan | BatchCheck:
    """The stored plan for this job, options and device when there is a usable one; else `fit()`, stored.

    Args:
        job: the prepared training job.
        options: the fit's options (`options.plan_cache` is the caller's to check).
        device: 'cuda:N', 'cpu' or 'target' (see `device_facts`).
        fit: runs the fit; its `BatchPlan` is stored (a `BatchCheck` is returned as it is).
        clock: seconds now, for how long a reuse took (`PlanReuse.seconds`; tests pass a simulated clock).

    Returns:
        A reused plan (`plan.reused` set, its device and data those of this job), or the fresh one.
        A fresh plan that could not be stored says so in its warnings; the fit is never lost to the cache.
    """
    started = clock()
    facts = device_facts(device, options)
    if facts is None:
        return fit()
    key = plan_key(job, options, facts)
    digest = key_hash(key)
    found = load_plan(digest)
    passed_over = None
    if found is not None:
        plan, fitted_at = found
        problem = None
        if facts["kind"] == "cuda":
            from visionbatch.devices.memory import cuda_capacity

            problem = reuse_problem(plan, cuda_capacity(int(device.partition(":")[2])).usable_bytes)
        if problem is None:
            return _as_reused(plan, PlanReuse(digest, fitted_at, round(clock() - started, 3)), device, job)
        passed_over = f"the cached plan {digest[:12]} was fitted again: {problem}"
    plan = fit()
    if not isinstance(plan, BatchPlan):
        return plan
    try:
        store_plan(digest, key, plan)
    except (OSError, VisionbatchError) as exc:  # a full or read-only cache folder costs the next run a fit, no more
        plan = dataclasses.replace(plan, warnings=plan.warnings + (
            f"the plan cache was not written ({' '.join(str(exc).split())[:200]}): the next fit measures again",))
    if passed_over is not None:
        plan = dataclasses.replace(plan, warnings=plan.warnings + (passed_over,))
    return plan


def discard_plan(job: TrainingJob, options: FitOptions, device: str) -> bool:
    """Remove the stored plan for this job, options and device (one that ran out of memory in training, say).

    Args:
        job, options: as the fit was given them.
        device: 'cuda:N', 'cpu' or 'target', as for `cached_fit`.

    Returns:
        True when an entry was removed.
    """
    facts = device_facts(device, options)
    if facts is None:
        return False
    path = plans_dir() / f"{key_hash(plan_key(job, options, facts))}.json"
    if not path.is_file():
        return False
    with locked_folder(path.parent):
        path.unlink(missing_ok=True)
    return True


STORED_TEXT = 4000  # the longest reason or warning a reused plan shows (they are a few hundred characters)


def _as_reused(plan: BatchPlan, reuse: PlanReuse, device: str, job: TrainingJob) -> BatchPlan:
    """The stored plan for this call: marked reused, on this call's device (a GPU's index may differ) and data."""
    where = printable(plan.device, 120) if device == "target" else device
    workload = dataclasses.replace(plan.workload, data=job.dataset.yaml_path,
                                   device=where if plan.workload.device is not None else None,
                                   label_density=printable(plan.workload.label_density, STORED_TEXT))
    # the words come from a file on disk: the terminal gets them escaped, as every entry's text
    return dataclasses.replace(plan, reused=reuse, device=where, workload=workload,
                               device_name=printable(plan.device_name, 120), reason=printable(plan.reason, STORED_TEXT),
                               warnings=tuple(printable(w, STORED_TEXT) for w in plan.warnings))


# -- list and clear ----------------------------------------------------------------------------------------


def list_plans() -> PlanCache:
    """Every entry of the plan cache, newest first; unreadable ones too, with their problem. Makes nothing."""
    folder = plans_dir()
    entries = [_summary(path) for path in cache_entry_files(folder)]
    entries.sort(key=lambda e: (e.fitted_at or "", e.key_hash), reverse=True)
    return PlanCache(str(folder), tuple(entries))


def clear_plans(prefix: str | None = None) -> ClearedPlans:
    """Remove every entry, or the one whose key hash starts with `prefix`; return what was removed.

    Leftovers of writers that were killed mid-write go too when every entry is cleared.

    Raises:
        ConfigError: `prefix` is not hex digits, or it starts more than one entry's key.

    Examples:
        >>> clear_plans("xyz")
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: xyz: a key is hex digits (0-9, a-f), as 'visionbatch cache list' shows them
    """
    folder = plans_dir()
    return ClearedPlans(str(folder), remove_cache_entries(folder, prefix), prefix)  # `files`: shared with infer.kept


def _summary(path: Path) -> CachedPlan:
    size = cache_entry_size(path)
    entry, _, problem = _read_entry(path, path.stem)
    key = entry.get("key") if entry is not None and isinstance(entry.get("key"), dict) else None
    plan = entry.get("plan") if entry is not None and isinstance(entry.get("plan"), dict) else {}
    fitted_at = entry.get("fitted_at") if entry is not None and isinstance(entry.get("fitted_at"), str) else None
    return CachedPlan(
        key_hash=path.stem, fitted_at=fitted_at, device=describe_device(entry_field(key, "device")),
        model=entry_field(entry_field(key, "model"), "name"), task=entry_field(key, "task"),
        imgsz=entry_field(key, "imgsz"), batch_size=entry_field(plan, "batch_size"), size_bytes=size, path=str(path),
        key=key, problem=problem,
    )


def describe_device(device: Any) -> str | None:
    """A key's device in a few words.

    Examples:
        >>> describe_device({"kind": "cpu", "cpu": "AMD EPYC", "budget_bytes": 2 << 30})
        'CPU budget 2.00 GiB (AMD EPYC)'
        >>> describe_device({"kind": "cuda", "name": "NVIDIA H200", "uuid": "GPU-5a1c2b3d-0000"})
        'NVIDIA H200 GPU-5a1c2b3d'
        >>> describe_device({"kind": "target", "key": "t4"})
        'target t4'
    """
    if not isinstance(device, dict):
        return None
    kind = device.get("kind")
    if kind == "cuda":
        return f"{device.get('name')} {str(device.get('uuid'))[:12]}"
    if kind == "cpu":
        return f"CPU budget {human_bytes(device.get('budget_bytes'))} ({device.get('cpu')})"
    if kind == "target":
        budget = device.get("budget_bytes")
        return f"target {device.get('key')}" + (f", budget {human_bytes(budget)}" if budget else "")
    return str(kind)


# -- plans as JSON and back --------------------------------------------------------------------------------

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def plan_to_dict(value: Any) -> Any:
    """A plan (or any of its parts) as plain JSON, every field written; inf and nan as the strings 'inf', 'nan'.

    Unlike `results.to_jsonable` nothing is dropped or turned into null, so `plan_from_dict` rebuilds
    the same value (an unbounded speed interval stays inf).

    Examples:
        >>> from visionbatch.stats import SpeedEstimate
        >>> plan_to_dict(SpeedEstimate(8, 100.0, 0.0, math.inf, 1))
        {'batch_size': 8, 'img_per_s': 100.0, 'low_img_per_s': 0.0, 'high_img_per_s': 'inf', 'samples': 1}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plan_to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plan_to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plan_to_dict(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # NumPy and torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} has no JSON form in a plan")


def plan_from_dict(cls: type, data: Any) -> Any:
    """Rebuild a plan dataclass (`BatchPlan`, or any of its parts) from `plan_to_dict`'s JSON, checking every type.

    Only the dataclasses the annotations name are built, from plain values: nothing in the data can
    choose a type or run code.

    Raises:
        ValueError: a field is missing, unknown, or of the wrong type.

    Examples:
        >>> from visionbatch.stats import SpeedEstimate
        >>> plan_from_dict(SpeedEstimate, plan_to_dict(SpeedEstimate(8, 100.0, 0.0, math.inf, 1)))
        SpeedEstimate(batch_size=8, img_per_s=100.0, low_img_per_s=0.0, high_img_per_s=inf, samples=1)
        >>> plan_from_dict(SpeedEstimate, {"batch_size": "8"})
        Traceback (most recent call last):
        ValueError: SpeedEstimate.batch_size: expected int, got str
    """
    return _decode(cls, data, cls.__name__)


def _decode(kind: Any, value: Any, where: str) -> Any:
    if kind is Any:
        return value
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, value, where)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        problems = []
        for option in options:
            try:
                return _decode(option, value, where)
            except ValueError as exc:
                problems.append(str(exc))
        raise ValueError(problems[0] if len(problems) == 1 else f"{where}: matches none of {kind}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {k: _decode(args[1] if args else Any, v, f"{where}[{k!r}]") for k, v in value.items()}
    if kind is float:
        if isinstance(value, str) and value in _NON_FINITE:
            return _NON_FINITE[value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind in (str, bool):
        if isinstance(value, kind):
            return value
    else:
        raise ValueError(f"{where}: {kind} is not a type a plan holds")
    raise ValueError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")


def _decode_dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, spec in fields.items():
        if name in value:
            kwargs[name] = _decode(hints[name], value[name], f"{cls.__name__}.{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: missing field {name!r}")
    return cls(**kwargs)
