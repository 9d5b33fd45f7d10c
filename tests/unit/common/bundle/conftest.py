from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from tests.unit.common.bundle._foreign import build_foreign

MODELS = Path(__file__).resolve().parents[4] / "models"
BRANCHY = MODELS / "fmnist_branchy"
EDGE = MODELS / "fmnist_edge_small"
SLICE = MODELS / "data" / "fmnist_test_slice.npz"


@pytest.fixture
def edge_bundle_dir(tmp_path: Path) -> Path:
    """A private copy of the small reference bundle (tests may corrupt it)."""
    return Path(shutil.copytree(EDGE, tmp_path / "edge"))


@pytest.fixture
def branchy_bundle_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(BRANCHY, tmp_path / "branchy"))


@pytest.fixture(scope="session")
def foreign_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("foreign") / "foreign.onnx"
    onnx.save(build_foreign(), str(path))
    return path
