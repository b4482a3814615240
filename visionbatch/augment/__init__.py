"""Augmentation and data-loader cost inside Ultralytics' real training pipeline (`visionbatch augcost`).

Modules: `profile` (the flow), `options` (its own arguments), `timing` (per-transform timers),
`sample` (the symlinked sample), `loader` (DataLoader throughput), `step` (the training step),
`pipeline` (a user's Albumentations file), `analysis` (pure maths and the verdict), `report`
(result types), `figure` (JSON and PNG).
Importing this package imports neither torch nor Ultralytics.
"""

from __future__ import annotations

from visionbatch.augment.figure import save_report
from visionbatch.augment.options import AUGCOST_KEYS
from visionbatch.augment.profile import profile_augmentation, training_callback
from visionbatch.augment.report import (
    AugmentationReport,
    LoaderSample,
    PhaseProfile,
    PipelineDelta,
    ResolutionFit,
    StepTiming,
    TransformCost,
    Verdict,
)

__all__ = [
    "AUGCOST_KEYS", "AugmentationReport", "LoaderSample", "PhaseProfile", "PipelineDelta", "ResolutionFit",
    "StepTiming", "TransformCost", "Verdict", "profile_augmentation", "save_report", "training_callback",
]
