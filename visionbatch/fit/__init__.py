"""Batch fitting: measure the real training step's memory curve and choose the batch (or predict it).

The public API is `fit.api` (`fit_batch`, `fit_job`, `FitOptions`, `save_plan`, ...) and
`fit.sweep` (`sweep_resolution`). Behind them: `planner` (the probing schedule), `curve` (pure
maths), `plan` (the result types), `probes/` (one step's peak memory on a device, a CPU budget,
a simulation or a CPU trace) and `plot`.
"""
