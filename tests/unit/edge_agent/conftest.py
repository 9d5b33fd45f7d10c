from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.aio import _collect_grpc_objects
from tests.support.edge_bundle import make_bundle
from tests.support.gateway import gateway_models_dir

__all__ = ["_collect_grpc_objects", "gateway_models_dir"]  # fixtures


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic bundle whose early exits are never confident (thresholds 0.99)."""
    return make_bundle(tmp_path_factory.mktemp("bundle_offload"), thresholds=(0.99, 0.99, 0.0))


@pytest.fixture(scope="session")
def local_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic bundle whose first exit always answers (threshold 0)."""
    return make_bundle(tmp_path_factory.mktemp("bundle_local"), thresholds=(0.0, 0.0, 0.0))


@pytest.fixture
def replay_key() -> str:
    return os.urandom(32).hex()
