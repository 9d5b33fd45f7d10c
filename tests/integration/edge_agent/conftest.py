from __future__ import annotations

from tests.support.aio import _collect_grpc_objects

__all__ = ["_collect_grpc_objects"]  # fixture
