"""Read and check a YOLO data.yaml before anything trains on it.

Paths resolve the way Ultralytics resolves them (`ultralytics/data/utils.py:check_det_dataset`),
with three exceptions: `~` is expanded; Ultralytics' fallback for a `../` entry that does not exist
applies to list entries too; and a relative `path:` that does not exist from the working directory
but does exist beside the YAML is taken from beside the YAML, where Ultralytics would look in its
global `datasets_dir` and fail. Ultralytics never sees the user's YAML
either way: it gets a mirror of exactly what was checked here (staging.py).

Every problem becomes a `DatasetError` naming the file (and line) and the fix. Nothing here
writes to the dataset: Ultralytics rewrites truncated JPEGs in place, so those are refused
instead.

Two things Ultralytics refuses or hides are handled here. Class ids that do not run 0..N-1 (COCO's own
ids, 1..90 with gaps, as some exporters write them) are refused with the fix, `remap_classes=True`,
which renumbers them in the order of `names:` (`DatasetSummary.class_ids`; staging.py writes the
renumbered labels into its mirror, never beside the user's). And a split reached through a symbolic
link is resolved, as Ultralytics resolves it, so its labels are read beside the link's target: the
messages about those labels and images say so (`_link_note`), since the file they name may belong to
another dataset.

This module needs no Ultralytics import: it runs before the offline set-up, and in tests.
"""

from __future__ import annotations

import array
import errno
import math
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from visionbatch.console import err
from visionbatch.errors import DatasetError
from visionbatch.safeyaml import load_yaml

