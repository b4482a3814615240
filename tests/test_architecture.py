"""The layout ARCHITECTURE.md describes, held by the code: no import cycles, no borrowed private names.

Imports are read from the source (module level and inside functions alike), so a cycle hidden by
an import inside a function is still a cycle. `if TYPE_CHECKING:` blocks never run and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "visionbatch"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:`."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                pending.extend(child.orelse)
                continue
            pending.append(child)


def _imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, imported name or None) for every visionbatch import in a file."""
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "visionbatch":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "visionbatch":
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def import_graph() -> dict[str, set[str]]:
    """visionbatch module -> the visionbatch modules its imports run (a submodule when a name is one)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, module, imported in _imports(path):
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in MODULES else module
            # Importing a.b.c runs a/__init__ and a/b/__init__ first: edges to those packages too,
            # except the importer's own (already running when it imports a sibling).
            parts = target.split(".")
            for end in range(2, len(parts) + 1):
                package = ".".join(parts[:end])
                if package != name and not name.startswith(package + "."):
                    graph[name].add(package)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm).

    Examples:
        >>> cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}})
        [['a', 'b']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function() -> None:
    assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": set()}) == [["x", "y", "z"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_every_import_names_a_module_that_exists() -> None:
    missing = [f"{MODULES[name].relative_to(ROOT)}: {target}" for name, targets in import_graph().items()
               for target in targets if target not in MODULES]
    assert missing == []


def _private_imports(path: Path) -> Iterator[str]:
    own = _module_name(path) if path.is_relative_to(PACKAGE) else None
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for line, module, imported in _imports(path):
        if imported is None:
            modules.add(module.split(".")[-1])
            continue
        if f"{module}.{imported}" in MODULES:
            modules.add(imported)
        elif imported.startswith("_") and not imported.startswith("__") and module != own:
            yield f"{path.relative_to(ROOT)}:{line}: from {module} import {imported}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            yield f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}"


@pytest.mark.parametrize("folder", ["visionbatch", "tools", "tests"])
def test_no_module_uses_another_modules_private_names(folder: str) -> None:
    found = [hit for path in sorted((ROOT / folder).rglob("*.py")) for hit in _private_imports(path)]
    assert found == []


def test_each_capability_is_one_folder() -> None:
    """The top level holds shared mechanisms only; fitting, training, augmentation and inference are packages."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "checks", "console", "dataset", "errors", "files", "keys", "plotting",
                   "process_state", "results", "rundir", "safeyaml", "staging", "stats", "text", "units", "values"]
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == ["augment", "cli", "devices", "fit", "infer", "train", "ultralytics"]


def test_run_folders_have_one_owner() -> None:
    """The library verbs make run folders (through rundir.new_run_dir); the command line only prints."""
    hits = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((PACKAGE / "cli").rglob("*.py"))
            for line, module, _ in _imports(path) if module == "visionbatch.rundir"]
    assert hits == []
