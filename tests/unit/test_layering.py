"""The layering of docs/architecture.md, enforced on the source (imports read with ast).

- ``common`` imports nothing of ``cloud``, ``edge_agent`` or ``policy``;
- ``policy`` imports neither ``cloud`` nor ``edge_agent``, and no grpc;
- ``edge_agent`` imports no ``cloud``;
- ``cloud.core`` imports no grpc, starlette or uvicorn, and none of the gateway's outer layers
  (backends, batching, stores, grpc, rest, the composition root);
- no import cycles between modules (type-only imports under ``TYPE_CHECKING`` excepted).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "cloud", "edge_agent", "policy")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


SOURCES = _sources()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str) -> set[str]:
    """Absolute names this module imports at run time (``from a import b`` → ``a.b`` when
    ``a.b`` is one of our modules, else ``a``)."""
    path = SOURCES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, path).split(".")
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in SOURCES else base)
    return names


IMPORTS = {module: imports_of(module) for module in SOURCES}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("common", ("cloud", "edge_agent", "policy"), "common is shared by both sides"),
    ("policy", ("cloud", "edge_agent", "grpc"), "the policy engine is transport-free"),
    ("edge_agent", ("cloud",), "the edge never imports the gateway"),
    (
        "cloud.core",
        (
            "grpc",
            "grpc_health",
            "grpc_reflection",
            "starlette",
            "uvicorn",
            "cloud.backends",
            "cloud.batching",
            "cloud.stores",
            "cloud.grpc",
            "cloud.rest",
            "cloud.app",
        ),
        "the core owns its types and knows no transport or implementation",
    ),
    (
        "cloud.authz",
        ("cloud.grpc", "cloud.rest", "cloud.app", "cloud.stores", "cloud.backends"),
        "authorization sits in front of the servicers: it knows principals and the table, "
        "never a servicer, a store or the composition root",
    ),
]


@pytest.mark.parametrize(("layer", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_layer_imports_only_what_it_may(layer: str, forbidden: tuple[str, ...], why: str) -> None:
    offences = sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        if _under(module, layer)
        for name in names
        if any(_under(name, banned) for banned in forbidden)
    )
    assert not offences, f"{why}:\n" + "\n".join(offences)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return components


def test_find_cycles_sees_a_cycle_and_ignores_a_chain() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles_between_modules() -> None:
    """A package ``__init__`` re-exporting its private modules is fine; a private module that
    imports its own package back (or two modules that import each other, lazily or not) is not."""
    graph = {module: {n for n in names if n in SOURCES} for module, names in IMPORTS.items()}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_rules_see_real_imports() -> None:
    # Guards the scanner itself: if it read nothing, every rule above would pass vacuously.
    assert "common.errors" in SOURCES
    assert any(_under(name, "numpy") for name in IMPORTS["common.tensors"])
    assert any(_under(name, "common") for names in IMPORTS.values() for name in names)
