"""The package's structure, checked from its source: no import cycles, no module reaching into another's
private names, modules of a readable size with names of their own, device-agnostic code that logs."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mpgsam2"
MAX_LINES = 400
#: The command line prints its results (JSON on stdout); the library logs.
PRINTING_MODULES = {"mpgsam2.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for every import in the file, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [alias.name for alias in node.names]
            # "from .pkg import module" imports the module itself.
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            found += [(sub, []) for sub in submodules] or [(base, names)]
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in _imports(name, path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            # A package's __init__ re-exports its modules: an arrow into a package's own module is no cycle.
            if target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_imports_another_modules_private_names():
    reaching = [
        f"{name} imports {target}.{imported}"
        for name, path in MODULES.items()
        for target, names in _imports(name, path)
        if target.startswith("mpgsam2") and target != name
        for imported in names
        if imported.startswith("_") and not imported.startswith("__")
    ]
    assert not reaching, "\n".join(reaching)


def test_modules_are_of_a_readable_size():
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_no_two_modules_share_a_name():
    stems = Counter(path.stem for path in MODULES.values() if path.stem not in ("__init__", "__main__"))
    assert [stem for stem, count in stems.items() if count > 1] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_library_logs_and_picks_no_device_itself(name):
    tree = ast.parse(MODULES[name].read_text())
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert not any(isinstance(f, ast.Attribute) and f.attr == "cuda" for f in calls), "a .cuda() call"
    if name not in PRINTING_MODULES:
        assert not any(isinstance(f, ast.Name) and f.id == "print" for f in calls), (
            "print() instead of logging"
        )


def test_no_compatibility_aliases():
    """``from .x import name as name`` only keeps an old import path alive; the package has none."""
    aliases = [
        f"{name}: {alias.name}"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname is not None and alias.asname == alias.name
    ]
    assert not aliases, aliases
