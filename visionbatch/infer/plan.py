"""Result values of `visionbatch infer`: what was measured per batch, the constraints, the choice.

All frozen and JSON-able (`visionbatch.results.to_jsonable`); `InferencePlan` is written as
`plan.json` next to the configs it produced.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from visionbatch.devices.catalog import JetsonModule, Target
from visionbatch.devices.jetson import JetsonInfo
from visionbatch.infer.instances import InstanceSearch
from visionbatch.infer.precision import PrecisionReport
from visionbatch.infer.queueing import QueueStats
from visionbatch.results import to_jsonable
from visionbatch.stats import SpeedEstimate


@dataclasses.dataclass(frozen=True, slots=True)
class StreamLoad:
    """Camera streams to serve: `streams` sources at `fps` frames per second each.

    Examples:
        >>> load = StreamLoad(streams=4, fps=25)
        >>> load.images_per_s, load.fill_wait_ms(1), load.fill_wait_ms(5)
        (100.0, 0.0, 40.0)
    """

    streams: int
    fps: float

    @property
    def images_per_s(self) -> float:
        """Frames per second arriving in all: the throughput real time needs."""
        return float(self.streams * self.fps)

    def fill_wait_ms(self, batch_size: int) -> float:
        """How long the first frame of a batch waits for the other `batch_size - 1` to arrive.

        Frames arrive at `streams * fps` per second in all, so a batch of b fills in about
        (b - 1) / (streams * fps) seconds after its first frame.
        """
        return (batch_size - 1) / self.images_per_s * 1000.0


@dataclasses.dataclass(frozen=True, slots=True)
class Constraints:
    """What the chosen batch must satisfy; None means unconstrained.

    Attributes:
        latency_ms: budget for a frame's worst latency: batch fill wait + p99 batch latency.
        memory_budget_bytes: the most memory the measured reading may show (see
            `BatchMeasurement.memory_source`).
        memory_budget_source: where the memory budget came from, for messages.
        load: the camera load to keep up with.
    """

    latency_ms: float | None = None
    memory_budget_bytes: int | None = None
    memory_budget_source: str = ""
    load: StreamLoad | None = None

    @property
    def required_per_s(self) -> float | None:
        return self.load.images_per_s if self.load else None

    def fill_wait_ms(self, batch_size: int) -> float:
        return self.load.fill_wait_ms(batch_size) if self.load else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class BatchMeasurement:
    """One batch size, measured: latency of a whole batch, throughput, memory, power.

    Attributes:
        batch_size: images per call.
        runs: timed calls (after warm-up).
        latency_p50_ms: median latency of one call (the whole batch).
        latency_p90_ms: 90th percentile.
        latency_p99_ms: 99th percentile (linear interpolation; with fewer than 100 runs it sits
            between the largest readings).
        latency_mean_ms: mean latency of one call.
        latency_max_ms: the slowest call.
        per_image_ms: mean call latency divided by the batch size.
        throughput_per_s: images per second over the timed calls, back to back.
        memory_bytes: the memory reading over the timed calls (None if none could be read).
        memory_source: what `memory_bytes` is, e.g. 'process peak RSS'.
        power_mw: mean power over the timed calls where the device reports it, else None.
        stages_ms: end to end only: mean milliseconds per call of 'preprocess', 'inference' and
            'postprocess'.
        detections_per_image: end to end only: mean detections kept by NMS per image.
        throughput_low_per_s, throughput_high_per_s: the 95% interval of `throughput_per_s`
            (`visionbatch.stats.estimate_speed` over the timed calls; None when not known, high
            None in JSON when unbounded).
    """

    batch_size: int
    runs: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    latency_max_ms: float
    per_image_ms: float
    throughput_per_s: float
    memory_bytes: int | None = None
    memory_source: str = ""
    power_mw: float | None = None
    stages_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    detections_per_image: float | None = None
    throughput_low_per_s: float | None = None
    throughput_high_per_s: float | None = None

    def speed(self) -> SpeedEstimate:
        """The throughput with its interval, for `visionbatch.stats`' rules (a point when none is known).

        Examples:
            >>> BatchMeasurement(4, 10, 30.0, 35.0, 40.0, 31.0, 41.0, 7.75, 129.0).speed().low_img_per_s
            129.0
        """
        low = self.throughput_per_s if self.throughput_low_per_s is None else self.throughput_low_per_s
        high = self.throughput_per_s if self.throughput_high_per_s is None else self.throughput_high_per_s
        return SpeedEstimate(self.batch_size, self.throughput_per_s, low, high, self.runs)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchVerdict:
    """A measured batch judged against the constraints.

    Attributes:
        batch_size: the batch judged.
        fill_wait_ms: time for the batch to fill at the stream load (0 without a load).
        worst_latency_ms: what the latency budget is held against: the simulated p99 frame
            latency under the load (queueing included) when `simulated` is set, else fill wait +
            p99 batch latency.
        feasible: True when every constraint holds.
        violations: one short line per broken constraint.
        queue_delay_ms: the queue delay of the best policy simulated for this batch (None without a load).
        simulated: that policy under the load (`visionbatch.infer.queueing`), None without a load.
    """

    batch_size: int
    fill_wait_ms: float
    worst_latency_ms: float
    feasible: bool
    violations: tuple[str, ...] = ()
    queue_delay_ms: float | None = None
    simulated: QueueStats | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayResult:
    """One policy replayed.

    Attributes:
        batch_size: the policy's largest batch.
        queue_delay_ms: its queue delay.
        frames: frames replayed.
        batches: batches run.
        latency_p50_ms: median frame latency, arrival to its batch's end.
        latency_p99_ms: 99th percentile.
        latency_max_ms: the slowest frame.
        over_budget_share: share of frames later than the budget (None without one).
        met: whether the p99 is within the budget (True without one).
        wall_s: seconds the replay took, the queue's drain included.
        service_ratio: the replay's batch calls, in all, against what the sweep's mean latency at the
            same sizes predicts (1.1: 10% slower in real-time serving); None when unknown. Near
            saturation a few percent decide whether the queue drains, so a replay that misses
            says how much slower the runner served than it was measured.
    """

    batch_size: int
    queue_delay_ms: float
    frames: int
    batches: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    over_budget_share: float | None
    met: bool
    wall_s: float
    service_ratio: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """The chosen batch (None when nothing is feasible), why, and what would help otherwise.

    Under a load, `queue_delay_ms` and `simulated` are the chosen policy's, and `candidates` holds
    every policy that met the constraints in simulation, best first (what a replay tries in turn).
    `by_latency` is True when the load left headroom enough that the lowest latency, not the most
    capacity, chose (`choice.COMFORTABLE_UTILISATION`). `earlier` is an earlier run's choice for the
    same question, judged by `choice.keep_earlier`.
    """

    batch_size: int | None
    reason: str
    verdicts: tuple[BatchVerdict, ...]
    advice: tuple[str, ...] = ()
    queue_delay_ms: float | None = None
    simulated: QueueStats | None = None
    candidates: tuple[QueueStats, ...] = ()
    by_latency: bool = False
    earlier: EarlierChoice | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class EarlierChoice:
    """The policy an earlier run chose for the same question (`visionbatch.infer.kept`), and what became of it.

    Attributes:
        batch_size: the batch it chose.
        queue_delay_ms: its queue delay (None without a load).
        run_dir: the run folder it was chosen in.
        chosen_at: when (UTC, ISO 8601).
        kept: whether this run kept it (`choice.keep_earlier`): None until judged.
        why: why it was kept or not, in a few words.
        alone_batch_size, alone_queue_delay_ms: what this run's measurements alone chose (None until judged,
            and when nothing was feasible).
    """

    batch_size: int
    queue_delay_ms: float | None
    run_dir: str
    chosen_at: str
    kept: bool | None = None
    why: str = ""
    alone_batch_size: int | None = None
    alone_queue_delay_ms: float | None = None

    def describe(self) -> str:
        """'batch 1 (queue delay 0 ms), chosen 2026-11-30T15:02:11Z in runs/infer/infer-3'."""
        delay = "" if self.queue_delay_ms is None else f" (queue delay {self.queue_delay_ms:g} ms)"
        return f"batch {self.batch_size}{delay}, chosen {self.chosen_at} in {self.run_dir}"


@dataclasses.dataclass(frozen=True, slots=True)
class InferencePlan:
    """What `tune_inference` measured and chose; written as `plan.json`.

    Attributes:
        model: the model argument.
        model_file: the file that ran (exported .onnx, .engine, or the .pt/.yaml for PyTorch).
        task: 'detect' or 'segment'.
        backend: 'onnxruntime', 'pytorch' or 'tensorrt'.
        provider: what executed it, e.g. 'CPUExecutionProvider', 'torch eager', 'TensorRT 10.3'.
        device: 'cpu' or 'cuda:0'.
        device_name: the CPU or GPU model.
        precision: 'fp32' or 'fp16'.
        imgsz: square input size in pixels.
        end_to_end: whether letterbox pre-processing and NMS were timed with the model.
        cpu_threads: threads the CPU path ran with (None on GPU backends).
        constraints: the constraints the choice was held to.
        measurements: one per batch measured, in order.
        verdicts: the same batches judged against the constraints.
        stop_reason: why the sweep stopped where it did.
        batch_size: the chosen batch, None when nothing met the constraints.
        reason: the choice in one sentence.
        advice: what would make an infeasible load feasible.
        speedup_vs_batch1: chosen throughput / batch-1 throughput.
        jetson: the Jetson this ran on, if any.
        target: the device planned for (`target=`), if any: a Jetson module, or a GPU from the catalog.
        files: artefact name -> path (plan, plot, configs).
        run_dir: the run folder.
        versions: package versions.
        wall_s: seconds for the whole call, export included.
        notes: things the user should know.
        precisions: fp32 / fp16 / INT8 throughput and mAP at the chosen batch (`precision=`), else None.
        timing: how the throughputs were timed: interleaved rounds, seconds, and whether the
            intervals narrowed or the time bound stopped them.
        queue_delay_ms: the chosen policy's queue delay under a load (Triton's
            max_queue_delay_microseconds, nvstreammux's batched-push-timeout); None without a load.
        simulated: the chosen policy simulated under the load: frame latency p50/p99 with
            queueing, utilisation, headroom (`visionbatch.infer.queueing`).
        replayed: the policies replayed against the runner in real time, in order; the last
            is the chosen one when it met the budget (`visionbatch.infer.replay`).
        instances: Triton's instance count: the chosen batch on one instance against two at
            once, both throughputs with their intervals, and the count written
            (`visionbatch.infer.instances`), or 1 with the reason nothing was measured.
        earlier: the choice an earlier run made for the same model, device, load and budgets, whether it
            was kept and why (`keep_choice=False`: not kept, chosen afresh); None when there was none.
        remembered: whether this run's choice was stored for later runs of the same question (`infer.kept`).
    """

    model: str
    model_file: str
    task: str
    backend: str
    provider: str
    device: str
    device_name: str
    precision: str
    imgsz: int
    end_to_end: bool
    cpu_threads: int | None
    constraints: Constraints
    measurements: tuple[BatchMeasurement, ...]
    verdicts: tuple[BatchVerdict, ...]
    stop_reason: str
    batch_size: int | None
    reason: str
    advice: tuple[str, ...]
    speedup_vs_batch1: float | None
    jetson: JetsonInfo | None
    target: JetsonModule | Target | None
    files: dict[str, str]
    run_dir: str
    versions: dict[str, str]
    wall_s: float
    notes: tuple[str, ...] = ()
    precisions: PrecisionReport | None = None
    timing: str = ""
    queue_delay_ms: float | None = None
    simulated: QueueStats | None = None
    replayed: tuple[ReplayResult, ...] = ()
    instances: InstanceSearch | None = None
    earlier: EarlierChoice | None = None
    remembered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @property
    def chosen(self) -> BatchMeasurement | None:
        """The measurement of the chosen batch."""
        return next((m for m in self.measurements if m.batch_size == self.batch_size), None)
