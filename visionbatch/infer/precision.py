"""Precision trade-offs: fp32, fp16 (CUDA) and INT8 set against each other in throughput and mAP.

INT8 comes from ONNX Runtime's static quantisation of the exported fp32 ONNX (QDQ format,
per-channel Conv weights), calibrated on letterboxed images of the dataset's train split, on the
CPU and offline. The head's box decoding (the nodes between the last convolutions and the outputs)
stays in fp32: `output0` carries pixel coordinates and 0-1 class scores in one tensor, and one
INT8 scale for both would round the scores away. fp16 is the same graph converted to fp16 with fp32
inputs and outputs, measured only on a CUDA device (a CPU runs fp16 no faster than fp32).

Accuracy is Ultralytics' own validator run on each ONNX file (`YOLO(onnx).val`) under `offline()`
against the staged mirror of `data=` (Ultralytics' label caches land there, never beside the
user's labels). Throughput is ONNX Runtime through the inference runner at one batch size, every
precision's session open at once and timed in interleaved round-robin blocks (`time_precisions`,
through `visionbatch.stats`), so a slow spell of the machine hits every precision alike; each
throughput carries its 95% interval, and a precision is called faster or slower than fp32 only
when the intervals show it beyond `stats.SPEED_TOLERANCE` ("not measurably faster" otherwise).
Every file written goes into the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionbatch.checks import whole_number
from visionbatch.errors import ConfigError
from visionbatch.results import to_jsonable
from visionbatch.stats import (
    SPEED_TOLERANCE,
    SpeedEstimate,
    as_fast,
    measurably_faster,
    repeat_alike,
    speed_ratio_bounds,
    time_calls,
)
from visionbatch.text import printable, shown, suggest
from visionbatch.values import check_switch

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CALIBRATION_IMAGES = 64
MAX_CALIBRATION_IMAGES = 10_000
PAD_VALUE = 114  # Ultralytics' LetterBox fill
BLOCK_CALLS = 3  # a timing block makes at least this many calls...
BLOCK_SECONDS = 0.25  # ...and lasts at least this long (or a quarter of `seconds`, when that is shorter)
# The comparison's time bound per precision, in sweep seconds (seconds=, 1 by default): an interval over blocks
# narrows as 1/sqrt(blocks), and 1 s each gave 7 blocks and an INT8 ratio of 1.10-3.59x on cpu-2. It stops
# sooner once every comparison with fp32 is settled.
SECONDS_PER_PRECISION = 5


@dataclasses.dataclass(frozen=True, slots=True)
class PrecisionResult:
    """One precision, measured.

    Attributes:
        precision: 'fp32', 'fp16' or 'int8'.
        file: the ONNX file that ran (None when this precision was not made).
        img_per_s: images per second at the report's batch size (None: not measured).
        map50_95: box mAP50-95 on the validation split (None: not measured).
        map50: box mAP50 on the validation split (None: not measured).
        note: why something is missing, or how the file was made.
        low_img_per_s, high_img_per_s: the 95% interval of `img_per_s` (`visionbatch.stats`; None
            when not measured, and high None when unbounded).
        calls: timed calls the throughput rests on (None: not measured).
    """

    precision: str
    file: str | None
    img_per_s: float | None
    map50_95: float | None
    map50: float | None
    note: str = ""
    low_img_per_s: float | None = None
    high_img_per_s: float | None = None
    calls: int | None = None

    def speed(self, batch_size: int = 1) -> SpeedEstimate | None:
        """The throughput with its interval (0 to unbounded when none is known), None when not measured.

        Examples:
            >>> PrecisionResult("int8", "q.onnx", 160.0, None, None, low_img_per_s=150.0, calls=30).speed()
            SpeedEstimate(batch_size=1, img_per_s=160.0, low_img_per_s=150.0, high_img_per_s=inf, samples=30)
        """
        if self.img_per_s is None:
            return None
        low = 0.0 if self.low_img_per_s is None else self.low_img_per_s
        high = math.inf if self.high_img_per_s is None else self.high_img_per_s
        return SpeedEstimate(batch_size, self.img_per_s, low, high, self.calls or 1)


@dataclasses.dataclass(frozen=True, slots=True)
class PrecisionReport:
    """The precisions compared on one model, dataset, batch and device.

    Attributes:
        model_file: the fp32 ONNX the others were made from.
        data: the data.yaml whose val split gave the mAP (and train split the calibration).
        imgsz: input size in pixels.
        batch_size: the batch the throughput was timed at.
        device: 'cpu' or 'cuda:N'.
        calibration_images: train images INT8 was calibrated on (0 when INT8 was not asked for).
        results: one per precision asked for, in the order asked.
        tradeoffs: one line per precision against fp32, e.g.
            'int8: 1.60x the throughput (95% 1.48-1.73x), mAP50-95 0.410 -> 0.390'.
        timing: how the throughputs were timed: interleaved blocks, seconds, and whether every
            comparison with fp32 settled or the time bound stopped it.
    """

    model_file: str
    data: str
    imgsz: int
    batch_size: int
    device: str
    calibration_images: int
    results: tuple[PrecisionResult, ...]
    tradeoffs: tuple[str, ...] = ()
    timing: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


@dataclasses.dataclass(frozen=True, slots=True)
class PrecisionRequest:
    """`precision=`, `data=`, `calib_images=` and `remap_classes=`, checked before anything runs."""

    precisions: tuple[str, ...]
    data: str
    calibration_images: int
    remap_classes: bool = False


def check_precisions(value: Any) -> tuple[str, ...]:
    """The precisions asked for, deduplicated in order; fp32 always first (the reference).

    Examples:
        >>> check_precisions("int8"), check_precisions(["fp32", "int8", "int8"])
        (('fp32', 'int8'), ('fp32', 'int8'))
        >>> check_precisions("fp8")
        Traceback (most recent call last):
        ...
        visionbatch.errors.ConfigError: precision=fp8 is not a precision visionbatch compares: use fp32, fp16 or int8, e.g. precision=fp32,int8
    """
    items = [item for item in value.split(",") if item.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"precision={printable(shown(value))} is not a list of precisions: use e.g. "
                          f"precision=fp32,int8")
    found: dict[str, None] = {"fp32": None}
    for item in items:
        name = str(item).strip().lower()
        if name not in PRECISIONS:
            raise ConfigError(f"precision={printable(shown(item))} is not a precision visionbatch compares"
                              f"{suggest(name, PRECISIONS)}: use fp32, fp16 or int8, e.g. precision=fp32,int8")
        found[name] = None
    return tuple(found)


def check_request(precision: Any, data: Any, calib_images: Any, backend: str = "onnxruntime",
                  remap_classes: Any = False) -> PrecisionRequest | None:
    """Check `precision=` with its partners; None when no precision comparison was asked for.

    Raises:
        ConfigError: a bad precision, `data=` missing, given alone or no file, a bad calib_images,
            a backend other than ONNX Runtime (the precisions are made from the ONNX).
    """
    remap = check_switch(remap_classes, key="remap_classes")
    if precision is None:
        if data is not None or calib_images is not None or remap:
            given = "data" if data is not None else "calib_images" if calib_images is not None else "remap_classes"
            raise ConfigError(f"{given}= is used by precision= only: add precision=fp32,int8 to compare "
                              f"precisions on the dataset, or leave {given}= out")
        return None
    precisions = check_precisions(precision)
    if data is None:
        raise ConfigError(f"precision={','.join(precisions)} needs data=: the dataset whose val split measures "
                          f"mAP (and whose train images calibrate INT8), e.g. data=datasets/shapes/data.yaml")
    if not Path(str(data)).expanduser().is_file():
        raise ConfigError(f"data={printable(shown(data))}: no such file: pass the dataset's YAML, e.g. "
                          f"data=datasets/shapes/data.yaml")
    if backend != "onnxruntime":
        raise ConfigError(f"precision= compares ONNX files made from the exported model, not backend={backend}: "
                          f"use backend=onnxruntime")
    count = DEFAULT_CALIBRATION_IMAGES if calib_images is None else whole_number(
        calib_images, "calib_images", example="calib_images=64", maximum=MAX_CALIBRATION_IMAGES)
    return PrecisionRequest(precisions, str(Path(str(data)).expanduser()), count, remap)


def pick_images(files: Sequence[str], count: int) -> list[str]:
    """`count` images spread evenly over `files` (all of them when there are fewer).

    Examples:
        >>> pick_images(["a", "b", "c", "d", "e", "f"], 3)
        ['a', 'c', 'e']
        >>> pick_images(["a", "b"], 5)
        ['a', 'b']
    """
    if count >= len(files):
        return list(files)
    return [files[i * len(files) // count] for i in range(count)]


def letterbox(image: np.ndarray, imgsz: int) -> np.ndarray:
    """A BGR HWC uint8 image as the model takes it: letterboxed to imgsz x imgsz, RGB, /255, CHW float32.

    As Ultralytics' `LetterBox(auto=False, center=True)`: scaled to fit keeping its aspect, padded
    with 114 equally on both sides.

    Examples:
        >>> out = letterbox(np.zeros((20, 40, 3), np.uint8), 32)
        >>> out.shape, out.dtype, float(out[0, 0, 0]), float(out[0, 16, 0])
        ((3, 32, 32), dtype('float32'), 0.4470588266849518, 0.0)
    """
    import cv2

    height, width = image.shape[:2]
    ratio = min(imgsz / height, imgsz / width)
    new_w, new_h = int(round(width * ratio)), int(round(height * ratio))
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_w, pad_h = (imgsz - new_w) / 2, (imgsz - new_h) / 2
    top, bottom = int(round(pad_h - 0.1)), int(round(pad_h + 0.1))
    left, right = int(round(pad_w - 0.1)), int(round(pad_w + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def calibration_batches(files: Sequence[str], imgsz: int) -> Iterator[np.ndarray]:
    """Each image as a (1, 3, imgsz, imgsz) float32 batch; unreadable images are skipped."""
    import cv2

    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is not None:
            yield letterbox(image, imgsz)[None]


def head_decoding_nodes(model: Any) -> list[str]:
    """Names of the nodes between the outputs and the last convolutions before them (kept fp32 in INT8).

    A backward walk from every graph output that stops at Conv nodes: for a YOLO head that is the
    box decoding (DFL reshape, dist2bbox, the stride multiply), the class sigmoid and the concat.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    names: dict[str, None] = {}
    seen: set[str] = set()
    frontier = [output.name for output in model.graph.output]
    while frontier:
        tensor = frontier.pop()
        node = producers.get(tensor)
        if node is None or node.op_type == "Conv" or tensor in seen:
            continue
        seen.add(tensor)
        if node.name:
            names[node.name] = None
        frontier.extend(node.input)
    return list(names)


