"""Batch fitting: measure the real training step's memory curve and choose the batch (or predict it).

The public API is re-exported here; the modules behind it are `api` (the verbs), `planner` (the probing
schedule), `curve` (pure maths), `sweep` (image size against batch), `probes/` (one step's peak
memory on a device, a CPU budget, a simulation or a CPU trace) and `plot`.
"""
