"""Inference batching for deployment: export, sweep batch sizes on the deployment backend, choose
the batch under latency / memory / stream-load constraints, write DeepStream, Triton and TensorRT
settings. `tune_inference()` is the entry point; `choice` and `sweep` hold the pure core.

Importing this package imports no ML framework; runners load theirs when made.
"""

from visionbatch.infer.plan import (
    BatchMeasurement,
    BatchVerdict,
    Choice,
    Constraints,
    InferencePlan,
    StreamLoad,
)

__all__ = ["BatchMeasurement", "BatchVerdict", "Choice", "Constraints", "InferencePlan", "StreamLoad",
           "tune_inference"]


def __getattr__(name: str):
    if name == "tune_inference":
        from visionbatch.infer.tune import tune_inference

        return tune_inference
    raise AttributeError(f"module 'visionbatch.infer' has no attribute '{name}'")