# Ultralytics' IMG_FORMATS (data/utils.py), kept here so this module does not import it.
IMAGE_SUFFIXES = frozenset(
    {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpeg2000", "jpg", "mpo", "png", "tif", "tiff", "webp"}
)
SPLITS = ("train", "val", "test")  # the splits a run may validate on (split=)
COORD_TOLERANCE = 0.01  # Ultralytics accepts coordinates up to 1.01 and down to -0.01
MAX_LISTED = 3  # problems named in one error line before "and N more"
# Ultralytics' validation holds an (nc + 1)^2 float64 confusion matrix: 20,000 classes is 3.2 GB of it. The largest
# public detection datasets (V3Det, 13,204 classes) fit; 'nc: 1e12' cannot build a 10^12-entry table.
MAX_CLASSES = 20_000
MAX_POLYGON_POINTS = 100_000  # vertices in one polygon label
MAX_CHANNELS = 16  # image channels a YOLO model takes (3 colour, 1 grayscale, a few more for multispectral)
MAX_SCANNED_ENTRIES = 20_000_000  # files and folders walked under one split: past this it is not a dataset folder
MAX_LIST_BYTES = 1 << 30  # a .txt image list of ~10 million paths
REMAP_KEY = "remap_classes"  # the key that trains on renumbered copies of labels whose ids do not run 0..N-1
# The data.yaml keys Ultralytics 8.4 reads (check_det_dataset, the dataset classes and trainers, and the keys of its
# shipped cfg/datasets/*.yaml), plus 'validation', which both read as 'val'. Any other key is reported as ignored.
ULTRALYTICS_DATA_KEYS = frozenset({
    "path", "train", "val", "validation", "test", "minival", "names", "nc", "download", "yaml_file", "channels",
    "kpt_shape", "flip_idx", "kpt_names", "kpt_oks_sigmas", "masks_dir", "label_mapping", "bg_class_idx",
    "depth_scale", "max_depth", "map",
})
_WARNED: set[tuple[str, tuple[str, ...]]] = set()  # (data.yaml, its ignored keys) already named in this process


@dataclass(frozen=True, slots=True, eq=False)
class ImageLabels:
    """One image's objects, as augmentation moves them: the image's size and each object's box.

    Attributes:
        width, height: the image in pixels (0 when its header was not read).
        boxes: normalised x1, y1, x2, y2 per object, flat (a polygon's bounding box for polygons).
    """

    width: int
    height: int
    boxes: array.array

    @property
    def count(self) -> int:
        return len(self.boxes) // 4


@dataclass(frozen=True, slots=True)
class SplitSummary:
    """What one split (train or val) holds.

    Attributes:
        sources: the image folders or list files named in data.yaml, resolved.
        images: number of images found.
        labelled: images with a non-empty label file.
        instances: labelled objects in total.
        max_instances: the most objects in one image (the worst label density).
        max_instances_file: the label file holding that many.
        polygons: objects labelled with a polygon rather than a box.
        max_polygon_points: the most vertices in one polygon.
        max_width: widest image in pixels.
        max_height: tallest image in pixels.
        image_folders: the folders the images are in.
        files: every image, as Ultralytics lists them (sorted, a list's repeats kept).
        objects: every image's objects (`ImageLabels`), in `files` order: the label-count
            distribution that `ultralytics.density` models augmentation on.
    """

    sources: tuple[str, ...]
    images: int
    labelled: int
    instances: int
    max_instances: int
    max_instances_file: str
    polygons: int
    max_polygon_points: int
    max_width: int
    max_height: int
    image_folders: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=(), repr=False)
    objects: tuple[ImageLabels, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """A checked data.yaml: classes, splits and label statistics.

    Attributes:
        yaml_path: the data.yaml, absolute.
        root: the dataset root that train/val resolve against.
        names: class names by id, contiguous from 0.
        train: the training split.
        val: the validation split.
        root_from_yaml: True when a relative `path:` only resolved beside the YAML (see module doc).
        raw: the YAML's own mapping, unchanged.
        test: the test split, checked only when a run validates on it (`split=test`).
        class_ids: with `remap_classes=True` and ids that do not run 0..N-1, the data.yaml's own id of each
            class in training-id order (class_ids[0] trains as 0); empty when the labels' ids train as they are.
    """

    yaml_path: str
    root: str
    names: dict[int, str]
    train: SplitSummary
    val: SplitSummary
    root_from_yaml: bool = False
    raw: dict = field(default_factory=dict, repr=False)
    test: SplitSummary | None = None
    class_ids: tuple[int, ...] = ()

    @property
    def remapped(self) -> bool:
        """The labels' class ids are renumbered for training (`class_ids`)."""
        return bool(self.class_ids)

    def class_map(self) -> dict[int, int]:
        """The data.yaml's class id -> the id Ultralytics trains on (the identity when nothing is remapped)."""
        return _training_ids(self.names, self.class_ids)

    @property
    def ignored_keys(self) -> tuple[str, ...]:
        """data.yaml keys that neither Ultralytics nor visionbatch reads (an exporter's `format:`, ...)."""
        return tuple(str(k) for k in self.raw if k not in ULTRALYTICS_DATA_KEYS)

    def splits(self) -> dict[str, SplitSummary]:
        """The checked splits by key: train, val, and test when it was checked."""
        found = {"train": self.train, "val": self.val}
        if self.test is not None:
            found["test"] = self.test
        return found

    @property
    def notes(self) -> tuple[str, ...]:
        """What the user should know about how the YAML was read."""
        notes = []
        if "download" in self.raw:
            notes.append("data.yaml's download: is ignored (visionbatch never downloads or runs it); "
                         "every split was found on disk")
        if self.root_from_yaml:
            notes.append(f"path: {self.raw.get('path')} resolved beside the YAML ({self.root})")
        if self.remapped:
            pairs = [f"{old}->{new} {self.names[new]}" for old, new in self.class_map().items()]
            mapping = (f" ({', '.join(pairs)})" if len(pairs) <= MAX_REMAP_LISTED else
                       f" (the first: {', '.join(pairs[:MAX_REMAP_LISTED])}, ...)")
            notes.append(f"{REMAP_KEY}=True: class ids {_id_range(self.class_ids)} train as 0..{self.nc - 1}, in the "
                         f"order of names{mapping}: renumbered copies of the labels in visionbatch's cache; your files "
                         f"are not changed")
        return tuple(notes)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def segmentable(self) -> bool:
        """Every labelled training object has a polygon, so segmentation can train."""
        return self.train.instances > 0 and self.train.polygons == self.train.instances

    def describe(self) -> str:
        """One line for logs: images, classes, labels."""
        kind = "polygons" if self.segmentable else "boxes"
        return (
            f"{self.train.images} train / {self.val.images} val images, {self.nc} classes, "
            f"{self.train.instances} {kind} (up to {self.train.max_instances} per image)"
        )


def load_dataset(data: str | os.PathLike, check_images: bool = True, split: str = "val",
                 remap_classes: bool = False) -> DatasetSummary:
    """Read, resolve and check a data.yaml with its images and labels.

    Keys of the data.yaml that Ultralytics does not read are named once, on stderr, as ignored.

    Args:
        data: path to the data.yaml.
        check_images: open every image header (PIL verify); off only where speed matters more.
        split: the split validation runs on (Ultralytics' `split=`): 'val', or 'test' to check `test:` too.
        remap_classes: accept class ids that do not run 0..N-1 (COCO's 1..90 with gaps) and train them as
            0..N-1 in the order of `names:` (`DatasetSummary.class_ids`); labels are checked against those ids.

    Returns:
        The checked summary.

    Raises:
        DatasetError: naming the file, the problem and the fix.

    Examples:
        >>> summary = load_dataset("datasets/shapes/data.yaml")
        >>> summary.nc, summary.segmentable
        (5, True)
    """
    yaml_path = Path(data).expanduser()
    raw = _read_yaml(yaml_path)
    names, class_ids = _class_names(raw, yaml_path, remap_classes)
    _check_channels(raw, yaml_path)
    root, root_from_yaml = _dataset_root(raw, yaml_path)
    if split not in SPLITS:
        raise DatasetError(f"split={split}: validation runs on one of {', '.join(SPLITS)}: use split=val "
                           f"(or split=test with a test: key in {yaml_path.name})")
    if not raw.get(split):
        raise DatasetError(f"split={split} but {yaml_path} has no '{split}:' key: add '{split}: images/{split}' "
                           f"or validate on split=val")
    ids = _training_ids(names, class_ids)
    splits = {}
    for key in ("train", "val", *((split,) if split == "test" else ())):
        sources = _split_sources(raw, key, root, yaml_path)
        images = _image_files(sources, key, yaml_path)
        note = _link_note(_links_to(raw, key, root, yaml_path))
        splits[key] = _scan_split(sources, images, ids, key, yaml_path, check_images, note)
    summary = DatasetSummary(
        yaml_path=str(yaml_path.resolve()),
        root=str(root),
        names=names,
        train=splits["train"],
        val=splits["val"],
        root_from_yaml=root_from_yaml,
        raw=raw,
        test=splits.get("test"),
        class_ids=class_ids,
    )
    _warn_ignored(summary)
    return summary


def _warn_ignored(summary: DatasetSummary) -> None:
    """Name the data.yaml keys Ultralytics does not read, in one line, once per process (train with augcost=True
    reads the dataset twice) and on one DDP rank."""
    seen = (summary.yaml_path, summary.ignored_keys)
    if not summary.ignored_keys or seen in _WARNED or os.environ.get("RANK", "0") not in {"0", "-1"}:
        return
    _WARNED.add(seen)
    err(f"visionbatch: warning: {summary.yaml_path}: {', '.join(summary.ignored_keys)} ignored (keys Ultralytics "
        f"does not read)")


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise DatasetError(f"data={path} is a folder: pass the dataset's YAML file, e.g. data={path / 'data.yaml'}")
    if path.exists() and not path.is_file():
        raise DatasetError(f"data={path} is not a regular file (a FIFO, device or socket?): pass the dataset's "
                           f"YAML file")
    if not path.is_file():
        hint = " (YAML files end in .yaml or .yml)" if path.suffix not in {".yaml", ".yml"} else ""
        raise DatasetError(f"data={path}: no such file{hint}: pass the path to your dataset's data.yaml")
    raw = load_yaml(path, DatasetError)
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{path}: expected a mapping with train:, val: and names: keys, found {type(raw).__name__}: "
            "see datasets/shapes/data.yaml for the layout"
        )
    for key in ("train", "val"):
        if not raw.get(key):
            alias = " ('validation:' is accepted too)" if key == "val" else ""
            if key == "val" and raw.get("validation"):
                raw["val"] = raw.pop("validation")
                continue
            raise DatasetError(
                f"{path}: missing '{key}:' key{alias}: add '{key}: images/{key}' (a folder or a .txt list of images)"
            )
    for key in ("path", "train", "val", "test"):
        value = raw.get(key)
        entries = value if isinstance(value, list) and key != "path" else [value]
        if value is not None and not all(isinstance(v, str) and v for v in entries):
            shown = str(value)[:80]
            raise DatasetError(f"{path}: '{key}: {shown}' must be a path or a list of paths")
    return raw


