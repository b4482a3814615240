"""Read a YAML file a user handed us without letting it exhaust the machine or run anything.

`yaml.safe_load` already refuses Python tags, but a few hundred bytes of anchors and aliases (a
"billion laughs") expand to a structure of 10^9 nodes the moment anything walks it: `str()` on a
class name, a JSON dump, Ultralytics' own checks. `load_yaml` bounds the file's size, its nesting
and the size of the document with every alias expanded before a single Python object is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from visionbatch.errors import VisionbatchError

MAX_YAML_BYTES = 8 * 2**20  # a data.yaml with 10,000 class names is ~200 KiB; image lists belong in .txt files
MAX_YAML_NODES = 1_000_000  # scalars, lists and mappings after every alias is expanded (a scalar counts once per
SCALAR_CHARS_PER_NODE = 64  # this many of its characters, so an aliased 1 MB string cannot multiply either)
MAX_YAML_DEPTH = 64


class YamlLimitError(ValueError):
    """The document is larger, deeper or more aliased than a configuration file needs."""


BAD_TAGGED_VALUE = "a tagged value that does not fit its tag"
TAG_REFUSAL = ("a configuration file holds plain values, and visionbatch never builds objects or runs code from "
               "YAML: remove the tag")


def refused_tag(exc: yaml.YAMLError) -> str | None:
    """The tag a well-formed document was refused for (it asks for an object to be built), or None.

    Examples:
        >>> try:
        ...     parse_yaml("a: !!python/object/apply:os.system ['true']")
        ... except yaml.YAMLError as exc:
        ...     refused_tag(exc)
        '!!python/object/apply:os.system'
        >>> try:
        ...     parse_yaml("a: [1, 2")
        ... except yaml.YAMLError as exc:
        ...     refused_tag(exc) is None
        True
    """
    problem = getattr(exc, "problem", None) or ""
    if not isinstance(exc, yaml.constructor.ConstructorError) or "for the tag" not in problem:
        return None
    return problem.rpartition("for the tag")[2].strip().strip("'").replace("tag:yaml.org,2002:", "!!")


def load_yaml(path: str | os.PathLike, error: type[VisionbatchError], what: str = "") -> Any:
    """Parse one YAML document from `path` with size, depth and alias-expansion limits.

    Args:
        path: the file.
        error: the VisionbatchError subclass to raise (DatasetError for a data.yaml, ...).
        what: how the message names the file (default: its path).

    Returns:
        The document as plain Python values (None for an empty file).

    Raises:
        error: unreadable, not valid YAML, or over a limit; one line naming the file and the fix.

    Examples:
        >>> import tempfile
        >>> from visionbatch.errors import DatasetError
        >>> bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\\n" + "".join(
        ...     f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\\n"
        ...     for p, c in zip("abcdefgh", "bcdefghi"))
        >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        ...     _ = fh.write(bomb)
        >>> load_yaml(fh.name, DatasetError, "data.yaml")
        Traceback (most recent call last):
        ...
        visionbatch.errors.DatasetError: data.yaml: more than 1000000 YAML nodes once aliases are expanded (anchors and * aliases that multiply): write the values out plainly
    """
    path = Path(path)
    name = what or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error(f"{name}: {size / 2**20:.1f} MiB is too large for a YAML configuration "
                        f"(limit {MAX_YAML_BYTES // 2**20} MiB): list images in a .txt file and name that file instead")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{name}: cannot be read ({exc.__class__.__name__}: {exc}): "
                    f"check the file's permissions and that it is UTF-8 text") from None
    try:
        return parse_yaml(text)
    except YamlLimitError as exc:
        raise error(f"{name}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        tag = refused_tag(exc)
        if tag:
            raise error(f"{name}: the tag {tag}{where} is refused: {TAG_REFUSAL}") from None
        if problem.startswith(BAD_TAGGED_VALUE):
            raise error(f"{name}: {problem}: remove the tag (!!int, !!bool, ...) or fix its value") from None
        raise error(f"{name}: not valid YAML{where} ({problem}): fix the syntax there") from None
    except RecursionError:
        raise error(f"{name}: nested too deeply to be a configuration file: flatten it") from None


def parse_yaml(text: str) -> Any:
    """Safe-load one document from `text`, refusing alias bombs, cycles and deep nesting.

    Raises:
        yaml.YAMLError: not valid YAML, or a standard tag with a value it cannot hold (`!!int abc`).
        YamlLimitError: over a limit.

    Examples:
        >>> parse_yaml("names: &n [cat, dog]\\nalso: *n")
        {'names': ['cat', 'dog'], 'also': ['cat', 'dog']}
        >>> parse_yaml("epochs: !!int abc")
        Traceback (most recent call last):
        yaml.constructor.ConstructorError: a tagged value that does not fit its tag (ValueError: invalid literal for int() with base 10: 'abc')
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        try:
            return loader.construct_document(node)
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
            # a standard tag with a value it cannot hold (`!!int abc`, `!!bool maybe`): PyYAML's constructors raise
            # plain Python errors there, not a YAMLError
            raise yaml.constructor.ConstructorError(
                None, None, f"{BAD_TAGGED_VALUE} ({exc.__class__.__name__}: {str(exc)[:80]})",
                None) from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node) -> None:
    """Count the nodes `root` expands to, each shared (aliased) subtree once per reference, without expanding."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # iterative post-order walk: (node, depth, children_done)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            own = 1 + (len(node.value) // SCALAR_CHARS_PER_NODE if isinstance(node, yaml.ScalarNode) else 0)
            total = own + sum(sizes[id(child)] for child in _children(node))
            if total > MAX_YAML_NODES:
                raise YamlLimitError(f"more than {MAX_YAML_NODES} YAML nodes once aliases are expanded (anchors and "
                                     f"* aliases that multiply): write the values out plainly")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise YamlLimitError("an alias refers to a node that contains it (a cycle): write the values out plainly")
        if depth > MAX_YAML_DEPTH:
            raise YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep: flatten it")
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node)
        active.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in active:
                raise YamlLimitError("an alias refers to a node that contains it (a cycle): "
                                     "write the values out plainly")
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def _check_unique_keys(node: yaml.MappingNode) -> None:
    """YAML forbids a key twice in one mapping; PyYAML keeps the last silently (a second 'names:' wins)."""
    seen: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
            continue
        line = key.start_mark.line + 1
        if (key.tag, key.value) in seen:
            first = seen[(key.tag, key.value)]
            raise YamlLimitError(f"'{key.value[:40]}' is given twice (lines {first} and {line}): keep one")
        seen[(key.tag, key.value)] = line


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
