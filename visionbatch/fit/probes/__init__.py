"""Measure one step at one batch size: on a CUDA device, on CPU tensors, or on a simulated device.

All probes share `Probe.measure()`: run a step, read the peak, and turn an out-of-memory error
(and only that, as `visionbatch.devices.oom.is_oom` decides) into a failed sample. See `base.py`.
"""
