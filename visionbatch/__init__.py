"""visionbatch: fit the training batch to the GPU, cost the data pipeline, tune inference batching.

For Ultralytics YOLO detection and segmentation. Importing this package imports nothing heavy
and changes nothing (no environment variables, no torch settings); the verbs load what they need.

Examples:
    >>> import visionbatch
    >>> result = visionbatch.train("datasets/shapes/data.yaml", epochs=1, imgsz=64)  # doctest: +SKIP
    >>> plan = visionbatch.tune_inference("yolo11n.yaml", imgsz=320, latency_ms=100)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it; loaded on first use to keep `import visionbatch` light
_EXPORTS = {
    "train": "visionbatch.train.run",
    "fit_batch": "visionbatch.fit.api",
    "BatchPlan": "visionbatch.fit.plan",
    "MemoryCurve": "visionbatch.fit.plan",
    "ProbeSample": "visionbatch.fit.plan",
    "TrainResult": "visionbatch.train.result",
    "EpochRecord": "visionbatch.train.result",
    "MemorySurface": "visionbatch.fit.plan",
    "sweep_resolution": "visionbatch.fit.sweep",
    "ResolutionSweep": "visionbatch.fit.sweep",
    "find_target": "visionbatch.devices.catalog",
    "profile_augmentation": "visionbatch.augment",
    "AugmentationReport": "visionbatch.augment",
    "load_dataset": "visionbatch.dataset",
    "DatasetSummary": "visionbatch.dataset",
    "tune_inference": "visionbatch.infer.tune",
    "InferencePlan": "visionbatch.infer.plan",
    "VisionbatchError": "visionbatch.errors",
    "ConfigError": "visionbatch.errors",
    "DatasetError": "visionbatch.errors",
    "ProbeError": "visionbatch.errors",
    "BudgetError": "visionbatch.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from visionbatch.augment import AugmentationReport, profile_augmentation
    from visionbatch.dataset import DatasetSummary, load_dataset
    from visionbatch.devices.catalog import find_target
    from visionbatch.errors import (
        BudgetError,
        ConfigError,
        DatasetError,
        ProbeError,
        VisionbatchError,
    )
    from visionbatch.fit.api import fit_batch
    from visionbatch.fit.plan import BatchPlan, MemoryCurve, MemorySurface, ProbeSample
    from visionbatch.fit.sweep import ResolutionSweep, sweep_resolution
    from visionbatch.infer.plan import InferencePlan
    from visionbatch.infer.tune import tune_inference
    from visionbatch.train.result import EpochRecord, TrainResult
    from visionbatch.train.run import train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(_EXPORTS[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'visionbatch' has no attribute '{name}'")
