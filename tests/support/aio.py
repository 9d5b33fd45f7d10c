"""Fixtures for tests that run grpc.aio servers and channels."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def _collect_grpc_objects() -> AsyncIterator[None]:
    """Collect stopped grpc.aio servers/channels while the test's loop is still open (their
    ``__del__`` schedules work on the loop they were created in). Import it into a conftest."""
    yield
    gc.collect()


__all__ = ["_collect_grpc_objects"]
