from __future__ import annotations

from tests.unit.edge_agent.conftest import _collect_grpc_objects

__all__ = ["_collect_grpc_objects"]
