"""Pure maths over measurements: per-row statistics, growth with resolution, the bottleneck verdict.

Nothing here touches a clock, a dataset or Ultralytics; every function is tested with exact numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from visionbatch.augment.report import (
    COLLATE,
    LABELS,
    LOAD,
    OTHER,
    LoaderSample,
    PhaseProfile,
    PipelineDelta,
    ResolutionFit,
    TransformCost,
    Verdict,
)
from visionbatch.checks import STRIDE
from visionbatch.stats import t_quantile

NOT_DROPPABLE = frozenset({LOAD, LABELS, COLLATE, OTHER, "Format"})  # rows no augmentation setting removes
ENOUGH = 1.1  # a loader this much faster than the step keeps it fed despite jitter


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (NumPy's default).

    Examples:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile(range(1, 21), 95)
        (2.5, 19.05)
    """
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def summarise(images: Sequence[Mapping[str, float]], calls: Mapping[str, int]
              ) -> tuple[tuple[TransformCost, ...], float, float]:
    """Per-row mean, p95 and share over images, most expensive first, plus the total's mean and p95.

    Args:
        images: for each image, seconds spent in each row (exclusive times, so rows add up).
        calls: how often each row ran over all images.

    Returns:
        (rows, total mean ms, total p95 ms).

    Examples:
        >>> rows, mean, p95 = summarise([{"a": 0.003, "b": 0.001}, {"a": 0.005}], {"a": 2, "b": 1})
        >>> [(r.name, r.mean_ms, r.share, r.calls_per_image) for r in rows], mean
        ([('a', 4.0, 0.888889, 1.0), ('b', 0.5, 0.111111, 0.5)], 4.5)
    """
    count = len(images)
    if not count:
        return (), 0.0, 0.0
    names = sorted({name for image in images for name in image} | set(calls))
    totals = [sum(image.values()) * 1000 for image in images]
    total_mean = sum(totals) / count
    rows = []
    for name in names:
        per_image = [image.get(name, 0.0) * 1000 for image in images]
        mean = sum(per_image) / count
        rows.append(TransformCost(
            name=name,
            mean_ms=round(mean, 6),
            p95_ms=round(percentile(per_image, 95), 6),
            share=round(mean / total_mean, 6) if total_mean > 0 else 0.0,
            calls_per_image=round(calls.get(name, 0) / count, 6),
        ))
    rows.sort(key=lambda r: (-r.mean_ms, r.name))
    return tuple(rows), round(total_mean, 6), round(percentile(totals, 95), 6)


def stride_multiple(imgsz: int) -> int:
    """The size Ultralytics trains at: rounded up to a multiple of the stride (its check_imgsz).

    Examples:
        >>> stride_multiple(640), stride_multiple(100), stride_multiple(20)
        (640, 128, 32)
    """
    return max(math.ceil(imgsz / STRIDE) * STRIDE, STRIDE)


def default_sizes(imgsz: int) -> tuple[int, ...]:
    """The training size and its neighbours at half and double, as multiples of 32 (at least 32).

    Examples:
        >>> default_sizes(640), default_sizes(320), default_sizes(64), default_sizes(32)
        ((320, 640, 1280), (160, 320, 640), (32, 64, 128), (32, 64))
    """
    half = max(STRIDE, round(imgsz / 2 / STRIDE) * STRIDE)
    double = round(imgsz * 2 / STRIDE) * STRIDE
    return tuple(sorted({half, imgsz, double}))


def spread(n: int, k: int) -> list[int]:
    """k distinct indices spread evenly over range(n), first and last included (all when k >= n).

    Examples:
        >>> spread(10, 4), spread(3, 5), spread(100, 1)
        ([0, 3, 6, 9], [0, 1, 2], [0])
    """
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