def int8_file_name(onnx_path: Path) -> str:
    """The INT8 model's name in the run folder.

    Examples:
        >>> int8_file_name(Path("runs/yolo11n.onnx"))
        'yolo11n_int8.onnx'
    """
    return f"{onnx_path.stem}_int8.onnx"


def quantize_int8(onnx_path: Path, out_path: Path, images: Sequence[str], imgsz: int) -> Path:
    """Static INT8 quantisation (QDQ, per-channel weights) of `onnx_path`, calibrated on `images`.

    The file goes to `out_path` whole (written in a scratch folder beside it, then moved) and keeps
    the source's metadata (names, stride, imgsz, task), which Ultralytics reads.

    Raises:
        ConfigError: no calibration image could be read.
    """
    import onnx

    from visionbatch.infer.ort import import_onnxruntime

    import_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self, input_name: str) -> None:
            self.input_name = input_name
            self.batches = calibration_batches(images, imgsz)
            self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.count += 1
            return {self.input_name: batch}

    source = onnx.load(str(onnx_path))
    initializers = {t.name for t in source.graph.initializer}
    input_name = next(i.name for i in source.graph.input if i.name not in initializers)
    reader = _Reader(input_name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".int8-", dir=out_path.parent))
    quiet = logging.root.manager.disable
    try:
        written = scratch / out_path.name
        copy = scratch / "source.onnx"  # the quantiser writes <stem>-inferred.onnx beside its input: here, not
        onnx.save(source, str(copy))  # beside the user's model
        # the quantiser logs a warning per Conv bias it finds after a shape op, and a pre-processing hint,
        # on the root logger: the result is the same, so they are held back for the call
        logging.disable(logging.WARNING)
        try:
            # unsigned activations, signed weights (U8S8): ONNX Runtime's fast path on x86 CPUs; signed symmetric
            # activations (S8S8, what TensorRT needs) ran 3x slower than fp32 here (BENCHMARKS.md, issue 13),
            # so this file is for ONNX Runtime on a CPU, not for trtexec
            quantize_static(str(copy), str(written), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            nodes_to_exclude=head_decoding_nodes(source))
        except ValueError as exc:
            if reader.count == 0:  # ONNX Runtime's "No data is collected."
                raise ConfigError(f"calibration: none of the {len(images)} train images could be read: check "
                                  f"the dataset's images") from None
            raise RuntimeError(f"INT8 quantisation failed: {exc}") from exc
        logging.disable(quiet)
        quantized = onnx.load(str(written))
        del quantized.metadata_props[:]
        quantized.metadata_props.extend(source.metadata_props)
        onnx.save(quantized, str(written))
        shutil.move(str(written), str(out_path))  # same folder: a rename
    finally:
        logging.disable(quiet)
        shutil.rmtree(scratch, ignore_errors=True)
    return out_path


