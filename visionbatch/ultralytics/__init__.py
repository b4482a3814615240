"""The one place that knows Ultralytics internals.

`offline` (no network, settings in our own folder, restricted checkpoint loading), `models`
(model YAMLs and checkpoints, checked before use), `args` (Ultralytics' train keys and their
checks), `job` (prepare a training job once: arguments, dataset, task, model, run folder),
`step` (the one real training step: model, loss, optimizer=auto, EMA, AMP) and `trainers`
(Ultralytics trainers whose checkpoints are whole or absent).
"""
