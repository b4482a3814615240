"""`visionbatch infer MODEL [key=value ...]`."""

from __future__ import annotations

from collections.abc import Sequence

from visionbatch.cli.args import positional
from visionbatch.console import err, table
from visionbatch.infer.choice import CHOSEN_AFRESH, SAME_AS_ALONE
from visionbatch.infer.plan import BatchMeasurement, InferencePlan
from visionbatch.infer.precision import PrecisionResult
from visionbatch.keys import help_block
from visionbatch.units import human_bytes

SUMMARY = "tune the inference batch for deployment (latency, memory, camera load) and write its configs"
USAGE = """visionbatch infer MODEL [key=value ...]

MODEL: a model YAML (yolo11n.yaml), a local .pt, an .onnx or a TensorRT .engine. A .pt/.yaml is
exported offline with a dynamic batch. Sweeps batch sizes on the backend, chooses the batch with
the most throughput within the constraints, writes plan.json, sweep.png and DeepStream / Triton /
TensorRT settings to runs/infer/<name>/. target= plans for a device from the catalog that this
machine is not: its memory (less what a Jetson's OS keeps) is the memory the plan must fit, and
the timings still come from this machine. A rerun of the same question (model, device, load,
budgets) keeps the earlier run's choice while its own measurements carry it, so that reruns agree
on a device whose speed moves; keep_choice=False chooses from this run alone.

visionbatch keys:
""" + help_block("infer") + """

Examples:
  visionbatch infer yolo11n.yaml imgsz=320 latency_ms=100
  visionbatch infer best.pt imgsz=640 streams=8 fps=25 latency_ms=200 target=orin-nano-8gb
  visionbatch infer yolo11n.yaml batch_sizes=1,2,4,8 target=t4 memory_fraction=0.5
  visionbatch infer model.engine streams=4 fps=30 latency_ms=80 end_to_end=True"""


def run(tokens: Sequence[str]) -> InferencePlan:
    from visionbatch.infer.options import from_cli
    from visionbatch.infer.tune import tune_inference

    model, pairs = positional(tokens, "infer", "MODEL", "model", "visionbatch infer yolo11n.yaml [key=value ...]")
    return tune_inference(model, progress=lambda line: err(f"visionbatch infer: {line}"), **from_cli(pairs))


# A broken constraint in the table's verdict column, in the order a reader needs it: a batch too slow for the load
# is that first, whatever its simulated latency (which, with a growing queue, says only how long the simulation ran)
_SHORT_VERDICTS = (("throughput ", "too slow"), ("utilisation ", "queue grows"), ("memory ", "over memory"),
                   ("simulated p99 ", "over latency"), ("latency ", "over latency"))


def _short_verdict(violations: Sequence[str]) -> str:
    """The table's word for a batch that is out.

    Examples:
        >>> _short_verdict(["simulated p99 900.0 ms (queue delay 0 ms) > 500 ms budget",
        ...                 "throughput 28.0 img/s < 40 img/s needed"])
        'too slow'
        >>> _short_verdict(["memory 2.00 GiB > 1.00 GiB budget"]), _short_verdict(["something else"])
        ('over memory', 'out')
    """
    return next((word for prefix, word in _SHORT_VERDICTS if any(v.startswith(prefix) for v in violations)), "out")


# what each column of the sweep table means, as `_legend` prints the ones shown
_COLUMNS = {
    "runs": "timed calls",
    "p50 ms": "latency per call (p50, p90, p99)",
    "ms/img": "mean call time / batch",
    "95% img/s": "the throughput's 95% interval over the timed blocks",
    "x b1": "throughput against batch 1's",
    "fill ms": "the first frame's wait for the camera load to fill the batch",
    "delay ms": "the batcher's queue delay",
    "sim p99 ms": "frame latency p99 in the simulated camera load, queueing included",
    "util": "the share of time the runner is busy under that load",
}


def _legend(headers: list[str], memory_source: str) -> str:
    """One line saying what the table's less obvious columns hold.

    Examples:
        >>> print(_legend(["batch", "runs", "p50 ms", "x b1", "memory"], "RSS"))
        (runs: timed calls; p50 ms: latency per call (p50, p90, p99); x b1: throughput against batch 1's; memory: RSS)
    """
    parts = [f"{name}: {_COLUMNS[name]}" for name in headers if name in _COLUMNS]
    return f"({'; '.join([*parts, f'memory: {memory_source}'])})"


