"""buf lint is clean and buf breaking catches an incompatible change (field renumbering)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def _buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the buf workspace (buf.yaml, proto/, vendored googleapis)."""
    dst = tmp_path / "ws"
    dst.mkdir()
    shutil.copy(ROOT / "buf.yaml", dst / "buf.yaml")
    shutil.copytree(ROOT / "proto", dst / "proto")
    shutil.copytree(ROOT / "third_party", dst / "third_party")
    return dst


def test_lint_is_clean() -> None:
    result = _buf("lint", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_rejects_a_zero_enum_value_without_unspecified(workspace: Path) -> None:
    bad = workspace / "proto/aiml021/cache/v1/extra.proto"
    bad.write_text(
        'syntax = "proto3";\npackage aiml021.cache.v1;\nenum Flavor { FLAVOR_SALTY = 0; }\n'
    )
    result = _buf("lint", cwd=workspace)
    assert result.returncode != 0
    assert "FLAVOR_SALTY" in result.stdout and "_UNSPECIFIED" in result.stdout


def test_breaking_detects_field_renumbering(workspace: Path, tmp_path: Path) -> None:
    before = tmp_path / "before"
    shutil.copytree(workspace, before)
    session = workspace / "proto/aiml021/session/v1/session.proto"
    text = session.read_text()
    renumbered = re.sub(r"(string idempotency_key = )2;", r"\g<1>99;", text)
    assert renumbered != text
    session.write_text(renumbered)

    result = _buf("breaking", "--against", str(before), cwd=workspace)

    assert result.returncode != 0
    assert "idempotency_key" in result.stdout or "2" in result.stdout
    assert "FIELD_SAME" in result.stdout or "deleted" in result.stdout.lower()


def test_breaking_accepts_an_added_field(workspace: Path, tmp_path: Path) -> None:
    before = tmp_path / "before"
    shutil.copytree(workspace, before)
    session = workspace / "proto/aiml021/session/v1/session.proto"
    text = session.read_text()
    session.write_text(
        text.replace("  bool last = 4;\n", "  bool last = 4;\n  uint32 sequence = 5;\n")
    )

    result = _buf("breaking", "--against", str(before), cwd=workspace)

    assert result.returncode == 0, result.stdout + result.stderr
