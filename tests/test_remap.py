"""COCO-style class ids (`remap_classes=True`), the data.yaml keys Ultralytics ignores, and splits reached by links.

A dataset whose `names:` uses its exporter's own ids (1, 3, 7 here, as COCO's 1..90 with gaps) is refused in
one line naming `remap_classes=True`; with the key it trains on renumbered copies of its labels in visionbatch's
mirror, and the user's folder is not changed by a byte or a modification time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import SHAPES

from visionbatch.augment.sample import link_sample
from visionbatch.cli import main
from visionbatch.dataset import ULTRALYTICS_DATA_KEYS, label_path, load_dataset
from visionbatch.errors import ConfigError, DatasetError
from visionbatch.infer.precision import check_request
from visionbatch.keys import visionbatch_keys
from visionbatch.staging import staged_dataset
from visionbatch.ultralytics.job import prepare

# shapes' classes 0..4 -> the exporter's gapped ids
GAPPED = {0: 1, 1: 3, 2: 7, 3: 1, 4: 3}
GAPPED_YAML = """\
train: images/train
val: images/val
names:
  1: a
  3: b
  7: c
format: yolov8
skip_if_label_file_missing: true
"""


def gapped_dataset(folder: Path, n_train: int = 8, n_val: int = 4) -> Path:
    """A few shapes images with labels renumbered to ids 1, 3 and 7 and an exporter's extra keys; its data.yaml."""
    for split, count in (("train", n_train), ("val", n_val)):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for image in sorted((SHAPES / "images" / split).glob("*.jpg"))[:count]:
            shutil.copy(image, folder / "images" / split / image.name)
            rows = (SHAPES / "labels" / split / f"{image.stem}.txt").read_text().splitlines()
            renumbered = [f"{GAPPED[int(row.split()[0])]} {row.split(maxsplit=1)[1]}" for row in rows if row.split()]
            (folder / "labels" / split / f"{image.stem}.txt").write_text("\n".join(renumbered) + "\n")
    (folder / "data.yaml").write_text(GAPPED_YAML)
    return folder / "data.yaml"


def fingerprint(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: content and modification time (ns), to prove nothing was written or touched."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def gapped(tmp_path: Path) -> Path:
    return gapped_dataset(tmp_path / "coco-style")


# -- without the key: one line naming it -------------------------------------------------------------------------

def test_gapped_ids_are_one_line_naming_remap_classes(gapped: Path, workdir: Path, capsys) -> None:
    code = main(["train", str(gapped), "epochs=1", "imgsz=64"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0] == (f"visionbatch train: {gapped}: names: class ids 1..7 with gaps (3 classes, missing 0, 2); "
                        f"Ultralytics needs 0..2 without gaps: add remap_classes=True to train on remapped copies "
                        f"(your files are not changed)")


def test_coco_ids_name_their_span_and_the_classes_ultralytics_needs(tmp_path: Path) -> None:
    coco = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"train": "images", "val": "images", "names": {i: f"c{i}" for i in coco}}))
    with pytest.raises(DatasetError, match=r"names: class ids 1\.\.90 with gaps \(80 classes, missing 0, 12, 26, "
                                           r"\.\.\.\); Ultralytics needs 0\.\.79 without gaps: add remap_classes=True"):
        load_dataset(data)


def test_a_bad_switch_value_is_refused(gapped: Path, workdir: Path, capsys) -> None:
    assert main(["train", str(gapped), "remap_classes=yes"]) == 2
    assert capsys.readouterr().err == ("visionbatch train: remap_classes=yes is not a switch: use remap_classes=True "
                                       "or remap_classes=False\n")


# -- with the key: renumbered copies in the mirror, the user's folder untouched -----------------------------------

def test_remap_renumbers_in_the_order_of_names(gapped: Path) -> None:
    summary = load_dataset(gapped, remap_classes=True)
    assert summary.names == {0: "a", 1: "b", 2: "c"}
    assert summary.class_ids == (1, 3, 7) and summary.class_map() == {1: 0, 3: 1, 7: 2}
    assert summary.notes == ("remap_classes=True: class ids 1, 3, 7 train as 0..2, in the order of names (1->0 a, "
                             "3->1 b, 7->2 c): renumbered copies of the labels in visionbatch's cache; your files are "
                             "not changed",)