def convert_fp16(onnx_path: Path, out_path: Path) -> Path:
    """The graph in fp16 with fp32 inputs and outputs (ONNX Runtime's converter), metadata kept."""
    import onnx

    from visionbatch.infer.ort import import_onnxruntime

    import_onnxruntime()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    scratch = out_path.with_name(f".{out_path.name}.part")
    onnx.save(model, str(scratch))
    scratch.replace(out_path)
    return out_path


def validate(onnx_path: Path, data_yaml: Path, imgsz: int, device: str, task: str) -> tuple[float, float]:
    """(mAP50-95, mAP50) of the boxes from Ultralytics' validator on `onnx_path`, batch 1, offline.

    `data_yaml` must be a staged mirror's YAML: Ultralytics writes its label cache beside the labels.
    Its own output folder is a scratch folder, removed afterwards.
    """
    from visionbatch.devices.parse import parse_device
    from visionbatch.ultralytics.offline import offline, quiet_ultralytics

    scratch = Path(tempfile.mkdtemp(prefix="visionbatch-val-"))
    try:
        with offline(), quiet_ultralytics():
            from ultralytics import YOLO

            metrics = YOLO(str(onnx_path), task=task).val(
                data=str(data_yaml), batch=1, imgsz=imgsz, device=parse_device(device).ultralytics_name,
                plots=False, verbose=False, save_json=False, project=str(scratch), name="val", exist_ok=True,
                workers=0)
        return float(metrics.box.map), float(metrics.box.map50)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def time_precisions(files: Mapping[str, Path], batch_size: int, imgsz: int, device: str = "cpu",
                    threads: int | None = None, seconds: float = 1.0, *,
                    open_runner: Callable[[Path], Any] | None = None, warmup_runs: int = 2,
                    clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, SpeedEstimate], str]:
    """Throughput of each precision's ONNX at `batch_size`, timed in interleaved blocks, with 95% intervals.

    Every runner is opened (`open_runner(path)`, default an ONNX Runtime session with `threads`) and
    warmed first; then one block of each precision in turn (at least `BLOCK_CALLS` calls and
    `BLOCK_SECONDS`, or seconds / 4 when shorter), round after round (`stats.repeat_alike`), until
    every precision's comparison with fp32 is settled (`settled_against`) or `seconds` per precision
    have passed. Returns the speeds by precision and one line on how the timing ended.
    """
    if open_runner is None:
        from visionbatch.infer.export import onnx_info
        from visionbatch.infer.runners import OnnxRuntimeRunner

        def open_runner(path: Path) -> Any:
            return OnnxRuntimeRunner(onnx_info(path), device, threads=threads, imgsz=imgsz)

    from visionbatch.infer.pipeline import model_step

    runners: dict[str, Any] = {}
    try:
        for precision, path in files.items():
            runners[precision] = open_runner(path)
        steps = {precision: model_step(runner, batch_size, imgsz) for precision, runner in runners.items()}
        for step in steps.values():
            for _ in range(warmup_runs):
                step()
        block_seconds = min(BLOCK_SECONDS, seconds / 4)

        def time_block(precision: str) -> list[float]:
            return time_calls(steps[precision], BLOCK_CALLS, block_seconds, clock)

        bound_s = seconds * len(files)
        timed = repeat_alike(time_block, list(files), lambda precision: batch_size, settled_against, bound_s, clock)
        assert timed is not None  # time_block always returns calls
        speeds, timings = timed
    finally:
        for runner in runners.values():
            runner.close()
    stopped = ("every comparison with fp32 settled" if timings.settled
               else f"the {bound_s:g} s bound passed: overlapping intervals count as equal")
    return speeds, (f"{', '.join(files)} at batch {batch_size} in {timings.blocks} interleaved blocks "
                    f"({timings.elapsed_s:.1f} s): {stopped}")


