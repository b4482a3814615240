"""The one place that knows Ultralytics internals.

`offline` (no network, settings in our own folder, restricted checkpoint loading), `models`
(model YAMLs and checkpoints, checked before use), `args` (Ultralytics' train keys and their
checks), `job` (prepare a training job once: arguments, dataset, task, model, run folder),
`spec` (what a training step is made of: optimizer=auto, AMP, label density), `step` (the one
real training step: model, loss, optimizer, EMA, AMP, used by fit and augcost) and `trainers`
(Ultralytics trainers whose checkpoints are whole or absent).
"""