def test_remap_checks_labels_against_the_yaml_ids(gapped: Path) -> None:
    label = sorted((gapped.parent / "labels" / "train").glob("*.txt"))[0]
    label.write_text("2 0.5 0.5 0.2 0.2\n")  # 2 is a training id, not one of names' ids
    with pytest.raises(DatasetError, match=rf"{label} line 1: class 2 is outside names \(ids 1, 3, 7\)"):
        load_dataset(gapped, remap_classes=True)


def test_contiguous_ids_are_not_remapped(shapes_yaml: Path) -> None:
    summary = load_dataset(shapes_yaml, check_images=False, remap_classes=True)
    assert summary.class_ids == () and not summary.remapped and summary.notes == ()


def test_mirror_holds_renumbered_copies_and_the_users_files_are_unchanged(gapped: Path, tmp_path: Path) -> None:
    before = fingerprint(gapped.parent)
    summary = load_dataset(gapped, remap_classes=True)
    with staged_dataset(summary, tmp_path / "cache") as staged:
        assert staged.content["names"] == {0: "a", 1: "b", 2: "c"}
        assert staged.content["format"] == "yolov8"  # passed through, as every descriptive key
        images = [line for split in ("train", "val") for line in Path(staged.content[split]).read_text().split()]
        assert len(images) == 12
        for image in images:
            copy = Path(label_path(image))
            original = Path(label_path(os.path.realpath(image)))
            assert copy.is_file() and not copy.is_symlink()  # a copy: Ultralytics' cache lands beside it
            expected = [f"{summary.class_map()[int(row.split()[0])]} {row.split(maxsplit=1)[1]}"
                        for row in original.read_text().splitlines()]
            assert copy.read_text().splitlines() == expected
            assert {int(row.split()[0]) for row in expected} <= {0, 1, 2}
    assert fingerprint(gapped.parent) == before


def test_an_edited_label_is_renumbered_again(gapped: Path, tmp_path: Path) -> None:
    label = sorted((gapped.parent / "labels" / "train").glob("*.txt"))[0]
    with staged_dataset(load_dataset(gapped, remap_classes=True), tmp_path / "cache") as staged:
        first = staged.root
    label.write_text("7 0.5 0.5 0.2 0.2\n")
    with staged_dataset(load_dataset(gapped, remap_classes=True), tmp_path / "cache") as staged:
        assert staged.root != first and not staged.reused
        copy = staged.root / "train" / "labels" / label.name
        assert copy.read_text() == "2 0.5 0.5 0.2 0.2\n"


def test_augcost_sample_holds_renumbered_copies(gapped: Path, tmp_path: Path) -> None:
    summary = load_dataset(gapped, remap_classes=True)
    sample = link_sample(summary, tmp_path / "sample", profile_images=2, loader_images=4)
    labels = sorted((tmp_path / "sample" / "labels").rglob("*.txt"))
    assert sample.linked == 4 and labels and not any(p.is_symlink() for p in labels)
    assert {int(row.split()[0]) for p in labels for row in p.read_text().splitlines()} <= {0, 1, 2}


@pytest.mark.parametrize("command", ["fit", "sweep", "augcost"])
def test_every_training_command_prepares_with_the_key(gapped: Path, workdir: Path, command: str) -> None:
    job = prepare(gapped, {"remap_classes": True, "imgsz": 64}, visionbatch_keys(command), command=command)
    assert job.dataset.class_ids == (1, 3, 7) and job.options["remap_classes"] is True
    assert "remap_classes" not in job.args  # visionbatch's key, never handed to Ultralytics
    assert any(note.startswith("remap_classes=True: class ids 1, 3, 7") for note in job.notes)


def test_infer_validates_on_the_renumbered_labels_with_data_only(gapped: Path) -> None:
    assert check_request("fp32", str(gapped), None, remap_classes=True).remap_classes is True
    assert check_request("fp32", str(gapped), None).remap_classes is False
    with pytest.raises(ConfigError, match="remap_classes= is used by precision= only"):
        check_request(None, None, None, remap_classes=True)


