"""visionbatch.staging: the mirror Ultralytics reads holds exactly the checked dataset, in Ultralytics' order, whole."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import copy_shapes

from visionbatch.dataset import load_dataset
from visionbatch.errors import StorageError
from visionbatch.staging import staged_dataset


def _lines(path: str | Path) -> list[str]:
    return Path(path).read_text().splitlines()


def _ultralytics_view(content: dict, split: str) -> tuple[list[str], list[str]]:
    """(image files, label files) as Ultralytics' dataset lists them from the staged YAML."""
    from ultralytics.data.utils import img2label_paths

    listed = _lines(content[split])
    images = sorted(x.replace("/", os.sep) for x in listed)  # BaseDataset.get_img_files sorts
    return images, img2label_paths(images)


def test_two_sources_keep_ultralytics_order_and_labels(tmp_path: Path) -> None:
    """'tr-b' sorts before 'tr/' as a path: the mirror must not group by source and reorder."""
    data = copy_shapes(tmp_path / "ds", n_train=6)
    train = tmp_path / "ds" / "images" / "train"
    (tmp_path / "ds" / "images" / "tr-b").mkdir()
    (tmp_path / "ds" / "labels" / "tr-b").mkdir()
    for image in sorted(train.iterdir())[:3]:
        image.rename(tmp_path / "ds" / "images" / "tr-b" / image.name)
        label = tmp_path / "ds" / "labels" / "train" / f"{image.stem}.txt"
        label.rename(tmp_path / "ds" / "labels" / "tr-b" / label.name)
    data.write_text(data.read_text().replace("train: images/train", "train: [images/train, images/tr-b]"))
    summary = load_dataset(data)
    originals = sorted(str(p) for folder in ("train", "tr-b") for p in (tmp_path / "ds" / "images" / folder).iterdir())
    with staged_dataset(summary, tmp_path / "cache") as staged:
        images, labels = _ultralytics_view(staged.content, "train")
        assert [str(Path(p).resolve()) for p in images] == [str(Path(p).resolve()) for p in originals]
        for image, label in zip(images, labels, strict=True):  # each image's label link leads to its own label
            original = Path(image).resolve()
            expected = tmp_path / "ds" / "labels" / original.parent.name / f"{original.stem}.txt"
            assert Path(label).resolve() == expected.resolve()


def test_a_list_keeps_its_repeats(tmp_path: Path) -> None:
    data = copy_shapes(tmp_path / "ds")
    images = sorted((tmp_path / "ds" / "images" / "train").iterdir())
    lines = [f"./images/train/{p.name}" for p in images] + [f"./images/train/{images[0].name}"] * 3
    (tmp_path / "ds" / "train.txt").write_text("\n".join(lines) + "\n")
    data.write_text(data.read_text().replace("train: images/train", "train: train.txt"))
    summary = load_dataset(data)
    assert summary.train.images == len(images) + 3
    with staged_dataset(summary, tmp_path / "cache") as staged:
        listed = _lines(staged.content["train"])
        assert len(listed) == len(images) + 3  # oversampling survives
        assert len(set(listed)) == len(images) and staged.images == len(images) + 4  # + val's 4


def test_images_sharing_a_label_file_stage(tmp_path: Path) -> None:
    """x.jpg and x.png both pair with x.txt (Ultralytics' rule): one label link serves both."""
    data = copy_shapes(tmp_path / "ds")
    first = sorted((tmp_path / "ds" / "images" / "train").glob("*.jpg"))[0]
    from PIL import Image

    Image.open(first).save(first.with_suffix(".png"))
    with staged_dataset(load_dataset(data), tmp_path / "cache") as staged:
        images, labels = _ultralytics_view(staged.content, "train")
        pair = [label for image, label in zip(images, labels, strict=True) if Path(image).stem == first.stem]
        assert len(pair) == 2 and len(set(pair)) == 1 and Path(pair[0]).is_file()


def test_reused_while_unchanged_and_rebuilt_after_a_change(tmp_path: Path) -> None:
    data = copy_shapes(tmp_path / "ds")
    cache = tmp_path / "cache"
    with staged_dataset(load_dataset(data), cache) as first:
        assert not first.reused
    with staged_dataset(load_dataset(data), cache) as again:
        assert again.reused and again.root == first.root
    extra = tmp_path / "ds" / "images" / "train" / "extra.jpg"
    shutil.copy(sorted(extra.parent.iterdir())[0], extra)
    with staged_dataset(load_dataset(data), cache) as changed:
        assert not changed.reused and changed.root != first.root
        assert not first.root.exists()  # the older version, unused, is gone
        assert sorted(p.name for p in changed.root.parent.iterdir()) == [changed.root.name]


def test_a_mirror_in_use_is_never_removed(tmp_path: Path) -> None:
    data = copy_shapes(tmp_path / "ds")
    cache = tmp_path / "cache"
    with staged_dataset(load_dataset(data), cache) as running:
        data.write_text(data.read_text() + "extra_key: 1\n")  # another version of the same dataset
        with staged_dataset(load_dataset(data), cache) as other:
            assert other.root != running.root
        assert (running.root / "data.yaml").is_file() and _lines(running.content["train"])
    with staged_dataset(load_dataset(data), cache):
        assert not running.root.exists()  # released: now it may go


def test_leftovers_and_a_damaged_mirror_are_cleaned(tmp_path: Path) -> None:
    data = copy_shapes(tmp_path / "ds")
    cache = tmp_path / "cache"
    with staged_dataset(load_dataset(data), cache) as staged:
        root = staged.root
    home = root.parent
    for name in (".building-crashed", ".removing-crashed"):
        (home / name / "train").mkdir(parents=True)
        (home / name / ".lock").touch()
    (root / "data.yaml").unlink()  # damaged under its real name (by hand: visionbatch never leaves it so)
    with staged_dataset(load_dataset(data), cache) as rebuilt:
        assert rebuilt.root == root and not rebuilt.reused and (root / "data.yaml").is_file()
    assert sorted(p.name for p in home.iterdir()) == [root.name]


def test_odd_yaml_keys_pass_through_and_download_does_not(tmp_path: Path) -> None:
    data = copy_shapes(tmp_path / "ds")
    data.write_text(data.read_text() + "null: a\n2024: b\ndownload: bash evil.sh\nchannels: 3\n")
    with staged_dataset(load_dataset(data), tmp_path / "cache") as staged:
        written = yaml.safe_load(Path(staged.yaml_path).read_text())
    assert written[None] == "a" and written[2024] == "b" and written["channels"] == 3
    assert "download" not in written and written["path"] == str(staged.root)


def test_an_unwritable_cache_is_one_line(tmp_path: Path) -> None:
    data = copy_shapes(tmp_path / "ds")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(StorageError, match=r"cannot write visionbatch's dataset mirror in .*: remove .* or set "
                                           r"XDG_CACHE_HOME to another folder"):
        with staged_dataset(load_dataset(data), blocker):
            pass