def settled_against(speeds: Mapping[str, SpeedEstimate], tolerance: float = SPEED_TOLERANCE) -> bool:
    """Whether every precision's comparison with fp32 is decided: faster, slower, or within `tolerance`.

    Examples:
        >>> base = SpeedEstimate(2, 100.0, 99.0, 101.0, 30)
        >>> settled_against({"fp32": base, "int8": SpeedEstimate(2, 150.0, 145.0, 155.0, 30)})
        True
        >>> settled_against({"fp32": base, "int8": SpeedEstimate(2, 104.0, 90.0, 120.0, 6)})  # 0.89-1.21x
        False
    """
    base = speeds.get("fp32")
    if base is None or len(speeds) == 1:
        return True  # nothing to compare with
    for precision, speed in speeds.items():
        if precision == "fp32":
            continue
        within = as_fast(speed, base, tolerance) and as_fast(base, speed, tolerance)
        if not (within or measurably_faster(speed, base, tolerance) or measurably_faster(base, speed, tolerance)):
            return False
    return True


def speed_against(speed: SpeedEstimate, base: SpeedEstimate, tolerance: float = SPEED_TOLERANCE) -> str:
    """One precision's throughput against fp32's, as far as the intervals show it.

    Examples:
        >>> base = SpeedEstimate(2, 100.0, 98.0, 102.0, 30)
        >>> speed_against(SpeedEstimate(2, 160.0, 155.0, 165.0, 30), base)
        '1.60x the throughput (95% 1.52-1.68x)'
        >>> speed_against(SpeedEstimate(2, 105.0, 97.0, 114.0, 30), base)
        'not measurably faster (throughput 0.95-1.16x at 95%)'
        >>> speed_against(SpeedEstimate(2, 50.0, 48.0, 52.0, 30), base)
        'measurably slower: 0.50x the throughput (95% 0.47-0.53x)'
    """
    low, high = speed_ratio_bounds(speed, base)
    shown_high = "unbounded" if math.isinf(high) else f"{high:.2f}x"
    ratio = speed.img_per_s / base.img_per_s
    if measurably_faster(speed, base, tolerance):
        return f"{ratio:.2f}x the throughput (95% {low:.2f}-{shown_high})"
    if measurably_faster(base, speed, tolerance):
        return f"measurably slower: {ratio:.2f}x the throughput (95% {low:.2f}-{shown_high})"
    return f"not measurably faster (throughput {low:.2f}-{shown_high} at 95%)"


