"""server/storage has no import cycle: interfaces import no backend, backends import interfaces."""

import ast
from pathlib import Path

import pellucid.server.storage as storage_package

PACKAGE = "pellucid.server.storage"


def _imports(path: Path) -> set[str]:
    """The storage modules `path` imports anywhere (function bodies too: a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n.startswith(PACKAGE + ".")}
    return found


def test_storage_modules_import_each_other_without_a_cycle() -> None:
    root = Path(storage_package.__file__).parent
    modules = {f"{PACKAGE}.{p.stem}": p for p in root.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & modules.keys() for name, path in modules.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in visiting:
            raise AssertionError("import cycle: " + " -> ".join([*visiting[visiting.index(name) :], name]))
        if name in done:
            return
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert f"{PACKAGE}.sqlite" not in graph[f"{PACKAGE}.base"]