def growth_exponent(sizes: Sequence[int], ms: Sequence[float]) -> float:
    """k in ms ~ pixels^k, pixels = imgsz^2, by least squares on logs.

    Examples:
        >>> round(growth_exponent([320, 640, 1280], [1.0, 4.0, 16.0]), 6)
        1.0
        >>> round(growth_exponent([320, 640], [3.0, 6.0]), 6)
        0.5
    """
    if len(sizes) < 2 or min(ms) <= 0:
        return math.nan
    x = np.log(np.asarray(sizes, dtype=float) ** 2)
    y = np.log(np.asarray(ms, dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def fit_line(sizes: Sequence[int], ms: Sequence[float]) -> tuple[float, float]:
    """(fixed_ms, per_mpx_ms) of the least-squares line ms = fixed + per_mpx * imgsz^2 / 1e6.

    Examples:
        >>> [round(v, 6) for v in fit_line([500, 1000], [3.0, 6.0])]
        [2.0, 4.0]
    """
    if len(sizes) < 2:
        return math.nan, math.nan
    mpx = np.asarray(sizes, dtype=float) ** 2 / 1e6
    slope, intercept = np.polyfit(mpx, np.asarray(ms, dtype=float), 1)
    return float(intercept), float(slope)


def growth_words(exponent: float) -> str:
    """A growth exponent (ms ~ pixels^k) in words, with what doubling imgsz does.

    Examples:
        >>> growth_words(0.97), growth_words(0.52), growth_words(0.1), growth_words(0.75)
        ('~linear in pixels (x3.8 per doubling of imgsz)', '~linear in imgsz (x2.1 per doubling of imgsz)', '~flat: fixed costs dominate (x1.1 per doubling of imgsz)', '~pixels^0.75 (x2.8 per doubling of imgsz)')
    """
    if math.isnan(exponent):
        return "-"
    per_doubling = f"(x{4 ** exponent:.1f} per doubling of imgsz)"
    if 0.85 <= exponent <= 1.15:
        return f"~linear in pixels {per_doubling}"
    if 0.4 <= exponent <= 0.6:
        return f"~linear in imgsz {per_doubling}"
    if exponent < 0.2:
        return f"~flat: fixed costs dominate {per_doubling}"
    return f"~pixels^{exponent:.2f} {per_doubling}"


def find_sample(loader: Sequence[LoaderSample], workers: int, cache: str) -> LoaderSample | None:
    """The measured sample for a setting (`workers` as asked: the loader applies the same caps in training)."""
    for sample in loader:
        if sample.images_per_s is not None and sample.cache == cache and sample.workers == workers:
            return sample
    return None


def decide(loader: Sequence[LoaderSample], step_images_per_s: float, *, workers: int, cache: str,
           profile: PhaseProfile, smaller: PhaseProfile | None = None, serial: bool = False,
           device_word: str = "GPU") -> Verdict | None:
    """Set the loader against the step: which side is the bottleneck, by how much, and what to change.

    Args:
        loader: the measured loader settings.
        step_images_per_s: what the training step consumes.
        workers: the workers the training's DataLoader will start (after Ultralytics' caps).
        cache: the training's cache mode (`none`, `ram`, `disk`).
        profile: the per-transform profile of the phase the loader ran (training imgsz).
        smaller: the same phase at the next smaller imgsz, if measured.
        serial: data loading runs in the training process, in series with the step (CPU training).
        device_word: what waits for data, for the message.

    Returns:
        The verdict, or None when no loader setting was measured and no profile exists.
    """
    measured = [s for s in loader if s.images_per_s]
    current = find_sample(measured, workers, cache) or find_sample(measured, workers, "none")
    best = max(measured, key=lambda s: s.images_per_s) if measured else None
    if serial:
        return _decide_serial(measured, step_images_per_s, cache, profile)
    if current is None or best is None:
        return None
    rate, step = current.images_per_s, step_images_per_s
    where = f"workers={current.workers}, cache={current.cache}"
    if rate >= step:
        enough = [s for s in measured if s.cache == current.cache and s.images_per_s >= step * ENOUGH]
        fewest = min(enough, key=lambda s: s.workers) if enough else current
        spare = f" (workers={fewest.workers} would still keep up)" if fewest.workers < current.workers else ""
        change = (f"the data pipeline is not the bottleneck{spare}: a faster step (smaller imgsz or model, AMP "
                  f"on a GPU) helps most")
        message = (f"compute-bound: the step takes {step:.0f} img/s and the loader delivers {rate:.0f} img/s "
                   f"({where}), {rate / step:.1f}x what the step needs; {change}")
        return Verdict("compute", rate, step, 0.0, False, change, message)
    idle = 1 - rate / step
    change = _data_change(current, best, step, profile, smaller)
    message = (f"data-bound: the loader delivers {rate:.0f} img/s ({where}) but the step takes {step:.0f} img/s, "
               f"so the {device_word} waits {idle:.0%} of the time; {change}")
    return Verdict("data", rate, step, round(idle, 6), False, change, message)


def _top_transform(profile: PhaseProfile) -> TransformCost | None:
    candidates = [t for t in profile.transforms if t.name not in NOT_DROPPABLE and t.mean_ms > 0]
    return max(candidates, key=lambda t: t.mean_ms) if candidates else None


def _data_change(current: LoaderSample, best: LoaderSample, step: float, profile: PhaseProfile,
                 smaller: PhaseProfile | None) -> str:
    """The change with the highest projected loader throughput; a loader setting first if it is enough."""
    options: list[tuple[float, str]] = []
    if best.images_per_s > current.images_per_s:
        options.append((best.images_per_s, f"use workers={best.workers} cache={_cache_arg(best.cache)} "
                                           f"({best.images_per_s:.0f} img/s measured)"))
        if best.images_per_s >= step:
            return options[0][1]
    base = max(best.images_per_s, current.images_per_s)
    setting = (f" with workers={best.workers} cache={_cache_arg(best.cache)}"
               if best.images_per_s > current.images_per_s else "")
    top = _top_transform(profile)
    if top is not None and profile.total_ms > top.mean_ms:
        projected = base * profile.total_ms / (profile.total_ms - top.mean_ms)
        options.append((projected, f"drop or cheapen {top.name} ({top.mean_ms:.1f} of {profile.total_ms:.1f} ms "
                                   f"per image): ~{projected:.0f} img/s{setting}"))
    if smaller is not None and 0 < smaller.total_ms < profile.total_ms:
        projected = base * profile.total_ms / smaller.total_ms
        options.append((projected, f"train at imgsz={smaller.imgsz} ({smaller.total_ms:.1f} instead of "
                                   f"{profile.total_ms:.1f} ms per image): ~{projected:.0f} img/s{setting}"))
    if not options:
        return "no measured change speeds the loader up: more CPU cores for the workers would"
    return max(options, key=lambda o: o[0])[1]


def _decide_serial(measured: Sequence[LoaderSample], step: float, cache: str, profile: PhaseProfile) -> Verdict:
    """CPU training: Ultralytics loads in the training process (workers=0), so the times add up."""
    in_process = find_sample(measured, 0, cache) or find_sample(measured, 0, "none")
    data_ms = 1000 / in_process.images_per_s if in_process else profile.total_ms
    step_ms = 1000 / step
    share = data_ms / (data_ms + step_ms)
    savings: list[tuple[float, str]] = []
    cached = [s for s in measured if s.workers == 0 and s.cache != cache]
    if cached:
        fastest = max(cached, key=lambda s: s.images_per_s)
        saved = data_ms - 1000 / fastest.images_per_s
        if saved > 0:
            savings.append((saved, f"cache={_cache_arg(fastest.cache)} saves {saved:.1f} ms per image"))
    top = _top_transform(profile)
    if top is not None:
        savings.append((top.mean_ms, f"dropping {top.name} saves {top.mean_ms:.1f} ms per image"))
    saving = max(savings, key=lambda s: s[0]) if savings else None
    if share < 0.1 or saving is None:
        change = (f"the step dominates: a smaller imgsz or model (or a GPU) helps most; tuning the pipeline "
                  f"can win at most {share:.0%}")
    else:
        change = f"{saving[1]} ({saving[0] / (data_ms + step_ms):.0%} of training time)"
    bound = "data" if data_ms > step_ms else "compute"
    message = (f"{bound}-bound on CPU, in series (Ultralytics trains with workers=0 on CPU): {data_ms:.1f} ms of "
               f"data pipeline + {step_ms:.0f} ms of step per image, the pipeline is {share:.0%} of the time; {change}")
    rate = 1000 / data_ms
    return Verdict(bound, round(rate, 6), step, round(share, 6), True, change, message)


def _cache_arg(cache: str) -> str:
    return "False" if cache == "none" else cache


def mosaic_schedule(epochs: int, close_mosaic: int) -> list[tuple[str, int]]:
    """Training phases and their epochs, as BaseTrainer closes mosaic at epoch >= epochs - close_mosaic.

    Examples:
        >>> mosaic_schedule(100, 10), mosaic_schedule(10, 10), mosaic_schedule(5, 0)
        ([('mosaic', 90), ('close_mosaic', 10)], [('close_mosaic', 10)], [('mosaic', 5)])
    """
    if close_mosaic <= 0:
        return [("mosaic", epochs)]
    before = max(epochs - close_mosaic, 0)
    return ([("mosaic", before)] if before else []) + [("close_mosaic", min(close_mosaic, epochs))]


def resolution_fits(phases: Sequence[PhaseProfile], chain: str) -> tuple[ResolutionFit, ...]:
    fits = []
    for phase in ("mosaic", "close_mosaic"):
        points = sorted((p for p in phases if p.phase == phase and p.chain == chain), key=lambda p: p.imgsz)
        if len(points) < 2:
            continue
        sizes = tuple(p.imgsz for p in points)
        totals = tuple(p.total_ms for p in points)
        exponent = growth_exponent(sizes, totals)
        fixed, per_mpx = fit_line(sizes, totals)
        names = set.intersection(*({t.name for t in p.transforms if t.mean_ms > 0} for p in points))
        per_row = {name: round(growth_exponent(sizes, [p.cost(name).mean_ms for p in points]), 3)
                   for name in sorted(names)}
        fits.append(ResolutionFit(phase, sizes, totals, round(exponent, 4), round(fixed, 4), round(per_mpx, 4),
                                  growth_words(exponent), per_row))
    return tuple(fits)


def total_sem_ms(images: Sequence[Mapping[str, float]]) -> float:
    """The standard error of the mean per-image total, in ms (0 for fewer than two images).

    Examples:
        >>> total_sem_ms([{"a": 0.003, "b": 0.001}, {"a": 0.005}]), total_sem_ms([{"a": 0.003}])
        (0.5, 0.0)
    """
    totals = [sum(image.values()) * 1000 for image in images]
    if len(totals) < 2:
        return 0.0
    mean = sum(totals) / len(totals)
    variance = sum((t - mean) ** 2 for t in totals) / (len(totals) - 1)
    return round(math.sqrt(variance / len(totals)), 6)


def pipeline_deltas(phases: Sequence[PhaseProfile], imgsz: int) -> tuple[PipelineDelta, ...]:
    """The user's pipeline against the default chain per phase at the training size, with a 95% interval.

    The interval is Welch's over the two passes' per-image totals (the t quantile at the smaller pass's
    degrees of freedom: conservative); a few images give a wide one, and the report says when it holds 0.
    """
    deltas = []
    for phase in ("mosaic", "close_mosaic"):
        ours = next((p for p in phases if (p.phase, p.imgsz, p.chain) == (phase, imgsz, "pipeline")), None)
        base = next((p for p in phases if (p.phase, p.imgsz, p.chain) == (phase, imgsz, "default")), None)
        if ours and base:
            added = ours.total_ms - base.total_ms
            fewest = min(ours.images, base.images)
            half = (t_quantile(fewest - 1) * math.hypot(ours.total_sem_ms, base.total_sem_ms)
                    if fewest >= 2 else math.inf)
            deltas.append(PipelineDelta(phase, base.total_ms, ours.total_ms, round(added, 6),
                                        round(added / base.total_ms, 6) if base.total_ms else 0.0,
                                        round(added - half, 6), round(added + half, 6)))
    return tuple(deltas)