def _check_channels(raw: dict, path: Path) -> None:
    channels = raw.get("channels", 3)
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise DatasetError(f"{path}: 'channels: {str(channels)[:40]}' must be a whole number from 1 to {MAX_CHANNELS}: "
                           f"3 for colour images, 1 for grayscale, or remove the key")


def _class_names(raw: dict, path: Path, remap: bool = False) -> tuple[dict[int, str], tuple[int, ...]]:
    """(names by training id 0..N-1, the data.yaml's ids in that order when `remap` renumbered them, else ())."""
    names, nc = raw.get("names"), raw.get("nc")
    if names is None:
        if nc is None:
            raise DatasetError(f"{path}: missing 'names:' key: list the classes, e.g. 'names: [cat, dog]'")
        if isinstance(nc, bool) or not isinstance(nc, int) or not 1 <= nc <= MAX_CLASSES:
            raise DatasetError(f"{path}: 'nc: {str(nc)[:40]}' must be a whole number from 1 to {MAX_CLASSES}: "
                               f"set it to the number of classes")
        return {i: f"class_{i}" for i in range(nc)}, ()
    if isinstance(names, list):
        mapping = dict(enumerate(names))
    elif isinstance(names, dict):
        mapping = {}
        for key, value in names.items():
            try:
                if isinstance(key, (bool, float)):
                    raise TypeError
                index = int(key)
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{path}: class id '{key}' in names is not an integer: use 'names: {{0: {value}, ...}}'"
                ) from None
            mapping[index] = value
        ids = sorted(mapping)
        if ids and ids != list(range(len(ids))) and not remap:
            raise DatasetError(_gapped_ids_message(path, ids))
    else:
        raise DatasetError(f"{path}: 'names:' must be a list or a mapping of id: name, not {type(names).__name__}")
    if not mapping:
        raise DatasetError(f"{path}: 'names:' is empty: list at least one class")
    if len(mapping) > MAX_CLASSES:
        raise DatasetError(f"{path}: names lists {len(mapping)} classes, more than {MAX_CLASSES} (Ultralytics' "
                           f"validation would need a {len(mapping)}^2 confusion matrix): merge classes")
    for index, name in mapping.items():
        if isinstance(name, bool) or not isinstance(name, (str, int, float)):
            raise DatasetError(f"{path}: class {index} in names is a {type(name).__name__}, not a name: "
                               f"give each class a plain name, e.g. 'names: {{{index}: cat}}'")
        if isinstance(name, str) and any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in name):
            shown = name.encode("unicode_escape").decode()[:40]
            raise DatasetError(f"{path}: class {index}'s name '{shown}' has a control character (a line break?), "
                               f"which breaks plots and label files: use a plain name")
    if nc is not None and nc != len(mapping):
        raise DatasetError(f"{path}: 'nc: {nc}' but names lists {len(mapping)} classes: remove nc or make them agree")
    ids = sorted(mapping)
    if ids == list(range(len(ids))):
        return {i: str(mapping[i]) for i in ids}, ()
    return {new: str(mapping[old]) for new, old in enumerate(ids)}, tuple(ids)