def show(plan: InferencePlan) -> str:
    load = plan.constraints.load is not None
    power = any(m.power_mw is not None for m in plan.measurements)
    verdicts = {v.batch_size: v for v in plan.verdicts}
    first = plan.measurements[0]
    simulated = any(v.simulated is not None for v in plan.verdicts)
    headers = ["batch", "runs", "p50 ms", "p90 ms", "p99 ms", "ms/img", "img/s", "95% img/s", "x b1", "memory"]
    headers += ["fill ms"] if load else []
    headers += ["delay ms", "sim p99 ms", "util"] if simulated else []
    headers += ["power W"] if power else []
    headers += ["verdict"]
    rows = []
    for m in plan.measurements:
        verdict = verdicts[m.batch_size]
        gain = m.throughput_per_s / first.throughput_per_s if first.batch_size == 1 else None
        row = [m.batch_size, m.runs, *(_ms(v) for v in (m.latency_p50_ms, m.latency_p90_ms, m.latency_p99_ms)),
               f"{m.per_image_ms:.2f}", f"{m.throughput_per_s:.1f}", _interval(m),
               None if gain is None else f"{gain:.2f}x", human_bytes(m.memory_bytes)]
        row += [_ms(verdict.fill_wait_ms)] if load else []
        sim = verdict.simulated
        row += ([_ms(sim.queue_delay_ms), _ms(sim.latency_p99_ms), f"{sim.utilisation:.0%}"] if sim else [None] * 3
                ) if simulated else []
        row += [None if m.power_mw is None else f"{m.power_mw / 1000:.1f}"] if power else []
        mark = "chosen" if m.batch_size == plan.batch_size else ("ok" if verdict.feasible else
                                                                  _short_verdict(verdict.violations))
        rows.append(row + [mark])
    memory_source = first.memory_source or "memory"
    title = (f"visionbatch infer: {plan.task} {plan.model} at {plan.imgsz}px, {plan.backend} ({plan.provider}) "
             f"{plan.precision} on {plan.device_name or plan.device}"
             + (f", {plan.cpu_threads} threads" if plan.cpu_threads else "")
             + (", end to end" if plan.end_to_end else ""))
    lines = ["", table(headers, rows, title=title), _legend(headers, memory_source)]
    if any(m.stages_ms for m in plan.measurements):
        stage_rows = [[m.batch_size, *(_ms(m.stages_ms.get(k)) for k in ("preprocess", "inference", "postprocess")),
                       m.detections_per_image] for m in plan.measurements]
        lines += ["", table(["batch", "preprocess ms", "inference ms", "postprocess ms", "detections/img"],
                            stage_rows, title="end to end, mean per call")]
    lines.append("")
    lines.append(f"constraints: {_constraints(plan)}")
    lines.append(f"sweep stopped: {plan.stop_reason}")
    if plan.timing:
        lines.append(f"timing: {plan.timing}")
    if plan.simulated is not None:
        sim = plan.simulated
        over = "" if sim.over_budget_share is None else f", {sim.over_budget_share:.1%} of frames over the budget"
        lines.append(f"simulated load: batch {sim.batch_size}, queue delay {sim.queue_delay_ms:g} ms: frame latency "
                     f"p50 {sim.latency_p50_ms:.1f} / p99 {sim.latency_p99_ms:.1f} ms, utilisation "
                     f"{sim.utilisation:.0%}, headroom {sim.headroom:.0%}{over} ({sim.frames} frames)")
    for replay in plan.replayed:
        verdict = "within the budget" if replay.met else "over the budget"
        lines.append(f"replayed in real time: batch {replay.batch_size}, queue delay {replay.queue_delay_ms:g} ms, "
                     f"{replay.frames} frames: p50 {replay.latency_p50_ms:.1f} / p99 {replay.latency_p99_ms:.1f} ms "
                     f"({verdict})")
    if plan.batch_size is not None:
        lines.append(f"chosen: {plan.reason}")
        earlier = plan.earlier
        if earlier is not None and earlier.why == SAME_AS_ALONE:
            lines.append(f"an earlier run chose the same: {earlier.describe()}")
        elif earlier is not None and not earlier.kept and earlier.why == CHOSEN_AFRESH:
            lines.append(f"chosen afresh (keep_choice=False); an earlier run had chosen {earlier.describe()}")
        elif earlier is None and plan.remembered:
            lines.append("remembered: a later run with the same model, device, load and budgets keeps this choice "
                         "while its own measurements carry it (keep_choice=False chooses afresh)")
        if plan.instances is not None:
            lines.append(f"triton instances: {plan.instances.reason}"
                         + (f" [{plan.instances.timing}]" if plan.instances.timing else ""))
    else:
        lines.append(f"nothing feasible: {plan.reason}")
        lines += [f"  what would help: {a}" for a in plan.advice]
    lines += _precisions(plan)
    lines += [f"note: {n}" for n in plan.notes]
    lines.append(f"run folder: {plan.run_dir}")
    shown = [k for k in ("plan", "plot", "deepstream_nvinfer", "deepstream_streammux", "triton_config", "trtexec")
             if k in plan.files]
    lines += [f"  {k}: {plan.files[k]}" for k in shown]
    return "\n".join(lines)


def _precisions(plan: InferencePlan) -> list[str]:
    """The precision table (`precision=`) and one trade-off line per precision against fp32."""
    report = plan.precisions
    if report is None:
        return []
    rows = [[r.precision, None if r.img_per_s is None else f"{r.img_per_s:.1f}", _precision_interval(r),
             None if r.map50_95 is None else f"{r.map50_95:.3f}", None if r.map50 is None else f"{r.map50:.3f}",
             r.note] for r in report.results]
    title = (f"precisions at batch {report.batch_size} on {report.device}, mAP on the val split of "
             f"{report.data}")
    return ["", table(["precision", "img/s", "95% img/s", "mAP50-95", "mAP50", "note"], rows, title=title),
            *report.tradeoffs, *([f"timing: {report.timing}"] if report.timing else []), ""]


def _precision_interval(result: PrecisionResult) -> str | None:
    speed = result.speed()
    return None if speed is None or result.low_img_per_s is None else speed.span()


def _interval(m: BatchMeasurement) -> str | None:
    if m.throughput_low_per_s is None or m.throughput_high_per_s is None:
        return None
    return m.speed().span()


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


def _constraints(plan: InferencePlan) -> str:
    c = plan.constraints
    parts = []
    if c.latency_ms is not None:
        how = ("simulated p99 with queueing" if any(v.simulated is not None for v in plan.verdicts)
               else "fill wait + p99")
        parts.append(f"latency <= {c.latency_ms:g} ms ({how})")
    if c.load is not None:
        parts.append(f"{c.load.streams} streams x {c.load.fps:g} fps = {c.load.images_per_s:g} img/s")
    if c.memory_budget_bytes is not None:
        parts.append(f"memory <= {human_bytes(c.memory_budget_bytes)}")
    return ", ".join(parts) if parts else "none: the most throughput wins"
