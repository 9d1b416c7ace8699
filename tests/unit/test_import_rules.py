"""The import rules of sts_bridge, read from the source with ast.

Every import counts: module level, under ``TYPE_CHECKING`` and inside
functions, because each one is a dependency a reader has to follow. The rules:

- no import cycle between modules of ``sts_bridge``;
- no private name (``_x``) imported from another module: what two modules
  share gets a public name (a private module such as ``_files`` may hold
  public names);
- the layers drawn in docs/architecture.md (``LAYERS`` below): a module
  imports only its own package and lower layers, so ``s3/`` never imports
  ``terrapi/``, ``credentials/``, ``client``, ``workspace`` or ``cli/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "sts_bridge"

# The layers of sts_bridge, lowest first (docs/architecture.md draws them). A
# module may import its own package and any package of a LOWER layer; two
# packages of the same layer never import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "sts_bridge.errors",
        "sts_bridge._files",
        "sts_bridge._redact",
        "sts_bridge._lazy",
        "sts_bridge._version",
        "sts_bridge._user_dirs",
        "sts_bridge.clock",
        "sts_bridge.retry",
        "sts_bridge.interrupts",
    ),
    ("sts_bridge.config", "sts_bridge._tls"),
    ("sts_bridge.auth", "sts_bridge.s3"),
    ("sts_bridge.terrapi",),
    ("sts_bridge.credentials",),
    ("sts_bridge.urls",),
    ("sts_bridge.workspace",),
    ("sts_bridge.client",),
    ("sts_bridge.interop", "sts_bridge.dask", "sts_bridge.aio"),
    ("sts_bridge.service",),
    ("sts_bridge.cli",),
    ("sts_bridge.__main__",),
    ("sts_bridge",),  # the package's lazy re-exports
)

# Upward imports by design: ``Workspace.s3_client()`` and
# ``Workspace.filesystem()`` build their interop objects lazily.
ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset(
    {
        ("sts_bridge.workspace", "sts_bridge.interop.boto"),
        ("sts_bridge.workspace", "sts_bridge.interop.filesystem"),
    }
)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name that is imported (or whose name is)
    name: str | None  # the imported name for ``from x import name``
    line: int


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sts_bridge"):
                    yield Import(name, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = resolve_relative(name, is_package, node.level, node.module)
            else:
                target = node.module or ""
            if not target.startswith("sts_bridge"):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:
                    # ``from pkg import module``: the dependency is the module.
                    yield Import(name, submodule, None, node.lineno)
                else:
                    yield Import(name, target, alias.name, node.lineno)


def all_imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    modules = all_modules(root)
    found: list[Import] = []
    for name, path in modules.items():
        found.extend(imports_of(name, path, modules))
    return found


def known_module(target: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``target`` names (``a.b.c`` -> ``a.b``)."""
    parts = target.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def dependency_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    modules = all_modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in all_imports(root):
        target = known_module(imp.target, modules)
        if target is not None and target != imp.importer:
            graph[imp.importer].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def private_imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    return [
        imp
        for imp in all_imports(root)
        if imp.name is not None and imp.name.startswith("_") and imp.target != imp.importer
    ]


def owner(module: str) -> tuple[int, str] | None:
    """(layer, package) of ``module``: the longest matching entry of LAYERS."""
    best: tuple[int, str] | None = None
    for level, packages in enumerate(LAYERS):
        for package in packages:
            inside = module == package or module.startswith(package + ".")
            if inside and (best is None or len(package) > len(best[1])):
                best = (level, package)
    return best


def forbidden_imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    """Imports that go up a layer or sideways between packages of one layer."""
    modules = all_modules(root)
    bad = []
    for imp in all_imports(root):
        target = known_module(imp.target, modules) or imp.target
        source_owner, target_owner = owner(imp.importer), owner(target)
        if source_owner is None or target_owner is None:
            bad.append(imp)  # a module nobody placed in a layer
            continue
        if source_owner[1] == target_owner[1]:
            continue
        if (imp.importer, target) in ALLOWED_UPWARD:
            continue
        if target_owner[0] >= source_owner[0]:
            bad.append(imp)
    return bad


def test_every_module_has_a_layer() -> None:
    assert [name for name in all_modules() if owner(name) is None] == []


def test_no_import_cycle() -> None:
    assert find_cycles(dependency_graph()) == []


def test_no_private_name_imported_across_modules() -> None:
    assert [f"{i.importer}:{i.line} imports {i.target}.{i.name}" for i in private_imports()] == []


def test_package_dependency_rule() -> None:
    found = forbidden_imports()
    assert [f"{i.importer}:{i.line} imports {i.target}" for i in found] == []


# The checker itself, on small trees that break each rule.


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "sts_bridge"
    (root / "s3").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "s3" / "__init__.py").write_text("")
    return root


def test_checker_finds_a_cycle_through_type_checking_and_function_imports(tree: Path) -> None:
    (tree / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sts_bridge.b import B\n"
    )
    (tree / "b.py").write_text("def f():\n    from sts_bridge import a\n")
    assert find_cycles(dependency_graph(tree)) == [["sts_bridge.a", "sts_bridge.b"]]


def test_checker_finds_a_relative_import_cycle(tree: Path) -> None:
    (tree / "s3" / "x.py").write_text("from .y import Y\n")
    (tree / "s3" / "y.py").write_text("from . import x\n")
    assert find_cycles(dependency_graph(tree)) == [["sts_bridge.s3.x", "sts_bridge.s3.y"]]


def test_checker_finds_a_private_name(tree: Path) -> None:
    (tree / "a.py").write_text("_hidden = 1\npublic = 2\n")
    (tree / "b.py").write_text("from sts_bridge.a import _hidden, public\n")
    (tree / "c.py").write_text("from sts_bridge import _private_module\n")
    (tree / "_private_module.py").write_text("shared = 1\n")
    found = [(i.importer, i.name) for i in private_imports(tree)]
    assert found == [("sts_bridge.b", "_hidden")]


def test_checker_finds_s3_importing_client(tree: Path) -> None:
    (tree / "client.py").write_text("")
    (tree / "s3" / "engine.py").write_text("def f():\n    import sts_bridge.client\n")
    found = [(i.importer, i.target) for i in forbidden_imports(tree)]
    assert found == [("sts_bridge.s3.engine", "sts_bridge.client")]