@pytest.mark.slow
def test_a_real_run_trains_on_the_renumbered_copies(gapped: Path, workdir: Path) -> None:
    from visionbatch.train.run import train

    before = fingerprint(gapped.parent)
    result = train(gapped, remap_classes=True, epochs=1, imgsz=64, batch=4, plots=False, val=True)
    assert result.status == "completed"
    assert fingerprint(gapped.parent) == before  # no label cache, no rewritten label, no touched file
    import torch

    checkpoint = torch.load(result.last, map_location="cpu", weights_only=False)
    assert checkpoint["model"].names == {0: "a", 1: "b", 2: "c"}  # names kept, on the training ids


# -- data.yaml keys Ultralytics does not read: named once ---------------------------------------------------------

def test_unknown_keys_are_warned_exactly_once(gapped: Path, capsys) -> None:
    load_dataset(gapped, remap_classes=True, check_images=False)
    load_dataset(gapped, remap_classes=True, check_images=False)  # train with augcost=True reads it twice
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"visionbatch: warning: {gapped.resolve()}: format, skip_if_label_file_missing ignored "
                     f"(keys Ultralytics does not read)"]


def test_known_keys_warn_nothing(shapes_yaml: Path, capsys) -> None:
    load_dataset(shapes_yaml, check_images=False)
    assert capsys.readouterr().err == ""


def test_every_key_of_ultralytics_own_dataset_yamls_is_known() -> None:
    """The keys of the data.yaml files Ultralytics ships are keys it reads: none may be reported as ignored."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.origin is not None
    found: set[str] = set()
    for path in (Path(spec.origin).parent / "cfg" / "datasets").glob("*.yaml"):
        content = yaml.safe_load(path.read_text())
        found |= {str(k) for k in content} if isinstance(content, dict) else set()
    assert "kpt_shape" in found and "download" in found  # the glob found Ultralytics' own YAMLs
    assert found - ULTRALYTICS_DATA_KEYS == set()


# -- a split reached through a link: the message says so -----------------------------------------------------------

def test_a_linked_images_folder_is_named_in_the_label_error(tmp_path: Path) -> None:
    other = tmp_path / "coco128-seg"
    gapped_dataset(other)
    label = sorted((other / "labels" / "train").glob("*.txt"))[0]
    label.write_text("0 0.5 0.5 0.2 0.2\n86 0.5 0.5 0.2 0.2\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "images").symlink_to(other / "images")
    (mine / "labels").mkdir()  # the user's own labels, which Ultralytics never reads through the link
    (mine / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b, c, d, e, f, g, h]\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(mine / "data.yaml")
    assert str(caught.value) == (
        f"{label} line 2: class 86 is outside names (ids 0-7): fix the label or add the class to names in data.yaml "
        f"(images/ is a link to {other / 'images'}; labels are read beside the link's target, as Ultralytics does)")


def test_an_unlinked_dataset_gets_no_link_note(gapped: Path) -> None:
    label = sorted((gapped.parent / "labels" / "train").glob("*.txt"))[0]
    label.write_text("86 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(gapped, remap_classes=True)
    assert str(caught.value).endswith("add the class to names in data.yaml")


def test_a_linked_yaml_is_named_when_its_labels_are_missing(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    gapped_dataset(other)
    for label in (other / "labels" / "val").glob("*.txt"):
        label.unlink()
    (tmp_path / "data.yaml").symlink_to(other / "data.yaml")
    with pytest.raises(DatasetError, match=rf"no label files for 'val:'.*\(data\.yaml is a link to "
                                           rf"{other / 'data.yaml'}; its paths resolve from {other}\)$"):
        load_dataset(tmp_path / "data.yaml", remap_classes=True)


def test_a_label_changed_after_the_check_is_one_line_not_a_traceback(gapped: Path, tmp_path: Path) -> None:
    summary = load_dataset(gapped, remap_classes=True)
    label = sorted((gapped.parent / "labels" / "train").glob("*.txt"))[0]
    label.write_text("5 0.5 0.5 0.2 0.2\n")  # 5 is not one of names' ids, written after the check
    with pytest.raises(DatasetError, match=rf"^{label}: a class id that is not in names \(5\) appeared after"):
        with staged_dataset(summary, tmp_path / "cache"):
            pass