def tradeoff_lines(results: Sequence[PrecisionResult]) -> tuple[str, ...]:
    """Each precision against fp32, in one line: throughput as far as the intervals show it, and mAP.

    Examples:
        >>> base = PrecisionResult("fp32", "m.onnx", 100.0, 0.41, 0.6, low_img_per_s=98.0, high_img_per_s=102.0)
        >>> tradeoff_lines([base, PrecisionResult("int8", "q.onnx", 160.0, 0.39, 0.58, low_img_per_s=155.0,
        ...                                       high_img_per_s=165.0)])
        ('int8: 1.60x the throughput (95% 1.52-1.68x), mAP50-95 0.410 -> 0.390',)
        >>> tradeoff_lines([base, PrecisionResult("int8", "q.onnx", 105.0, 0.39, 0.58, low_img_per_s=97.0,
        ...                                       high_img_per_s=114.0)])
        ('int8: not measurably faster (throughput 0.95-1.16x at 95%), mAP50-95 0.410 -> 0.390',)
        >>> tradeoff_lines([base, PrecisionResult("fp16", None, None, None, None, "needs CUDA")])
        ('fp16: not measured (needs CUDA)',)
    """
    base = next((r for r in results if r.precision == "fp32"), None)
    lines = []
    for result in results:
        if result.precision == "fp32" or base is None:
            continue
        if result.img_per_s is None and result.map50_95 is None:
            lines.append(f"{result.precision}: not measured ({result.note})")
            continue
        parts = []
        speed, base_speed = result.speed(), base.speed()
        if speed is not None and base_speed is not None and base_speed.img_per_s:
            parts.append(speed_against(speed, base_speed))
        if result.map50_95 is not None and base.map50_95 is not None:
            parts.append(f"mAP50-95 {base.map50_95:.3f} -> {result.map50_95:.3f}")
        lines.append(f"{result.precision}: {', '.join(parts) or 'not comparable'}")
    return tuple(lines)


