"""`visionbatch train DATA.yaml [key=value ...]`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from shlex import quote

from visionbatch.cli.args import positional, suggested_command, typed_pairs
from visionbatch.console import table
from visionbatch.keys import help_block, read_keys
from visionbatch.train.result import TrainResult
from visionbatch.units import human_bytes

SUMMARY = "train a detection or segmentation model with Ultralytics, offline"
USAGE = """visionbatch train DATA.yaml [key=value ...]

Any Ultralytics train argument works with Ultralytics' meaning: model=yolo11s.yaml, epochs=50,
imgsz=640, device=0, task=segment, batch=32, workers=8, ... Defaults that work offline:
model=yolo11n.yaml (yolo11n-seg.yaml for task=segment); task from model=, else detect.
Output: runs/<task>/<name>/ (Ultralytics' run folder) with visionbatch.json.

visionbatch keys:
""" + help_block("train") + """

batch=auto (or a fraction, batch=0.85, or Ultralytics' batch=-1 for 0.6) fits the batch to the
GPU first (see visionbatch fit) and trains with the plan; batch_plan.json and memory_curve.png
go into the run folder, and visionbatch.json sets each epoch's peak memory next to the plan's
prediction. On a CPU, batch=auto needs memory_budget=, e.g. memory_budget=8GiB."""


class TrainRun(TrainResult):
    """A `TrainResult` and the `key=value` arguments as typed (`cli.args.typed_pairs`), which the commands
    it suggests carry over (`next_steps`).

    `typed` is a slot, not a dataclass field: `--json` prints the result's fields only, the same as
    visionbatch.json, as the README promises.
    """

    __slots__ = ("typed",)

    @classmethod
    def of(cls, result: TrainResult, typed: Sequence[tuple[str, str]]) -> TrainRun:
        run = cls(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
        object.__setattr__(run, "typed", tuple(typed))  # set once, like the result's frozen fields
        return run


def run(tokens: Sequence[str]) -> TrainRun:
    from visionbatch.train.run import train
    from visionbatch.ultralytics.args import ultralytics_defaults

    data, pairs = positional(tokens, "train", "DATA", "data",
                             "visionbatch train path/to/data.yaml [key=value ...]")
    result = train(data, **read_keys("train", pairs, ultralytics_defaults()))
    return TrainRun.of(result, typed_pairs(tokens))


def show(result: TrainResult) -> str:
    rows = []
    for e in result.epochs:
        metric = e.metrics.get("metrics/mAP50-95(M)", e.metrics.get("metrics/mAP50-95(B)"))
        rows.append([e.epoch, e.train_s, e.val_s, human_bytes(e.peak_rss_bytes),
                     human_bytes(e.cuda_peak_reserved_bytes), sum(e.losses.values()), metric])
    lines = [
        "",
        table(["epoch", "train s", "val s", "peak RSS", "CUDA reserved", "train loss", "mAP50-95"], rows,
              title=f"visionbatch train: {result.task} {result.model}, batch {result.batch_size} "
                    f"({result.batch_source}), {result.device} ({result.cpu_threads} CPU threads)"),
    ]
    for recovery in result.recoveries:
        if recovery.phase == "train":
            lines.append(f"recovered: out of memory at batch {recovery.old_batch} in epoch {recovery.epoch}"
                         f"{'' if recovery.iteration is None else f', step {recovery.iteration + 1}'}: went on from "
                         f"{recovery.resumed_from} at batch {recovery.new_batch} x accumulate {recovery.new_accumulate}"
                         f" (effective batch {recovery.effective_batch})")
        else:
            lines.append(f"recovered: out of memory in {'validation' if recovery.phase == 'val' else 'final validation'}"
                         f" at batch {recovery.old_batch} (epoch {recovery.epoch}): validated again at batch "
                         f"{recovery.new_batch}; training untouched")
    for row in result.memory_vs_plan:
        lines.append(f"epoch {row.epoch}: plan predicted {human_bytes(row.predicted_bytes)}, measured "
                     f"{human_bytes(row.measured_bytes)} ({row.measured})")
    final = {k.removeprefix("metrics/"): v for k, v in result.final_metrics.items() if "mAP" in k}
    if final:
        lines.append("final: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
    lines.append(f"setup {result.setup_s:.1f} s, total {result.wall_s:.1f} s")
    lines.append(f"run folder: {result.save_dir}  (summary: visionbatch.json, weights: weights/best.pt)")
    lines.extend(next_steps(result, getattr(result, "typed", ())))  # a library TrainResult has none
    return "\n".join(lines)


LOW_MAP = 0.05  # below this mAP50-95 a user deserves a word on why


def next_steps(result: TrainResult, typed: Sequence[tuple[str, str]] = ()) -> list[str]:
    """What the result means when it looks poor, and what to run next on it.

    A model built from a YAML starts from random weights (nothing is downloaded), and its mAP stays
    near 0 for the first epochs: the warm-up alone is 3 epochs. Saying so keeps a short first run
    from looking broken.

    The suggested commands ask about this run: they carry the user's own arguments (`typed`,
    `cli.args.typed_pairs`) that each command takes (`suggested_command`), so fit and augcost see the
    same model, size and step-shaping keys. fit drops batch= (it finds the batch); augcost profiles the
    batch trained with when batch= was given (it takes a size only: batch=auto would be refused).
    """
    lines = []
    metric = result.final_metrics.get("metrics/mAP50-95(M)", result.final_metrics.get("metrics/mAP50-95(B)"))
    from_scratch = str(result.model).endswith((".yaml", ".yml"))
    if metric is not None and metric < LOW_MAP and result.status == "completed":
        epochs = len(result.epochs)
        why = (f"{result.model} starts from random weights (nothing is downloaded)" if from_scratch
               else "the model has not learned this data yet")
        warmup = result.args.get("warmup_epochs", 3)
        lines.append(f"note: mAP50-95 {metric:.3f} after {epochs} epoch{'s' * (epochs != 1)}: {why}, and the first "
                     f"{warmup:g} epochs are Ultralytics' warm-up. Train longer (epochs=100), or start from pretrained "
                     f"weights on disk (model=path/to/yolo11n.pt).")
    lines.append("next:")
    fit, augcost = _suggested(result, typed)
    width = max(len(fit), len(augcost))  # the two comments line up
    lines.append(f"  {fit.ljust(width)}      # the largest batch this device (or target=) holds")
    lines.append(f"  {augcost.ljust(width)}      # is the data pipeline or the model the bottleneck")
    imgsz = result.args.get("imgsz")
    size = [("imgsz", imgsz)] if isinstance(imgsz, int) else []
    infer = suggested_command("infer", f"{result.save_dir}/weights/best.pt", (), first=size)
    remap = " remap_classes=True" if result.remapped_classes else ""
    lines.append(f"  {infer}   # the deployment batch and its latency "
                 f"(add precision=fp32,int8 {quote(f'data={result.data}')}{remap} for INT8's speed and mAP)")
    return lines


def _suggested(result: TrainResult, typed: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The `visionbatch fit` and `visionbatch augcost` lines for this run, quoted for a shell."""
    from visionbatch.ultralytics.args import ultralytics_defaults

    keys = tuple(ultralytics_defaults())
    remap = [("remap_classes", True)] if result.remapped_classes else []
    given_batch = [("batch", result.batch_size)] if any(key == "batch" for key, _ in typed) else []
    fit = suggested_command("fit", result.data, typed, last=remap, drop=("data", "batch"), ultralytics_keys=keys)
    augcost = suggested_command("augcost", result.data, typed, last=[*given_batch, *remap], drop=("data",),
                                ultralytics_keys=keys)
    return fit, augcost
