"""How many labels a training run's batches carry: a distribution, sized for a stated risk.

Ultralytics pads a batch's targets to the largest per-image count in that batch (the loss's
`preprocess`: `zeros(batch, counts.max(), 5)`), and the assigner's and the mask loss's memory
follow that count and the batch's total. The count an image arrives with is not its label file's:

- **Mosaic** (probability `mosaic`, until the last `close_mosaic` epochs) joins the image with 3
  others drawn at random, on a 2s x 2s canvas around a random centre in [s/2, 3s/2]; the affine
  that follows (`RandomPerspective`: scale in [1 - scale, 1 + scale], translation 0.5 +- translate
  of s) crops it to s x s. A box survives when more than 2 px wide and tall and more than 10% of
  its area (1% for polygons) is left.
- Without mosaic the image alone is scaled and cropped by the same affine.
- **MixUp** and **CutMix** (probabilities `mixup`, `cutmix`) add a second augmented image's
  labels (CutMix only those in its cut region: counting them all is an upper bound); **CopyPaste**
  (polygons, `copy_paste`) adds at most `round(copy_paste x n)` mirrored copies.

`label_density` models this on the dataset's own boxes: for each of a fixed set of quasi-random
geometries it counts exactly which boxes of every image survive in each mosaic tile, and
convolves the four tiles' count distributions. The result is the per-image count distribution in
each phase of the run (mosaic on, and after close_mosaic). Every image the run draws (epochs x
images) is one draw from it, so:

- the largest per-image count the run will meet, at risk `oom_risk`, is the smallest k with
  P(any draw > k) <= oom_risk / 2 (`LabelDensity.labels_per_image`);
- a batch's total is the b-fold convolution, and the largest total at risk oom_risk / 2 over the
  run's batches is taken the same way.

`LabelDensity.batch_counts(b)` then gives the synthetic batch the step is measured on: one image
at the largest count and the rest sharing the largest total. The chance that any batch of the run
needs more than the plan is at most `oom_risk` (a union bound over the two). Nothing here imports
torch or Ultralytics; the randomness is seeded, so a plan repeats exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from visionbatch.dataset import ImageLabels

DEFAULT_OOM_RISK = 1e-3  # the chance that any batch of the run carries more labels than the plan
GEOMETRIES = 512  # mosaic layouts the distribution averages over (quasi-random, fixed)
MAX_MODEL_IMAGES = 2000  # images modelled: the densest are always kept, the rest sampled
KEPT_DENSEST = 200
WH_THRESHOLD = 2.0  # RandomPerspective.box_candidates' defaults
ASPECT_THRESHOLD = 100.0
SEED = 0


@dataclass(frozen=True, slots=True)
class LabelDensity:
    """The label counts a run's batches carry, and the batch the step is measured on.

    Attributes:
        mosaic_pmf: P(an image carries k labels) for k = 0, 1, ... while mosaic is on (empty when
            mosaic never runs).
        plain_pmf: the same once mosaic is off (after close_mosaic, or all run without mosaic).
        mosaic_draws, plain_draws: images the run draws in each phase (epochs x images).
        oom_risk: the chance, at most, that any batch needs more than the plan.
        labels_per_image: the largest per-image count the plan covers (the batch's padding).
        forced: True when `labels_per_image=` forced a count for every image instead.
        mixing: the augmentations that add labels modelled in the mosaic phase ('mixup', 'cutmix',
            'copy-paste'), those the run's arguments turn on; Ultralytics stops them with mosaic.
    """

    mosaic_pmf: tuple[float, ...]
    plain_pmf: tuple[float, ...]
    mosaic_draws: int
    plain_draws: int
    oom_risk: float
    labels_per_image: int
    forced: bool = False
    mixing: tuple[str, ...] = ()

    @classmethod
    def fixed(cls, labels_per_image: int) -> LabelDensity:
        """Every image carries exactly `labels_per_image` labels (`labels_per_image=`)."""
        pmf = tuple(0.0 for _ in range(labels_per_image)) + (1.0,)
        return cls((), pmf, 0, 1, 0.0, labels_per_image, forced=True)

    @property
    def mean_per_image(self) -> float:
        """Mean labels per image over the run's draws."""
        total = self.mosaic_draws + self.plain_draws
        means = [_mean(p) * d for p, d in ((self.mosaic_pmf, self.mosaic_draws), (self.plain_pmf, self.plain_draws))
                 if d]
        return sum(means) / total if total else 0.0

    def batch_counts(self, batch_size: int) -> tuple[int, ...]:
        """Per-image label counts of the synthetic batch at `batch_size`: the run's worst batch at `oom_risk`.

        One image carries `labels_per_image` (the padding), and the others share the largest batch
        total, none above the first. A forced density puts `labels_per_image` in every image.
        """
        if self.forced:
            return (self.labels_per_image,) * batch_size
        total = max(self.batch_total(batch_size), self.labels_per_image)
        rest, cap = total - self.labels_per_image, self.labels_per_image
        others = [min(cap, rest // (batch_size - 1) + (i < rest % (batch_size - 1))) for i in range(batch_size - 1)] \
            if batch_size > 1 else []
        return (self.labels_per_image, *others)

    def batch_total(self, batch_size: int) -> int:
        """The largest labels-per-batch total the run meets at risk oom_risk / 2."""
        if self.forced:
            return self.labels_per_image * batch_size
        return _batch_total(self.mosaic_pmf, self.plain_pmf, self.mosaic_draws, self.plain_draws, batch_size,
                            self.oom_risk / 2)

    def batch_max_quantile(self, batch_size: int, quantile: float, phase: str = "mosaic") -> int:
        """The `quantile` of one batch's largest per-image count in a phase ('mosaic' or 'plain').

        Examples:
            >>> LabelDensity.fixed(5).batch_max_quantile(16, 0.99, "plain")
            5
        """
        pmf = self.mosaic_pmf if phase == "mosaic" else self.plain_pmf
        return _quantile_of_max(pmf, batch_size, quantile)

    def batch_total_quantile(self, batch_size: int, quantile: float, phase: str = "mosaic") -> int:
        """The `quantile` of one batch's total label count in a phase ('mosaic' or 'plain')."""
        pmf = self.mosaic_pmf if phase == "mosaic" else self.plain_pmf
        return _risk_quantile([(_power(pmf, batch_size), 1)], 1 - quantile)

    def augmentations(self) -> str:
        """The augmentations the run uses that the counts were modelled through, in words.

        Examples:
            >>> LabelDensity((0.5, 0.5), (1.0,), 10, 2, 0.1, 1, mixing=("mixup",)).augmentations()
            'mosaic, the affine crop and mixup'
            >>> LabelDensity((), (1.0,), 0, 12, 0.1, 0).augmentations()  # close_mosaic >= epochs, say
            'the affine crop alone (mosaic does not run in this run)'
        """
        if not self.mosaic_draws:  # mixing stops with mosaic, so none of it runs either
            return "the affine crop alone (mosaic does not run in this run)"
        *rest, last = ("mosaic", "the affine crop", *self.mixing)
        return f"{', '.join(rest)} and {last}"

    def describe(self) -> str:
        """One sentence for the plan: what the density is and what it covers.

        The padding is a quantile, not the largest count seen: the chance that any image the run
        draws carries more is at most half of oom_risk (the other half covers the batch's total).

        Examples:
            >>> LabelDensity((), (0.5, 0.5), 0, 16000, 0.1, 1).describe()
            "modelled from the dataset's labels through the affine crop alone (mosaic does not run in this run): 0.5 per image on average; the batch is padded to 1 labels: at most a 0.05 chance that any of the 16,000 images drawn carries more (half of oom_risk=0.1)"
        """
        if self.forced:
            return f"labels_per_image={self.labels_per_image} forced for every image"
        draws = self.mosaic_draws + self.plain_draws
        return (f"modelled from the dataset's labels through {self.augmentations()}: "
                f"{self.mean_per_image:.1f} per image on average; the batch is padded to {self.labels_per_image} "
                f"labels: at most a {self.oom_risk / 2:g} chance that any of the {draws:,} images drawn carries "
                f"more (half of oom_risk={self.oom_risk:g})")


def label_density(
    objects: Sequence[ImageLabels],
    args: Mapping[str, Any],
    dataset_images: int,
    segments: bool,
    oom_risk: float = DEFAULT_OOM_RISK,
) -> LabelDensity:
    """The run's label-count distribution from the training images' boxes and the train arguments.

    Args:
        objects: every training image's objects (`dataset.SplitSummary.objects`).
        args: the Ultralytics train arguments (imgsz, epochs, close_mosaic, mosaic, mixup,
            cutmix, copy_paste, scale, translate, rect).
        dataset_images: images per epoch (after `fraction`).
        segments: the labels are polygons (boxes then need 1% of their area kept, not 10%).
        oom_risk: the chance, at most, that any batch of the run needs more than the plan.

    Examples:
        >>> from array import array
        >>> from visionbatch.dataset import ImageLabels
        >>> one = ImageLabels(640, 640, array("f", [0.4, 0.4, 0.6, 0.6]))
        >>> density = label_density([one] * 8, {"epochs": 10, "close_mosaic": 2}, 8, False)
        >>> density.labels_per_image <= 4, density.batch_counts(4)[0] == density.labels_per_image
        (True, True)
    """
    import numpy as np

    imgsz = int(args.get("imgsz", 640))
    epochs = int(args.get("epochs", 100))
    mosaic = 0.0 if args.get("rect") else float(args.get("mosaic", 1.0))
    mosaic_epochs = max(epochs - int(args.get("close_mosaic", 10)), 0) if mosaic > 0 else 0
    model = _Model(objects, imgsz, float(args.get("scale", 0.5)), float(args.get("translate", 0.1)),
                   0.01 if segments else 0.10)
    plain = model.plain_pmf()
    extras = {"mixup": float(args.get("mixup", 0.0)), "cutmix": float(args.get("cutmix", 0.0)),
              "copy_paste": float(args.get("copy_paste", 0.0)) if segments else 0.0}
    mixing = tuple(name.replace("_", "-") for name, p in extras.items() if p > 0) if mosaic_epochs else ()
    mosaic_pmf = np.zeros(0)
    if mosaic_epochs:
        mosaic_pmf = _mix(mosaic * _pad(model.mosaic_pmf(), len(plain)) + (1 - mosaic) * _pad(plain, len(model.mosaic_pmf())),
                          **extras)
    mosaic_draws, plain_draws = mosaic_epochs * dataset_images, (epochs - mosaic_epochs) * dataset_images
    labels = _risk_quantile([(mosaic_pmf, mosaic_draws), (plain, plain_draws)], oom_risk / 2)
    return LabelDensity(tuple(float(p) for p in mosaic_pmf), tuple(float(p) for p in plain), mosaic_draws,
                        plain_draws, float(oom_risk), max(labels, 1), mixing=mixing)


# -- the geometry -------------------------------------------------------------------------------------


class _Model:
    """Every modelled image's boxes, in pixels of its resized shape, and each box's image."""

    def __init__(self, objects: Sequence[ImageLabels], imgsz: int, scale: float, translate: float,
                 area_threshold: float) -> None:
        import numpy as np

        chosen, weights = _sample(objects)
        self.s, self.scale, self.translate, self.area_threshold = imgsz, scale, translate, area_threshold
        sizes = np.array([(o.width, o.height) if o.width and o.height else (imgsz, imgsz) for o in chosen], float)
        ratio = imgsz / sizes.max(axis=1)
        self.wh = np.minimum(np.ceil(sizes * ratio[:, None]), imgsz)  # load_image: long side to imgsz
        counts = np.array([o.count for o in chosen], int)
        self.image = np.repeat(np.arange(len(chosen)), counts)
        boxes = np.frombuffer(b"".join(o.boxes.tobytes() for o in chosen), dtype=np.float32).reshape(-1, 4)
        self.boxes = boxes.astype(float) * np.tile(self.wh[self.image], 2)  # pixels, xyxy
        self.weights = weights
        self.max_count = int(counts.max()) if len(counts) else 0
        self.geometries = _halton(GEOMETRIES, 5)

    def _survivors(self, boxes: np.ndarray, scale: float, shift: np.ndarray, limit: float) -> np.ndarray:
        """Boxes kept after clipping to [0, limit], the affine (scale about the origin, then shift) and the crop."""
        import numpy as np

        boxes = np.clip(boxes, 0, limit)  # the canvas (or the image) clips first
        w1, h1 = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        alive = (w1 > 0) & (h1 > 0)
        moved = np.clip(boxes * scale + np.tile(shift, 2), 0, self.s)
        w2, h2 = moved[:, 2] - moved[:, 0], moved[:, 3] - moved[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
            area = w2 * h2 / (w1 * h1 * scale * scale + 1e-16)
        return alive & (w2 > WH_THRESHOLD) & (h2 > WH_THRESHOLD) & (area > self.area_threshold) & \
            (aspect < ASPECT_THRESHOLD)

    def _tile_pmf(self, kept: np.ndarray) -> np.ndarray:
        import numpy as np

        per_image = np.bincount(self.image[kept], minlength=len(self.weights))
        return np.bincount(per_image, weights=self.weights, minlength=self.max_count + 1)

    def _affine(self, u: Sequence[float]) -> tuple[float, np.ndarray]:
        import numpy as np

        scale = 1 - self.scale + 2 * self.scale * u[0]
        shift = (0.5 - self.translate + 2 * self.translate * np.array([u[1], u[2]])) * self.s
        return scale, shift

    def mosaic_pmf(self) -> np.ndarray:
        """P(k labels) for a mosaic image, averaged over the geometries."""
        import numpy as np

        s, out = self.s, np.zeros(4 * self.max_count + 1)
        wh = self.wh[self.image]
        # each tile's top-left corner on the canvas, relative to the centre (Mosaic._mosaic4's padw, padh):
        # top left, top right, bottom left, bottom right
        corners = [-wh, wh * (0, -1), wh * (-1, 0), wh * 0]
        for u in self.geometries:
            xc, yc = int(s / 2 + s * u[3]), int(s / 2 + s * u[4])  # int(uniform(s/2, 3s/2)), as Mosaic
            scale, shift = self._affine(u)
            pmf = np.ones(1)
            for corner in corners:
                boxes = self.boxes + np.tile(corner + (xc, yc), 2)
                # the canvas is 2s wide and the affine centres it: x -> scale (x - s) + shift
                kept = self._survivors(boxes, scale, shift - scale * s, 2 * s)
                pmf = np.convolve(pmf, self._tile_pmf(kept))
            out[: len(pmf)] += pmf
        return out / len(self.geometries)

    def plain_pmf(self) -> np.ndarray:
        """P(k labels) for an image without mosaic: its own affine crop."""
        import numpy as np

        out = np.zeros(self.max_count + 1)
        wh = self.wh[self.image]
        for u in self.geometries:
            scale, shift = self._affine(u)
            # the affine centres the image itself: x -> scale (x - w/2) + shift; the image needs no clip
            kept = self._survivors(self.boxes, scale, shift - scale * wh / 2, float(2 * self.s))
            out += self._tile_pmf(kept)
        return out / len(self.geometries)


def _sample(objects: Sequence[ImageLabels]) -> tuple[list[ImageLabels], Any]:
    """The images to model and each one's weight: all of them, or the densest plus a seeded sample."""
    import numpy as np

    if len(objects) <= MAX_MODEL_IMAGES:
        return list(objects), np.full(len(objects), 1.0 / max(len(objects), 1))
    order = sorted(range(len(objects)), key=lambda i: -objects[i].count)
    dense, rest = order[:KEPT_DENSEST], order[KEPT_DENSEST:]
    picked = np.random.default_rng(SEED).choice(len(rest), MAX_MODEL_IMAGES - KEPT_DENSEST, replace=False)
    chosen = [objects[i] for i in dense] + [objects[rest[i]] for i in sorted(picked)]
    weights = np.concatenate([np.full(len(dense), 1.0 / len(objects)),
                              np.full(len(picked), len(rest) / (len(objects) * len(picked)))])
    return chosen, weights


def _halton(n: int, dims: int) -> list[tuple[float, ...]]:
    """The first n points of the Halton sequence in `dims` dimensions (even cover, no randomness)."""
    primes = (2, 3, 5, 7, 11, 13)[:dims]

    def radical(i: int, base: int) -> float:
        value, f = 0.0, 1.0 / base
        while i:
            i, digit = divmod(i, base)
            value += digit * f
            f /= base
        return value

    return [tuple(radical(i + 1, b) for b in primes) for i in range(n)]


# -- the distribution maths ---------------------------------------------------------------------------


def _pad(pmf: Any, length: int) -> Any:
    import numpy as np

    return np.pad(pmf, (0, max(length - len(pmf), 0)))


def _mix(pmf: Any, mixup: float, cutmix: float, copy_paste: float) -> Any:
    """The count after CopyPaste (at most round(p x n) copies added), then MixUp and CutMix (a second image's labels)."""
    import numpy as np

    if copy_paste > 0:
        grown = np.zeros(len(pmf) + int(round(copy_paste * len(pmf))) + 1)
        for n, p in enumerate(pmf):
            grown[n + int(round(copy_paste * n))] += p
        pmf = grown
    for p in (mixup, cutmix):
        if p > 0:
            pmf = (1 - p) * _pad(pmf, 2 * len(pmf) - 1) + p * np.convolve(pmf, pmf)
    return np.trim_zeros(pmf, "b") if pmf.any() else pmf


def _mean(pmf: Sequence[float]) -> float:
    return sum(k * p for k, p in enumerate(pmf))


def _log_cdf(pmf: Any) -> Any:
    """log P(X <= k) for every k, accurate where the tail is tiny (from the summed tail, not 1 - cdf)."""
    import numpy as np

    pmf = np.clip(np.asarray(pmf, float), 0, None)
    pmf = pmf / pmf.sum()
    tail = np.concatenate([np.cumsum(pmf[::-1])[::-1][1:], [0.0]])  # P(X > k)
    with np.errstate(divide="ignore"):  # P(X <= k) = 0 below the support: log 0 = -inf
        return np.log1p(-np.minimum(tail, 1.0))


def _risk_quantile(phases: Sequence[tuple[Any, int]], risk: float) -> int:
    """The smallest k with P(any of the draws > k) <= risk, each phase's draws independent from its pmf."""
    import numpy as np

    length = max((len(p) for p, d in phases if d), default=1)
    total = np.zeros(length)
    for pmf, draws in phases:
        if draws and len(pmf):
            total += draws * _pad(_log_cdf(pmf), length)  # past its support a phase's log cdf is 0
    ok = np.nonzero(total >= math.log1p(-risk))[0]
    return int(ok[0]) if len(ok) else length - 1


@functools.lru_cache(maxsize=64)
def _batch_total(mosaic_pmf: tuple[float, ...], plain_pmf: tuple[float, ...], mosaic_draws: int, plain_draws: int,
                 batch_size: int, risk: float) -> int:
    """The largest batch total over the run at `risk`: the b-fold convolution of each phase's pmf."""
    phases = []
    for pmf, draws in ((mosaic_pmf, mosaic_draws), (plain_pmf, plain_draws)):
        if draws and pmf:
            phases.append((_power(pmf, batch_size), math.ceil(draws / batch_size)))
    return _risk_quantile(phases, risk)


def _power(pmf: Sequence[float], n: int) -> Any:
    """The n-fold convolution of a pmf, by FFT (exact to float rounding, negatives clipped)."""
    import numpy as np

    pmf = np.asarray(pmf, float)
    length = (len(pmf) - 1) * n + 1
    size = 1 << (length - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(pmf, size) ** n, size)[:length]
    return np.clip(out, 0, None)


def _quantile_of_max(pmf: Sequence[float], batch_size: int, quantile: float) -> int:
    """The smallest k with P(max of batch_size draws <= k) >= quantile."""
    return _risk_quantile([(pmf, batch_size)], 1 - quantile)