def _training_ids(names: Mapping[int, str], class_ids: Sequence[int]) -> dict[int, int]:
    """Each class id the labels may hold -> the id it trains as (the identity when `class_ids` is empty)."""
    return {old: new for new, old in enumerate(class_ids)} if class_ids else {i: i for i in names}


MAX_REMAP_LISTED = 12  # ids a remap note spells out one by one (COCO's 80 get the first dozen)


def _gapped_ids_message(path: Path, ids: Sequence[int]) -> str:
    """Class ids that do not run 0..N-1 (COCO's 1..90 with gaps): the refusal, naming the key that fixes it."""
    count, low, high = len(ids), ids[0], ids[-1]
    span = f"{low}..{high}" + (" with gaps" if high - low + 1 != count else "")
    if low < 0:
        where = f"negative id {low}"
    else:
        present = set(ids)
        missing = [i for i in range(count) if i not in present][: MAX_LISTED + 1]  # never range(max id)
        where = f"missing {_short(missing)}"
    return (f"{path}: names: class ids {span} ({count} classes, {where}); Ultralytics needs 0..{count - 1} without "
            f"gaps: add {REMAP_KEY}=True to train on remapped copies (your files are not changed)")


def _dataset_root(raw: dict, path: Path) -> tuple[Path, bool]:
    declared = raw.get("path")
    if not declared:
        return path.resolve().parent, False
    root = Path(declared).expanduser()
    if root.is_absolute() or root.exists():
        return root.resolve(), False
    beside = (path.resolve().parent / root).resolve()
    if beside.exists():
        return beside, True  # Ultralytics would try <datasets_dir>/<path> here
    raise DatasetError(
        f"{path}: 'path: {declared}' does not exist (not from the working directory {Path.cwd()}, "
        f"nor beside the YAML): set path: to the dataset's folder, or remove it to resolve against the YAML's folder"
    )


