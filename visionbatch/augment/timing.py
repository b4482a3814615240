"""Time every transform of a real Ultralytics dataset, without changing what it produces.

Each transform's `__call__` is wrapped where its container calls it: the slots of the chain's
`Compose` lists (Ultralytics' and Albumentations') hold a `Timed` proxy while profiling and the
original object again afterwards. The proxy reports the wrapped object's class (so
Albumentations' `isinstance` checks, e.g. when it propagates seeds, still hold) and forwards every
attribute. `load_image` and `get_image_and_label` are wrapped on the dataset instance.

Times are exclusive: a timer running inside another (Mosaic pulling three images through
`load_image`, MixUp running the whole Mosaic pre-transform again) is subtracted from its parent,
so each second is counted once and the rows of an image add up to its `__getitem__` time.

Two twin datasets, each on its own copy of the random states, from the same seed and an empty
Mosaic buffer, run the same indices image by image: one untimed, one timed. Their outputs are
compared bit for bit, and their times give the profiler's overhead. Repeated passes do the same
work again; each image keeps its fastest run, which filters out other processes' bursts.
"""

from __future__ import annotations

import contextlib
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from visionbatch.augment.report import COLLATE, LABELS, LOAD, OTHER

Clock = Callable[[], float]


class Recorder:
    """Exclusive seconds per row, per image.

    Examples:
        >>> ticks = iter([0.0, 1.0, 3.0, 10.0])  # outer starts, inner starts, inner ends, outer ends
        >>> recorder = Recorder(clock=lambda: next(ticks))
        >>> recorder.image(lambda: recorder.call("inner", lambda: None))
        >>> recorder.images, dict(recorder.calls)
        ([{'inner': 2.0, 'other': 8.0}], {'inner': 1, 'other': 1})
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.images: list[dict[str, float]] = []
        self.calls: Counter[str] = Counter()
        self._children: list[float] = []  # seconds spent in nested timers, per open timer
        self._current: dict[str, float] | None = None

    def call(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn` and charge its time, minus nested timers, to `key`."""
        self._children.append(0.0)
        start = self.clock()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = self.clock() - start
            nested = self._children.pop()
            if self._current is not None:
                self._current[key] = self._current.get(key, 0.0) + elapsed - nested
                self.calls[key] += 1
            if self._children:
                self._children[-1] += elapsed

    def image(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Time one `__getitem__`: its own time goes to `other`, the rest to the rows inside it."""
        self._current = {}
        try:
            return self.call(OTHER, fn, *args)
        finally:
            self.images.append(self._current)
            self._current = None

    def add(self, key: str, seconds: float, images: int) -> None:
        """Charge `seconds` measured outside `image()` (a collated batch) evenly to the last `images` images."""
        for record in self.images[-images:]:
            record[key] = record.get(key, 0.0) + seconds / images
        self.calls[key] += 1


class Timed:
    """Stands in for a transform in its container; calls go through the recorder."""

    __slots__ = ("_wrapped", "_key", "_recorder")

    def __init__(self, wrapped: Any, key: str, recorder: Recorder) -> None:
        object.__setattr__(self, "_wrapped", wrapped)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_recorder", recorder)

    @property  # isinstance() consults __class__: Albumentations only seeds instances of its own classes
    def __class__(self) -> type:  # type: ignore[override]
        return type(self._wrapped)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._recorder.call(self._key, self._wrapped, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._wrapped, name, value)

    def __repr__(self) -> str:
        return repr(self._wrapped)


def transform_name(transform: Any) -> str:
    """The row name of a transform: its class, with the direction for flips.

    Examples:
        >>> class RandomFlip:
        ...     direction = "horizontal"
        >>> transform_name(RandomFlip()), transform_name(object())
        ('RandomFlip(horizontal)', 'object')
    """
    name = type(transform).__name__
    if name == "RandomFlip" and hasattr(transform, "direction"):
        return f"{name}({transform.direction})"
    return name


@dataclass
class _Patches:
    undo: list[Callable[[], None]] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


@contextlib.contextmanager
def instrument(dataset: Any, recorder: Recorder) -> Iterator[None]:
    """Time `dataset`'s image loading, label copying and every transform of its chain; undo on exit."""
    patches = _Patches()
    try:
        for method, key in (("load_image", LOAD), ("get_image_and_label", LABELS)):
            _wrap_method(patches, dataset, method, key, recorder)
        _walk(patches, dataset.transforms, recorder, prefix="")
        yield
    finally:
        patches.restore()


def _wrap_method(patches: _Patches, owner: Any, name: str, key: str, recorder: Recorder) -> None:
    bound = getattr(owner, name)
    own = name in vars(owner)

    def timed(*args: Any, **kwargs: Any) -> Any:
        return recorder.call(key, bound, *args, **kwargs)

    setattr(owner, name, timed)
    patches.undo.append(lambda: setattr(owner, name, bound) if own else delattr(owner, name))


def _walk(patches: _Patches, obj: Any, recorder: Recorder, prefix: str) -> None:
    """Wrap every element of every composition reachable from `obj` (each container slot once)."""
    from ultralytics.data.augment import Albumentations, BaseMixTransform, Compose

    if id(obj) in patches.seen:
        return
    patches.seen.add(id(obj))
    if isinstance(obj, Compose) or _is_albumentations_composition(obj):
        items = obj.transforms
        for index, item in enumerate(list(items)):
            _walk(patches, item, recorder, prefix)
            if isinstance(item, Compose):  # Ultralytics' nested Compose: only a loop, its time stays 'other'
                continue
            items[index] = Timed(item, prefix + transform_name(item), recorder)
            patches.undo.append(lambda items=items, index=index, item=item: items.__setitem__(index, item))
    elif isinstance(obj, BaseMixTransform) and obj.pre_transform is not None:
        pre = obj.pre_transform
        _walk(patches, pre, recorder, prefix)  # a Compose shared with the main chain: its slots are timed
        if not isinstance(pre, Compose):
            obj.pre_transform = Timed(pre, prefix + transform_name(pre), recorder)
            patches.undo.append(lambda: setattr(obj, "pre_transform", pre))
    elif isinstance(obj, Albumentations) and obj.transform is not None:
        _walk(patches, obj.transform, recorder, prefix="Albumentations: ")


def _is_albumentations_composition(obj: Any) -> bool:
    try:
        from albumentations.core.composition import BaseCompose
    except ImportError:
        return False
    return isinstance(obj, BaseCompose)


def albumentations_composes(chain: Any) -> list[Any]:
    """The Albumentations `Compose` objects inside an Ultralytics chain."""
    from ultralytics.data.augment import Albumentations, Compose

    found = []
    for item in chain.transforms if isinstance(chain, Compose) else [chain]:
        if isinstance(item, Compose):
            found += albumentations_composes(item)
        elif isinstance(item, Albumentations) and item.transform is not None:
            found.append(item.transform)
    return found


@contextlib.contextmanager
def rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's CPU random states on exit (the caller owns them)."""
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.default_generator.set_state(states[2])


def reset(dataset: Any, seed: int) -> None:
    """Seed every generator the chain draws from and empty the Mosaic buffer, as at an epoch's start.

    Albumentations keeps its own generators and re-seeds them from torch only when torch's seed
    changed, so a second pass from the same seed would continue its stream: seed it directly.
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    for compose in albumentations_composes(dataset.transforms):
        if hasattr(compose, "set_random_seed"):
            compose.set_random_seed(seed)
    if dataset.cache != "ram":  # RAM-cached images are the cache itself, not the buffer's leftovers
        dataset.buffer.clear()
        for index in range(len(dataset.ims)):
            dataset.ims[index] = dataset.im_hw0[index] = dataset.im_hw[index] = None


def fingerprint(sample: dict) -> int:
    """CRC32 of the tensors a sample carries (image, boxes, classes, masks): equal samples, equal numbers."""
    crc = 0
    for key in ("img", "bboxes", "cls", "masks", "batch_idx"):
        value = sample.get(key)
        if value is not None:
            crc = zlib.crc32(value.contiguous().numpy().tobytes(), crc)
    return crc


@dataclass
class PassResult:
    """Raw numbers of one phase: per-image exclusive seconds, calls, untimed seconds, outputs kept."""

    images: list[dict[str, float]]
    calls: Counter
    unprofiled_s: list[float]
    identical: bool
    kept: list[dict]


def profile_pass(datasets: tuple[Any, Any], indices: Sequence[int], batch_size: int, seed: int, keep: int = 0,
                 repeats: int = 1, clock: Clock = time.perf_counter) -> PassResult:
    """Time `dataset[i]` for `indices` untimed on one dataset and timed on its twin, image by image.

    `datasets` are two datasets built identically. Each runs on its own copy of the global random
    states (swapped in and out around each image), from the same seed and an empty Mosaic buffer,
    so both see the same images, draws and buffer; interleaving them image by image (alternating
    which goes first) makes warm caches favour neither. Collation is timed on the timed outputs in
    batches of `batch_size` and charged to their images.

    With `repeats` > 1 the whole interleaved pass runs again from the same seed (the same work) and
    each image keeps its fastest timed and fastest untimed run: other processes' bursts only ever add
    time, so the minimum is the cost of the work itself.

    The first `keep` timed outputs are returned (for a real step on a real batch). Everything runs
    on one torch thread, as in a DataLoader worker (torch sets 1 there).
    """
    with worker_threads():
        runs = [_passes(datasets, indices, batch_size, seed, keep if not r else 0, clock) for r in range(repeats)]
    images, untimed = [], []
    for position in range(len(indices)):
        fastest = min(runs, key=lambda run: sum(run.images[position].values()))
        images.append(fastest.images[position])
        untimed.append(min(run.unprofiled_s[position] for run in runs))
    return PassResult(images, runs[0].calls, untimed, all(run.identical for run in runs), runs[0].kept)


@contextlib.contextmanager
def worker_threads() -> Iterator[None]:
    """torch on one thread, as in a DataLoader worker; restored on exit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Streams:
    """Separate copies of the global random states for two datasets, swapped in around each call."""

    def __init__(self, datasets: Sequence[Any], seed: int) -> None:
        self.states = []
        for dataset in datasets:
            reset(dataset, seed)
            self.states.append(_capture())

    @contextlib.contextmanager
    def on(self, which: int) -> Iterator[None]:
        _restore(self.states[which])
        try:
            yield
        finally:
            self.states[which] = _capture()


def _capture() -> tuple:
    import numpy as np
    import torch

    return random.getstate(), np.random.get_state(), torch.default_generator.get_state()


def _restore(states: tuple) -> None:
    import numpy as np
    import torch

    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.default_generator.set_state(states[2])


def _passes(datasets: tuple[Any, Any], indices: Sequence[int], batch_size: int, seed: int, keep: int,
            clock: Clock) -> PassResult:
    plain, timed = datasets
    for dataset in datasets:  # first calls pay imports and allocator growth
        reset(dataset, seed)
        for index in indices[: min(4, len(indices))]:
            dataset[index]
    streams = _Streams(datasets, seed)
    recorder = Recorder(clock)
    untimed, kept, chunk, references, same = [], [], [], [], True
    collate = getattr(timed, "collate_fn", None)
    with instrument(timed, recorder):
        for position, index in enumerate(indices):
            for which in (0, 1) if position % 2 == 0 else (1, 0):  # alternate who runs first: no order bias
                with streams.on(which):
                    if which == 0:
                        start = clock()
                        reference = plain[index]
                        untimed.append(clock() - start)
                    else:
                        sample = recorder.image(timed.__getitem__, index)
            same = same and fingerprint(sample) == fingerprint(reference)
            if len(kept) < keep:  # collate_fn adds offsets to batch_idx in place: keep a copy
                kept.append({**sample, "batch_idx": sample["batch_idx"].clone()} if "batch_idx" in sample else sample)
            # both outputs live equally long: memory one side frees would otherwise be warm for the other
            chunk.append(sample)
            references.append(reference)
            del sample, reference
            if len(chunk) == batch_size or position == len(indices) - 1:
                if collate is not None:
                    start = clock()
                    collate(chunk)
                    recorder.add(COLLATE, clock() - start, len(chunk))
                chunk, references = [], []
    return PassResult(recorder.images, recorder.calls, untimed, same, kept)
