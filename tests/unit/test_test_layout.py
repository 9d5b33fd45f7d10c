"""The test tree's import rules, read from the source with ast.

- A test folder (tests/unit, tests/integration, tests/e2e, tests/adversarial) imports test code only from itself and
  from tests/support; tests/support imports no test folder.
- Benchmarks import nothing from tests.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
FOLDERS = ("unit", "integration", "e2e", "adversarial")
SUPPORT = "support"


def _module(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (a module under ``root``),
    relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name
            # ``from tests import unit`` names a module too
            for alias in node.names:
                yield node.lineno, f"{name}.{alias.name}"


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _allowed_test_imports(path: Path, tests: Path = TESTS) -> tuple[str, ...]:
    """Test packages ``path`` (under ``tests``) may import from."""
    top = path.relative_to(tests).parts[0]
    if top in FOLDERS:
        return (f"tests.{top}", f"tests.{SUPPORT}")
    if top == SUPPORT:
        return (f"tests.{SUPPORT}",)
    return ()  # tests/conftest.py and other top-level modules: no test code


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_test_folders_import_only_themselves_and_support() -> None:
    bad = []
    for path in _sources(TESTS):
        allowed = _allowed_test_imports(path)
        for line, name in imports(path):
            if name == "tests" or not name.startswith("tests."):
                continue
            if not _within(name, allowed):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "imports across test folders (share code via tests/support):\n" + "\n".join(
        sorted(set(bad))
    )


def test_benchmarks_import_nothing_from_tests() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _sources(ROOT / "benchmarks")
        for line, name in imports(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert not bad, "benchmarks import test code:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ("from tests.unit.x import y\n", "integration/a/test_b.py", "tests.unit.x"),
        ("from ..unit import x\n", "integration/test_b.py", "tests.unit"),
        ("import tests.integration.z as z\n", "support/h.py", "tests.integration.z"),
        ("from tests import e2e\n", "unit/test_c.py", "tests.e2e"),
    ],
)
def test_checker_sees_cross_folder_imports(
    tmp_path: Path, source: str, where: str, expected: str
) -> None:
    # The rules above pass on a clean tree; make sure they would catch each import form.
    path = tmp_path / "tests" / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    names = [n for _, n in imports(path, tmp_path) if n.startswith("tests.")]
    assert expected in names
    allowed = _allowed_test_imports(path, tmp_path / "tests")
    assert not all(_within(n, allowed) for n in names)


def test_tests_carry_the_marker_of_their_folder(request: pytest.FixtureRequest) -> None:
    # tests/conftest.py marks by folder; pyproject declares the markers under --strict-markers.
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    declared = {m.split(":")[0] for m in config["markers"]}
    assert set(FOLDERS) <= declared and "--strict-markers" in config["addopts"]