def _split_sources(raw: dict, key: str, root: Path, path: Path) -> list[Path]:
    entries = raw[key] if isinstance(raw[key], list) else [raw[key]]
    sources = []
    for entry in entries:
        source = (root / str(entry)).resolve()
        if not source.exists() and str(entry).startswith("../"):
            source = (root / str(entry)[3:]).resolve()  # Ultralytics' fallback for '../' entries
        if not source.exists():
            raise DatasetError(
                f"{path}: '{key}: {entry}' not found (looked for {source}): "
                f"fix the path, relative to {root}"
            )
        sources.append(source)
    return sources


def _image_files(sources: Sequence[Path], key: str, path: Path) -> list[str]:
    images = sorted(f for source in sources for f in _source_images(source))
    if not images:
        names = ", ".join(str(s) for s in sources)
        raise DatasetError(
            f"{path}: '{key}:' holds no images ({names}): put .jpg/.png files there, "
            f"with YOLO labels in the matching labels/ folder"
        )
    return images


def _source_images(source: Path) -> list[str]:
    """The image files one `train:`/`val:` entry names (a folder, searched recursively, or a .txt list), in the
    order Ultralytics lists them before sorting (`BaseDataset.get_img_files`); a list keeps its repeats.

    A folder is walked as `glob('**/*.*')` walks it (following links to folders, skipping hidden
    names), except that a link to a folder containing it is refused instead of followed forever.

    Raises:
        DatasetError: a link loop, a folder too large to be a dataset, or an unreadable list file.
    """
    if source.is_dir():
        files = _files_under(str(source))
    else:
        try:
            if not source.is_file():
                raise DatasetError(f"{source}: not a regular file (a FIFO, device or socket?): "
                                   f"name a folder of images or a .txt list of image paths")
            if source.stat().st_size > MAX_LIST_BYTES:
                raise DatasetError(f"{source}: {source.stat().st_size / 2**20:.0f} MiB is too large for an image "
                                   f"list (limit {MAX_LIST_BYTES // 2**20} MiB): split the dataset")
            lines = source.read_text(encoding="utf-8-sig").strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{source}: cannot read the image list ({exc})") from None
        parent = str(source.parent) + os.sep
        files = [line.replace("./", parent, 1) if line.startswith("./") else line for line in lines]
    return [f for f in files if f.rpartition(".")[-1].lower() in IMAGE_SUFFIXES]


def _files_under(folder: str) -> list[str]:
    """Files with a dot in their name under `folder`, recursively, like glob's '**/*.*' (see _source_images)."""
    found: list[str] = []
    scanned = 0
    stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [(folder, (_node(folder),))]
    while stack:
        path, chain = stack.pop()
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError:
            continue  # unreadable: glob skips it too
        scanned += len(entries)
        if scanned > MAX_SCANNED_ENTRIES:
            raise DatasetError(f"{folder}: more than {MAX_SCANNED_ENTRIES:,} files and folders below it (a link to "
                               f"a system folder?): point train:/val: at the dataset's image folders")
        for entry in entries:
            if entry.name.startswith("."):
                continue  # glob's '*' skips hidden names
            try:
                if entry.is_dir():  # follows links, as glob does
                    node = _node(entry.path)
                    if node in chain:
                        raise DatasetError(f"{entry.path} is a link to a folder that contains it (a loop): remove "
                                           f"the link, or link to the images themselves")
                    stack.append((entry.path, chain + (node,)))
                elif "." in entry.name:
                    found.append(entry.path)
            except OSError:  # links that loop (ELOOP), or an entry that cannot be read: glob lists the name
                if "." in entry.name:
                    found.append(entry.path)  # and the image check names the problem in one line
                continue
    return found


