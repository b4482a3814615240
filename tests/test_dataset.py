"""visionbatch.dataset: resolution like Ultralytics, statistics, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tree_digest

from visionbatch.dataset import label_path, load_dataset
from visionbatch.errors import DatasetError


def test_shipped_dataset_statistics(shapes_yaml: Path) -> None:
    summary = load_dataset(shapes_yaml)
    assert summary.names == {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "cross"}
    assert (summary.train.images, summary.val.images) == (160, 40)
    assert summary.train.labelled == 160
    assert summary.segmentable
    assert summary.train.max_instances == 90
    assert summary.train.max_instances_file.endswith("train_0104.txt")
    assert summary.train.max_polygon_points == 28  # circles
    assert (summary.train.max_width, summary.train.max_height) == (384, 384)
    assert not summary.root_from_yaml


def test_box_labels_are_not_segmentable(small_shapes: Path) -> None:
    for label in (small_shapes.parent / "labels" / "train").glob("*.txt"):
        rows = []
        for line in label.read_text().splitlines():
            values = [float(v) for v in line.split()]
            xs, ys = values[1::2], values[2::2]
            rows.append(f"{int(values[0])} {(min(xs) + max(xs)) / 2} {(min(ys) + max(ys)) / 2} "
                        f"{max(xs) - min(xs)} {max(ys) - min(ys)}")
        label.write_text("\n".join(rows) + "\n")
    summary = load_dataset(small_shapes)
    assert summary.train.polygons == 0 and summary.train.instances > 0
    assert not summary.segmentable


def test_label_path_mirrors_ultralytics() -> None:
    from ultralytics.data.utils import img2label_paths

    images = ["/d/images/train/a.jpg", "/d/images/x/images/b.png", "/d/imgs/c.jpeg"]
    assert [label_path(f) for f in images] == img2label_paths(images)


def test_relative_path_beside_yaml_is_resolved(small_shapes: Path, workdir: Path) -> None:
    # Ultralytics would look for 'shapes' in its datasets_dir; the folder is beside the YAML.
    folder = small_shapes.parent
    yaml_file = folder.parent / "elsewhere.yaml"
    yaml_file.write_text(small_shapes.read_text() + f"path: {folder.name}\n")
    summary = load_dataset(yaml_file)
    assert summary.root_from_yaml
    assert summary.root == str(folder.resolve())
    assert any("resolved beside the YAML" in note for note in summary.notes)


def test_image_list_file(small_shapes: Path) -> None:
    folder = small_shapes.parent
    images = sorted((folder / "images" / "train").glob("*.jpg"))[:3]
    (folder / "train.txt").write_text("\n".join(f"./images/train/{p.name}" for p in images) + "\n")
    small_shapes.write_text(small_shapes.read_text().replace("train: images/train", "train: train.txt"))
    assert load_dataset(small_shapes).train.images == 3


def test_a_list_whose_relative_lines_lead_nowhere_says_how_they_are_read(small_shapes: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines without ./ are read from the working folder, as Ultralytics reads them: not found from elsewhere, the
    message says so, instead of blaming missing labels."""
    folder = small_shapes.parent
    images = sorted((folder / "images" / "train").glob("*.jpg"))[:3]
    (folder / "train.txt").write_text("\n".join(f"images/train/{p.name}" for p in images) + "\n")
    small_shapes.write_text(small_shapes.read_text().replace("train: images/train", "train: train.txt"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_dataset(small_shapes)
    assert str(info.value) == (
        f"{folder / 'train.txt'}: none of its 3 listed images exists (the first: images/train/{images[0].name}); a "
        f"line without ./ is read from the working folder ({tmp_path}), as Ultralytics reads it: start lines with ./ "
        f"for paths beside the list, or write absolute ones")


def test_a_listed_image_whose_links_loop_is_one_clear_line(small_shapes: Path) -> None:
    folder = small_shapes.parent
    first = sorted((folder / "images" / "train").glob("*.jpg"))[0]
    first.unlink()
    first.symlink_to("loop.jpg")
    (folder / "images" / "train" / "loop.jpg").symlink_to(first.name)
    (folder / "train.txt").write_text(f"./images/train/{first.name}\n")
    small_shapes.write_text(small_shapes.read_text().replace("train: images/train", "train: train.txt"))
    with pytest.raises(DatasetError, match=r": links that lead round in a loop: fix the link or remove it"):
        load_dataset(small_shapes)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _first(folder: Path, split: str, kind: str) -> Path:
    suffix = "jpg" if kind == "images" else "txt"
    return sorted((folder / kind / split).glob(f"*.{suffix}"))[0]


# (id, change to make in the copied dataset, words the one-line message must contain)
BAD_DATASETS = [
    ("missing-yaml", lambda d, y: y.unlink(), ["no such file", "data.yaml"]),
    ("folder-not-yaml", lambda d, y: None, ["is a folder"]),  # handled in the test body
    ("malformed-yaml", lambda d, y: _write(y, "train: [images/train\nval: images/val\n"), ["not valid YAML", "line"]),
    ("not-a-mapping", lambda d, y: _write(y, "- a\n- b\n"), ["expected a mapping"]),
    ("missing-train", lambda d, y: _write(y, "val: images/val\nnames: [a, b, c, d, e]\n"), ["missing 'train:'"]),
    ("missing-val", lambda d, y: _write(y, "train: images/train\nnames: [a, b, c, d, e]\n"), ["missing 'val:'"]),
    ("missing-names", lambda d, y: _write(y, "train: images/train\nval: images/val\n"), ["missing 'names:'"]),
    ("train-folder-missing", lambda d, y: _write(y, y.read_text().replace("images/train", "images/nope")),
     ["'train: images/nope' not found"]),
    ("no-images", lambda d, y: [p.unlink() for p in (d / "images" / "val").glob("*.jpg")], ["holds no images"]),
    ("class-outside-names", lambda d, y: _write(_first(d, "train", "labels"), "7 0.5 0.5 0.2 0.2\n"),
     ["line 1", "class 7 is outside names", "0-4"]),
    ("non-contiguous-names", lambda d, y: _write(y, "train: images/train\nval: images/val\nnames:\n  0: a\n  2: b\n"),
     ["without gaps", "missing 1"]),
    ("nc-mismatch", lambda d, y: _write(y, y.read_text() + "nc: 3\n"), ["nc: 3", "5 classes"]),
    ("corrupt-image", lambda d, y: _first(d, "train", "images").write_bytes(b"not a jpeg at all"),
     ["corrupt or not an image"]),
    ("empty-image", lambda d, y: _first(d, "val", "images").write_bytes(b""), ["corrupt or not an image"]),
    ("truncated-jpeg", lambda d, y: _first(d, "train", "images").write_bytes(
        _first(d, "train", "images").read_bytes()[:-2]), ["truncated JPEG"]),
    ("empty-label-folder", lambda d, y: [p.unlink() for p in (d / "labels" / "train").glob("*.txt")],
     ["no label files for 'train:'"]),
    ("labels-without-objects", lambda d, y: [p.write_text("") for p in (d / "labels" / "val").glob("*.txt")],
     ["hold no objects"]),
    ("label-columns", lambda d, y: _write(_first(d, "train", "labels"), "0 0.5 0.5 0.2\n"), ["4 columns"]),
    ("label-not-numbers", lambda d, y: _write(_first(d, "train", "labels"), "cat 0.5 0.5 0.2 0.2\n"),
     ["not numbers"]),
    ("label-pixels", lambda d, y: _write(_first(d, "train", "labels"), "0 120 80 30 20\n"), ["normalised"]),
    ("label-mixed", lambda d, y: _write(_first(d, "train", "labels"),
                                        "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.1 0.2 0.2\n"), ["mixes box rows"]),
    ("dangling-link", lambda d, y: _relink(_first(d, "train", "images"), "nothere.jpg"),
     ["a link that leads to no file (nothere.jpg)", "fix the link or remove it"]),
    ("link-loop", lambda d, y: _relink(_first(d, "train", "images"), _first(d, "train", "images").name),
     ["links that lead round in a loop", "fix the link or remove it"]),
]


def _relink(image: Path, to: str) -> None:
    """Replace `image` by a link to `to` (relative to its folder; its own name makes a loop)."""
    image.unlink()
    image.symlink_to(to)


@pytest.mark.parametrize("change, words", [pytest.param(c, w, id=i) for i, c, w in BAD_DATASETS])
def test_bad_dataset_gives_one_clear_error(small_shapes: Path, change, words) -> None:
    folder = small_shapes.parent
    target = small_shapes
    if words == ["is a folder"]:
        target = folder
    else:
        change(folder, small_shapes)
    before = tree_digest(folder)
    with pytest.raises(DatasetError) as info:
        load_dataset(target)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    assert ":" in message  # "<input>: <problem>: <fix>"
    assert tree_digest(folder) == before  # checking changed nothing


def test_many_bad_labels_are_counted(small_shapes: Path) -> None:
    for label in list((small_shapes.parent / "labels" / "train").glob("*.txt"))[:3]:
        label.write_text("9 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"and 2 more label files with problems"):
        load_dataset(small_shapes)
