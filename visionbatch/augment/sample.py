"""A symlinked sample of the user's dataset, in a temporary folder, for every measurement.

Ultralytics writes beside the data it reads: label caches beside the labels, and with
`cache=disk` an `.npy` file beside every image. augcost measures `cache=disk` too, so it never
points Ultralytics at the user's folders: it links a sample of the images and labels into a
temporary folder (copies where links are not allowed) and whatever Ultralytics writes lands
there and is removed with it.

The sample is spread evenly over the training list Ultralytics would use (after `fraction=`);
its first `profile_images` entries are the images the per-transform profile times, so
`fraction=<count>` selects exactly them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from visionbatch.augment.analysis import spread
from visionbatch.dataset import DatasetSummary, label_path, split_images, train_count
from visionbatch.staging import ultralytics_yaml, write_remapped_label


@dataclass(frozen=True, slots=True)
class Sample:
    """The linked sample: its data.yaml and how many images each part holds.

    Attributes:
        yaml_path: the sample's data.yaml (absolute paths inside).
        train_images: training images in the user's list, after fraction=.
        linked: training images linked (profile sample first).
        profile_images: the first this many linked images are the profile sample.
        val_images: validation images linked.
        npy_beside_images: the user has .npy caches beside some sampled images (not linked).
    """

    yaml_path: Path
    train_images: int
    linked: int
    profile_images: int
    val_images: int
    npy_beside_images: bool


def link_sample(summary: DatasetSummary, folder: Path, profile_images: int, loader_images: int,
                fraction: float | int | list = 1.0) -> Sample:
    """Link a sample of `summary`'s train and val images (with labels) under `folder`."""
    train = split_images(summary, "train")
    train = train[: train_count(len(train), fraction)]
    profile = spread(len(train), profile_images)
    rest = sorted(set(spread(len(train), max(loader_images, profile_images))) - set(profile))
    chosen = [train[i] for i in profile + rest]
    val = split_images(summary, "val")
    val_chosen = [val[i] for i in spread(len(val), profile_images)]
    npy = any(Path(f).with_suffix(".npy").exists() for f in chosen)
    ids = summary.class_map()
    for split, files in (("train", chosen), ("val", val_chosen)):
        for number, image in enumerate(files):
            stem = f"{number:06d}"
            _link(Path(image), folder / "images" / split / f"{stem}{Path(image).suffix}")
            label = Path(label_path(image))
            if label.is_file() and summary.remapped:  # remap_classes=True: a renumbered copy, as in the mirror
                write_remapped_label(ids, label, folder / "labels" / split / f"{stem}.txt")
            elif label.is_file():
                _link(label, folder / "labels" / split / f"{stem}.txt")
    described = ultralytics_yaml(summary, folder, {"train": "images/train", "val": "images/val"})
    yaml_path = folder / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(described, sort_keys=False))
    return Sample(yaml_path, len(train), len(chosen), len(profile), len(val_chosen), npy)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # no symlinks here (Windows without the privilege): copy the sample instead
        shutil.copyfile(source, target)
