from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.edge_agent._bundle_factory import make_bundle


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


@pytest.fixture(autouse=True)
async def _collect_grpc_objects() -> AsyncIterator[None]:
    """Collect stopped grpc.aio servers/channels while the test's loop is still open (their
    ``__del__`` schedules work on the loop they were created in)."""
    yield
    gc.collect()
