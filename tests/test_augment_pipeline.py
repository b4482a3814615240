"""visionbatch.augment.pipeline: a user's serialized A.Compose, and one clear line for each bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionbatch.augment.pipeline import load_pipeline
from visionbatch.errors import ConfigError


def _save(path: Path, data_format: str = "yaml") -> Path:
    import albumentations as A

    compose = A.Compose([A.GaussianBlur(p=0.5), A.OneOf([A.CLAHE(), A.ToGray()], p=0.2)], p=0.9)
    A.save(compose, str(path), data_format=data_format)
    return path


@pytest.mark.parametrize("suffix, data_format", [(".yaml", "yaml"), (".json", "json"), (".yml", "yaml")])
def test_loads_yaml_and_json(tmp_path: Path, suffix: str, data_format: str) -> None:
    pipeline = load_pipeline(_save(tmp_path / f"aug{suffix}", data_format))
    assert pipeline.names == ("GaussianBlur", "OneOf")
    assert pipeline.compose_p == 0.9
    assert pipeline.path == str((tmp_path / f"aug{suffix}").resolve())
    assert [type(t).__name__ for t in pipeline.transforms[1].transforms] == ["CLAHE", "ToGray"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


COMPOSE = {"__version__": "2.0.8", "transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [
    {"__class_fullname__": "Blur", "p": 0.5}]}}


def test_loads_the_module_paths_older_albumentations_saved(tmp_path: Path) -> None:
    """Older Albumentations wrote module paths; its loader shortens any 'albumentations.' name, and so does the check.
    A module path outside albumentations is still unknown."""
    data = json.loads(json.dumps(COMPOSE))
    data["transform"]["__class_fullname__"] = "albumentations.core.composition.Compose"
    data["transform"]["transforms"][0]["__class_fullname__"] = "albumentations.augmentations.blur.transforms.Blur"
    assert load_pipeline(_write(tmp_path, "old.json", json.dumps(data))).names == ("Blur",)
    data["transform"]["transforms"][0]["__class_fullname__"] = "os.system"
    with pytest.raises(ConfigError, match="unknown Albumentations transform 'os.system'"):
        load_pipeline(_write(tmp_path, "evil.json", json.dumps(data)))


def _bad(tmp_path: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope.yaml"
    if case == "folder":
        return tmp_path
    if case == "broken-yaml":
        return _write(tmp_path, "aug.yaml", "transform: [1, 2\n")
    if case == "broken-json":
        return _write(tmp_path, "aug.json", '{"transform": ')
    if case == "a-list":
        return _write(tmp_path, "aug.yaml", "- 1\n- 2\n")
    if case == "no-transform-key":
        return _write(tmp_path, "aug.yaml", "transforms: []\n")
    if case == "not-a-compose":
        return _write(tmp_path, "aug.json", json.dumps({"transform": {"__class_fullname__": "Blur", "p": 1.0}}))
    if case == "unknown-transform":
        data = json.loads(json.dumps(COMPOSE))
        data["transform"]["transforms"][0]["__class_fullname__"] = "GaussianBlurr"
        return _write(tmp_path, "aug.json", json.dumps(data))
    if case == "unknown-nested":
        data = json.loads(json.dumps(COMPOSE))
        data["transform"]["transforms"].append({"__class_fullname__": "OneOf", "p": 1.0, "transforms": [
            {"__class_fullname__": "NoSuchThing"}]})
        return _write(tmp_path, "aug.json", json.dumps(data))
    if case == "bad-argument":
        data = json.loads(json.dumps(COMPOSE))
        data["transform"]["transforms"][0]["no_such_argument"] = 3
        return _write(tmp_path, "aug.json", json.dumps(data))
    if case == "refused-argument":
        data = json.loads(json.dumps(COMPOSE))
        data["transform"]["transforms"][0]["p"] = "often"
        return _write(tmp_path, "aug.json", json.dumps(data))
    raise AssertionError(case)


BAD = [
    ("missing", "nope.yaml: no such file: pass the path to a serialized A.Compose"),
    ("folder", "is a folder: pass the pipeline file"),
    ("broken-yaml", "not valid YAML or JSON (line 2, column 1: "),
    ("broken-json", "not valid JSON (line 1, column 15: Expecting value)"),
    ("a-list", "not a serialized A.Compose (no 'transform' key; found a list)"),
    ("no-transform-key", "not a serialized A.Compose (no 'transform' key; found keys transforms)"),
    ("not-a-compose", "the top-level transform is Blur, not a Compose of transforms: wrap it, A.Compose([...])"),
    ("unknown-transform", "unknown Albumentations transform 'GaussianBlurr' (albumentations 2."),
    ("unknown-nested", "unknown Albumentations transform 'NoSuchThing'"),
    ("bad-argument", "Argument(s) 'no_such_argument' are not valid for transform Blur (Albumentations would ignore "
                     "them): fix or remove them"),
    ("refused-argument", "Albumentations refuses it (p: Input should be a valid number, unable to parse string as a "
                         "number): fix that transform's arguments"),
]


@pytest.mark.parametrize("case, words", BAD, ids=[b[0] for b in BAD])
def test_bad_files_give_one_clear_line(tmp_path: Path, case: str, words: str) -> None:
    path = _bad(tmp_path, case)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"pipeline={path}")
    assert words in message
    assert "\n" not in message


def test_unknown_transform_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'GaussianBlur'\\?"):
        load_pipeline(_bad(tmp_path, "unknown-transform"))