def _node(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def label_path(image: str) -> str:
    """The label file Ultralytics pairs with an image (`img2label_paths`): last /images/ -> /labels/."""
    images_dir, labels_dir = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return labels_dir.join(image.rsplit(images_dir, 1)).rsplit(".", 1)[0] + ".txt"


@dataclass(slots=True)
class _LabelStats:
    instances: int = 0
    polygons: int = 0
    max_points: int = 0
    problem: str = ""
    boxes: array.array = field(default_factory=lambda: array.array("f"))  # x1 y1 x2 y2 per object


def _parse_label_file(file: str, ids: Mapping[int, int], note: str = "") -> _LabelStats:
    """Check one label file the way Ultralytics' verify_image_label does, with line numbers.

    `ids` maps each class id the labels may hold to its training id; `note` ends every problem (`_link_note`).
    """
    stats = _parse_labels(file, ids)
    if stats.problem:
        stats.problem += note
    return stats


def _parse_labels(file: str, ids: Mapping[int, int]) -> _LabelStats:
    stats = _LabelStats()
    try:
        text = Path(file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        stats.problem = f"{file}: cannot be read ({exc.__class__.__name__}): fix or remove it"
        return stats
    kinds = set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{file} line {number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            stats.problem = f"{where}: '{line.strip()[:60]}' is not numbers: expected 'class x y w h' or 'class x1 y1 x2 y2 ...'"
            return stats
        if not all(math.isfinite(v) for v in values):
            stats.problem = f"{where}: holds nan or inf: every value must be a number (Ultralytics drops such images)"
            return stats
        if len(values) > 2 * MAX_POLYGON_POINTS + 1:
            stats.problem = (f"{where}: a polygon of {(len(values) - 1) // 2:,} points, more than {MAX_POLYGON_POINTS:,} "
                             f"(Ultralytics resamples masks to 1,000): simplify it")
            return stats
        if len(values) == 5:
            kinds.add("box")
        elif len(values) >= 7 and len(values) % 2 == 1:
            kinds.add("polygon")
            stats.polygons += 1
            stats.max_points = max(stats.max_points, (len(values) - 1) // 2)
        else:
            stats.problem = (
                f"{where}: {len(values)} columns: expected 5 (class x y w h) "
                f"or an odd number >= 7 (class x1 y1 x2 y2 x3 y3 ...)"
            )
            return stats
        cls = values[0]
        if cls != int(cls) or int(cls) not in ids:
            stats.problem = (
                f"{where}: class {fields[0]} is outside names (ids {_id_range(sorted(ids))}): "
                f"fix the label or add the class to names in data.yaml"
            )
            return stats
        coords = values[1:]
        if max(coords) > 1 + COORD_TOLERANCE or min(coords) < -COORD_TOLERANCE:
            stats.problem = (
                f"{where}: coordinates must be normalised to 0-1 (found {max(coords, key=lambda v: abs(v - 0.5)):g}): "
                "divide pixel coordinates by the image width and height"
            )
            return stats
        if len(values) == 5 and min(coords[2:]) <= 0:
            stats.problem = f"{where}: box width and height must be positive: fix or remove the row"
            return stats
        stats.instances += 1
        if len(values) == 5:
            x, y, w, h = coords
            stats.boxes.extend((x - w / 2, y - h / 2, x + w / 2, y + h / 2))
        else:
            xs, ys = coords[0::2], coords[1::2]
            stats.boxes.extend((min(xs), min(ys), max(xs), max(ys)))
    if len(kinds) > 1:
        stats.problem = f"{file}: mixes box rows and polygon rows: label every object of a file the same way"
    return stats


def _pil_open():
    """PIL's own Image.open: Ultralytics replaces it with one that pip-installs pi-heif on any unknown file."""
    import sys

    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)


def _check_image(file: str) -> tuple[str, int, int]:
    """(problem, width, height) for one image, using PIL's header check as Ultralytics does."""
    from PIL import Image, UnidentifiedImageError

    if file.rpartition(".")[-1].lower() in {"heic", "heif"}:
        try:
            from pi_heif import register_heif_opener
        except ImportError:
            return f"{file}: HEIC/HEIF images need the pi-heif package: pip install pi-heif", 0, 0
        register_heif_opener()
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):
            return f"{file}: not a regular file (a FIFO, device or socket): remove it from the dataset", 0, 0
        with _pil_open()(file) as im:
            im.verify()
            width, height = im.size
            fmt = (im.format or "").lower()
    except FileNotFoundError:
        if os.path.islink(file):  # its link leads nowhere (a loop raises ELOOP instead: below)
            return f"{file}: a link that leads to no file ({os.readlink(file)}): fix the link or remove it", 0, 0
        return f"{file}: listed but missing: restore it or remove it from the list", 0, 0
    except Image.DecompressionBombError:
        return (f"{file}: more pixels than PIL will open (a decompression bomb, or an image far too large to train "
                f"on): remove it or shrink it", 0, 0)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
            return f"{file}: links that lead round in a loop: fix the link or remove it", 0, 0
        return f"{file}: corrupt or not an image ({exc.__class__.__name__}): replace or remove it", 0, 0
    if width < 10 or height < 10:
        return f"{file}: {width}x{height} pixels is too small (Ultralytics needs 10x10): remove it", 0, 0
    if fmt in {"jpeg", "jpg"}:
        with open(file, "rb") as fh:
            fh.seek(-2, os.SEEK_END)
            if fh.read() != b"\xff\xd9":
                return (
                    f"{file}: truncated JPEG (no end marker); Ultralytics would rewrite it in place: "
                    "re-save or remove it",
                    0,
                    0,
                )
    return "", width, height


def _scan_split(sources: Sequence[Path], images: list[str], ids: Mapping[int, int], key: str, path: Path,
                check_images: bool, note: str = "") -> SplitSummary:
    """Check a split's labels against `ids` (class id -> training id) and its image headers; `note` ends the
    messages (`_link_note`: the split was reached through a link)."""
    unique = list(dict.fromkeys(images))  # a list file may repeat images (oversampling): check each once
    labels = [label_path(f) for f in unique]
    odd = [f for f in labels if os.path.lexists(f) and not os.path.isfile(f)]
    if odd:
        raise DatasetError(f"{odd[0]}: not a regular file (a FIFO, device, folder or dangling link): make it a .txt "
                           f"label file or remove it{note}")
    present = [f for f in labels if os.path.isfile(f)]
    lists = [source for source in sources if source.is_file()]
    if not present and lists and not any(os.path.exists(f) for f in unique):
        relative = next((f for f in unique if not os.path.isabs(f)), None)
        where = (f"; a line without ./ is read from the working folder ({os.getcwd()}), as Ultralytics reads it: "
                 f"start lines with ./ for paths beside the list, or write absolute ones" if relative else
                 ": fix the paths")
        raise DatasetError(f"{lists[0]}: none of its {len(unique)} listed images exists (the first: {unique[0]})"
                           f"{where}{note}")
    if not present:
        expected = Path(labels[0]).parent
        raise DatasetError(
            f"{path}: no label files for '{key}:' (expected YOLO .txt labels in {expected}, "
            f"paired with {Path(images[0]).parent} by name): add the labels{note}"
        )
    workers = min(16, (os.cpu_count() or 1) * 4)
    pool = ThreadPoolExecutor(workers)
    try:
        parsed = dict(zip(present, pool.map(lambda f: _parse_label_file(f, ids, note), present, chunksize=64)))
        checks = list(pool.map(_check_image, unique, chunksize=64)) if check_images else []
    finally:  # Ctrl-C or SIGTERM: drop the queued checks instead of finishing them first
        pool.shutdown(wait=False, cancel_futures=True)
    _raise_first((s.problem for s in parsed.values()), "label files")
    _raise_first((c[0] + note if c[0] else "" for c in checks), "images")
    stats = [parsed[f] for f in (label_path(image) for image in images) if f in parsed]  # repeats count again
    if not any(s.instances for s in stats):
        raise DatasetError(
            f"{path}: the {len(present)} label files for '{key}:' hold no objects: "
            f"label the images (one 'class x y w h' row per object){note}"
        )
    densest = max(parsed, key=lambda f: parsed[f].instances)
    sizes = {image: (c[1], c[2]) for image, c in zip(unique, checks)}
    empty = array.array("f")
    objects = {image: ImageLabels(*sizes.get(image, (0, 0)), parsed[label].boxes if label in parsed else empty)
               for image, label in zip(unique, labels)}
    return SplitSummary(
        sources=tuple(str(s) for s in sources),
        images=len(images),
        labelled=sum(s.instances > 0 for s in stats),
        instances=sum(s.instances for s in stats),
        max_instances=parsed[densest].instances,
        max_instances_file=densest,
        polygons=sum(s.polygons for s in stats),
        max_polygon_points=max(s.max_points for s in stats),
        max_width=max((c[1] for c in checks), default=0),
        max_height=max((c[2] for c in checks), default=0),
        image_folders=tuple(sorted({os.path.dirname(f) for f in unique})),
        files=tuple(images),
        objects=tuple(objects[image] for image in images),
    )


def _links_to(raw: dict, key: str, root: Path, yaml_path: Path) -> list[tuple[Path, Path, bool]]:
    """The symbolic links met on the way to split `key`'s images: (link as reached, resolved target, is a folder).

    The way runs through the data.yaml (a linked YAML resolves its paths from the target's folder), the
    `path:` root as written, and each entry of the split from the resolved root, as `_split_sources` goes.
    """
    ways = [yaml_path.absolute()]
    if raw.get("path"):
        declared = Path(str(raw["path"])).expanduser()
        ways.append(declared if declared.is_absolute() else Path.cwd() / declared)
    entries = raw[key] if isinstance(raw[key], list) else [raw[key]]
    ways += [root / str(entry) for entry in entries]
    found: dict[Path, tuple[Path, Path, bool]] = {}
    for way in ways:
        step = Path(way.anchor)
        for part in way.parts[1:]:
            step = step / part
            if part not in {".", ".."} and step not in found and step.is_symlink():
                found[step] = (step, step.resolve(), step.is_dir())
    return list(found.values())


def _link_note(links: Sequence[tuple[Path, Path, bool]]) -> str:
    """What ends a message about a split reached through links: each link and where it leads.

    Ultralytics resolves a split's path, so the labels it reads sit beside the link's target (`label_path` of
    the resolved image): a message naming them may name another dataset's files, and this says why.

    Examples:
        >>> _link_note([(Path("/d/images"), Path("/x/coco128-seg/images"), True)])
        " (images/ is a link to /x/coco128-seg/images; labels are read beside the link's target, as Ultralytics does)"
        >>> _link_note([])
        ''
    """
    said = [f"{link.name}/ is a link to {target}" if folder else
            f"{link.name} is a link to {target}; its paths resolve from {target.parent}"
            for link, target, folder in links[:MAX_LISTED]]
    if any(folder for _, _, folder in links):
        said.append("labels are read beside the link's target, as Ultralytics does")
    return f" ({'; '.join(said)})" if said else ""


def remap_label_text(text: str, ids: Mapping[int, int]) -> str:
    r"""A checked label file's text with each row's class id replaced by `ids[id]`; the rest of each row kept.

    Examples:
        >>> remap_label_text("7 0.5 0.5 0.2 0.2\n\n1 0.1 0.1 0.3 0.3\n", {1: 0, 3: 1, 7: 2})
        '2 0.5 0.5 0.2 0.2\n\n0 0.1 0.1 0.3 0.3\n'
    """
    rows = []
    for line in text.splitlines(keepends=True):
        fields = line.split(maxsplit=1)
        if fields:
            line = f"{ids[int(float(fields[0]))]} {fields[1] if len(fields) > 1 else ''}"
        rows.append(line)
    return "".join(rows)


def _raise_first(problems: Iterable[str], what: str) -> None:
    found = [p for p in problems if p]
    if found:
        more = f" (and {len(found) - 1} more {what} with problems)" if len(found) > 1 else ""
        raise DatasetError(found[0] + more)


def _id_range(ids: Sequence[int]) -> str:
    """Sorted class ids in a few characters: '0-4', '1, 3, 7' or '1..90 with gaps'."""
    if list(ids) == list(range(len(ids))):
        return f"0-{len(ids) - 1}"
    return _short(ids) if len(ids) <= MAX_LISTED else f"{ids[0]}..{ids[-1]} with gaps"


def _short(values: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in values[:MAX_LISTED])
    return shown + (", ..." if len(values) > MAX_LISTED else "")


def split_images(summary: DatasetSummary, split: str = "train") -> list[str]:
    """The image files of a checked split ('train', 'val' or a checked 'test'), sorted as Ultralytics lists them."""
    return list(summary.splits()[split].files)


def train_count(total: int, fraction: float | int | list) -> int:
    """Training images Ultralytics uses for `fraction=` (ratio, or count when an int > 1).

    Examples:
        >>> train_count(160, 1.0), train_count(160, 0.5), train_count(160, 40), train_count(160, [0.25, 1])
        (160, 80, 40, 40)
    """
    if isinstance(fraction, list):
        fraction = fraction[0] if fraction else 1.0
    if fraction in {0, 1}:
        fraction = float(fraction)
    if isinstance(fraction, int):
        return min(total, fraction)
    return min(total, max(1, round(total * fraction)))
