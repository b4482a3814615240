"""visionbatch.safeyaml: YAML a user hands us is bounded before a single object is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionbatch.errors import DatasetError
from visionbatch.safeyaml import YamlLimitError, load_yaml, parse_yaml


def test_plain_yaml_and_honest_aliases_load() -> None:
    assert parse_yaml("a: &x [1, 2]\nb: *x\nc: {d: e}\n") == {"a": [1, 2], "b": [1, 2], "c": {"d": "e"}}
    assert parse_yaml("") is None


@pytest.mark.parametrize("text,words", ids=["bomb", "scalar-bomb", "cycle", "deep", "duplicate", "flow-duplicate"],
                         argvalues=[
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcde", "bcdef")),
     "aliases are expanded"),
    ("s: &s '" + "y" * 64_000 + "'\nt: [" + ", ".join(["*s"] * 1_100) + "]\n", "aliases are expanded"),
    ("a: &a [*a]\n", "a cycle"),
    ("a: " + "[" * 70 + "]" * 70 + "\n", "nested more than 64 levels"),
    ("a: 1\nb: 2\na: 3\n", "'a' is given twice (lines 1 and 3)"),
    ("{a: 1, a: 2}\n", "'a' is given twice"),
])
def test_limits(text: str, words: str) -> None:
    with pytest.raises(YamlLimitError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_yaml(text)


def test_a_document_at_the_node_limit_loads_and_one_past_it_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import visionbatch.safeyaml

    monkeypatch.setattr(visionbatch.safeyaml, "MAX_YAML_NODES", 100)
    at_limit = 100 - 3  # the mapping, its key 'a' and the list are nodes too
    assert len(parse_yaml("a: [" + ", ".join(["1"] * at_limit) + "]\n")["a"]) == at_limit
    with pytest.raises(YamlLimitError):
        parse_yaml("a: [" + ", ".join(["1"] * (at_limit + 1)) + "]\n")


def test_load_yaml_words_each_problem_as_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(DatasetError, match=r"data.yaml: not valid YAML at line 2"):
        load_yaml(path, DatasetError, "data.yaml")
    path.write_text("!!python/object/apply:os.system ['true']\n")  # well-formed: the tag is what is refused
    with pytest.raises(DatasetError) as info:
        load_yaml(path, DatasetError, "data.yaml")
    assert str(info.value) == ("data.yaml: the tag !!python/object/apply:os.system at line 1, column 1 is refused: a "
                               "configuration file holds plain values, and visionbatch never builds objects or runs "
                               "code from YAML: remove the tag")
    path.write_text("epochs: !!int abc\n")  # PyYAML's constructor raises a plain ValueError here
    with pytest.raises(DatasetError) as info:
        load_yaml(path, DatasetError, "data.yaml")
    assert str(info.value) == ("data.yaml: a tagged value that does not fit its tag (ValueError: invalid literal for "
                               "int() with base 10: 'abc'): remove the tag (!!int, !!bool, ...) or fix its value")
    for text in ("a: !!bool maybe\n", "a: !!timestamp foo\n", "a: !!float x\n"):
        path.write_text(text)
        with pytest.raises(DatasetError, match="a tagged value that does not fit its tag"):
            load_yaml(path, DatasetError, "data.yaml")
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DatasetError, match="cannot be read .*UTF-8"):
        load_yaml(path, DatasetError, "data.yaml")
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DatasetError, match="nested too deeply|nested more than"):
        load_yaml(path, DatasetError, "data.yaml")