def compare_precisions(onnx_path: str | Path, request: PrecisionRequest, run_dir: Path, *, imgsz: int,
                       batch_size: int = 1, device: str = "cpu", threads: int | None = None, task: str | None = None,
                       seconds: float = 1.0, progress: Callable[[str], None] | None = None) -> PrecisionReport:
    """Make each precision of an fp32 ONNX and measure its throughput and mAP on `request.data`.

    Args:
        onnx_path: the fp32 ONNX (dynamic batch), read only.
        request: from `check_request`: precisions, data.yaml, calibration image count.
        run_dir: where the INT8 / fp16 files go (`<stem>_int8.onnx`, `<stem>_fp16.onnx`).
        imgsz: input size in pixels.
        batch_size: the batch the throughput is timed at (the plan's chosen batch).
        device: 'cpu' or 'cuda:N'; fp16 is measured on CUDA only.
        threads: CPU threads for ONNX Runtime (None: its default).
        task: 'detect' or 'segment' (Ultralytics' validator for it; box mAP is reported); default:
            what the ONNX says.
        seconds: each precision's share of the timing's bound: the interleaved blocks stop when
            every comparison with fp32 is settled, or after `seconds` x the precisions timed.
        progress: receives a line per step.

    Returns:
        The report, one result per precision.

    Raises:
        DatasetError: `data=` is not a usable dataset.
        ConfigError: the model is not an fp32 ONNX, or no calibration image could be read.

    Examples:
        >>> request = check_request("fp32,int8", "datasets/shapes/data.yaml", 16)
        >>> report = compare_precisions("yolo11n.onnx", request, Path("runs/infer/p"), imgsz=64)  # doctest: +SKIP
        >>> report.tradeoffs  # doctest: +SKIP
        ('int8: 1.62x the throughput (95% 1.50-1.75x), mAP50-95 0.412 -> 0.398',)
    """
    from visionbatch.dataset import load_dataset
    from visionbatch.infer.export import onnx_info
    from visionbatch.staging import staged_dataset

    say = progress or (lambda line: None)
    onnx_path = Path(onnx_path)
    info = onnx_info(onnx_path)
    if info.half:
        raise ConfigError(f"model={printable(onnx_path)} is an fp16 ONNX: precision= compares from the fp32 "
                          f"model: export it without half=True")
    summary = load_dataset(request.data, remap_classes=request.remap_classes)
    cuda = device.startswith("cuda")
    files: dict[str, Path | None] = {"fp32": onnx_path}
    notes: dict[str, str] = {"fp32": "the exported model"}
    calibrated = 0
    if "int8" in request.precisions:
        images = pick_images(list(summary.train.files), request.calibration_images)
        calibrated = len(images)
        say(f"quantising to INT8 (QDQ, per-channel), calibrated on {calibrated} train images")
        files["int8"] = quantize_int8(onnx_path, run_dir / int8_file_name(onnx_path), images, imgsz)
        notes["int8"] = (f"ONNX Runtime static quantisation (QDQ, per-channel weights, MinMax) on {calibrated} "
                         f"train images; box decoding kept fp32")
    if "fp16" in request.precisions:
        if cuda:
            files["fp16"] = convert_fp16(onnx_path, run_dir / f"{onnx_path.stem}_fp16.onnx")
            notes["fp16"] = "fp16 graph, fp32 inputs and outputs"
        else:
            files["fp16"] = None
            notes["fp16"] = "fp16 runs on a CUDA device only (a CPU runs it no faster than fp32)"
    made = {precision: path for precision, path in files.items() if path is not None}
    say(f"timing {', '.join(made)} at batch {batch_size} in interleaved blocks")
    speeds, timing = time_precisions(made, batch_size, imgsz, device, threads, seconds)
    results = []
    with staged_dataset(summary) as staged:
        for precision in request.precisions:
            path = files[precision]
            if path is None:
                results.append(PrecisionResult(precision, None, None, None, None, notes[precision]))
                continue
            say(f"{precision}: validating on {summary.val.images} val images")
            map50_95, map50 = validate(path, staged.yaml_path, imgsz, device, task or info.task)
            results.append(_result(precision, path, speeds[precision], map50_95, map50, notes[precision]))
    return PrecisionReport(
        model_file=str(onnx_path), data=summary.yaml_path, imgsz=imgsz, batch_size=batch_size, device=device,
        calibration_images=calibrated, results=tuple(results), tradeoffs=tradeoff_lines(results), timing=timing)


def _result(precision: str, path: Path, speed: SpeedEstimate, map50_95: float, map50: float,
            note: str) -> PrecisionResult:
    high = None if math.isinf(speed.high_img_per_s) else round(speed.high_img_per_s, 2)
    return PrecisionResult(precision, str(path), round(speed.img_per_s, 2), round(map50_95, 4), round(map50, 4),
                           note, round(speed.low_img_per_s, 2), high, speed.samples)
